"""Run-scoped staging files through which the sync's tasks hand invoices to each other."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

log = logging.getLogger(__name__)

# A JSON number in a Driver2 document arrives as Decimal (never float) and must stay a number
# through staging, so that the contract check can still tell "12.50" from 12.50. It is staged as
# {"$decimal": "12.50"}; a Driver2 key that starts with "$" gets one more "$" on the way in and
# loses it on the way out, so no Driver2 object can pass for a staged Decimal.
_DECIMAL_KEY = "$decimal"


def encode_line(record: Any) -> str:
    """Return one staging line for a record that may hold Decimal values."""
    # ASCII-only: a lone surrogate from a hostile "\ud800" escape survives as an escape, where
    # UTF-8 could not encode it.
    return json.dumps(_escape(record), ensure_ascii=True, separators=(",", ":"))


def decode_line(line: str) -> Any:
    """Return the record of one staging line, with its Decimal values restored."""
    return json.loads(line, object_hook=_unescape)


def _escape(value: Any) -> Any:
    # Iterative, not recursive: a hostile document may nest objects hundreds deep, and it must
    # reach the contract check (which calls it invalid), not stop the extract step.
    if not isinstance(value, dict | list | tuple):
        return _escape_leaf(value)
    root: Any = {} if isinstance(value, dict) else []
    pending = [(value, root)]
    while pending:
        source, target = pending.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            if isinstance(item, dict | list | tuple):
                child: Any = {} if isinstance(item, dict) else []
                pending.append((item, child))
            else:
                child = _escape_leaf(item)
            if isinstance(target, dict):
                target[f"${key}" if isinstance(key, str) and key.startswith("$") else key] = child
            else:
                target.append(child)
    return root


def _escape_leaf(value: Any) -> Any:
    return {_DECIMAL_KEY: str(value)} if isinstance(value, Decimal) else value


def _unescape(obj: dict) -> Any:
    if len(obj) == 1 and _DECIMAL_KEY in obj:
        return Decimal(obj[_DECIMAL_KEY])
    if any(key.startswith("$$") for key in obj):
        return {(key[1:] if key.startswith("$$") else key): item for key, item in obj.items()}
    return obj


class RunStaging:
    """One run's staging folder: JSON-lines parts per step, and a manifest written last.

    `root` is a pathlib.Path or an Airflow ObjectStoragePath (file:// or s3://), so that tasks
    on different workers can share it. A step's output counts only once its manifest exists:
    a task that died half-way leaves parts that its retry simply writes again.
    """

    def __init__(self, root):
        self.root = root

    def write_part(self, step: str, part_no: int, records: Iterable[Any]) -> str:
        name = f"{step}/part-{part_no:06d}.jsonl"
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        count = 0
        with path.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(encode_line(record))
                handle.write("\n")
                count += 1
        log.debug("Staged %d record(s) in %s", count, name)
        return name

    def read_part(self, name: str) -> Iterator[Any]:
        with (self.root / name).open("r", encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield decode_line(line)

    def write_manifest(self, step: str, manifest: dict) -> None:
        path = self.root / step / "manifest.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps(manifest, default=str, indent=1))

    def read_manifest(self, step: str) -> dict:
        path = self.root / step / "manifest.json"
        if not path.exists():
            raise FileNotFoundError(
                f"staging step {step!r} of this run has no manifest at {path}: the task that"
                " writes it has not finished; run it again"
            )
        with path.open("r", encoding="utf-8") as handle:
            return json.loads(handle.read())

    def has_manifest(self, step: str) -> bool:
        return (self.root / step / "manifest.json").exists()

    def remove(self) -> None:
        """Delete the run's staging folder once its report is written."""
        if hasattr(self.root, "rmdir") and self.root.exists():
            _remove_tree(self.root)


def _remove_tree(path) -> None:
    for child in path.iterdir():
        if child.is_dir():
            _remove_tree(child)
        else:
            child.unlink()
    path.rmdir()

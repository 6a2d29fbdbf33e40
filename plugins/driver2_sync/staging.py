"""Run-scoped staging files through which the sync's tasks hand invoices to each other."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

log = logging.getLogger(__name__)

# A JSON number in a Driver2 document arrives as Decimal (never float) and must stay a number
# through staging, so that the contract check can still tell "12.50" from 12.50.
_DECIMAL_KEY = "$decimal"


def encode_line(record: Any) -> str:
    """Return one staging line for a record that may hold Decimal values."""
    # ASCII-only: a lone surrogate from a hostile "\ud800" escape survives as an escape, where
    # UTF-8 could not encode it.
    return json.dumps(record, default=_encode_decimal, ensure_ascii=True, separators=(",", ":"))


def decode_line(line: str) -> Any:
    """Return the record of one staging line, with its Decimal values restored."""
    return json.loads(line, object_hook=_decode_decimal)


def _encode_decimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {_DECIMAL_KEY: str(value)}
    raise TypeError(f"{type(value).__name__} cannot be staged")


def _decode_decimal(obj: dict) -> Any:
    if len(obj) == 1 and _DECIMAL_KEY in obj:
        return Decimal(obj[_DECIMAL_KEY])
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

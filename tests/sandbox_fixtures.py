"""Pytest fixtures that run the Driver2 sandbox as a subprocess on loopback, for any test that
talks to Driver2 over HTTP. Load with `pytest_plugins = ["sandbox_fixtures"]`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from driver2_sandbox import Driver2Dataset
from driver2_sandbox.data import parse_instant

SANDBOX_DIR = Path(__file__).resolve().parents[1] / "sandbox"
READY_LINE = re.compile(r"driver2 sandbox listening on (http://\S+) \((\d+) invoices, seed (\d+)\)")
START_TIMEOUT_SECONDS = 60
SESSION_INVOICES = 300
SESSION_SEED = 7
SESSION_TOKEN = "sandbox-token"


class Driver2Sandbox:
    """A running sandbox server: where it listens, its token, the dataset it serves, and the
    control API's helpers."""

    def __init__(
        self, process: subprocess.Popen, base_url: str, token: str, dataset: Driver2Dataset
    ) -> None:
        self.process = process
        self.base_url = base_url
        self.token = token
        self.dataset = dataset
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def get(self, path: str, params: dict | None = None, **kwargs) -> requests.Response:
        """Send an authorised GET to the sandbox (path from the root, e.g. /api/v1/invoices)."""
        kwargs.setdefault("timeout", 30)
        return self.session.get(self.base_url + path, params=params, **kwargs)

    def _control(self, method: str, path: str, document: object = None) -> object:
        response = self.session.request(
            method, f"{self.base_url}/_sandbox/{path}", json=document, timeout=30
        )
        response.raise_for_status()
        return response.json()

    def script_faults(self, script: list[dict]) -> None:
        """Make the next public API requests answer with these faults, in order."""
        self._control("POST", "faults", {"script": script})

    def touch(self, number: str) -> dict:
        """Move the invoice to the end of the order with a visible change; return it. The local
        dataset learns of it, so its expected outcomes follow."""
        document = self._control("POST", f"invoices/{quote(number, safe='')}/touch")
        self.dataset.touch(number, now_us=_instant_of(document))
        return document

    def put_invoice(self, number: str, document: object) -> None:
        """Store a raw JSON document as the invoice with this number, served verbatim."""
        text = document if isinstance(document, str) else json.dumps(document)
        response = self.session.put(
            f"{self.base_url}/_sandbox/invoices/{quote(number, safe='')}",
            data=text.encode(),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        response.raise_for_status()
        self.dataset.store_document(number, text)

    def reset(self) -> None:
        """Drop scripted faults, run-time changes and request counts, here and in the server."""
        self._control("POST", "reset")
        self.dataset.reset()

    def stats(self) -> dict:
        """Return the request counts per path and status since the start or the last reset."""
        return self._control("GET", "stats")

    def stop(self) -> None:
        self.session.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _instant_of(document: dict) -> int | None:
    return parse_instant(document.get("updated_at")) if isinstance(document, dict) else None


def start_sandbox(
    invoices: int = SESSION_INVOICES,
    seed: int = SESSION_SEED,
    token: str = SESSION_TOKEN,
    shares: dict[str, float] | None = None,
    **fault_flags: float | int,
) -> Driver2Sandbox:
    """Start a sandbox subprocess on a free loopback port and wait for its ready line.

    fault_flags are the server's --fault-* options with underscores: fault_5xx_rate=0.1, ...
    """
    command = [
        sys.executable,
        "-m",
        "driver2_sandbox.server",
        "--invoices",
        str(invoices),
        "--seed",
        str(seed),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--token",
        token,
    ]
    for case, fraction in (shares or {}).items():
        command += ["--share", f"{case}={fraction}"]
    for name, value in fault_flags.items():
        if not name.startswith("fault_"):
            raise TypeError(f"unknown sandbox option {name!r}")
        command += ["--" + name.replace("_", "-"), str(value)]
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(SANDBOX_DIR), environment.get("PYTHONPATH")])
    )
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env=environment, cwd=SANDBOX_DIR
    )

    # Read the ready line on a thread, so that a server that hangs cannot hang the tests.
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_SECONDS)
    match = READY_LINE.search(lines[0]) if lines else None
    if match is None:
        process.kill()
        process.wait()
        raise RuntimeError(
            f"the Driver2 sandbox did not start (exit code {process.returncode}, "
            f"first line {lines[0] if lines else None!r})"
        )
    dataset = Driver2Dataset(invoices, seed, shares)
    return Driver2Sandbox(process, match.group(1), token, dataset)


@pytest.fixture(scope="session")
def driver2_sandbox() -> Iterator[Driver2Sandbox]:
    """The shared sandbox: 300 invoices, seed 7, token 'sandbox-token'. Tests that change it
    (faults, touches, stored documents) call .reset() when done, or use start_driver2_sandbox."""
    sandbox = start_sandbox()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def start_driver2_sandbox() -> Iterator:
    """A factory for a test's own sandbox: start_driver2_sandbox(invoices=..., seed=...,
    shares=..., token=..., fault_5xx_rate=...). Every sandbox it starts stops after the test."""
    started: list[Driver2Sandbox] = []

    def start(**options) -> Driver2Sandbox:
        sandbox = start_sandbox(**options)
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        sandbox.stop()

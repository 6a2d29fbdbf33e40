"""The demo script's own plumbing: stopping the Airflow services it started leaves nothing."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# A service that forks a worker which ignores SIGTERM, as the scheduler's executor workers may,
# then prints the worker's pid and waits to be stopped.
SERVICE = """
import signal, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
print(worker.pid, flush=True)
time.sleep(300)
"""

# A service that ignores SIGTERM itself, as the scheduler may while its executor drains.
DEAF_SERVICE = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(300)
"""


def _load_demo():
    spec = importlib.util.spec_from_file_location("demo", PROJECT_ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_stopping_the_services_also_kills_workers_that_ignore_sigterm():
    demo = _load_demo()
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    worker_pid = int(service.stdout.readline())

    demo.stop_process_groups([service], grace_seconds=1)

    deadline = time.monotonic() + 5
    while _is_running(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.returncode == -15
    assert not _is_running(worker_pid)


class _ClosedPipe:
    """Standard output after Ctrl-C ended the `tee` that read it."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_service_deaf_to_sigterm_is_killed_even_when_output_is_gone(monkeypatch):
    demo = _load_demo()
    deaf = subprocess.Popen(
        [sys.executable, "-c", DEAF_SERVICE], stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    assert deaf.stdout.readline() == "ready\n"
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())

    demo.stop_process_groups([deaf], grace_seconds=0.5)

    assert deaf.returncode == -9

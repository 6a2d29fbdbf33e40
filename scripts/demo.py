"""Run the sync on the embedded default: the Driver2 sandbox, a SQLite PlanManager, local reports.

`demo.py run` sets everything up under build/demo/, runs driver2_invoice_sync once with Airflow,
and prints where the report is and the counts per outcome. `demo.py ui` sets up the same and
starts the Airflow UI, scheduler and DAG processor, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "demo"
BIN = Path(sys.executable).parent
TOKEN = "sandbox-demo-token"
DAG_ID = "driver2_invoice_sync"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("run", "ui"))
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ui-port", type=int, default=8080)
    arguments = parser.parse_args()

    started = time.monotonic()
    if BUILD.exists():
        shutil.rmtree(BUILD)
    BUILD.mkdir(parents=True)
    env = demo_environment()

    sandbox = start_sandbox(arguments.invoices, arguments.seed, env)
    try:
        env["AIRFLOW_CONN_DRIVER2_API"] = json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": sandbox.port,
             "schema": "http", "password": TOKEN}
        )  # fmt: skip
        step(f"Seeding the SQLite PlanManager database {BUILD / 'planmanager.db'}")
        run(
            [str(BIN / "python"), "-m", "driver2_sandbox.seeder", "--create-schema",
             "--db-url", f"sqlite:///{BUILD / 'planmanager.db'}",
             "--invoices", str(arguments.invoices), "--seed", str(arguments.seed),
             "--log-level", "WARNING"],
            env,
        )  # fmt: skip
        step("Preparing Airflow's metadata database")
        run([str(BIN / "airflow"), "db", "migrate"], env, quiet=True)
        if arguments.mode == "ui":
            return run_ui(env, arguments.ui_port)

        step(f"Running {DAG_ID} with Airflow (log: {BUILD / 'sync.log'})")
        with open(BUILD / "sync.log", "w") as log_file:
            result = subprocess.run(
                [str(BIN / "airflow"), "dags", "test", DAG_ID],
                env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        if result.returncode != 0:
            print(f"The sync failed; see {BUILD / 'sync.log'}", file=sys.stderr)
            return result.returncode
        print_report(time.monotonic() - started)
        return 0
    finally:
        sandbox.stop()


def demo_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(BUILD / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # A worker per running task, not Airflow's default 32, on a laptop-sized machine.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_PLANMANAGER_DB": json.dumps(
                {"conn_type": "sqlite", "host": str(BUILD / "planmanager.db")}
            ),
            "AIRFLOW_VAR_DRIVER2_REPORTS_URL": f"file://{BUILD / 'reports'}",
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT / "plugins"), str(ROOT / "sandbox"), env.get("PYTHONPATH", "")]
            ).rstrip(os.pathsep),
        }
    )
    return env


class Sandbox:
    def __init__(self, process: subprocess.Popen, port: int):
        self.process, self.port = process, port

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_sandbox(invoices: int, seed: int, env: dict[str, str]) -> Sandbox:
    step(f"Starting the Driver2 sandbox with {invoices} invoices (seed {seed})")
    process = subprocess.Popen(
        [str(BIN / "python"), "-m", "driver2_sandbox.server", "--port", "0",
         "--invoices", str(invoices), "--seed", str(seed), "--token", TOKEN],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    ready = process.stdout.readline()
    if "listening on http://127.0.0.1:" not in ready:
        process.kill()
        raise SystemExit(f"The Driver2 sandbox did not start: {ready!r}")
    port = int(ready.split("http://127.0.0.1:", 1)[1].split()[0])
    print(f"  {ready.strip()}")
    return Sandbox(process, port)


def run(command: list[str], env: dict[str, str], quiet: bool = False) -> None:
    result = subprocess.run(
        command, env=env, cwd=ROOT, text=True,
        stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None,
    )  # fmt: skip
    if result.returncode != 0:
        if quiet:
            print(result.stdout[-4000:], file=sys.stderr)
        raise SystemExit(f"{' '.join(command[:3])} failed with exit code {result.returncode}")


def print_report(seconds: float) -> None:
    reports = sorted((BUILD / "reports" / DAG_ID).glob("*/report.csv"))
    if not reports:
        raise SystemExit(f"No report was written under {BUILD / 'reports'}")
    report = reports[-1]
    with report.open(encoding="utf-8") as handle:
        counts = Counter(row["outcome"] for row in csv.DictReader(handle))
    print()
    print(f"Report: {report}")
    print(f"        {report.with_suffix('.xlsx')}")
    print(f"Invoices considered: {sum(counts.values())}")
    for outcome, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {outcome:<22} {count:>6}")
    print(f"Demo took {seconds:.0f} s")


def run_ui(env: dict[str, str], port: int) -> int:
    step(f"Starting the Airflow UI on http://127.0.0.1:{port} (Ctrl-C stops everything)")
    # Each service leads a process group of its own, so that stopping it reaches the workers
    # it forked too, and Ctrl-C reaches this script alone, which then stops them in order.
    processes = [
        subprocess.Popen(
            [str(BIN / "airflow"), *command], env=env, cwd=ROOT, start_new_session=True
        )
        for command in (
            ["api-server", "--host", "127.0.0.1", "--port", str(port)],
            ["scheduler"],
            ["dag-processor"],
        )
    ]
    # A SIGTERM (a service manager, `kill`) stops everything as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while all(process.poll() is None for process in processes):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop_process_groups(processes)
    return 0


def stop_process_groups(processes: list[subprocess.Popen], grace_seconds: float = 20) -> None:
    """SIGTERM each process's group, then SIGKILL whatever is left once the grace time is up:
    the scheduler's LocalExecutor workers may otherwise outlive it."""
    # A second Ctrl-C must not cut the clean-up short and leave the services running.
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in STOP_SIGNALS}
    try:
        for process in processes:
            signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for process in processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                # Ctrl-C may have ended whatever read our output (`make ui | tee`): a failed
                # message must not stop the clean-up before the SIGKILL below.
                with contextlib.suppress(OSError):
                    print(f"  {process.args[1]} did not stop in {grace_seconds:.0f} s; killing it")
        for process in processes:
            signal_group(process, signal.SIGKILL)
            process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

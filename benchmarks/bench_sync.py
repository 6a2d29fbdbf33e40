"""Benchmark of the sync's four steps on a growing backlog: seconds per step and peak memory.

    .venv/bin/python benchmarks/bench_sync.py --invoices 2000 20000 100000 [--dialect sqlite]

Each size runs against a sandbox of that size and a freshly seeded PlanManager; the four steps
run in a fresh process of their own, so the peak memory printed is the sync's alone, not the
seeder's. The figures are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "sandbox"), str(ROOT / "tests")]


def measure_one(invoices: int, dialect: str) -> dict:
    """Seed PlanManager for `invoices` invoices, then time the four steps in a process of their
    own; return seconds per step and the steps' peak RSS."""
    from db_fixtures import ThrowawayDatabase
    from driver2_sandbox.seeder import seed_planmanager
    from sandbox_fixtures import start_sandbox

    work = Path(tempfile.mkdtemp(prefix="driver2-bench-"))
    sandbox = start_sandbox(invoices=invoices, seed=7)
    database = ThrowawayDatabase(dialect, work)
    try:
        started = time.monotonic()
        seed_planmanager(database.engine, sandbox.dataset)
        seed_s = time.monotonic() - started
        # This process holds the seeder's whole dataset: the sync's memory is measured apart.
        output = subprocess.run(
            [sys.executable, __file__, "--steps", sandbox.base_url,
             database.url.render_as_string(hide_password=False), str(work)],
            check=True, capture_output=True, text=True,
            env={**os.environ, "DRIVER2_BENCH_TOKEN": sandbox.token},
        ).stdout  # fmt: skip
        return {"invoices": invoices, "seed_s": seed_s, **json.loads(output.splitlines()[-1])}
    finally:
        sandbox.stop()
        database.drop()


def measure_steps(base_url: str, database_url: str, work: Path) -> dict:
    """Run extract, match, load and report once; return seconds per step and peak RSS."""
    from driver2_sync import sync
    from driver2_sync.driver2_client import Driver2Client
    from driver2_sync.report import resolve_reports_base
    from driver2_sync.staging import RunStaging
    from driver2_sync.store import PlanManagerStore, create_engine_for_url

    store = PlanManagerStore(create_engine_for_url(database_url))
    staging = RunStaging(work / "staging")
    reports = resolve_reports_base(f"file://{work}/reports", str(work))
    run_id = "bench"
    figures: dict = {}
    with Driver2Client(base_url, os.environ["DRIVER2_BENCH_TOKEN"]) as client:
        steps = [
            ("extract", lambda: sync.extract_driver2(client, store, staging, "bench")),
            ("match", lambda: sync.match_clients(store, staging)),
            ("load", lambda: sync.load_invoices(store, staging, run_id)),
            ("report", lambda: sync.build_report(
                store, staging, reports, dag_id="bench", run_id=run_id,
                started_at=datetime.now(UTC))),
        ]  # fmt: skip
        for name, step in steps:
            started = time.monotonic()
            result = step()
            figures[f"{name}_s"] = time.monotonic() - started
    store.engine.dispose()
    figures["imported"] = result["imported"]
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--invoices", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--dialect", choices=("sqlite", "postgresql", "mysql"), default="sqlite")
    parser.add_argument("--steps", nargs=3, help=argparse.SUPPRESS)
    arguments = parser.parse_args()

    if arguments.steps:
        base_url, database_url, work = arguments.steps
        print(json.dumps(measure_steps(base_url, database_url, Path(work))))
        return 0

    print(
        f"{'invoices':>9} {'seed s':>7} {'extract s':>9} {'match s':>8} {'load s':>7}"
        f" {'report s':>8} {'sync s':>7} {'inv/s':>7} {'imported':>9} {'peak MB':>8}"
        f"   ({arguments.dialect})"
    )
    for invoices in arguments.invoices:
        f = measure_one(invoices, arguments.dialect)
        total = f["extract_s"] + f["match_s"] + f["load_s"] + f["report_s"]
        print(
            f"{f['invoices']:>9} {f['seed_s']:>7.1f} {f['extract_s']:>9.1f} {f['match_s']:>8.1f}"
            f" {f['load_s']:>7.1f} {f['report_s']:>8.1f} {total:>7.1f}"
            f" {f['invoices'] / total:>7.0f} {f['imported']:>9} {f['peak_rss_mb']:>8.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

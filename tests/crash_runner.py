"""Runs sync steps in processes of their own that can die at a chosen point, as a worker does.

`python crash_runner.py --serve` imports the sync once (Airflow's import alone takes seconds),
then reads one JSON request per line on stdin and forks a fresh process per job in it. A job
runs sync steps or custom imports against the real Driver2 sandbox and PlanManager database;
with a crash point it SIGKILLs itself there: no rollback, no `finally`, no flushed file, the
database sees a dropped connection. Crash points are installed from the outside, by engine
events and wrappers around the product's functions: the product has no test hooks.

The test side: `CrashRunner` drives the server, and the read-back helpers below compare what a
run left in PlanManager with what an uninterrupted run leaves.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("crash_runner")

TESTS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = TESTS_DIR.parent
DAG_ID = "driver2_invoice_sync"
STEPS = ("extract", "match", "load", "report")
# Long enough for a loaded CI machine to sync a few hundred invoices, short enough that a job
# stuck on a lock fails the test instead of hanging it.
JOB_TIMEOUT_SECONDS = 120

# Where each crash point sits; `:N` counts from 1 (the N-th page, or the N-th import batch).
CRASH_POINTS = {
    "extract.after_page": "Driver2 page N staged, the pages after it never read",
    "load.before_commit": "batch N's headers, lines and bookkeeping sent, COMMIT not yet",
    "load.after_commit": "batch N committed, its staging file not written",
    "load.after_manifest": "the load manifest written, the task not yet marked done",
    "report.before_write": "nothing of the report written",
    "report.between_files": "report.xlsx published, report.csv not",
    "report.after_write": "both report files written, the watermark not moved",
    "report.before_state_commit": "the watermark's transaction sent, COMMIT not yet",
    "report.after_state": "the watermark moved, staging still there",
    "report.mid_removal": "staging half removed: the load step's files gone",
    "report.after_removal": "everything done, the task not yet marked done",
}


# -- the forked job ---------------------------------------------------------------------------


def die(where: str) -> None:
    """Flush the job's log and SIGKILL this process: nothing after this line runs."""
    log.warning("Crash point %s reached: SIGKILL", where)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def watch_import_commits(on_commit) -> None:
    """Call on_commit(n) as the n-th import transaction sends its COMMIT, in this process.

    An import transaction is one that recorded run imports (a sync batch, a custom import).
    """
    from sqlalchemy import Engine, event

    from driver2_sync.store import PlanManagerStore

    seen = {"commits": 0, "pending": False}
    record_run_imports = PlanManagerStore.record_run_imports

    def recording(store, conn, run_id, imports):
        record_run_imports(store, conn, run_id, imports)
        seen["pending"] = seen["pending"] or bool(imports)

    PlanManagerStore.record_run_imports = recording

    @event.listens_for(Engine, "commit")
    def _on_commit(_conn) -> None:
        if seen["pending"]:
            seen["pending"] = False
            seen["commits"] += 1
            on_commit(seen["commits"])


def hold_first_import_commit(barrier, seconds: float) -> None:
    """Meet the other jobs at the barrier with the first import's rows in, not committed.

    Then wait `seconds` more, so that the others run into those rows while they are in flight.
    """

    def on_commit(count: int) -> None:
        if count == 1:
            log.info("First import transaction waits at the barrier before its COMMIT")
            barrier.wait(JOB_TIMEOUT_SECONDS)
            time.sleep(seconds)

    watch_import_commits(on_commit)


def install_crash_point(spec: str) -> None:
    """Arrange for this process to SIGKILL itself at `spec`, e.g. "load.before_commit:2"."""
    from sqlalchemy import Engine, event

    from driver2_sync import report, staging
    from driver2_sync.staging import RunStaging
    from driver2_sync.store import PlanManagerStore

    name, _, count = spec.partition(":")
    if name not in CRASH_POINTS:
        raise ValueError(f"unknown crash point {spec!r}")
    nth = int(count or 1)
    seen = {"import_commits": 0}

    def always(*_args, **_kwargs) -> bool:
        return True

    def wrap(owner, attribute, *, before=None, after=None) -> None:
        original = getattr(owner, attribute)

        def wrapper(*args, **kwargs):
            if before is not None and before(*args, **kwargs):
                die(spec)
            result = original(*args, **kwargs)
            if after is not None and after(*args, **kwargs):
                die(spec)
            return result

        setattr(owner, attribute, wrapper)

    def on_import_commit(count: int) -> None:
        seen["import_commits"] = count
        if name == "load.before_commit" and count == nth:
            die(spec)

    watch_import_commits(on_import_commit)

    def is_nth_page(_staging, step, part_no, _records) -> bool:
        return step == "raw" and part_no == nth - 1

    def has_committed_nth_batch(*_args, **_kwargs) -> bool:
        return seen["import_commits"] == nth

    if name == "extract.after_page":
        wrap(RunStaging, "write_part", after=is_nth_page)
    elif name == "load.after_commit":
        wrap(PlanManagerStore, "run_in_transaction", after=has_committed_nth_batch)
    elif name == "load.after_manifest":
        wrap(RunStaging, "write_manifest", after=lambda _s, step, _m: step == "load")
    elif name == "report.before_write":
        wrap(report, "write_run_report", before=always)
    elif name == "report.between_files":
        wrap(report, "publish_file", after=always)
    elif name == "report.after_write":
        wrap(report, "write_run_report", after=always)
    elif name == "report.before_state_commit":
        # The watermark's transaction is the one advance_sync_state opens: die as it commits.
        def die_at_commit(*_args, **_kwargs) -> bool:
            event.listen(Engine, "commit", lambda _conn: die(spec))
            return False

        wrap(PlanManagerStore, "advance_sync_state", before=die_at_commit)
    elif name == "report.after_state":
        wrap(PlanManagerStore, "advance_sync_state", after=always)
    elif name == "report.mid_removal":
        wrap(staging, "_remove_tree", after=lambda path: path.name == "load")
    elif name == "report.after_removal":
        wrap(RunStaging, "remove", after=always)


def run_sync_steps(job: dict, store, barrier) -> dict:
    """Run the job's sync steps in order; return each step's result by step name."""
    from driver2_sync import runtime, sync
    from driver2_sync.driver2_client import Driver2Client
    from driver2_sync.report import resolve_reports_base
    from driver2_sync.staging import RunStaging

    staging = RunStaging(Path(job["staging"]))
    sync.BATCH_SIZE = job.get("batch_size", sync.BATCH_SIZE)
    results: dict[str, Any] = {}
    for step in job["steps"]:
        if barrier is not None and step in job.get("wait_before", ()):
            barrier.wait(JOB_TIMEOUT_SECONDS)
        if step == "extract":
            with Driver2Client(job["driver2_url"], job["token"]) as client:
                manifest = sync.extract_driver2(
                    client, store, staging, DAG_ID, page_size=job.get("page_size", 500)
                )
            results[step] = {key: manifest[key] for key in ("considered", "watermark")}
        elif step == "match":
            results[step] = sync.match_clients(store, staging)["counts"]
        elif step == "load":
            manifest = sync.load_invoices(store, staging, job["run_id"])
            results[step] = {"imported": manifest["imported"]}
        elif step == "report":
            base = resolve_reports_base(job["reports_url"], runtime.airflow_home())
            results[step] = sync.build_report(
                store, staging, base, dag_id=DAG_ID, run_id=job["run_id"], started_at=None
            )
        else:
            raise ValueError(f"unknown step {step!r}")
    return results


def run_custom_imports(job: dict, store, barrier) -> list[dict]:
    """Run the job's custom imports one after the other; return what each did."""
    from driver2_sync.custom_import import run_custom_import
    from driver2_sync.driver2_client import Driver2Client

    if barrier is not None and "start" in job.get("wait_before", ()):
        barrier.wait(JOB_TIMEOUT_SECONDS)
    done = []
    with Driver2Client(job["driver2_url"], job["token"]) as client:
        for wanted in job["imports"]:
            number, force = wanted["number"], bool(wanted.get("force"))
            result = run_custom_import(
                client, store, number, wanted.get("dossier"), force, wanted["run_id"]
            )
            done.append(
                {
                    "number": wanted["number"],
                    "outcome": result.decision.outcome.value,
                    "invoice_id": result.decision.invoice_id,
                    "dossier_number": result.dossier_number,
                    "forced": result.forced,
                }
            )
    return done


def run_job(job: dict, barrier) -> None:
    """The forked process: run one job, write its result file, exit 0, 1 on error, or die."""
    from driver2_sync.store import PlanManagerStore, create_engine_for_url

    logging.basicConfig(
        filename=job["log"],
        level=logging.INFO,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    log.info("Job %s: %s", job.get("name"), job.get("steps") or "custom imports")
    if job.get("crash"):
        install_crash_point(job["crash"])
    if barrier is not None and "import_commit" in job.get("wait_before", ()):
        hold_first_import_commit(barrier, job.get("hold_seconds", 0.0))
    engine = create_engine_for_url(job["planmanager_url"])
    status, outcome = 0, {}
    try:
        store = PlanManagerStore(engine)
        if job.get("kind") == "custom":
            outcome = {"imports": run_custom_imports(job, store, barrier)}
        else:
            outcome = {"steps": run_sync_steps(job, store, barrier)}
    except Exception as error:
        log.exception("Job %s failed", job.get("name"))
        if barrier is not None:
            barrier.abort()  # the others must not wait for this one
        status, outcome = 1, {"error": f"{type(error).__name__}: {error}"}
    finally:
        engine.dispose()
    Path(job["result"]).write_text(json.dumps(outcome, default=str), encoding="utf-8")
    logging.shutdown()
    os._exit(status)


def serve() -> None:
    """Import everything once, then fork one process per job of each request line on stdin."""
    import multiprocessing

    # Imported before any fork, so that each job starts at once.
    import driver2_sync.custom_import  # noqa: F401
    import driver2_sync.driver2_client  # noqa: F401
    import driver2_sync.report  # noqa: F401
    import driver2_sync.sync  # noqa: F401

    context = multiprocessing.get_context("fork")
    print("ready", flush=True)
    for line in sys.stdin:
        jobs = json.loads(line)
        barrier = context.Barrier(len(jobs)) if len(jobs) > 1 else None
        processes = [context.Process(target=run_job, args=(job, barrier)) for job in jobs]
        for process in processes:
            process.start()
        answers = []
        for job, process in zip(jobs, processes, strict=True):
            process.join(JOB_TIMEOUT_SECONDS)
            if process.exitcode is None:
                process.kill()
                process.join()
                answers.append({"exitcode": "timeout", "outcome": None})
                continue
            result = Path(job["result"])
            outcome = json.loads(result.read_text(encoding="utf-8")) if result.exists() else None
            answers.append({"exitcode": process.exitcode, "outcome": outcome})
        print(json.dumps(answers), flush=True)


# -- the test side ----------------------------------------------------------------------------


class CrashRunner:
    """The test's handle on a `--serve` process: run jobs, each in a process of its own."""

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self.jobs_run = 0
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(PROJECT_ROOT / "plugins"), str(PROJECT_ROOT / "sandbox"), str(TESTS_DIR)]
        )
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
            cwd=work_dir,
        )
        ready = self.process.stdout.readline().strip()
        if ready != "ready":
            self.close()
            raise RuntimeError(f"crash runner did not start: {ready!r}")

    def run(self, *jobs: dict) -> list[dict]:
        """Run the jobs at once; return the exit code, outcome and log of each.

        A job is a dict. Every job: `planmanager_url`, `driver2_url`, `token`; optional
        `wait_before`, the places where it meets the other jobs of the call at a barrier: a step
        name, "start" (a custom import's) or "import_commit" (its first import transaction,
        rows in, COMMIT held `hold_seconds` more after the barrier). A sync job (see sync_job):
        `run_id`, `steps`, `staging`, `reports_url`, optional `crash` (a CRASH_POINTS key, with
        `:N`), `batch_size`, `page_size`. A custom job: `kind` "custom" and `imports`, a list of
        {number, dossier, force, run_id}.

        The exit code is 0 for success, 1 for an error the job caught, -9 for a crash point.
        """
        for job in jobs:
            self.jobs_run += 1
            job.setdefault("name", f"job-{self.jobs_run}")
            job.setdefault("log", str(self.work_dir / f"{job['name']}.log"))
            job.setdefault("result", str(self.work_dir / f"{job['name']}.json"))
            Path(job["result"]).unlink(missing_ok=True)
        self.process.stdin.write(json.dumps(list(jobs)) + "\n")
        self.process.stdin.flush()
        answers = json.loads(self.process.stdout.readline())
        for job, answer in zip(jobs, answers, strict=True):
            log_file = Path(job["log"])
            answer["log"] = log_file.read_text(encoding="utf-8") if log_file.exists() else ""
        return answers

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def sync_job(
    sandbox, database, folder: Path, run_id: str, steps=STEPS, crash: str | None = None, **extra
) -> dict:
    """Return a job that runs `steps` of run `run_id`, staging and reports under `folder`."""
    return {
        "run_id": run_id,
        "steps": list(steps),
        "crash": crash,
        "staging": str(staging_folder(folder, run_id)),
        "reports_url": f"file://{folder}/reports",
        "planmanager_url": database.url.render_as_string(hide_password=False),
        "driver2_url": sandbox.base_url,
        "token": sandbox.token,
        **extra,
    }


def staging_folder(folder: Path, run_id: str) -> Path:
    from driver2_sync.report import report_folder_name

    return folder / "staging" / DAG_ID / report_folder_name(run_id)


def read_report(folder: Path, run_id: str) -> list[dict]:
    """Return the rows of the run's report.csv, by Driver2 number."""
    import csv

    from driver2_sync.report import report_folder_name

    path = folder / "reports" / DAG_ID / report_folder_name(run_id) / "report.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        return sorted(csv.DictReader(handle), key=lambda row: row["driver2_number"])


def read_invoices(engine) -> dict[str, tuple[dict, tuple]]:
    """Return every PlanManager invoice by Driver2 number: its header, then its lines.

    The generated id and imported_at are left out: they differ between two databases that hold
    the same invoices. Lines are matched to their header through invoice_id.
    """
    from sqlalchemy import select

    from driver2_sync.store import invoice_lines, invoices

    header_columns = [c for c in invoices.c if c.name not in ("id", "imported_at")]
    line_columns = [c for c in invoice_lines.c if c.name != "invoice_id"]
    with engine.connect() as conn:
        headers = conn.execute(select(invoices.c.id, *header_columns)).all()
        lines = conn.execute(
            select(invoice_lines.c.invoice_id, *line_columns).order_by(
                invoice_lines.c.invoice_id, invoice_lines.c.line_no
            )
        ).all()
    lines_of: dict[int, list[tuple]] = {}
    for line in lines:
        lines_of.setdefault(line[0], []).append(tuple(line[1:]))
    names = [column.name for column in header_columns]
    return {
        header.driver2_number: (
            dict(zip(names, header[1:], strict=True)),
            tuple(lines_of.get(header.id, ())),
        )
        for header in headers
    }


def count_lines(dataset) -> dict[str, int]:
    """Return how many lines each Driver2 invoice has now, by number: the version a sync imports."""
    return {number: len(dataset.invoice(number)["lines"]) for number in dataset.numbers()}


def find_broken_promises(engine, line_counts: dict[str, int]) -> list[str]:
    """Return every way PlanManager breaks the contract's promise; empty when it holds.

    Two rows for one Driver2 number, a header without exactly the lines of the Driver2 version
    it holds (`line_counts`, by number), lines without a header, a run import naming no such
    invoice.
    """
    from sqlalchemy import func, select

    from driver2_sync.store import invoice_lines, invoices, sync_imports

    broken = []
    with engine.connect() as conn:
        for number, count in conn.execute(
            select(invoices.c.driver2_number, func.count())
            .group_by(invoices.c.driver2_number)
            .having(func.count() > 1)
        ):
            broken.append(f"{number}: {count} rows")
        ids = dict(conn.execute(select(invoices.c.id, invoices.c.driver2_number)).all())
        lines_of = dict(
            conn.execute(
                select(invoice_lines.c.invoice_id, func.count()).group_by(
                    invoice_lines.c.invoice_id
                )
            ).all()
        )
        recorded = conn.execute(
            select(sync_imports.c.run_id, sync_imports.c.driver2_number, sync_imports.c.invoice_id)
        ).all()
    for invoice_id, number in ids.items():
        if lines_of.get(invoice_id, 0) != line_counts[number]:
            broken.append(f"{number}: {lines_of.get(invoice_id, 0)} of {line_counts[number]} lines")
    for invoice_id in set(lines_of) - set(ids):
        broken.append(f"lines of invoice id {invoice_id}, which has no header")
    for run_id, number, invoice_id in recorded:
        if ids.get(invoice_id) != number:
            broken.append(f"{run_id} recorded {number} as invoice {invoice_id}, not in invoices")
    return broken


def read_sync_state(engine) -> dict:
    """Return the watermark rows and the recorded runs, as the next run would find them."""
    from sqlalchemy import select

    from driver2_sync.store import sync_runs, sync_state

    with engine.connect() as conn:
        states = {
            row.name: (row.watermark, json.loads(row.boundary_numbers), row.last_run_id)
            for row in conn.execute(select(sync_state))
        }
        runs = {
            row.run_id: (row.considered, row.imported) for row in conn.execute(select(sync_runs))
        }
    return {"states": states, "runs": runs}


def read_run_imports(engine, run_id: str) -> set[str]:
    """Return the Driver2 numbers that the run recorded as its own imports."""
    from sqlalchemy import select

    from driver2_sync.store import sync_imports

    with engine.connect() as conn:
        return set(
            conn.execute(
                select(sync_imports.c.driver2_number).where(sync_imports.c.run_id == run_id)
            ).scalars()
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="fork a process per job on stdin")
    parser.add_argument("--job", help="run one job described by this JSON file, in this process")
    arguments = parser.parse_args()
    if arguments.serve:
        serve()
        return 0
    if arguments.job:
        run_job(json.loads(Path(arguments.job).read_text(encoding="utf-8")), None)  # exits
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())

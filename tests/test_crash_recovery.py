"""A sync killed anywhere, or cut off from PlanManager during its load, and then retried ends
exactly as an uninterrupted run: the same invoices and lines, the same report, the same watermark.

Each attempt of a step runs in a process of its own (crash_runner.py) that SIGKILLs itself at
the crash point, as a worker dies: the retry is a fresh process with the same run id and
staging folder, as Airflow's task retry is.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, exc, select, text

from crash_runner import (
    CRASH_POINTS,
    STEPS,
    CrashRunner,
    count_lines,
    find_broken_promises,
    read_invoices,
    read_report,
    read_run_imports,
    read_sync_state,
    staging_folder,
)
from crash_runner import sync_job as _sync_job
from db_fixtures import SERVER_URLS, ThrowawayDatabase
from driver2_sandbox.seeder import seed_planmanager
from driver2_sync import sync
from driver2_sync.staging import RunStaging
from driver2_sync.store import PlanManagerStore, create_engine_for_url, invoices
from sandbox_fixtures import start_sandbox

pytestmark = pytest.mark.slow

INVOICES, SEED = 600, 31
# Three import batches and three Driver2 pages per run, so that a crash can fall between two.
BATCH_SIZE = PAGE_SIZE = 200
RUN_ID = "scheduled__2026-05-04T10:00:00+00:00"
NEXT_RUN_ID = "scheduled__2026-05-04T10:30:00+00:00"

# Where a crash meets the database (an open transaction, a COMMIT) it is tried on every dialect;
# where it meets files only, on SQLite.
DATABASE_CRASHES = [
    "load.before_commit:2",
    "load.after_commit:2",
    "report.before_state_commit",
]
FILE_CRASHES = [
    "extract.after_page:2",
    "load.after_manifest",
    "report.after_state",
    "report.before_write",
    "report.between_files",
    "report.after_write",
    "report.mid_removal",
    "report.after_removal",
]
CRASHES = [
    pytest.param(dialect, crash, id=f"{dialect}-{crash}")
    for crash in DATABASE_CRASHES
    for dialect in ("sqlite", "postgresql", "mysql")
] + [pytest.param("sqlite", crash, id=f"sqlite-{crash}") for crash in FILE_CRASHES]
# Crash points at or after the watermark's COMMIT: the watermark has moved when they strike.
AFTER_THE_WATERMARK = {"report.after_state", "report.mid_removal", "report.after_removal"}


def sync_job(sandbox, database, folder: Path, run_id: str, steps=STEPS, crash=None) -> dict:
    return _sync_job(
        sandbox, database, folder, run_id, steps, crash, batch_size=BATCH_SIZE, page_size=PAGE_SIZE
    )


@dataclass
class Finish:
    """What a run left behind: PlanManager's invoices, the report, the bookkeeping."""

    invoices: dict
    report: list[dict]
    run_imports: set[str]
    state: dict


@pytest.fixture(scope="module")
def sandbox():
    sandbox = start_sandbox(invoices=INVOICES, seed=SEED)
    yield sandbox
    sandbox.stop()


@pytest.fixture(scope="module")
def line_counts(sandbox) -> dict[str, int]:
    return count_lines(sandbox.dataset)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    runner = CrashRunner(tmp_path_factory.mktemp("crash-runner"))
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def uninterrupted(sandbox, runner, tmp_path_factory):
    """What one uninterrupted run leaves on each dialect, made once per dialect."""
    finishes: dict[str, Finish] = {}

    def finish_of(dialect: str) -> Finish:
        if dialect not in finishes:
            folder = tmp_path_factory.mktemp(f"uninterrupted-{dialect}")
            database = ThrowawayDatabase(dialect, folder)
            try:
                seed_planmanager(database.engine, sandbox.dataset)
                [answer] = runner.run(sync_job(sandbox, database, folder, RUN_ID))
                assert answer["exitcode"] == 0, answer["log"]
                finishes[dialect] = read_finish(database, folder, RUN_ID)
            finally:
                database.drop()
            outcomes = {row["driver2_number"]: row["outcome"] for row in finishes[dialect].report}
            assert outcomes == sandbox.dataset.expected_outcomes()
        return finishes[dialect]

    return finish_of


def read_finish(database, folder: Path, run_id: str) -> Finish:
    return Finish(
        read_invoices(database.engine),
        read_report(folder, run_id),
        read_run_imports(database.engine, run_id),
        read_sync_state(database.engine),
    )


def assert_finishes_alike(
    database, line_counts, folder: Path, run_id: str, expected: Finish
) -> None:
    """Assert the run left what the uninterrupted run left; only generated ids may differ."""
    finish = read_finish(database, folder, run_id)
    assert find_broken_promises(database.engine, line_counts) == []
    assert finish.invoices == expected.invoices
    assert finish.run_imports == expected.run_imports
    assert finish.state == expected.state

    # Invoice ids come from a sequence that a rolled-back batch has moved on: they point at
    # the row of the same number instead of being equal.
    ids = _invoice_ids(database)
    for row in finish.report:
        invoice_id = row.pop("invoice_id")
        if row["outcome"] == "imported":
            assert int(invoice_id) == ids[row["driver2_number"]]
    assert finish.report == [
        {key: value for key, value in row.items() if key != "invoice_id"} for row in expected.report
    ]


def assert_next_run_considers_nothing(runner, sandbox, database, folder: Path) -> None:
    before = read_invoices(database.engine)
    state = read_sync_state(database.engine)["states"]

    [answer] = runner.run(sync_job(sandbox, database, folder, NEXT_RUN_ID))

    assert answer["exitcode"] == 0, answer["log"]
    assert answer["outcome"]["steps"]["extract"]["considered"] == 0
    assert answer["outcome"]["steps"]["report"]["considered"] == 0
    assert read_report(folder, NEXT_RUN_ID) == []
    assert read_invoices(database.engine) == before
    # Nothing considered, nothing to move: the watermark row stays as the last run left it.
    assert read_sync_state(database.engine)["states"] == state


def _invoice_ids(database) -> dict[str, int]:
    with database.engine.connect() as conn:
        return dict(conn.execute(select(invoices.c.driver2_number, invoices.c.id)).all())


@pytest.mark.parametrize(("dialect", "crash"), CRASHES)
def test_a_sync_killed_and_retried_ends_as_an_uninterrupted_run(
    dialect, crash, sandbox, line_counts, runner, seeded_database, uninterrupted, tmp_path
):
    expected = uninterrupted(dialect)
    database = seeded_database(dialect)
    crashed_step = crash.split(".")[0]

    [killed] = runner.run(sync_job(sandbox, database, tmp_path, RUN_ID, crash=crash))

    assert killed["exitcode"] == -9, killed["log"]
    assert f"Crash point {crash} reached" in killed["log"]
    assert find_broken_promises(database.engine, line_counts) == []
    if crash.split(":")[0] in AFTER_THE_WATERMARK:
        assert read_sync_state(database.engine) == expected.state
    else:
        assert read_sync_state(database.engine) == {"states": {}, "runs": {}}

    retried_steps = STEPS[STEPS.index(crashed_step) :]
    [retried] = runner.run(sync_job(sandbox, database, tmp_path, RUN_ID, steps=retried_steps))

    assert retried["exitcode"] == 0, retried["log"]
    assert_finishes_alike(database, line_counts, tmp_path, RUN_ID, expected)
    assert not staging_folder(tmp_path, RUN_ID).exists()
    assert_next_run_considers_nothing(runner, sandbox, database, tmp_path)


def test_every_crash_point_is_tried():
    tried = {crash.split(":")[0] for crash in DATABASE_CRASHES + FILE_CRASHES}
    assert tried == set(CRASH_POINTS)


class TcpRelay:
    """A loopback TCP relay in front of a database server: close it, and the server is gone.

    New connections are then refused, as by a server that is down or a network that failed.
    """

    def __init__(self, port: int):
        self.upstream_port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        # close() alone leaves a thread blocked in accept() accepting one more connection.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for end in self.sockets:
            try:
                end.close()
            except OSError:
                pass


def _backend_id(dbapi_connection) -> int:
    if hasattr(dbapi_connection, "get_backend_pid"):
        return dbapi_connection.get_backend_pid()
    return dbapi_connection.thread_id()


def _kill_backend(dialect: str, backend_id: int) -> None:
    admin = create_engine(SERVER_URLS[dialect], isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if dialect == "postgresql":
                killed = conn.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": backend_id}
                ).scalar_one()
                assert killed is True
            else:
                conn.exec_driver_sql(f"KILL CONNECTION {int(backend_id)}")
    finally:
        admin.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
@pytest.mark.parametrize("cut", ["killed-mid-batch", "down-between-batches"])
def test_a_load_cut_off_from_planmanager_fails_without_a_partial_batch_and_its_retry_finishes(
    dialect, cut, sandbox, line_counts, runner, seeded_database, uninterrupted, tmp_path
):
    expected = uninterrupted(dialect)
    database = seeded_database(dialect)
    [prepared] = runner.run(
        sync_job(sandbox, database, tmp_path, RUN_ID, steps=("extract", "match"))
    )
    assert prepared["exitcode"] == 0, prepared["log"]

    relay = TcpRelay(database.url.port)
    engine = create_engine_for_url(database.url.set(host="127.0.0.1", port=relay.port))
    held, go_on = threading.Event(), threading.Event()
    seen = {"line_inserts": 0, "commits": 0, "backend": None}

    def hold() -> None:
        held.set()
        go_on.wait(60)

    if cut == "killed-mid-batch":
        # Batch 2's lines are on their way: its headers are in, nothing of it is committed.
        @event.listens_for(engine, "before_cursor_execute")
        def _hold_batch_two(conn, _cursor, statement, _params, _context, _many):
            if statement.lstrip().upper().startswith("INSERT INTO INVOICE_LINES"):
                seen["line_inserts"] += 1
                if seen["line_inserts"] == 2:
                    seen["backend"] = _backend_id(conn.connection.dbapi_connection)
                    hold()

    else:
        # Batch 1 committed and gave its connection back; batch 2 has not begun.
        @event.listens_for(engine, "commit")
        def _count_commits(_conn):
            seen["commits"] += 1

        @event.listens_for(engine, "checkin")
        def _hold_after_batch_one(_dbapi_connection, _record):
            if seen["commits"] == 1 and not held.is_set():
                hold()

    failure: list[BaseException] = []

    def load() -> None:
        try:
            sync.load_invoices(
                PlanManagerStore(engine), RunStaging(staging_folder(tmp_path, RUN_ID)), RUN_ID
            )
        except BaseException as error:
            failure.append(error)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        assert held.wait(60)
        if cut == "killed-mid-batch":
            _kill_backend(dialect, seen["backend"])
        else:
            relay.close()
    finally:
        go_on.set()
        loader.join(120)
        relay.close()
        engine.dispose()

    # Failed whole: no invoice of batch 2 or 3 reported `failed`, nothing of batch 2 written.
    assert [type(error) for error in failure] == [exc.OperationalError]
    assert not (staging_folder(tmp_path, RUN_ID) / "load" / "manifest.json").exists()
    assert find_broken_promises(database.engine, line_counts) == []
    batch_one = set(sandbox.dataset.numbers()[:BATCH_SIZE])
    assert read_run_imports(database.engine, RUN_ID) == expected.run_imports & batch_one

    [retried] = runner.run(sync_job(sandbox, database, tmp_path, RUN_ID, steps=("load", "report")))

    assert retried["exitcode"] == 0, retried["log"]
    assert_finishes_alike(database, line_counts, tmp_path, RUN_ID, expected)
    assert_next_run_considers_nothing(runner, sandbox, database, tmp_path)

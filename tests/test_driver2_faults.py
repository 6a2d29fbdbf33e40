"""driver2_invoice_sync under Driver2's faults, each alone and all at once: the run ends with the
same PlanManager rows and report as a fault-free run, and each retry is logged. A Driver2 that
never recovers fails the run within the retry budget, says so, and changes nothing.

The sync runs through the DAG's task functions, configured from Airflow connections in the
environment as in production, with the retry settings in the `driver2_api` connection's extra.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException
from sqlalchemy import select

from db_fixtures import ThrowawayDatabase
from driver2_sandbox.seeder import seed_planmanager
from driver2_sync import tasks
from driver2_sync.driver2_client import Driver2Client, Driver2ConfigError, RetryPolicy
from driver2_sync.report import report_folder_name
from driver2_sync.runtime import airflow_home
from driver2_sync.store import invoice_lines, invoices, metadata, sync_metadata, sync_state
from sandbox_fixtures import start_sandbox

DAG_ID = "driver2_invoice_sync"
INVOICES = 300
SEED = 23
PAGE_SIZE = 10
FAULT_SEED = 4
CLIENT_LOGGER = "driver2_sync.driver2_client"
INVOICES_PATH = "/api/v1/invoices"
SLOW_SECONDS = 1.5
# Small waits, so that the suite stays quick, and room for eight faults in a row per page.
FAST_SETTINGS = {
    "max_attempts": 8,
    "max_total_seconds": 30,
    "backoff_first_seconds": 0.02,
    "backoff_max_seconds": 0.2,
    "connect_timeout_seconds": 2,
    "read_timeout_seconds": 0.5,
    "page_size": PAGE_SIZE,
}
FAULTS = {
    "5xx": {"fault_5xx_rate": 0.25},
    "429": {"fault_429_rate": 0.12},
    "dropped": {"fault_drop_rate": 0.25},
    "slow": {"fault_slow_rate": 0.15, "fault_slow_seconds": SLOW_SECONDS},
    "truncated": {"fault_truncate_rate": 0.25},
}
ALL_FAULTS = {
    "fault_5xx_rate": 0.06,
    "fault_429_rate": 0.04,
    "fault_drop_rate": 0.06,
    "fault_slow_rate": 0.04,
    "fault_slow_seconds": SLOW_SECONDS,
    "fault_truncate_rate": 0.06,
    "fault_touch_rate": 0.1,
}


@dataclass
class SyncResult:
    """What a run leaves behind: its report rows and the PlanManager rows, by Driver2 number."""

    report: dict[str, dict]
    headers: dict[str, dict]
    lines: dict[str, list[tuple]]
    state: list[tuple]

    @property
    def outcomes(self) -> dict[str, str]:
        return {number: row["outcome"] for number, row in self.report.items()}


class SyncUnderTest:
    """Runs the DAG's four task functions in this process against one sandbox and database."""

    def __init__(self, monkeypatch, reports_dir: Path) -> None:
        self.monkeypatch = monkeypatch
        self.reports_dir = reports_dir
        monkeypatch.setenv("AIRFLOW_VAR_DRIVER2_REPORTS_URL", f"file://{reports_dir}")

    def use(
        self, sandbox, database: ThrowawayDatabase, token: str | None = None, **settings
    ) -> None:
        """Point the connections at `sandbox` (with its token, or `token`) and `database`;
        `settings` go into the Driver2 connection's extra, over FAST_SETTINGS."""
        connection = {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": sandbox.port,
            "schema": "http",
            "password": token or sandbox.token,
            "extra": json.dumps({**FAST_SETTINGS, **settings}),
        }
        self.monkeypatch.setenv("AIRFLOW_CONN_DRIVER2_API", json.dumps(connection))
        self.monkeypatch.setenv("AIRFLOW_CONN_PLANMANAGER_DB", database.airflow_connection_json())
        self.database = database

    def run(self, run_id: str | None = None) -> SyncResult:
        run_id = run_id or new_run_id()
        tasks.extract_driver2(DAG_ID, run_id)
        tasks.match_clients(DAG_ID, run_id)
        tasks.load_invoices(DAG_ID, run_id)
        tasks.build_report(DAG_ID, run_id, None)
        return read_result(self.database.engine, self.report_path(run_id))

    def report_path(self, run_id: str) -> Path:
        return self.reports_dir / DAG_ID / report_folder_name(run_id) / "report.csv"


def new_run_id() -> str:
    return f"manual__faults_{uuid.uuid4().hex[:10]}"


def read_result(engine, report_csv: Path) -> SyncResult:
    with report_csv.open(encoding="utf-8", newline="") as handle:
        # Invoice ids are the database's to give; everything else must match.
        report = {
            row["driver2_number"]: {k: v for k, v in row.items() if k != "invoice_id"}
            for row in csv.DictReader(handle)
        }
    with engine.connect() as conn:
        headers = {
            row.driver2_number: {
                k: v for k, v in row._asdict().items() if k not in ("id", "imported_at")
            }
            for row in conn.execute(select(invoices))
        }
        lines: dict[str, list[tuple]] = {}
        query = (
            select(
                invoices.c.driver2_number, *[c for c in invoice_lines.c if c.key != "invoice_id"]
            )
            .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
            .order_by(invoices.c.driver2_number, invoice_lines.c.line_no)
        )
        for number, *line in conn.execute(query):
            lines.setdefault(number, []).append(tuple(line))
        state = [
            tuple(row)
            for row in conn.execute(
                select(sync_state.c.name, sync_state.c.watermark, sync_state.c.boundary_numbers)
            )
        ]
    return SyncResult(report, headers, lines, state)


def dump_tables(engine) -> dict[str, list[tuple]]:
    """Return every row of every PlanManager and sync table, for an untouched-ness check."""
    tables = {}
    with engine.connect() as conn:
        for table in [*metadata.sorted_tables, *sync_metadata.sorted_tables]:
            rows = conn.execute(select(table)).all()
            tables[table.name] = sorted((tuple(row) for row in rows), key=repr)
    return tables


def count_list_answers(sandbox) -> dict[str, int]:
    return sandbox.stats()["requests"].get(INVOICES_PATH, {})


def collect_client_records(caplog, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == CLIENT_LOGGER and r.levelno == level]


def count_pages_read(caplog) -> int:
    return sum(
        1
        for record in collect_client_records(caplog, logging.INFO)
        if record.getMessage().startswith("Driver2 invoices page ")
    )


def read_instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def replay_touches(sandbox, touched: list[dict]) -> None:
    """Make the same changes, at the same instants, that another sandbox made while paging."""
    for change in touched:
        response = sandbox.session.post(
            f"{sandbox.base_url}/_sandbox/invoices/{change['number']}/touch",
            json={"updated_at": change["updated_at"]},
            timeout=30,
        )
        response.raise_for_status()
        assert response.json()["updated_at"] == change["updated_at"]


def run_fault_free_over(
    touched: list[dict], start_driver2_sandbox, tmp_path: Path, sync_under_test
) -> tuple[SyncResult, ThrowawayDatabase]:
    """Run the sync on a fault-free sandbox where the `touched` changes were made beforehand;
    return its result and its database, which the caller drops."""
    calm = start_driver2_sandbox(invoices=INVOICES, seed=SEED)
    replay_touches(calm, touched)
    calm_db = ThrowawayDatabase("sqlite", tmp_path)
    seed_planmanager(calm_db.engine, calm.dataset)
    sync_under_test.use(calm, calm_db)
    return sync_under_test.run(), calm_db


def assert_same_result(result: SyncResult, expected: SyncResult) -> None:
    assert result.outcomes == expected.outcomes
    assert result.report == expected.report
    assert result.headers == expected.headers
    assert result.lines == expected.lines
    assert result.state == expected.state


def assert_each_fault_retried_once_and_logged(sandbox, caplog) -> list[str]:
    """Assert that every Driver2 answer beyond the pages read was a failure the client logged
    and retried; return the logged causes."""
    warnings = collect_client_records(caplog, logging.WARNING)
    expected = count_pages_read(caplog) + len(warnings)
    # A slow answer is counted when the sandbox sends it, after the client has given up on it.
    deadline = time.monotonic() + SLOW_SECONDS + 2.0
    while sum(count_list_answers(sandbox).values()) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(count_list_answers(sandbox).values()) == expected
    assert collect_client_records(caplog, logging.ERROR) == []
    causes = [re.search(r"failed \((.*)\) on attempt", r.getMessage()).group(1) for r in warnings]
    return causes


@pytest.fixture
def sync_under_test(monkeypatch, tmp_path, caplog) -> SyncUnderTest:
    caplog.set_level(logging.INFO, logger=CLIENT_LOGGER)
    return SyncUnderTest(monkeypatch, tmp_path / "reports")


@pytest.fixture(scope="module")
def fault_free_result(tmp_path_factory) -> SyncResult:
    """The fault-free run that every run under faults must end like, on SQLite."""
    sandbox = start_sandbox(invoices=INVOICES, seed=SEED)
    database = ThrowawayDatabase("sqlite", tmp_path_factory.mktemp("fault-free"))
    try:
        seed_planmanager(database.engine, sandbox.dataset)
        with pytest.MonkeyPatch.context() as monkeypatch:
            sync = SyncUnderTest(monkeypatch, tmp_path_factory.mktemp("fault-free-reports"))
            sync.use(sandbox, database)
            result = sync.run()
    finally:
        sandbox.stop()
        database.drop()
    assert result.outcomes == sandbox.dataset.expected_outcomes()
    return result


# -- where the retry settings come from -----------------------------------------------------

CONNECTION_PASSWORD = "pw-Faults-never-shown-31"


def set_driver2_connection(monkeypatch, extra: object) -> None:
    connection = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": 8765,
        "schema": "http",
        "password": CONNECTION_PASSWORD,
    }
    if extra is not None:
        connection["extra"] = extra if isinstance(extra, str) else json.dumps(extra)
    monkeypatch.setenv("AIRFLOW_CONN_DRIVER2_API", json.dumps(connection))


def test_connection_extra_sets_retries_time_outs_and_page_size(monkeypatch, caplog):
    set_driver2_connection(
        monkeypatch,
        {
            "max_attempts": 3,
            "max_total_seconds": "9.5",
            "backoff_first_seconds": 0.25,
            "backoff_max_seconds": 2,
            "jitter": 0,
            "connect_timeout_seconds": 1.5,
            "read_timeout_seconds": "4",
            "page_size": 50,
            "headers": {"X-Unused": "1"},
        },
    )

    with Driver2Client.from_connection() as client:
        settings = (client.retry_policy, client.timeout, client.page_size)

    assert settings == (
        RetryPolicy(
            max_attempts=3,
            max_total_seconds=9.5,
            backoff_first_seconds=0.25,
            backoff_max_seconds=2.0,
            jitter=0.0,
        ),
        (1.5, 4.0),
        50,
    )
    assert [r.getMessage() for r in collect_client_records(caplog, logging.WARNING)] == [
        "Airflow connection 'driver2_api': extra keys ['headers'] are not Driver2 client"
        " settings; ignored"
    ]


@pytest.mark.parametrize("extra", [None, {}, "{}"], ids=["no-extra", "empty", "empty-text"])
def test_connection_without_settings_gets_the_bounded_defaults(monkeypatch, extra):
    set_driver2_connection(monkeypatch, extra)

    with Driver2Client.from_connection() as client:
        settings = (client.retry_policy, client.timeout, client.page_size)

    assert settings == (RetryPolicy(), (5.0, 60.0), 500)
    assert (RetryPolicy().max_attempts, RetryPolicy().max_total_seconds) == (6, 120.0)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"max_attempts": 2.5}, "max_attempts must be a whole number"),
        ({"max_attempts": True}, "max_attempts must be a whole number"),
        ({"max_total_seconds": 0}, "max_total_seconds must be positive"),
        ({"max_total_seconds": "inf"}, "max_total_seconds must be a number"),
        ({"max_total_seconds": None}, "max_total_seconds must be a number"),
        ({"read_timeout_seconds": 0}, "time-outs must be positive"),
        ({"connect_timeout_seconds": -1}, "time-outs must be positive"),
        ({"read_timeout_seconds": "off"}, "read_timeout_seconds must be a number"),
        ({"page_size": 501}, "page_size must be between 1 and 500"),
        ([CONNECTION_PASSWORD], "the extra must be a JSON object"),
    ],
)
def test_connection_extra_cannot_unbound_retries_or_turn_time_outs_off(
    monkeypatch, caplog, extra, problem
):
    set_driver2_connection(monkeypatch, extra)

    with pytest.raises(Driver2ConfigError) as raised:
        Driver2Client.from_connection()

    assert str(raised.value) == (
        f"Airflow connection 'driver2_api' has a bad Driver2 setting in its extra: {problem}"
    )
    assert CONNECTION_PASSWORD not in caplog.text


# -- each fault alone, then all at once -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_sync_under_each_driver2_fault_ends_as_the_fault_free_run(
    fault, fault_free_result, start_driver2_sandbox, sqlite_planmanager_db, sync_under_test, caplog
):
    sandbox = start_driver2_sandbox(
        invoices=INVOICES, seed=SEED, fault_seed=FAULT_SEED, **FAULTS[fault]
    )
    seed_planmanager(sqlite_planmanager_db.engine, sandbox.dataset)
    sync_under_test.use(sandbox, sqlite_planmanager_db)

    result = sync_under_test.run()
    causes = assert_each_fault_retried_once_and_logged(sandbox, caplog)
    answers = count_list_answers(sandbox)

    assert_same_result(result, fault_free_result)
    assert len(causes) >= 3
    if fault == "5xx":
        assert set(causes) == {"HTTP 502", "HTTP 503", "HTTP 504"}
    elif fault == "429":
        assert {cause.split(",")[0] for cause in causes} == {"HTTP 429"}
        assert "HTTP 429, Retry-After: 1" in causes
        assert any(re.fullmatch(r"HTTP 429, Retry-After: .+ GMT", cause) for cause in causes)
    elif fault == "dropped":
        assert answers["dropped"] == len(causes)
        assert all(cause.startswith("ConnectionError: ") for cause in causes)
    elif fault == "slow":
        assert all(cause.startswith("ReadTimeout: ") for cause in causes)
    else:
        assert answers["truncated"] == len(causes)
        kinds = {"complete JSON" if "not complete JSON" in cause else "cut" for cause in causes}
        assert kinds == {"complete JSON", "cut"}


@pytest.mark.slow
def test_invoices_changed_while_the_sync_pages_end_as_a_fault_free_run_over_the_changes(
    start_driver2_sandbox, tmp_path, sync_under_test, caplog
):
    faulty = start_driver2_sandbox(
        invoices=INVOICES, seed=SEED, fault_seed=FAULT_SEED, fault_touch_rate=0.2
    )
    faulty_db = ThrowawayDatabase("sqlite", tmp_path)
    seed_planmanager(faulty_db.engine, faulty.dataset)
    sync_under_test.use(faulty, faulty_db)

    result = sync_under_test.run()
    touched = faulty.stats()["touched"]
    pages_read = count_pages_read(caplog)
    expected, calm_db = run_fault_free_over(
        touched, start_driver2_sandbox, tmp_path, sync_under_test
    )

    try:
        assert len(touched) >= 3
        # Each change came again at the end of the pass, so the pass was longer.
        assert pages_read > INVOICES // PAGE_SIZE
        assert_same_result(result, expected)
        # The run kept the latest version of each invoice changed under it.
        latest = {change["number"]: read_instant(change["updated_at"]) for change in touched}
        assert {n: read_instant(result.report[n]["updated_at"]) for n in latest} == latest
    finally:
        faulty_db.drop()
        calm_db.drop()


@pytest.mark.slow
@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_sync_under_every_fault_at_once_ends_as_a_fault_free_run(
    dialect, start_driver2_sandbox, tmp_path, sync_under_test, caplog
):
    faulty = start_driver2_sandbox(
        invoices=INVOICES, seed=SEED, fault_seed=FAULT_SEED, **ALL_FAULTS
    )
    faulty_db = ThrowawayDatabase(dialect, tmp_path)
    seed_planmanager(faulty_db.engine, faulty.dataset)
    sync_under_test.use(faulty, faulty_db)

    result = sync_under_test.run()
    causes = assert_each_fault_retried_once_and_logged(faulty, caplog)
    touched = faulty.stats()["touched"]
    expected, calm_db = run_fault_free_over(
        touched, start_driver2_sandbox, tmp_path, sync_under_test
    )

    try:
        assert_same_result(result, expected)
        assert touched
        kinds = {re.match(r"HTTP \d+|\w+", cause).group(0) for cause in causes}
        assert kinds >= {"HTTP 429", "ConnectionError", "ReadTimeout"}
        assert kinds & {"HTTP 502", "HTTP 503", "HTTP 504"}
    finally:
        faulty_db.drop()
        calm_db.drop()


# -- a Driver2 that never recovers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "settings", "attempts", "cause"),
    [
        ({"status": 503}, {"max_attempts": 4}, 4, "HTTP 503"),
        ({"drop": True}, {"max_attempts": 4}, 4, "ConnectionError"),
        ({"status": 503}, {"max_attempts": 1000, "max_total_seconds": 1.5}, None, "HTTP 503"),
    ],
    ids=["503-out-of-attempts", "dropped-out-of-attempts", "503-out-of-time"],
)
def test_driver2_that_never_recovers_fails_the_run_in_budget_and_changes_nothing(
    fault,
    settings,
    attempts,
    cause,
    start_driver2_sandbox,
    sqlite_planmanager_db,
    sync_under_test,
    caplog,
):
    sandbox = start_driver2_sandbox(invoices=60, seed=SEED)
    seed_planmanager(sqlite_planmanager_db.engine, sandbox.dataset)
    sync_under_test.use(sandbox, sqlite_planmanager_db)
    sync_under_test.run()
    for number in sandbox.dataset.numbers()[:25]:
        sandbox.touch(number)
    before = dump_tables(sqlite_planmanager_db.engine)
    budget = {"backoff_first_seconds": 0.1, "backoff_max_seconds": 0.4, **settings}
    sync_under_test.use(sandbox, sqlite_planmanager_db, **budget)
    # Two pages come through, then Driver2 goes down for good.
    sandbox.script_faults([{"status": 200}] * 2 + [fault] * 2000)
    run_id = new_run_id()

    started = time.monotonic()
    with pytest.raises(AirflowFailException) as raised:
        tasks.extract_driver2(DAG_ID, run_id)
    elapsed = time.monotonic() - started
    message = str(raised.value)
    tried, spent = re.search(r"after (\d+) attempts over (\d+\.\d) s", message).groups()
    answers = sum(count_list_answers(sandbox).values())

    assert re.fullmatch(
        rf"Driver2 was unavailable after {tried} attempts over {spent} s on GET {INVOICES_PATH}"
        rf" \(last: {re.escape(cause)}.*\)\. Nothing was imported; the next run reads Driver2"
        r" from where the last successful run stopped\.",
        message,
    )
    if attempts is not None:
        assert int(tried) == attempts
        assert elapsed < 0.1 + 0.2 + 0.4 + 2.0
    else:
        assert int(tried) > 4
        assert float(spent) <= 1.5
        assert elapsed < 1.5 + 2.0
    assert answers == count_pages_read(caplog) + int(tried)
    assert dump_tables(sqlite_planmanager_db.engine) == before
    assert not (Path(airflow_home()) / "staging" / DAG_ID / report_folder_name(run_id)).exists()
    assert not sync_under_test.report_path(run_id).parent.exists()

    sandbox.script_faults([])
    after = sync_under_test.run()
    assert len(after.report) == 25


@pytest.mark.slow
def test_airflow_run_fails_at_once_without_task_retries_when_driver2_never_recovers(
    start_driver2_sandbox, sqlite_planmanager_db, dag_runner, monkeypatch, capfd, caplog
):
    sandbox = start_driver2_sandbox(invoices=60, seed=SEED)
    seed_planmanager(sqlite_planmanager_db.engine, sandbox.dataset)
    sync = SyncUnderTest(monkeypatch, dag_runner.reports_dir)
    sync.use(sandbox, sqlite_planmanager_db)
    sync.run()
    for number in sandbox.dataset.numbers()[:25]:
        sandbox.touch(number)
    before = dump_tables(sqlite_planmanager_db.engine)
    sync.use(
        sandbox,
        sqlite_planmanager_db,
        max_attempts=5,
        max_total_seconds=2.0,
        backoff_first_seconds=0.1,
        backoff_max_seconds=0.4,
    )
    sandbox.script_faults([{"status": 200}] * 2 + [{"status": 503}] * 2000)

    run = dag_runner.run(DAG_ID)
    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    extract = next(ti for ti in run.get_task_instances() if ti.task_id == "extract_driver2")
    # dag.test() runs the tasks in this process; their log lines reach its output or the
    # captured records, depending on how Airflow set up logging in this process.
    task_logs = capfd.readouterr().out + caplog.text

    assert run.state == "failed"
    assert states == {
        "extract_driver2": ("failed", 1),
        "match_clients": ("upstream_failed", 0),
        "load_invoices": ("upstream_failed", 0),
        "build_report": ("upstream_failed", 0),
    }
    spent = re.search(
        r"Driver2 was unavailable after 5 attempts over (\d+\.\d) s on GET /api/v1/invoices"
        r" \(last: HTTP 503\)\. Nothing was imported",
        task_logs,
    ).group(1)
    assert float(spent) <= 2.0
    # The task's own start-up (imports, connections, the first pages) comes on top; a task
    # retry would add 30 s at least.
    assert (extract.end_date - extract.start_date).total_seconds() < 2.0 + 10.0
    assert dump_tables(sqlite_planmanager_db.engine) == before
    assert not sync.report_path(run.run_id).parent.exists()
    assert not (Path(airflow_home()) / "staging" / DAG_ID / report_folder_name(run.run_id)).exists()

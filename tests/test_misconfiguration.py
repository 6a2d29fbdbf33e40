"""A PlanManager connection or a reports place set up wrong: the run says what to fix, fails at
once where no retry can help, creates nothing where it should not, and loses no import."""

from __future__ import annotations

import csv
import json
import sqlite3
import uuid

import pytest
from airflow.sdk.exceptions import AirflowFailException
from sqlalchemy import inspect, text

from db_fixtures import DIALECTS, ThrowawayDatabase
from driver2_sandbox.seeder import seed_planmanager
from driver2_sync import tasks
from driver2_sync.report import ReportNotWritten, report_folder_name
from driver2_sync.runtime import run_staging
from driver2_sync.store import (
    PlanManagerNotUsable,
    PlanManagerStore,
    create_engine_for_url,
    planmanager_url,
)

DAG_ID = "driver2_invoice_sync"


def _sqlite_connection(monkeypatch, path) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_PLANMANAGER_DB", json.dumps({"conn_type": "sqlite", "host": str(path)})
    )


def test_sqlite_connection_opens_a_file_whose_name_holds_uri_characters(tmp_path):
    path = tmp_path / "plan manager?#%.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE probe (value TEXT)")
        conn.execute("INSERT INTO probe VALUES ('kept')")
    engine = create_engine_for_url(planmanager_url("sqlite", str(path)))

    with engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM probe")).scalar_one() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan manager?#%.db"]


@pytest.mark.parametrize("where", ["missing-folder", "mistyped-file"])
def test_sqlite_file_that_does_not_exist_is_refused_and_not_created(tmp_path, where):
    path = tmp_path / "nowhere" / "planmanager.db" if where == "missing-folder" else tmp_path / "pm"
    store = PlanManagerStore(create_engine_for_url(planmanager_url("sqlite", str(path))))

    with pytest.raises(PlanManagerNotUsable) as refused:
        store.ensure_sync_tables()

    assert str(refused.value) == (
        f"The PlanManager SQLite database {path} cannot be opened (unable to open database"
        " file): check that the file exists, is PlanManager's and is writable, and the host of"
        " connection 'planmanager_db'. Nothing was imported."
    )
    assert not path.exists()


def test_file_that_is_not_sqlite_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "planmanager.db"
    path.write_text("# Not a database\n")
    store = PlanManagerStore(create_engine_for_url(planmanager_url("sqlite", str(path))))

    with pytest.raises(PlanManagerNotUsable) as refused:
        store.ensure_sync_tables()

    assert str(refused.value) == (
        f"The PlanManager SQLite database {path} cannot be opened (file is not a database):"
        " check that the file exists, is PlanManager's and is writable, and the host of"
        " connection 'planmanager_db'. Nothing was imported."
    )
    assert path.read_text() == "# Not a database\n"


@pytest.mark.parametrize(
    ("conn_type", "host", "message"),
    [
        ("sqlite", "", "Connection 'planmanager_db' is of type sqlite but names no database file:"
         " set its host to the PlanManager file's path. Nothing was imported."),
        ("sqlite", "  ", "Connection 'planmanager_db' is of type sqlite but names no database"
         " file: set its host to the PlanManager file's path. Nothing was imported."),
        ("mssql", "db.example", "Connection 'planmanager_db' is of type 'mssql', which"
         " PlanManager's database cannot be: use postgres, mysql or sqlite. Nothing was imported."),
    ],
)  # fmt: skip
def test_connection_that_cannot_name_a_planmanager_database_is_refused(conn_type, host, message):
    with pytest.raises(PlanManagerNotUsable) as refused:
        planmanager_url(conn_type, host)

    assert str(refused.value) == message


@pytest.mark.parametrize("dialect", DIALECTS)
def test_database_without_planmanager_tables_is_refused_and_gets_no_sync_tables(dialect, tmp_path):
    database = ThrowawayDatabase(dialect, tmp_path)
    try:
        with database.engine.begin() as conn:
            conn.execute(text("DROP TABLE invoice_lines"))
            conn.execute(text("DROP TABLE dossier_clients"))
        store = PlanManagerStore(database.engine)

        with pytest.raises(PlanManagerNotUsable) as refused:
            store.ensure_sync_tables()

        assert str(refused.value) == (
            f"The database {database.url.render_as_string(hide_password=True)} of connection"
            " 'planmanager_db' is not PlanManager's: it has no table dossier_clients,"
            " invoice_lines. Check the connection's host and schema. Nothing was imported or"
            " created."
        )
        assert sorted(inspect(database.engine).get_table_names()) == [
            "clients",
            "dossiers",
            "invoices",
        ]
    finally:
        database.drop()


@pytest.mark.slow
@pytest.mark.parametrize("host", ["mistyped", "empty"])
def test_sync_with_a_wrong_sqlite_host_fails_at_once_without_retries(
    start_driver2_sandbox, dag_runner, monkeypatch, tmp_path, host
):
    sandbox = start_driver2_sandbox(invoices=10, seed=5)
    dag_runner.use_driver2(sandbox)
    mistyped = tmp_path / "planmanagr.db"
    _sqlite_connection(monkeypatch, mistyped if host == "mistyped" else "")

    run = dag_runner.run(DAG_ID)

    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert states == {
        "extract_driver2": ("failed", 1),
        "match_clients": ("upstream_failed", 0),
        "load_invoices": ("upstream_failed", 0),
        "build_report": ("upstream_failed", 0),
    }
    assert not mistyped.exists()


def test_custom_import_into_a_database_that_is_not_planmanager_fails_at_once_with_its_report(
    start_driver2_sandbox, dag_runner, monkeypatch, tmp_path
):
    sandbox = start_driver2_sandbox(invoices=10, seed=5)
    dag_runner.use_driver2(sandbox)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    _sqlite_connection(monkeypatch, empty)
    reports = dag_runner.reports_dir
    number = sandbox.dataset.numbers()[0]
    run_id = f"manual__{uuid.uuid4().hex[:8]}"
    expected = (
        f"The database sqlite:///{empty} of connection 'planmanager_db'"
        " is not PlanManager's: it has no table clients, dossiers, dossier_clients, invoices,"
        " invoice_lines. Check the connection's host and schema. Nothing was imported or created."
    )

    with pytest.raises(AirflowFailException) as failed:
        tasks.custom_import(
            "driver2_custom_import", run_id, {"driver_nr": number, "dossier": None, "force": True}
        )

    assert str(failed.value) == expected
    report = reports / "driver2_custom_import" / report_folder_name(run_id) / "report.csv"
    with report.open(encoding="utf-8", newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert (row["driver2_number"], row["outcome"], row["reason"]) == (number, "failed", expected)
    assert inspect(create_engine_for_url(f"sqlite:///{empty}")).get_table_names() == []


def test_report_that_cannot_be_written_keeps_the_imports_and_is_written_when_retried(
    start_driver2_sandbox, sqlite_planmanager_db, dag_runner, monkeypatch, tmp_path
):
    sandbox = start_driver2_sandbox(invoices=40, seed=9)
    seed_planmanager(sqlite_planmanager_db.engine, sandbox.dataset)
    dag_runner.use_driver2(sandbox)
    dag_runner.use_planmanager(sqlite_planmanager_db)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the reports folder should be")
    monkeypatch.setenv("AIRFLOW_VAR_DRIVER2_REPORTS_URL", f"file://{blocker}/reports")
    run_id = f"scheduled__{uuid.uuid4().hex[:8]}"
    tasks.extract_driver2(DAG_ID, run_id)
    tasks.match_clients(DAG_ID, run_id)
    imported = tasks.load_invoices(DAG_ID, run_id)["imported"]
    folder = f"{blocker}/reports/{DAG_ID}/{report_folder_name(run_id)}"

    with pytest.raises(ReportNotWritten) as refused:
        tasks.build_report(DAG_ID, run_id, None)

    assert str(refused.value) == (
        f"The report could not be written to file://{folder} (NotADirectoryError: [Errno 20]"
        f" Not a directory: '{folder}'). Check the 'driver2_reports_url' Variable, and"
        " for s3:// the 'reports_storage' connection. The invoices this run imported stay"
        " imported, and the next run's starting point has not moved. The run's staging is"
        " kept: once the storage is fixed, clear build_report of this run to write its report."
    )
    store = PlanManagerStore(sqlite_planmanager_db.engine)
    assert store.read_sync_state(DAG_ID).watermark is None
    assert run_staging(DAG_ID, run_id).has_manifest("load")

    reports = dag_runner.reports_dir
    monkeypatch.setenv("AIRFLOW_VAR_DRIVER2_REPORTS_URL", f"file://{reports}")
    summary = tasks.build_report(DAG_ID, run_id, None)

    with (reports / DAG_ID / report_folder_name(run_id) / "report.csv").open() as handle:
        outcomes = [row["outcome"] for row in csv.DictReader(handle)]
    expected = list(sandbox.dataset.expected_outcomes().values())
    assert imported == expected.count("imported")
    assert sorted(outcomes) == sorted(expected)
    assert summary["considered"] == 40
    assert store.read_sync_state(DAG_ID).watermark is not None

"""driver2_custom_import triggered through Airflow's REST API, as the UI form does it, with the
api-server, scheduler and DAG processor running on loopback: what is refused before any run
starts, and what the operator sees of a run that imports and of one that does not."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from db_fixtures import ThrowawayDatabase
from driver2_sandbox.seeder import seed_planmanager
from driver2_sync.report import report_folder_name
from driver2_sync.store import clients, dossier_clients, dossiers, invoice_lines, invoices

PROJECT_ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = Path(sys.executable).parent / "airflow"
DAG_ID = "driver2_custom_import"
TASK_ID = "import_document"
START_TIMEOUT_SECONDS = 120
RUN_TIMEOUT_SECONDS = 120
OPERATOR = "operator"

pytestmark = pytest.mark.slow


@dataclass
class AirflowServices:
    """The api-server, scheduler and DAG processor of one test module, and their PlanManager."""

    base_url: str
    session: requests.Session
    planmanager: ThrowawayDatabase
    reports_dir: Path
    home: Path

    def trigger(self, conf: dict, **body) -> requests.Response:
        """POST a trigger as the UI's form does: the params as conf, no logical date."""
        return self.session.post(
            f"{self.base_url}/api/v2/dags/{DAG_ID}/dagRuns",
            json={"conf": conf, "logical_date": None, **body},
            timeout=30,
        )

    def run_ids(self) -> set[str]:
        response = self.session.get(f"{self.base_url}/api/v2/dags/{DAG_ID}/dagRuns", timeout=30)
        response.raise_for_status()
        return {run["dag_run_id"] for run in response.json()["dag_runs"]}

    def wait_for_run(self, run_id: str) -> dict:
        """Return the run once it has finished, successfully or not."""
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            response = self.session.get(
                f"{self.base_url}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", timeout=30
            )
            response.raise_for_status()
            if response.json()["state"] in ("success", "failed"):
                return response.json()
            time.sleep(1)
        raise AssertionError(f"run {run_id} did not finish in {RUN_TIMEOUT_SECONDS} s")

    def task_url(self, run_id: str) -> str:
        return f"{self.base_url}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}"

    def xcom(self, run_id: str, key: str) -> object:
        response = self.session.get(f"{self.task_url(run_id)}/xcomEntries/{key}", timeout=30)
        response.raise_for_status()
        return response.json()["value"]

    def log_records(self, run_id: str, try_number: int = 1) -> list[dict]:
        """Return the task's log records as the UI shows them, without its group markers."""
        response = self.session.get(
            f"{self.task_url(run_id)}/logs/{try_number}",
            params={"full_content": "true"},
            headers={"Accept": "application/json"},
            timeout=30,
        )
        response.raise_for_status()
        return [
            record
            for record in response.json()["content"]
            if not record.get("event", "").startswith(("::group::", "::endgroup::"))
        ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until(what: str, check, timeout: float, processes) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[1]} exited ({process.returncode}) before {what}")
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def airflow_services(driver2_sandbox, tmp_path_factory) -> Iterator[AirflowServices]:
    home = tmp_path_factory.mktemp("airflow-home")
    reports_dir = tmp_path_factory.mktemp("reports")
    planmanager = ThrowawayDatabase("sqlite", tmp_path_factory.mktemp("planmanager"))
    seed_planmanager(planmanager.engine, driver2_sandbox.dataset)
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        # A signed-in operator, not "all admins": that mode signs every request in, and a
        # caller who is not signed in must meet Airflow's 401 before the param check.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{OPERATOR}:user",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW_CONN_DRIVER2_API": json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": driver2_sandbox.port,
             "schema": "http", "password": driver2_sandbox.token}
        ),
        "AIRFLOW_CONN_PLANMANAGER_DB": planmanager.airflow_connection_json(),
        "AIRFLOW_VAR_DRIVER2_REPORTS_URL": f"file://{reports_dir}",
        "PYTHONPATH": os.pathsep.join(
            [str(PROJECT_ROOT / "plugins"), str(PROJECT_ROOT / "sandbox")]
        ),
    }  # fmt: skip
    password = secrets.token_urlsafe(16)
    (home / "passwords.json").write_text(json.dumps({OPERATOR: password}), encoding="utf-8")
    subprocess.run(
        [str(AIRFLOW), "db", "migrate"], env=env, check=True, capture_output=True, cwd=home
    )
    processes = []
    for command in (
        ["api-server", "--host", "127.0.0.1", "--port", str(port)],
        ["scheduler"],
        ["dag-processor"],
    ):
        # Each in a session of its own, so that teardown ends it with the workers it forked.
        with open(home / f"{command[0]}.log", "wb") as log_file:
            processes.append(
                subprocess.Popen(
                    [str(AIRFLOW), *command], env=env, cwd=home, stdout=log_file,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            )  # fmt: skip
    session = requests.Session()
    try:
        _wait_until(
            "the api-server",
            lambda: requests.get(f"{base_url}/api/v2/monitor/health", timeout=5).ok,
            START_TIMEOUT_SECONDS,
            processes,
        )
        token = requests.post(
            f"{base_url}/auth/token",
            json={"username": OPERATOR, "password": password},
            timeout=30,
        ).json()["access_token"]
        session.headers["Authorization"] = f"Bearer {token}"
        _wait_until(
            f"the DAG processor to parse {DAG_ID}",
            lambda: session.get(f"{base_url}/api/v2/dags/{DAG_ID}", timeout=5).ok,
            START_TIMEOUT_SECONDS,
            processes,
        )
        session.patch(
            f"{base_url}/api/v2/dags/{DAG_ID}", json={"is_paused": False}, timeout=30
        ).raise_for_status()
        yield AirflowServices(base_url, session, planmanager, reports_dir, home)
    finally:
        session.close()
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        planmanager.drop()


def _planmanager_rows(engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {
            table.name: [tuple(row) for row in conn.execute(select(table).order_by(*table.c))]
            for table in (clients, dossiers, dossier_clients, invoices, invoice_lines)
        }


def _first(dataset, case: str) -> str:
    return next(n for n in dataset.generated_numbers() if dataset.case(n) == case)


# conf, the words the refusal must hold
REFUSED = {
    "malformed_driver_nr": (
        {"driver_nr": "X'; DROP TABLE invoices;--", "dossier": None, "force": False},
        ["Invalid input for param driver_nr", "does not match"],
    ),
    "lower_case_driver_nr": (
        {"driver_nr": "f25-000113", "dossier": None, "force": False},
        ["Invalid input for param driver_nr", "does not match"],
    ),
    "force_not_a_boolean": (
        {"driver_nr": "F25-000113", "dossier": None, "force": "yes"},
        ["Invalid input for param force", "is not of type 'boolean'"],
    ),
    "unknown_param": (
        {"driver_nr": "F25-000113", "dosier": "D-2025-0001", "force": False},
        ["Unknown param(s) for driver2_custom_import: dosier. No run was started. This DAG takes"
         " only: dossier, driver_nr, force."],
    ),
    "driver_nr_missing": (
        {"dossier": "D-2025-0001", "force": True},
        ["Invalid input for param driver_nr"],
    ),
    "dossier_not_a_string": (
        {"driver_nr": "F25-000113", "dossier": 42, "force": False},
        ["Invalid input for param dossier"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_trigger_with_a_conf_that_breaks_the_form_is_refused_and_starts_no_run(
    airflow_services, name
):
    conf, words = REFUSED[name]
    runs_before = airflow_services.run_ids()
    rows_before = _planmanager_rows(airflow_services.planmanager.engine)

    response = airflow_services.trigger(conf)

    assert response.status_code == 400
    detail = response.json()["detail"]
    assert all(word in detail for word in words), detail
    assert airflow_services.run_ids() == runs_before
    assert _planmanager_rows(airflow_services.planmanager.engine) == rows_before


def test_unknown_param_from_a_caller_not_signed_in_gets_airflows_401(airflow_services):
    response = requests.post(
        f"{airflow_services.base_url}/api/v2/dags/{DAG_ID}/dagRuns",
        json={"conf": {"driver_nr": "F25-000113", "dosier": "x"}, "logical_date": None},
        timeout=30,
    )

    assert response.status_code == 401, response.text
    assert "dosier" not in response.text


@pytest.mark.parametrize("dossier_field", ["typed", "empty"])
def test_valid_conf_starts_a_run_that_imports_the_invoice(
    airflow_services, driver2_sandbox, dossier_field
):
    dataset = driver2_sandbox.dataset
    if dossier_field == "typed":
        number = _first(dataset, "ok")
        dossier = dossier_number = dataset.invoice(number)["planmanager_file"].strip().upper()
    else:
        # An invoice that belongs to no dossier yet; the form's empty field arrives as null.
        number = _first(dataset, "unknown_dossier")
        dossier, dossier_number = None, f"D2-{number}"

    response = airflow_services.trigger(
        {"driver_nr": number, "dossier": dossier, "force": False}, note="Test: a valid conf"
    )

    assert response.status_code == 200, response.text
    run = airflow_services.wait_for_run(response.json()["dag_run_id"])
    assert run["state"] == "success"
    outcome = airflow_services.xcom(run["dag_run_id"], "outcome")
    assert (outcome["outcome"], outcome["planmanager_file"]) == ("imported", dossier_number)
    with airflow_services.planmanager.engine.connect() as conn:
        stored = conn.execute(
            select(invoices.c.id, invoices.c.forced, dossiers.c.number)
            .join(dossiers, dossiers.c.id == invoices.c.dossier_id)
            .where(invoices.c.driver2_number == number)
        ).one()
    assert tuple(stored) == (outcome["invoice_id"], False, dossier_number)
    assert outcome["summary"].startswith(
        f"{number} imported as PlanManager invoice {stored.id} in"
        f" {'new ' if dossier is None else ''}dossier {dossier_number}, for client "
    )
    report = airflow_services.reports_dir / DAG_ID / report_folder_name(run["dag_run_id"])
    assert sorted(path.name for path in report.iterdir()) == ["report.csv", "report.xlsx"]


def test_document_not_imported_fails_the_run_with_the_reason_as_the_last_log_line(
    airflow_services, driver2_sandbox
):
    dataset = driver2_sandbox.dataset
    number = _first(dataset, "customer_not_in_dossier")
    rows_before = _planmanager_rows(airflow_services.planmanager.engine)

    response = airflow_services.trigger(
        {"driver_nr": number, "dossier": dataset.invoice(number)["planmanager_file"],
         "force": False}
    )  # fmt: skip

    assert response.status_code == 200, response.text
    run = airflow_services.wait_for_run(response.json()["dag_run_id"])
    assert run["state"] == "failed"
    outcome = airflow_services.xcom(run["dag_run_id"], "outcome")
    assert outcome["outcome"] == "client_not_in_dossier"
    assert (
        outcome["summary"] == f"{number} not imported (client_not_in_dossier): {outcome['reason']}"
    )
    *_, ours, airflows = airflow_services.log_records(run["dag_run_id"])
    assert (ours["level"], ours["event"]) == ("error", outcome["summary"])
    # Airflow's own last line shows the exception, whose message is the same sentence.
    assert airflows["event"] == "Task failed with exception"
    assert [(error["exc_type"], error["exc_value"]) for error in airflows["error_detail"]] == [
        ("AirflowFailException", outcome["summary"])
    ]
    assert _planmanager_rows(airflow_services.planmanager.engine) == rows_before

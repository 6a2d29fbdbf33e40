"""Pytest fixtures that run the project's DAGs with Airflow itself, against real services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def airflow_metadata_db() -> Path:
    """Migrate Airflow's metadata database in the test session's AIRFLOW_HOME, once."""
    home = Path(os.environ["AIRFLOW_HOME"])
    if not (home / ".migrated").exists():
        subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
            check=True,
            capture_output=True,
            env=dict(os.environ),
        )
        (home / ".migrated").touch()
    return home


class DagRunner:
    """Runs one of the project's DAGs in this process with `dag.test()`, connections from env."""

    def __init__(self, monkeypatch, reports_dir: Path):
        self.monkeypatch = monkeypatch
        self.reports_dir = reports_dir
        monkeypatch.setenv("AIRFLOW_VAR_DRIVER2_REPORTS_URL", f"file://{reports_dir}")

    def use_driver2(self, sandbox, token: str | None = None) -> None:
        self.monkeypatch.setenv(
            "AIRFLOW_CONN_DRIVER2_API",
            json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": sandbox.port,
                 "schema": "http", "password": token or sandbox.token}
            ),
        )  # fmt: skip

    def use_planmanager(self, database) -> None:
        self.monkeypatch.setenv("AIRFLOW_CONN_PLANMANAGER_DB", database.airflow_connection_json())

    def run(self, dag_id: str, conf: dict | None = None):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / f"{dag_id}.py"))
        assert bag.import_errors == {}
        return bag.dags[dag_id].test(run_conf=conf)

    def report_rows(self, dag_id: str, run_id: str) -> list[dict]:
        import csv

        from driver2_sync.report import report_folder_name

        path = self.reports_dir / dag_id / report_folder_name(run_id) / "report.csv"
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))


@pytest.fixture
def dag_runner(airflow_metadata_db, monkeypatch, tmp_path) -> DagRunner:
    return DagRunner(monkeypatch, tmp_path / "reports")

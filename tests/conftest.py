"""Shared set-up: an Airflow home of the test session's own, the Driver2 sandbox over HTTP and
throwaway PlanManager databases."""

import os
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its configuration once, at first import: point it at a home of this session's
# own before any test module imports it, so that no developer's ~/airflow is touched.
if "DRIVER2_TESTS_KEEP_AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="driver2-tests-airflow-")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(PROJECT_ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

pytest_plugins = ["db_fixtures", "sandbox_fixtures", "airflow_fixtures"]

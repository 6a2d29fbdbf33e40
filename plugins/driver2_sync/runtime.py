"""Airflow-side wiring of the sync: connections, Variables, and the run's staging place.

Everything here runs inside a task, never while a DAG file is parsed.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager

from driver2_sync.settings import (
    DRIVER2_CONN_ID,
    PLANMANAGER_CONN_ID,
    REPORTS_STORAGE_CONN_ID,
    REPORTS_URL_VARIABLE,
    STAGING_URL_VARIABLE,
)
from driver2_sync.staging import RunStaging

log = logging.getLogger(__name__)


def airflow_home() -> str:
    return os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")


def read_variable(name: str) -> str | None:
    from airflow.sdk import Variable

    value = Variable.get(name, default=None)
    return value.strip() if isinstance(value, str) and value.strip() else None


def open_storage_path(url: str, conn_id: str | None):
    """Return an ObjectStoragePath for a file:// or s3:// URL (s3 through `conn_id`)."""
    from airflow.sdk import ObjectStoragePath

    if url.startswith("s3://"):
        return ObjectStoragePath(url, conn_id=conn_id)
    if url.startswith("file://"):
        return ObjectStoragePath(url)
    raise ValueError(f"storage URL {url!r} must start with file:// or s3://")


def run_staging(dag_id: str, run_id: str) -> RunStaging:
    """Return the run's staging folder under the `driver2_staging_url` Variable.

    Unset means `file://$AIRFLOW_HOME/staging`: enough where every task runs on one machine;
    workers on several machines need a shared s3:// URL (through `reports_storage`).
    """
    from driver2_sync.report import report_folder_name

    url = read_variable(STAGING_URL_VARIABLE) or f"file://{airflow_home()}/staging"
    root = open_storage_path(url.rstrip("/"), REPORTS_STORAGE_CONN_ID)
    return RunStaging(root / dag_id / report_folder_name(run_id))


def reports_base():
    """Return where reports go: the `driver2_reports_url` Variable, else under AIRFLOW_HOME."""
    from driver2_sync.report import resolve_reports_base

    return resolve_reports_base(read_variable(REPORTS_URL_VARIABLE), airflow_home())


@contextmanager
def planmanager_store():
    """Yield the PlanManager store of the `planmanager_db` connection, and dispose of it."""
    from driver2_sync.store import PlanManagerStore, create_planmanager_engine

    engine = create_planmanager_engine(PLANMANAGER_CONN_ID)
    try:
        yield PlanManagerStore(engine)
    finally:
        engine.dispose()


@contextmanager
def driver2_client():
    """Yield the Driver2 client of the `driver2_api` connection, and close it."""
    from driver2_sync.driver2_client import Driver2Client

    client = Driver2Client.from_connection(DRIVER2_CONN_ID)
    try:
        yield client
    finally:
        client.close()


@contextmanager
def timed(step: str):
    started = time.monotonic()
    yield
    log.info("%s took %.1f s", step, time.monotonic() - started)

"""The bodies of the DAGs' tasks: each opens what it needs from Airflow and calls one step."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from driver2_sync import runtime, sync

log = logging.getLogger(__name__)


def extract_driver2(dag_id: str, run_id: str) -> dict[str, Any]:
    staging = runtime.run_staging(dag_id, run_id)
    with runtime.driver2_client() as client, runtime.planmanager_store() as store:
        manifest = sync.extract_driver2(client, store, staging, state_name=dag_id)
    return {key: manifest[key] for key in ("considered", "received", "seen_again", "watermark")}


def match_clients(dag_id: str, run_id: str) -> dict[str, Any]:
    staging = runtime.run_staging(dag_id, run_id)
    with runtime.planmanager_store() as store:
        manifest = sync.match_clients(store, staging)
    return manifest["counts"]


def load_invoices(dag_id: str, run_id: str) -> dict[str, Any]:
    staging = runtime.run_staging(dag_id, run_id)
    with runtime.planmanager_store() as store:
        manifest = sync.load_invoices(store, staging, run_id)
    return {"imported": manifest["imported"]}


def build_report(dag_id: str, run_id: str, started_at: datetime | None) -> dict[str, Any]:
    staging = runtime.run_staging(dag_id, run_id)
    with runtime.planmanager_store() as store:
        summary = sync.build_report(
            store,
            staging,
            runtime.reports_base_url(),
            dag_id=dag_id,
            run_id=run_id,
            started_at=started_at,
        )
    return summary

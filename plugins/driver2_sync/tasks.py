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
            runtime.reports_base(),
            dag_id=dag_id,
            run_id=run_id,
            started_at=started_at,
        )
    return summary


def custom_import(dag_id: str, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Import one document per the form, write its report, and fail when nothing was imported.

    The report is written in every case, an error on the way included, before the task ends.
    """
    from datetime import UTC

    from airflow.sdk.exceptions import AirflowFailException

    from driver2_sync.custom_import import run_custom_import
    from driver2_sync.matching import failed
    from driver2_sync.outcomes import ReportRow

    started_at = datetime.now(UTC)
    driver_nr = params["driver_nr"]
    dossier = params.get("dossier")
    force = bool(params.get("force"))
    log.info(
        "Custom import of %s into %s%s",
        driver_nr,
        f"dossier {dossier}" if dossier else "a new dossier",
        ", forced" if force else "",
    )
    error: Exception | None = None
    try:
        with runtime.driver2_client() as client, runtime.planmanager_store() as store:
            result = run_custom_import(client, store, driver_nr, dossier, force, run_id)
        document, decision, forced = result.document, result.decision, result.forced
    except Exception as caught:  # reported first, raised again below
        error = caught
        document, decision, forced = None, failed(f"{type(caught).__name__}: {caught}"), False

    row = sync.report_row(document or {"number": driver_nr}, decision, forced=forced)
    summary, folder = sync.write_report(
        lambda: iter([ReportRow(**row)]),
        runtime.reports_base(),
        dag_id=dag_id,
        run_id=run_id,
        started_at=started_at,
    )
    outcome = {**row, "report": str(folder)}
    if error is not None:
        raise error
    if not decision.outcome.is_import:
        log.error("%s not imported (%s): %s", driver_nr, decision.outcome.value, decision.reason)
        raise AirflowFailException(f"{driver_nr}: {decision.outcome.value}. {decision.reason}")
    log.info("%s %s; report in %s", driver_nr, decision.outcome.value, folder)
    return outcome

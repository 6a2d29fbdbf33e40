"""The bodies of the DAGs' tasks: each opens what it needs from Airflow and calls one step."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from driver2_sync import runtime, sync

log = logging.getLogger(__name__)


def extract_driver2(dag_id: str, run_id: str) -> dict[str, Any]:
    """Stage what Driver2 changed since the last successful run; fail the run for good when
    Driver2 cannot be read, leaving nothing staged and the starting point where it was.

    A Driver2 failure skips the task's Airflow retries: the client has already retried within
    its `RetryPolicy` (the one place retries are set), a 401 or a bad connection cannot heal
    by itself, and the next scheduled run starts from the same point.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from driver2_sync.driver2_client import Driver2Error
    from driver2_sync.store import PlanManagerNotUsable

    staging = runtime.run_staging(dag_id, run_id)
    try:
        with runtime.driver2_client() as client, runtime.planmanager_store() as store:
            manifest = sync.extract_driver2(
                client, store, staging, state_name=dag_id, page_size=client.page_size
            )
    except PlanManagerNotUsable as error:
        # A connection to fix: retrying it would only make the operator wait for the same error.
        log.error("%s", error)
        raise AirflowFailException(str(error)) from None
    except Driver2Error as error:
        # The pages read before the failure hold customers' personal data, and no retry of
        # this run will read them.
        staging.remove()
        message = describe_driver2_failure(error)
        log.error("%s", message)
        raise AirflowFailException(message) from error
    return {key: manifest[key] for key in ("considered", "received", "seen_again", "watermark")}


def describe_driver2_failure(error: Exception) -> str:
    """Return the message a run fails with when Driver2 could not be read: what went wrong,
    that nothing was imported, and what happens next. It never holds the token."""
    from driver2_sync.driver2_client import Driver2UnavailableError

    outcome = (
        "Nothing was imported; the next run reads Driver2 from where the last successful"
        " run stopped."
    )
    if isinstance(error, Driver2UnavailableError):
        return (
            f"Driver2 was unavailable after {error.attempts} attempts over"
            f" {error.elapsed_seconds:.1f} s on GET {error.path or 'a page'}"
            f" (last: {error.last_cause}). {outcome}"
        )
    # The client's messages name the connection, the URL and what to fix, never the token.
    return f"{str(error).rstrip('.')}. {outcome}"


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
    from driver2_sync.report import ReportNotWritten

    staging = runtime.run_staging(dag_id, run_id)
    try:
        with runtime.planmanager_store() as store:
            summary = sync.build_report(
                store,
                staging,
                runtime.reports_base(),
                dag_id=dag_id,
                run_id=run_id,
                started_at=started_at,
            )
    except ReportNotWritten as error:
        # Raised again for Airflow's retries: object storage may well come back by itself.
        message = (
            f"{error} The invoices this run imported stay imported, and the next run's starting"
            " point has not moved. The run's staging is kept: once the storage is fixed, clear"
            " build_report of this run to write its report."
        )
        log.error("%s", message)
        raise ReportNotWritten(message) from error.__cause__
    return summary


def custom_import(
    dag_id: str,
    run_id: str,
    params: dict[str, Any],
    *,
    conf: dict[str, Any] | None = None,
    declared: list[str] | None = None,
    ti: Any = None,
) -> dict[str, Any]:
    """Import one document per the form, write its report, and fail when nothing was imported.

    The report is written in every case, an error on the way included, before the task ends.
    What happened is logged last, returned, and pushed as the XCom `outcome` for the UI, which
    shows no return value of a failed task. `conf` keys outside `declared` (the DAG's params)
    refuse the import: they come from a trigger that went round the api-server's check.
    """
    from datetime import UTC

    from airflow.sdk.exceptions import AirflowFailException

    from driver2_sync.custom_import import (
        failed_custom_import,
        refused_custom_import,
        run_custom_import,
    )
    from driver2_sync.identity import normalise_dossier_number
    from driver2_sync.outcomes import ReportRow
    from driver2_sync.store import PlanManagerNotUsable

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
    # Not `params`: Airflow merges every conf key into them, the unknown ones too.
    unknown = sorted(set(conf or {}) - set(declared)) if declared is not None else []
    if unknown:
        result = refused_custom_import(driver_nr, unknown)
    else:
        try:
            with runtime.driver2_client() as client, runtime.planmanager_store() as store:
                result = run_custom_import(client, store, driver_nr, dossier, force, run_id)
        except Exception as caught:  # reported first, raised again below
            error = caught
            result = failed_custom_import(driver_nr, caught)

    document = result.document or {"number": driver_nr}
    row = sync.report_row(document, result.decision, forced=result.forced)
    # The form's dossier takes the place of the one typed in Driver2, in the report too.
    row["planmanager_file"] = result.dossier_number or normalise_dossier_number(dossier)
    _, folder = sync.write_report(
        lambda: iter([ReportRow(**row)]),
        runtime.reports_base(),
        dag_id=dag_id,
        run_id=run_id,
        started_at=started_at,
    )
    outcome = {"summary": result.describe(), **row, "report": str(folder)}
    if ti is not None:
        ti.xcom_push("outcome", outcome)

    # What happened is the log's last line: where an operator looks first.
    if error is not None:
        log.error("%s", result.describe())
        if isinstance(error, PlanManagerNotUsable):
            raise AirflowFailException(str(error)) from None  # a setting no retry can fix
        raise error
    if not result.imported:
        log.error("%s", result.describe())
        raise AirflowFailException(result.describe())
    log.info("%s", result.describe())
    return outcome

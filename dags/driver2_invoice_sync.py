"""
### Driver2 invoice sync

Brings every Driver2 invoice and credit note changed since the last successful run into
PlanManager, when it is final, valid, linked to an existing dossier, and addressed to a client
of that dossier. Every other invoice gets an outcome and a reason in the run's report
(`report.csv`, `report.xlsx` under the `driver2_reports_url` Variable).

Connections: `driver2_api` (http, token as password), `planmanager_db` (postgres, mysql or
sqlite). One run at a time; a failed run leaves the next run's starting point unchanged.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, get_current_context, task


def _dag_and_run() -> tuple[str, str]:
    context = get_current_context()
    return context["dag"].dag_id, context["run_id"]


@dag(
    dag_id="driver2_invoice_sync",
    schedule=timedelta(minutes=30),
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Brussels"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    },
    tags=["driver2", "planmanager", "invoices"],
    doc_md=__doc__,
)
def driver2_invoice_sync():
    # Each task returns a small dict of counts as one XCom; `-> dict` alone would also push
    # one XCom per key. Invoices travel between tasks as staged files, never as XComs.
    @task(multiple_outputs=False)
    def extract_driver2() -> dict:
        """Stage every Driver2 invoice changed since the last successful run."""
        from driver2_sync import tasks

        return tasks.extract_driver2(*_dag_and_run())

    @task(multiple_outputs=False)
    def match_clients() -> dict:
        """Decide each staged invoice's outcome: contract, status, dossier, client."""
        from driver2_sync import tasks

        return tasks.match_clients(*_dag_and_run())

    @task(multiple_outputs=False)
    def load_invoices() -> dict:
        """Import the matched invoices into PlanManager, one transaction per batch."""
        from driver2_sync import tasks

        return tasks.load_invoices(*_dag_and_run())

    @task(multiple_outputs=False)
    def build_report() -> dict:
        """Write report.csv and report.xlsx, then move the next run's starting point."""
        from driver2_sync import tasks

        dag_id, run_id = _dag_and_run()
        started_at = get_current_context()["dag_run"].start_date
        return tasks.build_report(dag_id, run_id, started_at)

    extract_driver2() >> match_clients() >> load_invoices() >> build_report()


driver2_invoice_sync()

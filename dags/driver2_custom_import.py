"""
### Driver2 custom import

Imports one Driver2 invoice or credit note into PlanManager, for when the sync could not place
it: the customer changed in Driver2, the dossier number was mistyped, or it belongs to no
dossier yet. Fill the form:

- **Driver nr**: the Driver2 number of the document, e.g. `F26-004711`.
- **Dossier (PlanManager)**: the dossier to link it to, e.g. `D-2026-0042`. Leave it empty to
  create a new dossier (numbered `D2-<Driver nr>`) with the Driver2 customer as its client.
- **Force import**: import even where the client check fails (the customer is then added to the
  dossier with role *invoiced*, or created as a new client), and import again an invoice that was
  already imported. An invalid document is never imported, forced or not.

The run fails, with the reason as the last line of its log, when nothing was imported. Either
way the report (`report.csv`, `report.xlsx`) says what happened.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

DOCUMENT_NUMBER_PATTERN = "^[A-Z0-9][A-Z0-9-]{0,31}$"


@dag(
    dag_id="driver2_custom_import",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Brussels"),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=20)},
    tags=["driver2", "planmanager", "invoices", "manual"],
    doc_md=__doc__,
    params={
        "driver_nr": Param(
            type="string",
            pattern=DOCUMENT_NUMBER_PATTERN,
            title="Driver nr",
            description=(
                "The Driver2 number of the invoice or credit note, in capitals as Driver2 shows"
                " it, e.g. F26-004711."
            ),
        ),
        "dossier": Param(
            None,
            type=["null", "string"],
            maxLength=64,
            title="Dossier (PlanManager)",
            description=(
                "The PlanManager dossier to link the document to, e.g. D-2026-0042. Leave empty"
                " to create a new dossier and invoice."
            ),
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force import",
            description=(
                "Import even when the Driver2 customer is not a client of the dossier (it is then"
                " added as 'invoiced'), and import again a document already imported."
            ),
        ),
    },
)
def driver2_custom_import():
    @task(retries=2)
    def import_document() -> dict:
        """Import the document named in the form and write its one-row report."""
        from driver2_sync import tasks

        context = get_current_context()
        return tasks.custom_import(context["dag"].dag_id, context["run_id"], context["params"])

    import_document()


driver2_custom_import()

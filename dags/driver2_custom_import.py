"""
### Driver2 custom import

Imports one Driver2 invoice or credit note into PlanManager, for when the sync could not place
it: the customer changed in Driver2, the dossier number was mistyped, or it belongs to no
dossier yet. Fill the form and trigger:

- **Driver nr**: the Driver2 number of the document, e.g. `F26-004711`.
- **Dossier (PlanManager)**: the dossier to link it to, e.g. `D-2026-0042`; blanks and case do
  not matter. It must exist, even with Force import. Leave it empty to create a new dossier
  (origin *driver2*) with the Driver2 customer as its *invoiced* client: the PlanManager client
  that is that customer, else a new client made from the Driver2 customer.
- **Force import**: import even where the Driver2 customer is not a client of the dossier (the
  customer is then added to the dossier as *invoiced*, created as a new client first when
  PlanManager does not know it), and import again a document already imported: the same
  PlanManager invoice then holds the current Driver2 version, its lines replaced. An invoice
  imported this way is marked *forced*. A draft, a cancelled or an invalid document is never
  imported, forced or not.

**New dossier numbers** are `D2-<Driver nr>`, e.g. `D2-F26-004711`. PlanManager's own are
`D-<year>-<sequence>`, so the two never collide. Should the same document get a second new
dossier (a forced import with the field left empty again), it is `D2-F26-004711.2`, then `.3`.

**What you see.** A green run: the document is in PlanManager; the task's XCom `outcome` says
as which invoice, in which dossier and for which client. A red run: nothing was imported; the
last line of the task's log, and the XCom `outcome`, say why and what to do. Either way the
run's report (`report.csv`, `report.xlsx`) holds the document's row. A form value that breaks
the rules above (a malformed Driver nr, a Force import that is not true or false, a field the
form does not have) is refused when triggering: no run starts.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

DOCUMENT_NUMBER_PATTERN = "^[A-Z0-9][A-Z0-9-]{0,31}$"


@dag(
    dag_id="driver2_custom_import",
    schedule=None,
    # Only people trigger it: no backfill, no run started by another DAG.
    allowed_run_types=["manual"],
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
                "The Driver2 number of the invoice or credit note, as Driver2 shows it: capital"
                " letters, digits and dashes, e.g. F26-004711."
            ),
        ),
        "dossier": Param(
            None,
            type=["null", "string"],
            maxLength=64,
            title="Dossier (PlanManager)",
            description=(
                "The PlanManager dossier to link the document to, e.g. D-2026-0042. Leave it"
                " empty to create a new dossier (numbered D2-<Driver nr>) and the invoice in it."
            ),
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force import",
            description=(
                "Import even when the Driver2 customer is not a client of the dossier: it is"
                " added to the dossier as 'invoiced', and made a PlanManager client first if"
                " unknown. Also imports again a document already imported, replacing it with"
                " its current Driver2 version. Never imports a draft, cancelled or invalid"
                " document."
            ),
        ),
    },
)
def driver2_custom_import():
    # One XCom for the whole outcome: a dict return would otherwise be split into one per key.
    @task(retries=2, multiple_outputs=False)
    def import_document() -> dict:
        """Import the document named in the form and write its one-row report."""
        from driver2_sync import tasks

        context = get_current_context()
        return tasks.custom_import(
            context["dag"].dag_id,
            context["run_id"],
            context["params"],
            conf=context["dag_run"].conf,
            declared=list(context["dag"].params),
            ti=context["ti"],
        )

    import_document()


driver2_custom_import()

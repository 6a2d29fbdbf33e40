"""A custom import of one Driver2 document: to a named dossier or a new one, forced or not.

The same rules as the sync, in the contract's order, with the operator's `dossier` in place of
the invoice's planmanager_file; `force` lets rules 3 and 5 give way, never rules 1, 2 or 4.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from driver2_sync.driver2_client import Driver2ProtocolError, Driver2RequestError
from driver2_sync.identity import normalise_dossier_number, normalise_vat_number
from driver2_sync.invoice import (
    Driver2Customer,
    Driver2Invoice,
    InvalidInvoice,
    parse_customer,
    parse_invoice,
)
from driver2_sync.matching import (
    ClientIndex,
    Decision,
    decide_before_lookup,
    decide_client,
    decide_for_imported,
    invalid,
)
from driver2_sync.outcomes import Outcome
from driver2_sync.planmanager_rows import invoice_header_row, invoice_line_rows
from driver2_sync.store import (
    PlanManagerNotUsable,
    PlanManagerStore,
    clients,
    dossier_clients,
    dossiers,
    invoices,
)

log = logging.getLogger(__name__)

# A dossier made by a custom import is numbered D2-<Driver nr>, e.g. D2-F26-004711. PlanManager
# numbers its own D-<year>-<sequence>, and no such number starts with D2-, so the two never meet.
# A later dossier for the same document (a forced import with the field left empty again) is
# D2-<Driver nr>.2, then .3: a dot, because a Driver nr may itself end in -2.
NEW_DOSSIER_PREFIX = "D2-"
NEW_DOSSIER_ORIGIN = "driver2"
INVOICED_ROLE = "invoiced"


@dataclass(frozen=True)
class CustomImportResult:
    """What a custom import did with one document, and where it went when it was imported."""

    driver_nr: str
    document: dict | None
    decision: Decision
    forced: bool = False
    dossier_number: str | None = None
    created_client: bool = False
    created_dossier: bool = False

    @property
    def imported(self) -> bool:
        return self.decision.outcome.is_import

    def describe(self) -> str:
        """Return in one sentence what happened, for the run's log and its XCom."""
        decision = self.decision
        if not self.imported:
            return f"{self.driver_nr} not imported ({decision.outcome.value}): {decision.reason}"
        if decision.outcome == Outcome.REIMPORTED:
            what = (
                f"reimported: PlanManager invoice {decision.invoice_id} now holds its current"
                " Driver2 version, lines included,"
            )
        else:
            what = f"imported as PlanManager invoice {decision.invoice_id}"
        dossier = f"{'new ' if self.created_dossier else ''}dossier {self.dossier_number}"
        client = (
            f"new client {decision.client_id}, made from the Driver2 customer"
            if self.created_client
            else f"client {decision.client_id}"
        )
        forced = " Marked forced: only Force import let it in." if self.forced else ""
        return f"{self.driver_nr} {what} in {dossier}, for {client}.{forced}"


def run_custom_import(
    client, store: PlanManagerStore, driver_nr: str, dossier: str | None, force: bool, run_id: str
) -> CustomImportResult:
    """Fetch `driver_nr` from Driver2 and import it per the contract; return what happened.

    `dossier` empty or None means a new dossier. Everything written to PlanManager is written
    in one transaction, which the database serialises with the sync's on the invoice's number.
    Raises the Driver2 client's and the database's errors; every rule's outcome is returned.
    """
    store.ensure_sync_tables()
    wanted_dossier = normalise_dossier_number(dossier)

    document = client.get_invoice(driver_nr)
    if document is None:
        return CustomImportResult(
            driver_nr,
            None,
            Decision(
                Outcome.NOT_FOUND,
                f"Driver2 has no invoice or credit note numbered {driver_nr}. Check the number"
                " (the 'Driver nr' on the Driver2 document) and trigger again.",
            ),
        )
    try:
        invoice = parse_invoice(document)
    except InvalidInvoice as error:
        return CustomImportResult(driver_nr, document, invalid(driver_nr, str(error)))
    if invoice.number != driver_nr:
        detail = f"asked for {driver_nr}, Driver2 answered with document {invoice.number}"
        return CustomImportResult(driver_nr, document, invalid(driver_nr, detail))
    skipped = decide_before_lookup(invoice)
    if skipped is not None:
        return CustomImportResult(driver_nr, document, skipped)

    # Read before the transaction opens, so that no database lock waits on Driver2.
    customer = _current_customer(client, invoice) if force or not wanted_dossier else None
    return store.run_in_transaction(
        lambda conn: _import_in_transaction(
            store, conn, invoice, document, wanted_dossier, force, run_id, customer
        ),
        what=f"custom import of {driver_nr}",
    )


def failed_custom_import(driver_nr: str, error: BaseException) -> CustomImportResult:
    """Return the `failed` result for an error no rule foresaw, in words safe for the report."""
    if isinstance(error, PlanManagerNotUsable):
        return CustomImportResult(driver_nr, None, Decision(Outcome.FAILED, str(error)))
    # The first line only: a database error goes on with the statement and its parameters.
    detail = (str(error).strip().splitlines() or [""])[0][:300]
    return CustomImportResult(
        driver_nr,
        None,
        Decision(
            Outcome.FAILED,
            f"Unexpected error, nothing was imported: {type(error).__name__}: {detail}. Airflow"
            " tries again by itself; if the last try fails too, trigger again later, and report"
            " it with the run's log if it keeps failing.",
        ),
    )


def refused_custom_import(driver_nr: str, unknown_params: list[str]) -> CustomImportResult:
    """Return the `failed` result for a run started with params the form does not have."""
    return CustomImportResult(
        driver_nr,
        None,
        Decision(
            Outcome.FAILED,
            f"The run was started with unknown param(s) {', '.join(unknown_params)}, so nothing"
            " was imported. Trigger again with Driver nr, Dossier and Force import only.",
        ),
    )


def _import_in_transaction(
    store: PlanManagerStore,
    conn: Connection,
    invoice: Driver2Invoice,
    document: dict,
    wanted_dossier: str,
    force: bool,
    run_id: str,
    customer: Driver2Customer | None,
) -> CustomImportResult:
    earlier = _find_earlier_attempt(store, conn, invoice, document, run_id)
    if earlier is not None:
        return earlier

    # The row lock (or, when there is no row yet, the unique key on driver2_number) is what
    # keeps a concurrent sync or custom import of the same number from writing a second row.
    imported = store.lock_imported(conn, invoice.number)
    if imported is not None and not force:
        decision = decide_for_imported(invoice, imported)
        if decision.outcome == Outcome.ALREADY_IMPORTED:
            decision = dataclasses.replace(
                decision, reason=f"{decision.reason} To import it again, tick Force import."
            )
        return CustomImportResult(invoice.number, document, decision)

    # Read in this transaction: a lost race may mean the other side just created the client.
    client_index = ClientIndex(store.iter_clients(conn))
    created_dossier = created_client = False
    gave_way = imported is not None
    if wanted_dossier:
        dossier = store.find_dossiers([wanted_dossier], conn).get(wanted_dossier)
        if dossier is None:
            return CustomImportResult(
                invoice.number,
                document,
                Decision(
                    Outcome.DOSSIER_NOT_FOUND,
                    f"Dossier {wanted_dossier} does not exist in PlanManager, so nothing was"
                    " imported (not even with Force import). Check the number in the 'Dossier"
                    " (PlanManager)' field, or leave it empty to create a new dossier, and"
                    " trigger again.",
                ),
                dossier_number=wanted_dossier,
            )
        parties = store.find_dossier_parties([dossier.id], conn).get(dossier.id, set())
        decision = decide_client(invoice, dossier, parties, client_index)
        if decision.outcome != Outcome.IMPORTED and not force:
            return CustomImportResult(
                invoice.number, document, decision, dossier_number=dossier.number
            )
        dossier_id, dossier_number, client_id = dossier.id, dossier.number, decision.client_id
        gave_way = gave_way or decision.outcome != Outcome.IMPORTED
    else:
        dossier_id, dossier_number = _create_dossier(conn, invoice)
        created_dossier, parties, client_id = True, set(), None

    if client_id is None:
        client_id = _find_client(client_index, invoice.customer, customer)
    if client_id is None:
        client_id = _create_client(conn, customer or invoice.customer)
        created_client = True
    if client_id not in parties:
        _link_invoiced(conn, dossier_id, client_id)

    # `forced` marks what the rules alone would not have imported: with the box ticked, a
    # document that passes every check is imported as the sync would, unforced.
    forced = force and gave_way
    header = invoice_header_row(invoice, dossier_id, client_id, forced=forced)
    lines = invoice_line_rows(invoice)
    if imported is not None:
        header["imported_at"] = datetime.now(UTC)
        store.replace_invoice(conn, imported.id, header, lines)
        invoice_id, outcome = imported.id, Outcome.REIMPORTED
    else:
        invoice_id = store.insert_invoices(conn, [header], lines)[invoice.number]
        outcome = Outcome.IMPORTED
    store.record_run_imports(conn, run_id, {invoice.number: (invoice_id, outcome.value)})
    log.info(
        "Custom import of %s: %s as invoice %d in dossier %s (client %d%s)",
        invoice.number,
        outcome.value,
        invoice_id,
        dossier_number,
        client_id,
        ", forced" if forced else "",
    )
    return CustomImportResult(
        invoice.number,
        document,
        Decision(outcome, "", dossier_id, client_id, invoice_id),
        forced,
        dossier_number,
        created_client,
        created_dossier,
    )


def _find_earlier_attempt(
    store: PlanManagerStore, conn: Connection, invoice: Driver2Invoice, document: dict, run_id: str
) -> CustomImportResult | None:
    """Return what an earlier try of this run imported, so that a retried task does not redo it."""
    done = store.find_run_imports(run_id, [invoice.number], conn).get(invoice.number)
    if done is None:
        return None
    invoice_id, outcome = done
    row = conn.execute(
        select(invoices.c.dossier_id, invoices.c.client_id, invoices.c.forced, dossiers.c.number)
        .join(dossiers, dossiers.c.id == invoices.c.dossier_id)
        .where(invoices.c.id == invoice_id)
    ).one()
    log.info("%s was %s by an earlier try of this run; nothing to redo", invoice.number, outcome)
    return CustomImportResult(
        invoice.number,
        document,
        Decision(Outcome(outcome), "", row.dossier_id, row.client_id, invoice_id),
        bool(row.forced),
        row.number,
    )


def _current_customer(client, invoice: Driver2Invoice) -> Driver2Customer:
    """Return the customer as Driver2 knows it now, else as written on the invoice."""
    number = invoice.customer.customer_no
    try:
        current = client.get_customer(number)
    except (ValueError, Driver2RequestError, Driver2ProtocolError) as error:
        log.warning("Driver2 customer %s cannot be read (%s); using the invoice's", number, error)
        return invoice.customer
    if current is None:
        return invoice.customer
    try:
        customer = parse_customer(current)
    except InvalidInvoice as error:
        log.warning("Driver2 customer %s is malformed (%s); using the invoice's", number, error)
        return invoice.customer
    if customer.customer_no != number:
        log.warning(
            "Driver2 answered customer %s for %s; using the invoice's", customer.customer_no, number
        )
        return invoice.customer
    return customer


def _find_client(
    client_index: ClientIndex, on_invoice: Driver2Customer, current: Driver2Customer | None
) -> int | None:
    """Return the PlanManager client that is this customer, as on the invoice or as now."""
    for customer in (on_invoice, current):
        if customer is not None and (candidates := client_index.match(customer).ordered_ids):
            return candidates[0]
    return None


def _create_dossier(conn: Connection, invoice: Driver2Invoice) -> tuple[int, str]:
    base = f"{NEW_DOSSIER_PREFIX}{invoice.number}"
    taken = set(
        conn.execute(select(dossiers.c.number).where(dossiers.c.number.like(f"{base}%"))).scalars()
    )
    number, suffix = base, 1
    while number in taken:
        suffix += 1
        number = f"{base}.{suffix}"
    # Two imports creating the same number at once: the unique key refuses the second, whose
    # transaction then starts again and finds the document imported.
    conn.execute(
        insert(dossiers).values(
            number=number,
            plate=invoice.plate,
            vin=invoice.vin,
            status="open",
            origin=NEW_DOSSIER_ORIGIN,
            created_at=datetime.now(UTC),
        )
    )
    dossier_id = conn.execute(select(dossiers.c.id).where(dossiers.c.number == number)).scalar_one()
    log.info("Created dossier %s (id %d) for %s", number, dossier_id, invoice.number)
    return dossier_id, number


def _create_client(conn: Connection, customer: Driver2Customer) -> int:
    country = (customer.country or "BE").strip().upper()[:2] or "BE"
    conn.execute(
        insert(clients).values(
            name=customer.name,
            vat_number=normalise_vat_number(customer.vat_number, country),
            street=customer.street,
            postal_code=customer.postal_code,
            city=customer.city,
            country=country,
            email=customer.email,
            phone=customer.phone,
            driver2_customer_no=customer.customer_no,
            created_at=datetime.now(UTC),
        )
    )
    client_id = conn.execute(
        select(clients.c.id).where(clients.c.driver2_customer_no == customer.customer_no)
    ).scalar_one()
    log.info(
        "Created PlanManager client %d for Driver2 customer %s", client_id, customer.customer_no
    )
    return client_id


def _link_invoiced(conn: Connection, dossier_id: int, client_id: int) -> None:
    conn.execute(
        insert(dossier_clients).values(
            dossier_id=dossier_id, client_id=client_id, role=INVOICED_ROLE
        )
    )

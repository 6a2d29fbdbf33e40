"""A custom import of one Driver2 document: to a named dossier or a new one, forced or not.

The same rules as the sync, in the contract's order, with the operator's `dossier` in place of
the invoice's planmanager_file; `force` lets rules 3 and 5 give way, never rules 1, 2 or 4.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select

from driver2_sync.identity import normalise_dossier_number, normalise_vat_number
from driver2_sync.invoice import Driver2Customer, Driver2Invoice, InvalidInvoice, parse_invoice
from driver2_sync.matching import (
    ClientIndex,
    Decision,
    decide_before_lookup,
    decide_client,
    decide_for_imported,
    dossier_not_found,
    invalid,
)
from driver2_sync.outcomes import Outcome
from driver2_sync.planmanager_rows import invoice_header_row, invoice_line_rows
from driver2_sync.store import PlanManagerStore, clients, dossier_clients, dossiers

log = logging.getLogger(__name__)

# Dossiers created for a custom import are numbered D2-<Driver2 number>: PlanManager numbers its
# own D-<year>-<sequence>, so the D2- prefix keeps the two apart. A second dossier for the same
# document (a forced re-import into a new dossier) gets -2, -3, ...
NEW_DOSSIER_PREFIX = "D2-"
INVOICED_ROLE = "invoiced"


@dataclass(frozen=True)
class CustomImportResult:
    driver_nr: str
    document: dict | None
    decision: Decision
    forced: bool
    dossier_number: str | None = None
    created_client: bool = False
    created_dossier: bool = False


def run_custom_import(
    client, store: PlanManagerStore, driver_nr: str, dossier: str | None, force: bool, run_id: str
) -> CustomImportResult:
    """Fetch `driver_nr` from Driver2 and import it per the contract; return what happened."""
    store.ensure_sync_tables()
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
            forced=False,
        )
    try:
        invoice = parse_invoice(document)
    except InvalidInvoice as error:
        return CustomImportResult(driver_nr, document, invalid(driver_nr, str(error)), False)
    if invoice.number != driver_nr:
        return CustomImportResult(
            driver_nr,
            document,
            invalid(driver_nr, f"Driver2 answered with document {invoice.number}"),
            False,
        )
    skipped = decide_before_lookup(invoice)
    if skipped is not None:
        return CustomImportResult(driver_nr, document, skipped, False)

    wanted_dossier = normalise_dossier_number(dossier)
    customer = _current_customer(client, invoice) if force or not wanted_dossier else None
    # The client index is read again on every attempt: a lost race may mean that the other
    # side has just created the very client this import was about to create.
    return store.run_in_transaction(
        lambda conn: _import_in_transaction(
            store,
            conn,
            invoice,
            document,
            wanted_dossier,
            force,
            run_id,
            ClientIndex(store.iter_clients()),
            customer,
        ),  # fmt: skip
        what=f"custom import of {driver_nr}",
    )


def _import_in_transaction(
    store, conn, invoice, document, wanted_dossier, force, run_id, client_index, customer
) -> CustomImportResult:
    imported = store.lock_imported(conn, invoice.number)
    if imported is not None and not force:
        return CustomImportResult(
            invoice.number, document, decide_for_imported(invoice, imported), False
        )

    created_dossier = created_client = False
    if wanted_dossier:
        row = conn.execute(
            select(dossiers.c.id, dossiers.c.number).where(dossiers.c.number == wanted_dossier)
        ).first()
        if row is None:
            return CustomImportResult(
                invoice.number, document, dossier_not_found(invoice, wanted_dossier), False
            )
        dossier_id, dossier_number = row.id, row.number
        parties = set(
            conn.execute(
                select(dossier_clients.c.client_id).where(
                    dossier_clients.c.dossier_id == dossier_id
                )
            ).scalars()
        )
        decision = decide_client(invoice, row, parties, client_index)
        if decision.outcome != Outcome.IMPORTED and not force:
            return CustomImportResult(invoice.number, document, decision, False, dossier_number)
        client_id = decision.client_id
    else:
        dossier_id, dossier_number = _create_dossier(conn, invoice)
        created_dossier = True
        client_id = None

    if client_id is None:
        candidates = client_index.match(customer or invoice.customer).ordered_ids
        if candidates:
            client_id = candidates[0]
        else:
            client_id = _create_client(conn, customer or invoice.customer)
            created_client = True
    _link_invoiced(conn, dossier_id, client_id)

    header = invoice_header_row(invoice, dossier_id, client_id, forced=force)
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
        ", forced" if force else "",
    )
    return CustomImportResult(
        invoice.number,
        document,
        Decision(outcome, "", dossier_id, client_id, invoice_id),
        force,
        dossier_number,
        created_client,
        created_dossier,
    )


def _current_customer(client, invoice: Driver2Invoice) -> Driver2Customer:
    """Return the customer as Driver2 knows it now, else as written on the invoice."""
    try:
        current = client.get_customer(invoice.customer.customer_no)
    except ValueError:
        current = None
    if not isinstance(current, dict):
        return invoice.customer
    fields: dict[str, Any] = {}
    for name in Driver2Customer.__dataclass_fields__:
        value = current.get(name, getattr(invoice.customer, name))
        fields[name] = value if value is None or isinstance(value, str) else str(value)
    if not fields.get("name") or fields.get("customer_no") != invoice.customer.customer_no:
        return invoice.customer
    return Driver2Customer(**fields)


def _create_dossier(conn, invoice: Driver2Invoice) -> tuple[int, str]:
    base = f"{NEW_DOSSIER_PREFIX}{invoice.number}"
    taken = set(
        conn.execute(select(dossiers.c.number).where(dossiers.c.number.like(f"{base}%"))).scalars()
    )
    number, suffix = base, 1
    while number in taken:
        suffix += 1
        number = f"{base}-{suffix}"
    conn.execute(
        insert(dossiers).values(
            number=number,
            plate=invoice.plate,
            vin=invoice.vin,
            status="open",
            origin="driver2",
            created_at=datetime.now(UTC),
        )
    )
    dossier_id = conn.execute(select(dossiers.c.id).where(dossiers.c.number == number)).scalar_one()
    log.info("Created dossier %s (id %d) for %s", number, dossier_id, invoice.number)
    return dossier_id, number


def _create_client(conn, customer: Driver2Customer) -> int:
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


def _link_invoiced(conn, dossier_id: int, client_id: int) -> None:
    exists = conn.execute(
        select(dossier_clients.c.client_id).where(
            dossier_clients.c.dossier_id == dossier_id,
            dossier_clients.c.client_id == client_id,
            dossier_clients.c.role == INVOICED_ROLE,
        )
    ).first()
    if exists is None:
        conn.execute(
            insert(dossier_clients).values(
                dossier_id=dossier_id, client_id=client_id, role=INVOICED_ROLE
            )
        )

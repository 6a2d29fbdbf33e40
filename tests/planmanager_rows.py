"""Helpers that put PlanManager rows in place for a test, through the store's own tables."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import insert

from driver2_sync.store import clients, dossier_clients, dossiers, invoices


def add_client(engine, client_id: int, name: str, **fields) -> int:
    values = {"id": client_id, "name": name, "country": "BE"}
    values.update(fields)
    with engine.begin() as conn:
        conn.execute(insert(clients).values(**values))
    return client_id


def add_dossier(engine, dossier_id: int, number: str, *parties: tuple[int, str]) -> int:
    with engine.begin() as conn:
        conn.execute(
            insert(dossiers).values(
                id=dossier_id, number=number, status="open", origin="planmanager"
            )
        )
        for client_id, role in parties:
            conn.execute(
                insert(dossier_clients).values(
                    dossier_id=dossier_id, client_id=client_id, role=role
                )
            )
    return dossier_id


def add_imported_invoice(
    engine, invoice_id: int, number: str, dossier_id: int, client_id: int, updated_at: datetime
) -> int:
    with engine.begin() as conn:
        conn.execute(
            insert(invoices).values(
                id=invoice_id,
                dossier_id=dossier_id,
                client_id=client_id,
                driver2_number=number,
                kind="invoice",
                issue_date=date(2026, 3, 1),
                currency="EUR",
                net_total=Decimal("100.00"),
                vat_total=Decimal("21.00"),
                gross_total=Decimal("121.00"),
                driver2_updated_at=updated_at,
                forced=False,
                imported_at=datetime(2026, 3, 2, tzinfo=UTC),
            )
        )
    return invoice_id

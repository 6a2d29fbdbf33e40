"""A checked Driver2 invoice as PlanManager `invoices` and `invoice_lines` rows, amounts signed."""

from __future__ import annotations

from driver2_sync.invoice import Driver2Invoice


def invoice_header_row(
    invoice: Driver2Invoice, dossier_id: int, client_id: int, *, forced: bool
) -> dict:
    """Return the `invoices` row; a credit note's totals are negative."""
    sign = invoice.sign
    return {
        "dossier_id": dossier_id,
        "client_id": client_id,
        "driver2_number": invoice.number,
        "kind": invoice.kind,
        "issue_date": invoice.issue_date,
        "due_date": invoice.due_date,
        "currency": invoice.currency,
        "net_total": sign * invoice.net_total,
        "vat_total": sign * invoice.vat_total,
        "gross_total": sign * invoice.gross_total,
        "credited_driver2_number": invoice.credited_invoice,
        "driver2_updated_at": invoice.updated_at,
        "forced": forced,
    }


def invoice_line_rows(invoice: Driver2Invoice) -> list[dict]:
    """Return the `invoice_lines` rows, keyed by Driver2 number until the header has an id.

    A credit note's line amounts are negative; quantities and unit prices keep Driver2's sign.
    """
    sign = invoice.sign
    return [
        {
            "driver2_number": invoice.number,
            "line_no": line.line_no,
            "kind": line.kind,
            "description": line.description,
            "quantity": line.quantity,
            "unit_price": line.unit_price,
            "vat_rate": line.vat_rate,
            "net_amount": None if line.net_amount is None else sign * line.net_amount,
        }
        for line in invoice.lines
    ]

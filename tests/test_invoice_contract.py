"""Rule 1 of the contract: which Driver2 documents are invalid, and why."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from documents import make_invoice
from driver2_sync.invoice import InvalidInvoice, parse_instant, parse_invoice


def test_valid_invoice_parses_to_exact_decimals():
    invoice = parse_invoice(make_invoice())

    assert invoice.number == "F26-004711"
    assert (invoice.net_total, invoice.vat_total, invoice.gross_total) == (
        Decimal("350.00"),
        Decimal("66.00"),
        Decimal("416.00"),
    )
    assert [line.net_amount for line in invoice.lines] == [
        Decimal("200.00"), Decimal("100.00"), Decimal("50.00"), None,
    ]  # fmt: skip
    assert invoice.updated_at == datetime(2026, 3, 29, 1, 15, tzinfo=UTC)


def _with_totals(net: str, vat: str, gross: str) -> dict:
    return make_invoice(totals={"net": net, "vat": vat, "gross": gross})


def _without(key: str) -> dict:
    document = make_invoice()
    del document[key]
    return document


def _line_change(**changes) -> dict:
    document = make_invoice()
    document["lines"][0].update(changes)
    return document


# VAT on the lines: 21 % of 300.00 = 63.00, 6 % of 50.00 = 3.00; two rates: tolerance 0.02.
@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (_without("number"), "number is missing"),
        (_without("updated_at"), "updated_at is missing"),
        (make_invoice(number="f26-1"), "number 'f26-1' is not a Driver2 document number"),
        (make_invoice(type="quote"), "type 'quote' is not one of invoice, credit_note"),
        (make_invoice(status="paid"), "status 'paid' is not one of draft, final, cancelled"),
        (make_invoice(issue_date="28/03/2026"), "issue_date '28/03/2026' is not a date"),
        (make_invoice(issue_date="2026-02-30"), "issue_date '2026-02-30' is not a calendar date"),
        (make_invoice(currency="eur"), "currency 'eur' is not a three-letter ISO code"),
        (make_invoice(customer="C000123"), "customer is a JSON string, not a object"),
        (make_invoice(updated_at="2026-03-29 03:15:00"), "is not an RFC 3339 timestamp"),
        (make_invoice(updated_at="2026-03-29T03:15:00"), "is not an RFC 3339 timestamp"),
        (_with_totals("350.01", "66.00", "416.01"), "add up to 350.00, not to totals.net 350.01"),
        (_with_totals("350.00", "66.00", "417.00"), "= 416.00, not totals.gross 417.00"),
        (_with_totals("350.00", "66.03", "416.03"), "differs from the VAT computed on the lines"),
        (_with_totals("350.00", "-66.00", "284.00"), "totals.vat is negative"),
        (_line_change(net_amount=200.0), "net_amount is a JSON number"),
        (_line_change(net_amount="200.001"), "net_amount '200.001' is not a well-formed decimal"),
        (_line_change(line_no="1"), "line_no is a JSON string, not a integer"),
        (_line_change(line_no=True), "line_no is a JSON boolean"),
        (_line_change(line_no=2), "line number 2 appears twice"),
        (_line_change(kind="towing"), "kind 'towing' is not one of part"),
        (_line_change(vat_rate=None), "line 1 (part) has no net_amount or no vat_rate"),
        (_line_change(description="a\x00b"), "description holds control characters"),
        (_line_change(description="x" * 5000), "description is 5000 characters long"),
        ([], "the document is a JSON array, not an object"),
    ],
)
def test_broken_document_is_invalid_with_its_reason(document, reason):
    with pytest.raises(InvalidInvoice) as error:
        parse_invoice(document)

    assert reason in str(error.value)


def test_vat_within_one_cent_per_rate_is_accepted():
    # Two rates: 66.02 is 0.02 off the computed 66.00, exactly the tolerance.
    invoice = parse_invoice(_with_totals("350.00", "66.02", "416.02"))

    assert invoice.vat_total == Decimal("66.02")


def test_vat_rounds_half_up_per_rate():
    document = make_invoice(
        lines=[
            {"line_no": 1, "kind": "part", "description": "Clip", "quantity": "1",
             "unit_price": "0.50", "vat_rate": "21", "net_amount": "0.50"},
        ],
        totals={"net": "0.50", "vat": "0.11", "gross": "0.61"},
    )  # fmt: skip

    # 0.50 × 21 % = 0.105 → 0.11 half-up (banker's rounding would give 0.10).
    assert parse_invoice(document).vat_total == Decimal("0.11")


def test_instants_compare_whatever_the_offset():
    brussels = parse_instant("2026-03-29T03:15:00.123456789+02:00")
    utc = parse_instant("2026-03-29T01:15:00.123456Z")

    assert brussels == utc

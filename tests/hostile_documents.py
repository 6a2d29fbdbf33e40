"""Broken and hostile Driver2 invoice documents, each with the reason the sync must give for it.

`CORPUS` holds (name, document, reason): the document is a JSON-ready object, or raw JSON text
where only text can say it (JSON numbers, "\\ud800" escapes, a bare null). `reason` is a part of
the `invalid` reason that belongs to that document alone. `HARMLESS_TEXTS` holds text that looks
hostile but is valid: it must reach PlanManager byte for byte.
"""

from __future__ import annotations

import json
from itertools import count
from typing import Any, NamedTuple

from documents import make_invoice

_serials = count(1)


class HostileDocument(NamedTuple):
    name: str
    document: Any
    reason: str


def _number() -> str:
    return f"H26-{next(_serials):06d}"


def _invoice(**overrides: Any) -> dict:
    """Return make_invoice()'s valid document under a number of its own, with the overrides."""
    return make_invoice(**{"number": _number(), **overrides})


def _line(line_no: int, kind: str, quantity: str, unit_price: str, rate: str, net: str) -> dict:
    return {"line_no": line_no, "kind": kind, "description": f"{kind} {line_no}",
            "quantity": quantity, "unit_price": unit_price, "vat_rate": rate,
            "net_amount": net}  # fmt: skip


def _change(document: dict, path: str, value: Any) -> dict:
    """Set the value at a dotted path such as "lines.0.quantity"; return the document."""
    *parents, last = path.split(".")
    target: Any = document
    for step in parents:
        target = target[int(step)] if isinstance(target, list) else target[step]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return document


def _without(document: dict, path: str) -> dict:
    *parents, last = path.split(".")
    target: Any = document
    for step in parents:
        target = target[int(step)] if isinstance(target, list) else target[step]
    del target[last]
    return document


def _raw(document: Any, path: str, json_text: str) -> str:
    """Return the document as JSON text with the value at `path` written as `json_text`."""
    marker = "@@raw-value@@"
    _change(document, path, marker)
    text = json.dumps(document, ensure_ascii=False)
    assert text.count(f'"{marker}"') == 1
    return text.replace(f'"{marker}"', json_text)


def _one_rate_invoice(vat: str) -> dict:
    """One part at 21 %: net 100.00, VAT 21.00 on the lines, `vat` in the totals."""
    gross = f"{100 + float(vat):.2f}"
    return _invoice(
        lines=[_line(1, "part", "1", "100.00", "21", "100.00")],
        totals={"net": "100.00", "vat": vat, "gross": gross},
    )


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# make_invoice() has lines 1 (part, 200.00 at 21 %), 2 (labour, 100.00 at 21 %), 3 (paint,
# 50.00 at 6 %) and 4 (a comment); totals 350.00 + 66.00 = 416.00. VAT on the lines: 63.00 +
# 3.00 = 66.00; two rates, so totals.vat may be 65.98 to 66.02.
CORPUS: list[HostileDocument] = [
    # -- the document's shape ------------------------------------------------------------------
    # An API answer item must be an Invoice object; anything else has no field to read.
    HostileDocument(
        "document_is_an_array",
        json.dumps([_invoice()]),
        "the document is a JSON array, not an object",
    ),
    HostileDocument("document_is_null", "null", "the document is a JSON null, not an object"),
    HostileDocument(
        "document_is_a_string", '"H26-999999"', "the document is a JSON string, not an object"
    ),
    # number is required: without it the invoice cannot be told apart from any other.
    HostileDocument("number_missing", _without(_invoice(), "number"), "number is missing"),
    # DocumentNumber is upper case; PlanManager compares numbers exactly.
    HostileDocument(
        "number_in_lower_case",
        _invoice(number="h26-000005"),
        "number 'h26-000005' is not a Driver2 document number",
    ),
    # The pattern ends at the end of the text: Python's `$` alone would let "\n" through, and
    # the newline would be stored as part of the number.
    HostileDocument(
        "number_with_trailing_newline",
        _invoice(number="H26-000006\n"),
        "number 'H26-000006\\n' is not a Driver2 document number",
    ),
    HostileDocument(
        "number_as_json_number",
        _invoice(number=26000007),
        "number is a JSON number, not a string",
    ),
    # Half a UTF-16 pair, escaped in the JSON: valid JSON text, but no character; the report
    # row that shows this number must still be writable as UTF-8.
    HostileDocument(
        "number_with_lone_surrogate",
        _raw(_invoice(), "number", '"H26-\\ud800"'),
        "number 'H26-\\ud800' is not a Driver2 document number",
    ),
    HostileDocument(
        "type_unknown", _invoice(type="proforma"), "type 'proforma' is not one of invoice"
    ),
    HostileDocument(
        "type_with_lone_surrogate",
        _raw(_invoice(), "type", '"invoice\\udfff"'),
        "type 'invoice\\udfff' is not one of invoice",
    ),
    HostileDocument("status_missing", _without(_invoice(), "status"), "status is missing"),
    HostileDocument(
        "customer_is_a_string",
        _invoice(customer="C000123"),
        "customer is a JSON string, not a object",
    ),
    HostileDocument(
        "customer_name_missing",
        _without(_invoice(), "customer.name"),
        "customer.name is missing",
    ),
    # The API's customer endpoint takes letters, digits and dashes only: a custom import could
    # never look this customer up, and the slashes would climb out of its URL path.
    HostileDocument(
        "customer_no_with_path_characters",
        _change(_invoice(), "customer.customer_no", "C000123/../1"),
        "customer.customer_no 'C000123/../1' is not a Driver2 customer number",
    ),
    # Nested far deeper than anything real, yet within what JSON decoding accepts.
    HostileDocument(
        "customer_nested_900_deep",
        _raw(_invoice(), "customer", _nested(900)),
        "customer is a JSON array, not a object",
    ),
    HostileDocument(
        "lines_is_an_object",
        _invoice(lines={"1": make_invoice()["lines"][0]}),
        "lines is a JSON object, not a array",
    ),
    HostileDocument(
        "line_is_null", _change(_invoice(), "lines.1", None), "line 2 is a JSON null, not an object"
    ),
    HostileDocument(
        "totals_without_gross", _without(_invoice(), "totals.gross"), "totals.gross is missing"
    ),
    # -- money and figures as JSON numbers or malformed strings -------------------------------
    # Money is a decimal string; a JSON number may have passed through a binary float on the
    # way (200.1 is not 200.10 in a double), so its digits cannot be trusted.
    HostileDocument(
        "line_net_amount_as_json_number",
        _raw(_invoice(), "lines.0.net_amount", "200.00"),
        "lines[1].net_amount is a JSON number; Driver2 sends figures as strings",
    ),
    HostileDocument(
        "totals_gross_as_json_integer",
        _raw(_invoice(), "totals.gross", "416"),
        "totals.gross is a JSON number; Driver2 sends figures as strings",
    ),
    HostileDocument(
        "quantity_as_json_number",
        _raw(_invoice(), "lines.1.quantity", "1.5"),
        "lines[2].quantity is a JSON number; Driver2 sends figures as strings",
    ),
    # NaN, Infinity and endless integers are not JSON numbers Python can take as they come.
    HostileDocument(
        "line_net_amount_as_nan_literal",
        _raw(_invoice(), "lines.0.net_amount", "NaN"),
        "lines[1].net_amount is a JSON NaN literal; Driver2 sends figures as strings",
    ),
    HostileDocument(
        "totals_gross_as_negative_infinity_literal",
        _raw(_invoice(), "totals.gross", "-Infinity"),
        "totals.gross is a JSON -Infinity literal; Driver2 sends figures as strings",
    ),
    HostileDocument(
        "line_number_of_five_thousand_digits",
        _raw(_invoice(), "lines.1.line_no", "9" * 5000),
        "lines[2].line_no 999999999999999999999999999999 is beyond what PlanManager can store",
    ),
    HostileDocument(
        "vat_rate_as_json_boolean",
        _change(_invoice(), "lines.2.vat_rate", True),
        "lines[3].vat_rate is a JSON boolean; Driver2 sends figures as strings",
    ),
    HostileDocument(
        "money_with_decimal_comma",
        _change(_invoice(), "totals.net", "350,00"),
        "totals.net '350,00' is not a well-formed decimal",
    ),
    HostileDocument(
        "money_in_exponent_form",
        _change(_invoice(), "lines.0.net_amount", "2E2"),
        "lines[1].net_amount '2E2' is not a well-formed decimal",
    ),
    # Decimal() ignores surrounding blanks, so only the pattern can refuse this.
    HostileDocument(
        "money_with_trailing_newline",
        _change(_invoice(), "totals.vat", "66.00\n"),
        "totals.vat '66.00\\n' is not a well-formed decimal",
    ),
    # unit_price is NUMERIC(14, 4) in PlanManager: at most 9,999,999,999.9999. The old check
    # used the money limit for every figure, so this reached the database and failed there.
    HostileDocument(
        "unit_price_beyond_planmanager_column",
        _change(_invoice(), "lines.0.unit_price", "12345678901.0000"),
        "lines[1].unit_price 12345678901.0000 is beyond what PlanManager can store",
    ),
    # -- dates and instants -------------------------------------------------------------------
    HostileDocument(
        "issue_date_without_leading_zeros",
        _invoice(issue_date="2026-3-28"),
        "issue_date '2026-3-28' is not a date (YYYY-MM-DD)",
    ),
    HostileDocument(
        "issue_date_not_in_calendar",
        _invoice(issue_date="2026-02-29"),
        "issue_date '2026-02-29' is not a calendar date",
    ),
    HostileDocument(
        "due_date_as_json_number",
        _invoice(due_date=20260427),
        "due_date '20260427' is not a date (YYYY-MM-DD)",
    ),
    HostileDocument(
        "issue_date_in_year_one",
        _invoice(issue_date="0001-01-01"),
        "issue_date '0001-01-01' is outside the years 2000 to 2099",
    ),
    # Without an offset the moment is ambiguous (Brussels time or UTC, an hour apart).
    HostileDocument(
        "updated_at_without_offset",
        _invoice(updated_at="2026-03-29T03:15:00"),
        "updated_at '2026-03-29T03:15:00' is not an RFC 3339 timestamp with an offset",
    ),
    HostileDocument(
        "updated_at_at_hour_25",
        _invoice(updated_at="2026-03-29T25:15:00+02:00"),
        "updated_at '2026-03-29T25:15:00+02:00' is not a moment in the calendar",
    ),
    # In UTC this is in the year 10000, which no datetime holds: once it became the watermark,
    # storing it failed every run after.
    HostileDocument(
        "updated_at_past_the_last_datetime",
        _invoice(updated_at="9999-12-31T23:59:59-02:00"),
        "updated_at '9999-12-31T23:59:59-02:00' is outside the years 2000 to 2099",
    ),
    HostileDocument(
        "updated_at_in_2150",
        _invoice(updated_at="2150-01-01T00:00:00+01:00"),
        "updated_at '2150-01-01T00:00:00+01:00' is outside the years 2000 to 2099",
    ),
    # -- lines --------------------------------------------------------------------------------
    # One bumper taken back at 200.00 each cannot cost +200.00: quantity or amount is mistyped.
    HostileDocument(
        "negative_quantity_on_positive_amount",
        _change(_invoice(), "lines.0.quantity", "-1"),
        "line 1: quantity -1 × unit_price 200.0000 is negative, but net_amount 200.00 is positive",
    ),
    # Minus times minus: a "returned discount" that lowers the invoice is the same fault.
    HostileDocument(
        "negative_quantity_and_price_on_negative_amount",
        _invoice(
            lines=[
                _line(1, "part", "2", "200.0000", "21", "400.00"),
                _line(2, "part", "-2", "-50.00", "21", "-100.00"),
                _line(3, "paint", "1", "50.00", "6", "50.00"),
            ],
        ),
        "line 2: quantity -2 × unit_price -50.00 is positive, but net_amount -100.00 is negative",
    ),
    HostileDocument(
        "line_kind_unknown",
        _change(_invoice(), "lines.0.kind", "rental"),
        "lines[1].kind 'rental' is not one of part, labour, paint, sublet, comment",
    ),
    HostileDocument(
        "line_kind_in_capitals",
        _change(_invoice(), "lines.1.kind", "LABOUR"),
        "lines[2].kind 'LABOUR' is not one of",
    ),
    # The API says net_amount is null on comment lines: this amount would count in the totals
    # and yet be on no priced line in PlanManager.
    HostileDocument(
        "comment_line_with_amount",
        _change(
            _invoice(totals={"net": "360.00", "vat": "66.00", "gross": "426.00"}),
            "lines.3.net_amount",
            "10.00",
        ),
        "line 4 is a comment but carries net_amount 10.00",
    ),
    # invoice_lines is keyed by (invoice, line_no): the second line 2 would overwrite the first
    # or fail the import.
    HostileDocument(
        "duplicate_line_numbers",
        _change(_invoice(), "lines.2.line_no", 2),
        "line number 2 appears twice",
    ),
    HostileDocument(
        "line_number_zero",
        _change(_invoice(), "lines.0.line_no", 0),
        "lines[1].line_no is 0; line numbers start at 1",
    ),
    HostileDocument(
        "line_number_beyond_planmanager_integer",
        _change(_invoice(), "lines.0.line_no", 2**31),
        "lines[1].line_no 2147483648 is beyond what PlanManager can store",
    ),
    HostileDocument(
        "vat_rate_over_100_percent",
        _change(_invoice(), "lines.2.vat_rate", "106"),
        "line 3 has a VAT rate of 106%",
    ),
    HostileDocument(
        "priced_line_without_vat_rate",
        _change(_invoice(), "lines.1.vat_rate", None),
        "line 2 (labour) has no net_amount or no vat_rate",
    ),
    # -- size ---------------------------------------------------------------------------------
    # Past MAX_LINES (2000): a Driver2 fault rather than a repair. The figures agree, so only
    # the size is wrong.
    HostileDocument(
        "ten_thousand_lines",
        _invoice(
            lines=[_line(n, "part", "1", "1.00", "21", "1.00") for n in range(1, 10_001)],
            totals={"net": "10000.00", "vat": "2100.00", "gross": "12100.00"},
        ),
        "10000 lines, more than the 2000 accepted",
    ),
    HostileDocument(
        "one_megabyte_description",
        _change(_invoice(), "lines.0.description", "x" * 2**20),
        "lines[1].description is 1048576 characters long, over 4000",
    ),
    # -- characters ---------------------------------------------------------------------------
    HostileDocument(
        "nul_in_description",
        _raw(_invoice(), "lines.0.description", '"Bumper\\u0000 front"'),
        "lines[1].description holds control characters",
    ),
    # ESC [2J clears the screen of whoever tails the log or opens the CSV in a terminal.
    HostileDocument(
        "terminal_escape_in_customer_name",
        _raw(_invoice(), "customer.name", '"Garage\\u001b[2J Dupont"'),
        "customer.name holds control characters",
    ),
    # U+0085 is what Windows-1252's "…" becomes when read as Latin-1: garbled at the source.
    HostileDocument(
        "c1_control_in_planmanager_file",
        _raw(_invoice(), "planmanager_file", '"D-2026-0042\\u0085"'),
        "planmanager_file holds control characters",
    ),
    # Half of an emoji's surrogate pair: no database encoding can store it.
    HostileDocument(
        "lone_high_surrogate_in_description",
        _raw(_invoice(), "lines.1.description", '"Fitting \\ud83d"'),
        "lines[2].description holds an invalid UTF-16 surrogate",
    ),
    HostileDocument(
        "lone_low_surrogate_in_customer_city",
        _raw(_invoice(), "customer.city", '"Li\\udce8ge"'),
        "customer.city holds an invalid UTF-16 surrogate",
    ),
    HostileDocument(
        "reversed_surrogate_pair_in_plate",
        _raw(_invoice(), "vehicle.plate", '"1-ABC-\\ude00\\ud83d"'),
        "vehicle.plate holds an invalid UTF-16 surrogate",
    ),
    # U+FFFF is a noncharacter: PlanManager would store it, but the report's workbook cannot.
    HostileDocument(
        "noncharacter_in_customer_street",
        _raw(_invoice(), "customer.street", '"Rue de la Gare \\uffff"'),
        "customer.street holds U+FFFE or U+FFFF, which are not characters",
    ),
    # -- figures that disagree (the contract's rule 1) ----------------------------------------
    HostileDocument(
        "net_total_one_cent_over",
        _invoice(totals={"net": "350.01", "vat": "66.00", "gross": "416.01"}),
        "the lines' net amounts add up to 350.00, not to totals.net 350.01",
    ),
    HostileDocument(
        "net_total_one_euro_under",
        _invoice(totals={"net": "349.00", "vat": "66.00", "gross": "415.00"}),
        "the lines' net amounts add up to 350.00, not to totals.net 349.00",
    ),
    HostileDocument(
        "gross_one_cent_over_net_plus_vat",
        _invoice(totals={"net": "350.00", "vat": "66.00", "gross": "416.01"}),
        "totals.net 350.00 + totals.vat 66.00 = 416.00, not totals.gross 416.01",
    ),
    # Two rates allow 0.02; 0.03 is one cent past it, either way.
    HostileDocument(
        "vat_one_cent_past_tolerance_above",
        _invoice(totals={"net": "350.00", "vat": "66.03", "gross": "416.03"}),
        "totals.vat 66.03 differs from the VAT computed on the lines 66.00 by more than 0.02",
    ),
    HostileDocument(
        "vat_one_cent_past_tolerance_below",
        _invoice(totals={"net": "350.00", "vat": "65.97", "gross": "415.97"}),
        "totals.vat 65.97 differs from the VAT computed on the lines 66.00 by more than 0.02",
    ),
    # One rate allows 0.01 only, whatever two rates would allow.
    HostileDocument(
        "vat_two_cents_off_on_one_rate",
        _one_rate_invoice("21.02"),
        "totals.vat 21.02 differs from the VAT computed on the lines 21.00 by more than 0.01"
        " (1 VAT rate(s))",
    ),
    # Totals are positive for credit notes too; the type gives the sign.
    HostileDocument(
        "credit_note_with_negative_totals",
        _invoice(
            type="credit_note",
            totals={"net": "-350.00", "vat": "-66.00", "gross": "-416.00"},
        ),
        "totals.net is negative (-350.00); the type gives the sign",
    ),
]


# Text that looks like an attack but is a valid description: the sync binds every value as a
# parameter and must store each exactly as sent.
HARMLESS_TEXTS: list[tuple[str, str]] = [
    ("sql_drop_table", "Robert'); DROP TABLE invoice_lines;--"),
    ("sql_always_true", "1' OR '1'='1"),
    ("sql_double_quoted", '"; DELETE FROM invoices WHERE "1"="1'),
    ("sql_comment_and_semicolon", "Pare-choc /* avant */ ; -- gauche"),
    ("backslashes_and_quotes", "C:\\temp\\'quoted\\' \\\\ \\n not a newline"),
    ("paramstyle_placeholders", "%s %(name)s :name ? $1 {0}"),
    ("html_script", "<script>alert('x')</script>"),
    ("html_markup_and_entities", "<b>Bumper</b> &amp; <i>grille</i> &lt;3"),
    ("formula_in_description", '=HYPERLINK("http://evil.example","Bumper")'),
    ("astral_characters", "Überholung 😀 — Carrosserie Liège ✓ 𝔘"),
    ("tabs_and_line_breaks", "Line one\nLine two\r\n\tindented"),
    ("longest_accepted", "é" * 4000),
]

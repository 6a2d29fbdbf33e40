"""Driver2 invoice documents checked against the API contract and turned into Decimal figures."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

# Applied with fullmatch: `$` alone also matches before a final "\n", which would then be kept.
DOCUMENT_NUMBER = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,31}$")
MONEY = re.compile(r"^-?[0-9]+(\.[0-9]{1,2})?$")
QUANTITY = re.compile(r"^-?[0-9]+(\.[0-9]{1,3})?$")
UNIT_PRICE = re.compile(r"^-?[0-9]+(\.[0-9]{1,4})?$")
VAT_RATE = re.compile(r"^[0-9]+(\.[0-9]{1,2})?$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
CUSTOMER_NO = re.compile(r"^[A-Za-z0-9-]{1,20}$")
ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
# C0 and C1 controls but tab, line feed and carriage return: nobody types them. A C1 control is
# usually a Windows-1252 character read as Latin-1, so the text is garbled at the source.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
SURROGATES = re.compile(r"[\ud800-\udfff]")
# Not characters at all; XML, hence the report's workbook, refuses them.
NONCHARACTERS = re.compile(r"[\ufffe\uffff]")

INVOICE_TYPES = ("invoice", "credit_note")
INVOICE_STATUSES = ("draft", "final", "cancelled")
LINE_KINDS = ("part", "labour", "paint", "sublet", "comment")
CENT = Decimal("0.01")

# Sanity limits beyond the API schema: no real body-shop invoice comes near them, and past them
# an invoice is more likely a Driver2 fault than a repair (and would bloat PlanManager).
MAX_LINES = 2000
MAX_TEXT_LENGTH = 4000
# Before 2000 there was no euro; a year past 2099 is a Driver2 clock or typing fault.
FIRST_YEAR, LAST_YEAR = 2000, 2099
# The largest values PlanManager's columns hold: INTEGER and NUMERIC(14, scale).
MAX_LINE_NO = 2**31 - 1
MAX_AMOUNT = Decimal("999999999999.99")
MAX_QUANTITY = Decimal("99999999999.999")
MAX_UNIT_PRICE = Decimal("9999999999.9999")
MAX_VAT_RATE_STORED = Decimal("999.99")


class InvalidInvoice(ValueError):
    """A Driver2 document that breaks driver2-api.yaml or whose figures disagree."""


@dataclass(frozen=True)
class Driver2Customer:
    customer_no: str
    name: str
    # Personal data: kept out of repr, so that no log or traceback prints it whole.
    vat_number: str | None = field(repr=False)
    street: str | None
    postal_code: str | None
    city: str | None
    country: str | None
    email: str | None = field(repr=False)
    phone: str | None = field(repr=False)


@dataclass(frozen=True)
class Driver2Line:
    line_no: int
    kind: str
    description: str
    quantity: Decimal | None
    unit_price: Decimal | None
    vat_rate: Decimal | None
    net_amount: Decimal | None


@dataclass(frozen=True)
class Driver2Invoice:
    number: str
    kind: str
    status: str
    issue_date: date
    due_date: date | None
    currency: str
    customer: Driver2Customer
    planmanager_file: str | None
    plate: str | None
    vin: str | None
    credited_invoice: str | None
    lines: tuple[Driver2Line, ...]
    net_total: Decimal
    vat_total: Decimal
    gross_total: Decimal
    updated_at: datetime

    @property
    def sign(self) -> Decimal:
        """The sign PlanManager stores amounts with: a credit note's are negative."""
        return Decimal(-1) if self.kind == "credit_note" else Decimal(1)


def parse_invoice(document: Any) -> Driver2Invoice:
    """Return the Driver2 document as a checked invoice.

    Raises InvalidInvoice with a reason in plain words when a field is missing or malformed, or
    when the figures disagree (the contract's rule 1).
    """
    if not isinstance(document, dict):
        raise InvalidInvoice(f"the document is a JSON {_json_type(document)}, not an object")

    number = _required(document, "number", str)
    if not DOCUMENT_NUMBER.fullmatch(number):
        raise InvalidInvoice(f"number {number[:40]!r} is not a Driver2 document number")
    kind = _choice(document, "type", INVOICE_TYPES)
    status = _choice(document, "status", INVOICE_STATUSES)
    issue_date = _date(document, "issue_date", required=True)
    due_date = _date(document, "due_date", required=False)
    currency = _required(document, "currency", str)
    if not CURRENCY.fullmatch(currency):
        raise InvalidInvoice(f"currency {currency[:10]!r} is not a three-letter ISO code")
    customer = parse_customer(_required(document, "customer", dict))
    planmanager_file = _optional_text(document, "planmanager_file")
    vehicle = document.get("vehicle")
    if vehicle is not None and not isinstance(vehicle, dict):
        raise InvalidInvoice("vehicle is neither an object nor null")
    plate = _optional_text(vehicle or {}, "plate", "vehicle.")
    vin = _optional_text(vehicle or {}, "vin", "vehicle.")
    credited_invoice = _optional_text(document, "credited_invoice")
    lines = _parse_lines(_required(document, "lines", list))
    totals = _required(document, "totals", dict)
    net_total = _money(totals, "net", "totals.")
    vat_total = _money(totals, "vat", "totals.")
    gross_total = _money(totals, "gross", "totals.")
    updated_at = _timestamp(document, "updated_at")

    for name, amount in (("net", net_total), ("vat", vat_total), ("gross", gross_total)):
        if amount < 0:
            raise InvalidInvoice(f"totals.{name} is negative ({amount}); the type gives the sign")
    check_figures(lines, net_total, vat_total, gross_total)
    return Driver2Invoice(
        number=number,
        kind=kind,
        status=status,
        issue_date=issue_date,
        due_date=due_date,
        currency=currency,
        customer=customer,
        planmanager_file=planmanager_file,
        plate=plate,
        vin=vin,
        credited_invoice=credited_invoice,
        lines=lines,
        net_total=net_total,
        vat_total=vat_total,
        gross_total=gross_total,
        updated_at=updated_at,
    )


def check_figures(
    lines: tuple[Driver2Line, ...], net_total: Decimal, vat_total: Decimal, gross_total: Decimal
) -> None:
    """Raise InvalidInvoice when the lines, the VAT per rate and the totals disagree."""
    lines_net = sum((line.net_amount or Decimal(0) for line in lines), Decimal(0))
    if lines_net != net_total:
        raise InvalidInvoice(
            f"the lines' net amounts add up to {lines_net}, not to totals.net {net_total}"
        )
    if net_total + vat_total != gross_total:
        raise InvalidInvoice(
            f"totals.net {net_total} + totals.vat {vat_total} = {net_total + vat_total},"
            f" not totals.gross {gross_total}"
        )

    net_per_rate: dict[Decimal, Decimal] = defaultdict(Decimal)
    for line in lines:
        if line.net_amount is not None and line.vat_rate is not None:
            net_per_rate[line.vat_rate] += line.net_amount
    computed_vat = sum(
        (vat_for_rate(net, rate) for rate, net in net_per_rate.items()), Decimal("0.00")
    )
    tolerance = CENT * len(net_per_rate)
    if abs(vat_total - computed_vat) > tolerance:
        raise InvalidInvoice(
            f"totals.vat {vat_total} differs from the VAT computed on the lines {computed_vat}"
            f" by more than {tolerance} ({len(net_per_rate)} VAT rate(s))"
        )


def vat_for_rate(net: Decimal, rate: Decimal) -> Decimal:
    """Return the VAT on `net` at `rate` percent, rounded half-up to the cent."""
    return (net * rate / Decimal(100)).quantize(CENT, rounding=ROUND_HALF_UP)


def parse_instant(value: str) -> datetime:
    """Return an RFC 3339 timestamp with explicit offset as an aware datetime.

    Raises ValueError, saying why, when it is no such timestamp, names no moment in the
    calendar, or falls outside the years FIRST_YEAR to LAST_YEAR (in UTC).
    """
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise ValueError(f"{str(value)[:40]!r} is not an RFC 3339 timestamp with an offset")
    text = value.upper().replace("Z", "+00:00")
    # Python keeps microseconds only: fractions beyond six digits are cut, not rounded.
    text = re.sub(r"\.([0-9]{6})[0-9]+", r".\1", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a moment in the calendar") from None
    try:
        year = moment.astimezone(UTC).year
    except OverflowError:
        # Late on 9999-12-31 west of UTC: no datetime holds it in UTC, so storing it, or the
        # watermark it would become, would fail every run.
        year = None
    if year is None or not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValueError(f"{value!r} is outside the years {FIRST_YEAR} to {LAST_YEAR}")
    return moment


def peek_identity(document: Any) -> tuple[str | None, datetime | None]:
    """Return the document's number and updated_at when they are readable, else None for each.

    Extraction keys documents by these before they are fully checked, so that an invoice seen
    twice in one pass counts once, at its latest version.
    """
    if not isinstance(document, dict):
        return None, None
    number = document.get("number")
    if not isinstance(number, str) or not DOCUMENT_NUMBER.fullmatch(number):
        number = None
    # The latest readable updated_at not after the extract's start becomes the next run's
    # starting point (sync.extract_driver2): one dated ahead cannot make later runs skip changes.
    try:
        updated_at = parse_instant(document.get("updated_at"))
    except ValueError:
        updated_at = None
    return number, updated_at


def parse_customer(customer: dict) -> Driver2Customer:
    """Return a Driver2 customer object checked as the contract says; raise InvalidInvoice
    with the reason otherwise. Used for the invoice's customer and for one read on its own."""
    customer_no = _required(customer, "customer_no", str, "customer.")
    if not customer_no.strip():
        raise InvalidInvoice("customer.customer_no is empty")
    # The number the API's own customer endpoint takes: any other can never be looked up.
    if not CUSTOMER_NO.fullmatch(customer_no):
        raise InvalidInvoice(
            f"customer.customer_no {customer_no[:30]!r} is not a Driver2 customer number"
            " (letters, digits and dashes, at most 20)"
        )
    name = _required(customer, "name", str, "customer.")
    _check_text(name, "customer.name")
    return Driver2Customer(
        customer_no=customer_no,
        name=name,
        vat_number=_optional_text(customer, "vat_number", "customer."),
        street=_optional_text(customer, "street", "customer."),
        postal_code=_optional_text(customer, "postal_code", "customer."),
        city=_optional_text(customer, "city", "customer."),
        country=_optional_text(customer, "country", "customer."),
        email=_optional_text(customer, "email", "customer."),
        phone=_optional_text(customer, "phone", "customer."),
    )


def _parse_lines(raw_lines: list) -> tuple[Driver2Line, ...]:
    if len(raw_lines) > MAX_LINES:
        raise InvalidInvoice(f"{len(raw_lines)} lines, more than the {MAX_LINES} accepted")
    lines = []
    seen_numbers: set[int] = set()
    for position, raw in enumerate(raw_lines, start=1):
        where = f"lines[{position}]."
        if not isinstance(raw, dict):
            raise InvalidInvoice(f"line {position} is a JSON {_json_type(raw)}, not an object")
        line_no = _line_no(raw, where)
        if line_no in seen_numbers:
            raise InvalidInvoice(f"line number {line_no} appears twice")
        seen_numbers.add(line_no)
        kind = _choice(raw, "kind", LINE_KINDS, where)
        description = _required(raw, "description", str, where)
        _check_text(description, f"{where}description")
        line = Driver2Line(
            line_no=line_no,
            kind=kind,
            description=description,
            quantity=_decimal(raw, "quantity", QUANTITY, MAX_QUANTITY, where),
            unit_price=_decimal(raw, "unit_price", UNIT_PRICE, MAX_UNIT_PRICE, where),
            vat_rate=_decimal(raw, "vat_rate", VAT_RATE, MAX_VAT_RATE_STORED, where),
            net_amount=_decimal(raw, "net_amount", MONEY, MAX_AMOUNT, where),
        )
        if kind == "comment" and line.net_amount is not None:
            # Its amount would count in the totals yet show on no priced line in PlanManager.
            raise InvalidInvoice(
                f"line {line_no} is a comment but carries net_amount {line.net_amount};"
                " comment lines have none"
            )
        if kind != "comment" and (line.net_amount is None or line.vat_rate is None):
            raise InvalidInvoice(f"line {line_no} ({kind}) has no net_amount or no vat_rate")
        if line.vat_rate is not None and line.vat_rate > 100:
            raise InvalidInvoice(f"line {line_no} has a VAT rate of {line.vat_rate}%")
        _check_signs(line)
        lines.append(line)
    return tuple(lines)


def _line_no(raw: dict, where: str) -> int:
    value = raw.get("line_no")
    # JSON Schema counts 3.0 as an integer; json reads it as Decimal.
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        line_no = int(value) if abs(value) <= MAX_LINE_NO else MAX_LINE_NO + 1
    else:
        line_no = _required(raw, "line_no", int, where)
    if line_no < 1:
        raise InvalidInvoice(f"{where}line_no is {line_no}; line numbers start at 1")
    if line_no > MAX_LINE_NO:
        raise InvalidInvoice(
            f"{where}line_no {str(value)[:30]} is beyond what PlanManager can store"
        )
    return line_no


def _check_signs(line: Driver2Line) -> None:
    """Refuse a line whose quantity times unit price has the opposite sign of its net amount.

    A negative quantity is a part taken back and a negative price a discount: each makes a
    negative net amount. A negative quantity on a positive amount (or the reverse) is a typing
    fault, and which of the two figures is wrong cannot be told. Zero agrees with any sign.
    """
    if line.quantity is None or line.unit_price is None or line.net_amount is None:
        return
    priced = _sign(line.quantity) * _sign(line.unit_price)
    if priced * _sign(line.net_amount) < 0:
        raise InvalidInvoice(
            f"line {line.line_no}: quantity {line.quantity} × unit_price {line.unit_price} is"
            f" {'negative' if priced < 0 else 'positive'}, but net_amount {line.net_amount}"
            f" is {'negative' if line.net_amount < 0 else 'positive'}"
        )


def _sign(amount: Decimal) -> int:
    return (amount > 0) - (amount < 0)


def _required(document: dict, key: str, kind: type, where: str = "") -> Any:
    if key not in document or document[key] is None:
        raise InvalidInvoice(f"{where}{key} is missing")
    value = document[key]
    # JSON true/false arrive as bool, a subclass of int: never a line number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidInvoice(
            f"{where}{key} is a JSON {_json_type(value)}, not a {_JSON_NAMES.get(kind, kind)}"
        )
    return value


def _choice(document: dict, key: str, allowed: tuple[str, ...], where: str = "") -> str:
    value = _required(document, key, str, where)
    if value not in allowed:
        raise InvalidInvoice(f"{where}{key} {value[:30]!r} is not one of {', '.join(allowed)}")
    return value


def _optional_text(document: dict, key: str, where: str = "") -> str | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInvoice(f"{where}{key} is a JSON {_json_type(value)}, not a string")
    _check_text(value, f"{where}{key}")
    return value


def _check_text(value: str, field: str) -> None:
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidInvoice(f"{field} is {len(value)} characters long, over {MAX_TEXT_LENGTH}")
    if CONTROL_CHARACTERS.search(value):
        raise InvalidInvoice(f"{field} holds control characters")
    # A "\ud800" escape decodes to half a UTF-16 pair, which no database encoding can store.
    if SURROGATES.search(value):
        raise InvalidInvoice(f"{field} holds an invalid UTF-16 surrogate")
    if NONCHARACTERS.search(value):
        raise InvalidInvoice(f"{field} holds U+FFFE or U+FFFF, which are not characters")


def _decimal(
    document: dict, key: str, pattern: re.Pattern, limit: Decimal, where: str
) -> Decimal | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInvoice(
            f"{where}{key} is a JSON {_json_type(value)}; Driver2 sends figures as strings"
        )
    if not pattern.fullmatch(value):
        raise InvalidInvoice(f"{where}{key} {value[:30]!r} is not a well-formed decimal")
    amount = Decimal(value)
    if abs(amount) > limit:
        raise InvalidInvoice(f"{where}{key} {value[:30]} is beyond what PlanManager can store")
    return amount


def _money(document: dict, key: str, where: str) -> Decimal:
    if document.get(key) is None:
        raise InvalidInvoice(f"{where}{key} is missing")
    return _decimal(document, key, MONEY, MAX_AMOUNT, where)


def _date(document: dict, key: str, *, required: bool) -> date | None:
    value = document.get(key)
    if value is None:
        if required:
            raise InvalidInvoice(f"{key} is missing")
        return None
    if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
        raise InvalidInvoice(f"{key} {str(value)[:30]!r} is not a date (YYYY-MM-DD)")
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise InvalidInvoice(f"{key} {value!r} is not a calendar date") from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise InvalidInvoice(f"{key} {value!r} is outside the years {FIRST_YEAR} to {LAST_YEAR}")
    return day


def _timestamp(document: dict, key: str) -> datetime:
    value = _required(document, key, str)
    try:
        return parse_instant(value)
    except ValueError as error:
        raise InvalidInvoice(f"{key} {error}") from None


_JSON_NAMES = {str: "string", int: "integer", dict: "object", list: "array"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Decimal) and not value.is_finite():
        return f"{value} literal"  # NaN or Infinity, which JSON itself does not allow
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__

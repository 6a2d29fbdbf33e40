"""Properties of the contract's figures rule and of parsing, over generated Driver2 documents.

The expected VAT is computed here in whole cents with integers, apart from the Decimal code
under test: per rate, the lines' net times the rate, rounded half-up (ties away from zero).
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from documents import make_invoice
from driver2_sync.driver2_client import decode_json
from driver2_sync.invoice import (
    Driver2Invoice,
    Driver2Line,
    InvalidInvoice,
    check_figures,
    parse_invoice,
    vat_for_rate,
)
from driver2_sync.staging import decode_line, encode_line

RATES = (0, 6, 12, 21)
FIGURE_FIELDS = ("quantity", "unit_price", "vat_rate", "net_amount")

# Generated documents are small, and the slowest example still parses in milliseconds: the
# time limit would only make CI flaky on a busy machine.
PROPERTIES = settings(max_examples=150, deadline=None)

# A line as (VAT rate, net amount in cents); negative amounts are discounts and returns.
priced_lines = st.lists(
    st.tuples(st.sampled_from(RATES), st.integers(min_value=-50_000_00, max_value=500_000_00)),
    min_size=1,
    max_size=12,
)


def _cents(amount: int) -> Decimal:
    return Decimal(amount).scaleb(-2)


def _vat_cents(net_cents: int, rate_hundredths: int) -> int:
    """Return the VAT in cents on net_cents at a rate given in hundredths of a percent."""
    whole, rest = divmod(abs(net_cents) * rate_hundredths, 10_000)
    if 2 * rest >= 10_000:
        whole += 1
    return whole if net_cents >= 0 else -whole


def _contract_totals(lines: list[tuple[int, int]]) -> tuple[int, int]:
    """Return (net, VAT) in cents as the contract computes them from the lines."""
    per_rate: dict[int, int] = {}
    for rate, net in lines:
        per_rate[rate] = per_rate.get(rate, 0) + net
    return sum(per_rate.values()), sum(
        _vat_cents(net, rate * 100) for rate, net in per_rate.items()
    )


def _driver2_lines(lines: list[tuple[int, int]]) -> tuple[Driver2Line, ...]:
    return tuple(
        Driver2Line(n, "part", f"Part {n}", Decimal(1), _cents(net), Decimal(rate), _cents(net))
        for n, (rate, net) in enumerate(lines, start=1)
    )


def _document(lines: list[tuple[int, int]], net: int, vat: int, gross: int) -> dict:
    """Return make_invoice() with these priced lines (one part each) and these totals."""
    return make_invoice(
        lines=[
            {"line_no": n, "kind": "part", "description": f"Part {n}", "quantity": "1",
             "unit_price": str(_cents(amount)), "vat_rate": str(rate),
             "net_amount": str(_cents(amount))}
            for n, (rate, amount) in enumerate(lines, start=1)
        ],
        totals={"net": str(_cents(net)), "vat": str(_cents(vat)), "gross": str(_cents(gross))},
    )  # fmt: skip


def _check(lines: list[tuple[int, int]], net: int, vat: int, gross: int) -> None:
    check_figures(_driver2_lines(lines), _cents(net), _cents(vat), _cents(gross))


# -- the VAT and totals arithmetic ---------------------------------------------------------------


@PROPERTIES
@given(
    net=st.integers(min_value=-(10**14), max_value=10**14),
    rate=st.integers(min_value=0, max_value=100_00),
)
def test_vat_for_a_rate_is_half_up_to_the_cent(net, rate):
    assert vat_for_rate(_cents(net), Decimal(rate).scaleb(-2)) == _cents(_vat_cents(net, rate))


@PROPERTIES
@given(lines=priced_lines)
def test_totals_built_by_the_contract_rule_pass(lines):
    net, vat = _contract_totals(lines)

    _check(lines, net, vat, net + vat)


@PROPERTIES
@given(lines=priced_lines, shift=st.integers(min_value=-100_00, max_value=100_00))
def test_net_total_moved_by_any_cent_fails(lines, shift):
    assume(shift != 0)
    net, vat = _contract_totals(lines)

    try:
        _check(lines, net + shift, vat, net + shift + vat)
    except InvalidInvoice as error:
        assert "the lines' net amounts add up to" in str(error)
    else:
        raise AssertionError(f"totals.net moved by {shift} cent(s) passed")


@PROPERTIES
@given(lines=priced_lines, shift=st.integers(min_value=-100_00, max_value=100_00))
def test_gross_other_than_net_plus_vat_fails(lines, shift):
    assume(shift != 0)
    net, vat = _contract_totals(lines)

    try:
        _check(lines, net, vat, net + vat + shift)
    except InvalidInvoice as error:
        assert f"not totals.gross {_cents(net + vat + shift)}" in str(error)
    else:
        raise AssertionError(f"totals.gross off by {shift} cent(s) passed")


@PROPERTIES
@given(lines=priced_lines, shift=st.integers(min_value=-8, max_value=8))
def test_vat_passes_within_a_cent_per_rate_and_fails_past_it(lines, shift):
    net, vat = _contract_totals(lines)
    rates = len({rate for rate, _ in lines})

    try:
        _check(lines, net, vat + shift, net + vat + shift)
    except InvalidInvoice as error:
        assert abs(shift) > rates, f"{shift} cent(s) off on {rates} rate(s) failed: {error}"
        assert f"by more than {_cents(rates)} ({rates} VAT rate(s))" in str(error)
    else:
        assert abs(shift) <= rates, f"{shift} cent(s) off on {rates} rate(s) passed"


@PROPERTIES
@given(lines=priced_lines, shift=st.integers(min_value=-8, max_value=8))
def test_whole_document_agrees_with_the_figures_rule(lines, shift):
    net, vat = _contract_totals(lines)
    assume(net >= 0 and vat + shift >= 0)
    rates = len({rate for rate, _ in lines})
    document = _document(lines, net, vat + shift, net + vat + shift)

    try:
        invoice = parse_invoice(decode_json(json.dumps(document)))
    except InvalidInvoice as error:
        assert abs(shift) > rates and "differs from the VAT computed" in str(error)
    else:
        assert abs(shift) <= rates
        assert (invoice.net_total, invoice.vat_total) == (_cents(net), _cents(vat + shift))


# -- parsing never fails otherwise, and money stays Decimal ------------------------------------

# Text as Driver2 might send it, lone surrogates, controls and noncharacters included.
any_character = (
    st.characters(exclude_categories=())
    | st.characters(categories=["Cs", "Cc"])
    | st.sampled_from("\ufffe\uffff\u2028\u202e")
)
any_text = st.text(any_character, max_size=12) | st.sampled_from(
    ["", " ", "21", "-0", "0.005", "1e3", "350.00", "2026-02-29", "2026-03-29T03:15:00+02:00",
     "9999-12-31T23:59:59-02:00", "comment", "part", "credit_note", "final", "F26-1\n"]
)  # fmt: skip
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=20,
)


def _paths(value, prefix=()):
    """Yield the path of every value inside a JSON document, the document's own included."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


VALID_PATHS = [path for path in _paths(make_invoice()) if path]


def _mutate(document: dict, path: tuple, value, remove: bool) -> dict:
    mutated = copy.deepcopy(document)
    parent = mutated
    for step in path[:-1]:
        parent = parent[step]
    if remove and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return mutated


def _parse_or_none(document) -> Driver2Invoice | None:
    """Return the parsed invoice, or None when it is invalid; any other exception fails."""
    try:
        return parse_invoice(document)
    except InvalidInvoice:
        return None


def _assert_money_is_decimal(invoice: Driver2Invoice) -> None:
    totals = (invoice.net_total, invoice.vat_total, invoice.gross_total)
    assert [type(total) for total in totals] == [Decimal] * 3
    for line in invoice.lines:
        for field in FIGURE_FIELDS:
            assert type(getattr(line, field)) in (Decimal, type(None)), (line.line_no, field)


@PROPERTIES
@given(document=json_values)
def test_any_json_value_parses_or_is_invalid(document):
    _parse_or_none(document)


@PROPERTIES
@given(
    fields=st.dictionaries(
        st.sampled_from(sorted(make_invoice())), json_values, min_size=1, max_size=6
    )
)
def test_valid_document_with_fields_replaced_by_any_json_parses_or_is_invalid(fields):
    _parse_or_none(make_invoice(**fields))


@PROPERTIES
@given(
    mutations=st.lists(
        st.tuples(st.sampled_from(VALID_PATHS), json_values, st.booleans()),
        min_size=1,
        max_size=3,
    )
)
def test_valid_document_mutated_anywhere_parses_or_is_invalid(mutations):
    document = make_invoice()
    for path, value, remove in mutations:
        try:
            document = _mutate(document, path, value, remove)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation took this path away

    invoice = _parse_or_none(document)

    if invoice is not None:
        _assert_money_is_decimal(invoice)


@PROPERTIES
@given(line=st.integers(0, 2), field=st.sampled_from(FIGURE_FIELDS), number=st.floats())
def test_figure_that_arrives_as_a_float_is_invalid(line, field, number):
    # The client decodes with parse_float=Decimal, so a float means a caller decoded the JSON
    # another way: its digits may already be off, so it is refused, never taken.
    document = make_invoice()
    document["lines"][line][field] = number

    invoice = _parse_or_none(document)

    assert invoice is None


@PROPERTIES
@given(lines=priced_lines.filter(lambda lines: _contract_totals(lines)[0] >= 0))
def test_money_of_a_valid_document_is_decimal_through_json_and_staging(lines):
    net, vat = _contract_totals(lines)
    assume(vat >= 0)
    text = json.dumps(_document(lines, net, vat, net + vat))

    invoice = parse_invoice(decode_line(encode_line(decode_json(text))))

    _assert_money_is_decimal(invoice)
    assert [line.net_amount for line in invoice.lines] == [_cents(amount) for _, amount in lines]

"""Rules 5a to 5c of the contract: when a PlanManager client is a Driver2 customer."""

from __future__ import annotations

import pytest

from driver2_sync.identity import normalise_name, normalise_vat_number
from driver2_sync.invoice import Driver2Customer
from driver2_sync.matching import ClientIndex
from driver2_sync.store import ClientRecord


@pytest.mark.parametrize(
    ("typed", "country", "normalised"),
    [
        ("be 403.019.261", "BE", "BE0403019261"),
        ("BE0403019261", None, "BE0403019261"),
        ("0403-019-261", "BE", "BE0403019261"),
        ("403019261", None, "BE0403019261"),
        (" NL 8077.21.913.B01", "NL", "NL807721913B01"),
        ("807721913B01", "NL", "NL807721913B01"),
        ("", "BE", None),
        (None, "BE", None),
    ],
)
def test_vat_numbers_normalise_to_country_and_digits(typed, country, normalised):
    assert normalise_vat_number(typed, country) == normalised


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("Garage Dupont SPRL", "Garage Dupont SRL"),
        ("Carrosserie Peeters BVBA", "BV Carrosserie Peeters"),
        ("Société Générale d'Assurances S.A.", "societe generale d assurances"),
        ("Jean-Pierre Lefèvre", "LEFEVRE Jean Pierre"),
    ],
)
def test_names_equal_without_legal_form_accents_case_and_word_order(left, right):
    assert normalise_name(left) == normalise_name(right)


def test_names_of_different_parties_stay_different():
    assert normalise_name("Garage Dupont SRL") != normalise_name("Garage Dupond SRL")


def _customer(**fields) -> Driver2Customer:
    values = {
        "customer_no": "C000123", "name": "Garage Dupont SRL", "vat_number": "BE0403019261",
        "street": None, "postal_code": "4000", "city": None, "country": "BE", "email": None,
        "phone": None,
    }  # fmt: skip
    values.update(fields)
    return Driver2Customer(**values)


CLIENTS = [
    ClientRecord(1, "Someone Else", None, "1000", "BE", "C000123"),
    ClientRecord(2, "Garage Dupont SPRL", "be 403.019.261", "4000", "BE", None),
    ClientRecord(3, "Dupont Garage", None, "4000", "BE", None),
    ClientRecord(4, "Garage Dupont", "BE 0999.999.999", "4000", "BE", None),
    ClientRecord(5, "Jan Peeters", None, "2000", "BE", None),
]


@pytest.mark.parametrize(
    ("customer", "a", "b", "c"),
    [
        # a by number, b by VAT; c only clients without VAT (3), since the customer has one.
        (_customer(), (1,), (2,), (3,)),
        # Without VAT on the customer, rule c takes every same-name client at the postal code.
        (_customer(customer_no="C9", vat_number=None), (), (), (2, 3, 4)),
        # Another postal code: no rule c.
        (_customer(customer_no="C9", vat_number=None, postal_code="4020"), (), (), ()),
        # A private person found by name and postal code only.
        (_customer(customer_no="C7", name="PEETERS Jan", vat_number=None, postal_code="2000"),
         (), (), (5,)),
        # VAT typed without prefix and with the old nine digits still agrees.
        (_customer(customer_no="C9", vat_number="403019261", postal_code=None), (), (2,), ()),
    ],
)  # fmt: skip
def test_client_index_finds_each_rule_apart(customer, a, b, c):
    match = ClientIndex(CLIENTS).match(customer)

    assert (match.by_customer_no, match.by_vat_number, match.by_name_and_postal_code) == (a, b, c)


def test_candidates_come_by_rule_a_then_b_then_c():
    assert ClientIndex(CLIENTS).match(_customer()).ordered_ids == [1, 2, 3]


def test_suggestion_names_the_closest_client_at_the_postal_code():
    index = ClientIndex(CLIENTS)

    suggestion = index.suggest(_customer(name="Garage Dupond", vat_number=None))

    # Clients 2, 3 and 4 share the normalised name; the lowest id comes first.
    assert suggestion == (2, "Garage Dupont SPRL", pytest.approx(92.307692, abs=1e-5))

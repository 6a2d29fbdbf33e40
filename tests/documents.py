"""Small, valid Driver2 documents for tests, to be bent into the case under test."""

from __future__ import annotations

import copy
from typing import Any


def make_customer(**overrides: Any) -> dict:
    customer = {
        "customer_no": "C000123",
        "name": "Garage Dupont SRL",
        "vat_number": "BE 0403.019.261",
        "street": "Rue de la Gare 12",
        "postal_code": "4000",
        "city": "Liège",
        "country": "BE",
        "email": "compta@dupont.example",
        "phone": "+32 4 222 33 44",
    }
    customer.update(overrides)
    return customer


def make_invoice(**overrides: Any) -> dict:
    """Return an invoice of 3 lines at 21 % and 6 % plus a comment: net 350.00, VAT 61.50."""
    document = {
        "number": "F26-004711",
        "type": "invoice",
        "status": "final",
        "issue_date": "2026-03-28",
        "due_date": "2026-04-27",
        "currency": "EUR",
        "customer": make_customer(),
        "planmanager_file": " d-2026-0042 ",
        "vehicle": {"plate": "1-ABC-123", "vin": "WVWZZZ1JZXW000001"},
        "credited_invoice": None,
        "lines": [
            {"line_no": 1, "kind": "part", "description": "Bumper", "quantity": "1",
             "unit_price": "200.0000", "vat_rate": "21", "net_amount": "200.00"},
            {"line_no": 2, "kind": "labour", "description": "Fitting", "quantity": "1.5",
             "unit_price": "66.6667", "vat_rate": "21", "net_amount": "100.00"},
            {"line_no": 3, "kind": "paint", "description": "Paint", "quantity": "1",
             "unit_price": "50.00", "vat_rate": "6", "net_amount": "50.00"},
            {"line_no": 4, "kind": "comment", "description": "Courtesy car offered",
             "quantity": None, "unit_price": None, "vat_rate": None, "net_amount": None},
        ],
        "totals": {"net": "350.00", "vat": "66.00", "gross": "416.00"},
        "updated_at": "2026-03-29T03:15:00+02:00",
    }  # fmt: skip
    for key, value in overrides.items():
        document[key] = value
    return copy.deepcopy(document)

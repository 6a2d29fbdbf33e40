"""The contract's outcome for each invoice, decided against a real PlanManager database."""

from __future__ import annotations

from datetime import UTC, datetime

from documents import make_customer, make_invoice
from driver2_sync.matching import ClientIndex
from driver2_sync.outcomes import Outcome
from driver2_sync.sync import decide_batch
from planmanager_rows import add_client, add_dossier, add_imported_invoice


def _set_up_planmanager(engine) -> None:
    # Client 10 is customer C000123 by number; 11 has Dupont's VAT typed the old way;
    # 12 is a private person known by name and postal code; 13 is an unrelated party.
    add_client(engine, 10, "Garage Dupont SRL", driver2_customer_no="C000123", postal_code="4000")
    add_client(engine, 11, "Garage Dupont SPRL", vat_number="403019261", postal_code="4000")
    add_client(engine, 12, "Lefèvre Marie", postal_code="1050")
    add_client(engine, 13, "AG Insurance", vat_number="BE0404494849", postal_code="1000")
    add_dossier(engine, 1, "D-2026-0042", (10, "owner"), (13, "insurer"))
    add_dossier(engine, 2, "D-2026-0043", (11, "lessor"))
    add_dossier(engine, 3, "D-2026-0044", (13, "insurer"))
    add_dossier(engine, 4, "D-2026-0045", (12, "driver"), (10, "owner"))
    add_imported_invoice(engine, 500, "F26-000001", 1, 10, datetime(2026, 3, 29, 1, 15, tzinfo=UTC))


def _private_person(**fields) -> dict:
    return make_customer(
        customer_no="C000777", name="MARIE LEFEVRE", vat_number=None, postal_code="1050", **fields
    )


CASES = [
    # (document, outcome, client_id)
    (make_invoice(number="F26-000010"), Outcome.IMPORTED, 10),
    (make_invoice(number="F26-000011", planmanager_file="D-2026-0043"), Outcome.IMPORTED, 11),
    (make_invoice(number="F26-000012", planmanager_file="d-2026-0045",
                  customer=_private_person()), Outcome.IMPORTED, 12),
    (make_invoice(number="F26-000013", planmanager_file="D-2026-0044"),
     Outcome.CLIENT_NOT_IN_DOSSIER, 10),
    (make_invoice(number="F26-000014", customer=make_customer(
        customer_no="C999", name="Carrosserie Inconnue", vat_number=None, postal_code="9000")),
     Outcome.CLIENT_UNKNOWN, None),
    (make_invoice(number="F26-000015", planmanager_file="D-2026-9999"),
     Outcome.DOSSIER_NOT_FOUND, None),
    (make_invoice(number="F26-000016", planmanager_file="  "), Outcome.DOSSIER_NOT_FOUND, None),
    (make_invoice(number="F26-000017", planmanager_file=None), Outcome.DOSSIER_NOT_FOUND, None),
    (make_invoice(number="F26-000018", status="draft"), Outcome.SKIPPED_DRAFT, None),
    (make_invoice(number="F26-000019", status="cancelled"), Outcome.SKIPPED_CANCELLED, None),
    (make_invoice(number="F26-000001"), Outcome.ALREADY_IMPORTED, None),
    (make_invoice(number="F26-000001", updated_at="2026-03-29T01:15:00Z"),
     Outcome.ALREADY_IMPORTED, None),
    (make_invoice(number="F26-000001", updated_at="2026-03-30T10:00:00+02:00"),
     Outcome.CHANGED_AFTER_IMPORT, None),
    (make_invoice(number="F26-000020", totals={"net": "350.00", "vat": "66.00",
                                               "gross": "416.01"}), Outcome.INVALID, None),
    # An invalid draft is invalid: rule 1 comes before rule 2.
    (make_invoice(number="F26-000021", status="draft", currency="euro"), Outcome.INVALID, None),
    # A cancelled invoice in an unknown dossier is skipped: rule 2 before rule 4.
    (make_invoice(number="F26-000022", status="cancelled", planmanager_file="X"),
     Outcome.SKIPPED_CANCELLED, None),
    # Already imported wins over a dossier that no longer exists: rule 3 before rule 4.
    (make_invoice(number="F26-000001", planmanager_file="GONE"), Outcome.ALREADY_IMPORTED, None),
]  # fmt: skip


def test_each_invoice_gets_the_contract_outcome(planmanager_store):
    _set_up_planmanager(planmanager_store.engine)
    index = ClientIndex(planmanager_store.iter_clients())

    decisions = decide_batch(planmanager_store, index, [case[0] for case in CASES])

    got = [(d.outcome, d.client_id if d.outcome.is_import or d.client_id else None)
           for d in decisions]  # fmt: skip
    expected = [
        (outcome, client_id if outcome in (Outcome.IMPORTED, Outcome.CLIENT_NOT_IN_DOSSIER)
         else None)
        for _, outcome, client_id in CASES
    ]  # fmt: skip
    assert got == expected


def test_reasons_tell_what_to_do(planmanager_store):
    _set_up_planmanager(planmanager_store.engine)
    index = ClientIndex(planmanager_store.iter_clients())

    decisions = decide_batch(planmanager_store, index, [CASES[3][0], CASES[5][0], CASES[0][0]])

    assert decisions[0].reason == (
        "Driver2 customer C000123 (Garage Dupont SRL) is PlanManager client 10, who is not a party"
        " of dossier D-2026-0044. Import the client into dossier D-2026-0044, then run a custom"
        " import of F26-000013; or run a custom import of F26-000013 into dossier D-2026-0044"
        " with force, which adds the client to it as 'invoiced'. The sync does not read this"
        " invoice again unless it changes in Driver2."
    )
    assert decisions[1].reason == (
        "Dossier D-2026-9999 does not exist in PlanManager. Correct the dossier number in Driver2,"
        " or run a custom import of F26-000015 with the right dossier."
    )
    assert decisions[2].reason == ""


def test_client_unknown_reason_names_the_closest_client_and_the_custom_import(planmanager_store):
    _set_up_planmanager(planmanager_store.engine)
    index = ClientIndex(planmanager_store.iter_clients())
    typo = make_invoice(
        number="F26-000030",
        customer=make_customer(
            customer_no="C000999", name="Garage Dupond", vat_number=None, postal_code="4000"
        ),
    )

    (decision,) = decide_batch(planmanager_store, index, [typo])

    assert decision.outcome == Outcome.CLIENT_UNKNOWN
    assert decision.reason == (
        "Driver2 customer C000999 (Garage Dupond) is no PlanManager client: no client has this"
        " customer number, VAT number, or name and postal code. Closest at that postal code:"
        " client 10 'Garage Dupont SRL' (92% alike); if it is the same party, set its Driver2"
        " customer number to C000999, then run a custom import of F26-000030. Otherwise create"
        " the client with Driver2 customer number C000999 in dossier D-2026-0042, then run a"
        " custom import of F26-000030; or run a custom import of F26-000030 into dossier"
        " D-2026-0042 with force, which creates the client. The sync does not read this invoice"
        " again unless it changes in Driver2."
    )


def test_client_unknown_reason_without_a_close_name_says_to_create_the_client(planmanager_store):
    _set_up_planmanager(planmanager_store.engine)
    index = ClientIndex(planmanager_store.iter_clients())
    stranger = make_invoice(
        number="F26-000031",
        customer=make_customer(
            customer_no="C000998", name="Carrosserie Inconnue", vat_number=None, postal_code="9000"
        ),
    )

    (decision,) = decide_batch(planmanager_store, index, [stranger])

    assert decision.outcome == Outcome.CLIENT_UNKNOWN
    assert decision.reason == (
        "Driver2 customer C000998 (Carrosserie Inconnue) is no PlanManager client: no client has"
        " this customer number, VAT number, or name and postal code. Create the client with"
        " Driver2 customer number C000998 in dossier D-2026-0042, then run a custom import of"
        " F26-000031; or run a custom import of F26-000031 into dossier D-2026-0042 with force,"
        " which creates the client. The sync does not read this invoice again unless it changes"
        " in Driver2."
    )

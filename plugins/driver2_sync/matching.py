"""The contract's outcome rules: which invoices import, to which client, and why the rest don't."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from rapidfuzz import fuzz, process

from driver2_sync.identity import (
    normalise_dossier_number,
    normalise_name,
    normalise_postal_code,
    normalise_vat_number,
)
from driver2_sync.invoice import Driver2Customer, Driver2Invoice
from driver2_sync.outcomes import Outcome
from driver2_sync.store import ClientRecord, DossierRecord, ImportedInvoice

# Below this similarity a PlanManager name is not worth suggesting to the operator.
SUGGESTION_CUTOFF = 80
# The sync reads an invoice again only once Driver2 changes it, so a fix made in PlanManager
# alone never brings it in: the remedies say so, lest an operator wait for the next sync.
_NOT_READ_AGAIN = " The sync does not read this invoice again unless it changes in Driver2."


@dataclass(frozen=True)
class Decision:
    """What happens to one invoice: an outcome, and for an import, where it goes."""

    outcome: Outcome
    reason: str = ""
    dossier_id: int | None = None
    client_id: int | None = None
    invoice_id: int | None = None


@dataclass(frozen=True)
class ClientMatch:
    """The PlanManager clients that are one Driver2 customer, by rule, in the contract's order."""

    by_customer_no: tuple[int, ...]
    by_vat_number: tuple[int, ...]
    by_name_and_postal_code: tuple[int, ...]

    @property
    def ordered_ids(self) -> list[int]:
        """Client ids by rule a, then b, then c, each rule's by lowest id, without repeats."""
        ordered: list[int] = []
        for ids in (self.by_customer_no, self.by_vat_number, self.by_name_and_postal_code):
            ordered.extend(client_id for client_id in sorted(ids) if client_id not in ordered)
        return ordered


class ClientIndex:
    """PlanManager clients keyed by the three ways the contract recognises a Driver2 customer."""

    def __init__(self, records: Iterable[ClientRecord]):
        self._by_customer_no: dict[str, int] = {}
        self._by_vat: dict[str, list[int]] = defaultdict(list)
        self._by_name: dict[tuple[str, str], list[tuple[int, bool]]] = defaultdict(list)
        self._names_by_postal_code: dict[str, dict[int, str]] = defaultdict(dict)
        self.size = 0
        for record in records:
            self.add(record)

    def add(self, record: ClientRecord) -> None:
        self.size += 1
        if record.driver2_customer_no:
            self._by_customer_no[record.driver2_customer_no] = record.id
        vat = normalise_vat_number(record.vat_number, record.country)
        if vat:
            self._by_vat[vat].append(record.id)
        postal_code = normalise_postal_code(record.postal_code)
        name = normalise_name(record.name)
        if postal_code and name:
            self._by_name[(postal_code, name)].append((record.id, vat is not None))
        if postal_code:
            self._names_by_postal_code[postal_code][record.id] = record.name

    def match(self, customer: Driver2Customer) -> ClientMatch:
        """Return the clients that are this customer under rules a, b and c of the contract."""
        by_customer_no = self._by_customer_no.get(customer.customer_no)
        vat = normalise_vat_number(customer.vat_number, customer.country)
        by_vat = tuple(self._by_vat.get(vat, ())) if vat else ()
        key = (normalise_postal_code(customer.postal_code), normalise_name(customer.name))
        by_name: tuple[int, ...] = ()
        if key[0] and key[1]:
            # Rule c needs at least one side without a VAT number.
            by_name = tuple(
                client_id
                for client_id, client_has_vat in self._by_name.get(key, ())
                if vat is None or not client_has_vat
            )
        return ClientMatch(
            by_customer_no=(by_customer_no,) if by_customer_no is not None else (),
            by_vat_number=by_vat,
            by_name_and_postal_code=by_name,
        )

    def suggest(self, customer: Driver2Customer) -> tuple[int, str, float] | None:
        """Return the closest-named client at the customer's postal code, if one is close."""
        candidates = self._names_by_postal_code.get(normalise_postal_code(customer.postal_code))
        if not candidates:
            return None
        best = process.extractOne(
            customer.name,
            candidates,
            scorer=fuzz.token_sort_ratio,
            processor=normalise_name,
            score_cutoff=SUGGESTION_CUTOFF,
        )
        if best is None:
            return None
        name, score, client_id = best
        return client_id, name, score


def decide_before_lookup(invoice: Driver2Invoice) -> Decision | None:
    """Return the outcome that needs no PlanManager data (a draft, a cancelled invoice), or None."""
    if invoice.status == "draft":
        return Decision(
            Outcome.SKIPPED_DRAFT,
            "Still a draft in Driver2. Nothing to do: it is imported once it is final there.",
        )
    if invoice.status == "cancelled":
        return Decision(
            Outcome.SKIPPED_CANCELLED,
            "Cancelled in Driver2; cancelled documents are never imported. Nothing to do.",
        )
    return None


def decide_for_imported(
    invoice: Driver2Invoice, imported: ImportedInvoice, *, force: bool = False
) -> Decision | None:
    """Return the outcome for an invoice PlanManager already holds (None: a forced reimport)."""
    if force:
        return None
    if imported.driver2_updated_at == invoice.updated_at:
        return Decision(
            Outcome.ALREADY_IMPORTED,
            f"Already in PlanManager as invoice {imported.id}, at this version. Nothing to do.",
            invoice_id=imported.id,
        )
    return Decision(
        Outcome.CHANGED_AFTER_IMPORT,
        f"Changed in Driver2 after it was imported (PlanManager invoice {imported.id} holds the"
        f" version of {imported.driver2_updated_at.isoformat()}, Driver2 now has"
        f" {invoice.updated_at.isoformat()}). PlanManager keeps the imported version; to replace"
        f" it, run a custom import of {invoice.number} with force and the dossier it is in"
        " (an empty dossier would put it in a new one).",
        invoice_id=imported.id,
    )


def dossier_not_found(invoice: Driver2Invoice, wanted: str | None) -> Decision:
    """Return the dossier_not_found decision, saying which dossier number was looked for."""
    number = normalise_dossier_number(wanted)
    if not number:
        return Decision(
            Outcome.DOSSIER_NOT_FOUND,
            "No PlanManager dossier number on the invoice in Driver2. Type the dossier number in"
            f" Driver2, or run a custom import of {invoice.number} with the dossier (empty"
            " dossier: a new one is created).",
        )
    return Decision(
        Outcome.DOSSIER_NOT_FOUND,
        f"Dossier {number} does not exist in PlanManager. Correct the dossier number in Driver2,"
        f" or run a custom import of {invoice.number} with the right dossier.",
    )


def decide_client(
    invoice: Driver2Invoice,
    dossier: DossierRecord,
    parties: set[int],
    client_index: ClientIndex,
) -> Decision:
    """Apply the client check (rule 5): import to a party of the dossier that is the customer."""
    match = client_index.match(invoice.customer)
    candidates = match.ordered_ids
    for client_id in candidates:
        if client_id in parties:
            return Decision(Outcome.IMPORTED, "", dossier_id=dossier.id, client_id=client_id)

    customer = _describe_customer(invoice.customer)
    if candidates:
        return Decision(
            Outcome.CLIENT_NOT_IN_DOSSIER,
            f"{customer} is PlanManager client {candidates[0]}, who is not a party of dossier"
            f" {dossier.number}. Import the client into dossier {dossier.number}, then run a"
            f" custom import of {invoice.number}; or run a custom import of {invoice.number} into"
            f" dossier {dossier.number} with force, which adds the client to it as 'invoiced'."
            f"{_NOT_READ_AGAIN}",
            dossier_id=dossier.id,
            client_id=candidates[0],
        )
    reason = (
        f"{customer} is no PlanManager client: no client has this customer number, VAT number,"
        " or name and postal code."
    )
    suggestion = client_index.suggest(invoice.customer)
    if suggestion:
        client_id, name, score = suggestion
        reason += (
            f" Closest at that postal code: client {client_id} {name!r} ({score:.0f}% alike); if"
            f" it is the same party, set its Driver2 customer number to"
            f" {invoice.customer.customer_no}, then run a custom import of {invoice.number}."
        )
    reason += (
        f" {'Otherwise c' if suggestion else 'C'}reate the client with Driver2 customer number"
        f" {invoice.customer.customer_no} in dossier {dossier.number}, then run a custom import of"
        f" {invoice.number}; or run a custom import of {invoice.number} into dossier"
        f" {dossier.number} with force, which creates the client.{_NOT_READ_AGAIN}"
    )
    return Decision(Outcome.CLIENT_UNKNOWN, reason, dossier_id=dossier.id)


def invalid(invoice_number: str | None, detail: str) -> Decision:
    """Return the invalid decision: never imported, forced or not."""
    return Decision(
        Outcome.INVALID,
        f"Breaks the Driver2 contract: {detail}. Have it corrected in Driver2; the next sync"
        " picks up the corrected version.",
    )


def failed(detail: str) -> Decision:
    """Return the failed decision for an error no rule foresaw."""
    return Decision(
        Outcome.FAILED,
        f"Unexpected error while importing: {detail}. Run the sync again; if it fails again,"
        " report it with the run's log.",
    )


def _describe_customer(customer: Driver2Customer) -> str:
    return f"Driver2 customer {customer.customer_no} ({customer.name})"

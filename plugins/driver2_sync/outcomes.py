"""The outcome each considered Driver2 invoice ends with, and the report row that explains it."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, fields


class Outcome(enum.StrEnum):
    IMPORTED = "imported"
    REIMPORTED = "reimported"
    INVALID = "invalid"
    SKIPPED_DRAFT = "skipped_draft"
    SKIPPED_CANCELLED = "skipped_cancelled"
    ALREADY_IMPORTED = "already_imported"
    CHANGED_AFTER_IMPORT = "changed_after_import"
    DOSSIER_NOT_FOUND = "dossier_not_found"
    CLIENT_NOT_IN_DOSSIER = "client_not_in_dossier"
    CLIENT_UNKNOWN = "client_unknown"
    NOT_FOUND = "not_found"
    FAILED = "failed"

    @property
    def is_import(self) -> bool:
        return self in (Outcome.IMPORTED, Outcome.REIMPORTED)


@dataclass
class ReportRow:
    """One invoice a run considered, as the report's CSV row and the Excel sheet show it."""

    driver2_number: str
    kind: str
    status: str
    issue_date: str
    customer_no: str
    customer_name: str
    planmanager_file: str
    outcome: str
    reason: str
    gross_total: str
    currency: str
    forced: bool
    dossier_id: int | None = None
    client_id: int | None = None
    invoice_id: int | None = None
    updated_at: str = ""

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def as_dict(self) -> dict:
        return asdict(self)

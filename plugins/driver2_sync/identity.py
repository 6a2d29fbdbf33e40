"""Normalised forms under which Driver2 customers and PlanManager clients and dossiers compare."""

from __future__ import annotations

import re
import unicodedata

from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError

# Belgian legal forms (French, Dutch, German), old and new, set aside when names compare: a
# company that went from SPRL to SRL in 2019 is still the same client.
LEGAL_FORMS = frozenset(
    {
        "srl", "sprl", "sprlu", "bv", "bvba", "ebvba", "nv", "sa", "cv", "cvba", "cvoa", "sc",
        "scrl", "scri", "scs", "sca", "comm", "commv", "commva", "gcv", "vzw", "asbl", "aisbl",
        "ivzw", "vof", "snc", "sce", "se", "gmbh", "ag", "pgmbh", "vog", "ev",
    }
)  # fmt: skip

_VAT_SEPARATORS = re.compile(r"[\s.\-/]+")
_NAME_DOTS = re.compile(r"\.")
_NAME_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise_vat_number(vat_number: str | None, country: str | None = "BE") -> str | None:
    """Return the VAT number as `CC` + digits (`be 403.019.261` → `BE0403019261`), or None.

    A number typed without a country prefix takes the party's country (Belgium when unknown).
    A number that python-stdnum cannot compact keeps its cleaned form, so that two identical typos
    still agree and a typo never matches a real number.
    """
    if vat_number is None:
        return None
    cleaned = _VAT_SEPARATORS.sub("", vat_number).upper()
    if not cleaned:
        return None

    if not cleaned[:2].isalpha():
        cleaned = (country or "BE").strip().upper()[:2] + cleaned
    try:
        return eu_vat.compact(cleaned)
    except ValidationError:
        return cleaned


def normalise_name(name: str | None) -> str:
    """Return a party name without accents, case, punctuation, legal forms or word order."""
    if not name:
        return ""
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_only = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    # Dots are dropped before splitting so that "S.P.R.L." reads as the legal form "sprl".
    words = _NAME_NON_WORD.split(_NAME_DOTS.sub("", ascii_only))
    return " ".join(sorted(word for word in words if word and word not in LEGAL_FORMS))


def normalise_postal_code(postal_code: str | None) -> str:
    """Return a postal code without blanks, upper-cased ('' when missing)."""
    return re.sub(r"\s+", "", postal_code or "").upper()


def normalise_dossier_number(number: str | None) -> str:
    """Return a dossier number as PlanManager stores it: trimmed and upper-cased ('' when empty)."""
    return (number or "").strip().upper()


def mask_vat_number(vat_number: str | None) -> str:
    """Return a VAT number safe for logs and reports: country and last three digits only."""
    if not vat_number:
        return ""
    compact = _VAT_SEPARATORS.sub("", vat_number).upper()
    return f"{compact[:2]}…{compact[-3:]}" if len(compact) > 5 else "…"

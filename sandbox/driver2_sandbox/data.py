"""Deterministic Driver2 invoices and customers, and the outcome the contract gives each of them
once the seeder has built the matching PlanManager database."""

from __future__ import annotations

import bisect
import functools
import json
import logging
import random
import re
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from driver2_sandbox import belgium

logger = logging.getLogger(__name__)

BRUSSELS = ZoneInfo("Europe/Brussels")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CENT = Decimal("0.01")
SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US

CASES = (
    "ok",
    "unknown_customer",
    "customer_not_in_dossier",
    "unknown_dossier",
    "invalid_figures",
    "draft",
    "cancelled",
    "already_imported",
    "changed_after_import",
)
CASE_OUTCOMES = {
    "ok": "imported",
    "unknown_customer": "client_unknown",
    "customer_not_in_dossier": "client_not_in_dossier",
    "unknown_dossier": "dossier_not_found",
    "invalid_figures": "invalid",
    "draft": "skipped_draft",
    "cancelled": "skipped_cancelled",
    "already_imported": "already_imported",
    "changed_after_import": "changed_after_import",
}
DEFAULT_SHARES = {
    "ok": 0.62,
    "unknown_customer": 0.05,
    "customer_not_in_dossier": 0.05,
    "unknown_dossier": 0.06,
    "invalid_figures": 0.05,
    "draft": 0.04,
    "cancelled": 0.03,
    "already_imported": 0.05,
    "changed_after_import": 0.05,
}
CUSTOMER_KINDS = ("person", "company", "insurer", "lessor")
# How PlanManager knows a customer: contract rule a, b or c, or not at all.
PRESENCES = ("a", "b", "c", "absent")
DEFAULT_MATCH_SHARES = {"a": 0.6, "b": 0.2, "c": 0.2}
ABSENT_SHARE = 0.1
# Cases whose customer PlanManager must know, and whose dossier lists that customer.
LINKED_CASES = frozenset({"ok", "already_imported", "changed_after_import"})
KNOWN_CUSTOMER_CASES = LINKED_CASES | {"customer_not_in_dossier"}

# Issue dates run from September 2025 to April 2026, across both changes of Brussels time.
HISTORY_START_US = int(datetime(2025, 9, 1, 6, 0, tzinfo=UTC).timestamp()) * SECOND_US
HISTORY_SPAN_US = 240 * DAY_US
DST_CHANGES_US = tuple(
    int(moment.timestamp()) * SECOND_US
    for moment in (
        datetime(2025, 10, 26, 1, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
    )
)
# Invoices come in blocks of this many; some blocks share one updated_at (a bulk change).
TIE_BLOCK = 6
CREDIT_NOTE_SHARE = 0.12
# Stored documents whose updated_at cannot be read sort after everything else, in arrival order.
UNREADABLE_INSTANT = 2**62

RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)


def format_instant(instant_us: int) -> str:
    """Return the instant as Driver2 writes it: RFC 3339 in Brussels time, fractions if any."""
    moment = (EPOCH + timedelta(microseconds=instant_us)).astimezone(BRUSSELS)
    if moment.microsecond == 0:
        return moment.isoformat(timespec="seconds")
    if moment.microsecond % 1000 == 0:
        return moment.isoformat(timespec="milliseconds")
    return moment.isoformat(timespec="microseconds")


def parse_instant(text: object) -> int | None:
    """Return the RFC 3339 timestamp as microseconds since the epoch, or None when it is not one
    (an offset is required)."""
    if not isinstance(text, str):
        return None
    match = RFC3339.match(text)
    if not match:
        return None
    day, clock, fraction, offset = match.groups()
    micros = (fraction or "").ljust(6, "0")[:6]
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        moment = datetime.fromisoformat(f"{day}T{clock}.{micros}{offset}")
    except ValueError:
        return None
    return (moment - EPOCH) // timedelta(microseconds=1)


def load_stored_json(text: str):
    """Return the JSON text a test stores, however hostile: NaN, Infinity and integers too long
    for int() included (they become Decimal). Raises ValueError when it is not JSON at all."""
    return json.loads(text, parse_int=_long_int, parse_constant=Decimal)


def _long_int(digits: str) -> int | Decimal:
    return int(digits) if len(digits) <= 4000 else Decimal(digits)


def make_datetime(instant_us: int) -> datetime:
    """Return the instant as an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=instant_us)


def compute_totals(lines: list[dict]) -> tuple[Decimal, Decimal, Decimal]:
    """Return (net, vat, gross) as the contract computes them from the lines: VAT per rate,
    rounded half-up to the cent."""
    per_rate: dict[Decimal, Decimal] = {}
    for line in lines:
        if line.get("net_amount") is None:
            continue
        rate = Decimal(line["vat_rate"])
        per_rate[rate] = per_rate.get(rate, Decimal("0")) + Decimal(line["net_amount"])
    net = sum(per_rate.values(), Decimal("0.00"))
    vat = sum(
        ((base * rate / 100).quantize(CENT, ROUND_HALF_UP) for rate, base in per_rate.items()),
        Decimal("0.00"),
    )
    return net, vat, net + vat


def allocate(total: int, shares: Mapping[str, float], names: tuple[str, ...]) -> list[int]:
    """Return how many of total items each name gets, by largest remainder; every name with a
    positive share gets at least one when there are enough items."""
    weights = [max(0.0, float(shares.get(name, 0.0))) for name in names]
    weight_sum = sum(weights)
    if weight_sum <= 0:
        raise ValueError("at least one share must be positive")
    exact = [total * weight / weight_sum for weight in weights]
    counts = [int(value) for value in exact]
    by_remainder = sorted(range(len(names)), key=lambda k: (counts[k] - exact[k], k))
    for k in by_remainder[: total - sum(counts)]:
        counts[k] += 1
    positive = [k for k, weight in enumerate(weights) if weight > 0]
    if total >= len(positive):
        for k in positive:
            while counts[k] == 0:
                donor = max(range(len(names)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[k] += 1
    return counts


@dataclass(frozen=True, slots=True)
class Customer:
    """A Driver2 customer, and the PlanManager client that stands for it (if any)."""

    index: int
    customer_no: str
    kind: str  # 'person', 'company', 'insurer' or 'lessor'
    presence: str  # the contract rule PlanManager recognises it by ('a', 'b', 'c') or 'absent'
    language: str
    name: str
    vat_number: str | None
    street: str
    postal_code: str
    city: str
    email: str | None
    phone: str | None
    client_name: str | None
    client_vat_number: str | None
    client_customer_no: str | None
    client_email: str | None

    def as_driver2(self) -> dict:
        """Return the customer as the Driver2 API shows it."""
        return {
            "customer_no": self.customer_no,
            "name": self.name,
            "vat_number": self.vat_number,
            "street": self.street,
            "postal_code": self.postal_code,
            "city": self.city,
            "country": "BE",
            "email": self.email,
            "phone": self.phone,
        }

    def as_client(self) -> dict:
        """Return the PlanManager clients row (without id) that stands for this customer."""
        return {
            "name": self.client_name,
            "vat_number": self.client_vat_number,
            "street": self.street,
            "postal_code": self.postal_code,
            "city": self.city,
            "country": "BE",
            "email": self.client_email,
            "phone": self.phone,
            "driver2_customer_no": self.client_customer_no,
        }


@dataclass(frozen=True, slots=True)
class InvoicePlan:
    """Who an invoice is for and which PlanManager dossier it belongs to, before any figures."""

    index: int
    case: str
    customer_index: int
    customer_no: str
    dossier_number: str | None  # None: PlanManager has no dossier for it
    planmanager_file: str | None  # as typed in Driver2
    parties: tuple[tuple[int, str], ...]  # (customer index, role) linked to the dossier
    plate: str
    vin: str


class Driver2Dataset:
    """Every Driver2 invoice and customer of one (invoice_count, seed), generated on demand.

    Only a sorted index of (updated_at instant, number) is kept; documents changed at run time
    (touched or stored raw) are kept aside as overrides.
    """

    def __init__(
        self,
        invoice_count: int,
        seed: int = 7,
        shares: Mapping[str, float] | None = None,
        match_shares: Mapping[str, float] | None = None,
    ) -> None:
        if invoice_count < 1:
            raise ValueError("invoice_count must be at least 1")
        unknown = set(shares or {}) - set(CASES)
        if unknown:
            raise ValueError(f"unknown cases in shares: {sorted(unknown)}")
        self.invoice_count = invoice_count
        self.seed = seed
        self.shares = dict(DEFAULT_SHARES if shares is None else shares)
        self.match_shares = dict(DEFAULT_MATCH_SHARES if match_shares is None else match_shares)
        self.customer_count = max(30, invoice_count // 4)

        self._names = {
            language: (belgium.list_first_names(language), belgium.list_last_names(language))
            for language in ("nl", "fr")
        }
        self._vat_offset = random.Random(f"{seed}:vat").randrange(18_000_000)
        self.customer_at = functools.lru_cache(maxsize=8192)(self._build_customer)
        started = time.monotonic()
        self._assign_customers()
        self._assign_cases()
        self._build_index()
        logger.debug(
            "generated the index of %d invoices and %d customers (seed %s) in %.1f s",
            invoice_count,
            self.customer_count,
            seed,
            time.monotonic() - started,
        )

        self._lock = threading.Lock()
        self._overrides: dict[str, str] = {}
        self._override_keys: dict[str, tuple[int, str]] = {}
        self._touched: set[str] = set()
        self._stored_raw: set[str] = set()
        self._unreadable_count = 0

    # -- construction ------------------------------------------------------------------------

    def _assign_customers(self) -> None:
        parties = len(belgium.INSURERS) + len(belgium.LESSORS)
        regular = self.customer_count - parties
        rng = random.Random(f"{self.seed}:presence")
        absent = max(1, round(regular * ABSENT_SHARE))
        present = allocate(regular - absent, self.match_shares, ("a", "b", "c"))
        codes = [0] * present[0] + [1] * present[1] + [2] * present[2] + [3] * absent
        rng.shuffle(codes)
        self._presence = bytearray([0] * parties + codes)

        self._attempts: dict[int, int] = {}
        self._kinds = bytearray(self.customer_count)
        self._present_regular = array("I")
        self._present_persons = array("I")
        self._absent = array("I")
        self._insurers = array("I", range(len(belgium.INSURERS)))
        self._lessors = array("I", range(len(belgium.INSURERS), parties))
        seen: set[str] = set()
        for index in range(self.customer_count):
            attempt = 0
            customer = self._build_customer(index)
            while (key := belgium.make_name_key(customer.name, customer.postal_code)) in seen:
                attempt += 1
                self._attempts[index] = attempt
                customer = self._build_customer(index)
            seen.add(key)
            self._kinds[index] = CUSTOMER_KINDS.index(customer.kind)
            if customer.presence == "absent":
                self._absent.append(index)
            elif customer.kind in ("person", "company"):
                self._present_regular.append(index)
                if customer.kind == "person":
                    self._present_persons.append(index)

    def _assign_cases(self) -> None:
        counts = allocate(self.invoice_count, self.shares, CASES)
        codes = [code for code, count in enumerate(counts) for _ in range(count)]
        random.Random(f"{self.seed}:cases").shuffle(codes)
        self._cases = bytearray(codes)

    def _build_index(self) -> None:
        count = self.invoice_count
        rng = random.Random(f"{self.seed}:index")
        step = HISTORY_SPAN_US / count
        forced_tie_block = TIE_BLOCK if count >= 2 * TIE_BLOCK else 0
        self._issue_us = array("q")
        self._updated_us = array("q")
        self._credit = bytearray(count)
        self._credited: dict[int, int] = {}
        self._numbers: list[str] = []
        sequences: dict[tuple[str, int], int] = {}
        recent_invoices: deque[int] = deque(maxlen=40)
        tie_last, tie_instant = -1, 0

        for i in range(count):
            issue = HISTORY_START_US + int((i + rng.random()) * step) // SECOND_US * SECOND_US
            is_credit = bool(recent_invoices) and rng.random() < CREDIT_NOTE_SHARE
            if i % TIE_BLOCK == 0 and (rng.random() < 0.2 or i == forced_tie_block):
                tie_last = min(i + rng.randint(2, TIE_BLOCK), count) - 1
                tie_instant = HISTORY_START_US + int((tie_last + 1) * step)
                tie_instant = tie_instant // SECOND_US * SECOND_US
                tie_instant += rng.randint(60, 3 * 86_400) * SECOND_US
                if rng.random() < 0.3:
                    tie_instant += rng.randint(1, 999) * 1000
            updated = tie_instant if i <= tie_last else self._draw_update(rng, issue)

            year = datetime.fromtimestamp(issue // SECOND_US, BRUSSELS).year % 100
            prefix = "C" if is_credit else "F"
            sequence = sequences.get((prefix, year)) or rng.randint(1, 4000)
            sequences[(prefix, year)] = sequence + 1
            self._numbers.append(f"{prefix}{year:02d}-{sequence:06d}")
            self._issue_us.append(issue)
            self._updated_us.append(updated)
            if is_credit:
                self._credit[i] = 1
                self._credited[i] = rng.choice(recent_invoices)
            else:
                recent_invoices.append(i)

        self._index_of = {number: i for i, number in enumerate(self._numbers)}
        self._keys = sorted(zip(self._updated_us, self._numbers, strict=True))
        self._last_real_instant = self._keys[-1][0]

    @staticmethod
    def _draw_update(rng: random.Random, issue: int) -> int:
        if rng.random() < 0.04:
            candidate = rng.choice(DST_CHANGES_US) + rng.randint(-7200, 7200) * SECOND_US
            if candidate > issue:
                return candidate
        spread = rng.random()
        if spread < 0.6:
            delay = rng.randint(300, 8 * 3600)
        elif spread < 0.9:
            delay = rng.randint(8 * 3600, 5 * 86_400)
        else:
            delay = rng.randint(5 * 86_400, 40 * 86_400)
        fraction_style = rng.random()
        if fraction_style < 0.65:
            fraction = 0
        elif fraction_style < 0.85:
            fraction = rng.randint(1, 999) * 1000
        else:
            fraction = rng.randint(1, 999_999)
        return issue + delay * SECOND_US + fraction

    # -- customers ---------------------------------------------------------------------------

    def _vat_digits(self, index: int) -> str:
        # An affine bijection keeps every customer's enterprise number distinct.
        body = 2_000_000 + (index * 1_234_567 + self._vat_offset) % 18_000_000
        return belgium.make_enterprise_number(body)

    @staticmethod
    def customer_no_of(index: int) -> str:
        """Return the Driver2 customer number of the customer with this index."""
        return f"C{index + 1:06d}"

    def _build_customer(self, index: int) -> Customer:
        attempt = self._attempts.get(index, 0)
        rng = random.Random(f"{self.seed}:customer:{index}:{attempt}")
        presence = PRESENCES[self._presence[index]]
        if index < len(belgium.INSURERS) + len(belgium.LESSORS):
            return self._build_party(index, rng)

        postal_code, dutch_city, french_city, local_language = rng.choice(belgium.PLACES)
        language = local_language
        if rng.random() < 0.15:
            language = "fr" if local_language == "nl" else "nl"
        city = dutch_city if local_language == "nl" else french_city
        males, females = self._names[language][0]
        last_names = self._names[language][1]
        if language == "nl" and rng.random() < 0.5:
            street = rng.choice(males + females) + rng.choice(belgium.STREET_SUFFIXES)
        elif language == "nl":
            street = rng.choice(belgium.DUTCH_STREETS)
        elif rng.random() < 0.3:
            street = f"Rue {rng.choice(last_names)}"
        else:
            street = rng.choice(belgium.FRENCH_STREETS)
        street = f"{street} {rng.randint(1, 220)}"
        if rng.random() < 0.1:
            street += f" bus {rng.randint(1, 12)}"
        phone = self._draw_phone(rng)
        is_company = presence == "b" or rng.random() < 0.45

        if is_company:
            name, client_name, vat, client_vat, email = self._draw_company(
                rng, index, language, presence, last_names
            )
            kind = "company"
        else:
            first = rng.choice(males if rng.random() < 0.5 else females)
            last = rng.choice(last_names)
            name = f"{first} {last}" if rng.random() < 0.7 else f"{last.upper()} {first}"
            client_name = self._vary_name(rng, name, None, None) if presence == "c" else name
            vat = client_vat = None
            slug = belgium.strip_accents(f"{first}.{last}").lower().replace(" ", "")
            slug = re.sub(r"[^a-z0-9.]", "", slug)
            domain = rng.choice(("telenet.be", "skynet.be", "proximus.be", "gmail.com"))
            email = f"{slug}@{domain}" if rng.random() < 0.7 else None
            kind = "person"

        customer_no = self.customer_no_of(index)
        return Customer(
            index=index,
            customer_no=customer_no,
            kind=kind,
            presence=presence,
            language=language,
            name=name,
            vat_number=vat,
            street=street,
            postal_code=postal_code,
            city=city,
            email=email,
            phone=phone,
            client_name=None if presence == "absent" else client_name,
            client_vat_number=None if presence == "absent" else client_vat,
            client_customer_no=customer_no if presence == "a" else None,
            client_email=email if rng.random() < 0.8 else None,
        )

    def _draw_company(
        self, rng: random.Random, index: int, language: str, presence: str, last_names: list[str]
    ) -> tuple[str, str, str | None, str | None, str | None]:
        last = rng.choice(last_names)
        form, old_form = rng.choice(belgium.LEGAL_FORMS[language])
        pattern = rng.random()
        if pattern < 0.6:
            base = f"{rng.choice(belgium.TRADES[language])} {last}"
        elif pattern < 0.8:
            base = f"{last} & {'Zonen' if language == 'nl' else 'Fils'}"
        else:
            base = f"{last}-{rng.choice(last_names)}"
        name = f"{base} {form}"

        digits = self._vat_digits(index)
        style = rng.randrange(belgium.VAT_STYLE_COUNT)
        vat = belgium.type_vat_number(digits, style)
        client_vat = belgium.type_vat_number(digits, style + rng.randint(1, 7))
        if presence == "b":
            while client_vat == vat:
                style += 1
                client_vat = belgium.type_vat_number(digits, style)
        elif presence == "c":
            # Rule c needs one side without a VAT number.
            if rng.random() < 0.5:
                vat = None
            else:
                client_vat = None
        elif rng.random() < 0.12:
            client_vat = None
        if presence in ("a", "absent") and rng.random() < 0.08:
            vat = None

        client_name = self._vary_name(rng, name, form, old_form) if presence != "a" else name
        if presence == "a" and rng.random() < 0.4:
            client_name = name.replace(f" {form}", f" {old_form}")
        slug = re.sub(r"[^a-z0-9]", "", belgium.strip_accents(base).lower())
        email = f"info@{slug}.be" if rng.random() < 0.7 else None
        return name, client_name, vat, client_vat, email

    @staticmethod
    def _vary_name(rng: random.Random, name: str, form: str | None, old_form: str | None) -> str:
        """Return the name as PlanManager staff might have typed it: another legal form, no
        accents, another case or word order, but equal under the contract's rule c."""
        words = name.split(" ")
        if form is not None and rng.random() < 0.8:
            if old_form != form and rng.random() < 0.7:
                words[-1] = old_form
            elif rng.random() < 0.5:
                words.pop()
            else:
                words.insert(0, words.pop())
        if rng.random() < 0.4:
            words.reverse()
        varied = " ".join(words)
        if rng.random() < 0.5:
            varied = belgium.strip_accents(varied)
        casing = rng.random()
        if casing < 0.3:
            varied = varied.upper()
        elif casing < 0.45:
            varied = varied.lower()
        if varied == name:
            varied = name.upper() if name.upper() != name else name.lower()
        return varied

    def _build_party(self, index: int, rng: random.Random) -> Customer:
        names = belgium.INSURERS + belgium.LESSORS
        name = names[index]
        kind = "insurer" if index < len(belgium.INSURERS) else "lessor"
        language = "nl" if name.endswith((" NV", " CV")) else "fr"
        postal_code, dutch_city, french_city, _ = rng.choice(belgium.PLACES[:8])
        digits = self._vat_digits(index)
        style = rng.randrange(belgium.VAT_STYLE_COUNT)
        street = rng.choice(belgium.FRENCH_STREETS if language == "fr" else belgium.DUTCH_STREETS)
        slug = re.sub(r"[^a-z0-9]", "", belgium.strip_accents(name.rsplit(" ", 1)[0]).lower())
        return Customer(
            index=index,
            customer_no=self.customer_no_of(index),
            kind=kind,
            presence="a",
            language=language,
            name=name,
            vat_number=belgium.type_vat_number(digits, style),
            street=f"{street} {rng.randint(1, 120)}",
            postal_code=postal_code,
            city=dutch_city if language == "nl" else french_city,
            email=f"claims@{slug}.be",
            phone=self._draw_phone(rng),
            client_name=name,
            client_vat_number=belgium.type_vat_number(digits, style + 3),
            client_customer_no=self.customer_no_of(index),
            client_email=f"claims@{slug}.be",
        )

    @staticmethod
    def _draw_phone(rng: random.Random) -> str | None:
        style = rng.random()
        pairs = f"{rng.randint(10, 99)} {rng.randint(10, 99)}"
        if style < 0.35:
            return f"04{rng.randint(70, 99)} {rng.randint(10, 99)} {pairs}"
        if style < 0.6:
            return f"+32 {rng.choice((2, 3, 9, 4))} {rng.randint(200, 999)} {pairs}"
        if style < 0.8:
            return f"+324{rng.randint(70, 99)}{rng.randint(100000, 999999)}"
        return None

    # -- invoice plans -----------------------------------------------------------------------

    def _issue_date(self, i: int) -> date:
        return datetime.fromtimestamp(self._issue_us[i] // SECOND_US, BRUSSELS).date()

    @staticmethod
    def _pick_other(rng: random.Random, pool: array, excluded: int) -> int | None:
        """Return a customer of the pool other than the excluded one, or None when the pool
        (in a tiny dataset) has no other."""
        for _ in range(20):
            if not pool:
                return None
            choice = pool[rng.randrange(len(pool))]
            if choice != excluded:
                return choice
        return None

    def plan(self, i: int) -> InvoicePlan:
        """Return who invoice index i is for and the PlanManager dossier it belongs to."""
        rng = random.Random(f"{self.seed}:plan:{i}")
        case = CASES[self._cases[i]]
        year = self._issue_date(i).year
        if case in KNOWN_CUSTOMER_CASES:
            if rng.random() < 0.1:
                customer = rng.choice(self._insurers + self._lessors)
            else:
                customer = self._present_regular[rng.randrange(len(self._present_regular))]
        elif case == "unknown_customer":
            customer = self._absent[rng.randrange(len(self._absent))]
        else:
            customer = rng.randrange(self.customer_count)
        plate, vin = belgium.draw_plate(rng), belgium.draw_vin(rng)

        if case == "unknown_dossier":
            typed_file = self._type_missing_dossier(rng, i, year)
            customer_no = self.customer_no_of(customer)
            return InvoicePlan(i, case, customer, customer_no, None, typed_file, (), plate, vin)
        dossier_number = f"D-{year}-{i + 1:04d}"
        typed = rng.random()
        if typed < 0.5:
            planmanager_file = dossier_number
        elif typed < 0.7:
            planmanager_file = dossier_number.lower()
        elif typed < 0.85:
            planmanager_file = f" {dossier_number.lower()} "
        else:
            planmanager_file = f"{dossier_number}  "

        kind = CUSTOMER_KINDS[self._kinds[customer]]
        presence = PRESENCES[self._presence[customer]]
        parties: list[tuple[int, str]] = []
        linked = case in LINKED_CASES or (
            case not in KNOWN_CUSTOMER_CASES and presence != "absent" and rng.random() < 0.5
        )
        if linked:
            role = kind
            if kind not in ("insurer", "lessor"):
                role = rng.choice(("owner", "owner", "owner", "driver"))
            parties.append((customer, role))
            if kind == "person" and rng.random() < 0.1:
                parties.append((customer, "driver" if role == "owner" else "owner"))
        wanted = []
        if not linked or kind in ("insurer", "lessor"):
            wanted.append((self._present_regular, "owner"))
        if rng.random() < 0.6 and kind != "insurer":
            wanted.append((self._insurers, "insurer"))
        if rng.random() < 0.15 and kind != "lessor":
            wanted.append((self._lessors, "lessor"))
        if rng.random() < 0.15:
            wanted.append((self._present_persons, "driver"))
        for pool, role in wanted:
            party = self._pick_other(rng, pool, customer)
            if party is not None and (party, role) not in parties:
                parties.append((party, role))
        return InvoicePlan(
            i,
            case,
            customer,
            self.customer_no_of(customer),
            dossier_number,
            planmanager_file,
            tuple(parties),
            plate,
            vin,
        )

    @staticmethod
    def _type_missing_dossier(rng: random.Random, i: int, year: int) -> str | None:
        # Every real dossier number has at least four digits after the year, dashes included.
        style = rng.random()
        if style < 0.2:
            return None
        if style < 0.35:
            return ""
        if style < 0.45:
            return "   "
        if style < 0.65:
            return f"D-{year}-{rng.randint(1, 999)}"
        if style < 0.8:
            return f"D{year}{i + 1:04d}"
        return rng.choice(("zie mail", "voir devis", "n.v.t.", "?"))

    # -- invoices ----------------------------------------------------------------------------

    def _build_invoice(self, i: int) -> dict:
        plan = self.plan(i)
        rng = random.Random(f"{self.seed}:invoice:{i}")
        customer = self.customer_at(plan.customer_index)
        is_credit = bool(self._credit[i])
        issue_date = self._issue_date(i)
        lines = self._draw_lines(rng, customer.language, is_credit)
        net, vat, gross = compute_totals(lines)

        if plan.case == "invalid_figures":
            net, vat, gross = self._spoil_figures(rng, lines, net, vat)
        elif len(_collect_rates(lines)) == 1 and vat >= CENT:
            # Driver2 sometimes rounds VAT per line; one cent off on a single rate is allowed.
            if rng.random() < 0.05:
                vat += rng.choice((CENT, -CENT))
                gross = net + vat

        status = {"draft": "draft", "cancelled": "cancelled"}.get(plan.case, "final")
        due_date = None
        if not is_credit and status != "draft" and rng.random() < 0.85:
            due_date = (issue_date + timedelta(days=rng.choice((15, 30, 30, 60)))).isoformat()
        vehicle_style = rng.random()
        if vehicle_style < 0.8:
            vehicle = {"plate": plan.plate, "vin": plan.vin}
        elif vehicle_style < 0.9:
            vehicle = {"plate": plan.plate, "vin": None}
        else:
            vehicle = None
        return {
            "number": self._numbers[i],
            "type": "credit_note" if is_credit else "invoice",
            "status": status,
            "issue_date": issue_date.isoformat(),
            "due_date": due_date,
            "currency": "EUR",
            "customer": customer.as_driver2(),
            "planmanager_file": plan.planmanager_file,
            "vehicle": vehicle,
            "credited_invoice": self._numbers[self._credited[i]] if is_credit else None,
            "lines": lines,
            "totals": {"net": f"{net:.2f}", "vat": f"{vat:.2f}", "gross": f"{gross:.2f}"},
            "updated_at": format_instant(self._updated_us[i]),
        }

    @staticmethod
    def _draw_lines(rng: random.Random, language: str, is_credit: bool) -> list[dict]:
        texts = belgium.LINE_TEXTS[language]
        profile_draw = rng.random()
        if profile_draw < 0.62:
            rates = [21]
        elif profile_draw < 0.77:
            rates = [21, 6]
        elif profile_draw < 0.87:
            rates = [21, 0]
        elif profile_draw < 0.95:
            rates = [21, 12, 6, 0]
        else:
            rates = [rng.choice((6, 12, 0))]
        priced = max(rng.randint(1, 3 if is_credit else 6), len(rates))
        lines: list[dict] = []
        for j in range(priced):
            rate = rates[j] if j < len(rates) else rng.choice(rates)
            kind = rng.choices(("part", "labour", "paint", "sublet"), weights=(45, 28, 17, 10))[0]
            if kind == "part":
                quantity = Decimal(rng.choice((1, 1, 1, 2, 2, 4)))
                if rng.random() < 0.2:
                    price = Decimal(rng.randint(50_000, 14_500_000)).scaleb(-4)
                else:
                    price = Decimal(rng.randint(500, 145_000)).scaleb(-2)
            elif kind == "labour":
                quantity = Decimal(rng.randint(2, 36)) / 4
                price = Decimal(rng.choice(("58.00", "62.50", "65.00", "68.75", "72.50")))
            elif kind == "paint":
                quantity = Decimal(rng.choice((1, 1, 2))) if rng.random() < 0.7 else Decimal("1.5")
                price = Decimal(rng.randint(3_500, 42_000)).scaleb(-2)
            else:
                quantity = Decimal(1)
                price = Decimal(rng.randint(4_500, 65_000)).scaleb(-2)
            lines.append(
                _make_priced_line(rng, kind, rng.choice(texts[kind]), quantity, price, rate)
            )

        base_21 = sum((Decimal(line["net_amount"]) for line in lines if line["_rate"] == 21), 0)
        if base_21 > 0 and rng.random() < 0.08:
            discount = (base_21 * rng.randint(3, 15) / 100).quantize(CENT, ROUND_HALF_UP)
            if discount > 0:
                lines.append(_make_priced_line(rng, "part", texts["discount"], 1, -discount, 21))
        for _ in range(rng.choice((0, 0, 1, 1, 2))):
            comment = {
                "kind": "comment",
                "description": rng.choice(texts["comment"]),
                "quantity": None,
                "unit_price": None,
                "vat_rate": None,
                "net_amount": None,
            }
            lines.insert(rng.randint(0, len(lines)), comment)
        for line_no, line in enumerate(lines, start=1):
            line.pop("_rate", None)
            line["line_no"] = line_no
        return [{"line_no": line.pop("line_no"), **line} for line in lines]

    @staticmethod
    def _spoil_figures(
        rng: random.Random, lines: list[dict], net: Decimal, vat: Decimal
    ) -> tuple[Decimal, Decimal, Decimal]:
        rate_count = len(_collect_rates(lines))
        flaw = rng.randrange(3)
        if flaw == 0:
            net += rng.choice((CENT, -CENT))
            return net, vat, net + vat
        if flaw == 1:
            # Beyond the tolerance however it is read: 0.01 in all, or 0.01 per rate.
            error = CENT * rate_count + Decimal("0.02")
            vat = vat + error if vat < error or rng.random() < 0.5 else vat - error
            return net, vat, net + vat
        return net, vat, net + vat + CENT

    # -- public reading ----------------------------------------------------------------------

    def numbers(self) -> list[str]:
        """Return every invoice number in (updated_at, number) order, overrides included."""
        with self._lock:
            return [number for _, number in self._keys]

    def generated_numbers(self) -> list[str]:
        """Return the numbers of the generated invoices in generation order."""
        return list(self._numbers)

    def invoice_json(self, number: str) -> str | None:
        """Return the invoice document as JSON text, or None when there is no such number."""
        with self._lock:
            override = self._overrides.get(number)
        if override is not None:
            return override
        i = self._index_of.get(number)
        if i is None:
            return None
        return json.dumps(self._build_invoice(i), ensure_ascii=False)

    def invoice(self, number: str) -> dict:
        """Return the invoice document; raise KeyError when there is no such number."""
        text = self.invoice_json(number)
        if text is None:
            raise KeyError(number)
        return load_stored_json(text)

    def invoices(self) -> Iterator[dict]:
        """Yield every invoice document in (updated_at, number) order."""
        for number in self.numbers():
            yield self.invoice(number)

    def customers(self) -> Iterator[dict]:
        """Yield every Driver2 customer, PlanManager knows it or not."""
        for index in range(self.customer_count):
            yield self.customer_at(index).as_driver2()

    def customer(self, customer_no: str) -> dict:
        """Return one Driver2 customer; raise KeyError when there is no such number."""
        match = re.fullmatch(r"C(\d{6,})", customer_no)
        if not match or not 1 <= int(match.group(1)) <= self.customer_count:
            raise KeyError(customer_no)
        return self.customer_at(int(match.group(1)) - 1).as_driver2()

    def case(self, number: str) -> str:
        """Return the case the invoice was generated for ('ok', 'draft', ...)."""
        return CASES[self._cases[self._index_of[number]]]

    def plan_of(self, number: str) -> InvoicePlan:
        """Return the plan of a generated invoice: its case, customer and dossier number, and
        the parties seeded on that dossier."""
        return self.plan(self._index_of[number])

    def match_rule(self, number: str) -> str | None:
        """Return the contract rule ('a', 'b', 'c') by which PlanManager knows the invoice's
        customer, or None when it does not know it."""
        presence = PRESENCES[self._presence[self.plan(self._index_of[number]).customer_index]]
        return None if presence == "absent" else presence

    def expected_outcome(self, number: str) -> str:
        """Return the outcome a sync run over a freshly seeded PlanManager gives the invoice.

        A touched invoice that was already imported becomes changed_after_import; a document
        stored raw has no expected outcome (KeyError), nor has an unknown number.
        """
        with self._lock:
            if number in self._stored_raw:
                raise KeyError(f"{number} is a stored raw document")
            touched = number in self._touched
        outcome = CASE_OUTCOMES[self.case(number)]
        if touched and outcome == "already_imported":
            return "changed_after_import"
        return outcome

    def expected_outcomes(self) -> dict[str, str]:
        """Return the expected outcome of every generated invoice, by number."""
        return {number: self.expected_outcome(number) for number in self._numbers}

    def read_page(
        self, since_us: int | None, after: tuple[int, str] | None, limit: int
    ) -> tuple[list[str], tuple[int, str] | None, bool]:
        """Return one page of invoice JSON texts in (updated_at, number) order: those with
        updated_at at or after since_us and strictly after the key `after`, with the key of the
        last one and whether more follow."""
        with self._lock:
            start = 0
            if since_us is not None:
                start = bisect.bisect_left(self._keys, (since_us, ""))
            if after is not None:
                start = max(start, bisect.bisect_right(self._keys, after))
            keys = self._keys[start : start + limit]
            more = start + limit < len(self._keys)
        items = [self.invoice_json(number) for _, number in keys]
        return [item for item in items if item is not None], (keys[-1] if keys else None), more

    # -- run-time changes --------------------------------------------------------------------

    def _current_key(self, number: str) -> tuple[int, str] | None:
        key = self._override_keys.get(number)
        if key is None and number in self._index_of:
            key = (self._updated_us[self._index_of[number]], number)
        return key

    def _replace_key(self, number: str, key: tuple[int, str]) -> None:
        old = self._current_key(number)
        if old is not None:
            position = bisect.bisect_left(self._keys, old)
            if position < len(self._keys) and self._keys[position] == old:
                del self._keys[position]
        bisect.insort(self._keys, key)
        self._override_keys[number] = key
        if key[0] < UNREADABLE_INSTANT:
            self._last_real_instant = max(self._last_real_instant, key[0])

    def touch(self, number: str, now_us: int | None = None) -> dict:
        """Set the invoice's updated_at to now (after every other change) and add a comment line,
        so that it moves to the end of the order; return the new document."""
        document = self.invoice(number)
        with self._lock:
            now = (
                now_us
                if now_us is not None
                else (datetime.now(UTC) - EPOCH) // timedelta(microseconds=1)
            )
            now = max(now, self._last_real_instant + 1000)
            if isinstance(document, dict):
                document["updated_at"] = format_instant(now)
                lines = document.get("lines")
                if isinstance(lines, list):
                    lines.append(
                        {
                            "line_no": len(lines) + 1,
                            "kind": "comment",
                            "description": f"Gewijzigd / modifié {format_instant(now)[:10]}",
                            "quantity": None,
                            "unit_price": None,
                            "vat_rate": None,
                            "net_amount": None,
                        }
                    )
            self._overrides[number] = json.dumps(document, ensure_ascii=False)
            self._replace_key(number, (now, number))
            self._touched.add(number)
        return document

    def store_document(self, number: str, text: str) -> None:
        """Store raw JSON text as the invoice with this number, served verbatim; it is ordered
        by its updated_at when that can be read, else after everything else."""
        document = load_stored_json(text)
        instant = None
        if isinstance(document, dict):
            instant = parse_instant(document.get("updated_at"))
        with self._lock:
            if instant is None:
                self._unreadable_count += 1
                instant = UNREADABLE_INSTANT + self._unreadable_count
            self._overrides[number] = text
            self._replace_key(number, (instant, number))
            self._stored_raw.add(number)

    def reset(self) -> None:
        """Forget every run-time change: back to the generated invoices."""
        with self._lock:
            self._overrides.clear()
            self._override_keys.clear()
            self._touched.clear()
            self._stored_raw.clear()
            self._keys = sorted(zip(self._updated_us, self._numbers, strict=True))
            self._last_real_instant = self._keys[-1][0]

    # -- what the seeder writes --------------------------------------------------------------

    def planmanager_customers(self) -> Iterator[Customer]:
        """Yield the customers PlanManager has a client for, in index order."""
        for index in range(self.customer_count):
            customer = self.customer_at(index)
            if customer.presence != "absent":
                yield customer

    def planmanager_dossiers(self) -> Iterator[InvoicePlan]:
        """Yield the plans of the invoices whose dossier exists in PlanManager."""
        for i in range(self.invoice_count):
            plan = self.plan(i)
            if plan.dossier_number is not None:
                yield plan

    def planmanager_imports(self) -> Iterator[tuple[InvoicePlan, dict, int]]:
        """Yield (plan, document, driver2_updated_at instant) of every invoice PlanManager holds
        already: the current updated_at, or an older one for changed_after_import."""
        for i in range(self.invoice_count):
            case = CASES[self._cases[i]]
            if case not in ("already_imported", "changed_after_import"):
                continue
            updated = self._updated_us[i]
            if case == "changed_after_import":
                rng = random.Random(f"{self.seed}:imported:{i}")
                updated -= rng.randint(3600, 20 * 86_400) * SECOND_US + rng.randint(0, 999_999)
            yield self.plan(i), self._build_invoice(i), updated


def _make_priced_line(
    rng: random.Random,
    kind: str,
    description: str,
    quantity: Decimal | int,
    price: Decimal,
    rate: int,
) -> dict:
    quantity = Decimal(quantity)
    net = (quantity * price).quantize(CENT, ROUND_HALF_UP)
    quantity_text = f"{quantity:.3f}"
    if rng.random() < 0.7:
        quantity_text = quantity_text.rstrip("0").rstrip(".")
    price_text = f"{price:.4f}" if price != price.quantize(CENT) else f"{price:.2f}"
    return {
        "kind": kind,
        "description": description,
        "quantity": quantity_text,
        "unit_price": price_text,
        "vat_rate": f"{rate}.00" if rng.random() < 0.15 else str(rate),
        "net_amount": f"{net:.2f}",
        "_rate": rate,
    }


def _collect_rates(lines: list[dict]) -> set[Decimal]:
    return {Decimal(line["vat_rate"]) for line in lines if line["vat_rate"] is not None}

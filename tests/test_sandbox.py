"""Tests of the Driver2 sandbox: its generated data, its HTTP API and faults, and the PlanManager
seeder, against the contract's rules, checked here independently of the sandbox's own code."""

from __future__ import annotations

import json
import re
import time
import unicodedata
import uuid
from collections import Counter
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from stdnum.be import vat as belgian_vat

from driver2_sandbox import Driver2Dataset
from driver2_sandbox.seeder import SeedError, drop_database, ensure_database, seed_planmanager

BRUSSELS = ZoneInfo("Europe/Brussels")
CENT = Decimal("0.01")
MONEY = re.compile(r"^[0-9]+\.[0-9]{2}$")
DOCUMENT_NUMBER = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,31}$")
LEGAL_FORMS = set("srl sprl bv bvba nv sa cv sc scrl cvba vzw asbl vof snc".split())
POSTGRES_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"
MARIADB_SERVER = "mysql+pymysql://root@127.0.0.1:3306"
EXPECTED_300_OUTCOMES = {
    "imported": 186,
    "client_unknown": 15,
    "client_not_in_dossier": 15,
    "dossier_not_found": 18,
    "invalid": 15,
    "skipped_draft": 12,
    "skipped_cancelled": 9,
    "already_imported": 15,
    "changed_after_import": 15,
}


@pytest.fixture(scope="module")
def dataset() -> Driver2Dataset:
    return Driver2Dataset(2000, seed=7)


def parse_moment(timestamp: str) -> datetime:
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    assert moment.tzinfo is not None, timestamp
    return moment


def find_figure_problems(document: dict) -> list[str]:
    """Return the contract's figure rules the document breaks (VAT tolerance: 0.01 per rate)."""
    per_rate: dict[Decimal, Decimal] = {}
    for line in document["lines"]:
        if line["net_amount"] is not None:
            rate = Decimal(line["vat_rate"])
            per_rate[rate] = per_rate.get(rate, Decimal(0)) + Decimal(line["net_amount"])
    totals = {name: Decimal(value) for name, value in document["totals"].items()}
    computed_vat = sum(
        (base * rate / 100).quantize(CENT, rounding=ROUND_HALF_UP)
        for rate, base in per_rate.items()
    )
    problems = []
    if sum(per_rate.values()) != totals["net"]:
        problems.append("net")
    if totals["net"] + totals["vat"] != totals["gross"]:
        problems.append("gross")
    if abs(totals["vat"] - computed_vat) > CENT * max(1, len(per_rate)):
        problems.append("vat")
    return problems


def normalise_vat(typed: str) -> str:
    compact = re.sub(r"[\s.\-]", "", typed).upper()
    digits = compact[2:] if compact.startswith("BE") else compact
    return "BE" + digits.zfill(10)


def normalise_name(name: str) -> tuple[str, ...]:
    plain = "".join(
        ch for ch in unicodedata.normalize("NFKD", name) if not unicodedata.combining(ch)
    )
    words = re.sub(r"[^0-9a-z]+", " ", plain.casefold()).split()
    return tuple(sorted(word for word in words if word not in LEGAL_FORMS))


def list_all(sandbox, limit: int, **params) -> tuple[list[dict], list[list[dict]]]:
    items, pages, cursor = [], [], None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = sandbox.get("/api/v1/invoices", query)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page["items"])
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items, pages


# -- generated data ----------------------------------------------------------------------------


def test_same_seed_gives_identical_documents():
    first, second = Driver2Dataset(300, seed=7), Driver2Dataset(300, seed=7)

    assert first.numbers() == second.numbers()
    assert [first.invoice_json(n) for n in first.numbers()] == [
        second.invoice_json(n) for n in second.numbers()
    ]
    assert list(first.customers()) == list(second.customers())
    assert Driver2Dataset(300, seed=8).invoice_json(first.numbers()[0]) != first.invoice_json(
        first.numbers()[0]
    )


def test_outcomes_follow_the_shares_exactly():
    outcomes = Counter(Driver2Dataset(300, seed=7).expected_outcomes().values())

    assert outcomes == EXPECTED_300_OUTCOMES


@pytest.mark.parametrize("seed", [0, 1, 3, 42])
def test_every_outcome_appears_even_in_ten_invoices(seed):
    outcomes = Driver2Dataset(10, seed=seed).expected_outcomes()

    assert len(outcomes) == 10
    assert set(outcomes.values()) == set(EXPECTED_300_OUTCOMES)


@settings(max_examples=25, deadline=None)
@given(invoices=st.integers(min_value=10, max_value=80), seed=st.integers(0, 10**9))
def test_any_seed_gives_sound_figures_unique_numbers_and_every_outcome(invoices, seed):
    dataset = Driver2Dataset(invoices, seed=seed)
    numbers = dataset.numbers()

    assert len(set(numbers)) == invoices
    for number in numbers:
        spoilt = dataset.case(number) == "invalid_figures"
        assert bool(find_figure_problems(dataset.invoice(number))) == spoilt, number
    assert set(dataset.expected_outcomes().values()) == set(EXPECTED_300_OUTCOMES)


def test_figures_meet_the_contract_arithmetic_unless_spoilt_on_purpose(dataset):
    spoilt = Counter()
    single_cent_off = 0
    for number in dataset.numbers():
        document = dataset.invoice(number)
        for field in ("net", "vat", "gross"):
            assert MONEY.match(document["totals"][field]), (number, document["totals"])
        problems = find_figure_problems(document)
        if dataset.case(number) == "invalid_figures":
            assert problems, number
            # Invalid under either reading of the VAT tolerance: 0.01 in all or per rate.
            spoilt[problems[0]] += 1
            continue
        assert problems == [], (number, problems)
        rates = {Decimal(line["vat_rate"]) for line in document["lines"] if line["vat_rate"]}
        computed = sum(
            (
                sum(
                    Decimal(line["net_amount"])
                    for line in document["lines"]
                    if line["vat_rate"] and Decimal(line["vat_rate"]) == rate
                )
                * rate
                / 100
            ).quantize(CENT, rounding=ROUND_HALF_UP)
            for rate in rates
        )
        difference = abs(Decimal(document["totals"]["vat"]) - computed)
        if difference:
            assert (difference, len(rates)) == (CENT, 1), number
            single_cent_off += 1

    assert set(spoilt) == {"net", "vat", "gross"}
    assert single_cent_off > 0


def test_documents_have_the_shapes_the_api_promises(dataset):
    numbers = set(dataset.numbers())
    kinds, rates, statuses = Counter(), Counter(), Counter()
    for number in dataset.numbers():
        document = dataset.invoice(number)
        assert DOCUMENT_NUMBER.match(number)
        assert document["number"] == number
        assert document["currency"] == "EUR"
        kinds[document["type"]] += 1
        statuses[document["status"]] += 1
        prefix = "C" if document["type"] == "credit_note" else "F"
        assert re.match(rf"^{prefix}\d{{2}}-\d{{6}}$", number)
        if document["type"] == "credit_note":
            assert document["credited_invoice"] in numbers
            assert dataset.invoice(document["credited_invoice"])["type"] == "invoice"
        else:
            assert document["credited_invoice"] is None
        for position, line in enumerate(document["lines"], start=1):
            assert line["line_no"] == position
            priced = [line[k] for k in ("quantity", "unit_price", "vat_rate", "net_amount")]
            if line["kind"] == "comment":
                assert priced == [None, None, None, None]
            else:
                assert None not in priced
                rates[Decimal(line["vat_rate"])] += 1
                assert re.match(r"^-?[0-9]+(\.[0-9]{1,3})?$", line["quantity"])
                assert re.match(r"^-?[0-9]+(\.[0-9]{1,4})?$", line["unit_price"])

    assert set(kinds) == {"invoice", "credit_note"}
    assert set(statuses) == {"draft", "final", "cancelled"}
    assert set(rates) == {Decimal(21), Decimal(12), Decimal(6), Decimal(0)}


def test_vat_numbers_are_valid_belgian_numbers_typed_in_many_ways(dataset):
    typed = [c["vat_number"] for c in dataset.customers() if c["vat_number"]]
    typed += [c.client_vat_number for c in dataset.planmanager_customers() if c.client_vat_number]
    shapes = {re.sub(r"\d", "9", number) for number in typed}

    assert all(belgian_vat.is_valid(normalise_vat(number)) for number in typed)
    assert {"BE 9999.999.999", "be999999999", "9999-999-999", "999999999"} <= shapes


def test_recognition_by_each_rule_holds_in_planmanager_shape(dataset):
    seen = Counter()
    for customer in dataset.planmanager_customers():
        seen[customer.presence] += 1
        if customer.presence == "a":
            assert customer.client_customer_no == customer.customer_no
        elif customer.presence == "b":
            assert customer.client_customer_no is None
            assert customer.client_vat_number != customer.vat_number
            assert normalise_vat(customer.client_vat_number) == normalise_vat(customer.vat_number)
        else:
            assert customer.client_customer_no is None
            assert customer.vat_number is None or customer.client_vat_number is None
            assert customer.client_name != customer.name
            assert normalise_name(customer.client_name) == normalise_name(customer.name)

    assert set(seen) == {"a", "b", "c"}


def test_updated_at_is_brussels_time_with_ties_and_fractions(dataset):
    stamps = [dataset.invoice(number)["updated_at"] for number in dataset.numbers()]
    offsets = Counter()
    for stamp in stamps:
        moment = parse_moment(stamp)
        assert moment.utcoffset() == moment.astimezone(BRUSSELS).utcoffset(), stamp
        offsets[stamp[-6:]] += 1

    assert set(offsets) == {"+01:00", "+02:00"}
    assert any("." in stamp for stamp in stamps)
    assert any("." not in stamp for stamp in stamps)
    assert max(Counter(stamps).values()) >= 3
    instants = [parse_moment(stamp) for stamp in stamps]
    assert instants == sorted(instants)


def test_planmanager_file_is_typed_with_varying_case_and_blanks(dataset):
    typed = [dataset.invoice(n)["planmanager_file"] for n in dataset.generated_numbers()[:400]]

    assert None in typed and "" in typed
    assert any(value and value != value.strip() for value in typed)
    assert any(value and value.strip().islower() for value in typed)


# -- HTTP API ----------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 7, 100, 500])
def test_paging_returns_every_invoice_once_in_updated_at_then_number_order(driver2_sandbox, limit):
    items, pages = list_all(driver2_sandbox, limit)
    keys = [(parse_moment(item["updated_at"]), item["number"]) for item in items]

    assert [item["number"] for item in items] == driver2_sandbox.dataset.numbers()
    assert len(set(keys)) == 300
    assert keys == sorted(keys)
    assert all(len(page) == limit for page in pages[:-1])
    if limit == 7:
        boundary_ties = sum(
            parse_moment(page[-1]["updated_at"]) == parse_moment(following[0]["updated_at"])
            for page, following in zip(pages, pages[1:], strict=False)
        )
        assert boundary_ties > 0


def test_updated_since_is_inclusive_whatever_the_offset(driver2_sandbox):
    stamps = Counter(
        driver2_sandbox.dataset.invoice(n)["updated_at"] for n in driver2_sandbox.dataset.numbers()
    )
    tied, count = stamps.most_common(1)[0]
    moment = parse_moment(tied)
    expected = [
        n
        for n in driver2_sandbox.dataset.numbers()
        if parse_moment(driver2_sandbox.dataset.invoice(n)["updated_at"]) >= moment
    ]
    as_utc = moment.astimezone(ZoneInfo("UTC")).isoformat().replace("+00:00", "Z")

    for since in (tied, as_utc):
        items, _ = list_all(driver2_sandbox, 50, updated_since=since)
        assert [item["number"] for item in items] == expected
        assert [item["updated_at"] for item in items[:count]] == [tied] * count


@pytest.mark.parametrize(
    "since", ["2026-03-29T03:15:00", "2026-03-29T03:15:00 02:00", "yesterday", ""]
)
def test_malformed_updated_since_is_a_bad_request(driver2_sandbox, since):
    response = driver2_sandbox.get("/api/v1/invoices", {"updated_since": since})

    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


@pytest.mark.parametrize("limit", ["0", "501", "-1", "abc", "", "2.5"])
def test_limit_outside_1_to_500_is_a_bad_request(driver2_sandbox, limit):
    response = driver2_sandbox.get("/api/v1/invoices", {"limit": limit})

    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


def test_limit_defaults_to_100_and_accepts_500(driver2_sandbox):
    default = driver2_sandbox.get("/api/v1/invoices").json()
    largest = driver2_sandbox.get("/api/v1/invoices", {"limit": 500}).json()

    assert len(default["items"]) == 100 and default["next_cursor"] is not None
    assert len(largest["items"]) == 300 and largest["next_cursor"] is None


def test_foreign_cursor_is_a_bad_request(driver2_sandbox):
    response = driver2_sandbox.get("/api/v1/invoices", {"cursor": "not-a-cursor"})

    assert response.status_code == 400


@pytest.mark.parametrize(
    "path", ["/api/v1/invoices", "/api/v1/invoices/F25-000113", "/api/v1/customers/C000001"]
)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic c2FuZGJveC10b2tlbg=="])
def test_missing_or_wrong_token_is_unauthorised(driver2_sandbox, path, header):
    headers = {"Authorization": header} if header else {}
    response = requests.get(driver2_sandbox.base_url + path, headers=headers, timeout=10)

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_invoice_and_customer_endpoints_serve_the_dataset(driver2_sandbox):
    number = driver2_sandbox.dataset.numbers()[42]
    document = driver2_sandbox.get(f"/api/v1/invoices/{number}").json()
    customer_no = document["customer"]["customer_no"]

    assert document == driver2_sandbox.dataset.invoice(number)
    assert driver2_sandbox.get(f"/api/v1/customers/{customer_no}").json() == (
        driver2_sandbox.dataset.customer(customer_no)
    )


@pytest.mark.parametrize(
    "path", ["/api/v1/invoices/F99-999999", "/api/v1/customers/C999999", "/api/v1/customers/x_y"]
)
def test_unknown_numbers_are_not_found(driver2_sandbox, path):
    response = driver2_sandbox.get(path)

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_touch_moves_an_invoice_to_the_end_with_a_visible_change(start_driver2_sandbox):
    sandbox = start_driver2_sandbox(invoices=50, seed=11)
    number = next(
        n for n in sandbox.dataset.numbers() if sandbox.dataset.case(n) == "already_imported"
    )
    before = sandbox.get(f"/api/v1/invoices/{number}").json()

    touched = sandbox.touch(number)
    items, _ = list_all(sandbox, 20)

    assert items[-1]["number"] == number
    assert items[-1] == touched
    assert [item["number"] for item in items].count(number) == 1
    assert parse_moment(touched["updated_at"]) > max(
        parse_moment(i["updated_at"]) for i in items[:-1]
    )
    assert len(touched["lines"]) == len(before["lines"]) + 1
    assert touched["totals"] == before["totals"]
    assert sandbox.dataset.expected_outcome(number) == "changed_after_import"


def test_scripted_faults_are_answered_in_order_then_normal_service(start_driver2_sandbox):
    sandbox = start_driver2_sandbox(invoices=20)
    sandbox.script_faults(
        [
            {"status": 429, "retry_after": "1"},
            {"status": 429, "retry_after_date": True},
            {"status": 503},
            {"drop": True},
            {"slow": 1.0},
            {"truncate": True},
            {"truncate": "json"},
        ]
    )
    url = sandbox.base_url + "/api/v1/invoices"

    first, second, third = (sandbox.get("/api/v1/invoices") for _ in range(3))
    with pytest.raises(requests.ConnectionError):
        requests.get(url, headers=sandbox.session.headers, timeout=10)
    started = time.monotonic()
    slow = sandbox.get("/api/v1/invoices")
    slow_seconds = time.monotonic() - started
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, headers=sandbox.session.headers, timeout=10)
    cut = requests.get(url, headers=sandbox.session.headers, timeout=10)
    normal = sandbox.get("/api/v1/invoices")

    assert (first.status_code, first.headers["Retry-After"]) == (429, "1")
    assert first.json()["error"] == "rate_limited"
    assert second.status_code == 429
    retry_at = parsedate_to_datetime(second.headers["Retry-After"])
    assert timedelta(0) < retry_at - datetime.now(retry_at.tzinfo) <= timedelta(seconds=3)
    assert third.status_code == 503
    assert (slow.status_code, slow_seconds >= 1.0) == (200, True)
    assert cut.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.text)
    assert normal.status_code == 200 and len(normal.json()["items"]) == 20
    assert sandbox.stats()["requests"]["/api/v1/invoices"] == {
        "429": 2,
        "503": 1,
        "dropped": 1,
        "200": 2,
        "truncated": 2,
    }


def test_fault_flags_apply_to_the_whole_run(start_driver2_sandbox):
    limited = start_driver2_sandbox(invoices=10, fault_429_rate=1.0)
    failing = start_driver2_sandbox(invoices=10, fault_5xx_rate=1.0, fault_seed=3)

    retry_afters = [limited.get("/api/v1/invoices").headers["Retry-After"] for _ in range(4)]
    statuses = {failing.get("/api/v1/invoices").status_code for _ in range(12)}

    assert retry_afters[0] == retry_afters[2] == "1"
    assert parsedate_to_datetime(retry_afters[1]).tzinfo is not None
    assert parsedate_to_datetime(retry_afters[3]).tzinfo is not None
    assert statuses <= {500, 502, 503, 504} and len(statuses) > 1


def test_stored_raw_documents_are_served_verbatim_and_ordered_by_updated_at(
    start_driver2_sandbox,
):
    sandbox = start_driver2_sandbox(invoices=30)
    hostile = '{"number": "F26-999001", "totals": {"net": 12.50}, "updated_at": "soon"}'
    dated = {"number": "F26-999002", "updated_at": "2025-09-01T00:00:00+02:00"}

    sandbox.put_invoice("F26-999001", hostile)
    sandbox.put_invoice("F26-999002", dated)
    items, _ = list_all(sandbox, 500)
    raw_page = sandbox.get("/api/v1/invoices", {"limit": 500}).text

    assert sandbox.get("/api/v1/invoices/F26-999001").text == hostile
    assert hostile in raw_page
    assert items[0]["number"] == "F26-999002"
    assert items[-1]["number"] == "F26-999001"
    assert len(items) == 32

    sandbox.reset()

    assert sandbox.get("/api/v1/invoices/F26-999001").status_code == 404
    assert len(list_all(sandbox, 500)[0]) == 30


# -- seeder ------------------------------------------------------------------------------------


def count_expected_rows(dataset: Driver2Dataset) -> dict[str, int]:
    imports = list(dataset.planmanager_imports())
    return {
        "clients": sum(1 for _ in dataset.planmanager_customers()),
        "dossiers": sum(1 for _ in dataset.planmanager_dossiers()),
        "dossier_clients": sum(len(plan.parties) for plan in dataset.planmanager_dossiers()),
        "invoices": len(imports),
        "invoice_lines": sum(len(document["lines"]) for _, document, _ in imports),
    }


def seed_and_check(url: str, dataset: Driver2Dataset) -> None:
    engine = create_engine(url)
    try:
        summary = seed_planmanager(engine, dataset)
        with engine.connect() as connection:
            counts = {
                name: connection.execute(text(f"SELECT COUNT(*) FROM {name}")).scalar_one()
                for name in count_expected_rows(dataset)
            }
            stored = {
                number: (updated, gross)
                for number, updated, gross in connection.execute(
                    text("SELECT driver2_number, driver2_updated_at, gross_total FROM invoices")
                )
            }
            dossier_numbers = connection.execute(text("SELECT number FROM dossiers")).scalars()
            assert all(re.fullmatch(r"D-\d{4}-\d{4,}", number) for number in dossier_numbers)
    finally:
        engine.dispose()

    assert counts == count_expected_rows(dataset)
    assert summary.counts() == counts
    assert len(summary.client_ids) == counts["clients"]
    assert len(summary.dossier_ids) == counts["dossiers"]
    assert counts["invoices"] == 30 and counts["clients"] > 50
    for number, (updated, gross) in stored.items():
        document = dataset.invoice(number)
        if isinstance(updated, str):
            updated = datetime.fromisoformat(updated)
        if updated.tzinfo is None:
            updated = updated.replace(tzinfo=ZoneInfo("UTC"))
        sign = -1 if document["type"] == "credit_note" else 1
        assert Decimal(str(gross)) == sign * Decimal(document["totals"]["gross"])
        same = updated == parse_moment(document["updated_at"])
        assert same == (dataset.case(number) == "already_imported"), number


def test_seeder_fills_sqlite_with_the_expected_rows(tmp_path):
    seed_and_check(f"sqlite:///{tmp_path / 'planmanager.db'}", Driver2Dataset(300, seed=7))


@pytest.mark.parametrize("server", [POSTGRES_SERVER, MARIADB_SERVER], ids=["postgresql", "mariadb"])
def test_seeder_fills_a_server_database_with_the_expected_rows(server):
    suffix = "?charset=utf8mb4" if server.startswith("mysql") else ""
    url = f"{server}/sandbox_test_{uuid.uuid4().hex[:12]}{suffix}"
    assert ensure_database(url)
    try:
        seed_and_check(url, Driver2Dataset(300, seed=7))
    finally:
        drop_database(url)


def test_seeding_twice_is_refused(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'planmanager.db'}")
    seed_planmanager(engine, Driver2Dataset(20, seed=7))

    with pytest.raises(SeedError, match="seeded already"):
        seed_planmanager(engine, Driver2Dataset(20, seed=7))


@pytest.mark.parametrize(("invoices", "seed"), [(2000, 7), (500, 1), (500, 2024)])
def test_seeded_database_gives_every_invoice_its_expected_outcome(tmp_path, invoices, seed):
    """Apply the contract's rules, written here from CONTRACT.md, to the seeded SQLite database
    and the generated documents; they must agree with expected_outcome for every invoice."""
    dataset = Driver2Dataset(invoices, seed=seed)
    engine = create_engine(f"sqlite:///{tmp_path / 'planmanager.db'}")
    seed_planmanager(engine, dataset)
    with engine.connect() as connection:
        clients = connection.execute(
            text("SELECT id, name, vat_number, postal_code, driver2_customer_no FROM clients")
        ).all()
        dossiers = dict(connection.execute(text("SELECT number, id FROM dossiers")).all())
        links = {
            tuple(row)
            for row in connection.execute(text("SELECT dossier_id, client_id FROM dossier_clients"))
        }
        imported = dict(
            connection.execute(
                text("SELECT driver2_number, driver2_updated_at FROM invoices")
            ).all()
        )
    engine.dispose()

    by_customer_no = {row.driver2_customer_no: row.id for row in clients if row.driver2_customer_no}
    by_vat: dict[str, set[int]] = {}
    by_name: dict[tuple, set[int]] = {}
    client_has_vat = {row.id: bool(row.vat_number) for row in clients}
    for row in clients:
        if row.vat_number:
            by_vat.setdefault(normalise_vat(row.vat_number), set()).add(row.id)
        by_name.setdefault((normalise_name(row.name), row.postal_code), set()).add(row.id)

    def outcome_of(document: dict) -> str:
        if find_figure_problems(document):
            return "invalid"
        if document["status"] != "final":
            return {"draft": "skipped_draft", "cancelled": "skipped_cancelled"}[document["status"]]
        if document["number"] in imported:
            stored = datetime.fromisoformat(imported[document["number"]]).replace(
                tzinfo=ZoneInfo("UTC")
            )
            same = stored == parse_moment(document["updated_at"])
            return "already_imported" if same else "changed_after_import"
        dossier_id = dossiers.get((document["planmanager_file"] or "").strip().upper())
        if dossier_id is None:
            return "dossier_not_found"
        customer = document["customer"]
        matches = set()
        if customer["customer_no"] in by_customer_no:
            matches.add(by_customer_no[customer["customer_no"]])
        if customer["vat_number"]:
            matches |= by_vat.get(normalise_vat(customer["vat_number"]), set())
        key = (normalise_name(customer["name"]), customer["postal_code"])
        matches |= {
            client
            for client in by_name.get(key, set())
            if not (customer["vat_number"] and client_has_vat[client])
        }
        if any((dossier_id, client) in links for client in matches):
            return "imported"
        return "client_not_in_dossier" if matches else "client_unknown"

    actual = {number: outcome_of(dataset.invoice(number)) for number in dataset.numbers()}

    assert actual == dataset.expected_outcomes()

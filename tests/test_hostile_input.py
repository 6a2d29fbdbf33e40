"""Hostile and malformed Driver2 documents: each is invalid for a reason of its own, the report
can still show it, and the sync goes on with the rest of the page."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import openpyxl
import pytest
from sqlalchemy import select

from documents import make_invoice
from driver2_sandbox.data import make_datetime
from driver2_sandbox.data import parse_instant as parse_sandbox_instant
from driver2_sandbox.seeder import seed_planmanager
from driver2_sync.driver2_client import decode_json
from driver2_sync.invoice import InvalidInvoice, parse_invoice, peek_identity
from driver2_sync.matching import invalid
from driver2_sync.outcomes import ReportRow
from driver2_sync.report import RunSummary, report_folder_name, write_report_files
from driver2_sync.staging import decode_line, encode_line
from driver2_sync.store import PlanManagerStore, invoice_lines, invoices
from driver2_sync.sync import report_row
from hostile_documents import CORPUS, HARMLESS_TEXTS, HostileDocument

DAG_ID = "driver2_invoice_sync"
NOW = datetime(2026, 3, 29, 1, 15, tzinfo=UTC)


def _as_received(entry: HostileDocument):
    """Return the document as the Driver2 client hands it on: raw text decoded its way."""
    return decode_json(entry.document) if isinstance(entry.document, str) else entry.document


def _reason_of(document) -> str:
    with pytest.raises(InvalidInvoice) as error:
        parse_invoice(document)
    return str(error.value)


def _line(line_no: int, kind: str, quantity, unit_price, vat_rate, net_amount) -> dict:
    return {"line_no": line_no, "kind": kind, "description": f"{kind} {line_no}",
            "quantity": quantity, "unit_price": unit_price, "vat_rate": vat_rate,
            "net_amount": net_amount}  # fmt: skip


# -- every document of the corpus, one at a time ------------------------------------------------


def test_corpus_holds_at_least_thirty_kinds_each_named_once():
    names = [entry.name for entry in CORPUS]

    assert len(names) >= 30
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("entry", CORPUS, ids=[entry.name for entry in CORPUS])
def test_hostile_document_is_invalid_for_its_own_reason(entry):
    reason = _reason_of(_as_received(entry))

    assert entry.reason in reason
    # Specific: no other document's reason fits, so the report tells the cases apart.
    assert [other.name for other in CORPUS if other is not entry and other.reason in reason] == []


@pytest.mark.parametrize("entry", CORPUS, ids=[entry.name for entry in CORPUS])
def test_hostile_document_keeps_its_reason_through_staging(entry):
    document = _as_received(entry)

    staged = decode_line(encode_line({"document": document}))["document"]

    # repr, not ==: Decimal("NaN") is not equal to itself.
    assert repr(staged) == repr(document)
    assert entry.reason in _reason_of(staged)


def test_report_files_hold_every_hostile_document_with_its_reason(tmp_path):
    rows = [
        ReportRow(**report_row(document, invalid(peek_identity(document)[0], _reason_of(document))))
        for document in map(_as_received, CORPUS)
    ]
    summary = RunSummary.from_rows(
        rows, dag_id=DAG_ID, run_id="hostile", started_at=NOW, finished_at=NOW
    )

    write_report_files(rows, summary, tmp_path / "report.csv", tmp_path / "report.xlsx")

    with (tmp_path / "report.csv").open(encoding="utf-8", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [row["outcome"] for row in written] == ["invalid"] * len(CORPUS)
    assert all(entry.reason in row["reason"] for entry, row in zip(CORPUS, written, strict=True))
    sheet = openpyxl.load_workbook(tmp_path / "report.xlsx", read_only=True)["Invoices"]
    assert sum(1 for _ in sheet.iter_rows()) == len(CORPUS) + 1


# -- the report row of a document that cannot be trusted ----------------------------------------


def test_report_row_replaces_what_csv_and_xlsx_cannot_hold_with_a_replacement_character():
    document = make_invoice(
        number="H26-\ud800",
        type="invoice\udfff",
        customer={"customer_no": "C1\x00", "name": "Garage\x1b[2J \uffff Dupont\x85"},
        planmanager_file="D-2026-0042\ufffe",
    )

    row = report_row(document, invalid(None, "number 'H26-\\ud800' is not a document number"))

    assert (row["driver2_number"], row["kind"], row["customer_no"]) == (
        "H26-\ufffd", "invoice\ufffd", "C1\ufffd",
    )  # fmt: skip
    assert row["customer_name"] == "Garage\ufffd[2J \ufffd Dupont\ufffd"
    assert row["planmanager_file"] == "D-2026-0042\ufffd"


def test_report_row_keeps_tabs_and_line_breaks_that_csv_quotes():
    document = make_invoice(customer={"customer_no": "C1", "name": "Garage\tDupont\r\nLiège"})

    row = report_row(document, invalid(None, "whatever"))

    assert row["customer_name"] == "Garage\tDupont\r\nLiège"


def test_report_row_names_a_structure_by_its_json_type_instead_of_printing_it():
    document = make_invoice(type=[{"line_no": n} for n in range(10_000)], status={"a": 1})

    row = report_row(document, invalid(None, "whatever"))

    assert (row["kind"], row["status"]) == ("(a JSON array)", "(a JSON object)")


def test_report_row_shows_json_scalars_as_json_writes_them():
    document = make_invoice(
        number=26000007, type=True, currency=Decimal("1.5E+3"), totals={"gross": Decimal("416.00")}
    )

    row = report_row(document, invalid(None, "whatever"))

    assert (row["driver2_number"], row["kind"], row["currency"], row["gross_total"]) == (
        "26000007", "true", "1.5E+3", "416.00",
    )  # fmt: skip


def test_report_row_cuts_a_broken_number_to_64_characters():
    row = report_row(make_invoice(number="x" * 1000), invalid(None, "whatever"))

    assert row["driver2_number"] == "x" * 64


def test_unstorable_updated_at_moves_no_watermark():
    document = make_invoice(number="H26-000001", updated_at="9999-12-31T23:59:59-02:00")

    assert peek_identity(document) == ("H26-000001", None)


# -- what looks hostile but is valid -----------------------------------------------------------


@pytest.mark.parametrize(("name", "text"), HARMLESS_TEXTS, ids=[n for n, _ in HARMLESS_TEXTS])
def test_hostile_looking_text_is_valid_and_kept_exactly(name, text):
    document = make_invoice(customer={"customer_no": "C000123", "name": text})
    document["lines"][0]["description"] = text

    invoice = parse_invoice(document)

    assert (invoice.lines[0].description, invoice.customer.name) == (text, text)


def test_discount_line_with_negative_price_and_amount_is_valid():
    document = make_invoice(
        lines=[
            _line(1, "part", "1", "200.00", "21", "200.00"),
            _line(2, "part", "1", "-20.00", "21", "-20.00"),
        ],
        totals={"net": "180.00", "vat": "37.80", "gross": "217.80"},
    )

    assert [line.net_amount for line in parse_invoice(document).lines] == [
        Decimal("200.00"), Decimal("-20.00"),
    ]  # fmt: skip


def test_part_taken_back_with_negative_quantity_and_amount_is_valid():
    document = make_invoice(
        lines=[
            _line(1, "part", "2", "75.5000", "21", "151.00"),
            _line(2, "part", "-1", "75.5000", "21", "-75.50"),
        ],
        totals={"net": "75.50", "vat": "15.86", "gross": "91.36"},
    )

    assert parse_invoice(document).lines[1].quantity == Decimal("-1")


def test_credit_note_with_positive_lines_and_totals_is_valid():
    document = make_invoice(type="credit_note", credited_invoice="F26-004700")

    invoice = parse_invoice(document)

    assert (invoice.kind, invoice.sign, invoice.gross_total) == (
        "credit_note", Decimal(-1), Decimal("416.00"),
    )  # fmt: skip


def test_zero_quantity_or_zero_amount_agrees_with_either_sign():
    document = make_invoice(
        lines=[
            _line(1, "labour", "0", "65.00", "21", "0.00"),
            _line(2, "part", "-1", "0.00", "21", "0.00"),
            _line(3, "sublet", "1", "120.00", "21", "120.00"),
        ],
        totals={"net": "120.00", "vat": "25.20", "gross": "145.20"},
    )

    assert [(line.quantity, line.net_amount) for line in parse_invoice(document).lines] == [
        (Decimal("0"), Decimal("0.00")),
        (Decimal("-1"), Decimal("0.00")),
        (Decimal("1"), Decimal("120.00")),
    ]


def test_line_number_written_as_a_json_number_with_zero_fraction_is_that_integer():
    # JSON Schema's "integer" takes 1.0; the client reads it as Decimal("1.0").
    document = make_invoice()
    document["lines"][0]["line_no"] = "@line_no@"
    text = json.dumps(document).replace('"@line_no@"', "1.0")

    assert [line.line_no for line in parse_invoice(decode_json(text)).lines] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("issue_date", "updated_at", "utc"),
    [
        ("2000-01-01", "2000-01-01T00:00:00Z", datetime(2000, 1, 1, tzinfo=UTC)),
        # The year counts in UTC: local 2100 is still 2099 there.
        ("2099-12-31", "2100-01-01T00:59:59+01:00", datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_first_and_last_accepted_days_are_valid(issue_date, updated_at, utc):
    invoice = parse_invoice(make_invoice(issue_date=issue_date, updated_at=updated_at))

    assert (invoice.issue_date.isoformat(), invoice.updated_at) == (issue_date, utc)


def test_an_instant_before_2000_in_utc_is_refused_whatever_its_local_year():
    reason = _reason_of(make_invoice(updated_at="2000-01-01T00:30:00+01:00"))

    assert reason == "updated_at '2000-01-01T00:30:00+01:00' is outside the years 2000 to 2099"


# -- staging keeps Driver2 values as they came ------------------------------------------------


def test_staging_gives_back_a_driver2_object_shaped_like_a_staged_decimal():
    document = make_invoice()
    document["lines"][0]["net_amount"] = {"$decimal": "two hundred"}

    assert decode_line(encode_line(document)) == document


def test_staging_keeps_driver2_keys_that_start_with_a_dollar():
    document = {"$decimal": "1", "$$x": [{"$decimal": "2"}], "amount": Decimal("2.50")}

    assert decode_line(encode_line(document)) == document


# -- the whole sync, over HTTP, into PlanManager ------------------------------------------------


def _put_key(position: int, document) -> str:
    """Return the number the sandbox files a document under: its own when readable."""
    return peek_identity(document)[0] or f"H26-9{position:05d}"


def _with_harmless_texts(donor: dict, number: str) -> dict:
    document = dict(donor, number=number)
    document["customer"] = dict(donor["customer"], name="O'Brien <b>&amp;</b> Fils'); --")
    first = max(line["line_no"] for line in donor["lines"]) + 1
    document["lines"] = donor["lines"] + [
        _line(first + offset, "comment", None, None, None, None) | {"description": text}
        for offset, (_, text) in enumerate(HARMLESS_TEXTS)
    ]
    return document


@pytest.mark.slow
def test_sync_reports_every_hostile_document_invalid_and_goes_on_with_the_rest(
    planmanager_db, start_driver2_sandbox, dag_runner
):
    sandbox = start_driver2_sandbox(invoices=40, seed=3)
    dataset = sandbox.dataset
    donor = next(
        number
        for number in dataset.generated_numbers()
        if dataset.expected_outcome(number) == "imported" and dataset.match_rule(number) == "a"
    )
    harmless = _with_harmless_texts(dataset.invoice(donor), "H26-500001")
    # The dossier lookup binds this too: it must find nothing, not every dossier.
    probe = dict(dataset.invoice(donor), number="H26-500002", planmanager_file="x' OR '1'='1")
    for position, entry in enumerate(CORPUS):
        sandbox.put_invoice(_put_key(position, _as_received(entry)), entry.document)
    sandbox.put_invoice(harmless["number"], harmless)
    sandbox.put_invoice(probe["number"], probe)
    seed_planmanager(planmanager_db.engine, dataset)
    with planmanager_db.engine.connect() as conn:
        seeded = set(conn.scalars(select(invoices.c.driver2_number)))
    dag_runner.use_driver2(sandbox)
    dag_runner.use_planmanager(planmanager_db)

    run = dag_runner.run(DAG_ID)

    assert run.state == "success"
    rows = dag_runner.report_rows(DAG_ID, run.run_id)
    assert len(rows) == len(CORPUS) + len(dataset.generated_numbers()) + 2
    hostile_rows = []
    for entry in CORPUS:
        matching = [row for row in rows if entry.reason in row["reason"]]
        assert [row["outcome"] for row in matching] == ["invalid"], entry.name
        hostile_rows.extend(matching)
    assert {
        row["driver2_number"]: row["outcome"] for row in rows if row not in hostile_rows
    } == dataset.expected_outcomes() | {"H26-500001": "imported", "H26-500002": "dossier_not_found"}
    by_number = {row["driver2_number"]: row for row in rows}
    assert by_number["H26-\ufffd"]["outcome"] == "invalid"
    assert by_number["H26-500001"]["customer_name"] == "O'Brien <b>&amp;</b> Fils'); --"

    imported = {row["driver2_number"] for row in rows if row["outcome"] == "imported"}
    with planmanager_db.engine.connect() as conn:
        assert set(conn.scalars(select(invoices.c.driver2_number))) == seeded | imported
        stored = conn.execute(
            select(invoice_lines.c.line_no, invoice_lines.c.description)
            .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
            .where(invoices.c.driver2_number == "H26-500001")
            .order_by(invoice_lines.c.line_no)
        ).all()
    assert [tuple(line) for line in stored] == [
        (line["line_no"], line["description"]) for line in harmless["lines"]
    ]

    folder = dag_runner.reports_dir / DAG_ID / report_folder_name(run.run_id)
    workbook = openpyxl.load_workbook(folder / "report.xlsx", read_only=True)
    assert workbook.sheetnames == ["Summary", "Invoices"]
    assert sum(1 for _ in workbook["Invoices"].iter_rows()) == len(rows) + 1


# The sandbox files a document whose updated_at it cannot read after every other, and 2150 or
# 9999 is after any watermark: Driver2 lists these again after each run, until corrected.
LISTED_AFTER_EVERY_WATERMARK = {
    "document_is_an_array",
    "document_is_null",
    "document_is_a_string",
    "updated_at_without_offset",
    "updated_at_at_hour_25",
    "updated_at_past_the_last_datetime",
    "updated_at_in_2150",
}


@pytest.mark.slow
def test_unreadable_or_far_off_updated_at_moves_no_watermark_and_is_reported_again(
    sqlite_planmanager_db, start_driver2_sandbox, dag_runner
):
    sandbox = start_driver2_sandbox(invoices=40, seed=3)
    latest_generated = make_datetime(
        max(
            parse_sandbox_instant(document["updated_at"]) for document in sandbox.dataset.invoices()
        )
    )
    for position, entry in enumerate(CORPUS):
        sandbox.put_invoice(_put_key(position, _as_received(entry)), entry.document)
    seed_planmanager(sqlite_planmanager_db.engine, sandbox.dataset)
    dag_runner.use_driver2(sandbox)
    dag_runner.use_planmanager(sqlite_planmanager_db)
    store = PlanManagerStore(sqlite_planmanager_db.engine)

    first = dag_runner.run(DAG_ID)

    assert first.state == "success"
    assert store.read_sync_state(DAG_ID).watermark == latest_generated
    with sqlite_planmanager_db.engine.connect() as conn:
        before = conn.execute(select(invoices).order_by(invoices.c.id)).all()

    second = dag_runner.run(DAG_ID)

    assert second.state == "success"
    rows = dag_runner.report_rows(DAG_ID, second.run_id)
    assert sorted(
        entry.name for entry in CORPUS for row in rows if entry.reason in row["reason"]
    ) == sorted(LISTED_AFTER_EVERY_WATERMARK)
    assert [row["outcome"] for row in rows] == ["invalid"] * len(LISTED_AFTER_EVERY_WATERMARK)
    assert store.read_sync_state(DAG_ID).watermark == latest_generated
    with sqlite_planmanager_db.engine.connect() as conn:
        assert conn.execute(select(invoices).order_by(invoices.c.id)).all() == before


def test_invoice_dated_after_driver2_was_read_is_staged_but_moves_no_watermark(
    sqlite_planmanager_db, start_driver2_sandbox, tmp_path
):
    from driver2_sync.driver2_client import Driver2Client
    from driver2_sync.staging import RunStaging
    from driver2_sync.sync import extract_driver2

    sandbox = start_driver2_sandbox(invoices=10, seed=5)
    generated = [parse_sandbox_instant(doc["updated_at"]) for doc in sandbox.dataset.invoices()]
    latest_generated = make_datetime(max(generated))
    # Driver2 is read a day after every generated invoice, a day before the one added here.
    started = latest_generated + timedelta(days=1)
    dated_ahead = (started + timedelta(days=1)).isoformat()
    ahead = make_invoice(number="H26-900001", updated_at=dated_ahead)
    sandbox.put_invoice(ahead["number"], ahead)
    store = PlanManagerStore(sqlite_planmanager_db.engine)
    staging = RunStaging(tmp_path / "staging")

    with Driver2Client(sandbox.base_url, sandbox.token) as client:
        manifest = extract_driver2(client, store, staging, DAG_ID, page_size=4, now=started)

    assert manifest["considered"] == 11
    assert manifest["dated_after_reading"] == 1
    assert datetime.fromisoformat(manifest["watermark"]) == latest_generated
    staged = [doc["number"] for part in manifest["parts"] for doc in staging.read_part(part)]
    assert "H26-900001" in staged

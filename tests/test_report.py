"""The run report: folder naming, where reports go, and the exact files written (local and S3)."""

from __future__ import annotations

import csv
import io
import json
import logging
import socket
import subprocess
import sys
import time
import urllib.request
import weakref
import zipfile
from datetime import UTC, datetime
from decimal import Decimal

import boto3
import openpyxl
import pytest

from driver2_sync.outcomes import Outcome, ReportRow
from driver2_sync.report import (
    RunSummary,
    SummaryCounter,
    report_folder_name,
    resolve_reports_base,
    write_run_report,
)

DAG_ID = "driver2_invoice_sync"
RUN_ID = "manual__2026-03-29T01:15:00+00:00"
RUN_FOLDER = "manual__2026-03-29T01_15_00_00_00"
STARTED = datetime(2026, 3, 29, 1, 15, tzinfo=UTC)
FINISHED = datetime(2026, 3, 29, 1, 17, 3, 500000, tzinfo=UTC)
HYPERLINK = '=HYPERLINK("http://evil.example/x","Garage")'
UNKNOWN_REASON = (
    'Driver2 customer "Carrosserie Liège, SRL" is no PlanManager client: '
    "create the client or link the invoice by hand."
)

HEADER = (
    "driver2_number,kind,status,issue_date,customer_no,customer_name,planmanager_file,outcome,"
    "reason,gross_total,currency,forced,dossier_id,client_id,invoice_id,updated_at\r\n"
)
CSV_INVOICE = (
    "F26-004711,invoice,final,2026-03-02,C1001,Garage Dupont SA,PM-2026-0042,imported,,"
    "1234.56,EUR,false,42,7,301,2026-03-02T10:00:00+01:00\r\n"
)
CSV_CREDIT_NOTE = (
    "C26-000042,credit_note,final,2026-03-05,C1001,Garage Dupont SA,PM-2026-0042,imported,,"
    "-12.50,EUR,true,42,7,302,2026-03-05T09:30:00+01:00\r\n"
)
CSV_CLIENT_UNKNOWN = (
    "F26-004712,invoice,final,2026-03-06,C2002,"
    '"\'=HYPERLINK(""http://evil.example/x"",""Garage"")",PM-2026-0050,client_unknown,'
    '"Driver2 customer ""Carrosserie Liège, SRL"" is no PlanManager client: '
    'create the client or link the invoice by hand.",310.00,EUR,false,50,,,'
    "2026-03-06T08:00:00+01:00\r\n"
)
EXPECTED_CSV = HEADER + CSV_INVOICE + CSV_CREDIT_NOTE + CSV_CLIENT_UNKNOWN
EXPECTED_SUMMARY_SHEET = [
    ("Run id", RUN_ID),
    ("DAG id", DAG_ID),
    ("Started", "2026-03-29T01:15:00+00:00"),
    ("Finished", "2026-03-29T01:17:03+00:00"),
    ("Duration (s)", 123.5),
    (None, None),
    ("Outcome", "Invoices"),
    ("imported", 2),
    ("reimported", 0),
    ("invalid", 0),
    ("skipped_draft", 0),
    ("skipped_cancelled", 0),
    ("already_imported", 0),
    ("changed_after_import", 0),
    ("dossier_not_found", 0),
    ("client_not_in_dossier", 0),
    ("client_unknown", 1),
    ("not_found", 0),
    ("failed", 0),
    (None, None),
    ("Considered", 3),
    ("Imported", 2),
    ("Not imported", 1),
    (None, None),
    ("Currency", "Gross imported"),
    ("EUR", 1222.06),
]


def make_row(**overrides) -> ReportRow:
    values = {
        "driver2_number": "F26-004711",
        "kind": "invoice",
        "status": "final",
        "issue_date": "2026-03-02",
        "customer_no": "C1001",
        "customer_name": "Garage Dupont SA",
        "planmanager_file": "PM-2026-0042",
        "outcome": Outcome.IMPORTED,
        "reason": "",
        "gross_total": "1234.56",
        "currency": "EUR",
        "forced": False,
        "dossier_id": 42,
        "client_id": 7,
        "invoice_id": 301,
        "updated_at": "2026-03-02T10:00:00+01:00",
    }
    values.update(overrides)
    return ReportRow(**values)


def make_three_rows() -> list[ReportRow]:
    return [
        make_row(),
        make_row(
            driver2_number="C26-000042",
            kind="credit_note",
            issue_date="2026-03-05",
            gross_total="-12.50",
            forced=True,
            invoice_id=302,
            updated_at="2026-03-05T09:30:00+01:00",
        ),
        make_row(
            driver2_number="F26-004712",
            issue_date="2026-03-06",
            customer_no="C2002",
            customer_name=HYPERLINK,
            planmanager_file="PM-2026-0050",
            outcome=Outcome.CLIENT_UNKNOWN,
            reason=UNKNOWN_REASON,
            gross_total="310.00",
            dossier_id=50,
            client_id=None,
            invoice_id=None,
            updated_at="2026-03-06T08:00:00+01:00",
        ),
    ]


def summarise(rows, run_id: str = RUN_ID) -> RunSummary:
    return RunSummary.from_rows(
        rows, dag_id=DAG_ID, run_id=run_id, started_at=STARTED, finished_at=FINISHED
    )


def read_sheet(workbook, name: str) -> list[tuple]:
    return list(workbook[name].iter_rows(values_only=True))


@pytest.fixture
def fresh_object_stores(monkeypatch):
    """Forget the filesystems Airflow attached earlier in this process.

    Airflow keeps one attached store per protocol and connection id for the life of the process,
    built from the connection as it was at first use; each test here brings its own connection.
    """
    from airflow.sdk.io import store

    monkeypatch.setattr(store, "_STORE_CACHE", {})


@pytest.fixture(scope="module")
def s3_endpoint():
    """Yield the URL of a moto S3 server on loopback, started for this module."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"moto server on port {port} did not answer")
            time.sleep(0.1)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def reports_storage(s3_endpoint, monkeypatch, fresh_object_stores):
    """Point the `reports_storage` connection at moto and return a boto3 client for checking."""
    connection = {
        "conn_type": "aws",
        "login": "moto-access-key",
        "password": "moto-secret-key",
        "extra": {"endpoint_url": s3_endpoint, "region_name": "eu-west-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_REPORTS_STORAGE", json.dumps(connection))
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="moto-access-key",
        aws_secret_access_key="moto-secret-key",
        region_name="eu-west-1",
    )


@pytest.mark.parametrize(
    ("run_id", "folder"),
    [
        (RUN_ID, RUN_FOLDER),
        ("scheduled__2026-03-29T00:00:00+00:00", "scheduled__2026-03-29T00_00_00_00_00"),
        ("Liège run/1 é", "Li_ge_run_1__"),
        ("keep.this-one_9", "keep.this-one_9"),
    ],
)
def test_report_folder_name_replaces_every_character_outside_the_safe_set(run_id, folder):
    assert report_folder_name(run_id) == folder


@pytest.mark.parametrize("url", [None, "", "   "])
def test_reports_base_defaults_to_reports_under_airflow_home(url):
    base = resolve_reports_base(url, "/opt/airflow/")

    assert (base.protocol, base.path, base.conn_id) == ("file", "/opt/airflow/reports", None)


def test_reports_base_keeps_a_file_url_as_given():
    base = resolve_reports_base("file:///data/driver2/reports", "/opt/airflow")

    assert (base.protocol, base.path, base.conn_id) == ("file", "/data/driver2/reports", None)


def test_reports_base_reaches_s3_through_the_reports_storage_connection(
    monkeypatch, fresh_object_stores
):
    # Making the path looks the connection up; a fixed one keeps boto3 from probing elsewhere.
    connection = {"conn_type": "aws", "login": "key", "password": "secret"}
    monkeypatch.setenv("AIRFLOW_CONN_REPORTS_STORAGE", json.dumps(connection))

    base = resolve_reports_base("s3://body-shop-reports/driver2", "/opt/airflow")

    assert (base.protocol, base.bucket, base.key, base.conn_id) == (
        "s3",
        "body-shop-reports",
        "driver2",
        "reports_storage",
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://files.example/reports", "ftp:// is not supported"),
        ("/data/reports", "a bare path needs file://"),
        ("s3://", "names no bucket"),
        ("file://relative/reports", "must name an absolute folder"),
        ("s3://AKIAEXAMPLE:hunter2@bucket/reports", "must not carry a user or key"),
    ],
)
def test_reports_base_refuses_other_urls_without_echoing_them(url, message):
    with pytest.raises(ValueError, match=message) as raised:
        resolve_reports_base(url, "/opt/airflow")

    assert "hunter2" not in str(raised.value)


def test_reports_base_refuses_a_relative_airflow_home():
    with pytest.raises(ValueError, match="AIRFLOW_HOME must be an absolute path"):
        resolve_reports_base(None, "airflow")


def test_summary_counts_every_outcome_and_gross_imported_per_currency():
    rows = [
        *make_three_rows(),
        make_row(outcome=Outcome.REIMPORTED, gross_total="100.10", currency="USD"),
        make_row(outcome=Outcome.INVALID, gross_total="12,50", currency="EUR"),
    ]

    summary = summarise(rows)

    assert summary.as_dict() == {
        "dag_id": DAG_ID,
        "run_id": RUN_ID,
        "started_at": "2026-03-29T01:15:00+00:00",
        "finished_at": "2026-03-29T01:17:03.500000+00:00",
        "duration_seconds": 123.5,
        "considered": 5,
        "imported": 3,
        "not_imported": 2,
        "counts": {
            "imported": 2,
            "reimported": 1,
            "invalid": 1,
            "skipped_draft": 0,
            "skipped_cancelled": 0,
            "already_imported": 0,
            "changed_after_import": 0,
            "dossier_not_found": 0,
            "client_not_in_dossier": 0,
            "client_unknown": 1,
            "not_found": 0,
            "failed": 0,
        },
        "gross_imported": {"EUR": "1222.06", "USD": "100.10"},
    }
    assert summary.log_line() == (
        "considered 5, imported 3, not imported 2 (invalid 1, client_unknown 1), 123.5 s"
    )
    assert RunSummary.from_dict(json.loads(json.dumps(summary.as_dict()))) == summary


def test_summary_counter_tallies_rows_one_at_a_time():
    counter = SummaryCounter()
    for row in make_three_rows():
        counter.add(row)

    summary = counter.summary(DAG_ID, RUN_ID, STARTED, FINISHED)

    assert (summary.considered, summary.imported, summary.not_imported) == (3, 2, 1)
    assert summary.gross_imported == {"EUR": Decimal("1222.06")}
    assert (
        summary.log_line() == "considered 3, imported 2, not imported 1 (client_unknown 1), 123.5 s"
    )


def test_report_csv_holds_the_rows_exactly_with_formulas_defused(tmp_path):
    rows = make_three_rows()

    folder = write_run_report(
        iter(rows), summarise(rows), resolve_reports_base(tmp_path.as_uri(), "/x"), DAG_ID, RUN_ID
    )

    run_folder = tmp_path / DAG_ID / RUN_FOLDER
    assert folder.path == str(run_folder)
    assert sorted(p.name for p in run_folder.iterdir()) == ["report.csv", "report.xlsx"]
    assert (run_folder / "report.csv").read_bytes() == EXPECTED_CSV.encode("utf-8")


def test_report_workbook_summary_sheet_comes_first_with_the_run_and_its_counts(tmp_path):
    rows = make_three_rows()

    write_run_report(
        iter(rows), summarise(rows), resolve_reports_base(tmp_path.as_uri(), "/x"), DAG_ID, RUN_ID
    )

    workbook = openpyxl.load_workbook(tmp_path / DAG_ID / RUN_FOLDER / "report.xlsx")
    assert workbook.sheetnames == ["Summary", "Invoices"]
    assert read_sheet(workbook, "Summary") == EXPECTED_SUMMARY_SHEET
    assert workbook["Summary"]["B26"].number_format == "#,##0.00"


def test_report_workbook_invoices_sheet_equals_the_csv_with_typed_cells(tmp_path):
    rows = make_three_rows()

    write_run_report(
        iter(rows), summarise(rows), resolve_reports_base(tmp_path.as_uri(), "/x"), DAG_ID, RUN_ID
    )

    run_folder = tmp_path / DAG_ID / RUN_FOLDER
    workbook = openpyxl.load_workbook(run_folder / "report.xlsx")
    sheet = workbook["Invoices"]
    assert read_sheet(workbook, "Invoices") == [
        tuple(ReportRow.columns()),
        ("F26-004711", "invoice", "final", "2026-03-02", "C1001", "Garage Dupont SA",
         "PM-2026-0042", "imported", None, 1234.56, "EUR", "false", 42, 7, 301,
         "2026-03-02T10:00:00+01:00"),
        ("C26-000042", "credit_note", "final", "2026-03-05", "C1001", "Garage Dupont SA",
         "PM-2026-0042", "imported", None, -12.5, "EUR", "true", 42, 7, 302,
         "2026-03-05T09:30:00+01:00"),
        ("F26-004712", "invoice", "final", "2026-03-06", "C2002", HYPERLINK,
         "PM-2026-0050", "client_unknown", UNKNOWN_REASON, 310, "EUR", "false", 50, None, None,
         "2026-03-06T08:00:00+01:00"),
    ]  # fmt: skip
    assert sheet["F4"].data_type == "s"
    assert [sheet[f"J{row}"].number_format for row in (2, 3, 4)] == ["#,##0.00"] * 3
    assert (sheet.freeze_panes, sheet.auto_filter.ref) == ("A2", "A1:P4")
    assert (sheet.column_dimensions["F"].width, sheet.column_dimensions["I"].width) == (34, 70)

    with (run_folder / "report.csv").open(encoding="utf-8", newline="") as report_csv:
        csv_header, *csv_rows = csv.reader(report_csv)
    sheet_header, *sheet_rows = read_sheet(workbook, "Invoices")
    assert list(sheet_header) == csv_header
    assert [as_csv_text(values) for values in sheet_rows] == [
        [text.removeprefix("'") for text in row] for row in csv_rows
    ]


def as_csv_text(values: tuple) -> list[str]:
    money = ReportRow.columns().index("gross_total")
    return [
        "" if value is None else f"{value:.2f}" if index == money else str(value)
        for index, value in enumerate(values)
    ]


def test_report_keeps_text_a_workbook_would_run_or_refuse_as_text(tmp_path):
    row = make_row(
        outcome=Outcome.INVALID,
        customer_name="@SUM(A1)\x0b",
        reason="-check totals.gross",
        gross_total="12,50",
        planmanager_file="#N/A",
    )

    write_run_report(
        [row], summarise([row]), resolve_reports_base(tmp_path.as_uri(), "/x"), DAG_ID, RUN_ID
    )

    run_folder = tmp_path / DAG_ID / RUN_FOLDER
    csv_row = (run_folder / "report.csv").read_bytes().decode("utf-8").split("\r\n")[1]
    assert csv_row == (
        "F26-004711,invoice,final,2026-03-02,C1001,'@SUM(A1)\x0b,#N/A,invalid,"
        '\'-check totals.gross,"12,50",EUR,false,42,7,301,2026-03-02T10:00:00+01:00'
    )
    sheet = openpyxl.load_workbook(run_folder / "report.xlsx")["Invoices"]
    assert [(cell.value, cell.data_type) for cell in sheet[2][5:10]] == [
        ("@SUM(A1)", "s"),
        ("#N/A", "s"),
        ("invalid", "s"),
        ("-check totals.gross", "s"),
        ("12,50", "s"),
    ]


def test_retried_run_overwrites_its_report_and_leaves_no_partial_files(tmp_path):
    base = resolve_reports_base(tmp_path.as_uri(), "/x")
    first = make_three_rows()
    write_run_report(iter(first), summarise(first), base, DAG_ID, RUN_ID)

    retry = first[:1]
    write_run_report(iter(retry), summarise(retry), base, DAG_ID, RUN_ID)

    run_folder = tmp_path / DAG_ID / RUN_FOLDER
    assert sorted(p.name for p in run_folder.iterdir()) == ["report.csv", "report.xlsx"]
    assert (run_folder / "report.csv").read_bytes() == (HEADER + CSV_INVOICE).encode("utf-8")
    workbook = openpyxl.load_workbook(run_folder / "report.xlsx")
    assert len(read_sheet(workbook, "Invoices")) == 2


@pytest.mark.slow
def test_report_of_50000_rows_streams_them_without_keeping_them(tmp_path):
    outcomes = list(Outcome)
    alive_at_end = []

    def generate_rows():
        # Weak references tell whether the reader still holds rows it was given: at the end only
        # the last one, still bound to its loop variable, may be alive.
        given = []
        for number in range(50_000):
            row = make_row(
                driver2_number=f"F26-{number:06d}",
                outcome=outcomes[number % len(outcomes)],
                gross_total=f"{number % 1000}.{number % 100:02d}",
            )
            given.append(weakref.ref(row))
            yield row
            del row
        alive_at_end.append(sum(1 for ref in given if ref() is not None))

    summary = summarise(generate_rows())
    started = time.monotonic()

    folder = write_run_report(
        generate_rows(), summary, resolve_reports_base(tmp_path.as_uri(), "/x"), DAG_ID, RUN_ID
    )

    elapsed = time.monotonic() - started
    assert alive_at_end == [1, 1]
    assert summary.considered == 50_000
    assert summary.imported == 8_334
    report_csv = tmp_path / DAG_ID / RUN_FOLDER / "report.csv"
    with report_csv.open(encoding="utf-8", newline="") as lines:
        assert sum(1 for _ in lines) == 50_001
    # Reading 800,000 cells back through openpyxl would take longer than writing them.
    with zipfile.ZipFile(f"{folder.path}/report.xlsx") as workbook:
        invoices_xml = workbook.read("xl/worksheets/sheet2.xml")
    assert invoices_xml.count(b"<row ") == 50_001
    assert b'<autoFilter ref="A1:P50001"/>' in invoices_xml
    # openpyxl writes some 60,000 cells a second here; the bound only catches a pathology.
    assert elapsed < 90, f"50,000 rows took {elapsed:.1f} s"


def test_report_goes_to_s3_through_the_reports_storage_connection(reports_storage):
    reports_storage.create_bucket(
        Bucket="body-shop-reports", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    rows = make_three_rows()
    base = resolve_reports_base("s3://body-shop-reports/driver2", "/opt/airflow")

    folder = write_run_report(iter(rows), summarise(rows), base, DAG_ID, RUN_ID)

    prefix = f"driver2/{DAG_ID}/{RUN_FOLDER}/"
    assert str(folder) == f"s3://reports_storage@body-shop-reports/{prefix.rstrip('/')}"
    listing = reports_storage.list_objects_v2(Bucket="body-shop-reports")
    assert sorted(item["Key"] for item in listing["Contents"]) == [
        prefix + "report.csv",
        prefix + "report.xlsx",
    ]
    report_csv = reports_storage.get_object(Bucket="body-shop-reports", Key=prefix + "report.csv")
    assert report_csv["Body"].read() == EXPECTED_CSV.encode("utf-8")
    assert report_csv["ContentType"] == "text/csv"
    report_xlsx = reports_storage.get_object(Bucket="body-shop-reports", Key=prefix + "report.xlsx")
    workbook = openpyxl.load_workbook(io.BytesIO(report_xlsx["Body"].read()))
    assert read_sheet(workbook, "Summary") == EXPECTED_SUMMARY_SHEET
    assert read_sheet(workbook, "Invoices")[3][5] == HYPERLINK


def test_retried_run_overwrites_its_report_on_s3(reports_storage):
    reports_storage.create_bucket(
        Bucket="retried-reports", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    base = resolve_reports_base("s3://retried-reports", "/opt/airflow")
    first = make_three_rows()
    write_run_report(iter(first), summarise(first), base, DAG_ID, RUN_ID)

    retry = first[1:2]
    write_run_report(iter(retry), summarise(retry), base, DAG_ID, RUN_ID)

    prefix = f"{DAG_ID}/{RUN_FOLDER}/"
    listing = reports_storage.list_objects_v2(Bucket="retried-reports")
    assert sorted(item["Key"] for item in listing["Contents"]) == [
        prefix + "report.csv",
        prefix + "report.xlsx",
    ]
    report_csv = reports_storage.get_object(Bucket="retried-reports", Key=prefix + "report.csv")
    assert report_csv["Body"].read() == (HEADER + CSV_CREDIT_NOTE).encode("utf-8")


def test_report_whose_rows_disagree_with_the_summary_is_written_with_a_warning(tmp_path, caplog):
    rows = make_three_rows()

    with caplog.at_level(logging.WARNING, logger="driver2_sync.report"):
        write_run_report(
            rows[:2], summarise(rows), resolve_reports_base(tmp_path.as_uri(), "/x"), DAG_ID, RUN_ID
        )

    assert [record.getMessage() for record in caplog.records] == [
        f"Report of {RUN_ID} holds outcomes {{'imported': 2}}, but the run summary says "
        "{'imported': 2, 'client_unknown': 1}"
    ]
    report_csv = tmp_path / DAG_ID / RUN_FOLDER / "report.csv"
    assert report_csv.read_bytes() == (HEADER + CSV_INVOICE + CSV_CREDIT_NOTE).encode("utf-8")


def test_report_for_another_run_than_its_summary_is_refused(tmp_path):
    rows = make_three_rows()

    with pytest.raises(ValueError, match="cannot go into the report of"):
        write_run_report(
            rows,
            summarise(rows, run_id="manual__other"),
            resolve_reports_base(tmp_path.as_uri(), "/x"),
            DAG_ID,
            RUN_ID,
        )
    assert not (tmp_path / DAG_ID).exists()

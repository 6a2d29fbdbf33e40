"""The run report: report.csv for machines and report.xlsx for people, one folder per run.

Rows are streamed, never held: a run of 200,000 invoices writes in constant memory.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import ObjectStoragePath
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ERROR_CODES, ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from driver2_sync.outcomes import Outcome, ReportRow
from driver2_sync.settings import REPORTS_STORAGE_CONN_ID, REPORTS_URL_VARIABLE

log = logging.getLogger(__name__)

CSV_NAME = "report.csv"
XLSX_NAME = "report.xlsx"
SUMMARY_SHEET = "Summary"
INVOICES_SHEET = "Invoices"
MONEY_FORMAT = "#,##0.00"
PROGRESS_EVERY = 50_000

_UNSAFE_FOLDER_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")
# A plain decimal such as "-12.50" is a number to a spreadsheet, not the start of a formula.
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
# A spreadsheet opening the CSV evaluates a cell that starts with one of these (OWASP's list).
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_IMPORT_OUTCOMES = frozenset(outcome.value for outcome in Outcome if outcome.is_import)
_LOCAL_PROTOCOLS = ("file", "local")
_MONEY_COLUMNS = frozenset({"gross_total"})
_BOLD = Font(bold=True)
_DEFAULT_WIDTH = 14
_COLUMN_WIDTHS = {
    "driver2_number": 16,
    "kind": 12,
    "status": 10,
    "issue_date": 12,
    "customer_no": 14,
    "customer_name": 34,
    "planmanager_file": 17,
    "outcome": 22,
    "reason": 70,
    "gross_total": 14,
    "currency": 9,
    "forced": 8,
    "dossier_id": 11,
    "client_id": 10,
    "invoice_id": 11,
    "updated_at": 27,
}


class ReportNotWritten(Exception):
    """The report files could not be put where reports go; the message says where and why."""


@dataclass(frozen=True)
class RunSummary:
    """What one run did: how many invoices it considered, their outcomes, what it imported."""

    dag_id: str
    run_id: str
    started_at: datetime
    finished_at: datetime
    counts: dict[str, int]
    gross_imported: dict[str, Decimal]

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[ReportRow],
        *,
        dag_id: str,
        run_id: str,
        started_at: datetime,
        finished_at: datetime,
    ) -> RunSummary:
        """Return the summary of rows, read once."""
        counter = SummaryCounter()
        for row in rows:
            counter.add(row)
        return counter.summary(dag_id, run_id, started_at, finished_at)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        """Return the summary that `as_dict` gave, e.g. after an XCom round trip."""
        return cls(
            dag_id=data["dag_id"],
            run_id=data["run_id"],
            started_at=datetime.fromisoformat(data["started_at"]),
            finished_at=datetime.fromisoformat(data["finished_at"]),
            counts={outcome: int(count) for outcome, count in data["counts"].items()},
            gross_imported={
                currency: Decimal(total) for currency, total in data["gross_imported"].items()
            },
        )

    @property
    def considered(self) -> int:
        return sum(self.counts.values())

    @property
    def imported(self) -> int:
        return sum(count for outcome, count in self.counts.items() if outcome in _IMPORT_OUTCOMES)

    @property
    def not_imported(self) -> int:
        return self.considered - self.imported

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def outcome_counts(self) -> dict[str, int]:
        """Return the count of every outcome, zeros included, in `Outcome` order."""
        counts = {outcome.value: 0 for outcome in Outcome}
        counts.update(self.counts)
        return counts

    def as_dict(self) -> dict[str, Any]:
        """Return the summary in JSON-friendly form (money as decimal strings)."""
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_seconds": round(self.duration_seconds, 3),
            "considered": self.considered,
            "imported": self.imported,
            "not_imported": self.not_imported,
            "counts": self.outcome_counts(),
            "gross_imported": {
                currency: str(total) for currency, total in sorted(self.gross_imported.items())
            },
        }

    def log_line(self) -> str:
        """Return the run in one line: considered, imported, not imported by outcome, seconds."""
        reasons = ", ".join(
            f"{outcome} {count}"
            for outcome, count in self.outcome_counts().items()
            if count and outcome not in _IMPORT_OUTCOMES
        )
        not_imported = f"not imported {self.not_imported}" + (f" ({reasons})" if reasons else "")
        return (
            f"considered {self.considered}, imported {self.imported}, {not_imported}, "
            f"{self.duration_seconds:.1f} s"
        )


class SummaryCounter:
    """Tallies report rows as they stream past, so that no caller needs to keep them."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {outcome.value: 0 for outcome in Outcome}
        self.gross_imported: dict[str, Decimal] = {}

    @property
    def considered(self) -> int:
        return sum(self.counts.values())

    def add(self, row: ReportRow) -> None:
        """Count one row's outcome and, when it was imported, its gross total."""
        outcome = str(row.outcome)
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if outcome not in _IMPORT_OUTCOMES:
            return

        if not _PLAIN_NUMBER.fullmatch(row.gross_total):
            # An imported invoice passed the contract check, so this is a bug upstream; the report
            # is still worth writing, with the total marked short in the log.
            log.warning(
                "Invoice %s is imported with gross total %r, left out of the report's totals",
                row.driver2_number,
                row.gross_total,
            )
            return
        total = self.gross_imported.get(row.currency, Decimal(0))
        self.gross_imported[row.currency] = total + Decimal(row.gross_total)

    def summary(
        self, dag_id: str, run_id: str, started_at: datetime, finished_at: datetime
    ) -> RunSummary:
        """Return the run summary of the rows counted so far."""
        return RunSummary(
            dag_id=dag_id,
            run_id=run_id,
            started_at=started_at,
            finished_at=finished_at,
            counts=dict(self.counts),
            gross_imported=dict(self.gross_imported),
        )


def report_folder_name(run_id: str) -> str:
    """Return the run id with every character outside A-Za-z0-9._- replaced by '_'."""
    return _UNSAFE_FOLDER_CHARACTERS.sub("_", run_id)


def resolve_reports_base(
    url: str | None, airflow_home: str, conn_id: str = REPORTS_STORAGE_CONN_ID
) -> ObjectStoragePath:
    """Return where reports go, from the `driver2_reports_url` Variable's value.

    None or blank means `file://<airflow_home>/reports`; `s3://bucket/prefix` is reached through
    the connection `conn_id`. Airflow looks that connection up and builds its filesystem as the
    path is made, so call this while a task runs, not while a DAG file is parsed.

    :raises ValueError: for any other URL, a relative path, or credentials inside the URL.
    """
    url = (url or "").strip()
    if not url:
        if not os.path.isabs(airflow_home):
            raise ValueError(f"AIRFLOW_HOME must be an absolute path, not {airflow_home!r}")
        return ObjectStoragePath(f"file://{airflow_home.rstrip('/')}/reports")

    # The messages name the scheme only: a URL pasted with a key in it must not reach the logs.
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if "@" in parts.netloc:
            raise ValueError(
                f"{REPORTS_URL_VARIABLE} must not carry a user or key: an s3:// URL takes its "
                f"credentials and endpoint from the {conn_id!r} connection"
            )
        if not parts.netloc:
            raise ValueError(f"{REPORTS_URL_VARIABLE} names no bucket: use s3://bucket/prefix")
        return ObjectStoragePath(parts.geturl(), conn_id=conn_id)
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(
                f"{REPORTS_URL_VARIABLE} must name an absolute folder: file:///path/to/reports"
            )
        return ObjectStoragePath(parts.geturl())
    problem = f"{parts.scheme}:// is not supported" if parts.scheme else "a bare path needs file://"
    raise ValueError(
        f"{REPORTS_URL_VARIABLE} must be file:///path/to/reports or s3://bucket/prefix; {problem}"
    )


def write_run_report(
    rows: Iterable[ReportRow],
    summary: RunSummary,
    base: ObjectStoragePath,
    dag_id: str,
    run_id: str,
) -> ObjectStoragePath:
    """Write report.csv and report.xlsx under `<base>/<dag_id>/<run folder>/`; return the folder.

    `rows` is read once, as it comes. Each file appears whole or not at all, and a retried run
    overwrites what an earlier attempt wrote.

    :raises ValueError: when `summary` belongs to another run than `dag_id` and `run_id`.
    """
    if (summary.dag_id, summary.run_id) != (dag_id, run_id):
        raise ValueError(
            f"the summary of {summary.dag_id}/{summary.run_id} cannot go into "
            f"the report of {dag_id}/{run_id}"
        )
    folder = base / dag_id / report_folder_name(run_id)

    with tempfile.TemporaryDirectory(prefix="driver2-report-") as scratch:
        csv_file = Path(scratch, CSV_NAME)
        xlsx_file = Path(scratch, XLSX_NAME)
        written = write_report_files(rows, summary, csv_file, xlsx_file)
        try:
            # report.csv last: whoever waits for it finds the workbook already in place.
            publish_file(xlsx_file, folder / XLSX_NAME)
            publish_file(csv_file, folder / CSV_NAME)
        except Exception as error:
            raise ReportNotWritten(
                f"The report could not be written to {folder} ({type(error).__name__}:"
                f" {str(error).splitlines()[0][:200] if str(error) else 'no detail'}). Check the"
                f" '{REPORTS_URL_VARIABLE}' Variable, and for s3:// the"
                f" '{REPORTS_STORAGE_CONN_ID}' connection."
            ) from error

    if _nonzero(written.counts) != _nonzero(summary.counts):
        log.warning(
            "Report of %s holds outcomes %s, but the run summary says %s",
            run_id,
            _nonzero(written.counts),
            _nonzero(summary.counts),
        )
    log.info("Report of %s written to %s: %s", run_id, folder, summary.log_line())
    return folder


def write_report_files(
    rows: Iterable[ReportRow], summary: RunSummary, csv_file: Path, xlsx_file: Path
) -> SummaryCounter:
    """Write both report files on local disk in one pass over rows; return the rows' tally."""
    columns = ReportRow.columns()
    values_of = attrgetter(*columns)
    money = [column in _MONEY_COLUMNS for column in columns]
    counter = SummaryCounter()

    workbook = Workbook(write_only=True)
    fill_summary_sheet(workbook.create_sheet(SUMMARY_SHEET), summary)
    invoices_sheet = workbook.create_sheet(INVOICES_SHEET)
    start_invoices_sheet(invoices_sheet, columns)

    with csv_file.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        written = 0
        for written, row in enumerate(rows, start=1):
            values = values_of(row)
            writer.writerow([format_csv_cell(value) for value in values])
            invoices_sheet.append(
                [
                    make_xlsx_cell(invoices_sheet, value, is_money)
                    for value, is_money in zip(values, money, strict=True)
                ]
            )
            counter.add(row)
            if written % PROGRESS_EVERY == 0:
                log.info("Report of %s: %d rows written", summary.run_id, written)

    # A write-only sheet takes its filter up to the end, when the last row is known.
    invoices_sheet.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{written + 1}"
    workbook.save(xlsx_file)
    return counter


def start_invoices_sheet(sheet, columns: list[str]) -> None:
    """Set widths and the frozen header, which a write-only sheet takes only before its rows."""
    for index, column in enumerate(columns, start=1):
        width = _COLUMN_WIDTHS.get(column, _DEFAULT_WIDTH)
        sheet.column_dimensions[get_column_letter(index)].width = width
    sheet.freeze_panes = "A2"
    sheet.append([make_bold_cell(sheet, column) for column in columns])


def fill_summary_sheet(sheet, summary: RunSummary) -> None:
    """Write the run, its outcome counts and the gross imported per currency."""
    sheet.column_dimensions["A"].width = 24
    sheet.column_dimensions["B"].width = 40

    sheet.append([make_bold_cell(sheet, "Run id"), make_xlsx_cell(sheet, summary.run_id)])
    sheet.append([make_bold_cell(sheet, "DAG id"), make_xlsx_cell(sheet, summary.dag_id)])
    sheet.append([make_bold_cell(sheet, "Started"), _format_moment(summary.started_at)])
    sheet.append([make_bold_cell(sheet, "Finished"), _format_moment(summary.finished_at)])
    sheet.append([make_bold_cell(sheet, "Duration (s)"), round(summary.duration_seconds, 1)])
    sheet.append([])

    sheet.append([make_bold_cell(sheet, "Outcome"), make_bold_cell(sheet, "Invoices")])
    for outcome, count in summary.outcome_counts().items():
        sheet.append([make_xlsx_cell(sheet, outcome), count])
    sheet.append([])

    sheet.append([make_bold_cell(sheet, "Considered"), summary.considered])
    sheet.append([make_bold_cell(sheet, "Imported"), summary.imported])
    sheet.append([make_bold_cell(sheet, "Not imported"), summary.not_imported])
    sheet.append([])

    sheet.append([make_bold_cell(sheet, "Currency"), make_bold_cell(sheet, "Gross imported")])
    for currency, total in sorted(summary.gross_imported.items()):
        sheet.append([make_xlsx_cell(sheet, currency), make_money_cell(sheet, total)])


def format_csv_cell(value: Any) -> str:
    """Return a report value as CSV text that a spreadsheet opening the file shows, never runs."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text.startswith(_FORMULA_TRIGGERS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def make_xlsx_cell(sheet, value: Any, is_money: bool = False) -> Any:
    """Return a report value as a workbook cell: money a number, text always text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    text = str(value)
    if is_money and _PLAIN_NUMBER.fullmatch(text):
        return make_money_cell(sheet, Decimal(text))

    # openpyxl refuses control characters outright and would store "=…" as a formula and
    # "#N/A" as an error; Driver2 text is shown as typed, minus what a workbook cannot hold.
    text = ILLEGAL_CHARACTERS_RE.sub("", text)
    if text.startswith("=") or text in ERROR_CODES:
        cell = WriteOnlyCell(sheet, value=text)
        cell.data_type = "s"
        return cell
    return text


def make_money_cell(sheet, amount: Decimal) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=amount)
    cell.number_format = MONEY_FORMAT
    return cell


def make_bold_cell(sheet, text: str) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=text)
    cell.data_type = "s"
    cell.font = _BOLD
    return cell


def publish_file(local: Path, target: ObjectStoragePath) -> None:
    """Put a finished local file at target, so that a reader sees the old file or the new one."""
    if target.protocol in _LOCAL_PROTOCOLS:
        folder = Path(target.parent.path)
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{target.name}.partial"
        shutil.copyfile(local, partial)
        os.replace(partial, folder / target.name)
        return

    # An object store shows an object only once its upload completes, and s3fs aborts a failed
    # multipart upload; writing through target.open() instead would commit a half file on error.
    target.fs.put_file(str(local), target.path)


def _format_moment(moment: datetime) -> str:
    # A workbook date cannot hold an offset, and the offset matters here.
    return moment.isoformat(timespec="seconds")


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {outcome: count for outcome, count in counts.items() if count}

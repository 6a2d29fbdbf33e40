"""The steps of the invoice sync, callable without a scheduler: extract, match, load, report.

Each step reads the previous step's staging files and writes its own, so a retried task redoes
only its own work; the PlanManager side is made safe to redo by the load's bookkeeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from driver2_sync.identity import normalise_dossier_number
from driver2_sync.invoice import InvalidInvoice, parse_invoice, peek_identity
from driver2_sync.matching import (
    ClientIndex,
    Decision,
    decide_before_lookup,
    decide_client,
    decide_for_imported,
    dossier_not_found,
    failed,
    invalid,
)
from driver2_sync.outcomes import Outcome, ReportRow
from driver2_sync.planmanager_rows import invoice_header_row, invoice_line_rows
from driver2_sync.settings import BATCH_SIZE
from driver2_sync.staging import RunStaging
from driver2_sync.store import PlanManagerStore, is_unreachable

log = logging.getLogger(__name__)

EXTRACT, MATCH, LOAD = "extract", "match", "load"


def extract_driver2(
    client,
    store: PlanManagerStore,
    staging: RunStaging,
    state_name: str,
    page_size: int = 500,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Stage every Driver2 invoice changed since the last successful run, once, latest version.

    Returns the extract manifest: parts, counts and the watermark the run will commit. The
    watermark is the latest updated_at not after `now` (by default, when the last page came):
    a document dated later, by a clock ahead or a typing fault, is staged like any other but
    read again by the next runs until its date has passed, instead of making them skip every
    change made before it.
    """
    store.ensure_sync_tables()
    state = store.read_sync_state(state_name)
    log.info(
        "Reading Driver2 invoices changed since %s",
        state.watermark.isoformat() if state.watermark else "the beginning (first run)",
    )

    started = time.monotonic()
    latest: dict[str, tuple[datetime | None, int, int]] = {}
    page_names: list[str] = []
    received = dropped_at_boundary = 0
    for page_no, page in enumerate(client.iter_invoice_pages(state.watermark, page_size)):
        page_names.append(staging.write_part("raw", page_no, page.items))
        for index, document in enumerate(page.items):
            received += 1
            number, updated_at = peek_identity(document)
            if (
                number in state.boundary_numbers
                and updated_at is not None
                and updated_at == state.watermark
            ):
                dropped_at_boundary += 1
                continue
            key = number or f"#{page_no}:{index}"
            seen = latest.get(key)
            if seen is None or updated_at is None or seen[0] is None or updated_at >= seen[0]:
                latest[key] = (updated_at, page_no, index)

    now = now or datetime.now(UTC)
    parts, watermark, boundary, ahead = _stage_latest_versions(staging, page_names, latest, now)
    if ahead:
        log.warning(
            "%d invoice(s) have an updated_at after %s, when Driver2 was read: they do not"
            " move the next run's starting point, which reads them again",
            ahead,
            now.isoformat(),
        )
    manifest = {
        "parts": parts,
        "considered": len(latest),
        "received": received,
        "seen_again": received - dropped_at_boundary - len(latest),
        "dropped_at_boundary": dropped_at_boundary,
        "previous_watermark": state.watermark.isoformat() if state.watermark else None,
        "watermark": watermark.isoformat() if watermark else None,
        "boundary_numbers": sorted(boundary),
        "dated_after_reading": ahead,
    }
    staging.write_manifest(EXTRACT, manifest)
    log.info(
        "Extracted %d invoice(s) from %d document(s) in %.1f s (%d seen again while paging,"
        " %d already considered by the last run)",
        len(latest),
        received,
        time.monotonic() - started,
        manifest["seen_again"],
        dropped_at_boundary,
    )
    return manifest


def _stage_latest_versions(
    staging: RunStaging, page_names: list[str], latest: dict[str, tuple], now: datetime
) -> tuple[list[str], datetime | None, set[str], int]:
    wanted = {(page_no, index) for _, page_no, index in latest.values()}
    watermark: datetime | None = None
    boundary: set[str] = set()
    ahead = 0
    parts: list[str] = []
    batch: list[Any] = []
    for page_no, name in enumerate(page_names):
        for index, document in enumerate(staging.read_part(name)):
            if (page_no, index) not in wanted:
                continue
            batch.append(document)
            number, updated_at = peek_identity(document)
            if updated_at is not None and updated_at > now:
                ahead += 1
            elif updated_at is not None and number is not None:
                if watermark is None or updated_at > watermark:
                    watermark, boundary = updated_at, {number}
                elif updated_at == watermark:
                    boundary.add(number)
            if len(batch) == BATCH_SIZE:
                parts.append(staging.write_part(EXTRACT, len(parts), batch))
                batch = []
    if batch:
        parts.append(staging.write_part(EXTRACT, len(parts), batch))
    return parts, watermark, boundary, ahead


def match_clients(store: PlanManagerStore, staging: RunStaging) -> dict[str, Any]:
    """Decide every staged invoice's outcome up to the client check, batch by batch."""
    extract_manifest = staging.read_manifest(EXTRACT)
    started = time.monotonic()
    client_index = ClientIndex(store.iter_clients())
    log.info("Indexed %d PlanManager client(s)", client_index.size)

    parts, counts = [], {}
    for part_no, name in enumerate(extract_manifest["parts"]):
        documents = list(staging.read_part(name))
        decisions = decide_batch(store, client_index, documents)
        records = [
            {"document": document, **_decision_record(decision)}
            for document, decision in zip(documents, decisions, strict=True)
        ]
        parts.append(staging.write_part(MATCH, part_no, records))
        for decision in decisions:
            counts[decision.outcome.value] = counts.get(decision.outcome.value, 0) + 1
        log.info(
            "Matched batch %d of %d: %d invoice(s), %.0f/s",
            part_no + 1,
            len(extract_manifest["parts"]),
            len(documents),
            sum(counts.values()) / max(time.monotonic() - started, 1e-6),
        )
    manifest = {"parts": parts, "counts": counts}
    staging.write_manifest(MATCH, manifest)
    return manifest


def decide_batch(
    store: PlanManagerStore,
    client_index: ClientIndex,
    documents: list[Any],
    *,
    dossier_override: str | None = None,
) -> list[Decision]:
    """Return the outcome of each document per the contract's rules 1 to 5, in order.

    `dossier_override` takes the place of each invoice's planmanager_file (a custom import).
    """
    decisions: list[Decision | None] = [None] * len(documents)
    invoices: dict[int, Any] = {}
    for position, document in enumerate(documents):
        try:
            invoice = parse_invoice(document)
        except InvalidInvoice as error:
            decisions[position] = invalid(peek_identity(document)[0], str(error))
            continue
        invoices[position] = invoice
        decisions[position] = decide_before_lookup(invoice)

    pending = [position for position in invoices if decisions[position] is None]
    imported = store.find_imported(invoices[position].number for position in pending)
    for position in pending:
        if invoices[position].number in imported:
            decisions[position] = decide_for_imported(
                invoices[position], imported[invoices[position].number]
            )

    pending = [position for position in pending if decisions[position] is None]
    wanted = {
        position: normalise_dossier_number(
            dossier_override if dossier_override is not None
            else invoices[position].planmanager_file
        )
        for position in pending
    }  # fmt: skip
    dossiers = store.find_dossiers(number for number in wanted.values() if number)
    parties = store.find_dossier_parties(dossier.id for dossier in dossiers.values())
    for position in pending:
        invoice = invoices[position]
        dossier = dossiers.get(wanted[position])
        try:
            if dossier is None:
                decisions[position] = dossier_not_found(invoice, wanted[position])
            else:
                decisions[position] = decide_client(
                    invoice, dossier, parties.get(dossier.id, set()), client_index
                )
        except Exception as error:  # one invoice's surprise must not stop its batch
            log.exception("Matching %s failed", invoice.number)
            decisions[position] = failed(f"{type(error).__name__}: {error}")
    return decisions  # type: ignore[return-value]


def load_invoices(store: PlanManagerStore, staging: RunStaging, run_id: str) -> dict[str, Any]:
    """Import the invoices that passed the client check, one transaction per batch.

    The transaction also records which invoices this run imported, so a retried task neither
    imports twice nor reports its own earlier imports as already imported.
    """
    match_manifest = staging.read_manifest(MATCH)
    started = time.monotonic()
    parts, imported_total = [], 0
    for part_no, name in enumerate(match_manifest["parts"]):
        records = list(staging.read_part(name))
        results = import_batch(store, run_id, records)
        rows = [
            report_row(record["document"], results.get(position, _record_decision(record)))
            for position, record in enumerate(records)
        ]
        imported_now = sum(1 for row in rows if row["outcome"] == Outcome.IMPORTED)
        imported_total += imported_now
        parts.append(staging.write_part(LOAD, part_no, rows))
        log.info(
            "Loaded batch %d of %d: %d imported, %d not imported (%.1f s so far)",
            part_no + 1,
            len(match_manifest["parts"]),
            imported_now,
            len(rows) - imported_now,
            time.monotonic() - started,
        )
    manifest = {"parts": parts, "imported": imported_total}
    staging.write_manifest(LOAD, manifest)
    return manifest


def import_batch(store: PlanManagerStore, run_id: str, records: list[dict]) -> dict[int, Decision]:
    """Import a batch's importable records in one transaction; return decisions by position.

    When the batch cannot commit for a reason other than a lost race, each invoice is tried in
    a transaction of its own, so one bad invoice ends as `failed` and the others go on. When
    PlanManager cannot be reached, it raises: reported `failed`, the invoices would be left
    behind for good, since the watermark moves past them at the end of the run.
    """
    positions = [
        position
        for position, record in enumerate(records)
        if record["outcome"] == Outcome.IMPORTED.value
    ]
    if not positions:
        return {}
    try:
        return store.run_in_transaction(
            lambda conn: _import_positions(store, conn, run_id, records, positions),
            what=f"importing a batch of {len(positions)} invoice(s)",
        )
    except Exception as error:
        _raise_when_unreachable(error)
        log.warning(
            "A batch of %d invoice(s) could not be imported together (%s); importing one by one",
            len(positions),
            type(error).__name__,
        )

    results: dict[int, Decision] = {}
    for position in positions:
        number = records[position]["document"].get("number")
        try:
            results.update(
                store.run_in_transaction(
                    lambda conn, p=position: _import_positions(store, conn, run_id, records, [p]),
                    what=f"importing {number}",
                )
            )
        except Exception as error:
            _raise_when_unreachable(error)
            log.warning("Invoice %s not imported: %s", number, type(error).__name__)
            results[position] = failed(f"{type(error).__name__}: {str(error)[:300]}")
    return results


def _raise_when_unreachable(error: Exception) -> None:
    if is_unreachable(error):
        log.error("PlanManager cannot be reached; the load stops here and its retry resumes it")
        raise error


def _import_positions(store, conn, run_id, records, positions) -> dict[int, Decision]:
    invoices = {position: parse_invoice(records[position]["document"]) for position in positions}
    numbers = [invoice.number for invoice in invoices.values()]
    done_by_this_run = store.find_run_imports(run_id, numbers, conn)
    imported_before = store.find_imported(numbers, conn)

    results: dict[int, Decision] = {}
    headers, lines = [], []
    for position, invoice in invoices.items():
        record = records[position]
        if invoice.number in done_by_this_run:
            invoice_id, _ = done_by_this_run[invoice.number]
            results[position] = Decision(
                Outcome.IMPORTED, "", record["dossier_id"], record["client_id"], invoice_id
            )
        elif invoice.number in imported_before:
            # Imported since the match step, by a custom import or another run.
            results[position] = decide_for_imported(invoice, imported_before[invoice.number])
        else:
            headers.append(
                invoice_header_row(invoice, record["dossier_id"], record["client_id"], forced=False)
            )
            lines.extend(invoice_line_rows(invoice))

    new_ids = store.insert_invoices(conn, headers, lines)
    store.record_run_imports(
        conn, run_id, {number: (invoice_id, "imported") for number, invoice_id in new_ids.items()}
    )
    for position, invoice in invoices.items():
        if invoice.number in new_ids:
            record = records[position]
            results[position] = Decision(
                Outcome.IMPORTED,
                "",
                record["dossier_id"],
                record["client_id"],
                new_ids[invoice.number],
            )
    return results


def iter_report_rows(staging: RunStaging) -> Iterator[ReportRow]:
    """Yield the run's report rows from the load step's staging files."""
    for name in staging.read_manifest(LOAD)["parts"]:
        for row in staging.read_part(name):
            yield ReportRow(**row)


def report_row(document: Any, decision: Decision, *, forced: bool = False) -> dict:
    """Return the report's row for one document and its decision, readable even when invalid."""
    doc = document if isinstance(document, dict) else {}
    customer = doc.get("customer") if isinstance(doc.get("customer"), dict) else {}
    totals = doc.get("totals") if isinstance(doc.get("totals"), dict) else {}
    gross = totals.get("gross")
    gross_text = _text(gross)
    if decision.outcome != Outcome.INVALID and doc.get("type") == "credit_note" and gross_text:
        gross_text = gross_text if gross_text.startswith("-") else f"-{gross_text}"
    number, updated_at = peek_identity(doc)
    return {
        "driver2_number": number or _text(doc.get("number"), 64),
        "kind": _text(doc.get("type")),
        "status": _text(doc.get("status")),
        "issue_date": _text(doc.get("issue_date")),
        "customer_no": _text(customer.get("customer_no")),
        "customer_name": _text(customer.get("name")),
        "planmanager_file": _text(doc.get("planmanager_file")),
        "outcome": decision.outcome.value,
        "reason": decision.reason.translate(_UNREPORTABLE),
        "gross_total": gross_text,
        "currency": _text(doc.get("currency")),
        "forced": forced and decision.outcome.is_import,
        "dossier_id": decision.dossier_id,
        "client_id": decision.client_id,
        "invoice_id": decision.invoice_id,
        "updated_at": updated_at.isoformat() if updated_at else _text(doc.get("updated_at")),
    }


# An invalid document's text reaches the report as Driver2 sent it. UTF-8 cannot encode a lone
# surrogate (a "\ud800" escape), the workbook's XML refuses C0 controls and U+FFFE/U+FFFF, and
# C1 controls show as nothing: each becomes U+FFFD, so the reader sees where something was.
_UNREPORTABLE = dict.fromkeys(
    [
        *range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0),
        *range(0xD800, 0xE000), 0xFFFE, 0xFFFF,
    ],
    "\ufffd",
)  # fmt: skip


def _text(value: Any, limit: int = 200) -> str:
    """Return a document's value as report text: at most `limit` characters, all reportable."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    # str() of a whole structure may be megabytes (10,000 lines), only to be cut to `limit`.
    if isinstance(value, dict | list):
        return f"(a JSON {'object' if isinstance(value, dict) else 'array'})"
    text = value if isinstance(value, str) else str(value)
    return text[:limit].translate(_UNREPORTABLE)


def _decision_record(decision: Decision) -> dict:
    return {
        "outcome": decision.outcome.value,
        "reason": decision.reason,
        "dossier_id": decision.dossier_id,
        "client_id": decision.client_id,
        "invoice_id": decision.invoice_id,
    }


def _record_decision(record: dict) -> Decision:
    return Decision(
        Outcome(record["outcome"]),
        record["reason"],
        record["dossier_id"],
        record["client_id"],
        record["invoice_id"],
    )


def write_report(
    rows_source, reports_base, *, dag_id: str, run_id: str, started_at: datetime | None
):
    """Write the run's report from `rows_source()`, an iterable read twice; return its summary.

    The first pass counts, so that the summary sheet can come first in the workbook.
    """
    from driver2_sync.report import RunSummary, write_run_report

    finished_at = datetime.now(UTC)
    summary = RunSummary.from_rows(
        rows_source(),
        dag_id=dag_id,
        run_id=run_id,
        started_at=started_at or finished_at,
        finished_at=finished_at,
    )
    folder = write_run_report(rows_source(), summary, reports_base, dag_id, run_id)
    return summary, folder


def build_report(
    store: PlanManagerStore,
    staging: RunStaging,
    reports_base,
    *,
    dag_id: str,
    run_id: str,
    started_at: datetime | None,
) -> dict[str, Any]:
    """Write the run's report, then move the point the next run reads Driver2 from.

    The point moves only here, at the end of a run whose every step succeeded.
    """
    recorded = store.read_run_summary(dag_id, run_id)
    if recorded is not None and not _has_whole_staging(staging):
        # An earlier try wrote the report and moved the point, then died removing staging: what
        # is left cannot make the report again, and the one written stands.
        log.info("Run %s was reported already; removing what is left of its staging", run_id)
        staging.remove()
        return recorded

    summary, folder = write_report(
        lambda: iter_report_rows(staging),
        reports_base,
        dag_id=dag_id,
        run_id=run_id,
        started_at=started_at,
    )
    extract_manifest = staging.read_manifest(EXTRACT)
    watermark = extract_manifest["watermark"]
    result = {**summary.as_dict(), "report": str(folder)}
    store.advance_sync_state(
        dag_id,
        datetime.fromisoformat(watermark) if watermark else None,
        extract_manifest["boundary_numbers"],
        run_id,
        result,
    )
    log.info("Run %s: %s; report in %s", run_id, summary.log_line(), folder)
    staging.remove()
    return result


def _has_whole_staging(staging: RunStaging) -> bool:
    if not (staging.has_manifest(EXTRACT) and staging.has_manifest(LOAD)):
        return False
    return all((staging.root / name).exists() for name in staging.read_manifest(LOAD)["parts"])

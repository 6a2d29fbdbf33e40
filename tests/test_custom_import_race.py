"""A custom import and the sync's load of the same invoice, started together: PostgreSQL and
MariaDB keep exactly one `invoices` row for it, with the Driver2 document's lines."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import event, func, select

from db_fixtures import ThrowawayDatabase
from driver2_sandbox.seeder import seed_planmanager
from driver2_sync import sync
from driver2_sync.custom_import import run_custom_import
from driver2_sync.driver2_client import Driver2Client
from driver2_sync.staging import RunStaging
from driver2_sync.store import PlanManagerStore, create_engine_for_url, invoice_lines, invoices

ROUNDS = 5
BATCH = 8
MEETING_TIMEOUT_SECONDS = 30

pytestmark = pytest.mark.slow


@pytest.fixture(params=["postgresql", "mysql"])
def seeded_database(request, driver2_sandbox, tmp_path) -> Iterator[ThrowawayDatabase]:
    database = ThrowawayDatabase(request.param, tmp_path)
    seed_planmanager(database.engine, driver2_sandbox.dataset)
    yield database
    database.drop()


class Racer(threading.Thread):
    """One side of the race, on an engine of its own as in a process of its own.

    Both sides wait at `start` to begin together. With `meeting`, each also waits, once, just
    before its first INSERT into invoices: by then both have looked and found no row, which is
    the moment a check in Python alone would let both insert.
    """

    def __init__(self, name, url, work, start: threading.Barrier, meeting: threading.Barrier):
        super().__init__(name=name)
        self.engine = create_engine_for_url(url)
        self.work, self.start_barrier, self.meeting = work, start, meeting
        self.result = self.error = None
        if meeting is not None:
            event.listen(self.engine, "before_cursor_execute", self._meet_before_insert)

    def _meet_before_insert(self, conn, cursor, statement, *args):
        if self.meeting is not None and statement.startswith("INSERT INTO invoices "):
            meeting, self.meeting = self.meeting, None
            meeting.wait(MEETING_TIMEOUT_SECONDS)

    def run(self):
        try:
            self.start_barrier.wait(MEETING_TIMEOUT_SECONDS)
            self.result = self.work(PlanManagerStore(self.engine))
        except BaseException as error:  # reported by the test
            self.error = error
        finally:
            self.engine.dispose()


def _stage_sync_batch(tmp_path, store, documents) -> RunStaging:
    """Stage a batch as the sync's extract step would, then decide it with its match step."""
    staging = RunStaging(tmp_path)
    name = staging.write_part(sync.EXTRACT, 0, documents)
    staging.write_manifest(sync.EXTRACT, {"parts": [name]})
    sync.match_clients(store, staging)
    return staging


def _lines_of(engine, invoice_id: int) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                select(
                    invoice_lines.c.line_no, invoice_lines.c.kind, invoice_lines.c.description,
                    invoice_lines.c.quantity, invoice_lines.c.unit_price,
                    invoice_lines.c.vat_rate, invoice_lines.c.net_amount,
                )
                .where(invoice_lines.c.invoice_id == invoice_id)
                .order_by(invoice_lines.c.line_no)
            )
        ]  # fmt: skip


def _document_lines(document: dict) -> list[tuple]:
    sign = -1 if document["type"] == "credit_note" else 1

    def number(text):
        return None if text is None else Decimal(text)

    return [
        (line["line_no"], line["kind"], line["description"], number(line["quantity"]),
         number(line["unit_price"]), number(line["vat_rate"]),
         None if line["net_amount"] is None else sign * Decimal(line["net_amount"]))
        for line in sorted(document["lines"], key=lambda line: line["line_no"])
    ]  # fmt: skip


def _race(database, sandbox, staging, number, dossier, force, round_no, meet_at_insert):
    """Run the sync's load of the staged batch and a custom import of `number` together."""
    start = threading.Barrier(2)
    meeting = threading.Barrier(2) if meet_at_insert else None

    def load(store):
        sync.load_invoices(store, staging, f"scheduled__race_{round_no}")
        return {row.driver2_number: row.outcome for row in sync.iter_report_rows(staging)}

    def custom_import(store):
        with Driver2Client(sandbox.base_url, sandbox.token) as client:
            return run_custom_import(
                client, store, number, dossier, force, f"manual__race_{round_no}"
            )

    racers = [
        Racer("sync", database.url, load, start, meeting),
        Racer("custom_import", database.url, custom_import, start, meeting),
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(120)
    assert [racer.error for racer in racers] == [None, None]
    return racers[0].result, racers[1].result


def _count_invoices(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(invoices)).scalar_one()


# (sync's outcome, custom import's outcome) when the sync wins, and when the custom import wins
ALLOWED = {
    False: {("imported", "already_imported"), ("already_imported", "imported")},
    True: {("imported", "reimported"), ("already_imported", "imported")},
}


@pytest.mark.parametrize("force", [False, True], ids=["plain", "forced"])
@pytest.mark.parametrize("meet_at_insert", [True, False], ids=["meeting-at-insert", "free"])
def test_custom_import_racing_the_sync_leaves_one_row_with_the_documents_lines(
    seeded_database, driver2_sandbox, tmp_path, caplog, force, meet_at_insert
):
    dataset = driver2_sandbox.dataset
    store = PlanManagerStore(seeded_database.engine)
    store.ensure_sync_tables()
    ok = [number for number in dataset.generated_numbers() if dataset.case(number) == "ok"]
    caplog.set_level(logging.WARNING, logger="driver2_sync.store")

    for round_no in range(ROUNDS):
        batch = ok[round_no * BATCH : (round_no + 1) * BATCH]
        # The raced invoice sits in the middle of the sync's batch.
        raced = dataset.invoice(batch[BATCH // 2])
        number = raced["number"]
        staging = _stage_sync_batch(
            tmp_path / f"round-{round_no}", store, [dataset.invoice(n) for n in batch]
        )
        rows_before = _count_invoices(seeded_database.engine)

        loaded, custom = _race(
            seeded_database, driver2_sandbox, staging, number, raced["planmanager_file"], force,
            round_no, meet_at_insert,
        )  # fmt: skip

        assert (loaded[number], custom.decision.outcome.value) in ALLOWED[force]
        assert {n: o for n, o in loaded.items() if n != number} == {
            n: "imported" for n in batch if n != number
        }
        with seeded_database.engine.connect() as conn:
            rows = conn.execute(
                select(invoices.c.id, invoices.c.forced).where(invoices.c.driver2_number == number)
            ).all()
        assert len(rows) == 1
        assert _count_invoices(seeded_database.engine) == rows_before + BATCH
        [(invoice_id, forced)] = rows
        assert _lines_of(seeded_database.engine, invoice_id) == _document_lines(raced)
        assert forced == (custom.decision.outcome.value == "reimported")

    lost = [r.getMessage() for r in caplog.records if "lost a race" in r.getMessage()]
    if meet_at_insert:
        # Every round, one side met the other's row at its INSERT and started again.
        assert len(lost) >= ROUNDS, json.dumps(lost)

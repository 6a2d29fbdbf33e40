"""Syncs that overlap, with each other or with custom imports, on PostgreSQL and MariaDB: each
invoice is imported once, whole, and the reports together account for every invoice.

The DAG allows one run at a time, but a run triggered by hand, a retry that outlives a new run
or a custom import of the same invoices still overlaps. Each job runs in a process of its own
(crash_runner.py); a barrier starts the jobs' chosen steps at the same moment.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from crash_runner import (
    DAG_ID,
    CrashRunner,
    count_lines,
    find_broken_promises,
    read_invoices,
    read_report,
    read_run_imports,
    read_sync_state,
)
from crash_runner import sync_job as _sync_job
from db_fixtures import ThrowawayDatabase
from driver2_sandbox.seeder import seed_planmanager
from driver2_sync.invoice import parse_instant
from driver2_sync.store import dossiers
from sandbox_fixtures import start_sandbox

pytestmark = pytest.mark.slow

INVOICES, SEED = 600, 37
BATCH_SIZE = PAGE_SIZE = 200
SERVERS = ["postgresql", "mysql"]
RUN_A = "manual__2026-05-04T10:00:00+00:00"
RUN_B = "scheduled__2026-05-04T10:00:00+00:00"
NEXT_RUN = "scheduled__2026-05-04T10:30:00+00:00"
# Which step of each run starts at the barrier: the two runs in lockstep, both from the start,
# or one run loading while the other decides what to import.
OVERLAPS = {
    "in-lockstep": (["extract", "match", "load", "report"], ["extract", "match", "load", "report"]),
    "started-together": (["extract"], ["extract"]),
    "one-loads-while-the-other-matches": (["load"], ["match"]),
}


@pytest.fixture(scope="module")
def sandbox():
    sandbox = start_sandbox(invoices=INVOICES, seed=SEED)
    yield sandbox
    sandbox.stop()


@pytest.fixture(scope="module")
def line_counts(sandbox) -> dict[str, int]:
    return count_lines(sandbox.dataset)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    runner = CrashRunner(tmp_path_factory.mktemp("overlap-runner"))
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def uninterrupted_invoices(sandbox, runner, tmp_path_factory):
    """The invoices one run alone leaves in PlanManager, once per dialect."""
    made: dict[str, dict] = {}

    def invoices_of(dialect: str) -> dict:
        if dialect not in made:
            folder = tmp_path_factory.mktemp(f"alone-{dialect}")
            database = ThrowawayDatabase(dialect, folder)
            try:
                seed_planmanager(database.engine, sandbox.dataset)
                [answer] = runner.run(sync_job(sandbox, database, folder, RUN_A))
                assert answer["exitcode"] == 0, answer["log"]
                made[dialect] = read_invoices(database.engine)
            finally:
                database.drop()
        return made[dialect]

    return invoices_of


def sync_job(sandbox, database, folder: Path, run_id: str, **extra) -> dict:
    return _sync_job(
        sandbox, database, folder, run_id, batch_size=BATCH_SIZE, page_size=PAGE_SIZE, **extra
    )


def outcomes_of(folder: Path, run_id: str) -> dict[str, str]:
    return {row["driver2_number"]: row["outcome"] for row in read_report(folder, run_id)}


def assert_next_run_considers_nothing(runner, sandbox, database, folder: Path) -> None:
    before = read_invoices(database.engine)

    [answer] = runner.run(sync_job(sandbox, database, folder, NEXT_RUN))

    assert answer["exitcode"] == 0, answer["log"]
    assert answer["outcome"]["steps"]["extract"]["considered"] == 0
    assert read_invoices(database.engine) == before


@pytest.mark.parametrize("overlap", list(OVERLAPS))
@pytest.mark.parametrize("dialect", SERVERS)
def test_two_syncs_at_once_import_each_invoice_once_and_report_every_invoice(
    dialect,
    overlap,
    sandbox,
    line_counts,
    runner,
    seeded_database,
    uninterrupted_invoices,
    tmp_path,
):
    database = seeded_database(dialect)
    waits_a, waits_b = OVERLAPS[overlap]

    answers = runner.run(
        sync_job(sandbox, database, tmp_path, RUN_A, wait_before=waits_a),
        sync_job(sandbox, database, tmp_path, RUN_B, wait_before=waits_b),
    )

    assert [answer["exitcode"] for answer in answers] == [0, 0], [a["log"] for a in answers]
    assert find_broken_promises(database.engine, line_counts) == []
    assert read_invoices(database.engine) == uninterrupted_invoices(dialect)

    expected = sandbox.dataset.expected_outcomes()
    a, b = outcomes_of(tmp_path, RUN_A), outcomes_of(tmp_path, RUN_B)
    assert set(a) == set(b) == set(expected)
    for number, outcome in expected.items():
        if outcome == "imported":
            assert sorted([a[number], b[number]]) == ["already_imported", "imported"], number
        else:
            assert [a[number], b[number]] == [outcome, outcome], number

    imported_by_a = read_run_imports(database.engine, RUN_A)
    imported_by_b = read_run_imports(database.engine, RUN_B)
    assert imported_by_a == {number for number, outcome in a.items() if outcome == "imported"}
    assert imported_by_b == {number for number, outcome in b.items() if outcome == "imported"}
    assert imported_by_a | imported_by_b == {n for n, o in expected.items() if o == "imported"}

    state = read_sync_state(database.engine)
    watermarks = {
        datetime.fromisoformat(answer["outcome"]["steps"]["extract"]["watermark"])
        for answer in answers
    }
    assert len(watermarks) == 1
    assert state["states"][DAG_ID][0] == watermarks.pop()
    assert state["runs"] == {
        RUN_A: (INVOICES, len(imported_by_a)),
        RUN_B: (INVOICES, len(imported_by_b)),
    }
    assert_next_run_considers_nothing(runner, sandbox, database, tmp_path)


def _first_batch_invoices(dataset, case: str, count: int) -> list[str]:
    first_batch = dataset.numbers()[:BATCH_SIZE]
    chosen = [number for number in first_batch if dataset.case(number) == case][:count]
    assert len(chosen) == count
    return chosen


def custom_job(sandbox, database, wish: dict, **extra) -> dict:
    """Return a job that runs one custom import, as its own DAG run would."""
    return {
        "kind": "custom",
        "driver2_url": sandbox.base_url,
        "token": sandbox.token,
        "planmanager_url": database.url.render_as_string(hide_password=False),
        "imports": [{**wish, "run_id": f"manual__custom_{wish['number']}"}],
        **extra,
    }


def _dossier_numbers(database) -> dict[int, str]:
    with database.engine.connect() as conn:
        return dict(conn.execute(select(dossiers.c.id, dossiers.c.number)).all())


@pytest.mark.parametrize("dialect", SERVERS)
def test_custom_imports_that_meet_a_sync_batch_in_flight_find_its_invoices_imported(
    dialect, sandbox, line_counts, runner, seeded_database, uninterrupted_invoices, tmp_path
):
    database = seeded_database(dialect)
    dataset = sandbox.dataset
    numbers = _first_batch_invoices(dataset, "ok", 4)
    # To the invoice's own dossier, twice; the same, forced; to a new dossier.
    wishes = [
        {"number": numbers[0], "dossier": dataset.invoice(numbers[0])["planmanager_file"]},
        {"number": numbers[1], "dossier": dataset.invoice(numbers[1])["planmanager_file"]},
        {"number": numbers[2], "dossier": dataset.invoice(numbers[2])["planmanager_file"],
         "force": True},
        {"number": numbers[3], "dossier": None},
    ]  # fmt: skip

    answers = runner.run(
        sync_job(sandbox, database, tmp_path, RUN_A, wait_before=["import_commit"], hold_seconds=1),
        *[custom_job(sandbox, database, wish, wait_before=["start"]) for wish in wishes],
    )

    assert [answer["exitcode"] for answer in answers] == [0] * 5, [a["log"] for a in answers]
    assert find_broken_promises(database.engine, line_counts) == []
    customs = [answer["outcome"]["imports"][0]["outcome"] for answer in answers[1:]]
    assert customs == ["already_imported", "already_imported", "reimported", "already_imported"]
    assert outcomes_of(tmp_path, RUN_A) == dataset.expected_outcomes()

    # The sync's rows stand; the forced import replaced its invoice with the same version.
    alone, now = uninterrupted_invoices(dialect), read_invoices(database.engine)
    forced = wishes[2]["number"]
    assert {n: v for n, v in now.items() if n != forced} == {
        n: v for n, v in alone.items() if n != forced
    }
    assert now[forced][1] == alone[forced][1]
    assert now[forced][0] == {**alone[forced][0], "forced": True}
    assert_next_run_considers_nothing(runner, sandbox, database, tmp_path)


@pytest.mark.parametrize("dialect", SERVERS)
def test_a_sync_batch_that_meets_custom_imports_in_flight_yields_and_imports_the_rest(
    dialect, sandbox, line_counts, runner, seeded_database, uninterrupted_invoices, tmp_path
):
    database = seeded_database(dialect)
    dataset = sandbox.dataset
    own_dossier, new_dossier = _first_batch_invoices(dataset, "ok", 2)
    wishes = [
        {"number": own_dossier, "dossier": dataset.invoice(own_dossier)["planmanager_file"]},
        {"number": new_dossier, "dossier": None},
    ]

    # The first custom import holds its rows uncommitted as the sync starts loading, so the
    # sync's batch runs into them and must start over; the second, started with the load,
    # commits while that batch waits.
    answers = runner.run(
        sync_job(sandbox, database, tmp_path, RUN_A, wait_before=["load"]),
        custom_job(sandbox, database, wishes[0], wait_before=["import_commit"], hold_seconds=1),
        custom_job(sandbox, database, wishes[1], wait_before=["start"]),
    )

    assert [answer["exitcode"] for answer in answers] == [0, 0, 0], [a["log"] for a in answers]
    assert find_broken_promises(database.engine, line_counts) == []
    assert [answer["outcome"]["imports"][0]["outcome"] for answer in answers[1:]] == [
        "imported",
        "imported",
    ]
    assert "lost a race with another writer" in answers[0]["log"]
    synced = outcomes_of(tmp_path, RUN_A)
    expected = dataset.expected_outcomes()
    assert synced == {**expected, own_dossier: "already_imported", new_dossier: "already_imported"}

    alone, now = uninterrupted_invoices(dialect), read_invoices(database.engine)
    assert set(now) == set(alone)
    assert {n: v for n, v in now.items() if n != new_dossier} == {
        n: v for n, v in alone.items() if n != new_dossier
    }
    assert now[new_dossier][1] == alone[new_dossier][1]
    assert _dossier_numbers(database)[now[new_dossier][0]["dossier_id"]] == f"D2-{new_dossier}"
    assert read_run_imports(database.engine, RUN_A) == {
        n for n, o in expected.items() if o == "imported"
    } - {own_dossier, new_dossier}
    assert_next_run_considers_nothing(runner, sandbox, database, tmp_path)


@pytest.mark.parametrize("dialect", ["sqlite", *SERVERS])
def test_a_run_that_ends_after_a_newer_run_leaves_the_newer_watermark(
    dialect, sandbox, line_counts, runner, seeded_database, tmp_path
):
    database = seeded_database(dialect)
    touched = _first_batch_invoices(sandbox.dataset, "ok", 1)[0]
    [older] = runner.run(
        sync_job(sandbox, database, tmp_path, RUN_A, steps=("extract", "match", "load"))
    )
    assert older["exitcode"] == 0, older["log"]
    try:
        changed = sandbox.touch(touched)
        [newer] = runner.run(sync_job(sandbox, database, tmp_path, RUN_B))
        assert newer["exitcode"] == 0, newer["log"]
        after_newer = read_sync_state(database.engine)["states"]

        [late] = runner.run(sync_job(sandbox, database, tmp_path, RUN_A, steps=("report",)))

        assert late["exitcode"] == 0, late["log"]
        assert after_newer[DAG_ID][1:] == ([touched], RUN_B)
        assert after_newer[DAG_ID][0] == parse_instant(changed["updated_at"])
        assert read_sync_state(database.engine)["states"] == after_newer
        assert set(read_sync_state(database.engine)["runs"]) == {RUN_A, RUN_B}
        assert outcomes_of(tmp_path, RUN_B)[touched] == "changed_after_import"
        assert find_broken_promises(database.engine, line_counts) == []
        assert_next_run_considers_nothing(runner, sandbox, database, tmp_path)
    finally:
        sandbox.reset()

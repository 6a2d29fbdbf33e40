"""Where the next sync run starts reading Driver2: the watermark and the numbers seen at it."""

from __future__ import annotations

from datetime import UTC, datetime

DAG_ID = "driver2_invoice_sync"
FIRST = datetime(2026, 3, 29, 0, 59, 59, 123456, tzinfo=UTC)
LATER = datetime(2026, 3, 29, 1, 0, 0, 5, tzinfo=UTC)


def test_run_at_the_same_instant_adds_its_ties_to_the_numbers_already_seen(planmanager_store):
    planmanager_store.advance_sync_state(DAG_ID, FIRST, ["F26-000002", "F26-000001"], "r1", {})

    planmanager_store.advance_sync_state(DAG_ID, FIRST, ["F26-000003"], "r2", {})

    state = planmanager_store.read_sync_state(DAG_ID)
    assert state.watermark == FIRST
    assert state.boundary_numbers == frozenset({"F26-000001", "F26-000002", "F26-000003"})
    assert state.last_run_id == "r2"


def test_later_instant_replaces_the_numbers_seen_at_the_earlier_one(planmanager_store):
    planmanager_store.advance_sync_state(DAG_ID, FIRST, ["F26-000001"], "r1", {})

    planmanager_store.advance_sync_state(DAG_ID, LATER, ["F26-000009"], "r2", {})

    state = planmanager_store.read_sync_state(DAG_ID)
    assert state.watermark == LATER
    assert state.boundary_numbers == frozenset({"F26-000009"})


def test_run_that_read_nothing_or_older_moves_nothing_back(planmanager_store):
    planmanager_store.advance_sync_state(DAG_ID, LATER, ["F26-000009"], "r1", {})

    planmanager_store.advance_sync_state(DAG_ID, None, [], "r2", {})
    planmanager_store.advance_sync_state(DAG_ID, FIRST, ["F26-000001"], "r3", {})

    state = planmanager_store.read_sync_state(DAG_ID)
    assert state.watermark == LATER
    assert state.boundary_numbers == frozenset({"F26-000009"})
    assert state.last_run_id == "r1"

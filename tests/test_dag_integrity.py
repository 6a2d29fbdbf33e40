"""The DAG files: they import, do no work while parsed, and carry tags, retries and params."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from sqlalchemy import event
from sqlalchemy.engine import Engine

DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"
EXPECTED_DAGS = {"driver2_invoice_sync", "driver2_custom_import"}


@pytest.fixture(scope="module")
def parse_record(tmp_path_factory):
    """Parse the DAG folder once, counting queries, connection lookups and HTTP requests."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import BaseHook, Variable

    record = {"queries": [], "connections": [], "variables": [], "http": []}

    def count_query(conn, cursor, statement, *args):
        record["queries"].append(statement)

    monkeypatch = pytest.MonkeyPatch()
    event.listen(Engine, "before_cursor_execute", count_query)
    monkeypatch.setattr(
        BaseHook,
        "get_connection",
        classmethod(lambda cls, conn_id: record["connections"].append(conn_id)),
    )
    monkeypatch.setattr(
        Variable, "get", staticmethod(lambda key, *a, **k: record["variables"].append(key))
    )
    monkeypatch.setattr(
        requests.Session, "send", lambda self, request, **kw: record["http"].append(request.url)
    )
    try:
        bag = DagBag(dag_folder=str(DAGS_FOLDER))
    finally:
        event.remove(Engine, "before_cursor_execute", count_query)
        monkeypatch.undo()
    return bag, record


def test_every_dag_file_imports_without_errors(parse_record):
    bag, _ = parse_record

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == EXPECTED_DAGS


def test_parsing_makes_no_query_connection_lookup_or_request(parse_record):
    _, record = parse_record

    assert record == {"queries": [], "connections": [], "variables": [], "http": []}


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_every_dag_has_tags_docs_and_task_retries(parse_record, dag_id):
    dag = parse_record[0].dags[dag_id]

    assert "driver2" in dag.tags and "planmanager" in dag.tags
    assert dag.doc_md
    assert all(task.retries >= 2 for task in dag.tasks)


def test_sync_runs_its_four_tasks_in_order_one_run_at_a_time(parse_record):
    dag = parse_record[0].dags["driver2_invoice_sync"]

    order = ["extract_driver2", "match_clients", "load_invoices", "build_report"]
    assert [task.task_id for task in dag.topological_sort()] == order
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}
    assert dag.max_active_runs == 1
    assert dag.schedule is not None


def test_custom_import_is_manual_with_the_contract_params(parse_record):
    dag = parse_record[0].dags["driver2_custom_import"]

    assert dag.schedule is None
    schema = {name: param.schema for name, param in dag.params.items()}
    assert schema["driver_nr"]["pattern"] == "^[A-Z0-9][A-Z0-9-]{0,31}$"
    assert schema["driver_nr"]["type"] == "string"
    assert schema["dossier"]["type"] == ["null", "string"]
    assert schema["force"]["type"] == "boolean"
    assert dag.params["force"] is False
    assert {name: param.schema["title"] for name, param in dag.params.items()} == {
        "driver_nr": "Driver nr",
        "dossier": "Dossier (PlanManager)",
        "force": "Force import",
    }

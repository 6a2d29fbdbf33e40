"""driver2_invoice_sync run by Airflow against the sandbox and a seeded PlanManager database."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from driver2_sandbox.seeder import seed_planmanager
from driver2_sync.store import invoice_lines, invoices

DAG_ID = "driver2_invoice_sync"


def _snapshot(engine) -> tuple[list, list]:
    with engine.connect() as conn:
        headers = conn.execute(select(invoices).order_by(invoices.c.driver2_number)).all()
        lines = conn.execute(
            select(invoice_lines).order_by(invoice_lines.c.invoice_id, invoice_lines.c.line_no)
        ).all()
    return [tuple(row) for row in headers], [tuple(row) for row in lines]


def _signed(document: dict, amount: str | None) -> Decimal | None:
    if amount is None:
        return None
    return -Decimal(amount) if document["type"] == "credit_note" else Decimal(amount)


@pytest.mark.slow
def test_sync_imports_each_invoice_as_the_contract_says(
    planmanager_db, start_driver2_sandbox, dag_runner
):
    sandbox = start_driver2_sandbox(invoices=300, seed=11)
    dataset = sandbox.dataset
    seed_planmanager(planmanager_db.engine, dataset)
    before_headers, _ = _snapshot(planmanager_db.engine)
    dag_runner.use_driver2(sandbox)
    dag_runner.use_planmanager(planmanager_db)

    first = dag_runner.run(DAG_ID)

    assert first.state == "success"
    rows = dag_runner.report_rows(DAG_ID, first.run_id)
    assert {row["driver2_number"]: row["outcome"] for row in rows} == dataset.expected_outcomes()
    assert len(rows) == 300

    imported = [row for row in rows if row["outcome"] == "imported"]
    headers, lines = _snapshot(planmanager_db.engine)
    assert len(headers) == len(before_headers) + len(imported)
    by_number = {header[3]: header for header in headers}
    with planmanager_db.engine.connect() as conn:
        line_counts = dict(
            conn.execute(
                select(invoices.c.driver2_number, func.count(invoice_lines.c.line_no))
                .join(invoice_lines, invoice_lines.c.invoice_id == invoices.c.id)
                .group_by(invoices.c.driver2_number)
            ).all()
        )
    kinds = Counter()
    for row in imported:
        document = dataset.invoice(row["driver2_number"])
        header = by_number[row["driver2_number"]]
        kinds[document["type"]] += 1
        assert header[8:11] == (
            _signed(document, document["totals"]["net"]),
            _signed(document, document["totals"]["vat"]),
            _signed(document, document["totals"]["gross"]),
        )
        assert row["gross_total"] == str(header[10])
        assert row["client_id"] == str(header[2]) and row["dossier_id"] == str(header[1])
        assert line_counts[row["driver2_number"]] == len(document["lines"])
        assert header[13] is False
    assert kinds["credit_note"] > 0 and kinds["invoice"] > 0

    # Every line of every imported invoice, exact and signed.
    lines_by_invoice = {}
    for line in lines:
        lines_by_invoice.setdefault(line[0], []).append(line)
    for row in imported[:40]:
        document = dataset.invoice(row["driver2_number"])
        stored = lines_by_invoice[int(row["invoice_id"])]
        assert [(line[1], line[2], line[3], line[7]) for line in stored] == [
            (line["line_no"], line["kind"], line["description"],
             _signed(document, line["net_amount"]))
            for line in sorted(document["lines"], key=lambda line: line["line_no"])
        ]  # fmt: skip

    second = dag_runner.run(DAG_ID)

    assert second.state == "success"
    assert dag_runner.report_rows(DAG_ID, second.run_id) == []
    assert _snapshot(planmanager_db.engine) == (headers, lines)

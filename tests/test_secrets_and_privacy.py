"""Secrets and personal data: the Driver2 token reaches no log, exception, report, XCom or file,
in a sync that works and one that Driver2 refuses; logs never hold a customer's full VAT number,
e-mail or phone; the report names customers by number and name only. TLS stays verified, every
HTTP request has a time-out, and every SQL statement binds its values."""

from __future__ import annotations

import ast
import csv
import io
import logging
import re
import traceback
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest
from airflow.sdk.exceptions import AirflowFailException
from openpyxl import load_workbook
from sqlalchemy import func, select, text, update

from driver2_sandbox.seeder import seed_planmanager
from driver2_sync import tasks
from driver2_sync.identity import normalise_dossier_number, normalise_vat_number
from driver2_sync.runtime import airflow_home
from driver2_sync.store import dossiers, invoice_lines, invoices
from test_driver2_faults import SyncUnderTest, new_run_id

DAG_ID = "driver2_invoice_sync"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
PRODUCT_FOLDERS = ("plugins", "dags")
TOKEN = "d2-Tok3n-Zq8v-never-shown-5e1f"
WRONG_TOKEN = "d2-Wr0ng-Hx4k-never-shown-77c2"


def read_personal_data(dataset) -> dict[str, set[str]]:
    """Return every VAT number, e-mail and phone of the sandbox's customers, as Driver2 and
    PlanManager type them and in their compact forms, by kind."""
    found: dict[str, set[str]] = {"vat": set(), "email": set(), "phone": set()}
    parties = [customer for customer in dataset.customers()]
    parties += [customer.as_client() for customer in dataset.planmanager_customers()]
    for party in parties:
        if party.get("vat_number"):
            found["vat"].add(party["vat_number"])
            normalised = normalise_vat_number(party["vat_number"], "BE")
            if normalised:
                found["vat"].update({normalised, normalised[2:]})
        if party.get("email"):
            found["email"].add(party["email"].lower())
        if party.get("phone"):
            found["phone"].update({party["phone"], re.sub(r"\s", "", party["phone"])})
    return found


def find_personal_data(text_to_search: str, personal: dict[str, set[str]]) -> list[str]:
    lowered = text_to_search.lower()
    return sorted(
        f"{kind} {value}" for kind, values in personal.items() for value in values
        if value.lower() in lowered
    )  # fmt: skip


def secret_forms(*secrets: str) -> list[bytes]:
    return [form.encode() for secret in secrets for form in {secret, quote(secret, safe="")}]


def read_every_file(folder: Path) -> dict[str, bytes]:
    """Return the bytes of every file under `folder`, with the members of zip files (xlsx)."""
    contents = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        contents[str(path)] = data
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.namelist():
                    contents[f"{path}!{member}"] = archive.read(member)
    return contents


def read_xcom_values(run_ids: list[str]) -> list[str]:
    from airflow import settings

    session = settings.Session()
    try:
        rows = session.execute(
            text("SELECT run_id, task_id, key, value FROM xcom WHERE dag_id = :dag_id"),
            {"dag_id": DAG_ID},
        ).all()
    finally:
        session.close()
    return [f"{task_id} {key} {value}" for run_id, task_id, key, value in rows if run_id in run_ids]


def read_report(report_csv: Path) -> tuple[list[dict], str]:
    """Return the report's CSV rows and the text of both of its files."""
    with report_csv.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    workbook = load_workbook(report_csv.with_name("report.xlsx"), read_only=True)
    cells = [
        str(value)
        for sheet in workbook.worksheets
        for row in sheet.iter_rows(values_only=True)
        for value in row
        if value is not None
    ]
    workbook.close()
    return rows, report_csv.read_text(encoding="utf-8") + "\n" + "\n".join(cells)


# -- the token ------------------------------------------------------------------------------


@pytest.mark.slow
def test_token_reaches_no_log_report_xcom_or_file_in_a_sync_and_a_refused_sync(
    start_driver2_sandbox, sqlite_planmanager_db, dag_runner, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    sandbox = start_driver2_sandbox(invoices=60, seed=5, token=TOKEN)
    seed_planmanager(sqlite_planmanager_db.engine, sandbox.dataset)
    dag_runner.use_planmanager(sqlite_planmanager_db)
    dag_runner.use_driver2(sandbox)

    synced = dag_runner.run(DAG_ID)
    for number in sandbox.dataset.numbers()[:5]:
        sandbox.touch(number)
    dag_runner.use_driver2(sandbox, token=WRONG_TOKEN)
    refused = dag_runner.run(DAG_ID)
    output = capfd.readouterr()
    places = {
        "task logs (dag.test output)": (output.out + output.err).encode(),
        "captured log records": caplog.text.encode(),
        "xcom": "\n".join(read_xcom_values([synced.run_id, refused.run_id])).encode(),
        **read_every_file(Path(airflow_home())),
        **read_every_file(dag_runner.reports_dir),
    }

    assert (synced.state, refused.state) == ("success", "failed")
    assert sandbox.stats()["requests"]["/api/v1/invoices"]["401"] == 1
    # Where dag.test() sends the tasks' log lines depends on how Airflow set up logging in this
    # process: both places are searched, and the lines must be in one of them.
    task_logs = output.out + output.err + caplog.text
    assert "Driver2 refused the API token of connection 'driver2_api'" in task_logs
    assert "Driver2 invoices page 1: 60 items" in task_logs
    assert len(read_xcom_values([synced.run_id])) >= 4
    assert any(name.endswith("report.xlsx!xl/worksheets/sheet2.xml") for name in places)
    leaks = [
        (place, form.decode())
        for place, content in places.items()
        for form in secret_forms(TOKEN, WRONG_TOKEN)
        if form in content
    ]
    assert leaks == []


def test_refused_token_fails_the_task_with_no_token_in_the_exception_chain_or_logs(
    start_driver2_sandbox, sqlite_planmanager_db, monkeypatch, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    sandbox = start_driver2_sandbox(invoices=20, seed=5, token=TOKEN)
    sync = SyncUnderTest(monkeypatch, tmp_path / "reports")
    sync.use(sandbox, sqlite_planmanager_db, token=WRONG_TOKEN)

    with pytest.raises(AirflowFailException) as raised:
        tasks.extract_driver2(DAG_ID, new_run_id())
    chain = "".join(traceback.format_exception(raised.value))

    # The sandbox's "wrong bearer token." is masked too: the scrubber cannot tell it from one.
    assert str(raised.value) == (
        f"Driver2 refused the API token of connection 'driver2_api' ({sandbox.base_url}):"
        " HTTP 401 on GET /api/v1/invoices (unauthorized: Missing or wrong bearer ***);"
        " check the token (the connection's password). Nothing was imported; the next run"
        " reads Driver2 from where the last successful run stopped."
    )
    assert "Driver2AuthError" in chain
    assert [form for form in secret_forms(TOKEN, WRONG_TOKEN) if form in chain.encode()] == []
    assert WRONG_TOKEN not in caplog.text and TOKEN not in caplog.text


# -- personal data --------------------------------------------------------------------------


def test_logs_at_every_level_hold_no_full_vat_number_email_or_phone(
    start_driver2_sandbox, sqlite_planmanager_db, monkeypatch, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    sandbox = start_driver2_sandbox(invoices=120, seed=9)
    seed_planmanager(sqlite_planmanager_db.engine, sandbox.dataset)
    sync = SyncUnderTest(monkeypatch, tmp_path / "reports")
    sync.use(sandbox, sqlite_planmanager_db, page_size=25)
    personal = read_personal_data(sandbox.dataset)

    result = sync.run()

    assert len(result.report) == 120
    assert min(len(values) for values in personal.values()) >= 20
    assert "Driver2 invoices page 5: 20 items" in caplog.text
    assert find_personal_data(caplog.text, personal) == []


def test_report_names_customers_by_number_and_name_only(
    start_driver2_sandbox, sqlite_planmanager_db, monkeypatch, tmp_path
):
    sandbox = start_driver2_sandbox(invoices=120, seed=9)
    seed_planmanager(sqlite_planmanager_db.engine, sandbox.dataset)
    sync = SyncUnderTest(monkeypatch, tmp_path / "reports")
    sync.use(sandbox, sqlite_planmanager_db)
    run_id = new_run_id()

    sync.run(run_id)
    rows, report_text = read_report(sync.report_path(run_id))

    assert {row["customer_no"] for row in rows} == {
        sandbox.dataset.invoice(row["driver2_number"])["customer"]["customer_no"] for row in rows
    }
    assert all(row["customer_name"] for row in rows)
    assert find_personal_data(report_text, read_personal_data(sandbox.dataset)) == []


# -- TLS, time-outs, bound SQL --------------------------------------------------------------


def iter_product_sources() -> list[tuple[Path, str]]:
    return [
        (path, path.read_text(encoding="utf-8"))
        for folder in PRODUCT_FOLDERS
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))
    ]


def test_no_product_code_turns_certificate_verification_off():
    unsafe = re.compile(
        r"verify\s*=\s*(False|0|None)\b|CERT_NONE|check_hostname\s*=\s*False"
        r"|_create_unverified_context|disable_warnings|PYTHONHTTPSVERIFY"
    )

    found = [
        f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}"
        for path, source in iter_product_sources()
        for number, line in enumerate(source.splitlines(), 1)
        if unsafe.search(line)
    ]

    assert found == []


HTTP_VERBS = {"get", "post", "put", "patch", "delete", "head", "options", "request", "send"}


def find_http_calls(tree: ast.AST) -> list[ast.Call]:
    """Return the calls that send an HTTP request: requests.*, a session's verbs, urlopen."""
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Name) and function.id == "urlopen":
            calls.append(node)
        elif isinstance(function, ast.Attribute) and function.attr in HTTP_VERBS | {"urlopen"}:
            owner = ast.unparse(function.value)
            if owner == "requests" or owner.endswith(("session", "_session", "urllib.request")):
                calls.append(node)
    return calls


def test_every_http_request_in_the_product_has_a_timeout():
    calls = [
        (path, call)
        for path, source in iter_product_sources()
        for call in find_http_calls(ast.parse(source))
    ]

    without = [
        f"{path.relative_to(PROJECT_ROOT)}:{call.lineno}: {ast.unparse(call)}"
        for path, call in calls
        if not any(keyword.arg == "timeout" for keyword in call.keywords)
    ]

    assert "driver2_client.py" in {path.name for path, _ in calls}
    assert without == []


SQL_CALLS = {"text", "exec_driver_sql", "execute", "executemany", "executescript"}
SQL_KEYWORD = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|DROP|CREATE|ALTER|WHERE)\s")


def is_built_text(node: ast.AST) -> bool:
    """Return whether an expression builds a string from parts: f-string, %, + or .format."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return True
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("format", "join")
    )


def find_sql_built_from_text(tree: ast.AST) -> list[ast.AST]:
    """Return SQL calls whose statement is built text, and built text that reads as SQL."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in SQL_CALLS and node.args and is_built_text(node.args[0]):
                found.append(node)
        if is_built_text(node) and SQL_KEYWORD.search(ast.unparse(node)):
            found.append(node)
    return found


def test_no_sql_statement_in_the_product_is_built_from_text():
    found = [
        f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}: {ast.unparse(node)[:120]}"
        for path, source in iter_product_sources()
        for node in find_sql_built_from_text(ast.parse(source))
    ]
    planted = ast.parse("conn.execute(text(f\"SELECT * FROM clients WHERE name = '{name}'\"))")

    assert len(find_sql_built_from_text(planted)) == 2
    assert found == []


HOSTILE_DOSSIER = "  x'26-1\"; drop table invoices; -- \\ %_ "
HOSTILE_DESCRIPTION = "Robert'); DROP TABLE invoice_lines; -- \\' \" ` /* % _ */ ;"
INJECTED_DOSSIER = "' OR '1'='1"


def test_sql_metacharacters_in_driver2_text_are_stored_verbatim_and_harm_nothing(
    planmanager_db, start_driver2_sandbox, monkeypatch, tmp_path
):
    sandbox = start_driver2_sandbox(invoices=40, seed=12)
    dataset = sandbox.dataset
    seed_planmanager(planmanager_db.engine, dataset)
    expected = dataset.expected_outcomes()
    target, other = [number for number, outcome in expected.items() if outcome == "imported"][:2]
    with planmanager_db.engine.begin() as conn:
        dossier_id = conn.execute(
            select(dossiers.c.id).where(dossiers.c.number == dataset.plan_of(target).dossier_number)
        ).scalar_one()
        conn.execute(
            update(dossiers)
            .where(dossiers.c.id == dossier_id)
            .values(number=normalise_dossier_number(HOSTILE_DOSSIER))
        )
        seeded_invoices = conn.execute(select(func.count()).select_from(invoices)).scalar_one()
    document = dataset.invoice(target)
    document["planmanager_file"] = HOSTILE_DOSSIER
    document["lines"][0]["description"] = HOSTILE_DESCRIPTION
    sandbox.put_invoice(target, document)
    injected = dataset.invoice(other)
    injected["planmanager_file"] = INJECTED_DOSSIER
    sandbox.put_invoice(other, injected)
    sync = SyncUnderTest(monkeypatch, tmp_path / "reports")
    sync.use(sandbox, planmanager_db)

    result = sync.run()
    with planmanager_db.engine.connect() as conn:
        stored = conn.execute(
            select(invoices.c.dossier_id, invoice_lines.c.description)
            .join(invoice_lines, invoice_lines.c.invoice_id == invoices.c.id)
            .where(invoices.c.driver2_number == target, invoice_lines.c.line_no == 1)
        ).one()

    assert result.outcomes[target] == "imported"
    assert tuple(stored) == (dossier_id, HOSTILE_DESCRIPTION)
    assert result.outcomes[other] == "dossier_not_found"
    assert result.report[other]["reason"].startswith(
        f"Dossier {INJECTED_DOSSIER} does not exist in PlanManager."
    )
    assert len(result.headers) == seeded_invoices + list(result.outcomes.values()).count("imported")
    assert {line[0] for line in result.lines[target]} == {
        line["line_no"] for line in document["lines"]
    }

"""driver2_custom_import, one document at a time: every outcome of the contract with and without
force, against the Driver2 sandbox and seeded PlanManager databases on SQLite, PostgreSQL and
MariaDB, checking the PlanManager rows exactly."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import count
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db_fixtures import DIALECTS, ThrowawayDatabase
from documents import make_customer, make_invoice
from driver2_sandbox.seeder import seed_planmanager
from driver2_sync import tasks
from driver2_sync.invoice import parse_instant
from driver2_sync.report import report_folder_name
from driver2_sync.store import clients, dossier_clients, dossiers, invoice_lines, invoices
from planmanager_rows import add_client, add_dossier

DAG_ID = "driver2_custom_import"
PRIMARY_KEYS = {
    clients: ("id",),
    dossiers: ("id",),
    dossier_clients: ("dossier_id", "client_id", "role"),
    invoices: ("id",),
    invoice_lines: ("invoice_id", "line_no"),
}
# Columns a database fills with the moment of writing: checked apart, never compared as such.
WRITTEN_AT = {"created_at", "imported_at"}


@dataclass
class SeededPlanManager:
    """A PlanManager database seeded for the shared sandbox's invoices, reused by one module.

    Each test takes invoices no other test of the module has used, so that they stay apart.
    """

    database: ThrowawayDatabase
    client_ids: dict[str, int]
    dossier_ids: dict[str, int]
    reports_dir: Path
    used: set[str] = field(default_factory=set)
    run_numbers: Iterator[int] = field(default_factory=count)

    @property
    def engine(self):
        return self.database.engine

    def known_customer_numbers(self) -> set[str]:
        """Return the Driver2 customer numbers PlanManager clients carry now."""
        with self.engine.connect() as conn:
            return set(conn.execute(select(clients.c.driver2_customer_no)).scalars()) - {None}

    def take(self, dataset, case: str, where: Callable[[dict], bool] = lambda _: True) -> str:
        """Return the first generated invoice of this case, not used yet, that passes `where`."""
        # A customer that an earlier test made a client of is no longer unknown.
        known = self.known_customer_numbers() if case == "unknown_customer" else set()
        for number in dataset.generated_numbers():
            if number in self.used or dataset.case(number) != case:
                continue
            document = dataset.invoice(number)
            if document["customer"]["customer_no"] not in known and where(document):
                self.used.add(number)
                return number
        raise LookupError(f"no unused {case} invoice left in the sandbox")


@dataclass
class CustomImport:
    """One custom import as the task ran it: what it returned or why it failed, and its report."""

    returned: dict | None
    failure: str | None
    row: dict


@pytest.fixture(scope="module", params=DIALECTS)
def planmanager(request, driver2_sandbox, tmp_path_factory) -> Iterator[SeededPlanManager]:
    database = ThrowawayDatabase(request.param, tmp_path_factory.mktemp(request.param))
    summary = seed_planmanager(database.engine, driver2_sandbox.dataset)
    reports_dir = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as env:
        env.setenv(
            "AIRFLOW_CONN_DRIVER2_API",
            json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": driver2_sandbox.port,
                 "schema": "http", "password": driver2_sandbox.token}
            ),
        )  # fmt: skip
        env.setenv("AIRFLOW_CONN_PLANMANAGER_DB", database.airflow_connection_json())
        env.setenv("AIRFLOW_VAR_DRIVER2_REPORTS_URL", f"file://{reports_dir}")
        yield SeededPlanManager(database, summary.client_ids, summary.dossier_ids, reports_dir)
    database.drop()


@pytest.fixture
def sandbox(driver2_sandbox):
    """The shared sandbox, put back as generated after a test that stores or touches documents."""
    yield driver2_sandbox
    driver2_sandbox.reset()


def run_custom_import(
    planmanager: SeededPlanManager,
    driver_nr: str,
    dossier: str | None = None,
    force: bool = False,
    *,
    run_id: str | None = None,
    conf: dict | None = None,
) -> CustomImport:
    """Run the task's body as Airflow would, and read back the run's one-row report."""
    from airflow.sdk.exceptions import AirflowFailException

    run_id = run_id or f"manual__custom_import_{next(planmanager.run_numbers)}"
    params = {"driver_nr": driver_nr, "dossier": dossier, "force": force}
    try:
        returned = tasks.custom_import(
            DAG_ID, run_id, params, conf=conf or params, declared=list(params)
        )
        failure = None
    except AirflowFailException as error:
        returned, failure = None, str(error)
    report = planmanager.reports_dir / DAG_ID / report_folder_name(run_id) / "report.csv"
    with report.open(encoding="utf-8", newline="") as handle:
        [row] = list(csv.DictReader(handle))
    return CustomImport(returned, failure, row)


def snapshot(engine) -> dict[str, dict[tuple, dict]]:
    """Return every row of the PlanManager tables, by table and primary key."""
    rows: dict[str, dict[tuple, dict]] = {}
    with engine.connect() as conn:
        for table, key in PRIMARY_KEYS.items():
            rows[table.name] = {
                tuple(row[column] for column in key): dict(row)
                for row in conn.execute(select(table)).mappings()
            }
    return rows


def changes(before: dict, after: dict) -> dict[str, dict[str, dict]]:
    """Return, per table that changed, the rows added, removed and changed (old, new)."""
    found = {}
    for table in after:
        old, new = before[table], after[table]
        added = {key: new[key] for key in new.keys() - old.keys()}
        removed = {key: old[key] for key in old.keys() - new.keys()}
        changed = {
            key: (old[key], new[key]) for key in old.keys() & new.keys() if old[key] != new[key]
        }
        if added or removed or changed:
            found[table] = {"added": added, "removed": removed, "changed": changed}
    return found


def only(rows: dict) -> dict:
    [row] = rows.values()
    return row


def without_written_at(row: dict, *also: str) -> dict:
    return {name: value for name, value in row.items() if name not in WRITTEN_AT | set(also)}


def signed(document: dict, amount: str | None) -> Decimal | None:
    if amount is None:
        return None
    return -Decimal(amount) if document["type"] == "credit_note" else Decimal(amount)


def expected_invoice(document: dict, dossier_id: int, client_id: int, forced: bool) -> dict:
    """Return the `invoices` row (without id and imported_at) the document must become."""
    totals = document["totals"]
    return {
        "dossier_id": dossier_id,
        "client_id": client_id,
        "driver2_number": document["number"],
        "kind": document["type"],
        "issue_date": date.fromisoformat(document["issue_date"]),
        "due_date": date.fromisoformat(document["due_date"]) if document["due_date"] else None,
        "currency": document["currency"],
        "net_total": signed(document, totals["net"]),
        "vat_total": signed(document, totals["vat"]),
        "gross_total": signed(document, totals["gross"]),
        "credited_driver2_number": document["credited_invoice"],
        "driver2_updated_at": parse_instant(document["updated_at"]).astimezone(UTC),
        "forced": forced,
    }


def expected_lines(document: dict, invoice_id: int) -> dict[tuple, dict]:
    """Return the `invoice_lines` rows the document's lines must become, by primary key."""
    return {
        (invoice_id, line["line_no"]): {
            "invoice_id": invoice_id,
            "line_no": line["line_no"],
            "kind": line["kind"],
            "description": line["description"],
            "quantity": None if line["quantity"] is None else Decimal(line["quantity"]),
            "unit_price": None if line["unit_price"] is None else Decimal(line["unit_price"]),
            "vat_rate": None if line["vat_rate"] is None else Decimal(line["vat_rate"]),
            "net_amount": signed(document, line["net_amount"]),
        }
        for line in document["lines"]
    }


def next_id(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.max(table.c.id))).scalar_one() + 1


def dossier_of(dataset, number: str) -> str:
    return dataset.plan_of(number).dossier_number


# -- documents that are not imported ----------------------------------------------------------

# (case of the sandbox invoice, dossier param, force, outcome). "own": the dossier as typed in
# Driver2; "missing": a dossier PlanManager does not have; None: the field left empty.
NOT_IMPORTED = [
    ("invalid_figures", "own", False, "invalid"),
    ("invalid_figures", "own", True, "invalid"),
    ("invalid_figures", None, True, "invalid"),
    ("draft", "own", False, "skipped_draft"),
    ("draft", "own", True, "skipped_draft"),
    ("draft", None, False, "skipped_draft"),
    ("cancelled", "own", False, "skipped_cancelled"),
    ("cancelled", "own", True, "skipped_cancelled"),
    ("cancelled", None, True, "skipped_cancelled"),
    ("already_imported", "own", False, "already_imported"),
    ("already_imported", None, False, "already_imported"),
    ("changed_after_import", "own", False, "changed_after_import"),
    ("changed_after_import", None, False, "changed_after_import"),
    ("ok", "missing", False, "dossier_not_found"),
    ("ok", "missing", True, "dossier_not_found"),
    ("already_imported", "missing", True, "dossier_not_found"),
    ("unknown_dossier", "missing", True, "dossier_not_found"),
    ("customer_not_in_dossier", "own", False, "client_not_in_dossier"),
    ("unknown_customer", "own", False, "client_unknown"),
]


@pytest.mark.parametrize(
    ("case", "dossier", "force", "outcome"),
    NOT_IMPORTED,
    ids=[f"{case}-{dossier}-{'force' if force else 'plain'}" for case, dossier, force, _ in
         NOT_IMPORTED],
)  # fmt: skip
def test_document_not_imported_fails_the_run_reports_why_and_changes_nothing(
    planmanager, driver2_sandbox, case, dossier, force, outcome
):
    dataset = driver2_sandbox.dataset
    number = planmanager.take(dataset, case)
    typed = {"own": dataset.invoice(number)["planmanager_file"], "missing": "D-2099-0001"}
    before = snapshot(planmanager.engine)
    held = {row["driver2_number"]: str(row["id"]) for row in before["invoices"].values()}

    result = run_custom_import(planmanager, number, typed.get(dossier), force)

    assert changes(before, snapshot(planmanager.engine)) == {}
    assert result.returned is None
    assert result.failure == f"{number} not imported ({outcome}): {result.row['reason']}"
    assert result.row["reason"]
    # Rule 3 names the PlanManager invoice that holds the document already.
    invoice_id = held[number] if outcome in ("already_imported", "changed_after_import") else ""
    assert {k: result.row[k] for k in ("driver2_number", "outcome", "forced", "invoice_id")} == {
        "driver2_number": number,
        "outcome": outcome,
        "forced": "false",
        "invoice_id": invoice_id,
    }


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_not_found_names_the_number_and_what_to_check(planmanager, force):
    before = snapshot(planmanager.engine)

    result = run_custom_import(planmanager, "F99-000001", "D-2025-0001", force=force)

    assert changes(before, snapshot(planmanager.engine)) == {}
    assert result.row["outcome"] == "not_found"
    assert result.row["reason"] == (
        "Driver2 has no invoice or credit note numbered F99-000001. Check the number (the"
        " 'Driver nr' on the Driver2 document) and trigger again."
    )
    assert result.failure == f"F99-000001 not imported (not_found): {result.row['reason']}"
    assert (result.row["kind"], result.row["customer_no"]) == ("", "")


def test_named_dossier_that_does_not_exist_is_refused_even_with_force(planmanager, driver2_sandbox):
    number = planmanager.take(driver2_sandbox.dataset, "ok")

    result = run_custom_import(planmanager, number, " d-2099-0001 ", force=True)

    assert result.row["outcome"] == "dossier_not_found"
    assert result.row["planmanager_file"] == "D-2099-0001"
    assert result.row["reason"] == (
        "Dossier D-2099-0001 does not exist in PlanManager, so nothing was imported (not even"
        " with Force import). Check the number in the 'Dossier (PlanManager)' field, or leave it"
        " empty to create a new dossier, and trigger again."
    )


def test_already_imported_says_how_to_import_it_again(planmanager, driver2_sandbox):
    dataset = driver2_sandbox.dataset
    number = planmanager.take(dataset, "already_imported")
    with planmanager.engine.connect() as conn:
        invoice_id = conn.execute(
            select(invoices.c.id).where(invoices.c.driver2_number == number)
        ).scalar_one()

    result = run_custom_import(planmanager, number, dataset.invoice(number)["planmanager_file"])

    assert result.row["reason"] == (
        f"Already in PlanManager as invoice {invoice_id}, at this version. Nothing to do."
        " To import it again, tick Force import."
    )
    assert result.row["invoice_id"] == str(invoice_id)


# -- documents that are imported ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["invoice", "credit_note"])
def test_invoice_passing_the_checks_is_imported_into_the_named_dossier(
    planmanager, driver2_sandbox, kind
):
    dataset = driver2_sandbox.dataset
    number = planmanager.take(dataset, "ok", lambda document: document["type"] == kind)
    document = dataset.invoice(number)
    dossier_id = planmanager.dossier_ids[dossier_of(dataset, number)]
    client_id = planmanager.client_ids[document["customer"]["customer_no"]]
    before = snapshot(planmanager.engine)
    # SQLite writes its default moment to the second.
    started = datetime.now(UTC).replace(microsecond=0)

    result = run_custom_import(planmanager, number, document["planmanager_file"])

    found = changes(before, snapshot(planmanager.engine))
    assert set(found) == {"invoices", "invoice_lines"}
    header = only(found["invoices"]["added"])
    assert without_written_at(header, "id") == expected_invoice(
        document, dossier_id, client_id, forced=False
    )
    assert started <= header["imported_at"] <= datetime.now(UTC)
    assert found["invoice_lines"]["added"] == expected_lines(document, header["id"])
    assert result.failure is None
    assert result.returned["summary"] == (
        f"{number} imported as PlanManager invoice {header['id']} in dossier"
        f" {dossier_of(dataset, number)}, for client {client_id}."
    )
    assert {k: result.row[k] for k in ("outcome", "reason", "forced", "invoice_id", "dossier_id",
                                       "client_id", "planmanager_file")} == {
        "outcome": "imported", "reason": "", "forced": "false", "invoice_id": str(header["id"]),
        "dossier_id": str(dossier_id), "client_id": str(client_id),
        "planmanager_file": dossier_of(dataset, number),
    }  # fmt: skip
    if kind == "credit_note":
        assert header["gross_total"] < 0


def test_force_on_an_invoice_that_passes_the_checks_imports_it_unforced(
    planmanager, driver2_sandbox
):
    dataset = driver2_sandbox.dataset
    number = planmanager.take(dataset, "ok")
    document = dataset.invoice(number)
    before = snapshot(planmanager.engine)

    result = run_custom_import(planmanager, number, document["planmanager_file"], force=True)

    found = changes(before, snapshot(planmanager.engine))
    assert set(found) == {"invoices", "invoice_lines"}
    assert only(found["invoices"]["added"])["forced"] is False
    assert (result.row["outcome"], result.row["forced"]) == ("imported", "false")


def test_dossier_param_takes_the_place_of_the_one_mistyped_in_driver2(planmanager, driver2_sandbox):
    dataset = driver2_sandbox.dataset
    number = planmanager.take(
        dataset, "unknown_dossier", lambda doc: doc["customer"]["customer_no"] in
        planmanager.client_ids and (doc["planmanager_file"] or "").strip() != ""
    )  # fmt: skip
    document = dataset.invoice(number)
    client_id = planmanager.client_ids[document["customer"]["customer_no"]]
    dossier_id = add_dossier(
        planmanager.engine,
        next_id(planmanager.engine, dossiers),
        "D-2026-9001",
        (client_id, "driver"),
    )
    before = snapshot(planmanager.engine)

    result = run_custom_import(planmanager, number, "d-2026-9001")

    found = changes(before, snapshot(planmanager.engine))
    assert set(found) == {"invoices", "invoice_lines"}
    header = only(found["invoices"]["added"])
    assert without_written_at(header, "id") == expected_invoice(
        document, dossier_id, client_id, False
    )
    assert (result.row["outcome"], result.row["planmanager_file"]) == ("imported", "D-2026-9001")
    assert result.row["reason"] == ""


def test_force_links_a_known_client_outside_the_dossier_as_invoiced(planmanager, driver2_sandbox):
    dataset = driver2_sandbox.dataset
    number = planmanager.take(dataset, "customer_not_in_dossier")
    document = dataset.invoice(number)
    dossier_id = planmanager.dossier_ids[dossier_of(dataset, number)]
    client_id = planmanager.client_ids[document["customer"]["customer_no"]]
    before = snapshot(planmanager.engine)

    result = run_custom_import(planmanager, number, document["planmanager_file"], force=True)

    found = changes(before, snapshot(planmanager.engine))
    assert set(found) == {"dossier_clients", "invoices", "invoice_lines"}
    assert found["dossier_clients"] == {
        "added": {(dossier_id, client_id, "invoiced"):
                  {"dossier_id": dossier_id, "client_id": client_id, "role": "invoiced"}},
        "removed": {}, "changed": {},
    }  # fmt: skip
    header = only(found["invoices"]["added"])
    assert without_written_at(header, "id") == expected_invoice(
        document, dossier_id, client_id, True
    )
    assert found["invoice_lines"]["added"] == expected_lines(document, header["id"])
    assert (result.row["outcome"], result.row["forced"]) == ("imported", "true")
    assert result.returned["summary"].endswith(
        f"for client {client_id}. Marked forced: only Force import let it in."
    )


def test_force_makes_an_unknown_customer_a_new_client_with_a_normalised_vat_number(
    planmanager, sandbox
):
    dossier_number = dossier_of(sandbox.dataset, planmanager.take(sandbox.dataset, "ok"))
    dossier_id = planmanager.dossier_ids[dossier_number]
    customer = make_customer(
        customer_no="C900001", name="Carrosserie Nouvelle SRL", vat_number="be 403.019.261",
        postal_code="4020", city="Liège", email=None,
    )  # fmt: skip
    document = make_invoice(number="F26-900001", customer=customer, planmanager_file=None)
    sandbox.put_invoice("F26-900001", document)
    with planmanager.engine.connect() as conn:
        assert conn.execute(select(clients.c.vat_number)).scalars().all().count("BE0403019261") == 0
    before = snapshot(planmanager.engine)

    result = run_custom_import(planmanager, "F26-900001", dossier_number, force=True)

    found = changes(before, snapshot(planmanager.engine))
    assert set(found) == {"clients", "dossier_clients", "invoices", "invoice_lines"}
    client = only(found["clients"]["added"])
    assert without_written_at(client, "id") == {
        "name": "Carrosserie Nouvelle SRL", "vat_number": "BE0403019261",
        "street": "Rue de la Gare 12", "postal_code": "4020", "city": "Liège", "country": "BE",
        "email": None, "phone": "+32 4 222 33 44", "driver2_customer_no": "C900001",
    }  # fmt: skip
    assert list(found["dossier_clients"]["added"]) == [(dossier_id, client["id"], "invoiced")]
    header = only(found["invoices"]["added"])
    assert without_written_at(header, "id") == expected_invoice(
        document, dossier_id, client["id"], forced=True
    )
    assert result.row["outcome"] == "imported"
    assert result.returned["summary"] == (
        f"F26-900001 imported as PlanManager invoice {header['id']} in dossier {dossier_number},"
        f" for new client {client['id']}, made from the Driver2 customer. Marked forced: only"
        " Force import let it in."
    )


def test_forced_new_client_is_made_from_the_customer_as_driver2_knows_it_now(planmanager, sandbox):
    dataset = sandbox.dataset
    # Seeded clients known by VAT number or name carry no customer number: both sets count.
    known = planmanager.known_customer_numbers() | set(planmanager.client_ids)
    current = next(
        customer for customer in dataset.customers()
        if customer["customer_no"] not in known and customer["vat_number"] is None
    )  # fmt: skip
    # The invoice carries the customer as it was when invoiced: another name, a VAT number.
    on_invoice = {**current, "name": "Ancien Nom SPRL", "vat_number": "BE 0999.999.999"}
    dossier_number = dossier_of(dataset, planmanager.take(dataset, "ok"))
    document = make_invoice(number="F26-900004", customer=on_invoice, planmanager_file=None)
    sandbox.put_invoice("F26-900004", document)
    before = snapshot(planmanager.engine)

    result = run_custom_import(planmanager, "F26-900004", dossier_number, force=True)

    found = changes(before, snapshot(planmanager.engine))
    client = only(found["clients"]["added"])
    assert without_written_at(client, "id") == {
        "name": current["name"], "vat_number": None, "street": current["street"],
        "postal_code": current["postal_code"], "city": current["city"], "country": "BE",
        "email": current["email"], "phone": current["phone"],
        "driver2_customer_no": current["customer_no"],
    }  # fmt: skip
    assert (result.row["outcome"], result.row["client_id"]) == ("imported", str(client["id"]))


@pytest.mark.parametrize("case", ["already_imported", "changed_after_import"])
def test_force_reimports_in_place_with_the_current_driver2_version(planmanager, sandbox, case):
    dataset = sandbox.dataset
    number = planmanager.take(dataset, case)
    # A visible change: the touch adds a comment line and moves updated_at to now.
    document = sandbox.touch(number)
    dossier_id = planmanager.dossier_ids[dossier_of(dataset, number)]
    client_id = planmanager.client_ids[document["customer"]["customer_no"]]
    before = snapshot(planmanager.engine)
    [(invoice_id,)] = [key for key, row in before["invoices"].items()
                       if row["driver2_number"] == number]  # fmt: skip
    started = datetime.now(UTC)

    result = run_custom_import(planmanager, number, document["planmanager_file"], force=True)

    found = changes(before, snapshot(planmanager.engine))
    assert set(found) == {"invoices", "invoice_lines"}
    [(old, new)] = found["invoices"]["changed"].values()
    assert without_written_at(new) == {
        "id": invoice_id,
        **expected_invoice(document, dossier_id, client_id, forced=True),
    }
    assert started <= new["imported_at"] <= datetime.now(UTC)
    lines = expected_lines(document, invoice_id)
    assert found["invoice_lines"]["added"] == {key: lines[key] for key in lines.keys() - {
        key for key in before["invoice_lines"] if key[0] == invoice_id}}  # fmt: skip
    assert found["invoice_lines"]["removed"] == {}
    after_lines = {key: row for key, row in snapshot(planmanager.engine)["invoice_lines"].items()
                   if key[0] == invoice_id}  # fmt: skip
    assert after_lines == lines
    assert (result.row["outcome"], result.row["forced"]) == ("reimported", "true")
    assert result.row["invoice_id"] == str(invoice_id)
    assert result.returned["summary"] == (
        f"{number} reimported: PlanManager invoice {invoice_id} now holds its current Driver2"
        f" version, lines included, in dossier {dossier_of(dataset, number)}, for client"
        f" {client_id}. Marked forced: only Force import let it in."
    )


# -- an empty dossier field: a new dossier ----------------------------------------------------


def test_empty_dossier_creates_a_driver2_dossier_for_the_known_client(planmanager, driver2_sandbox):
    dataset = driver2_sandbox.dataset
    number = planmanager.take(
        dataset, "unknown_dossier", lambda doc: doc["customer"]["customer_no"] in
        planmanager.client_ids and doc["vehicle"] is not None
    )  # fmt: skip
    document = dataset.invoice(number)
    client_id = planmanager.client_ids[document["customer"]["customer_no"]]
    before = snapshot(planmanager.engine)

    result = run_custom_import(planmanager, number, None)

    found = changes(before, snapshot(planmanager.engine))
    assert set(found) == {"dossiers", "dossier_clients", "invoices", "invoice_lines"}
    dossier = only(found["dossiers"]["added"])
    assert without_written_at(dossier, "id") == {
        "number": f"D2-{number}", "plate": document["vehicle"]["plate"],
        "vin": document["vehicle"]["vin"], "status": "open", "origin": "driver2",
    }  # fmt: skip
    assert list(found["dossier_clients"]["added"]) == [(dossier["id"], client_id, "invoiced")]
    header = only(found["invoices"]["added"])
    assert without_written_at(header, "id") == expected_invoice(
        document, dossier["id"], client_id, forced=False
    )
    assert found["invoice_lines"]["added"] == expected_lines(document, header["id"])
    assert (result.row["outcome"], result.row["planmanager_file"]) == ("imported", f"D2-{number}")
    assert result.returned["summary"] == (
        f"{number} imported as PlanManager invoice {header['id']} in new dossier D2-{number},"
        f" for client {client_id}."
    )


def test_empty_dossier_with_an_unknown_customer_creates_the_client_too(planmanager, sandbox):
    customer = make_customer(
        customer_no="C900002", name="Lemaire Julie", vat_number=None, postal_code="5000",
        city="Namur", street="Rue de Fer 3", email="julie@lemaire.example", phone=None,
    )  # fmt: skip
    document = make_invoice(number="F26-900002", customer=customer, vehicle=None)
    sandbox.put_invoice("F26-900002", document)
    before = snapshot(planmanager.engine)

    result = run_custom_import(planmanager, "F26-900002", "   ")

    found = changes(before, snapshot(planmanager.engine))
    assert set(found) == {"clients", "dossiers", "dossier_clients", "invoices", "invoice_lines"}
    client = only(found["clients"]["added"])
    assert without_written_at(client, "id") == {
        "name": "Lemaire Julie", "vat_number": None, "street": "Rue de Fer 3",
        "postal_code": "5000", "city": "Namur", "country": "BE",
        "email": "julie@lemaire.example", "phone": None, "driver2_customer_no": "C900002",
    }  # fmt: skip
    dossier = only(found["dossiers"]["added"])
    assert without_written_at(dossier, "id") == {
        "number": "D2-F26-900002", "plate": None, "vin": None, "status": "open",
        "origin": "driver2",
    }  # fmt: skip
    assert list(found["dossier_clients"]["added"]) == [(dossier["id"], client["id"], "invoiced")]
    header = only(found["invoices"]["added"])
    assert without_written_at(header, "id") == expected_invoice(
        document, dossier["id"], client["id"], forced=False
    )
    assert (result.row["outcome"], result.row["forced"]) == ("imported", "false")


def test_second_new_dossier_for_a_document_is_numbered_with_a_dot(planmanager, driver2_sandbox):
    dataset = driver2_sandbox.dataset
    number = planmanager.take(dataset, "ok")
    document = dataset.invoice(number)
    client_id = planmanager.client_ids[document["customer"]["customer_no"]]
    # PlanManager staff once typed the first number by hand: the scheme steps over it.
    add_dossier(planmanager.engine, next_id(planmanager.engine, dossiers), f"D2-{number}")
    first = run_custom_import(planmanager, number, None)
    before = snapshot(planmanager.engine)

    second = run_custom_import(planmanager, number, None, force=True)

    found = changes(before, snapshot(planmanager.engine))
    assert first.row["planmanager_file"] == f"D2-{number}.2"
    assert second.row["planmanager_file"] == f"D2-{number}.3"
    assert set(found) == {"dossiers", "dossier_clients", "invoices"}
    dossier = only(found["dossiers"]["added"])
    assert dossier["number"] == f"D2-{number}.3"
    assert list(found["dossier_clients"]["added"]) == [(dossier["id"], client_id, "invoiced")]
    [(old, new)] = found["invoices"]["changed"].values()
    assert (old["id"], old["dossier_id"], old["forced"]) == (
        int(first.row["invoice_id"]),
        int(first.row["dossier_id"]),
        False,
    )
    assert (new["id"], new["dossier_id"], new["forced"]) == (old["id"], dossier["id"], True)
    assert (second.row["outcome"], second.row["invoice_id"]) == ("reimported", str(old["id"]))


def test_empty_dossier_uses_the_client_found_by_vat_number(planmanager, sandbox):
    customer = make_customer(
        customer_no="C900003", name="Garage Henrard", vat_number="BE 0202.239.951",
        postal_code="6000", city="Charleroi",
    )  # fmt: skip
    sandbox.put_invoice("F26-900003", make_invoice(number="F26-900003", customer=customer))
    client_id = add_client(
        planmanager.engine, next_id(planmanager.engine, clients), "Garage Henrard SA",
        vat_number="202239951", postal_code="6001",
    )  # fmt: skip
    before = snapshot(planmanager.engine)

    result = run_custom_import(planmanager, "F26-900003", None)

    found = changes(before, snapshot(planmanager.engine))
    assert set(found) == {"dossiers", "dossier_clients", "invoices", "invoice_lines"}
    dossier_id = only(found["dossiers"]["added"])["id"]
    assert list(found["dossier_clients"]["added"]) == [(dossier_id, client_id, "invoiced")]
    assert result.row["client_id"] == str(client_id)


# -- runs that go wrong ----------------------------------------------------------------------


def test_retried_task_reports_the_import_of_its_earlier_try_without_redoing_it(
    planmanager, driver2_sandbox
):
    dataset = driver2_sandbox.dataset
    number = planmanager.take(dataset, "customer_not_in_dossier")
    typed = dataset.invoice(number)["planmanager_file"]
    first = run_custom_import(planmanager, number, typed, force=True, run_id="manual__retried")
    before = snapshot(planmanager.engine)

    retried = run_custom_import(planmanager, number, typed, force=True, run_id="manual__retried")

    assert changes(before, snapshot(planmanager.engine)) == {}
    assert retried.row == first.row
    assert (retried.row["outcome"], retried.row["forced"]) == ("imported", "true")


def test_unexpected_error_is_reported_as_failed_then_raised(
    planmanager, driver2_sandbox, monkeypatch
):
    from driver2_sync.driver2_client import Driver2AuthError

    number = planmanager.take(driver2_sandbox.dataset, "ok")
    monkeypatch.setenv(
        "AIRFLOW_CONN_DRIVER2_API",
        json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": driver2_sandbox.port,
                    "schema": "http", "password": "not-the-token"}),
    )  # fmt: skip
    before = snapshot(planmanager.engine)
    run_id = "manual__wrong_token"

    with pytest.raises(Driver2AuthError) as raised:
        tasks.custom_import(DAG_ID, run_id, {"driver_nr": number, "dossier": None, "force": False})

    assert changes(before, snapshot(planmanager.engine)) == {}
    report = planmanager.reports_dir / DAG_ID / report_folder_name(run_id) / "report.csv"
    with report.open(encoding="utf-8", newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert (row["driver2_number"], row["outcome"]) == (number, "failed")
    assert row["reason"] == (
        f"Unexpected error, nothing was imported: Driver2AuthError: {raised.value}. Airflow tries"
        " again by itself; if the last try fails too, trigger again later, and report it with"
        " the run's log if it keeps failing."
    )
    assert "not-the-token" not in row["reason"]


def test_unknown_param_that_reached_a_run_refuses_the_import(planmanager, driver2_sandbox):
    dataset = driver2_sandbox.dataset
    number = planmanager.take(dataset, "ok")
    params = {"driver_nr": number, "dossier": dataset.invoice(number)["planmanager_file"],
              "force": False}  # fmt: skip
    before = snapshot(planmanager.engine)

    result = run_custom_import(
        planmanager, number, params["dossier"], conf={**params, "dosier": "D-2026-0001"}
    )

    assert changes(before, snapshot(planmanager.engine)) == {}
    assert result.row["outcome"] == "failed"
    assert result.row["reason"] == (
        "The run was started with unknown param(s) dosier, so nothing was imported. Trigger"
        " again with Driver nr, Dossier and Force import only."
    )


# -- the DAG, run by Airflow ------------------------------------------------------------------


def test_form_has_three_explained_fields_and_only_people_can_start_it():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags" / f"{DAG_ID}.py"))
    dag = dag.dags[DAG_ID]

    assert {name: param.schema.get("title") for name, param in dag.params.items()} == {
        "driver_nr": "Driver nr", "dossier": "Dossier (PlanManager)", "force": "Force import",
    }  # fmt: skip
    assert all(len(param.description or "") > 60 for param in dag.params.values())
    assert (dag.params["dossier"], dag.params["force"]) == (None, False)
    assert [run_type.value for run_type in dag.allowed_run_types] == ["manual"]
    assert "`D2-<Driver nr>`" in dag.doc_md and "`D2-F26-004711.2`" in dag.doc_md


@pytest.mark.slow
def test_dag_run_succeeds_when_imported_and_fails_when_not(
    dag_runner, sqlite_planmanager_db, driver2_sandbox
):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dataset = driver2_sandbox.dataset
    seed = seed_planmanager(sqlite_planmanager_db.engine, dataset)
    dag_runner.use_driver2(driver2_sandbox)
    dag_runner.use_planmanager(sqlite_planmanager_db)
    ok = next(n for n in dataset.generated_numbers() if dataset.case(n) == "ok")
    unknown = next(n for n in dataset.generated_numbers() if dataset.case(n) == "unknown_customer")

    imported = dag_runner.run(DAG_ID, {"driver_nr": ok, "dossier": dossier_of(dataset, ok)})
    refused = dag_runner.run(
        DAG_ID, {"driver_nr": unknown, "dossier": dossier_of(dataset, unknown)}
    )

    assert (imported.state, refused.state) == ("success", "failed")
    [imported_row] = dag_runner.report_rows(DAG_ID, imported.run_id)
    [refused_row] = dag_runner.report_rows(DAG_ID, refused.run_id)
    assert (imported_row["outcome"], refused_row["outcome"]) == ("imported", "client_unknown")
    with create_session() as session:
        outcomes = {
            run_id: XComModel.deserialize_value(entry)
            for run_id in (imported.run_id, refused.run_id)
            for entry in session.scalars(
                XComModel.get_many(run_id=run_id, key="outcome", dag_ids=DAG_ID)
            )
        }
    client_id = seed.client_ids[dataset.invoice(ok)["customer"]["customer_no"]]
    assert outcomes[imported.run_id]["summary"] == (
        f"{ok} imported as PlanManager invoice {imported_row['invoice_id']} in dossier"
        f" {dossier_of(dataset, ok)}, for client {client_id}."
    )
    assert outcomes[refused.run_id]["summary"] == (
        f"{unknown} not imported (client_unknown): {refused_row['reason']}"
    )

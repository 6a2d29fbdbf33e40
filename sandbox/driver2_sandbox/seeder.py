"""Builds the PlanManager database a Driver2 sandbox dataset is meant to meet: clients, dossiers
and their parties, and the invoices imported before, so each invoice's sync outcome is known."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from itertools import islice
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, inspect, make_url, select, text
from sqlalchemy.sql import column, insert, table

from driver2_sandbox.data import Driver2Dataset, make_datetime
from driver2_sandbox.server import parse_shares

logger = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "include" / "sql"
DIALECT_FOLDERS = {
    "postgresql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
}
PLANMANAGER_TABLES = ("clients", "dossiers", "dossier_clients", "invoices", "invoice_lines")
BATCH_SIZE = 2000

# Lightweight tables: values go to the driver as given, so each dialect gets the types it binds.
CLIENTS = table(
    "clients",
    *map(column, "id name vat_number street postal_code city country email phone".split()),
    column("driver2_customer_no"),
)
DOSSIERS = table("dossiers", *map(column, ("id", "number", "plate", "vin", "status", "origin")))
DOSSIER_CLIENTS = table("dossier_clients", *map(column, ("dossier_id", "client_id", "role")))
INVOICES = table(
    "invoices",
    *map(column, "id dossier_id client_id driver2_number kind issue_date due_date".split()),
    *map(column, "currency net_total vat_total gross_total credited_driver2_number".split()),
    column("driver2_updated_at"),
    column("forced"),
)
INVOICE_LINES = table(
    "invoice_lines",
    *map(column, "invoice_id line_no kind description quantity unit_price".split()),
    column("vat_rate"),
    column("net_amount"),
)


class SeedError(RuntimeError):
    """The database cannot be seeded as asked (tables missing, or seeded already)."""


@dataclass
class SeedSummary:
    """How many rows of each table the seeding wrote, and how long it took."""

    clients: int = 0
    dossiers: int = 0
    dossier_clients: int = 0
    invoices: int = 0
    invoice_lines: int = 0
    seconds: float = 0.0
    # Where the rows went: Driver2 customer_no -> clients.id, dossier number -> dossiers.id.
    client_ids: dict[str, int] = field(default_factory=dict, repr=False)
    dossier_ids: dict[str, int] = field(default_factory=dict, repr=False)

    def counts(self) -> dict[str, int]:
        """Return the rows written per table."""
        return {
            "clients": self.clients,
            "dossiers": self.dossiers,
            "dossier_clients": self.dossier_clients,
            "invoices": self.invoices,
            "invoice_lines": self.invoice_lines,
        }


class ValueShaper:
    """Turns Python values into what the dialect's driver binds and PlanManager expects:
    UTC timestamps (aware on PostgreSQL, naive elsewhere), and text for SQLite's decimals."""

    def __init__(self, dialect_name: str) -> None:
        self.dialect_name = dialect_name

    def shape_money(
        self, value: str | Decimal | None, negate: bool = False
    ) -> Decimal | str | None:
        if value is None:
            return None
        amount = -Decimal(value) if negate else Decimal(value)
        # sqlite3 cannot bind Decimal; text keeps every digit.
        return str(amount) if self.dialect_name == "sqlite" else amount

    def shape_day(self, value: str | None) -> date | str | None:
        if value is None:
            return None
        return value if self.dialect_name == "sqlite" else date.fromisoformat(value)

    def shape_instant(self, instant_us: int) -> datetime | str:
        moment = make_datetime(instant_us)
        if self.dialect_name == "postgresql":
            return moment
        naive = moment.replace(tzinfo=None)
        if self.dialect_name == "sqlite":
            # The form SQLAlchemy's own DateTime writes on SQLite, so either side reads it back.
            return naive.strftime("%Y-%m-%d %H:%M:%S.%f")
        return naive


def find_ddl(dialect_name: str) -> Path:
    """Return the PlanManager DDL file for the dialect."""
    folder = DIALECT_FOLDERS.get(dialect_name)
    if folder is None:
        raise SeedError(f"no PlanManager DDL for the {dialect_name} dialect")
    return SQL_DIR / folder / "planmanager.sql"


def read_ddl_statements(path: Path) -> list[tuple[str, str]]:
    """Return (table name, CREATE TABLE statement) pairs of a DDL file, comments removed."""
    lines = [line.split("--", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()]
    statements = []
    for statement in "\n".join(lines).split(";"):
        match = re.search(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", statement, re.I)
        if match:
            statements.append((match.group(1), statement.strip()))
    return statements


def create_planmanager_schema(engine: Engine) -> list[str]:
    """Create the PlanManager tables the database lacks; return the names of those created."""
    existing = set(inspect(engine).get_table_names())
    created = []
    with engine.begin() as connection:
        for name, statement in read_ddl_statements(find_ddl(engine.dialect.name)):
            if name not in existing:
                connection.exec_driver_sql(statement)
                created.append(name)
    if created:
        logger.info("created PlanManager tables: %s", ", ".join(created))
    return created


def seed_planmanager(
    engine: Engine, dataset: Driver2Dataset, create_schema: bool = True
) -> SeedSummary:
    """Write the PlanManager rows the dataset's invoices are meant to meet and return the counts.

    Raises SeedError when tables are missing and create_schema is false, or when the dataset's
    dossiers are there already.
    """
    started = time.monotonic()
    if create_schema:
        create_planmanager_schema(engine)
    missing = set(PLANMANAGER_TABLES) - set(inspect(engine).get_table_names())
    if missing:
        raise SeedError(f"PlanManager tables missing: {', '.join(sorted(missing))}")

    shaper = ValueShaper(engine.dialect.name)
    summary = SeedSummary()
    with engine.begin() as connection:
        first_dossier = next(dataset.planmanager_dossiers(), None)
        if (
            first_dossier is not None
            and connection.execute(
                text("SELECT 1 FROM dossiers WHERE number = :number"),
                {"number": first_dossier.dossier_number},
            ).first()
        ):
            raise SeedError(f"dossier {first_dossier.dossier_number} exists: seeded already")
        next_ids = {
            target.name: _read_max_id(connection, target) + 1
            for target in (CLIENTS, DOSSIERS, INVOICES)
        }

        client_ids = summary.client_ids

        def client_rows() -> Iterator[dict]:
            for customer in dataset.planmanager_customers():
                client_ids[customer.customer_no] = next_ids["clients"] + len(client_ids)
                yield {"id": client_ids[customer.customer_no], **customer.as_client()}

        summary.clients = _insert_batches(connection, CLIENTS, client_rows())

        dossier_ids = summary.dossier_ids
        parties: list[dict] = []

        def dossier_rows() -> Iterator[dict]:
            for plan in dataset.planmanager_dossiers():
                dossier_id = next_ids["dossiers"] + len(dossier_ids)
                dossier_ids[plan.dossier_number] = dossier_id
                parties.extend(
                    {
                        "dossier_id": dossier_id,
                        "client_id": client_ids[dataset.customer_no_of(index)],
                        "role": role,
                    }
                    for index, role in plan.parties
                )
                yield {
                    "id": dossier_id,
                    "number": plan.dossier_number,
                    "plate": plan.plate,
                    "vin": plan.vin,
                    "status": "open" if plan.index % 3 else "closed",
                    "origin": "planmanager",
                }

        summary.dossiers = _insert_batches(connection, DOSSIERS, dossier_rows())
        summary.dossier_clients = _insert_batches(connection, DOSSIER_CLIENTS, parties)

        lines: list[dict] = []

        def invoice_rows() -> Iterator[dict]:
            for plan, document, updated_us in dataset.planmanager_imports():
                invoice_id = next_ids["invoices"] + summary.invoices
                summary.invoices += 1
                credit = document["type"] == "credit_note"
                lines.extend(_shape_line_rows(shaper, invoice_id, document["lines"], credit))
                totals = document["totals"]
                yield {
                    "id": invoice_id,
                    "dossier_id": dossier_ids[plan.dossier_number],
                    "client_id": client_ids[plan.customer_no],
                    "driver2_number": document["number"],
                    "kind": document["type"],
                    "issue_date": shaper.shape_day(document["issue_date"]),
                    "due_date": shaper.shape_day(document["due_date"]),
                    "currency": document["currency"],
                    "net_total": shaper.shape_money(totals["net"], credit),
                    "vat_total": shaper.shape_money(totals["vat"], credit),
                    "gross_total": shaper.shape_money(totals["gross"], credit),
                    "credited_driver2_number": document["credited_invoice"],
                    "driver2_updated_at": shaper.shape_instant(updated_us),
                    "forced": False,
                }

        _insert_batches(connection, INVOICES, invoice_rows())
        summary.invoice_lines = _insert_batches(connection, INVOICE_LINES, lines)

        if engine.dialect.name == "postgresql":
            # Ids were given explicitly, so the sequences must be moved past them.
            for target in (CLIENTS, DOSSIERS, INVOICES):
                connection.execute(
                    text("SELECT setval(pg_get_serial_sequence(:name, 'id'), :last_id)"),
                    {"name": target.name, "last_id": max(1, _read_max_id(connection, target))},
                )

    summary.seconds = round(time.monotonic() - started, 3)
    logger.info(
        "seeded PlanManager for %d invoices (seed %s) in %.1f s: %s",
        dataset.invoice_count,
        dataset.seed,
        summary.seconds,
        summary.counts(),
    )
    return summary


def _shape_line_rows(shaper: ValueShaper, invoice_id: int, lines: list[dict], credit: bool) -> list:
    return [
        {
            "invoice_id": invoice_id,
            "line_no": line["line_no"],
            "kind": line["kind"],
            "description": line["description"],
            "quantity": shaper.shape_money(line["quantity"]),
            "unit_price": shaper.shape_money(line["unit_price"]),
            "vat_rate": shaper.shape_money(line["vat_rate"]),
            "net_amount": shaper.shape_money(line["net_amount"], credit),
        }
        for line in lines
    ]


def _read_max_id(connection, target) -> int:
    return connection.execute(select(func.coalesce(func.max(target.c.id), 0))).scalar_one()


def _insert_batches(connection, target, rows: Iterable[dict]) -> int:
    statement = insert(target)
    iterator = iter(rows)
    written = 0
    started = time.monotonic()
    while batch := list(islice(iterator, BATCH_SIZE)):
        connection.execute(statement, batch)
        written += len(batch)
    elapsed = time.monotonic() - started
    logger.info(
        "inserted %d rows into %s (%.0f rows/s)", written, target.name, written / max(elapsed, 1e-6)
    )
    return written


def ensure_database(url: str) -> bool:
    """Create the database the URL names when the server lacks it (PostgreSQL, MariaDB);
    return True when it was created. SQLite creates its file on first connection."""
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() == "sqlite" or not name:
        return False
    if parsed.get_backend_name() == "postgresql":
        server = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        exists_sql = "SELECT 1 FROM pg_database WHERE datname = :name"
        create_sql = f'CREATE DATABASE "{_check_identifier(name)}"'
    else:
        server = create_engine(parsed.set(database=""), isolation_level="AUTOCOMMIT")
        exists_sql = "SELECT 1 FROM information_schema.schemata WHERE schema_name = :name"
        create_sql = f"CREATE DATABASE `{_check_identifier(name)}` CHARACTER SET utf8mb4"
    try:
        with server.connect() as connection:
            if connection.execute(text(exists_sql), {"name": name}).first():
                return False
            connection.exec_driver_sql(create_sql)
            return True
    finally:
        server.dispose()


def drop_database(url: str) -> None:
    """Drop the database the URL names, if it exists (PostgreSQL, MariaDB)."""
    parsed = make_url(url)
    name = _check_identifier(parsed.database or "")
    if parsed.get_backend_name() == "postgresql":
        server = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        drop_sql = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    else:
        server = create_engine(parsed.set(database=""), isolation_level="AUTOCOMMIT")
        drop_sql = f"DROP DATABASE IF EXISTS `{name}`"
    try:
        with server.connect() as connection:
            connection.exec_driver_sql(drop_sql)
    finally:
        server.dispose()


def _check_identifier(name: str) -> str:
    # Database names cannot be bound parameters; only plain identifiers are let through.
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise SeedError(f"not a plain database name: {name!r}")
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db-url", required=True, help="SQLAlchemy URL of the PlanManager DB")
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--share", action="append", default=[], metavar="CASE=FRACTION")
    parser.add_argument(
        "--create-schema",
        action="store_true",
        help="create the database and the PlanManager tables where missing",
    )
    parser.add_argument("--log-level", default="INFO")
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=arguments.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    if arguments.create_schema:
        ensure_database(arguments.db_url)
    engine = create_engine(arguments.db_url)
    try:
        dataset = Driver2Dataset(arguments.invoices, arguments.seed, parse_shares(arguments.share))
        summary = seed_planmanager(engine, dataset, create_schema=arguments.create_schema)
    except SeedError as error:
        logger.error("seeding failed: %s", error)
        return 1
    finally:
        engine.dispose()
    print(
        f"seeded {summary.clients} clients, {summary.dossiers} dossiers, "
        f"{summary.dossier_clients} dossier parties, {summary.invoices} invoices with "
        f"{summary.invoice_lines} lines in {summary.seconds:.1f} s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PlanManager database access on SQLAlchemy Core: lookups in batches, imports in transactions."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    delete,
    event,
    exc,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Connection

from driver2_sync.settings import PLANMANAGER_CONN_ID

log = logging.getLogger(__name__)

# Rows per IN (...) list: well under every dialect's bound-parameter limit.
LOOKUP_CHUNK = 500
# A batch whose transaction lost a race (a concurrent import of the same number, a deadlock) is
# tried again from the start this many times; the next attempt sees the other side's rows.
TRANSACTION_ATTEMPTS = 5


# What sqlite3 says of a file that no retry will open: missing, a folder, or not SQLite at all.
_SQLITE_FILE_UNUSABLE = ("unable to open", "file is not a database")


class PlanManagerNotUsable(Exception):
    """The `planmanager_db` connection leads to no PlanManager database: a setting to fix, which
    no retry can heal. The message names the database (never its password) and what to check."""


class UtcDateTime(TypeDecorator):
    """An instant, always aware and in UTC in Python.

    PostgreSQL keeps TIMESTAMPTZ; MariaDB and SQLite have no zone, so they hold UTC wall time.
    SQLite text is parsed with fromisoformat, which also reads what PlanManager itself wrote.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String())
        if dialect.name in ("mysql", "mariadb"):
            # A plain DATETIME keeps whole seconds: a watermark cut down to its second makes
            # every later run consider the last invoices again (MariaDB truncates), rounded up
            # it skips some (MySQL). Tables the sync made before this keep DATETIME(0) until
            # altered: ALTER TABLE driver2_sync_state MODIFY watermark DATETIME(6).
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=dialect.name == "postgresql"))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("a naive datetime cannot be stored as an instant")
        value = value.astimezone(UTC)
        if dialect.name == "postgresql":
            return value
        if dialect.name == "sqlite":
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")
        return value.replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ExactDecimal(TypeDecorator):
    """A NUMERIC column read and written as Decimal on every dialect, never through float.

    sqlite3 cannot bind a Decimal, so SQLite gets the decimal's text.
    """

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int):
        super().__init__(precision, scale, asdecimal=True)
        self.quantum = Decimal(1).scaleb(-scale)

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String())
        return dialect.type_descriptor(Numeric(self.impl.precision, self.impl.scale))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money and quantities are Decimal, not {type(value).__name__}")
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return Decimal(str(value)).quantize(self.quantum)


metadata = MetaData()

clients = Table(
    "clients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("vat_number", Text),
    Column("street", Text),
    Column("postal_code", Text),
    Column("city", Text),
    Column("country", String(2), nullable=False),
    Column("email", Text),
    Column("phone", Text),
    Column("driver2_customer_no", Text, unique=True),
    Column("created_at", UtcDateTime),
)
dossiers = Table(
    "dossiers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("number", Text, nullable=False, unique=True),
    Column("plate", Text),
    Column("vin", Text),
    Column("status", Text, nullable=False),
    Column("origin", Text, nullable=False),
    Column("created_at", UtcDateTime),
)
dossier_clients = Table(
    "dossier_clients",
    metadata,
    Column("dossier_id", Integer, primary_key=True),
    Column("client_id", Integer, primary_key=True),
    Column("role", Text, primary_key=True),
)
invoices = Table(
    "invoices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("dossier_id", Integer, nullable=False),
    Column("client_id", Integer, nullable=False),
    Column("driver2_number", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("issue_date", Date, nullable=False),
    Column("due_date", Date),
    Column("currency", String(3), nullable=False),
    Column("net_total", ExactDecimal(14, 2), nullable=False),
    Column("vat_total", ExactDecimal(14, 2), nullable=False),
    Column("gross_total", ExactDecimal(14, 2), nullable=False),
    Column("credited_driver2_number", Text),
    Column("driver2_updated_at", UtcDateTime, nullable=False),
    Column("forced", Boolean, nullable=False),
    Column("imported_at", UtcDateTime),
)
invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("invoice_id", Integer, primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("quantity", ExactDecimal(14, 3)),
    Column("unit_price", ExactDecimal(14, 4)),
    Column("vat_rate", ExactDecimal(5, 2)),
    Column("net_amount", ExactDecimal(14, 2)),
)

# The sync's own bookkeeping, created by the sync when missing.
sync_metadata = MetaData()

sync_state = Table(
    "driver2_sync_state",
    sync_metadata,
    Column("name", String(64), primary_key=True),
    Column("watermark", UtcDateTime),
    # Numbers already considered at exactly the watermark: updated_since is inclusive, so the
    # next run gets them again and drops them instead of reporting them a second time.
    Column("boundary_numbers", Text, nullable=False),
    Column("last_run_id", String(250), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
sync_imports = Table(
    "driver2_sync_imports",
    sync_metadata,
    Column("run_id", String(250), primary_key=True),
    Column("driver2_number", String(64), primary_key=True),
    Column("invoice_id", Integer, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("imported_at", UtcDateTime, nullable=False),
)
sync_runs = Table(
    "driver2_sync_runs",
    sync_metadata,
    Column("dag_id", String(250), primary_key=True),
    Column("run_id", String(250), primary_key=True),
    Column("finished_at", UtcDateTime, nullable=False),
    Column("considered", Integer, nullable=False),
    Column("imported", Integer, nullable=False),
    Column("summary", Text, nullable=False),
)


def planmanager_url(
    conn_type: str,
    host: str | None,
    port: int | None = None,
    login: str | None = None,
    password: str | None = None,
    schema: str | None = None,
) -> URL:
    """Return the SQLAlchemy URL for an Airflow connection of type postgres, mysql or sqlite."""
    if conn_type == "sqlite":
        host = (host or "").strip()
        if not host:
            raise PlanManagerNotUsable(
                f"Connection '{PLANMANAGER_CONN_ID}' is of type sqlite but names no database"
                " file: set its host to the PlanManager file's path. Nothing was imported."
            )
        # Read-write, never create: a mistyped path must fail, not start an empty PlanManager.
        return URL.create(
            "sqlite", database=f"file:{quote(host, safe='/')}", query={"mode": "rw", "uri": "true"}
        )
    drivers = {"postgres": "postgresql+psycopg2", "mysql": "mysql+pymysql"}
    if conn_type not in drivers:
        raise PlanManagerNotUsable(
            f"Connection '{PLANMANAGER_CONN_ID}' is of type {conn_type!r}, which PlanManager's"
            " database cannot be: use postgres, mysql or sqlite. Nothing was imported."
        )
    query = {"charset": "utf8mb4"} if conn_type == "mysql" else {}
    return URL.create(
        drivers[conn_type],
        username=login or None,
        password=password or None,
        host=host or None,
        port=port or None,
        database=schema or None,
        query=query,
    )


def create_planmanager_engine(conn_id: str = PLANMANAGER_CONN_ID) -> Engine:
    """Return an engine on the PlanManager database named by an Airflow connection."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    url = planmanager_url(
        conn.conn_type, conn.host, conn.port, conn.login, conn.password, conn.schema
    )
    log.info("PlanManager database: %s (connection %s)", describe_database(url), conn_id)
    return create_engine_for_url(url)


def create_engine_for_url(url: URL | str) -> Engine:
    """Return an engine set up for the sync's transactions on that dialect."""
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        _make_sqlite_transactional(engine)
    return engine


def _make_sqlite_transactional(engine: Engine) -> None:
    # pysqlite defers BEGIN until the first write, so two writers can both read and then fail
    # to upgrade their lock. BEGIN IMMEDIATE takes the write lock at the start instead, and
    # the busy time-out makes a concurrent writer wait rather than fail.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA busy_timeout = 60000")
        dbapi_connection.execute("PRAGMA foreign_keys = ON")

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


@dataclass(frozen=True)
class ClientRecord:
    id: int
    name: str
    vat_number: str | None = field(repr=False)  # never printed whole by a log or traceback
    postal_code: str | None
    country: str | None
    driver2_customer_no: str | None


@dataclass(frozen=True)
class DossierRecord:
    id: int
    number: str


@dataclass(frozen=True)
class ImportedInvoice:
    id: int
    driver2_number: str
    driver2_updated_at: datetime
    imported_at: datetime | None
    forced: bool


@dataclass(frozen=True)
class SyncState:
    watermark: datetime | None
    boundary_numbers: frozenset[str]
    last_run_id: str | None


class PlanManagerStore:
    """The PlanManager tables the sync reads and writes, and its own driver2_sync_* tables."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def ensure_sync_tables(self) -> None:
        """Create the driver2_sync_* tables that are missing; a concurrent creator is harmless.

        Raises PlanManagerNotUsable, creating nothing, when the database cannot be opened for a
        reason no retry heals or lacks PlanManager's own tables.
        """
        self.check_planmanager_tables()
        # Another process may create a table between our check and our CREATE. MariaDB commits
        # each CREATE on its own, so that can happen once per table: each lost race means one
        # table fewer to make, and one attempt more than there are tables always suffices.
        attempts = len(sync_metadata.tables) + 1
        for attempt in range(1, attempts + 1):
            try:
                sync_metadata.create_all(self.engine, checkfirst=True)
                return
            except exc.DatabaseError:
                if attempt == attempts:
                    raise

    def check_planmanager_tables(self) -> None:
        """Raise PlanManagerNotUsable unless the database holds every PlanManager table."""
        try:
            present = set(inspect(self.engine).get_table_names())
        except exc.DatabaseError as error:
            if self.engine.dialect.name != "sqlite" or not any(
                words in str(error.orig) for words in _SQLITE_FILE_UNUSABLE
            ):
                raise  # a server down or a file locked for a while: the task's retries wait
            raise PlanManagerNotUsable(
                f"The PlanManager SQLite database {_sqlite_path(self.engine.url)} cannot be opened"
                f" ({_brief(error)}): check that the file exists, is PlanManager's and is"
                f" writable, and the host of connection '{PLANMANAGER_CONN_ID}'. Nothing was"
                " imported."
            ) from None
        missing = [name for name in metadata.tables if name not in present]
        if missing:
            raise PlanManagerNotUsable(
                f"The database {describe_database(self.engine.url)} of connection"
                f" '{PLANMANAGER_CONN_ID}' is not PlanManager's:"
                f" it has no table {', '.join(missing)}. Check the connection's host and schema."
                " Nothing was imported or created."
            )

    def iter_clients(self, conn: Connection | None = None) -> Iterator[ClientRecord]:
        """Yield every PlanManager client with the fields the client check reads.

        Inside a transaction, pass its connection: on SQLite a second connection would wait for
        the write lock that the transaction itself holds.
        """
        if conn is None:
            with self.engine.connect() as own_conn:
                yield from self.iter_clients(own_conn)
            return
        query = select(
            clients.c.id,
            clients.c.name,
            clients.c.vat_number,
            clients.c.postal_code,
            clients.c.country,
            clients.c.driver2_customer_no,
        ).order_by(clients.c.id)
        # On the statement, not the connection: a connection keeps its options for what follows.
        for row in conn.execute(query.execution_options(yield_per=5000)):
            yield ClientRecord(*row)

    def find_dossiers(
        self, numbers: Iterable[str], conn: Connection | None = None
    ) -> dict[str, DossierRecord]:
        """Return the dossiers with these normalised numbers, by number."""
        if conn is None:
            with self.engine.connect() as own_conn:
                return self.find_dossiers(numbers, own_conn)
        found: dict[str, DossierRecord] = {}
        for chunk in _chunks(sorted(set(numbers))):
            query = select(dossiers.c.id, dossiers.c.number).where(dossiers.c.number.in_(chunk))
            for row in conn.execute(query):
                found[row.number] = DossierRecord(row.id, row.number)
        return found

    def find_dossier_parties(
        self, dossier_ids: Iterable[int], conn: Connection | None = None
    ) -> dict[int, set[int]]:
        """Return the client ids linked to each of these dossiers, whatever their role."""
        if conn is None:
            with self.engine.connect() as own_conn:
                return self.find_dossier_parties(dossier_ids, own_conn)
        parties: dict[int, set[int]] = {}
        for chunk in _chunks(sorted(set(dossier_ids))):
            query = select(dossier_clients.c.dossier_id, dossier_clients.c.client_id).where(
                dossier_clients.c.dossier_id.in_(chunk)
            )
            for dossier_id, client_id in conn.execute(query):
                parties.setdefault(dossier_id, set()).add(client_id)
        return parties

    def find_imported(
        self, numbers: Iterable[str], conn: Connection | None = None
    ) -> dict[str, ImportedInvoice]:
        """Return the PlanManager invoices already imported under these Driver2 numbers."""
        if conn is None:
            with self.engine.connect() as own_conn:
                return self.find_imported(numbers, own_conn)
        found: dict[str, ImportedInvoice] = {}
        for chunk in _chunks(sorted(set(numbers))):
            query = select(
                invoices.c.id,
                invoices.c.driver2_number,
                invoices.c.driver2_updated_at,
                invoices.c.imported_at,
                invoices.c.forced,
            ).where(invoices.c.driver2_number.in_(chunk))
            for row in conn.execute(query):
                found[row.driver2_number] = ImportedInvoice(*row)
        return found

    def find_run_imports(
        self, run_id: str, numbers: Iterable[str], conn: Connection
    ) -> dict[str, tuple[int, str]]:
        """Return (invoice id, outcome) of what this run already imported, by Driver2 number."""
        found: dict[str, tuple[int, str]] = {}
        for chunk in _chunks(sorted(set(numbers))):
            query = select(
                sync_imports.c.driver2_number, sync_imports.c.invoice_id, sync_imports.c.outcome
            ).where(sync_imports.c.run_id == run_id, sync_imports.c.driver2_number.in_(chunk))
            for number, invoice_id, outcome in conn.execute(query):
                found[number] = (invoice_id, outcome)
        return found

    def run_in_transaction(self, work, *, what: str):
        """Run work(conn) in one transaction, again from the start when it lost a race.

        A unique-key violation (another process imported the same Driver2 number first) or a
        deadlock rolls everything back; the next attempt sees the winner's committed rows.
        """
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except (exc.IntegrityError, exc.OperationalError) as error:
                if attempt == TRANSACTION_ATTEMPTS or not _is_race(error):
                    log.error("%s failed after %d attempt(s): %s", what, attempt, _brief(error))
                    raise
                log.warning(
                    "%s lost a race with another writer (attempt %d of %d): %s; trying again",
                    what,
                    attempt,
                    TRANSACTION_ATTEMPTS,
                    _brief(error),
                )
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    def insert_invoices(
        self, conn: Connection, headers: Sequence[dict], lines: Sequence[dict]
    ) -> dict[str, int]:
        """Insert invoice headers and their lines; return the new invoice ids by Driver2 number.

        `lines` carry `driver2_number` in place of `invoice_id`.
        """
        if not headers:
            return {}
        conn.execute(insert(invoices), list(headers))
        ids: dict[str, int] = {}
        for chunk in _chunks([header["driver2_number"] for header in headers]):
            query = select(invoices.c.driver2_number, invoices.c.id).where(
                invoices.c.driver2_number.in_(chunk)
            )
            ids.update(dict(conn.execute(query).all()))
        line_rows = [
            {**{k: v for k, v in line.items() if k != "driver2_number"},
             "invoice_id": ids[line["driver2_number"]]}
            for line in lines
        ]  # fmt: skip
        if line_rows:
            conn.execute(insert(invoice_lines), line_rows)
        return ids

    def replace_invoice(
        self, conn: Connection, invoice_id: int, header: dict, lines: Sequence[dict]
    ) -> None:
        """Overwrite an imported invoice's header and replace all its lines."""
        values = {k: v for k, v in header.items() if k != "driver2_number"}
        conn.execute(update(invoices).where(invoices.c.id == invoice_id).values(**values))
        conn.execute(delete(invoice_lines).where(invoice_lines.c.invoice_id == invoice_id))
        if lines:
            conn.execute(
                insert(invoice_lines),
                [
                    {**{k: v for k, v in line.items() if k != "driver2_number"},
                     "invoice_id": invoice_id}
                    for line in lines
                ],
            )  # fmt: skip

    def lock_imported(self, conn: Connection, number: str) -> ImportedInvoice | None:
        """Return the imported invoice with this number, locked until the transaction ends."""
        query = select(
            invoices.c.id,
            invoices.c.driver2_number,
            invoices.c.driver2_updated_at,
            invoices.c.imported_at,
            invoices.c.forced,
        ).where(invoices.c.driver2_number == number)
        if conn.dialect.name != "sqlite":
            query = query.with_for_update()
        row = conn.execute(query).first()
        return ImportedInvoice(*row) if row else None

    def record_run_imports(self, conn: Connection, run_id: str, imports: dict[str, tuple]) -> None:
        """Mark, in the import's own transaction, which invoices this run imported."""
        if not imports:
            return
        now = datetime.now(UTC)
        conn.execute(
            insert(sync_imports),
            [
                {
                    "run_id": run_id,
                    "driver2_number": number,
                    "invoice_id": invoice_id,
                    "outcome": outcome,
                    "imported_at": now,
                }
                for number, (invoice_id, outcome) in imports.items()
            ],
        )

    def read_sync_state(self, name: str) -> SyncState:
        """Return where the last successful run stopped reading Driver2 (nothing: first run)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(sync_state).where(sync_state.c.name == name)).first()
        if row is None:
            return SyncState(None, frozenset(), None)
        return SyncState(
            row.watermark, frozenset(json.loads(row.boundary_numbers)), row.last_run_id
        )

    def advance_sync_state(
        self,
        name: str,
        watermark: datetime | None,
        boundary_numbers: Iterable[str],
        run_id: str,
        summary: dict[str, Any],
    ) -> None:
        """Move the watermark forward (never back) and record the run, in one transaction."""

        def work(conn: Connection) -> None:
            current = conn.execute(
                select(sync_state.c.watermark, sync_state.c.boundary_numbers).where(
                    sync_state.c.name == name
                )
            ).first()
            values = {
                "watermark": watermark,
                "boundary_numbers": json.dumps(sorted(boundary_numbers)),
                "last_run_id": run_id,
                "updated_at": datetime.now(UTC),
            }
            if current is None:
                if watermark is not None:
                    conn.execute(insert(sync_state).values(name=name, **values))
            elif watermark is not None and (
                current.watermark is None or watermark > current.watermark
            ):
                conn.execute(update(sync_state).where(sync_state.c.name == name).values(**values))
            elif watermark is not None and watermark == current.watermark:
                # Same instant: new ties join the numbers already considered at it, which this
                # run's extract left out and so did not name.
                known = json.loads(current.boundary_numbers or "[]")
                values["boundary_numbers"] = json.dumps(sorted({*known, *boundary_numbers}))
                conn.execute(update(sync_state).where(sync_state.c.name == name).values(**values))
            self.record_run(conn, name, run_id, summary)

        self.run_in_transaction(work, what=f"advancing the sync state after {run_id}")

    def record_run(self, conn: Connection, dag_id: str, run_id: str, summary: dict) -> None:
        """Keep the run's summary in driver2_sync_runs (replacing it when the run is retried)."""
        conn.execute(
            delete(sync_runs).where(sync_runs.c.dag_id == dag_id, sync_runs.c.run_id == run_id)
        )
        conn.execute(
            insert(sync_runs).values(
                dag_id=dag_id,
                run_id=run_id,
                finished_at=datetime.now(UTC),
                considered=int(summary.get("considered", 0)),
                imported=int(summary.get("imported", 0)),
                summary=json.dumps(summary, default=str, sort_keys=True),
            )
        )

    def read_run_summary(self, dag_id: str, run_id: str) -> dict | None:
        """Return the summary that the run recorded as it moved the watermark, or None."""
        with self.engine.connect() as conn:
            summary = conn.execute(
                select(sync_runs.c.summary).where(
                    sync_runs.c.dag_id == dag_id, sync_runs.c.run_id == run_id
                )
            ).scalar_one_or_none()
        return None if summary is None else json.loads(summary)

    def count_rows(self, table: Table) -> int:
        """Return how many rows a table holds (used by checks and the demo's summary)."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _chunks(values: Sequence, size: int = LOOKUP_CHUNK) -> Iterator[Sequence]:
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start : start + size]


def is_unreachable(error: BaseException) -> bool:
    """Return True when the database could not be reached, or dropped the connection midway.

    Nothing in one invoice causes that, so no invoice may be reported `failed` for it: the step
    must fail, and Airflow retries it once the database is back. An error with no statement
    came while connecting or committing; one that a bad value causes always has its statement.
    """
    if not isinstance(error, exc.DBAPIError):
        return False
    return error.connection_invalidated or (error.statement is None and not _is_race(error))


def _is_race(error: exc.DBAPIError) -> bool:
    if isinstance(error, exc.IntegrityError):
        return True
    text = str(error.orig).lower()
    return any(word in text for word in ("deadlock", "lock wait timeout", "database is locked"))


def describe_database(url: URL) -> str:
    """Return the database's URL for a log line or a message: no password, a SQLite file as
    its plain path."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///{_sqlite_path(url)}"
    return url.render_as_string(hide_password=True)


def _sqlite_path(url: URL) -> str:
    return unquote((url.database or "").removeprefix("file:"))


def _brief(error: exc.DBAPIError) -> str:
    return str(error.orig).splitlines()[0][:200] if error.orig else type(error).__name__

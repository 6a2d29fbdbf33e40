"""Pytest fixtures for throwaway PlanManager databases on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from driver2_sandbox.seeder import seed_planmanager
from driver2_sync.store import PlanManagerStore, create_engine_for_url

SQL_DIR = Path(__file__).resolve().parents[1] / "include" / "sql"
SERVER_URLS = {
    "postgresql": URL.create("postgresql+psycopg2", username="postgres", host="127.0.0.1",
                             port=5432, database="postgres"),
    "mysql": URL.create("mysql+pymysql", username="root", host="127.0.0.1", port=3306,
                        query={"charset": "utf8mb4"}),
}  # fmt: skip
DIALECTS = ("sqlite", "postgresql", "mysql")


def apply_planmanager_schema(engine) -> None:
    """Create the PlanManager tables from the project's DDL for the engine's dialect."""
    ddl = (SQL_DIR / engine.dialect.name / "planmanager.sql").read_text(encoding="utf-8")
    statements = [s for s in _strip_comments(ddl).split(";") if s.strip()]
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def _strip_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


class ThrowawayDatabase:
    """A fresh database of one dialect, with the PlanManager tables, dropped at the end."""

    def __init__(self, dialect: str, tmp_path: Path):
        self.dialect = dialect
        self.name = f"pm_test_{uuid.uuid4().hex[:12]}"
        if dialect == "sqlite":
            self.path = tmp_path / f"{self.name}.db"
            self.url = URL.create("sqlite", database=str(self.path))
        else:
            server = SERVER_URLS[dialect]
            admin = create_engine(server, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f"CREATE DATABASE {self.name}"))
            admin.dispose()
            self.url = server.set(database=self.name)
        self.engine = create_engine_for_url(self.url)
        apply_planmanager_schema(self.engine)

    def airflow_connection_json(self) -> str:
        """Return the `planmanager_db` connection in Airflow's JSON form."""
        import json

        if self.dialect == "sqlite":
            return json.dumps({"conn_type": "sqlite", "host": str(self.path)})
        conn_type = "postgres" if self.dialect == "postgresql" else "mysql"
        return json.dumps(
            {
                "conn_type": conn_type,
                "host": self.url.host,
                "port": self.url.port,
                "login": self.url.username,
                "schema": self.name,
            }
        )

    def drop(self) -> None:
        self.engine.dispose()
        if self.dialect == "sqlite":
            return
        admin = create_engine(SERVER_URLS[self.dialect], isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if self.dialect == "postgresql":
                conn.execute(text(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {self.name}"))
        admin.dispose()


@pytest.fixture(params=DIALECTS)
def planmanager_db(request, tmp_path) -> ThrowawayDatabase:
    """A fresh PlanManager database, once per dialect."""
    database = ThrowawayDatabase(request.param, tmp_path)
    yield database
    database.drop()


@pytest.fixture
def sqlite_planmanager_db(tmp_path) -> ThrowawayDatabase:
    database = ThrowawayDatabase("sqlite", tmp_path)
    yield database
    database.drop()


@pytest.fixture
def planmanager_store(planmanager_db) -> PlanManagerStore:
    store = PlanManagerStore(planmanager_db.engine)
    store.ensure_sync_tables()
    return store


@pytest.fixture
def seeded_database(sandbox, tmp_path):
    """A factory of PlanManager databases seeded for the module's `sandbox` fixture, identical
    ids included, each dropped after the test."""
    made: list[ThrowawayDatabase] = []

    def make(dialect: str) -> ThrowawayDatabase:
        database = ThrowawayDatabase(dialect, tmp_path)
        made.append(database)
        seed_planmanager(database.engine, sandbox.dataset)
        return database

    yield make
    for database in made:
        database.drop()

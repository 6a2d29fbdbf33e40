-- PlanManager tables on SQLite, for a single machine and the demo. PlanManager owns these tables;
-- the project creates them only for the demo, the seeder and the tests. Timestamps are UTC text.

CREATE TABLE clients (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT NOT NULL,
    vat_number          TEXT,
    street              TEXT,
    postal_code         TEXT,
    city                TEXT,
    country             CHAR(2) NOT NULL DEFAULT 'BE',
    email               TEXT,
    phone               TEXT,
    driver2_customer_no TEXT UNIQUE,
    created_at          TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE dossiers (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    number     TEXT NOT NULL UNIQUE,
    plate      TEXT,
    vin        TEXT,
    status     TEXT NOT NULL DEFAULT 'open',
    origin     TEXT NOT NULL DEFAULT 'planmanager',
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE dossier_clients (
    dossier_id INTEGER NOT NULL REFERENCES dossiers (id),
    client_id  INTEGER NOT NULL REFERENCES clients (id),
    role       TEXT NOT NULL,
    PRIMARY KEY (dossier_id, client_id, role)
);

CREATE TABLE invoices (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    dossier_id              INTEGER NOT NULL REFERENCES dossiers (id),
    client_id               INTEGER NOT NULL REFERENCES clients (id),
    driver2_number          TEXT NOT NULL UNIQUE,
    kind                    TEXT NOT NULL,
    issue_date              DATE NOT NULL,
    due_date                DATE,
    currency                CHAR(3) NOT NULL,
    net_total               NUMERIC(14, 2) NOT NULL,
    vat_total               NUMERIC(14, 2) NOT NULL,
    gross_total             NUMERIC(14, 2) NOT NULL,
    credited_driver2_number TEXT,
    driver2_updated_at      TIMESTAMP NOT NULL,
    forced                  BOOLEAN NOT NULL DEFAULT FALSE,
    imported_at             TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE invoice_lines (
    invoice_id  INTEGER NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    line_no     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    description TEXT NOT NULL,
    quantity    NUMERIC(14, 3),
    unit_price  NUMERIC(14, 4),
    vat_rate    NUMERIC(5, 2),
    net_amount  NUMERIC(14, 2),
    PRIMARY KEY (invoice_id, line_no)
);

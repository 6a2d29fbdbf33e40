-- PlanManager tables on MariaDB / MySQL, as the sync expects them. PlanManager owns these tables;
-- the project creates them only for the demo, the seeder and the tests. Timestamps are UTC.

CREATE TABLE clients (
    id                  BIGINT AUTO_INCREMENT PRIMARY KEY,
    name                TEXT NOT NULL,
    vat_number          TEXT,
    street              TEXT,
    postal_code         VARCHAR(32),
    city                TEXT,
    country             CHAR(2) NOT NULL DEFAULT 'BE',
    email               TEXT,
    phone               TEXT,
    driver2_customer_no VARCHAR(64) UNIQUE,
    created_at          DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE dossiers (
    id         BIGINT AUTO_INCREMENT PRIMARY KEY,
    number     VARCHAR(64) NOT NULL UNIQUE,
    plate      TEXT,
    vin        TEXT,
    status     VARCHAR(32) NOT NULL DEFAULT 'open',
    origin     VARCHAR(32) NOT NULL DEFAULT 'planmanager',
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE dossier_clients (
    dossier_id BIGINT NOT NULL,
    client_id  BIGINT NOT NULL,
    role       VARCHAR(32) NOT NULL,
    PRIMARY KEY (dossier_id, client_id, role),
    FOREIGN KEY (dossier_id) REFERENCES dossiers (id),
    FOREIGN KEY (client_id) REFERENCES clients (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE invoices (
    id                      BIGINT AUTO_INCREMENT PRIMARY KEY,
    dossier_id              BIGINT NOT NULL,
    client_id               BIGINT NOT NULL,
    driver2_number          VARCHAR(64) NOT NULL UNIQUE,
    kind                    VARCHAR(16) NOT NULL,
    issue_date              DATE NOT NULL,
    due_date                DATE,
    currency                CHAR(3) NOT NULL,
    net_total               DECIMAL(14, 2) NOT NULL,
    vat_total               DECIMAL(14, 2) NOT NULL,
    gross_total             DECIMAL(14, 2) NOT NULL,
    credited_driver2_number VARCHAR(64),
    driver2_updated_at      DATETIME(6) NOT NULL,
    forced                  BOOLEAN NOT NULL DEFAULT FALSE,
    imported_at             DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    FOREIGN KEY (dossier_id) REFERENCES dossiers (id),
    FOREIGN KEY (client_id) REFERENCES clients (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE invoice_lines (
    invoice_id  BIGINT NOT NULL,
    line_no     INTEGER NOT NULL,
    kind        VARCHAR(16) NOT NULL,
    description TEXT NOT NULL,
    quantity    DECIMAL(14, 3),
    unit_price  DECIMAL(14, 4),
    vat_rate    DECIMAL(5, 2),
    net_amount  DECIMAL(14, 2),
    PRIMARY KEY (invoice_id, line_no),
    FOREIGN KEY (invoice_id) REFERENCES invoices (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

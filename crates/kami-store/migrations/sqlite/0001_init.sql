-- Kami schema for SQLite. Timestamps are milliseconds since the Unix epoch;
-- flags are 0/1 integers. Every tenant table carries merchant_id.

CREATE TABLE merchants (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
INSERT INTO merchants (id, name, created_at) VALUES (1, 'Kami', 0);

CREATE TABLE categories (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id INTEGER NOT NULL REFERENCES merchants (id),
    name        TEXT    NOT NULL,
    sort_order  INTEGER NOT NULL DEFAULT 0,
    visible     INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL,
    UNIQUE (merchant_id, name)
);

CREATE TABLE products (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id         INTEGER NOT NULL REFERENCES merchants (id),
    category_id         INTEGER REFERENCES categories (id),
    name                TEXT    NOT NULL,
    description         TEXT    NOT NULL DEFAULT '',
    price               INTEGER NOT NULL,
    currency            TEXT    NOT NULL,
    min_quantity        INTEGER NOT NULL DEFAULT 1,
    max_quantity        INTEGER NOT NULL DEFAULT 10,
    per_buyer_limit     INTEGER,
    sale_starts_at      INTEGER,
    sale_ends_at        INTEGER,
    visible             INTEGER NOT NULL DEFAULT 1,
    delivery_mode       TEXT    NOT NULL DEFAULT 'auto',
    wholesale_tiers     TEXT    NOT NULL DEFAULT '[]',
    low_stock_threshold INTEGER NOT NULL DEFAULT 0,
    sort_order          INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);

-- An import stages its cards under a batch and makes them available in one
-- statement at the end, so an aborted import leaves nothing sellable behind.
CREATE TABLE card_batches (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id  INTEGER NOT NULL REFERENCES merchants (id),
    product_id   INTEGER NOT NULL REFERENCES products (id),
    status       TEXT    NOT NULL,            -- importing / committed / aborted
    imported     INTEGER NOT NULL DEFAULT 0,
    duplicates   INTEGER NOT NULL DEFAULT 0,
    rejected     INTEGER NOT NULL DEFAULT 0,
    heartbeat_at INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
);

CREATE TABLE cards (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id    INTEGER NOT NULL REFERENCES merchants (id),
    product_id     INTEGER NOT NULL REFERENCES products (id),
    batch_id       INTEGER NOT NULL REFERENCES card_batches (id),
    ciphertext     BLOB    NOT NULL,
    nonce          BLOB    NOT NULL,
    key_id         INTEGER NOT NULL,
    fingerprint    BLOB    NOT NULL,
    status         TEXT    NOT NULL,          -- staged / available / reserved / sold / void
    order_id       INTEGER,
    reserved_until INTEGER,
    created_at     INTEGER NOT NULL,
    sold_at        INTEGER,
    -- Kept after sale: a re-import of a sold code is caught as a duplicate.
    UNIQUE (product_id, fingerprint)
);
CREATE INDEX cards_available ON cards (product_id, id) WHERE status = 'available';
CREATE INDEX cards_by_order ON cards (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX cards_staged ON cards (batch_id) WHERE status = 'staged';

CREATE TABLE orders (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id         INTEGER NOT NULL REFERENCES merchants (id),
    order_no            TEXT    NOT NULL UNIQUE,
    product_id          INTEGER NOT NULL REFERENCES products (id),
    quantity            INTEGER NOT NULL,
    unit_price          INTEGER NOT NULL,
    discount            INTEGER NOT NULL DEFAULT 0,
    amount              INTEGER NOT NULL,
    currency            TEXT    NOT NULL,
    email               TEXT    NOT NULL,
    query_password_hash BLOB,
    access_token_hash   BLOB    NOT NULL,
    buyer_ip            TEXT,
    channel             TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    paid_at             INTEGER,
    delivered_at        INTEGER,
    idempotency_key     TEXT
);
CREATE INDEX orders_pending_expiry ON orders (expires_at) WHERE status = 'pending';
CREATE INDEX orders_unfulfilled ON orders (product_id, id) WHERE status = 'paid_unfulfilled';
CREATE INDEX orders_by_email ON orders (merchant_id, email, id);
CREATE INDEX orders_by_status ON orders (merchant_id, status, id);

-- Quantity each buyer holds per product, kept only for products with a
-- per-buyer limit; the conditional upsert on it enforces the limit atomically.
CREATE TABLE buyer_purchases (
    product_id INTEGER NOT NULL REFERENCES products (id),
    email      TEXT    NOT NULL,
    quantity   INTEGER NOT NULL,
    PRIMARY KEY (product_id, email)
);

CREATE TABLE payments (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id INTEGER NOT NULL REFERENCES merchants (id),
    order_id    INTEGER NOT NULL REFERENCES orders (id),
    channel     TEXT    NOT NULL,
    trade_no    TEXT    NOT NULL,
    amount      INTEGER NOT NULL,
    currency    TEXT    NOT NULL,
    raw         TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    -- What makes notifications idempotent.
    UNIQUE (channel, trade_no)
);
CREATE INDEX payments_by_order ON payments (order_id);

CREATE TABLE order_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id INTEGER NOT NULL REFERENCES merchants (id),
    order_id    INTEGER REFERENCES orders (id), -- NULL when a notification named no known order
    order_no    TEXT,
    kind        TEXT    NOT NULL,
    detail      TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);
CREATE INDEX order_events_by_order ON order_events (order_id, id);

CREATE TABLE idempotency_keys (
    merchant_id    INTEGER NOT NULL REFERENCES merchants (id),
    scope          TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    request_hash   BLOB    NOT NULL,
    status_code    INTEGER NOT NULL,
    response       BLOB    NOT NULL,          -- sealed: it may hold an access token
    response_nonce BLOB    NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL DEFAULT '{}',
    dedupe_key   TEXT    UNIQUE,
    run_at       INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 10,
    locked_until INTEGER,
    locked_by    TEXT,
    last_error   TEXT,
    status       TEXT    NOT NULL DEFAULT 'queued', -- queued / dead
    created_at   INTEGER NOT NULL
);
CREATE INDEX jobs_due ON jobs (run_at) WHERE status = 'queued';

CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id  INTEGER NOT NULL REFERENCES merchants (id),
    name         TEXT    NOT NULL,
    key_hash     BLOB    NOT NULL UNIQUE,
    prefix       TEXT    NOT NULL,
    scopes       TEXT    NOT NULL DEFAULT 'admin',
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);

-- Shop-wide settings; `master_key_check` lets every process refuse to start
-- with a master key other than the one the stored codes were sealed with.
CREATE TABLE settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);

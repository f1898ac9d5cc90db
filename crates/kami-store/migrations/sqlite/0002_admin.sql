-- The admin panel: operator accounts, their server-side sessions, and the
-- audit log every panel action writes to.

CREATE TABLE admins (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id     INTEGER NOT NULL REFERENCES merchants (id),
    email           TEXT    NOT NULL UNIQUE,
    password_hash   TEXT    NOT NULL,          -- Argon2id PHC string
    role            TEXT    NOT NULL,          -- owner / staff
    totp_secret     BLOB,                      -- sealed; NULL when TOTP is off
    totp_nonce      BLOB,
    totp_last_step  INTEGER,                   -- RFC 6238 5.2: each code logs in once
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until    INTEGER,
    disabled        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
);

-- `id` is the SHA-256 of the cookie's token: a leaked table opens no session.
CREATE TABLE sessions (
    id           BLOB    NOT NULL PRIMARY KEY,
    admin_id     INTEGER NOT NULL REFERENCES admins (id),
    csrf         TEXT    NOT NULL,
    ip           TEXT,
    user_agent   TEXT,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_admin ON sessions (admin_id);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id INTEGER NOT NULL REFERENCES merchants (id),
    admin_id    INTEGER REFERENCES admins (id),  -- NULL: an unknown email tried to log in
    action      TEXT    NOT NULL,
    target      TEXT    NOT NULL DEFAULT '',
    detail      TEXT    NOT NULL DEFAULT '',
    ip          TEXT,
    at          INTEGER NOT NULL
);
CREATE INDEX audit_log_by_time ON audit_log (merchant_id, id);

-- The admin panel: operator accounts, their server-side sessions, and the
-- audit log every panel action writes to.

CREATE TABLE admins (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id     BIGINT NOT NULL REFERENCES merchants (id),
    email           TEXT    NOT NULL UNIQUE,
    password_hash   TEXT    NOT NULL,          -- Argon2id PHC string
    role            TEXT    NOT NULL,          -- owner / staff
    totp_secret     BYTEA,                      -- sealed; NULL when TOTP is off
    totp_nonce      BYTEA,
    totp_last_step  BIGINT,                   -- RFC 6238 5.2: each code logs in once
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    locked_until    BIGINT,
    disabled        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL
);

-- `id` is the SHA-256 of the cookie's token: a leaked table opens no session.
CREATE TABLE sessions (
    id           BYTEA   NOT NULL PRIMARY KEY,
    admin_id     BIGINT NOT NULL REFERENCES admins (id),
    csrf         TEXT    NOT NULL,
    ip           TEXT,
    user_agent   TEXT,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_admin ON sessions (admin_id);

CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id BIGINT NOT NULL REFERENCES merchants (id),
    admin_id    BIGINT REFERENCES admins (id),  -- NULL: an unknown email tried to log in
    action      TEXT    NOT NULL,
    target      TEXT    NOT NULL DEFAULT '',
    detail      TEXT    NOT NULL DEFAULT '',
    ip          TEXT,
    at          BIGINT NOT NULL
);
CREATE INDEX audit_log_by_time ON audit_log (merchant_id, id);

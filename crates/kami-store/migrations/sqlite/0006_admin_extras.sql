-- TOTP recovery codes: ten one-time codes shown once when an operator turns
-- TOTP on (or regenerates them). Only their SHA-256 is kept (80-bit random
-- codes, so a plain hash is enough); `used_at` makes each sign in once.

CREATE TABLE admin_recovery_codes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    admin_id    INTEGER NOT NULL REFERENCES admins (id),
    code_hash   BLOB    NOT NULL,
    used_at     INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX admin_recovery_codes_by_admin ON admin_recovery_codes (admin_id);

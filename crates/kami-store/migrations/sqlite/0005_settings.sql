-- Issue 3: how the storefront shows a product's stock ('exact', 'level',
-- 'hidden'); NULL follows the shop's default (settings key stock_display).
ALTER TABLE products ADD COLUMN stock_display TEXT;

-- Issue 4: payment channels configured in the admin panel. The whole
-- credential set is one AES-256-GCM value sealed with the master key and
-- bound to the channel's name (associated data), like the codes.
CREATE TABLE channel_configs (
    merchant_id INTEGER NOT NULL REFERENCES merchants (id),
    name        TEXT    NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    ciphertext  BLOB    NOT NULL,
    nonce       BLOB    NOT NULL,
    key_id      INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, name)
);

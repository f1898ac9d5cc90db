-- Coupons and the coupon an order was placed with, and the per-IP purchase
-- limit beside the per-email one. A coupon's `used` counts the orders holding it
-- (pending or paid); the conditional increment in the order's own
-- transaction is what keeps a capped coupon from being used once too often.
CREATE TABLE coupons (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id INTEGER NOT NULL REFERENCES merchants (id),
    code        TEXT    NOT NULL,           -- normalised: trimmed, upper case
    kind        TEXT    NOT NULL,           -- fixed / percent
    value       INTEGER NOT NULL,           -- minor units (fixed) or percent off (1..=100)
    currency    TEXT,                       -- fixed coupons: the currency of `value`
    product_id  INTEGER REFERENCES products (id), -- NULL: shop-wide
    max_uses    INTEGER,                    -- NULL: unlimited
    used        INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER,
    disabled    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    UNIQUE (merchant_id, code)
);

ALTER TABLE orders ADD COLUMN coupon_id INTEGER REFERENCES coupons (id);

ALTER TABLE products ADD COLUMN per_ip_limit INTEGER;

-- Quantity bought per product from one client address (an IPv6 client
-- counts by its /64), kept only for products with a per-IP limit.
CREATE TABLE buyer_ip_purchases (
    product_id INTEGER NOT NULL REFERENCES products (id),
    ip         TEXT    NOT NULL,
    quantity   INTEGER NOT NULL,
    PRIMARY KEY (product_id, ip)
);

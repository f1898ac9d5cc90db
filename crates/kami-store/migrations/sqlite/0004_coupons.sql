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
-- Which limits the order's quantity was counted against when it was placed
-- (1: per email, 2: per IP), so expiry and late payment give back and take
-- again exactly those, whatever the product's limits are by then. Orders
-- from before this column counted against the per-email limit when their
-- product had one.
ALTER TABLE orders ADD COLUMN limit_holds INTEGER NOT NULL DEFAULT 0;
UPDATE orders SET limit_holds = 1
 WHERE product_id IN (SELECT id FROM products WHERE per_buyer_limit IS NOT NULL);

ALTER TABLE products ADD COLUMN per_ip_limit INTEGER;

-- Quantity bought per product from one client address (an IPv6 client
-- counts by its /64), kept only for products with a per-IP limit.
CREATE TABLE buyer_ip_purchases (
    product_id INTEGER NOT NULL REFERENCES products (id),
    ip         TEXT    NOT NULL,
    quantity   INTEGER NOT NULL,
    PRIMARY KEY (product_id, ip)
);

-- Coupons and the coupon an order was placed with, and the per-IP purchase
-- limit beside the per-email one. A coupon's `used` counts the orders holding it
-- (pending or paid); the conditional increment in the order's own
-- transaction is what keeps a capped coupon from being used once too often.
CREATE TABLE coupons (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id BIGINT NOT NULL REFERENCES merchants (id),
    code        TEXT    NOT NULL,           -- normalised: trimmed, upper case
    kind        TEXT    NOT NULL,           -- fixed / percent
    value       BIGINT  NOT NULL,           -- minor units (fixed) or percent off (1..=100)
    currency    TEXT,                       -- fixed coupons: the currency of `value`
    product_id  BIGINT  REFERENCES products (id), -- NULL: shop-wide
    max_uses    BIGINT,                    -- NULL: unlimited
    used        BIGINT  NOT NULL DEFAULT 0,
    expires_at  BIGINT,
    disabled    BIGINT  NOT NULL DEFAULT 0,
    created_at  BIGINT  NOT NULL,
    UNIQUE (merchant_id, code)
);

ALTER TABLE orders ADD COLUMN coupon_id BIGINT  REFERENCES coupons (id);
-- Which limits the order's quantity was counted against when it was placed
-- (1: per email, 2: per IP), so expiry and late payment give back and take
-- again exactly those, whatever the product's limits are by then. Orders
-- from before this column counted against the per-email limit when their
-- product had one.
ALTER TABLE orders ADD COLUMN limit_holds BIGINT  NOT NULL DEFAULT 0;
UPDATE orders SET limit_holds = 1
 WHERE product_id IN (SELECT id FROM products WHERE per_buyer_limit IS NOT NULL);

ALTER TABLE products ADD COLUMN per_ip_limit BIGINT;

-- Quantity bought per product from one client address (an IPv6 client
-- counts by its /64), kept only for products with a per-IP limit.
CREATE TABLE buyer_ip_purchases (
    product_id BIGINT  NOT NULL REFERENCES products (id),
    ip         TEXT    NOT NULL,
    quantity   BIGINT  NOT NULL,
    PRIMARY KEY (product_id, ip)
);

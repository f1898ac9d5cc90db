-- Orders handed to a gateway, so reconciliation knows which pending orders
-- to ask the gateway about: a lost notification must never mean a lost order.
CREATE TABLE payment_attempts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id   BIGINT NOT NULL REFERENCES merchants (id),
    order_id      BIGINT NOT NULL UNIQUE REFERENCES orders (id),
    channel       TEXT   NOT NULL,
    reference     TEXT,                -- the gateway's own id (a Stripe session), when it gives one
    pay_url       TEXT   NOT NULL,     -- where the buyer was sent; reused when the page is reloaded
    created_at    BIGINT NOT NULL,
    checks        BIGINT NOT NULL DEFAULT 0,
    next_check_at BIGINT               -- NULL once reconciliation has nothing left to ask
);
CREATE INDEX payment_attempts_due ON payment_attempts (next_check_at) WHERE next_check_at IS NOT NULL;

-- Issue 5: a paid order's update becomes a HOT update. PostgreSQL writes a
-- row's new version into every index of the table unless no indexed column
-- changed, and columns named in a partial index's predicate count: the
-- status was in four (pending by expiry, unfulfilled, expired, refunded), so
-- each payment indexed its order again in the primary key, `order_no` and the
-- e-mail index. Here nothing indexed on `orders` names the status; what
-- those indexes answered is kept in two small tables written where it is
-- cheap:
--
-- * `order_deadlines`: one row per statement that inserted orders, with the
--   latest expiry among them and their ids, written by a statement trigger,
--   so every pending order is named by one whatever inserted it. The expiry
--   sweep reads the due rows, expires what is still pending and deletes a
--   row once none of its orders is (`orders::expire_due_orders`). A drop
--   writes one row per batch instead of an index entry per order.
-- * `order_marks`: the orders that are paid_unfulfilled, expired or refunded
--   (rare, or written by the sweep), kept by a row trigger on every change
--   of status, so no path can forget it. A payment of a pending order (the
--   storm) does not fire it: its `WHEN` is false.
--
-- Fill factor 70 leaves room on each page for the new versions of its
-- orders; the page's old versions are pruned when it is next read.
-- SQLite has no HOT updates and keeps its partial indexes.
--
-- The lock first: no order may be inserted or change status between the
-- books' first filling below and their triggers taking over (an instance of
-- the version before still serving meanwhile would otherwise leave an order
-- without its deadline row or its mark). It holds to the end of the
-- migration's transaction.
LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE order_deadlines (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    expires_at BIGINT   NOT NULL,
    order_ids  BIGINT[] NOT NULL
);
CREATE INDEX order_deadlines_due ON order_deadlines (expires_at, id);
INSERT INTO order_deadlines (expires_at, order_ids)
    SELECT expires_at, ARRAY[id] FROM orders WHERE status = 'pending';

CREATE FUNCTION kami_order_deadlines() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO order_deadlines (expires_at, order_ids)
        SELECT max(expires_at), array_agg(id ORDER BY id) FROM fresh
        WHERE status = 'pending' HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER orders_deadlines AFTER INSERT ON orders REFERENCING NEW TABLE AS fresh
    FOR EACH STATEMENT EXECUTE FUNCTION kami_order_deadlines();

CREATE TABLE order_marks (
    order_id   BIGINT NOT NULL PRIMARY KEY,
    status     TEXT   NOT NULL,
    product_id BIGINT NOT NULL
);
CREATE INDEX order_marks_by_status ON order_marks (status, order_id);
CREATE INDEX order_marks_unfulfilled ON order_marks (product_id, order_id)
    WHERE status = 'paid_unfulfilled';
INSERT INTO order_marks (order_id, status, product_id)
    SELECT id, status, product_id FROM orders
    WHERE status IN ('paid_unfulfilled', 'expired', 'refunded');

CREATE FUNCTION kami_order_marks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('paid_unfulfilled', 'expired', 'refunded') THEN
        INSERT INTO order_marks (order_id, status, product_id)
            VALUES (NEW.id, NEW.status, NEW.product_id)
            ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status;
    ELSE
        DELETE FROM order_marks WHERE order_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER orders_marks AFTER UPDATE OF status ON orders FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND (OLD.status IN ('paid_unfulfilled', 'expired', 'refunded')
               OR NEW.status IN ('paid_unfulfilled', 'expired', 'refunded')))
    EXECUTE FUNCTION kami_order_marks();

DROP INDEX orders_pending_expiry;
DROP INDEX orders_unfulfilled;
DROP INDEX orders_expired;
DROP INDEX orders_refunded;
ALTER TABLE orders SET (fillfactor = 70);

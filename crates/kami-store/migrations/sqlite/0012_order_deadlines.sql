-- Issue 5: a payment no longer deletes its order's entry of
-- `orders_pending_expiry`. Buyers pay in no particular order of their
-- orders' ids, so each paid order deleted an entry on a page of that index
-- no other order of its batch touched, and every page a commit dirties is a
-- WAL frame: in `kami-bench flash-sale --backend sqlite` the storm wrote
-- 18.7-18.9 KB of WAL per paid order before and 15.9 KB after, and the
-- writer thread spent a tenth to a sixth less CPU per paid order
-- (docs/PERFORMANCE.md, stop 28).
--
-- Instead, every pending order is named by a row here, inserted by its own
-- statement in the transaction that inserts the order (`sql/direct.rs`,
-- `sql/batch.rs`; no trigger: on SQLite a statement with one keeps a
-- statement journal). A payment leaves the row alone. The expiry sweep reads
-- the due rows, expires the orders still pending and deletes the rows of
-- those that no longer are; each sweep first clears the rows of orders paid
-- since among the next few thousand (`orders::tidy_sqlite_deadlines`), so the
-- pending list and count read few. The order ids and expiries both grow with
-- time, so both trees are written at their ends. PostgreSQL has had its own
-- `order_deadlines` (one row per statement) since its migration 0010.
--
-- A process of the version before would go on inserting orders without
-- rows; no SQLite migration is applied while another Kami process has the
-- database open (`kami::commands::open_store`).
CREATE TABLE order_deadlines (
    order_id   INTEGER PRIMARY KEY, -- no foreign key: a check per order in a drop
    expires_at INTEGER NOT NULL
);
CREATE INDEX order_deadlines_due ON order_deadlines (expires_at);
INSERT INTO order_deadlines (order_id, expires_at)
    SELECT id, expires_at FROM orders WHERE status = 'pending';
DROP INDEX orders_pending_expiry;

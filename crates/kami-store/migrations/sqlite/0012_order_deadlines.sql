-- Issue 5: a payment no longer deletes its order's entry of
-- `orders_pending_expiry`. Buyers pay in no particular order of their
-- orders' ids, so each paid order deleted an entry on a page of that index
-- no other order of its batch touched, and every page a commit dirties is a
-- WAL frame: in `kami-bench flash-sale --backend sqlite` the storm wrote
-- 18.7-19.3 KB of WAL per paid order with the index and 15.6-15.8 KB
-- without, and answered 9-11% more notifications a second (two alternated
-- pairs, docs/PERFORMANCE.md stop 28).
--
-- Instead, every pending order is named by a row here, written with the
-- order by each statement that inserts orders (`sql/direct.rs`,
-- `sql/batch.rs`; no trigger: a statement with one keeps a statement
-- journal). A payment leaves the row alone. The expiry sweep reads the due
-- rows, expires the orders still pending and deletes the rows of those that
-- no longer are; between sweeps it also clears the rows of orders paid since
-- (`orders::tidy_sqlite_deadlines`), so the pending list and count read few.
-- The order ids and expiries both grow with time, so both trees are written
-- at their ends. PostgreSQL has had its own `order_deadlines` (one row per
-- statement) since its migration 0010.
CREATE TABLE order_deadlines (
    order_id   INTEGER PRIMARY KEY, -- no foreign key: a check per order in a drop
    expires_at INTEGER NOT NULL
);
CREATE INDEX order_deadlines_due ON order_deadlines (expires_at);
INSERT INTO order_deadlines (order_id, expires_at)
    SELECT id, expires_at FROM orders WHERE status = 'pending';
DROP INDEX orders_pending_expiry;

-- Issue 5: a payment no longer adds its order to an index of every order by
-- status, as SQLite's migration 0008 did before it. The status is in the
-- predicates of the orders' partial indexes, so a paid order's new row
-- version is never a HOT update and goes into every index of the table;
-- this one was the only one keyed by the status itself. In alternated
-- `kami-bench flash-sale --backend postgres` runs with the CPU of every
-- PostgreSQL process counted, a paid order cost 5-10% less of it without the
-- index (docs/PERFORMANCE.md, stop 19; stop 17's throughput-only A/B saw
-- nothing beyond the noise).
--
-- What read it has the same ways in as on SQLite: the admin list of one
-- status takes a partial index (pending and paid_unfulfilled have theirs,
-- expired and refunded get one here) or, for `delivered`, walks the primary
-- key from the newest order; the counts by status count the partial indexes
-- and take `delivered` as the rest.
DROP INDEX orders_by_status;
CREATE INDEX orders_expired ON orders (merchant_id, id) WHERE status = 'expired';
CREATE INDEX orders_refunded ON orders (merchant_id, id) WHERE status = 'refunded';

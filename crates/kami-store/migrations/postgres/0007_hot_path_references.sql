-- Issue 5: the rows a drop writes by the thousand no longer re-check their
-- references one by one. PostgreSQL checks a foreign key per inserted row
-- with a query that share-locks the referenced row; in a drop every order,
-- payment and timeline row pointed at the same merchant row, every order at
-- the same product row, and every payment and event at an order the same
-- transaction had just written. perf during a drop: those checks were a
-- quarter of the server's CPU; in alternated `kami-bench flash-sale
-- --backend postgres` runs, orders a second rose by a fifth without them
-- and deliveries by a tenth or more (docs/PERFORMANCE.md, stop 17).
--
-- What the constraints guaranteed still holds: a reference is only ever
-- written from a row the same transaction read or wrote, and nothing
-- deletes merchants, products or orders. That last part is now enforced
-- here, so no row can be orphaned by a delete (SQLite keeps its foreign
-- keys: there the check is a primary key lookup on the writer thread).
ALTER TABLE orders DROP CONSTRAINT orders_merchant_id_fkey;
ALTER TABLE orders DROP CONSTRAINT orders_product_id_fkey;
ALTER TABLE payments DROP CONSTRAINT payments_merchant_id_fkey;
ALTER TABLE payments DROP CONSTRAINT payments_order_id_fkey;
ALTER TABLE order_events DROP CONSTRAINT order_events_merchant_id_fkey;
ALTER TABLE order_events DROP CONSTRAINT order_events_order_id_fkey;

CREATE FUNCTION kami_never_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rows of % are never deleted: orders, payments and timelines refer to them', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER merchants_never_deleted BEFORE DELETE OR TRUNCATE ON merchants
    FOR EACH STATEMENT EXECUTE FUNCTION kami_never_deleted();
CREATE TRIGGER products_never_deleted BEFORE DELETE OR TRUNCATE ON products
    FOR EACH STATEMENT EXECUTE FUNCTION kami_never_deleted();
CREATE TRIGGER orders_never_deleted BEFORE DELETE OR TRUNCATE ON orders
    FOR EACH STATEMENT EXECUTE FUNCTION kami_never_deleted();

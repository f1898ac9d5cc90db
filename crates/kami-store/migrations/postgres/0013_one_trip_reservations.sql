-- Issue 5: a batch of plain orders (no per-buyer or per-address limit, no
-- coupon, no Idempotency-Key: a flash sale's) reserved in one round trip
-- and one statement-transaction, where the batch path took five (BEGIN with
-- its plan settings, the stock count, the orders' insert, the claim,
-- COMMIT). On two cores shared by the server, PostgreSQL and the load, each
-- round trip is a wake-up that can wait for a core, and a stall of one
-- (docs/PERFORMANCE.md, stop 43: every writer's batch 20-42 ms at once) held
-- the orders of all four writers; the order p99 at 256 connections was
-- 20.7-25.5 ms.
--
-- All or nothing: each product's codes are locked first (lowest ids from
-- `floor`, `FOR UPDATE SKIP LOCKED`, as `orders::claim_cards_set`); only if
-- every product has all the batch asks of it are the orders inserted and
-- the codes handed out in arrival order. Otherwise it writes nothing and
-- returns no row, and the caller replays the batch on the counted path,
-- which tells `sold_out` from codes another transaction holds. A claim that
-- did not hand out exactly what was asked raises, rolling everything back.
--
-- The plan settings are those `orders::CLAIM_PLANS` sets for the batch
-- transaction (index lookups whatever the statistics say); here they hold
-- for the function's statement only, which is planned once per connection
-- (a generic plan: its estimates do not depend on the batch anyway).
CREATE FUNCTION kami_reserve_orders(batch json, merchant bigint)
RETURNS TABLE (order_no text, order_id bigint, first_card bigint)
LANGUAGE plpgsql
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    seq regclass := pg_get_serial_sequence('orders', 'id')::regclass;
    r record;
BEGIN
    -- The orders' ids are drawn before the insert, so the codes are handed
    -- out by joining the batch with its few products only (joining the
    -- insert's output back to the batch by number was a nested loop over
    -- every pair: hash joins are off). Ids drawn for a batch that writes
    -- nothing are skipped, as a rolled-back insert skips them.
    FOR r IN
        WITH x AS MATERIALIZED (
            SELECT nextval(seq) AS id, b.*,
                   (SUM(b.quantity) OVER (PARTITION BY b.product_id ORDER BY b.ord)
                    - b.quantity)::bigint AS first
            FROM json_to_recordset(batch) AS b(ord bigint, floor bigint, order_no text,
                 product_id bigint, quantity bigint, unit_price bigint, discount bigint,
                 amount bigint, currency text, email text, query_password_hash text,
                 access_token_hash text, buyer_ip text, channel text, created_at bigint,
                 expires_at bigint)),
        p AS (SELECT x.product_id, SUM(x.quantity)::bigint AS total, MIN(x.floor) AS floor
              FROM x GROUP BY x.product_id),
        k AS MATERIALIZED (
            SELECT p.product_id, p.total, ARRAY(
                SELECT c.id FROM cards c WHERE c.stock_product = p.product_id
                AND c.id >= p.floor ORDER BY c.id LIMIT p.total FOR UPDATE SKIP LOCKED) AS ids
            FROM p),
        enough AS MATERIALIZED (
            SELECT bool_and(cardinality(k.ids) = k.total) AS yes FROM k),
        ins AS (
            INSERT INTO orders (id, merchant_id, order_no, product_id, quantity, unit_price,
                discount, amount, currency, email, query_password_hash, access_token_hash,
                buyer_ip, channel, status, created_at, expires_at, idempotency_key,
                coupon_id, limit_holds)
            OVERRIDING SYSTEM VALUE
            SELECT x.id, merchant, x.order_no, x.product_id, x.quantity, x.unit_price,
                   x.discount, x.amount, x.currency, x.email,
                   decode(x.query_password_hash, 'hex'), decode(x.access_token_hash, 'hex'),
                   x.buyer_ip, x.channel, 'pending', x.created_at, x.expires_at, NULL, NULL, 0
            FROM x WHERE (SELECT yes FROM enough)
            RETURNING 1),
        a AS (
            SELECT unnest(k.ids[x.first + 1 : x.first + x.quantity]) AS card,
                   x.id AS order_id, x.expires_at
            FROM x JOIN k ON k.product_id = x.product_id
            WHERE (SELECT yes FROM enough)),
        upd AS (
            UPDATE cards SET status = 'reserved', order_id = a.order_id,
                   reserved_until = a.expires_at
            FROM a WHERE cards.id = a.card RETURNING 1)
        SELECT x.order_no, x.id, k.ids[1] AS first_card,
               (SELECT count(*) FROM ins) AS inserted, (SELECT count(*) FROM x) AS orders,
               (SELECT count(*) FROM upd) AS handed, (SELECT SUM(x.quantity) FROM x) AS wanted
        FROM x JOIN k ON k.product_id = x.product_id
        WHERE (SELECT yes FROM enough)
    LOOP
        IF r.inserted <> r.orders OR r.handed <> r.wanted THEN
            RAISE EXCEPTION 'a reservation batch inserted % orders of % and handed out % codes of %',
                r.inserted, r.orders, r.handed, r.wanted
                USING ERRCODE = 'internal_error';
        END IF;
        order_no := r.order_no;
        order_id := r.id;
        first_card := r.first_card;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Issue 5: a code's sale (reserved to sold) becomes a HOT update, as an
-- order's payment did in 0010. The partial indexes of available and of
-- staged codes named the status in their predicates, so every sale indexed
-- the code's new version again in the primary key and `cards_by_order`.
-- They now index two stored generated columns instead: the product of an
-- available code and the batch of a staged one, NULL otherwise. A sale
-- leaves both NULL, so no indexed value changes; a claim, a release, a void
-- and an import's commit change them, as they changed the predicates.
-- Queries name the columns (`orders::available`, `orders::staged`); SQLite
-- keeps its partial indexes on the status.
--
-- Adding the columns rewrites the table once: about a minute per ten
-- million codes, during which the shop waits. Fill factor 80 leaves room on
-- each page for the sold versions of the codes claimed there.

-- The fill factor first, so the rewrite below leaves the room on every page.
ALTER TABLE cards SET (fillfactor = 80);
ALTER TABLE cards
    ADD COLUMN stock_product BIGINT
        GENERATED ALWAYS AS (CASE WHEN status = 'available' THEN product_id END) STORED,
    ADD COLUMN staged_batch BIGINT
        GENERATED ALWAYS AS (CASE WHEN status = 'staged' THEN batch_id END) STORED;
DROP INDEX cards_available;
DROP INDEX cards_staged;
CREATE INDEX cards_available ON cards (stock_product, id) WHERE stock_product IS NOT NULL;
CREATE INDEX cards_staged ON cards (staged_batch) WHERE staged_batch IS NOT NULL;

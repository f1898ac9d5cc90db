-- Issue 5: a code's fingerprint is kept in a table of its own, written only
-- by imports, instead of by a unique index on `cards`.
--
-- On PostgreSQL every change of a code's status is a non-HOT update (the
-- status is in the predicates of `cards_available` and `cards_staged`), so
-- the new row version takes an entry in every index of `cards`. With the
-- unique (product, fingerprint) index among them, each code reserved and
-- each code sold wrote one random leaf of an index over every fingerprint
-- ever imported: with ten million codes in stock, 9,302 of the codes' index
-- block reads in two seconds of a drop and its notification storm were in
-- that index, most of them disk reads inside a payment's transaction
-- (docs/PERFORMANCE.md, stop 20). Here the fingerprint is written once, when
-- the code is staged, and never again.
--
-- The fingerprint stays on `cards` (unindexed): an aborted import frees its
-- staged codes' fingerprints by it. SQLite keeps the unique index, since it
-- updates only the indexes whose columns change.
--
-- No reference to `products`: a fingerprint is inserted only by the
-- statement that stages its code, whose references are checked; a check per
-- code here would be a second one.
CREATE TABLE card_fingerprints (
    product_id  BIGINT NOT NULL,
    fingerprint BYTEA  NOT NULL
);
INSERT INTO card_fingerprints (product_id, fingerprint)
    SELECT product_id, fingerprint FROM cards;
-- Kept after sale: a re-import of a sold code is caught as a duplicate.
ALTER TABLE card_fingerprints ADD PRIMARY KEY (product_id, fingerprint);
ALTER TABLE cards DROP CONSTRAINT cards_product_id_fingerprint_key;

use kami_core::{now_millis, Millis, StockDisplay};
use sqlx::AnyPool;
use sqlx::Row;

use super::{orders, rows, SqlStore};
use crate::types::*;
use crate::Backend;
use crate::{Result, StoreError};

/// Rows per multi-row INSERT when staging imported cards: large enough to
/// amortise a statement, small enough for SQLite's parameter limit.
pub const STAGE_CHUNK: usize = 1000;

/// The storefront's order: categories in their order (uncategorised first,
/// though the storefront shows those last under "Other"), then products in
/// theirs. Used with `products p LEFT JOIN categories c`.
const PRODUCT_ORDER: &str = "COALESCE(c.sort_order, -1), COALESCE(c.id, 0), p.sort_order, p.id";

pub async fn category_id_by_name(s: &SqlStore, name: &str, create: bool) -> Result<Option<i64>> {
    if create {
        let mut tx = s.begin().await?;
        sqlx::query(
            "INSERT INTO categories (merchant_id, name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (merchant_id, name) DO NOTHING",
        )
        .bind(DEFAULT_MERCHANT)
        .bind(name)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    let id = sqlx::query_scalar("SELECT id FROM categories WHERE merchant_id = $1 AND name = $2")
        .bind(DEFAULT_MERCHANT)
        .bind(name)
        .fetch_optional(&s.write)
        .await?;
    Ok(id)
}

pub async fn list_categories(s: &SqlStore) -> Result<Vec<Category>> {
    let rows = sqlx::query(
        "SELECT id, name, sort_order, visible FROM categories WHERE merchant_id = $1 \
         ORDER BY sort_order, id",
    )
    .bind(DEFAULT_MERCHANT)
    .fetch_all(&s.read)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Category {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                sort_order: r.try_get("sort_order")?,
                visible: r.try_get::<i64, _>("visible")? != 0,
            })
        })
        .collect()
}

pub async fn create_product(s: &SqlStore, p: &NewProduct) -> Result<Product> {
    let now = now_millis();
    let mut tx = s.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO products (merchant_id, category_id, name, description, price, currency, \
         min_quantity, max_quantity, per_buyer_limit, sale_starts_at, sale_ends_at, visible, \
         low_stock_threshold, stock_display, created_at, updated_at, wholesale_tiers, \
         per_ip_limit) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $17, $14, $14, $15, $16) \
         RETURNING id",
    )
    .bind(DEFAULT_MERCHANT)
    .bind(p.category_id)
    .bind(&p.name)
    .bind(&p.description)
    .bind(p.price)
    .bind(&p.currency)
    .bind(p.min_quantity)
    .bind(p.max_quantity)
    .bind(p.per_buyer_limit)
    .bind(p.sale_starts_at)
    .bind(p.sale_ends_at)
    .bind(i64::from(p.visible))
    .bind(p.low_stock_threshold)
    .bind(now)
    .bind(tiers_json(&p.wholesale_tiers))
    .bind(p.per_ip_limit)
    .bind(p.stock_display.map(StockDisplay::as_str))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(get_product(s.backend, &s.write, id)
        .await?
        .expect("the product was just inserted"))
}

pub async fn update_product(
    s: &SqlStore,
    id: i64,
    patch: &ProductPatch,
) -> Result<Option<Product>> {
    let mut tx = s.begin().await?;
    let sql = format!(
        "SELECT {} FROM products p LEFT JOIN categories c ON c.id = p.category_id WHERE p.id = $1",
        rows::product_columns(s.backend)
    );
    let Some(row) = sqlx::query(&sql).bind(id).fetch_optional(&mut *tx).await? else {
        return Ok(None);
    };
    let cur = rows::product(&row)?;
    sqlx::query(
        "UPDATE products SET category_id = $2, name = $3, description = $4, price = $5, \
         currency = $6, min_quantity = $7, max_quantity = $8, per_buyer_limit = $9, \
         sale_starts_at = $10, sale_ends_at = $11, visible = $12, low_stock_threshold = $13, \
         updated_at = $14, wholesale_tiers = $15, per_ip_limit = $16, stock_display = $17 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(patch.category_id.unwrap_or(cur.category_id))
    .bind(patch.name.as_ref().unwrap_or(&cur.name))
    .bind(patch.description.as_ref().unwrap_or(&cur.description))
    .bind(patch.price.unwrap_or(cur.price))
    .bind(patch.currency.as_ref().unwrap_or(&cur.currency))
    .bind(patch.min_quantity.unwrap_or(cur.min_quantity))
    .bind(patch.max_quantity.unwrap_or(cur.max_quantity))
    .bind(patch.per_buyer_limit.unwrap_or(cur.per_buyer_limit))
    .bind(patch.sale_starts_at.unwrap_or(cur.sale_starts_at))
    .bind(patch.sale_ends_at.unwrap_or(cur.sale_ends_at))
    .bind(i64::from(patch.visible.unwrap_or(cur.visible)))
    .bind(patch.low_stock_threshold.unwrap_or(cur.low_stock_threshold))
    .bind(now_millis())
    .bind(tiers_json(
        patch
            .wholesale_tiers
            .as_ref()
            .unwrap_or(&cur.wholesale_tiers),
    ))
    .bind(patch.per_ip_limit.unwrap_or(cur.per_ip_limit))
    .bind(
        patch
            .stock_display
            .unwrap_or(cur.stock_display)
            .map(StockDisplay::as_str),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    get_product(s.backend, &s.write, id).await
}

pub async fn get_product(backend: Backend, pool: &AnyPool, id: i64) -> Result<Option<Product>> {
    get_product_with(pool, id, rows::product_columns(backend)).await
}

/// The product with `columns`: `rows::product_columns` or its uncounted twin.
pub async fn get_product_with(pool: &AnyPool, id: i64, columns: &str) -> Result<Option<Product>> {
    let sql = format!(
        "SELECT {columns} FROM products p LEFT JOIN categories c ON c.id = p.category_id \
         WHERE p.id = $1 AND p.merchant_id = $2"
    );
    let row = sqlx::query(&sql)
        .bind(id)
        .bind(DEFAULT_MERCHANT)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(rows::product).transpose()
}

pub async fn list_products(s: &SqlStore, visible_only: bool) -> Result<Vec<Product>> {
    list_products_with(s, visible_only, rows::product_columns(s.backend)).await
}

/// Every product with `stock` 0: for callers that know the counts already.
pub async fn list_products_uncounted(s: &SqlStore) -> Result<Vec<Product>> {
    list_products_with(s, false, rows::PRODUCT_COLUMNS_UNCOUNTED).await
}

async fn list_products_with(
    s: &SqlStore,
    visible_only: bool,
    columns: &str,
) -> Result<Vec<Product>> {
    let sql = format!(
        "SELECT {} FROM products p LEFT JOIN categories c ON c.id = p.category_id \
         WHERE p.merchant_id = $1 {} ORDER BY {PRODUCT_ORDER}",
        columns,
        if visible_only {
            "AND p.visible = 1"
        } else {
            ""
        }
    );
    let rows = sqlx::query(&sql)
        .bind(DEFAULT_MERCHANT)
        .fetch_all(&s.read)
        .await?;
    rows.iter().map(rows::product).collect()
}

pub async fn sale_terms(s: &SqlStore, id: i64) -> Result<Option<SaleTerms>> {
    let row = sqlx::query(
        "SELECT id, price, currency, min_quantity, max_quantity, per_buyer_limit, sale_starts_at, \
         sale_ends_at, visible, wholesale_tiers, per_ip_limit FROM products \
         WHERE id = $1 AND merchant_id = $2",
    )
    .bind(id)
    .bind(DEFAULT_MERCHANT)
    .fetch_optional(&s.read)
    .await?;
    row.map(|r| {
        Ok(SaleTerms {
            id: r.try_get("id")?,
            price: r.try_get("price")?,
            currency: r.try_get("currency")?,
            min_quantity: r.try_get("min_quantity")?,
            max_quantity: r.try_get("max_quantity")?,
            per_buyer_limit: r.try_get("per_buyer_limit")?,
            sale_starts_at: r.try_get("sale_starts_at")?,
            sale_ends_at: r.try_get("sale_ends_at")?,
            visible: r.try_get::<i64, _>("visible")? != 0,
            wholesale_tiers: kami_core::pricing::parse_tiers(
                &r.try_get::<String, _>("wholesale_tiers")?,
            ),
            per_ip_limit: r.try_get("per_ip_limit")?,
        })
    })
    .transpose()
}

/// Available codes of the product, counting no further than `cap`: the stock
/// gate and the group commit only need to know "at least this many", and
/// walking the partial index of a million codes per question would not do.
pub async fn count_available<'e, E>(
    backend: Backend,
    e: E,
    product_id: i64,
    cap: i64,
) -> Result<i64>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    // In the claims' order, so that PostgreSQL walks `cards_available`: with
    // the statistics of the import (every code available) it scanned the
    // whole table for a sold-out product's count, 40-100 ms for 100,000
    // codes, once a second through a drop (docs/PERFORMANCE.md stop 32).
    let (available, order_by) = orders::available_in_order(backend, "$1");
    let sql = format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM cards WHERE {available} {order_by} LIMIT $2) AS a"
    );
    let n: i64 = sqlx::query_scalar(&sql)
        .bind(product_id)
        .bind(cap)
        .fetch_one(e)
        .await?;
    Ok(n)
}

pub async fn stock(s: &SqlStore, product_id: i64) -> Result<StockCounts> {
    let rows = sqlx::query(
        "SELECT status, COUNT(*) AS n FROM cards WHERE product_id = $1 \
         AND status IN ('available', 'reserved', 'sold') GROUP BY status",
    )
    .bind(product_id)
    .fetch_all(&s.read)
    .await?;
    let mut c = StockCounts::default();
    for r in rows {
        let n: i64 = r.try_get("n")?;
        match r.try_get::<String, _>("status")?.as_str() {
            "available" => c.available = n,
            "reserved" => c.reserved = n,
            _ => c.sold = n,
        }
    }
    Ok(c)
}

pub async fn available_by_product(s: &SqlStore) -> Result<Vec<(i64, i64)>> {
    let sql = match s.backend {
        Backend::Postgres => {
            "SELECT stock_product AS product_id, COUNT(*) AS n FROM cards \
             WHERE stock_product IS NOT NULL GROUP BY stock_product"
        }
        Backend::Sqlite => {
            "SELECT product_id, COUNT(*) AS n FROM cards WHERE status = 'available' GROUP BY product_id"
        }
    };
    let rows = sqlx::query(sql).fetch_all(&s.read).await?;
    rows.iter()
        .map(|r| Ok((r.try_get("product_id")?, r.try_get("n")?)))
        .collect()
}

/// Import batches being flipped to `available`, or finished at or after
/// `since`. `card_batches` holds a row per import, so the scan is small.
pub async fn restocks_since(s: &SqlStore, since: Millis) -> Result<Vec<Restock>> {
    let rows = sqlx::query(
        "SELECT id, product_id, status, finished_at FROM card_batches \
         WHERE status = 'committing' OR (status = 'committed' AND finished_at >= $1)",
    )
    .bind(since)
    .fetch_all(&s.read)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Restock {
                batch_id: r.try_get("id")?,
                product_id: r.try_get("product_id")?,
                finished_at: match r.try_get::<String, _>("status")?.as_str() {
                    "committed" => r.try_get("finished_at")?,
                    _ => None,
                },
            })
        })
        .collect()
}

/// Begins an import of codes into the product: its batch, and the lease
/// that says it is alive until dropped (`crate::ImportLease`). The lease's
/// lock is taken in the transaction that makes the batch, so no reaper ever
/// sees the batch without it.
///
/// One import into a product at a time: this waits for any other import
/// into the same product, in any process, to end. A code staged by an
/// import still running counts as a duplicate of it (the unique index of a
/// product's codes holds staged ones), so an import beside another one that
/// then failed reported the codes they shared as duplicates and stored
/// them nowhere (an audit lost 40,618 of 100,000 so). After the wait, the
/// caller reaps what a dead one left (`reap_stale_imports`).
pub async fn begin_import(s: &SqlStore, product_id: i64) -> Result<(i64, crate::ImportLease)> {
    match s.backend {
        Backend::Postgres => {
            // A connection of the import's own, out of the pool: dropped
            // with the lease, it is closed and its session locks end, where
            // handed back to the pool it would go on holding them.
            let mut conn = s.write.acquire().await?.detach();
            sqlx::query(&format!("SELECT pg_advisory_lock({PRODUCT_IMPORT_LOCK})"))
                .bind(product_id)
                .execute(&mut conn)
                .await?;
            let mut tx = sqlx::Connection::begin(&mut conn).await?;
            let id = insert_batch(&mut tx, product_id).await?;
            sqlx::query(&format!("SELECT pg_advisory_lock({IMPORT_LOCK})"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok((id, crate::ImportLease::new(conn)))
        }
        Backend::Sqlite => {
            let product = match s.direct.as_ref() {
                Some(d) => Some(super::import_locks::hold_product(d.path(), product_id).await?),
                None => None,
            };
            let mut tx = s.begin().await?;
            let id = insert_batch(&mut tx, product_id).await?;
            let held = match s.direct.as_ref() {
                Some(d) => Some(super::import_locks::hold(d.path(), id)?),
                None => None,
            };
            tx.commit().await?;
            Ok((id, crate::ImportLease::new((held, product))))
        }
    }
}

/// The row of a new import batch, `importing`; its id.
async fn insert_batch(conn: &mut sqlx::AnyConnection, product_id: i64) -> Result<i64> {
    let now = now_millis();
    Ok(sqlx::query_scalar(
        "INSERT INTO card_batches (merchant_id, product_id, status, heartbeat_at, created_at) \
         VALUES ($1, $2, 'importing', $3, $3) RETURNING id",
    )
    .bind(DEFAULT_MERCHANT)
    .bind(product_id)
    .bind(now)
    .fetch_one(conn)
    .await?)
}

pub async fn stage_cards(
    s: &SqlStore,
    batch: i64,
    product_id: i64,
    cards: &[NewCard],
) -> Result<u64> {
    let now = now_millis();
    let started = std::time::Instant::now();
    let mut tx = s.begin().await?;
    let mut inserted = 0;
    for chunk in cards.chunks(STAGE_CHUNK) {
        inserted += match s.backend {
            Backend::Sqlite => {
                let sql = stage_sql_sqlite(batch, product_id, now, chunk.len());
                let mut q = sqlx::query(&sql).persistent(false);
                for c in chunk {
                    q = q
                        .bind(c.ciphertext.as_slice())
                        .bind(c.nonce.as_slice())
                        .bind(c.key_id)
                        .bind(c.fingerprint.as_slice());
                }
                q.execute(&mut *tx).await?
            }
            // One text parameter per column (sqlx's `Any` driver binds no
            // arrays): one statement text whatever the chunk, prepared once
            // per connection. A `VALUES` list of 4,000 parameters was
            // parsed and planned anew for every chunk.
            Backend::Postgres => {
                let column = |field: fn(&NewCard) -> &[u8]| {
                    super::pg_sets::hex_list(chunk.iter().map(field))
                };
                let key_ids: Vec<i64> = chunk.iter().map(|c| c.key_id).collect();
                sqlx::query(STAGE_SQL_POSTGRES)
                    .bind(column(|c| &c.ciphertext))
                    .bind(column(|c| &c.nonce))
                    .bind(super::pg_sets::id_list(&key_ids))
                    .bind(column(|c| &c.fingerprint))
                    .bind(product_id)
                    .bind(DEFAULT_MERCHANT)
                    .bind(batch)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
            }
        }
        .rows_affected();
    }
    sqlx::query("UPDATE card_batches SET heartbeat_at = $2 WHERE id = $1")
        .bind(batch)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    s.yield_write_lock(started.elapsed()).await;
    Ok(inserted)
}

/// SQLite: the unique (product, fingerprint) index on `cards` turns a code
/// already stored, or twice in the chunk, into no row. Integers are formatted
/// into the statement (they are i64s, not text); only the per-card bytes are
/// bound.
/// Anonymous `?` parameters, in order: sqlx asks SQLite each parameter's
/// name to place it, and SQLite finds a name by walking the statement's list
/// of named ones, so 4,000 `$N` made every statement quadratic. perf showed
/// `sqlite3_bind_parameter_name` and its `strncmp` as 76% of `kami cards
/// import`, with the write lock held throughout (1.2 s a statement: a shop
/// beside it waited out its busy timeout).
fn stage_sql_sqlite(batch: i64, product_id: i64, now: Millis, rows: usize) -> String {
    let row = format!("({DEFAULT_MERCHANT}, {product_id}, {batch}, ?, ?, ?, ?, 'staged', {now})");
    let values = vec![row.as_str(); rows].join(", ");
    format!(
        "INSERT INTO cards (merchant_id, product_id, batch_id, ciphertext, nonce, key_id, \
         fingerprint, status, created_at) VALUES {values} \
         ON CONFLICT (product_id, fingerprint) DO NOTHING"
    )
}

/// PostgreSQL keeps fingerprints in `card_fingerprints` (migration 0009):
/// a code is staged only if its fingerprint was inserted there by this
/// statement. A fingerprint twice in the chunk is inserted once and returned
/// once, so `DISTINCT ON` stages one of its rows; a concurrent import of the
/// same code waits on the fingerprint's row lock and then finds it taken.
/// `$1`–`$4` are the chunk's columns as comma-separated lists (`hex_list`,
/// `id_list`), zipped back into rows by `unnest`; then the product,
/// merchant, batch and time.
const STAGE_SQL_POSTGRES: &str = "WITH input AS (\
         SELECT decode(c, 'hex') AS ciphertext, decode(n, 'hex') AS nonce, \
             k::bigint AS key_id, decode(f, 'hex') AS fingerprint \
         FROM unnest(string_to_array($1, ','), string_to_array($2, ','), \
             string_to_array($3, ','), string_to_array($4, ',')) AS t (c, n, k, f)), \
     fresh AS (INSERT INTO card_fingerprints (product_id, fingerprint) \
         SELECT $5, fingerprint FROM input \
         ON CONFLICT (product_id, fingerprint) DO NOTHING RETURNING fingerprint) \
     INSERT INTO cards (merchant_id, product_id, batch_id, ciphertext, nonce, key_id, \
         fingerprint, status, created_at) \
     SELECT DISTINCT ON (i.fingerprint) $6, $5, $7, \
         i.ciphertext, i.nonce, i.key_id, i.fingerprint, 'staged', $8 \
     FROM input i JOIN fresh f ON f.fingerprint = i.fingerprint";

/// Makes an import's codes sellable. The batch is first claimed
/// (`importing` → `committing`), then its codes are flipped to `available`
/// a chunk per transaction, and the batch is marked `committed` last. In one
/// statement the flip held SQLite's only write lock for as long as it took
/// (2.3 s for 150,000 codes: every order of a shop beside the import waited
/// that long, docs/PERFORMANCE.md, stop 34); in chunks, orders commit between
/// them. A claimed batch is never aborted: an importer that dies mid-flip
/// leaves it `committing`, and the reaper finishes it (`finish_commit`).
pub async fn commit_import(
    s: &SqlStore,
    batch: i64,
    product_id: i64,
    report: &ImportCounts,
) -> Result<()> {
    // The batch's row first, as `abort_import` takes it: a reaper that took
    // this import for dead and an importer finishing it meet there, and
    // only one of them goes on.
    let claimed = sqlx::query(
        "UPDATE card_batches SET status = 'committing', imported = $2, duplicates = $3, \
         rejected = $4 WHERE id = $1 AND status = 'importing'",
    )
    .bind(batch)
    .bind(report.imported as i64)
    .bind(report.duplicates as i64)
    .bind(report.rejected as i64)
    .execute(&s.write)
    .await?
    .rows_affected();
    if claimed == 0 {
        return Err(StoreError::Corrupt(format!(
            "import batch {batch} was aborted before it could commit"
        )));
    }
    let added = finish_commit(s, batch, product_id).await?;
    if s.backend == Backend::Postgres {
        analyze_after_import(s, added).await;
    }
    Ok(())
}

/// Codes flipped to `available` per transaction when an import commits:
/// on SQLite about 75 ms of the write lock on a slow day.
const FLIP_CHUNK_SQLITE: i64 = 5_000;
/// PostgreSQL flips a batch in one statement: the rows are staged, no
/// buyer's, so no order waits for them, and a chunked `id IN (…)` could be
/// planned as a scan of every code. (SQLite too, when buyers wait.)
const FLIP_WHOLE: i64 = i64::MAX;

/// Flips a claimed (`committing`) batch's codes to `available`, a chunk per
/// transaction, each serving paid buyers who waited for a restock in the
/// same transaction that makes its codes sellable (oldest first, before any
/// new buyer can take them); then marks the batch `committed`. Returns how
/// many codes it made sellable. Idempotent: the reaper calls it for a batch
/// whose importer died mid-flip.
async fn finish_commit(s: &SqlStore, batch: i64, product_id: i64) -> Result<u64> {
    let chunk = match s.backend {
        // Paid buyers waiting for this product: one statement, as on
        // PostgreSQL. In chunks, what one chunk left over after serving
        // them could go to a new buyer before the next chunk served the
        // rest (a review of stop 35's chunks); buyers wait only after a
        // product sold out, so this is rare and short.
        Backend::Sqlite if !waiting_buyers(s, product_id).await? => FLIP_CHUNK_SQLITE,
        _ => FLIP_WHOLE,
    };
    let staged = orders::staged(s.backend, "$1");
    let flip = match s.backend {
        // SQLite writes one transaction at a time, so a chunk picked is
        // flipped before anything else changes it; the outer test costs
        // nothing and keeps the statement right on its own.
        Backend::Sqlite => format!(
            "UPDATE cards SET status = 'available' \
             WHERE id IN (SELECT id FROM cards WHERE {staged} LIMIT {chunk}) AND {staged}"
        ),
        // Two finishers of one batch (an importer whose lock's connection
        // dropped, and a reaper) both run this; the second waits on the
        // first's rows and re-checks them, staged no more.
        Backend::Postgres => format!("UPDATE cards SET status = 'available' WHERE {staged}"),
    };
    let mut added = 0;
    loop {
        let started = std::time::Instant::now();
        let mut tx = s.begin().await?;
        let flipped = sqlx::query(&flip)
            .bind(batch)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        added += flipped;
        let now = now_millis();
        if flipped > 0 {
            orders::fulfil_unfulfilled_in(s.backend, &mut tx, product_id, now).await?;
        }
        if flipped < chunk as u64 {
            sqlx::query(
                "UPDATE card_batches SET status = 'committed', finished_at = $2 \
                 WHERE id = $1 AND status = 'committing'",
            )
            .bind(batch)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(added);
        }
        tx.commit().await?;
        // A shop in another process gets the lock between two chunks.
        s.yield_write_lock(started.elapsed()).await;
    }
}

/// Whether paid orders of the product wait for codes (SQLite's
/// `orders_unfulfilled` index).
async fn waiting_buyers(s: &SqlStore, product_id: i64) -> Result<bool> {
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM (SELECT 1 FROM orders \
         WHERE product_id = $1 AND status = 'paid_unfulfilled' LIMIT 1)",
    )
    .bind(product_id)
    .fetch_one(&s.read)
    .await?
        > 0)
}

/// Refreshes PostgreSQL's statistics of `cards` after an import that added a
/// tenth or more of the codes it last counted, or any codes to a table it has
/// never counted: what autovacuum would do a while later, and what
/// PostgreSQL's manual asks for after a bulk load. Without them the planner
/// guesses: with ten million codes it put a paid order's codes (`order_id =
/// $1`, one or a few rows) at 83,546 rows and read them with a parallel
/// bitmap scan, 30 ms or more per delivery in a drop right after the import
/// (docs/PERFORMANCE.md, stop 21). A failure is logged, not returned: the
/// import itself has committed.
async fn analyze_after_import(s: &SqlStore, added: u64) {
    if added == 0 {
        return;
    }
    let counted = sqlx::query_scalar::<_, f64>(
        "SELECT reltuples::float8 FROM pg_class WHERE oid = 'cards'::regclass",
    )
    .fetch_one(&s.write)
    .await;
    let stale = match counted {
        Ok(n) => n <= 0.0 || added as f64 >= 0.1 * n,
        Err(e) => {
            tracing::warn!(error = %e, "reading the codes' statistics failed");
            return;
        }
    };
    if stale {
        if let Err(e) = sqlx::query("ANALYZE cards").execute(&s.write).await {
            tracing::warn!(error = %e, "refreshing the codes' statistics after an import failed");
        }
    }
}

pub async fn abort_import(s: &SqlStore, batch: i64) -> Result<bool> {
    let mut tx = s.begin().await?;
    let claimed = sqlx::query(
        "UPDATE card_batches SET status = 'aborted', finished_at = $2 \
         WHERE id = $1 AND status = 'importing'",
    )
    .bind(batch)
    .bind(now_millis())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if claimed == 0 {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM card_batches WHERE id = $1")
                .bind(batch)
                .fetch_optional(&mut *tx)
                .await?;
        // Committed meanwhile: its codes are what they are. Aborted
        // already: its importer may have staged more since (it learns at
        // its commit), and those go too, or they would count as
        // duplicates for ever.
        if status.as_deref() != Some("aborted") {
            return Ok(false);
        }
    }
    if s.backend == Backend::Postgres {
        // Frees the staged codes' fingerprints for a later import, as
        // deleting the rows frees them on SQLite.
        sqlx::query(
            "DELETE FROM card_fingerprints f USING cards c \
             WHERE c.staged_batch = $1 \
             AND f.product_id = c.product_id AND f.fingerprint = c.fingerprint",
        )
        .bind(batch)
        .execute(&mut *tx)
        .await?;
    }
    let sql = format!(
        "DELETE FROM cards WHERE {}",
        orders::staged(s.backend, "$1")
    );
    sqlx::query(&sql).bind(batch).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(true)
}

/// The lock a running import holds on PostgreSQL, by batch id. Advisory
/// locks are the cluster's, so the key names the database too: two shops on
/// one server each have a batch 1.
const IMPORT_LOCK: &str = "hashtextextended('card_import:' || current_database() || ':' || $1, 0)";

/// The lock of imports into a product on PostgreSQL, by product id
/// (`begin_import`).
const PRODUCT_IMPORT_LOCK: &str =
    "hashtextextended('card_import_product:' || current_database() || ':' || $1, 0)";

pub async fn reap_stale_imports(s: &SqlStore, stale_before: Millis) -> Result<Reaped> {
    // A batch's lock is taken in the transaction that makes it, so every
    // batch a reaper sees has its lock to ask.
    let rows = sqlx::query(
        "SELECT id, product_id, status, heartbeat_at FROM card_batches \
         WHERE status IN ('importing', 'committing')",
    )
    .fetch_all(&s.write)
    .await?;
    // `Millis::MAX`: the caller has the database to itself, so every
    // import still running is dead.
    let alone = stale_before == Millis::MAX;
    let mut reaped = Reaped::default();
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let dead = match s.direct.as_ref().map(|d| d.path()) {
            // SQLite: the lock file tells at once; without one (an older
            // build's batch), the beat.
            Some(database) => {
                let stale = row.try_get::<i64, _>("heartbeat_at")? < stale_before;
                alone || super::import_locks::is_dead(database, id).unwrap_or(stale)
            }
            // PostgreSQL: whether any session holds the import's lock.
            None => {
                let mut tx = s.write.begin().await?;
                let free: bool =
                    sqlx::query_scalar(&format!("SELECT pg_try_advisory_xact_lock({IMPORT_LOCK})"))
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?;
                tx.commit().await?;
                free
            }
        };
        if !dead {
            continue;
        }
        // A batch claimed for its commit is whole: the rest of its codes
        // are made sellable, not thrown away.
        if row.try_get::<String, _>("status")? == "committing" {
            let product_id: i64 = row.try_get("product_id")?;
            let added = finish_commit(s, id, product_id).await?;
            if s.backend == Backend::Postgres {
                analyze_after_import(s, added).await;
            }
            if !reaped.finished.contains(&product_id) {
                reaped.finished.push(product_id);
            }
        } else {
            abort_import(s, id).await?;
            reaped.aborted += 1;
        }
        if let Some(d) = s.direct.as_ref() {
            super::import_locks::forget(d.path(), id);
        }
    }
    Ok(reaped)
}

fn tiers_json(tiers: &[kami_core::pricing::WholesaleTier]) -> String {
    serde_json::to_string(tiers).expect("tiers serialise")
}

/// Renumbers `ids` (in their display order) 0, 1, 2 … after swapping the one
/// at `at` with the one at `with`, writing only the rows whose place changed.
async fn renumber(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    table: &str,
    mut ids: Vec<(i64, i64)>,
    at: usize,
    with: usize,
) -> Result<()> {
    ids.swap(at, with);
    let sql = format!("UPDATE {table} SET sort_order = $2 WHERE id = $1");
    for (place, (id, old)) in ids.into_iter().enumerate() {
        if old != place as i64 {
            sqlx::query(&sql)
                .bind(id)
                .bind(place as i64)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

pub async fn move_category(s: &SqlStore, id: i64, up: bool) -> Result<bool> {
    let mut tx = s.begin().await?;
    let rows = sqlx::query(
        "SELECT id, sort_order FROM categories WHERE merchant_id = $1 ORDER BY sort_order, id",
    )
    .bind(DEFAULT_MERCHANT)
    .fetch_all(&mut *tx)
    .await?;
    let ids: Vec<(i64, i64)> = rows
        .iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("sort_order")?)))
        .collect::<Result<_>>()?;
    let Some(at) = ids.iter().position(|(i, _)| *i == id) else {
        return Ok(false);
    };
    let with = if up { at.checked_sub(1) } else { Some(at + 1) };
    if let Some(with) = with.filter(|w| *w < ids.len()) {
        renumber(&mut tx, "categories", ids, at, with).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Products are numbered across the whole shop, in the order the storefront
/// shows them (category order first); a move swaps places only with the
/// nearest product of the same category, the one the operator sees beside it.
pub async fn move_product(s: &SqlStore, id: i64, up: bool) -> Result<bool> {
    let mut tx = s.begin().await?;
    let rows = sqlx::query(&format!(
        "SELECT p.id, p.category_id, p.sort_order FROM products p \
         LEFT JOIN categories c ON c.id = p.category_id WHERE p.merchant_id = $1 \
         ORDER BY {PRODUCT_ORDER}"
    ))
    .bind(DEFAULT_MERCHANT)
    .fetch_all(&mut *tx)
    .await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut categories = Vec::with_capacity(rows.len());
    for r in &rows {
        ids.push((
            r.try_get::<i64, _>("id")?,
            r.try_get::<i64, _>("sort_order")?,
        ));
        categories.push(r.try_get::<Option<i64>, _>("category_id")?);
    }
    let Some(at) = ids.iter().position(|(i, _)| *i == id) else {
        return Ok(false);
    };
    let same = |j: &usize| categories[*j] == categories[at];
    let with = if up {
        (0..at).rev().find(same)
    } else {
        (at + 1..ids.len()).find(same)
    };
    if let Some(with) = with {
        renumber(&mut tx, "products", ids, at, with).await?;
    }
    tx.commit().await?;
    Ok(true)
}

//! Group commit of orders: many buyers' orders in one write transaction,
//! each with its own outcome (DESIGN.md, "Allocation under a
//! flash sale").
//!
//! A batch decides every order before it writes anything for it
//! (check-before-write), so one buyer's `sold_out` or `limit_exceeded` never
//! fails the others: the stock of each product is counted once inside the
//! write transaction, orders are granted from that budget in arrival order,
//! and the per-buyer limit is the same conditional upsert as for a single
//! order, which writes nothing when it refuses. Anything the budget could not
//! foresee (an idempotency key stored concurrently, a claim that came back
//! short because another PostgreSQL transaction holds rows the count saw,
//! any database error) rolls the whole batch back and replays its requests
//! one transaction each, which is the proven single-order path.

use std::collections::HashMap;

use sqlx::Row;

use super::orders::{
    self, claim_cards_many, delete_idempotency, insert_idempotency, pending_order, values_rows,
    Claim, Holds, Tx,
};
use super::SqlStore;
use crate::types::*;
use crate::{Backend, Result};

type OrderOutcome = Result<Result<Order, CreateOrderError>>;

pub async fn create_orders(s: &SqlStore, batch: &[NewOrder]) -> Vec<OrderOutcome> {
    let paths = &s.batch_paths;
    // SQLite: every batch goes to the writer thread, a lone order too (it
    // answers it as the single-order path does: limits and coupon before
    // stock). Sent down the sqlx connection instead, a lone order held the
    // write lock across that connection's thread hops, and the writer
    // thread's next batch waited it out in SQLite's busy handler, whose
    // sleeps grow to 25 ms: 71 sleeps of up to 40 ms in 3 s of a drop
    // (`perf sched`, docs/PERFORMANCE.md, stop 39).
    if let Some(direct) = &s.direct {
        match direct.create_orders(batch.to_vec()).await {
            Ok(Some(out)) => {
                BatchPaths::count(&paths.writer_thread);
                return out.into_iter().map(Ok).collect();
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, size = batch.len(), "order batch failed on the SQLite writer; replaying it")
            }
        }
    }
    if s.backend == Backend::Postgres && batch.iter().all(plain) {
        match reserve_plain(s, batch).await {
            Ok(Some(out)) => {
                BatchPaths::count(&paths.one_trip);
                return out.into_iter().map(|o| Ok(Ok(o))).collect();
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, size = batch.len(), "order batch failed in one trip; counting it instead")
            }
        }
    }
    if batch.len() > 1 {
        match try_create_orders(s, batch).await {
            Ok(Some(out)) => {
                BatchPaths::count(&paths.counted);
                return out.into_iter().map(Ok).collect();
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, size = batch.len(), "order batch failed; replaying it order by order")
            }
        }
    }
    BatchPaths::count(&paths.one_by_one);
    let mut out = Vec::with_capacity(batch.len());
    for o in batch {
        out.push(orders::create_order(s, o).await);
    }
    out
}

/// Counts of the paths `create_orders` wrote its batches by.
#[derive(Default)]
pub(super) struct BatchPaths {
    one_trip: std::sync::atomic::AtomicU64,
    writer_thread: std::sync::atomic::AtomicU64,
    counted: std::sync::atomic::AtomicU64,
    one_by_one: std::sync::atomic::AtomicU64,
}

impl BatchPaths {
    fn count(path: &std::sync::atomic::AtomicU64) {
        path.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn read(&self) -> OrderBatchPaths {
        let get = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        OrderBatchPaths {
            one_trip: get(&self.one_trip),
            writer_thread: get(&self.writer_thread),
            counted: get(&self.counted),
            one_by_one: get(&self.one_by_one),
        }
    }
}

/// An order with nothing to decide but its stock: no per-buyer or
/// per-address limit, no coupon, no `Idempotency-Key` (a flash sale's).
fn plain(o: &NewOrder) -> bool {
    o.per_buyer_limit.is_none()
        && o.per_ip_limit.is_none()
        && o.coupon_id.is_none()
        && o.idempotency.is_none()
}

/// PostgreSQL: a batch of plain orders reserved in one round trip, a
/// statement that is its own transaction (`kami_reserve_orders`, migration
/// 0013). `Ok(None)`: some product had fewer codes free of other
/// transactions' locks than the batch asks, and nothing was written; the
/// counted path then tells `sold_out` from codes being claimed elsewhere.
/// Codes are looked for from the product's stock floor hint (as
/// `stock_budgets` counts), the lowest code the batch took becoming the
/// next hint.
async fn reserve_plain(s: &SqlStore, batch: &[NewOrder]) -> Result<Option<Vec<Order>>> {
    let hints: HashMap<i64, Option<i64>> = batch
        .iter()
        .map(|o| (o.product_id, s.stock_floors.hint(s.backend, o.product_id)))
        .collect();
    let rows =
        super::pg_sets::plain_order_rows(batch, |product| hints[&product].unwrap_or(i64::MIN));
    let out = sqlx::query(RESERVE_ORDERS)
        .bind(rows)
        .bind(DEFAULT_MERCHANT)
        .fetch_all(&s.write)
        .await?;
    if out.is_empty() {
        return Ok(None);
    }
    let mut reserved: HashMap<String, (i64, Option<i64>)> = HashMap::with_capacity(out.len());
    for row in &out {
        reserved.insert(
            row.try_get("order_no")?,
            (row.try_get("order_id")?, row.try_get("first_card")?),
        );
    }
    let mut orders = Vec::with_capacity(batch.len());
    for o in batch {
        let Some(&(id, first)) = reserved.get(o.order_no.as_str()) else {
            return Err(crate::StoreError::Corrupt(format!(
                "a reservation batch of {} orders answered {} rows",
                batch.len(),
                out.len()
            )));
        };
        if let Some(first) = first {
            let full = hints[&o.product_id].is_none();
            s.stock_floors.found(s.backend, o.product_id, first, full);
        }
        orders.push(pending_order(id, o));
    }
    Ok(Some(orders))
}

/// `reserve_plain`'s statement: the batch's rows as JSON, the merchant.
const RESERVE_ORDERS: &str =
    "SELECT order_no, order_id, first_card FROM kami_reserve_orders($1::json, $2)";

/// Readies a connection for `reserve_plain` without writing anything (an
/// empty batch): the statement prepared, the function compiled and its
/// plan made, work the first batch on each connection did in a drop's
/// first half second otherwise.
pub(super) async fn warm(conn: &mut sqlx::AnyConnection) -> Result<()> {
    sqlx::query(RESERVE_ORDERS)
        .bind("[]")
        .bind(DEFAULT_MERCHANT)
        .fetch_all(conn)
        .await?;
    Ok(())
}

/// `Ok(None)`: the batch was rolled back and must be replayed one by one.
async fn try_create_orders(
    s: &SqlStore,
    batch: &[NewOrder],
) -> Result<Option<Vec<Result<Order, CreateOrderError>>>> {
    let mut tx = s.begin_batch(orders::CLAIM_PLANS).await?;
    match write_orders(s, &mut tx, batch).await {
        Ok(Some(out)) => {
            tx.commit().await?;
            Ok(Some(out))
        }
        other => {
            // Roll back before the replay starts: a dropped transaction is
            // only rolled back later by the pool, and until then its claimed
            // rows stay locked and the replay's SKIP LOCKED claims would
            // pass them over and answer sold_out wrongly (PostgreSQL).
            if let Err(e) = tx.rollback().await {
                tracing::warn!(error = %e, "rolling back an order batch failed");
            }
            other
        }
    }
}

async fn write_orders(
    s: &SqlStore,
    tx: &mut Tx,
    batch: &[NewOrder],
) -> Result<Option<Vec<Result<Order, CreateOrderError>>>> {
    let holds: Vec<Holds> = batch.iter().map(Holds::wanted).collect();
    orders::lock_holds(s.backend, tx, &holds).await?;
    let (mut budget, floors) = stock_budgets(s, tx, batch).await?;
    // The keys are claimed before any order is decided, as on the single
    // path: a retried request whose twin is granted must hear "replay that
    // order", never a refusal of its own (invariant 4). They are claimed in
    // one order, by scope and key, in every batch: two PostgreSQL batches
    // each holding the other's twin would otherwise wait on each other's
    // uncommitted insert until the deadlock detector failed one (1 s, then
    // the whole batch replayed order by order; an audit met it with
    // clients sending every order twice at once).
    let mut keyed: Vec<(&IdempotencyRecord, usize)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.idempotency.as_ref().map(|rec| (rec, i)))
        .collect();
    keyed.sort_by(|(a, i), (b, j)| (&a.scope, &a.key, i).cmp(&(&b.scope, &b.key, j)));
    let mut taken = vec![false; batch.len()];
    for (rec, i) in keyed {
        taken[i] = !insert_idempotency(tx, rec).await?;
    }
    let mut verdicts: Vec<Option<CreateOrderError>> = Vec::with_capacity(batch.len());
    for (o, taken) in batch.iter().zip(taken) {
        if taken {
            verdicts.push(Some(CreateOrderError::IdempotencyKeyTaken));
            continue;
        }
        let verdict = decide(tx, o, &mut budget).await?;
        if let (Some(_), Some(rec)) = (&verdict, &o.idempotency) {
            // A refusal writes nothing, its key included; the handler stores
            // the refusal under the key as for a single order.
            delete_idempotency(tx, rec).await?;
        }
        verdicts.push(verdict);
    }
    let granted: Vec<&NewOrder> = batch
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| v.is_none())
        .map(|(o, _)| o)
        .collect();
    let ids = insert_orders(s.backend, tx, &granted).await?;
    let claims: Vec<Claim> = granted
        .iter()
        .map(|o| Claim {
            order_id: ids[o.order_no.as_str()],
            product_id: o.product_id,
            quantity: o.quantity,
            until: o.expires_at,
            floor: floors.get(&o.product_id).copied(),
        })
        .collect();
    let claimed = claim_cards_many(s.backend, tx, &claims).await?;
    if claimed.iter().zip(&granted).any(|(n, o)| *n < o.quantity) {
        return Ok(None);
    }
    Ok(Some(
        batch
            .iter()
            .zip(verdicts)
            .map(|(o, v)| match v {
                None => Ok(pending_order(ids[o.order_no.as_str()], o)),
                Some(e) => Err(e),
            })
            .collect(),
    ))
}

/// Available codes per product of the batch, counted inside the write
/// transaction and capped at what the batch asks for (so a million codes
/// cost no more to count than ten), and the lowest available id (the
/// claims' `floor`).
async fn stock_budgets(
    s: &SqlStore,
    tx: &mut Tx,
    batch: &[NewOrder],
) -> Result<(HashMap<i64, i64>, HashMap<i64, i64>)> {
    let (available, order_by) = orders::available_in_order(s.backend, "$1");
    // From `$3` on: a product's first entry (`i64::MIN`) or the hint.
    let count = format!(
        "SELECT COUNT(*) AS n, MIN(id) AS first FROM (SELECT id FROM cards \
         WHERE {available} AND id >= $3 {order_by} LIMIT $2) AS a"
    );
    let mut wanted: HashMap<i64, i64> = HashMap::new();
    for o in batch {
        *wanted.entry(o.product_id).or_default() += o.quantity;
    }
    let mut budget = HashMap::with_capacity(wanted.len());
    let mut floors = HashMap::with_capacity(wanted.len());
    for (product_id, want) in wanted {
        let mut from = s
            .stock_floors
            .hint(s.backend, product_id)
            .unwrap_or(i64::MIN);
        let row = loop {
            let row = sqlx::query(&count)
                .bind(product_id)
                .bind(want)
                .bind(from)
                .fetch_one(&mut **tx)
                .await?;
            // Enough at or above the hint: the budget is `want` either way.
            // Short of it, codes below the hint may have come back: count
            // them all.
            if from == i64::MIN || row.try_get::<i64, _>("n")? >= want {
                break row;
            }
            from = i64::MIN;
        };
        budget.insert(product_id, row.try_get::<i64, _>("n")?);
        if let Some(first) = row.try_get::<Option<i64>, _>("first")? {
            floors.insert(product_id, first);
            let full = from == i64::MIN;
            s.stock_floors.found(s.backend, product_id, first, full);
        }
    }
    Ok((budget, floors))
}

/// PostgreSQL: each product's first available code as the last batches
/// found it, so the next batch's count starts there. A claim leaves its
/// codes' entries in `cards_available` until a vacuum, and a count from the
/// product's first entry stepped over every one of them: 594 index pages
/// and 1.3 ms for a count of 36 after 150,000 codes sold, 0.2 ms a batch
/// on average through an 80,000-code drop (pg_stat_statements,
/// docs/PERFORMANCE.md stop 40). SQLite's index drops a claimed code at
/// once, so it keeps no hints.
///
/// A hint only ever shortens the walk: a count from it that finds what the
/// batch wants gives the budget a full count would (it is capped there),
/// and one that finds less is done again from the product's first entry.
/// Codes that came back below the hint (an expired order's) are sold once
/// the hint is older than `HINT_TTL` or the stock above it runs short.
#[derive(Default)]
pub(super) struct StockFloors(std::sync::Mutex<HashMap<i64, (i64, std::time::Instant)>>);

const HINT_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl StockFloors {
    fn hint(&self, backend: Backend, product_id: i64) -> Option<i64> {
        if backend != Backend::Postgres {
            return None;
        }
        let hints = self.0.lock().unwrap_or_else(|e| e.into_inner());
        hints
            .get(&product_id)
            .filter(|(_, at)| at.elapsed() < HINT_TTL)
            .map(|(first, _)| *first)
    }

    /// Records the first available code a count saw: `full`, from the
    /// product's first entry (the hint's age starts again), or from the hint
    /// (it moves on and keeps its age, so that codes come back below it are
    /// found within `HINT_TTL` even in a drop that counts with every batch).
    fn found(&self, backend: Backend, product_id: i64, first: i64, full: bool) {
        if backend != Backend::Postgres {
            return;
        }
        let mut hints = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let hint = hints.entry(product_id).or_insert((first, now));
        hint.0 = first;
        if full {
            hint.1 = now;
        }
    }
}

/// The checks of a batch order that need no statement: the codes left in
/// the batch's budget for its product, or the refusal. The same order of
/// answers as the single path: an order above a limit is refused as such
/// even when the product is sold out.
pub(super) fn budget_verdict(
    o: &NewOrder,
    budget: &HashMap<i64, i64>,
) -> Result<i64, CreateOrderError> {
    if o.above_a_limit() {
        return Err(CreateOrderError::LimitExceeded);
    }
    let left = budget.get(&o.product_id).copied().unwrap_or(0);
    if left < o.quantity {
        return Err(if left == 0 {
            CreateOrderError::SoldOut
        } else {
            CreateOrderError::InsufficientStock { available: left }
        });
    }
    Ok(left)
}

/// `None` grants the order (its stock is then taken from the budget and its
/// limits and coupon use recorded); `Some` refuses it having written nothing.
async fn decide(
    tx: &mut Tx,
    o: &NewOrder,
    budget: &mut HashMap<i64, i64>,
) -> Result<Option<CreateOrderError>> {
    let left = match budget_verdict(o, budget) {
        Ok(left) => left,
        Err(refused) => return Ok(Some(refused)),
    };
    if let Some(refused) = orders::take_holds(tx, o).await? {
        return Ok(Some(refused));
    }
    budget.insert(o.product_id, left - o.quantity);
    Ok(None)
}

/// Inserts the granted orders with multi-row statements; their ids by number.
pub(super) async fn insert_orders(
    backend: Backend,
    tx: &mut Tx,
    granted: &[&NewOrder],
) -> Result<HashMap<String, i64>> {
    if backend == Backend::Postgres {
        return super::pg_sets::insert_orders(tx, granted).await;
    }
    let mut ids = HashMap::with_capacity(granted.len());
    for chunk in granted.chunks(backend.insert_chunk()) {
        let values = values_rows(
            chunk.len(),
            &format!(
                "({DEFAULT_MERCHANT}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)"
            ),
        );
        let sql = format!(
            "INSERT INTO orders (merchant_id, order_no, product_id, quantity, unit_price, \
             discount, amount, currency, email, query_password_hash, access_token_hash, \
             buyer_ip, channel, status, created_at, expires_at, idempotency_key, coupon_id, limit_holds) \
             VALUES {values} \
             RETURNING id, order_no"
        );
        let mut q = sqlx::query(&sql);
        for o in chunk {
            q = q
                .bind(&o.order_no)
                .bind(o.product_id)
                .bind(o.quantity)
                .bind(o.unit_price)
                .bind(o.discount)
                .bind(o.amount)
                .bind(&o.currency)
                .bind(&o.email)
                .bind(o.query_password_hash.as_deref())
                .bind(o.access_token_hash.as_slice())
                .bind(o.buyer_ip.as_deref())
                .bind(&o.channel)
                .bind(o.created_at)
                .bind(o.expires_at)
                .bind(o.idempotency.as_ref().map(|r| r.key.as_str()))
                .bind(o.coupon_id)
                .bind(o.limit_holds());
        }
        for row in q.fetch_all(&mut **tx).await? {
            ids.insert(row.try_get("order_no")?, row.try_get("id")?);
        }
        // Each pending order's deadline row (SQLite's migration 0012).
        for o in chunk {
            sqlx::query(orders::INSERT_DEADLINE)
                .bind(ids[o.order_no.as_str()])
                .bind(o.expires_at)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(ids)
}

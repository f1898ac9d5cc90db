//! Payments (DESIGN.md "Pay"), one at a time and in groups: the payment
//! row's UNIQUE (channel, trade_no) makes a repeated notification a no-op,
//! and every status change is a conditional update.

use std::collections::{HashMap, HashSet};

use kami_core::{Millis, OrderStatus};
use sqlx::Row;

use super::orders::{
    claim_cards, event, lock_holds, release_cards, restore_holds, sell_cards, values_rows, Holds,
    Tx,
};
use super::{pg_sets, SqlStore};
use crate::types::*;
use crate::{Backend, Result};

/// DESIGN.md "Pay": the payment row's UNIQUE (channel, trade_no) makes a
/// repeated notification a no-op; the order moves on with conditional
/// updates in the same transaction.
pub async fn pay_order(s: &SqlStore, p: &NewPayment) -> Result<PayOutcome> {
    if s.backend == Backend::Postgres {
        // PostgreSQL runs the batch for the one payment (its statements and
        // its planner settings, `NO_SCANS`, whose plans the connection
        // caches): a late payment then takes its product's restock lock
        // before its order's row and the holds (`lock_late_holds`), the
        // order every other transaction keeps. `settle_in` alone locks the
        // row first and the restock lock last, and deadlocked with expiry
        // sweeps over a shared coupon (a review of the locks; a race test).
        return Ok(try_pay_orders(s, std::slice::from_ref(p)).await?.remove(0));
    }
    let mut tx = s.begin().await?;
    let outcome = pay_order_in(s.backend, &mut tx, p).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// The body of `pay_order` inside the caller's transaction, so the group
/// commit can pay many orders in one. Every outcome either writes all of its
/// rows or none (a duplicate writes nothing); an `Err` means the caller must
/// roll the whole transaction back.
pub async fn pay_order_in(backend: Backend, tx: &mut Tx, p: &NewPayment) -> Result<PayOutcome> {
    match insert_payments(backend, tx, std::slice::from_ref(p)).await?[0] {
        Inserted::New => settle_in(backend, tx, p).await,
        Inserted::Duplicate => Ok(PayOutcome::Duplicate),
        Inserted::TakenByOther => Ok(PayOutcome::TradeNoTaken),
    }
}

/// Moves the order on for a payment whose row was just inserted.
async fn settle_in(backend: Backend, tx: &mut Tx, p: &NewPayment) -> Result<PayOutcome> {
    let now = p.received_at;
    let sql = format!(
        "SELECT {} FROM orders WHERE id = $1 {}",
        super::rows::ORDER_COLUMNS,
        backend.for_update()
    );
    let row = sqlx::query(&sql)
        .bind(p.order_id)
        .fetch_one(&mut **tx)
        .await?;
    let order = super::rows::order(&row)?;
    let (order_no, product_id, quantity) =
        (order.order_no.clone(), order.product_id, order.quantity);
    let status = order.status.0.as_str();
    let paid = paid_detail(p);
    let outcome = match OrderStatus::parse(status) {
        Some(OrderStatus::Pending) => {
            let sold = sell_cards(tx, p.order_id, now).await?;
            if sold != quantity {
                // Impossible while the invariants hold; refuse rather than
                // deliver short, so the gateway retries and an operator looks.
                return Err(crate::StoreError::Corrupt(format!(
                    "order {order_no} held {sold} reserved codes, expected {quantity}"
                )));
            }
            deliver(tx, p.order_id, &order_no, now, None, "pending").await?;
            PayOutcome::Delivered
        }
        Some(OrderStatus::Expired) => {
            // A late payment: the codes went back to stock at expiry; take
            // them again if there are enough, or park the order for restock.
            let holds = Holds::of(&order);
            lock_holds(backend, tx, [&holds]).await?;
            restore_holds(tx, &holds).await?;
            // Parking the order must not cross a restock (`lock_restocks`).
            super::orders::lock_restocks(backend, tx, product_id).await?;
            let claimed = claim_cards(backend, tx, p.order_id, product_id, quantity, None).await?;
            if claimed == quantity {
                sell_cards(tx, p.order_id, now).await?;
                deliver(
                    tx,
                    p.order_id,
                    &order_no,
                    now,
                    Some(&format!("late payment: {paid}")),
                    "expired",
                )
                .await?;
                PayOutcome::Delivered
            } else {
                release_cards(tx, p.order_id).await?;
                sqlx::query(
                    "UPDATE orders SET status = 'paid_unfulfilled', paid_at = $2 \
                     WHERE id = $1 AND status = 'expired'",
                )
                .bind(p.order_id)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                event(
                    tx,
                    p.order_id,
                    &order_no,
                    "paid",
                    format!("late payment: {paid}"),
                    now,
                )
                .await?;
                event(
                    tx,
                    p.order_id,
                    &order_no,
                    "paid_unfulfilled",
                    format!("no stock for {quantity} code(s); waiting for restock or refund"),
                    now,
                )
                .await?;
                PayOutcome::PaidUnfulfilled
            }
        }
        _ => {
            event(
                tx,
                p.order_id,
                &order_no,
                "payment_for_paid_order",
                format!("order already {status}; {}", extra_payment(&paid)),
                now,
            )
            .await?;
            PayOutcome::AlreadyPaid
        }
    };
    Ok(outcome)
}

pub(super) fn paid_detail(p: &NewPayment) -> String {
    paid_detail_of(p.amount, &p.currency, &p.channel, &p.trade_no)
}

pub(super) fn paid_detail_of(amount: i64, currency: &str, channel: &str, trade_no: &str) -> String {
    format!("{amount} {currency} via {channel} trade {trade_no}")
}

/// How a `payment_for_paid_order` event ends: it names the payment that did
/// not pay the order (`orders::paying_payment`).
pub(super) fn extra_payment(paid: &str) -> String {
    format!("extra payment {paid} needs a refund")
}

/// Moves the order from `from` to delivered. `late`: what the timeline's
/// `paid` entry says of a late payment; a pending order's payment and
/// delivery are told by its row and its payment (`orders::lifecycle`).
async fn deliver(
    tx: &mut Tx,
    order_id: i64,
    order_no: &str,
    now: Millis,
    late: Option<&str>,
    from: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE orders SET status = 'delivered', paid_at = $2, delivered_at = $2 \
         WHERE id = $1 AND status = $3",
    )
    .bind(order_id)
    .bind(now)
    .bind(from)
    .execute(&mut **tx)
    .await?;
    if let Some(paid) = late {
        event(tx, order_id, order_no, "paid", paid.to_string(), now).await?;
        event(tx, order_id, order_no, "delivered", String::new(), now).await?;
    }
    Ok(())
}

/// Payments in one transaction, with set-based statements for the common
/// case (a pending order's first payment): one insert of every payment row,
/// then the codes sold, the orders delivered and the events written for all
/// of them at once. Everything else (duplicates aside: their row was not
/// inserted, so nothing changes) goes through `settle_in` one by one in the
/// same transaction. An error rolls the batch back and replays it payment by
/// payment, so only the failing payment gets it.
pub async fn pay_orders(s: &SqlStore, batch: &[NewPayment]) -> Vec<Result<PayOutcome>> {
    if let Some(direct) = &s.direct {
        match direct.pay_orders(batch.to_vec()).await {
            Ok(Some(out)) => return out.into_iter().map(Ok).collect(),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, size = batch.len(), "payment batch failed on the SQLite writer; replaying it")
            }
        }
    }
    if batch.len() > 1 {
        match try_pay_orders(s, batch).await {
            Ok(out) => return out.into_iter().map(Ok).collect(),
            Err(e) => {
                tracing::warn!(error = %e, size = batch.len(), "payment batch failed; replaying it payment by payment")
            }
        }
    }
    let mut out = Vec::with_capacity(batch.len());
    for p in batch {
        out.push(pay_order(s, p).await);
    }
    out
}

/// PostgreSQL plans a payment batch's statements with no statistics of the
/// codes yet (autovacuum analyzes them long after a big import), and with
/// ten million codes in stock its estimates made the codes' update a
/// sequential scan of every code once a batch named enough orders (113 of
/// them in one storm, 148 paid orders a second), and past `jit_above_cost`
/// every plan JIT-compiled itself first (75 ms for the codes' update of a
/// batch, which runs in 0.05 ms by `cards_by_order`; `EXPLAIN ANALYZE` on a
/// benchmark database with 10,000,000 codes). Every statement here finds
/// its few hundred rows through an index. Bitmap scans are off too, so each
/// statement's index scan visits its rows in key order: every batch, on
/// every instance, locks the orders it delivers by id and their codes by
/// order (`deliver_pending_orders`). JIT is off for every session since
/// stop 21 (`connect.rs`, `POSTGRES_SESSION`).
const NO_SCANS: &str = "SELECT set_config('enable_seqscan', 'off', true), \
     set_config('enable_bitmapscan', 'off', true)";

async fn try_pay_orders(s: &SqlStore, batch: &[NewPayment]) -> Result<Vec<PayOutcome>> {
    let mut tx = s.begin_batch(NO_SCANS).await?;
    match write_payments(s.backend, &mut tx, batch).await {
        Ok(out) => {
            tx.commit().await?;
            Ok(out)
        }
        Err(e) => {
            // Roll back before the one-by-one replay: a dropped transaction
            // keeps its row locks until the pool gets to it, and a replayed
            // late payment would skip those cards and park its order as
            // paid_unfulfilled while they are free (PostgreSQL).
            if let Err(rb) = tx.rollback().await {
                tracing::warn!(error = %rb, "rolling back a payment batch failed");
            }
            Err(e)
        }
    }
}

async fn write_payments(
    backend: Backend,
    tx: &mut Tx,
    batch: &[NewPayment],
) -> Result<Vec<PayOutcome>> {
    let inserted = insert_payments(backend, tx, batch).await?;
    // Each order's first new payment may take the set-based path; a second
    // payment for the same order must see the first one's result.
    let mut first_of_order: HashMap<i64, usize> = HashMap::new();
    for (i, p) in batch.iter().enumerate() {
        if inserted[i] == Inserted::New {
            first_of_order.entry(p.order_id).or_insert(i);
        }
    }
    let ids: Vec<i64> = first_of_order.keys().copied().collect();
    let now: Millis = first_of_order
        .values()
        .map(|&i| batch[i].received_at)
        .max()
        .unwrap_or(0);
    let pending = deliver_pending_orders(backend, tx, &ids, now).await?;
    let fast: Vec<usize> = batch
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            first_of_order.get(&p.order_id) == Some(i) && pending.contains_key(&p.order_id)
        })
        .map(|(i, _)| i)
        .collect();
    sell_delivered(backend, tx, batch, &fast, &pending, now).await?;
    let rest: Vec<i64> = batch
        .iter()
        .enumerate()
        .filter(|(i, _)| inserted[*i] == Inserted::New && !fast.contains(i))
        .map(|(_, p)| p.order_id)
        .collect();
    lock_late_holds(backend, tx, &rest).await?;
    let mut out = Vec::with_capacity(batch.len());
    for (i, p) in batch.iter().enumerate() {
        out.push(match inserted[i] {
            Inserted::Duplicate => PayOutcome::Duplicate,
            Inserted::TakenByOther => PayOutcome::TradeNoTaken,
            Inserted::New if fast.contains(&i) => PayOutcome::Delivered,
            Inserted::New => settle_in(backend, tx, p).await?,
        });
    }
    Ok(out)
}

/// What became of a payment's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inserted {
    New,
    /// The same order's payment was stored before (or by a twin earlier in
    /// this batch).
    Duplicate,
    /// The trade number is stored for another order.
    TakenByOther,
}

/// Inserts the payment rows and tells each entry's fate.
async fn insert_payments(
    backend: Backend,
    tx: &mut Tx,
    batch: &[NewPayment],
) -> Result<Vec<Inserted>> {
    let rows = match backend {
        Backend::Postgres => pg_sets::insert_payments(tx, batch).await?,
        Backend::Sqlite => insert_payment_values(tx, batch).await?,
    };
    let written = by_trade(&rows);
    let mut claimed: HashSet<(&str, &str)> = HashSet::with_capacity(rows.len());
    // The first entry matching a stored row is the one that wrote it.
    let mut fates: Vec<Option<Inserted>> = batch
        .iter()
        .map(|p| {
            let key = (p.channel.as_str(), p.trade_no.as_str());
            let owner = *written.get(&key)?;
            Some(if owner == p.order_id && claimed.insert(key) {
                Inserted::New
            } else {
                same_order(owner, p)
            })
        })
        .collect();
    // Rows stored before this batch: whose are they? One statement for all.
    let earlier: Vec<&NewPayment> = batch
        .iter()
        .zip(&fates)
        .filter(|(_, f)| f.is_none())
        .map(|(p, _)| p)
        .collect();
    if !earlier.is_empty() {
        let stored = payment_owners(tx, &earlier).await?;
        let owners = by_trade(&stored);
        for (p, fate) in batch.iter().zip(fates.iter_mut()) {
            if fate.is_none() {
                let owner = owners.get(&(p.channel.as_str(), p.trade_no.as_str()));
                // No row at all cannot follow a conflict; call it a
                // duplicate, which changes nothing.
                *fate = Some(owner.map_or(Inserted::Duplicate, |o| same_order(*o, p)));
            }
        }
    }
    Ok(fates
        .into_iter()
        .map(|f| f.expect("every fate decided"))
        .collect())
}

/// Payment rows (order_id, channel, trade_no) by their trade number.
fn by_trade(rows: &[(i64, String, String)]) -> HashMap<(&str, &str), i64> {
    rows.iter()
        .map(|(order_id, channel, trade_no)| ((channel.as_str(), trade_no.as_str()), *order_id))
        .collect()
}

fn same_order(owner: i64, p: &NewPayment) -> Inserted {
    if owner == p.order_id {
        Inserted::Duplicate
    } else {
        Inserted::TakenByOther
    }
}

/// The stored rows (order_id, channel, trade_no) of these payments' trade
/// numbers.
async fn payment_owners(
    tx: &mut Tx,
    payments: &[&NewPayment],
) -> Result<Vec<(i64, String, String)>> {
    let mut owners = Vec::with_capacity(payments.len());
    for chunk in payments.chunks(128) {
        let pairs = (0..chunk.len())
            .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT order_id, channel, trade_no FROM payments \
             WHERE (channel, trade_no) IN (VALUES {pairs})"
        );
        let mut q = sqlx::query(&sql);
        for p in chunk {
            q = q.bind(&p.channel).bind(&p.trade_no);
        }
        for row in q.fetch_all(&mut **tx).await? {
            owners.push((
                row.try_get("order_id")?,
                row.try_get("channel")?,
                row.try_get("trade_no")?,
            ));
        }
    }
    Ok(owners)
}

/// `insert_payments` on SQLite: multi-row `VALUES` statements; the
/// (order_id, channel, trade_no) of the rows stored.
async fn insert_payment_values(
    tx: &mut Tx,
    batch: &[NewPayment],
) -> Result<Vec<(i64, String, String)>> {
    let mut stored = Vec::with_capacity(batch.len());
    for chunk in batch.chunks(Backend::Sqlite.insert_chunk()) {
        let values = values_rows(
            chunk.len(),
            &format!("({DEFAULT_MERCHANT}, ?, ?, ?, ?, ?, ?, ?)"),
        );
        let sql = format!(
            "INSERT INTO payments (merchant_id, order_id, channel, trade_no, amount, currency, \
             raw, received_at) VALUES {values} ON CONFLICT (channel, trade_no) DO NOTHING \
             RETURNING order_id, channel, trade_no"
        );
        let mut q = sqlx::query(&sql);
        for p in chunk {
            q = q
                .bind(p.order_id)
                .bind(&p.channel)
                .bind(&p.trade_no)
                .bind(p.amount)
                .bind(&p.currency)
                .bind(&p.raw)
                .bind(p.received_at);
        }
        for row in q.fetch_all(&mut **tx).await? {
            stored.push((
                row.try_get("order_id")?,
                row.try_get("channel")?,
                row.try_get("trade_no")?,
            ));
        }
    }
    Ok(stored)
}

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `column IN (ids)` with the ids as parameters from `$first` on: one text
/// parameter on PostgreSQL (`pg_sets`), one parameter per id on SQLite.
fn ids_in(backend: Backend, column: &str, first: usize, n: usize) -> String {
    match backend {
        Backend::Postgres => pg_sets::any_id(column, first),
        Backend::Sqlite => format!("{column} IN ({})", placeholders(first, n)),
    }
}

fn bind_ids<'q>(
    backend: Backend,
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ids: &[i64],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    match backend {
        Backend::Postgres => q.bind(pg_sets::id_list(ids)),
        Backend::Sqlite => {
            for id in ids {
                q = q.bind(*id);
            }
            q
        }
    }
}

/// Moves the pending orders among `ids` to delivered, paid at `now`, and
/// returns them (number, quantity); the others are left for `settle_in`.
/// One conditional update instead of locking the rows first and updating
/// them after: on PostgreSQL a row lock is a write of its own (a WAL record
/// and a dirtied page per order). The row stays locked to the end of the
/// transaction either way, so nothing else moves the order meanwhile; if
/// its codes then do not add up (`sell_delivered`), the whole batch is
/// rolled back. Only the orders it moves are locked: a locked
/// paid_unfulfilled order would be skipped by a concurrent restock's
/// oldest-first fulfilment. `status || ''` keeps the planner off a partial
/// pending-orders index (PostgreSQL's until its migration 0010, SQLite's
/// until its 0012), which PostgreSQL planned as a bitmap AND with the
/// primary key (see `pg_sets`). On PostgreSQL the update is HOT (`pg_status`).
///
/// Lock order: two instances paying overlapping orders (a gateway's retries
/// reaching both) lock them in the order the plan visits them. The batch
/// plans without bitmap or sequential scans (`NO_SCANS`), so this is
/// an index scan of the primary key, which visits the ids of `= ANY` in
/// ascending order (`EXPLAIN` on a drop's database: `Index Scan using
/// orders_pkey`, and for the codes' update `Index Scan using
/// cards_by_order`), the same order in every transaction. Until stop 20 a
/// bitmap scan could be planned for one batch and an index scan for
/// another, and the two orders could cross; forcing the index scan with
/// sequential scans still allowed had turned the codes' update into a scan
/// of the whole table (2,300 notifications/s instead of 10,000), and with
/// both off the storm's rate and PostgreSQL's CPU per notification did not
/// move (stop 20, alternated runs). The payment rows before them are
/// inserted in (channel, trade_no) order (`pg_sets::insert_payments`).
/// Should two transactions' locks still cross, PostgreSQL aborts one batch
/// after `deadlock_timeout` and it is replayed one payment at a time, each
/// locking one order: a second's delay, no error and nothing lost. Within
/// one instance an order's payments share one writer.
async fn deliver_pending_orders(
    backend: Backend,
    tx: &mut Tx,
    ids: &[i64],
    now: Millis,
) -> Result<HashMap<i64, (String, i64)>> {
    let mut pending = HashMap::new();
    if ids.is_empty() {
        return Ok(pending);
    }
    let sql = format!(
        "UPDATE orders SET status = 'delivered', paid_at = $1, delivered_at = $1 \
         WHERE {} AND status || '' = 'pending' RETURNING id, order_no, quantity",
        ids_in(backend, "id", 2, ids.len()),
    );
    for row in bind_ids(backend, sqlx::query(&sql).bind(now), ids)
        .fetch_all(&mut **tx)
        .await?
    {
        pending.insert(
            row.try_get("id")?,
            (row.try_get("order_no")?, row.try_get("quantity")?),
        );
    }
    Ok(pending)
}

/// PostgreSQL: the holds every late payment among `order_ids` will restore
/// (`settle_in`), locked all at once (`lock_holds`). Taken one late payment
/// at a time they would not follow the common order, and a batch paying two
/// could deadlock with an order holding one buyer's row and waiting for the
/// coupon the first late payment took. The orders are locked first, lowest
/// id first, so their status cannot change before `settle_in` reads it.
async fn lock_late_holds(backend: Backend, tx: &mut Tx, order_ids: &[i64]) -> Result<()> {
    if backend != Backend::Postgres || order_ids.is_empty() {
        return Ok(());
    }
    // The products' restock locks first, in product order, before any of
    // these orders' rows (`orders::lock_restocks`: restock locks come before
    // order and hold rows in every transaction). Taken one by one in
    // `settle_in`, a batch held a waiting order's row (an extra payment)
    // while it waited for a restock lock whose holder waited for that row,
    // or took two products' locks in the other order than a sweep (a
    // review of stop 35's lock). Only late and extra payments come here.
    let products = format!(
        "SELECT DISTINCT product_id FROM orders WHERE {} ORDER BY product_id",
        ids_in(backend, "id", 1, order_ids.len())
    );
    let products = bind_ids(backend, sqlx::query(&products), order_ids)
        .fetch_all(&mut **tx)
        .await?;
    for row in products {
        let product_id: i64 = row.try_get("product_id")?;
        super::orders::lock_restocks(backend, tx, product_id).await?;
    }
    let sql = format!(
        "SELECT {} FROM orders WHERE {} ORDER BY id {}",
        super::rows::ORDER_COLUMNS,
        ids_in(backend, "id", 1, order_ids.len()),
        backend.for_update()
    );
    let mut holds = Vec::new();
    for row in bind_ids(backend, sqlx::query(&sql), order_ids)
        .fetch_all(&mut **tx)
        .await?
    {
        let order = super::rows::order(&row)?;
        if order.status.0 == OrderStatus::Expired {
            holds.push(Holds::of(&order));
        }
    }
    lock_holds(backend, tx, &holds).await
}

/// Sells the reserved codes of the `fast` payments' orders (delivered by
/// `deliver_pending_orders`), checking every order got exactly its quantity
/// (else the batch is refused, as `settle_in` would refuse the single
/// payment). Their timelines need no rows: the orders' `paid_at` and
/// `delivered_at` and their payments tell them (`orders::lifecycle`).
async fn sell_delivered(
    backend: Backend,
    tx: &mut Tx,
    batch: &[NewPayment],
    fast: &[usize],
    pending: &HashMap<i64, (String, i64)>,
    now: Millis,
) -> Result<()> {
    if fast.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = fast.iter().map(|&i| batch[i].order_id).collect();
    let sql = format!(
        "UPDATE cards SET status = 'sold', sold_at = $1, reserved_until = NULL \
         WHERE status = 'reserved' AND {} RETURNING order_id",
        ids_in(backend, "order_id", 2, ids.len())
    );
    let mut sold: HashMap<i64, i64> = HashMap::new();
    for row in bind_ids(backend, sqlx::query(&sql).bind(now), &ids)
        .fetch_all(&mut **tx)
        .await?
    {
        *sold.entry(row.try_get("order_id")?).or_default() += 1;
    }
    for id in &ids {
        let (order_no, quantity) = &pending[id];
        let got = sold.get(id).copied().unwrap_or(0);
        if got != *quantity {
            return Err(crate::StoreError::Corrupt(format!(
                "order {order_no} held {got} reserved codes, expected {quantity}"
            )));
        }
    }
    Ok(())
}

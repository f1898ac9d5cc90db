//! PostgreSQL's ways to the orders of one status. Since its migration 0010 no
//! index of `orders` names the status, so a paid order's update is HOT (its
//! new version stays on its page and no index takes it again): every pending
//! order is named by a row of `order_deadlines`, written with it, and every
//! paid_unfulfilled, expired or refunded one by its row in `order_marks`,
//! which a trigger keeps. A status's orders are read through those, by
//! primary key, and the status is checked on the order itself. SQLite keeps
//! its partial indexes but for pending orders, which its own
//! `order_deadlines` names since its migration 0012 (a row per order); each
//! function here says what it does there.

use kami_core::{Millis, OrderStatus};
use sqlx::Row;

use super::orders::expire_orders;
use super::pg_sets::{any_id, id_list};
use super::{rows, SqlStore};
use crate::types::*;
use crate::{Backend, Result};

/// The ids of the orders `status` may hold, as an array expression; `None`
/// for `delivered`, which is every other order. `extra` narrows the marks
/// (`AND product_id = $1`).
fn candidates(status: OrderStatus, extra: &str) -> Option<String> {
    match status {
        OrderStatus::Pending => {
            Some("ARRAY(SELECT unnest(order_ids) FROM order_deadlines)".to_string())
        }
        OrderStatus::Delivered => None,
        st => Some(format!(
            "ARRAY(SELECT order_id FROM order_marks WHERE status = '{}' {extra})",
            st.as_str()
        )),
    }
}

/// ` AND id = ANY(<candidates>)` on PostgreSQL, to go with the statement's
/// own `status = ..` test. On SQLite the pending orders' deadline rows
/// (its migration 0012); nothing for the other statuses, whose partial
/// indexes serve that test.
pub(super) fn marked(backend: Backend, status: OrderStatus, extra: &str) -> String {
    match (backend, status, candidates(status, extra)) {
        (Backend::Postgres, _, Some(ids)) => format!(" AND id = ANY({ids})"),
        (Backend::Sqlite, OrderStatus::Pending, _) => {
            " AND id IN (SELECT order_id FROM order_deadlines)".to_string()
        }
        _ => String::new(),
    }
}

/// `SELECT COUNT(*)` of the orders in `status` (not `delivered`).
pub(super) fn count(backend: Backend, status: OrderStatus) -> String {
    let st = status.as_str();
    match (backend, status) {
        (Backend::Postgres, OrderStatus::Pending) | (Backend::Sqlite, _) => format!(
            "SELECT COUNT(*) FROM orders WHERE status = '{st}'{}",
            marked(backend, status, "")
        ),
        // A mark is only ever of its order's status (the trigger moves it in
        // the same statement), so the marks count alone.
        (Backend::Postgres, _) => format!("SELECT COUNT(*) FROM order_marks WHERE status = '{st}'"),
    }
}

/// A statement of the housekeeping (the sweep, the tidying of deadline rows,
/// counts and lists for people), planned afresh on each run instead of
/// prepared once per connection. PostgreSQL keeps a prepared statement's
/// generic plan until the table is next analyzed, and autovacuum analyzes
/// a table at most once a minute: on a new shop's first drop, plans made
/// while `orders` was empty scan all of it for every row they look up
/// (2.3–2.7 s per tidying, a PostgreSQL core for the whole drop;
/// docs/PERFORMANCE.md stop 32). These run a few times a second at most,
/// so planning each run costs nothing that shows.
pub(super) fn housekeeping<'q, A>(
    q: sqlx::query::Query<'q, sqlx::Any, A>,
) -> sqlx::query::Query<'q, sqlx::Any, A>
where
    A: sqlx::IntoArguments<'q, sqlx::Any>,
{
    q.persistent(false)
}

/// Deadline rows a pass of the sweep reads.
const ROWS_PER_PASS: i64 = 64;

/// Passes per sweep at most: a backlog of paid orders' rows (a drop's,
/// falling due together) is cleared a few thousand rows a second, without
/// one call holding the sweeper's job for long.
const MAX_PASSES: usize = 32;

/// The expiry sweep on PostgreSQL: passes over the due rows of
/// `order_deadlines`, oldest first, each its own transaction, until `limit`
/// orders expired or nothing due is left to settle. A pass locks its rows
/// (another instance's sweep skips them), expires their orders still pending
/// (locked; one a payment holds is skipped and its row kept for the next
/// sweep), and deletes each row none of whose orders is pending any more. A
/// row's expiry is the latest of its orders' (they were inserted together),
/// so a row is due only once all its orders are; the rows of paid orders are
/// cleared the same way, and do not count against `limit`, so a drop's
/// thousands of paid orders never hold back the expiry of one behind them
/// for more than a few sweeps (`MAX_PASSES`).
pub(super) async fn expire_due_orders(s: &SqlStore, now: Millis, limit: i64) -> Result<Vec<Order>> {
    // Tidying is housekeeping: a failure leaves the rows as they were,
    // still naming every pending order, and the expiry goes on.
    if let Err(e) = tidy_deadlines(s).await {
        tracing::warn!(error = %e, "tidying the order deadlines failed");
    }
    // The sweep runs every second and mostly finds nothing (`any_due`).
    let due = "SELECT 1 FROM order_deadlines WHERE expires_at <= $1 LIMIT 1";
    if !s.any_due(due, now).await? {
        return Ok(Vec::new());
    }
    let orders = format!(
        "SELECT {} FROM orders WHERE {} AND status = 'pending' AND expires_at <= $2 \
         ORDER BY expires_at, id LIMIT $3 FOR UPDATE SKIP LOCKED",
        rows::ORDER_COLUMNS,
        any_id("id", 1)
    );
    let settled = format!(
        "DELETE FROM order_deadlines d WHERE {} AND NOT EXISTS \
         (SELECT 1 FROM orders o WHERE o.id = ANY(d.order_ids) AND o.status = 'pending')",
        any_id("d.id", 1)
    );
    super::orders::sweep_passes(limit, MAX_PASSES, |left| {
        sweep_pass(s, now, left, &orders, &settled)
    })
    .await
}

/// Deadline rows each sweep tidies at most.
const ROWS_PER_TIDY: i64 = 64;

/// Takes the orders that are no longer pending out of the next
/// `ROWS_PER_TIDY` deadline rows (by id, from where the last call stopped,
/// round and round), deleting a row none of whose orders is pending; rows
/// whose orders all stay pending are left unwritten. Until a row falls due
/// it names every order inserted with it, paid or not, and the pending
/// count and list look each of them up: after a drop of 100,000 orders, all
/// paid, `/metrics`' pending count took 103–152 ms for the fifteen minutes
/// until the rows fell due (docs/PERFORMANCE.md stop 26). Tidied, they name
/// only the orders still pending. Safe at any moment: an order never becomes
/// pending again, so a row only has to name a superset of its pending
/// orders; one being paid right now is still `pending` here and is kept.
/// The rows are read without a lock, so a pass that changes nothing writes
/// nothing; a row is rewritten or deleted only if it still names what was
/// read (the sweep or another instance may have changed it meanwhile).
async fn tidy_deadlines(s: &SqlStore) -> Result<()> {
    use std::sync::atomic::Ordering;
    let from = s.tidy_from.load(Ordering::Relaxed);
    // Planned afresh each time (`housekeeping`): its prepared plan, cached
    // from when `orders` was empty, scanned the whole table once per row.
    let row = housekeeping(sqlx::query(
        "WITH k AS MATERIALIZED ( \
           SELECT d.id, d.order_ids, ARRAY(SELECT o.id FROM orders o \
             WHERE o.id = ANY(d.order_ids) AND o.status = 'pending' ORDER BY o.id) AS pending \
           FROM order_deadlines d WHERE d.id > $1 ORDER BY d.id LIMIT $2), \
         gone AS (DELETE FROM order_deadlines d USING k \
           WHERE d.id = k.id AND d.order_ids = k.order_ids AND cardinality(k.pending) = 0), \
         kept AS (UPDATE order_deadlines d SET order_ids = k.pending FROM k \
           WHERE d.id = k.id AND d.order_ids = k.order_ids \
           AND cardinality(k.pending) BETWEEN 1 AND cardinality(k.order_ids) - 1) \
         SELECT COUNT(*) AS n, MAX(id) AS last FROM k",
    ))
    .bind(from)
    .bind(ROWS_PER_TIDY)
    .fetch_one(&s.write)
    .await?;
    let n: i64 = row.try_get("n")?;
    let last: Option<i64> = row.try_get("last")?;
    // A short pass reached the end: the next one starts over.
    let next = match last {
        Some(last) if n == ROWS_PER_TIDY => last,
        _ => 0,
    };
    s.tidy_from.store(next, Ordering::Relaxed);
    Ok(())
}

/// One pass of `expire_due_orders`, in its own transaction: the orders it
/// expired, and whether the sweep should stop there: no due row left, or
/// due rows it could neither expire nor clear (every pending order among
/// them held by a payment: the next sweep).
async fn sweep_pass(
    s: &SqlStore,
    now: Millis,
    limit: i64,
    orders: &str,
    settled: &str,
) -> Result<(Vec<Order>, bool)> {
    let mut tx = s.begin().await?;
    let rows = housekeeping(sqlx::query(
        "SELECT id, array_to_string(order_ids, ',') AS ids FROM order_deadlines \
         WHERE expires_at <= $1 ORDER BY expires_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
    ))
    .bind(now)
    .bind(ROWS_PER_PASS)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok((Vec::new(), true));
    }
    let mut row_ids = Vec::with_capacity(rows.len());
    let mut order_ids: Vec<String> = Vec::with_capacity(rows.len());
    for row in &rows {
        row_ids.push(row.try_get::<i64, _>("id")?);
        let ids: String = row.try_get("ids")?;
        if !ids.is_empty() {
            order_ids.push(ids);
        }
    }
    let due: Vec<Order> = housekeeping(sqlx::query(orders))
        .bind(order_ids.join(","))
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(rows::order)
        .collect::<Result<_>>()?;
    let moved = expire_orders(Backend::Postgres, &mut tx, due, now).await?;
    let cleared = housekeeping(sqlx::query(settled))
        .bind(id_list(&row_ids))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    let stuck = moved.is_empty() && cleared == 0;
    Ok((moved, stuck))
}

/// How a page of orders of one status is read on PostgreSQL: the rows of
/// the statement `list_orders_sql` builds, under a `WHERE` that begins with
/// `merchant_id = $1`. Marked statuses walk their marks from the newest
/// order (`order_marks_by_status`), each order found by primary key: with a
/// million expired orders the first page reads fifty. `None`: read the
/// orders table as is (delivered or no status: its primary key from the
/// newest; pending: the few orders of the deadlines).
pub(super) fn list_from_marks(status: Option<OrderStatus>) -> Option<(String, String)> {
    match status? {
        OrderStatus::Pending | OrderStatus::Delivered => None,
        st => Some((
            format!(
                "SELECT o.* FROM order_marks m CROSS JOIN LATERAL (SELECT {} FROM orders \
                 WHERE id = m.order_id AND merchant_id = $1",
                rows::ORDER_COLUMNS
            ),
            // Closes the lateral subquery; the rest of the statement is
            // the marks' walk.
            format!(") o WHERE m.status = '{}'", st.as_str()),
        )),
    }
}

//! The operator's views and actions on stock, orders, sales and API keys.

use kami_core::{Millis, OrderStatus};
use sqlx::Row;

use super::{orders, rows, SqlStore};
use crate::types::*;
use crate::{ApiKeyRow, Backend, CardRow, DaySales, Result};

// Listings and exports read from the read pool: on SQLite the write pool is
// the one connection every order and payment commits through, and a long
// scan there would stall a sale. A read sees every commit made before it.
pub async fn list_cards(
    s: &SqlStore,
    product_id: i64,
    status: Option<&str>,
    limit: i64,
    before_id: Option<i64>,
) -> Result<Vec<CardRow>> {
    // Staged cards belong to an import still running: not stock yet. On
    // PostgreSQL the available ones are found by their own index, which
    // names `stock_product`, not the status (migration 0011).
    let sql = format!(
        "SELECT id, status, batch_id, order_id, created_at, sold_at FROM cards \
         WHERE product_id = $1 AND id < $2 AND status <> 'staged' {}{} ORDER BY id DESC LIMIT {}",
        if status.is_some() {
            "AND status = $3"
        } else {
            ""
        },
        if s.backend == Backend::Postgres && status == Some("available") {
            " AND stock_product = $1"
        } else {
            ""
        },
        limit.clamp(1, 500)
    );
    let mut q = sqlx::query(&sql)
        .bind(product_id)
        .bind(before_id.unwrap_or(i64::MAX));
    if let Some(st) = status {
        q = q.bind(st.to_string());
    }
    let rows = q.fetch_all(&s.read).await?;
    rows.iter()
        .map(|r| {
            Ok(CardRow {
                id: r.try_get("id")?,
                status: r.try_get("status")?,
                batch_id: r.try_get("batch_id")?,
                order_id: r.try_get("order_id")?,
                created_at: r.try_get("created_at")?,
                sold_at: r.try_get("sold_at")?,
            })
        })
        .collect()
}

pub async fn sealed_card(
    s: &SqlStore,
    product_id: i64,
    card_id: i64,
) -> Result<Option<SealedCard>> {
    let row = sqlx::query(
        "SELECT id, product_id, ciphertext, nonce, key_id FROM cards \
         WHERE id = $1 AND product_id = $2 AND status <> 'staged'",
    )
    .bind(card_id)
    .bind(product_id)
    .fetch_optional(&s.write)
    .await?;
    row.as_ref().map(rows::sealed_card).transpose()
}

/// Conditional on `available`: a code a buyer holds is never voided from
/// under them.
pub async fn void_card(s: &SqlStore, product_id: i64, card_id: i64) -> Result<bool> {
    let mut tx = s.begin().await?;
    let n = sqlx::query(
        "UPDATE cards SET status = 'void' WHERE id = $1 AND product_id = $2 \
         AND status = 'available'",
    )
    .bind(card_id)
    .bind(product_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

pub async fn unsold_cards(s: &SqlStore, product_id: i64) -> Result<Vec<SealedCard>> {
    let sql = format!(
        "SELECT id, product_id, ciphertext, nonce, key_id FROM cards WHERE {} ORDER BY id",
        orders::available(s.backend, "$1")
    );
    let rows = sqlx::query(&sql)
        .bind(product_id)
        .fetch_all(&s.read)
        .await?;
    rows.iter().map(rows::sealed_card).collect()
}

pub async fn refund_order(
    s: &SqlStore,
    order_id: i64,
    seen: OrderStatus,
    now: Millis,
    detail: &str,
) -> Result<bool> {
    if !matches!(seen, OrderStatus::PaidUnfulfilled | OrderStatus::Delivered) {
        return Ok(false);
    }
    let mut tx = s.begin().await?;
    if s.backend == Backend::Postgres {
        // The restock lock before the order's row and the holds, the order
        // every transaction keeps (`orders::lock_restocks`): a restock
        // delivering this very order locks the product first, then the row.
        let product_id: Option<i64> =
            sqlx::query_scalar("SELECT product_id FROM orders WHERE id = $1")
                .bind(order_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(product_id) = product_id else {
            tx.rollback().await?;
            return Ok(false);
        };
        orders::lock_restocks(s.backend, &mut tx, product_id).await?;
    }
    // Only from the state the operator saw: a waiting order delivered by a
    // restock meanwhile must not be refunded as if it never got its codes.
    let sql = format!(
        "UPDATE orders SET status = 'refunded' WHERE id = $1 AND status = $2 RETURNING {}",
        rows::ORDER_COLUMNS
    );
    let row = sqlx::query(&sql)
        .bind(order_id)
        .bind(seen.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        // Rolled back at once: on PostgreSQL it holds the restock lock.
        tx.rollback().await?;
        return Ok(false);
    };
    let order = rows::order(&row)?;
    if seen == OrderStatus::PaidUnfulfilled {
        let holds = orders::Holds::of(&order);
        orders::lock_holds(s.backend, &mut tx, [&holds]).await?;
        orders::release_holds(&mut tx, &holds).await?;
    }
    orders::insert_event(
        &mut tx,
        &NewEvent {
            order_id: Some(order_id),
            order_no: Some(order.order_no),
            kind: "refunded".into(),
            detail: detail.into(),
            at: now,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub async fn sales_by_day(s: &SqlStore, since: Millis, day_ms: i64) -> Result<Vec<DaySales>> {
    let created = sqlx::query(
        "SELECT (created_at - $2) / $3 AS day, COUNT(*) AS n FROM orders \
         WHERE merchant_id = $1 AND created_at >= $2 GROUP BY (created_at - $2) / $3",
    )
    .bind(DEFAULT_MERCHANT)
    .bind(since)
    .bind(day_ms)
    .fetch_all(&s.read)
    .await?;
    // Refunded orders were paid too; they count as sales of their day.
    let paid = sqlx::query(
        "SELECT (paid_at - $2) / $3 AS day, currency, COUNT(*) AS n, \
         CAST(SUM(amount) AS BIGINT) AS total FROM orders \
         WHERE merchant_id = $1 AND paid_at IS NOT NULL AND paid_at >= $2 \
         GROUP BY (paid_at - $2) / $3, currency",
    )
    .bind(DEFAULT_MERCHANT)
    .bind(since)
    .bind(day_ms)
    .fetch_all(&s.read)
    .await?;
    let mut days: Vec<DaySales> = Vec::new();
    for r in &created {
        let i = day_entry(&mut days, r.try_get("day")?);
        days[i].created = r.try_get("n")?;
    }
    for r in &paid {
        let i = day_entry(&mut days, r.try_get("day")?);
        let n: i64 = r.try_get("n")?;
        days[i].paid += n;
        days[i]
            .amounts
            .push((r.try_get("currency")?, r.try_get("total")?));
    }
    days.sort_by_key(|d| d.day);
    Ok(days)
}

fn day_entry(days: &mut Vec<DaySales>, day: i64) -> usize {
    match days.iter().position(|d| d.day == day) {
        Some(i) => i,
        None => {
            days.push(DaySales {
                day,
                ..DaySales::default()
            });
            days.len() - 1
        }
    }
}

pub async fn list_api_keys(s: &SqlStore) -> Result<Vec<ApiKeyRow>> {
    let rows = sqlx::query(
        "SELECT id, name, prefix, scopes, created_at, last_used_at, revoked_at FROM api_keys \
         WHERE merchant_id = $1 ORDER BY id DESC",
    )
    .bind(DEFAULT_MERCHANT)
    .fetch_all(&s.read)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ApiKeyRow {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                prefix: r.try_get("prefix")?,
                scopes: r.try_get("scopes")?,
                created_at: r.try_get("created_at")?,
                last_used_at: r.try_get("last_used_at")?,
                revoked_at: r.try_get("revoked_at")?,
            })
        })
        .collect()
}

pub async fn revoke_api_key(s: &SqlStore, id: i64, now: Millis) -> Result<bool> {
    let mut tx = s.begin().await?;
    let n = sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

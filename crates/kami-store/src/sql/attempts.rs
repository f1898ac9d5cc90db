//! Payment attempts: which orders were handed to which gateway, and when
//! reconciliation should next ask the gateway about them.

use kami_core::Millis;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{orders, SqlStore};
use crate::types::*;
use crate::Result;

const COLUMNS: &str = "a.id, a.order_id, o.order_no, a.channel, a.reference, a.pay_url, \
                       a.created_at, a.checks";

fn attempt(row: &AnyRow) -> Result<PaymentAttempt> {
    Ok(PaymentAttempt {
        id: row.try_get("id")?,
        order_id: row.try_get("order_id")?,
        order_no: row.try_get("order_no")?,
        channel: row.try_get("channel")?,
        reference: row.try_get("reference")?,
        pay_url: row.try_get("pay_url")?,
        created_at: row.try_get("created_at")?,
        checks: row.try_get("checks")?,
    })
}

/// The order's attempt: the one just inserted, or the one a concurrent or
/// earlier visit already recorded (one attempt per order, so a reloaded pay
/// page sends the buyer to the same gateway payment).
pub async fn start(s: &SqlStore, a: &NewPaymentAttempt) -> Result<PaymentAttempt> {
    let mut tx = s.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO payment_attempts \
           (merchant_id, order_id, channel, reference, pay_url, created_at, next_check_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(DEFAULT_MERCHANT)
    .bind(a.order_id)
    .bind(&a.channel)
    .bind(a.reference.as_deref())
    .bind(&a.pay_url)
    .bind(a.created_at)
    .bind(a.first_check_at)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        let detail = match &a.reference {
            Some(r) => format!("{}: buyer sent to the gateway (reference {r})", a.channel),
            None => format!("{}: buyer sent to the gateway", a.channel),
        };
        orders::insert_event(
            &mut tx,
            &NewEvent {
                order_id: Some(a.order_id),
                order_no: Some(a.order_no.clone()),
                kind: "payment_started".into(),
                detail,
                at: a.created_at,
            },
        )
        .await?;
    }
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payment_attempts a JOIN orders o ON o.id = a.order_id \
         WHERE a.order_id = $1"
    ))
    .bind(a.order_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    attempt(&row)
}

pub async fn get(s: &SqlStore, order_id: i64) -> Result<Option<PaymentAttempt>> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payment_attempts a JOIN orders o ON o.id = a.order_id \
         WHERE a.order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(&s.read)
    .await?
    .as_ref()
    .map(attempt)
    .transpose()
}

/// Attempts due for a check whose order is still unpaid (pending, or expired
/// and so open to a late payment).
pub async fn due(s: &SqlStore, now: Millis, limit: i64) -> Result<Vec<PaymentAttempt>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payment_attempts a JOIN orders o ON o.id = a.order_id \
         WHERE a.next_check_at IS NOT NULL AND a.next_check_at <= $1 \
           AND o.status IN ('pending', 'expired') \
         ORDER BY a.next_check_at, a.id LIMIT $2"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(&s.read)
    .await?;
    rows.iter().map(attempt).collect()
}

/// Counts a check and sets the next one; `None` stops checking.
pub async fn checked(s: &SqlStore, id: i64, next_check_at: Option<Millis>) -> Result<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "UPDATE payment_attempts SET checks = checks + 1, next_check_at = $1 WHERE id = $2",
    )
    .bind(next_check_at)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

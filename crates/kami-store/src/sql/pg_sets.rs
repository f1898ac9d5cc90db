//! PostgreSQL's group-commit statements with one text for any batch size.
//!
//! pg_stat_statements during a drop showed each multi-row insert under
//! 74–121 texts (one per batch size), each parsed and planned afresh on
//! every connection, and the `id IN ($2, …)` updates planned with a bitmap
//! AND over the partial `orders_pending_expiry` index, which stale
//! statistics during a drop make look tiny while it holds every pending
//! order: half of the notification storm's statement time. Here a batch's
//! rows travel as one JSON parameter read back with `json_to_recordset`, and
//! id lists as one text parameter read as an array (sqlx's `Any` driver
//! binds no arrays), so each statement is prepared once per connection and
//! the ids are looked up by primary key only.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;

use super::orders::Tx;
use crate::types::*;
use crate::Result;

/// `column = ANY(...)` over the ids in text parameter `$n`.
pub(super) fn any_id(column: &str, n: usize) -> String {
    format!("{column} = ANY(string_to_array(${n}, ',')::bigint[])")
}

/// The text parameter of `any_id` (and of any `string_to_array(..)::bigint[]`):
/// integers we hold, comma-separated.
pub(super) fn id_list(ids: &[i64]) -> String {
    let mut s = String::with_capacity(ids.len() * 8);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&id.to_string());
    }
    s
}

/// Byte strings as one text parameter, each in hex and comma-separated,
/// for `decode(x, 'hex')` over `string_to_array($n, ',')`.
pub(super) fn hex_list<'a>(items: impl Iterator<Item = &'a [u8]>) -> String {
    let mut s = String::new();
    for (i, bytes) in items.enumerate() {
        if i > 0 {
            s.push(',');
        }
        push_hex(&mut s, bytes);
    }
    s
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// A batch's rows as the JSON array `json_to_recordset` reads: written
/// straight from borrowed fields (building `serde_json::Value` maps first
/// was 5% of the server's CPU in a drop, perf).
fn json_rows<T: Serialize>(rows: &[T]) -> String {
    serde_json::to_string(rows).expect("rows of numbers and strings serialise")
}

/// An order's row for `insert_orders`; the names are the recordset's columns.
#[derive(Serialize)]
struct OrderRow<'a> {
    order_no: &'a str,
    product_id: i64,
    quantity: i64,
    unit_price: i64,
    discount: i64,
    amount: i64,
    currency: &'a str,
    email: &'a str,
    query_password_hash: Option<String>,
    access_token_hash: String,
    buyer_ip: Option<&'a str>,
    channel: &'a str,
    created_at: i64,
    expires_at: i64,
    idempotency_key: Option<&'a str>,
    coupon_id: Option<i64>,
    limit_holds: i64,
}

impl<'a> OrderRow<'a> {
    fn of(o: &'a NewOrder) -> Self {
        OrderRow {
            order_no: &o.order_no,
            product_id: o.product_id,
            quantity: o.quantity,
            unit_price: o.unit_price,
            discount: o.discount,
            amount: o.amount,
            currency: &o.currency,
            email: &o.email,
            query_password_hash: o.query_password_hash.as_deref().map(hex),
            access_token_hash: hex(&o.access_token_hash),
            buyer_ip: o.buyer_ip.as_deref(),
            channel: &o.channel,
            created_at: o.created_at,
            expires_at: o.expires_at,
            idempotency_key: o.idempotency.as_ref().map(|r| r.key.as_str()),
            coupon_id: o.coupon_id,
            limit_holds: o.limit_holds(),
        }
    }
}

/// A plain order's row for `kami_reserve_orders` (migration 0013): its
/// place in the batch and where its product's codes are looked for from,
/// then the order's own columns (those the function does not read are
/// ignored by `json_to_recordset`).
#[derive(Serialize)]
struct PlainOrderRow<'a> {
    ord: usize,
    floor: i64,
    #[serde(flatten)]
    order: OrderRow<'a>,
}

/// The rows of `kami_reserve_orders`' `batch` parameter, `floor(product)`
/// the lowest code id to look for each product's codes from.
pub(super) fn plain_order_rows(batch: &[NewOrder], floor: impl Fn(i64) -> i64) -> String {
    let rows: Vec<PlainOrderRow> = batch
        .iter()
        .enumerate()
        .map(|(ord, o)| PlainOrderRow {
            ord,
            floor: floor(o.product_id),
            order: OrderRow::of(o),
        })
        .collect();
    json_rows(&rows)
}

#[derive(Serialize)]
struct PaymentRow<'a> {
    order_id: i64,
    channel: &'a str,
    trade_no: &'a str,
    amount: i64,
    currency: &'a str,
    raw: &'a str,
    received_at: i64,
}

/// The granted orders of a batch in one statement; their ids by number.
pub(super) async fn insert_orders(
    tx: &mut Tx,
    granted: &[&NewOrder],
) -> Result<HashMap<String, i64>> {
    let rows: Vec<OrderRow> = granted.iter().map(|o| OrderRow::of(o)).collect();
    let out = sqlx::query(
        "INSERT INTO orders (merchant_id, order_no, product_id, quantity, unit_price, \
         discount, amount, currency, email, query_password_hash, access_token_hash, \
         buyer_ip, channel, status, created_at, expires_at, idempotency_key, coupon_id, limit_holds) \
         SELECT $2, x.order_no, x.product_id, x.quantity, x.unit_price, x.discount, x.amount, \
                x.currency, x.email, decode(x.query_password_hash, 'hex'), \
                decode(x.access_token_hash, 'hex'), x.buyer_ip, x.channel, 'pending', \
                x.created_at, x.expires_at, x.idempotency_key, x.coupon_id, x.limit_holds \
         FROM json_to_recordset($1::json) AS x(order_no text, product_id bigint, \
              quantity bigint, unit_price bigint, discount bigint, amount bigint, currency text, \
              email text, query_password_hash text, access_token_hash text, buyer_ip text, \
              channel text, created_at bigint, expires_at bigint, idempotency_key text, \
              coupon_id bigint, limit_holds bigint) \
         RETURNING id, order_no",
    )
    .bind(json_rows(&rows))
    .bind(DEFAULT_MERCHANT)
    .fetch_all(&mut **tx)
    .await?;
    let mut ids = HashMap::with_capacity(out.len());
    for row in out {
        ids.insert(row.try_get("order_no")?, row.try_get("id")?);
    }
    Ok(ids)
}

/// Payment rows in one statement, a repeated (channel, trade_no) left out;
/// the (order_id, channel, trade_no) of the rows it stored.
pub(super) async fn insert_payments(
    tx: &mut Tx,
    batch: &[NewPayment],
) -> Result<Vec<(i64, String, String)>> {
    // Inserted in (channel, trade_no) order: two instances storing the same
    // notifications (a gateway's retries reaching both) wait for each
    // other's keys in one order, never in a cycle. The sort is stable, so
    // twins keep their order and the first of them is the one stored.
    let mut sorted: Vec<&NewPayment> = batch.iter().collect();
    sorted.sort_by(|a, b| (&a.channel, &a.trade_no).cmp(&(&b.channel, &b.trade_no)));
    let rows: Vec<PaymentRow> = sorted
        .into_iter()
        .map(|p| PaymentRow {
            order_id: p.order_id,
            channel: &p.channel,
            trade_no: &p.trade_no,
            amount: p.amount,
            currency: &p.currency,
            raw: &p.raw,
            received_at: p.received_at,
        })
        .collect();
    let out = sqlx::query(
        "INSERT INTO payments (merchant_id, order_id, channel, trade_no, amount, currency, raw, \
         received_at) \
         SELECT $2, x.order_id, x.channel, x.trade_no, x.amount, x.currency, x.raw, x.received_at \
         FROM json_to_recordset($1::json) AS x(order_id bigint, channel text, trade_no text, \
              amount bigint, currency text, raw text, received_at bigint) \
         ON CONFLICT (channel, trade_no) DO NOTHING \
         RETURNING order_id, channel, trade_no",
    )
    .bind(json_rows(&rows))
    .bind(DEFAULT_MERCHANT)
    .fetch_all(&mut **tx)
    .await?;
    out.iter()
        .map(|row| {
            Ok((
                row.try_get("order_id")?,
                row.try_get("channel")?,
                row.try_get("trade_no")?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_and_hex_are_what_postgres_parses() {
        assert_eq!(id_list(&[]), "");
        assert_eq!(id_list(&[7]), "7");
        assert_eq!(id_list(&[1, -2, 30]), "1,-2,30");
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(
            any_id("id", 3),
            "id = ANY(string_to_array($3, ',')::bigint[])"
        );
    }
}

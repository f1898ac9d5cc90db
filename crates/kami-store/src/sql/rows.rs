//! Row decoding shared by the queries. Flags are stored as 0/1 integers on
//! both backends (sqlx's `Any` driver has no SQLite boolean).

use kami_core::pricing::parse_tiers;
use kami_core::{OrderStatus, StockDisplay};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::types::*;
use crate::{Backend, Result, StoreError};

macro_rules! product_fields {
    () => {
        "p.id, p.category_id, c.name AS category, p.name, p.description, \
         p.price, p.currency, p.min_quantity, p.max_quantity, p.per_buyer_limit, p.sale_starts_at, \
         p.sale_ends_at, p.visible, p.low_stock_threshold, p.stock_display, p.sort_order, \
         p.created_at, p.updated_at, p.wholesale_tiers, p.per_ip_limit, "
    };
}

/// A product's columns with `stock`, its available codes counted through
/// the backend's index of them (`orders::available`).
pub fn product_columns(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => concat!(
            product_fields!(),
            "(SELECT COUNT(*) FROM cards k WHERE k.stock_product = p.id) AS stock"
        ),
        Backend::Sqlite => concat!(
            product_fields!(),
            "(SELECT COUNT(*) FROM cards k WHERE k.product_id = p.id AND k.status = 'available') AS stock"
        ),
    }
}

/// `product_columns` with `stock` 0 instead of a count of every code.
pub const PRODUCT_COLUMNS_UNCOUNTED: &str =
    concat!(product_fields!(), "CAST(0 AS BIGINT) AS stock");

pub fn product(row: &AnyRow) -> Result<Product> {
    Ok(Product {
        id: row.try_get("id")?,
        category_id: row.try_get("category_id")?,
        category: row.try_get("category")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        price: row.try_get("price")?,
        currency: row.try_get("currency")?,
        min_quantity: row.try_get("min_quantity")?,
        max_quantity: row.try_get("max_quantity")?,
        per_buyer_limit: row.try_get("per_buyer_limit")?,
        sale_starts_at: row.try_get("sale_starts_at")?,
        sale_ends_at: row.try_get("sale_ends_at")?,
        visible: row.try_get::<i64, _>("visible")? != 0,
        low_stock_threshold: row.try_get("low_stock_threshold")?,
        stock_display: row
            .try_get::<Option<String>, _>("stock_display")?
            .map(|s| {
                StockDisplay::parse(&s)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown stock_display {s:?}")))
            })
            .transpose()?,
        sort_order: row.try_get("sort_order")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        stock: row.try_get("stock")?,
        wholesale_tiers: parse_tiers(&row.try_get::<String, _>("wholesale_tiers")?),
        per_ip_limit: row.try_get("per_ip_limit")?,
    })
}

pub const ORDER_COLUMNS: &str =
    "id, order_no, product_id, quantity, unit_price, discount, amount, currency, \
     email, access_token_hash, query_password_hash IS NOT NULL AS has_qp, buyer_ip, channel, \
     status, created_at, expires_at, paid_at, delivered_at, coupon_id, limit_holds";

pub fn order(row: &AnyRow) -> Result<Order> {
    let status: String = row.try_get("status")?;
    let status = OrderStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown order status {status:?}")))?;
    Ok(Order {
        id: row.try_get("id")?,
        order_no: row.try_get("order_no")?,
        product_id: row.try_get("product_id")?,
        quantity: row.try_get("quantity")?,
        unit_price: row.try_get("unit_price")?,
        discount: row.try_get("discount")?,
        amount: row.try_get("amount")?,
        currency: row.try_get("currency")?,
        email: row.try_get("email")?,
        access_token_hash: row.try_get("access_token_hash")?,
        has_query_password: flag(row, "has_qp")?,
        buyer_ip: row.try_get("buyer_ip")?,
        channel: row.try_get("channel")?,
        status: OrderStatusField(status),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        paid_at: row.try_get("paid_at")?,
        delivered_at: row.try_get("delivered_at")?,
        coupon_id: row.try_get("coupon_id")?,
        limit_holds: row.try_get("limit_holds")?,
    })
}

/// A boolean expression's value: PostgreSQL answers `bool`, SQLite `0/1`.
fn flag(row: &AnyRow, col: &str) -> Result<bool> {
    match row.try_get::<bool, _>(col) {
        Ok(b) => Ok(b),
        Err(_) => Ok(row.try_get::<i64, _>(col)? != 0),
    }
}

pub fn event(row: &AnyRow) -> Result<OrderEvent> {
    Ok(OrderEvent {
        id: row.try_get("id")?,
        order_no: row.try_get("order_no")?,
        kind: row.try_get("kind")?,
        detail: row.try_get("detail")?,
        created_at: row.try_get("created_at")?,
    })
}

pub fn sealed_card(r: &AnyRow) -> Result<SealedCard> {
    Ok(SealedCard {
        id: r.try_get("id")?,
        product_id: r.try_get("product_id")?,
        ciphertext: r.try_get("ciphertext")?,
        nonce: r.try_get("nonce")?,
        key_id: r.try_get("key_id")?,
    })
}

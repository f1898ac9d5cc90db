//! JSON views of domain records, in the shapes API.md fixes.

use kami_core::order::rfc3339;
use kami_core::{now_millis, Currency};
use kami_store::{Coupon, Order, Product};
use serde_json::{json, Value};

pub fn time(ms: Option<i64>) -> Value {
    ms.map(|t| Value::String(rfc3339(t))).unwrap_or(Value::Null)
}

pub fn product(p: &Product) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "price": p.price,
        "currency": p.currency,
        "stock": p.stock,
        "min_quantity": p.min_quantity,
        "max_quantity": p.max_quantity,
        "per_buyer_limit": p.per_buyer_limit,
        "category": p.category,
        "visible": p.visible,
        "sale_starts_at": time(p.sale_starts_at),
        "sale_ends_at": time(p.sale_ends_at),
        "low_stock_threshold": p.low_stock_threshold,
        // An extension of API.md: null follows the shop's default.
        "stock_display": p.stock_display,
        "wholesale_tiers": p.wholesale_tiers,
        "per_ip_limit": p.per_ip_limit,
    })
}

pub fn coupon(c: &Coupon) -> Value {
    json!({
        "id": c.id,
        "code": c.code,
        "kind": c.kind,
        "value": c.value,
        "currency": c.currency,
        "product_id": c.product_id,
        "max_uses": c.max_uses,
        "used": c.used,
        "expires_at": time(c.expires_at),
        "disabled": c.disabled,
        "created_at": time(Some(c.created_at)),
    })
}

/// The buyer's view of an order; `cards` only once delivered.
pub fn order(o: &Order, cards: Option<&[String]>) -> Value {
    let status = o.status.0.as_seen_at(o.expires_at, now_millis());
    let mut v = json!({
        "order_no": o.order_no,
        "status": status.as_str(),
        "product_id": o.product_id,
        "quantity": o.quantity,
        "discount": o.discount,
        "amount": o.amount,
        "currency": o.currency,
        "channel": o.channel,
        "created_at": time(Some(o.created_at)),
        "expires_at": time(Some(o.expires_at)),
        "paid_at": time(o.paid_at),
        "delivered_at": time(o.delivered_at),
    });
    if let Some(cards) = cards {
        v["cards"] = json!(cards);
    }
    v
}

/// The operator's view: the buyer's plus contact details, never codes.
pub fn admin_order(o: &Order) -> Value {
    let mut v = order(o, None);
    v["id"] = json!(o.id);
    v["email"] = json!(o.email);
    v["buyer_ip"] = json!(o.buyer_ip);
    v["unit_price"] = json!(o.unit_price);
    v["stored_status"] = json!(o.status.0.as_str());
    v
}

pub fn money(amount: i64, currency: &str) -> String {
    match Currency::parse(currency) {
        Ok(c) => c.display(amount),
        Err(_) => format!("{amount} {currency}"),
    }
}

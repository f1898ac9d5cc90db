//! JSON views of domain records, in the shapes API.md fixes.

use kami_core::order::rfc3339;
use kami_core::{now_millis, Currency};
use kami_store::{Coupon, Order, Product};
use serde_json::{json, Value};

pub fn time(ms: Option<i64>) -> Value {
    ms.map(|t| Value::String(rfc3339(t))).unwrap_or(Value::Null)
}

/// A product as API.md shows it, written straight from its fields: built as
/// a `serde_json::Value` first (a map, then its serialisation), a product
/// read cost twice the instructions of a `/healthz` (callgrind). The fields
/// are in the alphabetical order the map wrote them in, so the bytes are
/// the same (`product_view_writes_what_the_map_wrote`).
#[derive(serde::Serialize)]
pub struct ProductView<'a> {
    category: Option<&'a str>,
    currency: &'a str,
    description: &'a str,
    id: i64,
    low_stock_threshold: i64,
    max_quantity: i64,
    min_quantity: i64,
    name: &'a str,
    per_buyer_limit: Option<i64>,
    per_ip_limit: Option<i64>,
    price: i64,
    sale_ends_at: Option<String>,
    sale_starts_at: Option<String>,
    stock: i64,
    // An extension of API.md: null follows the shop's default.
    stock_display: Option<kami_core::stock_display::StockDisplay>,
    visible: bool,
    wholesale_tiers: &'a [kami_core::pricing::WholesaleTier],
}

pub fn product_view(p: &Product) -> ProductView<'_> {
    ProductView {
        category: p.category.as_deref(),
        currency: &p.currency,
        description: &p.description,
        id: p.id,
        low_stock_threshold: p.low_stock_threshold,
        max_quantity: p.max_quantity,
        min_quantity: p.min_quantity,
        name: &p.name,
        per_buyer_limit: p.per_buyer_limit,
        per_ip_limit: p.per_ip_limit,
        price: p.price,
        sale_ends_at: p.sale_ends_at.map(rfc3339),
        sale_starts_at: p.sale_starts_at.map(rfc3339),
        stock: p.stock,
        stock_display: p.stock_display,
        visible: p.visible,
        wholesale_tiers: &p.wholesale_tiers,
    }
}

pub fn product(p: &Product) -> Value {
    serde_json::to_value(product_view(p)).expect("a product's view serialises")
}

/// A page of products (`GET /api/v1/products`).
#[derive(serde::Serialize)]
pub struct ProductPage<'a> {
    pub data: Vec<ProductView<'a>>,
    pub has_more: bool,
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

/// The buyer's view of an order; `cards` only once delivered. Written from
/// its fields in the map's key order, as `ProductView` (a buyer polling an
/// order's status is a drop's read too).
#[derive(serde::Serialize)]
pub struct OrderView<'a> {
    amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cards: Option<&'a [String]>,
    channel: &'a str,
    created_at: String,
    currency: &'a str,
    delivered_at: Option<String>,
    discount: i64,
    expires_at: String,
    order_no: &'a str,
    paid_at: Option<String>,
    product_id: i64,
    quantity: i64,
    status: &'static str,
}

pub fn order_view<'a>(o: &'a Order, cards: Option<&'a [String]>) -> OrderView<'a> {
    OrderView {
        amount: o.amount,
        cards,
        channel: &o.channel,
        created_at: rfc3339(o.created_at),
        currency: &o.currency,
        delivered_at: o.delivered_at.map(rfc3339),
        discount: o.discount,
        expires_at: rfc3339(o.expires_at),
        order_no: &o.order_no,
        paid_at: o.paid_at.map(rfc3339),
        product_id: o.product_id,
        quantity: o.quantity,
        status: o.status.0.as_seen_at(o.expires_at, now_millis()).as_str(),
    }
}

pub fn order(o: &Order, cards: Option<&[String]>) -> Value {
    serde_json::to_value(order_view(o, cards)).expect("an order's view serialises")
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

#[cfg(test)]
mod tests {
    use super::*;
    use kami_core::pricing::WholesaleTier;
    use kami_core::StockDisplay;

    fn product_with(full: bool) -> Product {
        Product {
            id: 7,
            category_id: full.then_some(2),
            category: full.then(|| "游戏 \"点卡\"".to_string()),
            name: "Steam <100>".into(),
            description: "line\nbreak \\ é".into(),
            price: 9_900,
            currency: "CNY".into(),
            min_quantity: 1,
            max_quantity: 10,
            per_buyer_limit: full.then_some(3),
            sale_starts_at: full.then_some(1_700_000_000_123),
            sale_ends_at: full.then_some(1_800_000_000_000),
            visible: full,
            low_stock_threshold: 5,
            stock_display: full.then_some(StockDisplay::Level),
            sort_order: 4,
            created_at: 1,
            updated_at: 2,
            stock: 42,
            wholesale_tiers: if full {
                vec![
                    WholesaleTier {
                        min_quantity: 5,
                        price: 9_000,
                    },
                    WholesaleTier {
                        min_quantity: 10,
                        price: 8_500,
                    },
                ]
            } else {
                Vec::new()
            },
            per_ip_limit: full.then_some(2),
        }
    }

    fn order_with(status: kami_core::OrderStatus, done: bool) -> Order {
        Order {
            id: 3,
            order_no: "K20261204000000ABCDEF".into(),
            product_id: 7,
            quantity: 2,
            unit_price: 990,
            discount: 10,
            amount: 1_970,
            currency: "CNY".into(),
            email: "buyer@example.com".into(),
            access_token_hash: vec![1; 32],
            has_query_password: true,
            buyer_ip: Some("127.0.0.1".into()),
            channel: "sandbox".into(),
            status: kami_store::OrderStatusField(status),
            created_at: 1_700_000_000_000,
            expires_at: 1_700_000_900_000,
            paid_at: done.then_some(1_700_000_100_000),
            delivered_at: done.then_some(1_700_000_100_001),
            coupon_id: None,
            limit_holds: 0,
        }
    }

    /// As for products: the struct writes the bytes of the map it replaces,
    /// with and without codes, pending (seen as expired: its time is past),
    /// delivered.
    #[test]
    fn order_view_writes_what_the_map_wrote() {
        use kami_core::OrderStatus;
        let codes = ["CODE-1 \"q\"".to_string(), "CODE-2".to_string()];
        for (o, cards) in [
            (order_with(OrderStatus::Pending, false), None),
            (order_with(OrderStatus::Delivered, true), Some(&codes[..])),
            (order_with(OrderStatus::Delivered, true), None),
        ] {
            let status = o.status.0.as_seen_at(o.expires_at, now_millis());
            let mut map = json!({
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
                map["cards"] = json!(cards);
            }
            let view = serde_json::to_string(&order_view(&o, cards)).unwrap();
            assert_eq!(view, serde_json::to_string(&map).unwrap());
            assert_eq!(order(&o, cards), map);
        }
    }

    /// The view writes the bytes the `json!` map wrote before it (keys in
    /// order, nested values, nulls): stored answers and clients see no change.
    #[test]
    fn product_view_writes_what_the_map_wrote() {
        for full in [true, false] {
            let p = product_with(full);
            let map = json!({
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
                "stock_display": p.stock_display,
                "wholesale_tiers": p.wholesale_tiers,
                "per_ip_limit": p.per_ip_limit,
            });
            let view = serde_json::to_string(&product_view(&p)).unwrap();
            assert_eq!(view, serde_json::to_string(&map).unwrap());
            assert_eq!(product(&p), map);
            let page = ProductPage {
                data: vec![product_view(&p)],
                has_more: full,
            };
            assert_eq!(
                serde_json::to_string(&page).unwrap(),
                serde_json::to_string(&json!({"data": [map], "has_more": full})).unwrap()
            );
        }
    }
}

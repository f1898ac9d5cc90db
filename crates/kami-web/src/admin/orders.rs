//! Orders: search by number, email and status; the detail page with the
//! event timeline; manual fulfilment of paid orders waiting for stock, and
//! marking an order refunded.

use std::collections::HashMap;

use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use kami_core::{now_millis, OrderStatus};
use kami_store::{Order, OrderFilter, Product};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{CsrfForm, Operator};
use super::page::{time, time_opt, PanelError, PanelResult};
use crate::present::money;
use crate::state::Shared;

const PAGE: i64 = 50;

pub fn product_names(products: &[Product]) -> HashMap<i64, String> {
    products.iter().map(|p| (p.id, p.name.clone())).collect()
}

/// One order as the tables show it.
pub fn row(o: &Order, names: &HashMap<i64, String>, now: i64) -> Value {
    json!({
        "order_no": o.order_no,
        "status": o.status.0.as_seen_at(o.expires_at, now).as_str(),
        "product": names.get(&o.product_id).cloned().unwrap_or_default(),
        "quantity": o.quantity,
        "amount": money(o.amount, &o.currency),
        "discount": (o.discount > 0).then(|| money(o.discount, &o.currency)),
        "email": o.email,
        "created_at": time(o.created_at),
    })
}

#[derive(Deserialize, Default)]
pub struct OrdersQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    before: Option<i64>,
}

pub async fn list(
    State(state): State<Shared>,
    op: Operator,
    Query(q): Query<OrdersQuery>,
) -> PanelResult {
    let search = q.q.as_deref().map(str::trim).unwrap_or("");
    let status = q.status.as_deref().and_then(OrderStatus::parse);
    let (orders, next) = if !search.is_empty() && !search.contains('@') {
        // Anything that is not an email is taken as an order number.
        let found = state.store.get_order(&search.to_uppercase()).await?;
        (found.into_iter().collect::<Vec<_>>(), None)
    } else {
        let mut found = state
            .store
            .list_orders(&OrderFilter {
                status,
                email: Some(search.to_lowercase()).filter(|e| !e.is_empty()),
                product_id: None,
                limit: PAGE + 1,
                before_id: q.before,
            })
            .await?;
        let more = found.len() as i64 > PAGE;
        found.truncate(PAGE as usize);
        let next = if more {
            found.last().map(|o| o.id)
        } else {
            None
        };
        (found, next)
    };
    let names = product_names(&state.store.list_products(false).await?);
    let now = now_millis();
    let rows: Vec<Value> = orders.iter().map(|o| row(o, &names, now)).collect();
    let statuses: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
    Ok(op.render(
        "admin/orders.html",
        json!({"nav": "orders", "orders": rows, "q": search, "status": status.map(|s| s.as_str()),
               "statuses": statuses, "next": next}),
    ))
}

async fn order(state: &Shared, no: &str) -> PanelResult<Order> {
    state.store.get_order(no).await?.ok_or(PanelError::NotFound)
}

pub async fn detail(
    State(state): State<Shared>,
    op: Operator,
    Path(no): Path<String>,
) -> PanelResult {
    let o = order(&state, &no).await?;
    let events = state.store.order_events(o.id).await?;
    let product = state.store.get_product(o.product_id).await?;
    let stock = product.as_ref().map_or(0, |p| p.stock);
    let stored = o.status.0;
    let events: Vec<Value> = events
        .iter()
        .map(|e| json!({"kind": e.kind, "detail": e.detail, "at": time(e.created_at)}))
        .collect();
    let names = product.iter().map(|p| (p.id, p.name.clone())).collect();
    Ok(op.render(
        "admin/order.html",
        json!({
            "nav": "orders",
            "order": row(&o, &names, now_millis()),
            "stored_status": stored.as_str(),
            "channel": o.channel,
            "buyer_ip": o.buyer_ip,
            "paid_at": time_opt(o.paid_at),
            "delivered_at": time_opt(o.delivered_at),
            "expires_at": time(o.expires_at),
            "product_id": o.product_id,
            "events": events,
            "can_fulfil": stored == OrderStatus::PaidUnfulfilled && stock >= o.quantity,
            "can_refund": matches!(stored, OrderStatus::PaidUnfulfilled | OrderStatus::Delivered),
        }),
    ))
}

pub async fn fulfil(
    State(state): State<Shared>,
    op: Operator,
    Path(no): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    let o = order(&state, &no).await?;
    if o.status.0 != OrderStatus::PaidUnfulfilled {
        return Err(PanelError::Invalid(
            "only a paid order waiting for stock can be fulfilled".into(),
        ));
    }
    // The store's restock path: waiting orders are served oldest first, so
    // a manual fulfil never jumps a buyer who paid earlier.
    let delivered = state
        .store
        .fulfil_unfulfilled(o.product_id, now_millis())
        .await?;
    let detail = format!(
        "{} order(s) delivered; this one {}",
        delivered.len(),
        if delivered.contains(&o.order_no) {
            "delivered"
        } else {
            "still waiting"
        }
    );
    op.audit(&state, "order_fulfilled", &o.order_no, &detail)
        .await?;
    Ok(Redirect::to(&format!("/admin/orders/{no}")).into_response())
}

pub async fn refund(
    State(state): State<Shared>,
    op: Operator,
    Path(no): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    let o = order(&state, &no).await?;
    let detail = format!("marked refunded by {}", op.session.email);
    if !state
        .store
        .refund_order(o.id, now_millis(), &detail)
        .await?
    {
        return Err(PanelError::Invalid(
            "only a paid order can be marked refunded".into(),
        ));
    }
    op.audit(&state, "order_refunded", &o.order_no, o.status.0.as_str())
        .await?;
    Ok(Redirect::to(&format!("/admin/orders/{no}")).into_response())
}

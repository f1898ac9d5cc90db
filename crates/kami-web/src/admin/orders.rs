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
use super::i18n;
use super::msg::Msg;
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

/// The search form's fields, shared by the list and the CSV export.
#[derive(Deserialize, Default)]
pub struct OrdersQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    status: Option<String>,
    /// First day (UTC, `YYYY-MM-DD`) of the creation window.
    #[serde(default)]
    from: Option<String>,
    /// Last day (UTC, inclusive) of the creation window.
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    before: Option<i64>,
}

/// A search, parsed: an order number, or a filter over the orders.
pub enum Search {
    Number(String),
    Filter(OrderFilter),
}

const DAY_MS: i64 = 86_400_000;

/// `YYYY-MM-DD` → midnight UTC in milliseconds; `label` names the field.
fn day_start(label: &'static str, s: &str) -> PanelResult<Option<i64>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || PanelError::Invalid(Msg::new("err_date").label("field", label));
    let mut parts = s.splitn(3, '-').map(str::parse::<i32>);
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(d))) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let month = u8::try_from(m)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(bad)?;
    let date = time::Date::from_calendar_date(y, month, u8::try_from(d).map_err(|_| bad())?)
        .map_err(|_| bad())?;
    Ok(Some(date.midnight().assume_utc().unix_timestamp() * 1000))
}

impl OrdersQuery {
    pub fn text(&self) -> &str {
        self.q.as_deref().map(str::trim).unwrap_or("")
    }

    fn status(&self) -> Option<OrderStatus> {
        self.status.as_deref().and_then(OrderStatus::parse)
    }

    /// Anything that is not an email is taken as an order number.
    pub fn search(&self, limit: i64) -> PanelResult<Search> {
        let text = self.text();
        if !text.is_empty() && !text.contains('@') {
            return Ok(Search::Number(text.to_uppercase()));
        }
        let to = day_start("date_to", self.to.as_deref().unwrap_or(""))?;
        Ok(Search::Filter(OrderFilter {
            status: self.status(),
            email: Some(text.to_lowercase()).filter(|e| !e.is_empty()),
            limit,
            before_id: self.before,
            created_from: day_start("date_from", self.from.as_deref().unwrap_or(""))?,
            created_before: to.map(|t| t + DAY_MS),
            ..OrderFilter::default()
        }))
    }

    /// The filters as a query string, for paging and the export link.
    pub fn query_string(&self) -> String {
        let pairs = [
            ("q", self.text()),
            ("status", self.status().map_or("", |s| s.as_str())),
            ("from", self.from.as_deref().unwrap_or("").trim()),
            ("to", self.to.as_deref().unwrap_or("").trim()),
        ];
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn list(
    State(state): State<Shared>,
    op: Operator,
    Query(q): Query<OrdersQuery>,
) -> PanelResult {
    let (orders, next) = match q.search(PAGE)? {
        Search::Number(no) => {
            let found = state.store.get_order(&no).await?;
            (found.into_iter().collect::<Vec<_>>(), None)
        }
        Search::Filter(filter) => {
            let (found, more) = crate::services::orders::list_page(&state, filter, PAGE).await?;
            let next = if more {
                found.last().map(|o| o.id)
            } else {
                None
            };
            (found, next)
        }
    };
    let names = product_names(&state.store.list_products_uncounted().await?);
    let now = now_millis();
    let rows: Vec<Value> = orders.iter().map(|o| row(o, &names, now)).collect();
    let statuses: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
    Ok(op.render(
        "admin/orders.html",
        json!({"nav": "orders", "orders": rows, "q": q.text(), "status": q.status().map(|s| s.as_str()),
               "from": q.from.as_deref().unwrap_or(""), "to": q.to.as_deref().unwrap_or(""),
               "statuses": statuses, "next": next, "query": q.query_string()}),
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
    let stored = o.status.0;
    // The stock matters only beside an order waiting for codes (whether it
    // can be fulfilled now); counting them for every order's page took
    // seconds with ten million codes on PostgreSQL.
    let product = if stored == OrderStatus::PaidUnfulfilled {
        state.store.get_product(o.product_id).await?
    } else {
        state.store.get_product_uncounted(o.product_id).await?
    };
    let stock = product.as_ref().map_or(0, |p| p.stock);
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({"kind": e.kind, "label": i18n::name_label(op.lang, "event_", &e.kind),
                   "detail": e.detail, "at": time(e.created_at)})
        })
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
        return Err(PanelError::Invalid(Msg::new("err_fulfil_state")));
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

/// "The order changed since the page was shown; it is now `now`."
fn changed(now: OrderStatus) -> Msg {
    Msg::new("err_refund_changed").label("status", format!("status_{}", now.as_str()))
}

/// The refund form: the status the operator saw the order in.
#[derive(Deserialize)]
pub struct RefundForm {
    csrf: String,
    #[serde(default)]
    status: String,
}

pub async fn refund(
    State(state): State<Shared>,
    op: Operator,
    Path(no): Path<String>,
    Form(form): Form<RefundForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    let o = order(&state, &no).await?;
    let Some(seen) = OrderStatus::parse(&form.status) else {
        // A form from before the status was sent: look again first.
        return Err(PanelError::Invalid(changed(o.status.0)));
    };
    let detail = format!("marked refunded by {}", op.session.email);
    if !state
        .store
        .refund_order(o.id, seen, now_millis(), &detail)
        .await?
    {
        // Changed since the page was shown (a restock delivered it, another
        // operator refunded it): say so rather than act on what it was.
        let now = order(&state, &no).await?.status.0;
        return Err(PanelError::Invalid(if now != seen {
            changed(now)
        } else {
            Msg::new("err_refund_state")
        }));
    }
    op.audit(&state, "order_refunded", &o.order_no, seen.as_str())
        .await?;
    Ok(Redirect::to(&format!("/admin/orders/{no}")).into_response())
}

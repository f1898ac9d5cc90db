//! Placing an order: every check of API.md in order, then one store call that
//! inserts the order and reserves its codes atomically.

use kami_core::order::rfc3339;
use kami_core::secrets::{random_token, token_hash};
use kami_core::{now_millis, Email, OrderNo};
use std::net::IpAddr;

use kami_core::pricing::{self, normalize_coupon_code, CouponRefusal, CouponTerms};
use kami_store::{CreateOrderError, IdempotencyRecord, NewOrder, Order, SaleTerms, SubmitError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::rate_limit::Class;
use crate::services::gate::{Admission, Settled};
use crate::state::AppState;

/// Longest query password accepted; it is only ever hashed.
const MAX_QUERY_PASSWORD: usize = 128;

#[derive(Debug, Deserialize)]
pub struct OrderRequest {
    pub product_id: Value,
    pub quantity: Option<i64>,
    pub email: Option<String>,
    pub query_password: Option<String>,
    pub coupon: Option<String>,
    pub channel: Option<String>,
}

/// An idempotency key with the hash of the request it was first used for.
pub struct Idempotency {
    pub scope: &'static str,
    pub key: String,
    pub request_hash: Vec<u8>,
}

pub struct Placed {
    pub order: Order,
    pub access_token: String,
    /// The 201 body of API.md.
    pub body: Created,
}

/// The 201 body of `POST /api/v1/orders` (API.md). A struct rather than a
/// `json!` value: building, writing and dropping the value's maps were
/// about 8,000 instructions per order. The fields are in the order the
/// value's sorted map wrote them, so the bytes are the same.
#[derive(Debug, Serialize)]
pub struct Created {
    access_token: String,
    amount: i64,
    currency: String,
    expires_at: String,
    order_no: String,
    payment: CreatedPayment,
    status: &'static str,
}

#[derive(Debug, Serialize)]
struct CreatedPayment {
    channel: String,
    pay_url: String,
}

pub fn parse_id(v: &Value) -> Option<i64> {
    match v {
        // `1.0` is the id 1 to a client that writes every number as a
        // float (JavaScript's never, some serialisers' always).
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|id| *id > 0)
}

/// An order priced in a currency its channel's gateway cannot take.
pub fn cannot_collect(channel: &str, currency: &str) -> ApiError {
    ApiError::invalid_param(
        "channel",
        format!("channel {channel} cannot collect {currency}; choose another channel"),
    )
}

pub fn pay_url(state: &AppState, channel: &str, order_no: &str, token: &str) -> String {
    format!(
        "{}/pay/{channel}/{order_no}?token={token}",
        state.settings.public_url
    )
}

pub async fn place_order(
    state: &AppState,
    req: &OrderRequest,
    buyer_ip: Option<std::net::IpAddr>,
    idem: Option<&Idempotency>,
) -> Result<Placed, ApiError> {
    // An id the server never gave out (a string that is no number, zero, a
    // negative) names no product: 404, as for a number no product has.
    // Only a missing id or one of another type is a malformed request.
    let product_id = match &req.product_id {
        Value::Number(_) | Value::String(_) => {
            parse_id(&req.product_id).ok_or_else(|| ApiError::not_found("product"))?
        }
        _ => {
            return Err(ApiError::invalid_param(
                "product_id",
                "product_id must be a product id",
            ))
        }
    };
    let product = state
        .catalog
        .sale_terms(state.store.as_ref(), &state.gate, product_id)
        .await?
        .filter(|p| p.visible)
        .ok_or_else(|| ApiError::not_found("product"))?;
    let channel = req.channel.as_deref().unwrap_or_default();
    let Some(gateway) = state.enabled_channel(channel) else {
        return Err(ApiError::invalid_param(
            "channel",
            format!(
                "channel must be one of: {}",
                state.channel_names().join(", ")
            ),
        ));
    };
    if !gateway.collects(&product.currency) {
        return Err(cannot_collect(channel, &product.currency));
    }
    if !state.breakers.allows(channel) {
        return Err(crate::services::payments::channel_unavailable(channel));
    }
    let quantity = req.quantity.unwrap_or(1);
    check_quantity(&product, quantity)?;
    let email = Email::parse(req.email.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::invalid_param("email", e.to_string()))?;
    let query_password = req
        .query_password
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty());
    if query_password.is_some_and(|p| p.len() > MAX_QUERY_PASSWORD) {
        return Err(ApiError::invalid_param(
            "query_password",
            "query_password is too long",
        ));
    }
    let now = now_millis();
    if let Some(starts) = product.sale_starts_at.filter(|s| now < *s) {
        return Err(ApiError::sale_not_started(&rfc3339(starts)));
    }
    if product.sale_ends_at.is_some_and(|e| now >= e) {
        return Err(ApiError::sale_ended());
    }
    // Priced before the gate is asked, so a refused coupon never takes a
    // hold on the gate's count.
    let quote = quote(
        state,
        &product,
        quantity,
        req.coupon.as_deref(),
        buyer_ip,
        now,
    )
    .await?;
    let amount = quote.amount;
    // The stock gate turns buyers away without a database round trip once
    // stock is gone; it only ever rejects what the database would (gate.rs).
    // With Redis it holds the codes until the database has answered.
    let hold = match state
        .gate
        .admit_confirmed(state.store.as_ref(), product_id, quantity)
        .await
    {
        Admission::Pass(hold) => hold,
        Admission::SoldOut => return Err(gate_rejected("sold_out", ApiError::sold_out())),
        Admission::Insufficient(left) => {
            return Err(gate_rejected(
                "insufficient_stock",
                ApiError::insufficient_stock(left),
            ))
        }
    };

    let order_no = OrderNo::generate(now).as_str().to_string();
    let access_token = random_token("kat_");
    let ttl_secs = state.shop().order_ttl_secs;
    let expires_at = now + ttl_secs * 1000;
    let body = Created {
        access_token: access_token.clone(),
        amount,
        currency: product.currency.clone(),
        expires_at: rfc3339(expires_at),
        order_no: order_no.clone(),
        payment: CreatedPayment {
            channel: channel.to_string(),
            pay_url: pay_url(state, channel, &order_no, &access_token),
        },
        status: "pending",
    };
    let new = NewOrder {
        order_no: order_no.clone(),
        product_id,
        quantity,
        unit_price: quote.unit_price,
        discount: quote.discount,
        amount,
        currency: product.currency.clone(),
        email: email.as_str().to_string(),
        query_password_hash: query_password
            .map(|p| state.keys.query_password_hash(email.as_str(), p)),
        access_token_hash: token_hash(&access_token),
        // Written out only for an order the gate let through: a sold-out
        // answer formatted the address (and parsed it back) for nothing.
        buyer_ip: buyer_ip.map(|ip| ip.to_string()),
        channel: channel.to_string(),
        created_at: now,
        expires_at,
        per_buyer_limit: product.per_buyer_limit,
        per_ip_limit: product.per_ip_limit,
        coupon_id: quote.coupon.as_ref().map(|c| c.id),
        idempotency: idem.map(|i| sealed_response(state, i, 201, &body)),
    };
    // Every early return below drops the hold, which gives its codes back.
    let outcome = match state.order_writer.submit(new).await {
        Ok(outcome) => outcome?,
        Err(SubmitError::Overloaded) => {
            metrics::counter!("kami_shed_total", "writer" => "orders").increment(1);
            return Err(ApiError::overloaded());
        }
        Err(SubmitError::Stopped) => return Err(ApiError::unavailable("shutting down")),
    };
    // The gate follows the database's answer. `insufficient_stock` carries
    // a count taken before the other orders of its batch were answered, whose
    // decrements would then be counted twice; the gate keeps its own count
    // there and lets the database answer again rather than risk a wrong "no".
    let settled = match &outcome {
        Ok(_) => Settled::Reserved,
        Err(CreateOrderError::SoldOut) => Settled::SoldOut,
        Err(_) => Settled::Refused,
    };
    state.gate.settle(product_id, quantity, hold, settled).await;
    let label = match &outcome {
        Ok(_) => "created",
        Err(CreateOrderError::SoldOut) => "sold_out",
        Err(CreateOrderError::InsufficientStock { .. }) => "insufficient_stock",
        Err(CreateOrderError::LimitExceeded) => "limit_exceeded",
        Err(CreateOrderError::CouponUsedUp) => "coupon_used_up",
        Err(CreateOrderError::IdempotencyKeyTaken) => "idempotent_replay",
    };
    metrics::counter!("kami_orders_total", "outcome" => label).increment(1);
    match outcome {
        Ok(order) => {
            // Per-order lines are `debug`: the order and its timeline are in the
            // database, and at a drop's rate an `info` line per order was a
            // tenth of the server's CPU and ~1 KB per order of log (operations.md).
            tracing::debug!(order_no = %order.order_no, quantity, amount, channel, "order created, codes reserved");
            state.recent_orders.remember(&order);
            if ttl_secs < 5 {
                state.wake_worker.notify_one();
            }
            Ok(Placed {
                order,
                access_token,
                body,
            })
        }
        Err(CreateOrderError::SoldOut) => Err(ApiError::sold_out()),
        Err(CreateOrderError::InsufficientStock { available }) => Err(ApiError::insufficient_stock(available)),
        Err(CreateOrderError::LimitExceeded) => Err(limit_refusal(&product, quantity)),
        Err(CreateOrderError::CouponUsedUp) => Err(ApiError::invalid_param("coupon", CouponRefusal::UsedUp.to_string())),
        Err(CreateOrderError::IdempotencyKeyTaken) => Err(ApiError::idempotency_in_progress(
            "a request with this Idempotency-Key was processed concurrently; retry to get its response",
        )),
    }
}

/// The product's per-order quantity range (orders and quotes alike).
pub fn check_quantity(product: &SaleTerms, quantity: i64) -> Result<(), ApiError> {
    if quantity < product.min_quantity || quantity > product.max_quantity {
        return Err(ApiError::invalid_param(
            "quantity",
            format!(
                "quantity must be between {} and {}",
                product.min_quantity, product.max_quantity
            ),
        ));
    }
    Ok(())
}

/// `limit_exceeded` naming the limit the order ran into: the per-email one
/// when it alone refuses this quantity or it is the tighter, else per IP.
fn limit_refusal(product: &SaleTerms, quantity: i64) -> ApiError {
    match (product.per_buyer_limit, product.per_ip_limit) {
        (Some(email), Some(ip)) if email <= ip || quantity > email => {
            ApiError::limit_exceeded(email)
        }
        (_, Some(ip)) => ApiError::limit_exceeded_per_ip(ip),
        (email, None) => ApiError::limit_exceeded(email.unwrap_or(0)),
    }
}

/// What a buyer pays (API.md extension `GET /api/v1/products/{id}/quote`,
/// and the figures an order is created with).
#[derive(Debug, Clone)]
pub struct Quote {
    pub quantity: i64,
    pub unit_price: i64,
    pub subtotal: i64,
    pub discount: i64,
    pub amount: i64,
    pub currency: String,
    pub coupon: Option<CouponTerms>,
}

impl Quote {
    pub fn body(&self, product_id: i64) -> Value {
        json!({
            "product_id": product_id,
            "quantity": self.quantity,
            "unit_price": self.unit_price,
            "subtotal": self.subtotal,
            "discount": self.discount,
            "amount": self.amount,
            "currency": self.currency,
            "coupon": self.coupon.as_ref().map(|c| c.code.as_str()),
        })
    }
}

/// Prices `quantity` of the product: its wholesale tier, then the coupon.
/// Naming a coupon costs the client a token of `Class::Coupon` before the
/// code is even looked up, valid or not, so no answer tells a guesser more
/// than the rate allows.
pub async fn quote(
    state: &AppState,
    product: &SaleTerms,
    quantity: i64,
    coupon: Option<&str>,
    client: Option<IpAddr>,
    now: i64,
) -> Result<Quote, ApiError> {
    let unit_price = pricing::unit_price(product.price, &product.wholesale_tiers, quantity);
    let subtotal = unit_price
        .checked_mul(quantity)
        .ok_or_else(|| ApiError::invalid_param("quantity", "amount overflows"))?;
    let coupon = match coupon.map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(raw) => {
            if let Some(ip) = client {
                state.limits.check_ip(Class::Coupon, ip).await?;
            }
            let found = match normalize_coupon_code(raw) {
                Some(code) => state.store.coupon_by_code(&code).await?,
                None => None,
            };
            let Some(found) = found.filter(|c| !c.disabled) else {
                return Err(ApiError::invalid_param(
                    "coupon",
                    CouponRefusal::Unknown.to_string(),
                ));
            };
            found
                .check(product.id, &product.currency, now)
                .map_err(|r| ApiError::invalid_param("coupon", r.to_string()))?;
            Some(found)
        }
    };
    let discount = coupon.as_ref().map_or(0, |c| c.discount(subtotal));
    Ok(Quote {
        quantity,
        unit_price,
        subtotal,
        discount,
        amount: subtotal - discount,
        currency: product.currency.clone(),
        coupon,
    })
}

fn gate_rejected(outcome: &'static str, e: ApiError) -> ApiError {
    crate::metrics::gate_rejection(outcome);
    e
}

/// The response to store under an idempotency key, sealed: an order's
/// response carries its access token, which must not sit in the database
/// in the clear.
pub fn sealed_response(
    state: &AppState,
    idem: &Idempotency,
    status: u16,
    body: &impl Serialize,
) -> IdempotencyRecord {
    let body = serde_json::to_vec(body).expect("a response body serializes");
    let sealed = state.keys.seal(&idem_context(idem.scope, &idem.key), &body);
    IdempotencyRecord {
        scope: idem.scope.to_string(),
        key: idem.key.clone(),
        request_hash: idem.request_hash.clone(),
        status_code: i64::from(status),
        response: sealed.ciphertext,
        response_nonce: sealed.nonce,
        created_at: now_millis(),
    }
}

pub fn idem_context(scope: &str, key: &str) -> String {
    kami_core::secrets::context::idempotent(scope, key)
}

/// A page of the operator's order list, newest first, and whether more
/// follow: the API's and the panel's. A pending order past its deadline
/// reads as expired everywhere, and the sweep that stores it so runs every
/// second; a listing by `pending` or `expired` runs one batch of it first,
/// so it lists an order under the status it shows.
pub async fn list_page(
    state: &crate::state::Shared,
    mut filter: kami_store::OrderFilter,
    page: i64,
) -> Result<(Vec<Order>, bool), kami_store::StoreError> {
    use kami_core::OrderStatus;
    if matches!(
        filter.status,
        Some(OrderStatus::Pending | OrderStatus::Expired)
    ) {
        if let Err(e) = crate::workers::expire(state).await {
            tracing::warn!(error = %e, "expiring due orders before a listing failed");
        }
    }
    filter.limit = page + 1;
    let mut orders = state.store.list_orders(&filter).await?;
    let more = orders.len() as i64 > page;
    orders.truncate(page as usize);
    if filter.status == Some(OrderStatus::Pending) {
        // One that another instance's sweep holds, not yet stored as expired.
        let now = now_millis();
        orders.retain(|o| o.status.0.as_seen_at(o.expires_at, now) == OrderStatus::Pending);
    }
    Ok((orders, more))
}

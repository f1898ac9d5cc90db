//! Placing an order: every check of API.md in order, then one store call that
//! inserts the order and reserves its codes atomically.

use kami_core::order::rfc3339;
use kami_core::secrets::{random_token, token_hash};
use kami_core::{now_millis, Email, OrderNo};
use kami_store::{CreateOrderError, IdempotencyRecord, NewOrder, Order, SubmitError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
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
    pub body: Value,
}

pub fn parse_id(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|id| *id > 0)
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
    buyer_ip: Option<String>,
    idem: Option<&Idempotency>,
) -> Result<Placed, ApiError> {
    let product_id = parse_id(&req.product_id)
        .ok_or_else(|| ApiError::invalid_param("product_id", "product_id must be a product id"))?;
    let product = state
        .catalog
        .sale_terms(state.store.as_ref(), &state.gate, product_id)
        .await?
        .filter(|p| p.visible)
        .ok_or_else(|| ApiError::not_found("product"))?;
    let channel = req.channel.as_deref().unwrap_or_default();
    if state.channel(channel).is_none() {
        return Err(ApiError::invalid_param(
            "channel",
            format!(
                "channel must be one of: {}",
                state.channel_names().join(", ")
            ),
        ));
    }
    if !state.breakers.allows(channel) {
        return Err(crate::services::payments::channel_unavailable(channel));
    }
    let quantity = req.quantity.unwrap_or(1);
    if quantity < product.min_quantity || quantity > product.max_quantity {
        return Err(ApiError::invalid_param(
            "quantity",
            format!(
                "quantity must be between {} and {}",
                product.min_quantity, product.max_quantity
            ),
        ));
    }
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
    if req.coupon.as_deref().is_some_and(|c| !c.trim().is_empty()) {
        return Err(ApiError::invalid_param("coupon", "unknown coupon"));
    }
    let now = now_millis();
    if let Some(starts) = product.sale_starts_at.filter(|s| now < *s) {
        return Err(ApiError::sale_not_started(&rfc3339(starts)));
    }
    if product.sale_ends_at.is_some_and(|e| now >= e) {
        return Err(ApiError::sale_ended());
    }
    let amount = product
        .price
        .checked_mul(quantity)
        .ok_or_else(|| ApiError::invalid_param("quantity", "amount overflows"))?;
    // The stock gate turns buyers away without a database round trip once
    // stock is gone; it only ever rejects what the database would (gate.rs).
    // With Redis it holds the codes until the database has answered.
    let hold = match state.gate.admit(product_id, quantity).await {
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
    let expires_at = now + state.settings.order_ttl_secs * 1000;
    let body = json!({
        "order_no": order_no,
        "status": "pending",
        "amount": amount,
        "currency": product.currency,
        "expires_at": rfc3339(expires_at),
        "access_token": access_token,
        "payment": {"channel": channel, "pay_url": pay_url(state, channel, &order_no, &access_token)},
    });
    let new = NewOrder {
        order_no: order_no.clone(),
        product_id,
        quantity,
        unit_price: product.price,
        amount,
        currency: product.currency.clone(),
        email: email.as_str().to_string(),
        query_password_hash: query_password
            .map(|p| state.keys.query_password_hash(email.as_str(), p)),
        access_token_hash: token_hash(&access_token),
        buyer_ip,
        channel: channel.to_string(),
        created_at: now,
        expires_at,
        per_buyer_limit: product.per_buyer_limit,
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
        Err(CreateOrderError::IdempotencyKeyTaken) => "idempotent_replay",
    };
    metrics::counter!("kami_orders_total", "outcome" => label).increment(1);
    match outcome {
        Ok(order) => {
            tracing::info!(order_no = %order.order_no, quantity, amount, channel, "order created, codes reserved");
            if state.settings.order_ttl_secs < 5 {
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
        Err(CreateOrderError::LimitExceeded) => Err(ApiError::limit_exceeded(product.per_buyer_limit.unwrap_or(0))),
        Err(CreateOrderError::IdempotencyKeyTaken) => Err(ApiError::idempotency_conflict(
            "a request with this Idempotency-Key was processed concurrently; retry to get its response",
        )),
    }
}

fn gate_rejected(outcome: &'static str, e: ApiError) -> ApiError {
    metrics::counter!("kami_gate_rejections_total", "outcome" => outcome).increment(1);
    metrics::counter!("kami_orders_total", "outcome" => outcome).increment(1);
    e
}

/// The response to store under an idempotency key, sealed: an order's
/// response carries its access token, which must not sit in the database
/// in the clear.
pub fn sealed_response(
    state: &AppState,
    idem: &Idempotency,
    status: u16,
    body: &Value,
) -> IdempotencyRecord {
    let sealed = state.keys.seal(
        &idem_context(idem.scope, &idem.key),
        body.to_string().as_bytes(),
    );
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
    format!("idempotency:{scope}:{key}")
}

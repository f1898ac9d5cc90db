use std::net::IpAddr;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kami_core::secrets::{ct_eq, token_hash};
use kami_core::Email;
use serde::Deserialize;
use serde_json::{json, Value};

use super::idempotent;
use crate::error::{ApiError, ApiResult};
use crate::extract::{bearer, ClientIp, JsonBody, ReadLimited};
use crate::present;
use crate::rate_limit::Class;
use crate::services::cards::delivered_codes;
use crate::services::orders::{parse_id, place_order, sealed_response, Idempotency, OrderRequest};
use crate::state::Shared;

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    limit: Option<String>,
    starting_after: Option<String>,
}

/// Most products one page lists; `has_more` says when there are more.
const PRODUCTS_PAGE: usize = 100;

pub async fn list_products(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    Query(mut q): Query<ListQuery>,
) -> ApiResult<Response> {
    state.limits.check_ip(Class::Reads, ip).await?;
    let all = state
        .catalog
        .products(state.store.as_ref(), &state.gate)
        .await?;
    // A cursor naming a product hidden since the page before goes on from
    // where that product stood: after the last visible one before it.
    let cursor = q
        .starting_after
        .as_deref()
        .and_then(|c| parse_id(&Value::String(c.to_string())));
    if let Some(at) = all.iter().position(|p| Some(p.id) == cursor && !p.visible) {
        q.starting_after = all[..at]
            .iter()
            .rev()
            .find(|p| p.visible)
            .map(|p| p.id.to_string());
    }
    let products: Vec<_> = all.into_iter().filter(|p| p.visible).collect();
    // The page goes on after the cursor in the listing's own order
    // (categories, then products, as the merchant arranged them).
    let (page, has_more) = page_after(&products, |p| p.id, &q, PRODUCTS_PAGE, "product")?;
    // Serialised here, while the page's views borrow the products.
    Ok(Json(&present::ProductPage {
        data: page.iter().map(present::product_view).collect(),
        has_more,
    })
    .into_response())
}

/// One page of a list held whole in memory (products, coupons): up to
/// `limit` items (1 to `max`, `max` by default) after the item whose id is
/// `starting_after`, and whether more follow.
pub fn page_after<'a, T>(
    items: &'a [T],
    id_of: impl Fn(&T) -> i64,
    q: &ListQuery,
    max: usize,
    what: &str,
) -> ApiResult<(&'a [T], bool)> {
    let limit = page_limit(q.limit.as_deref(), max, max)?;
    let start = match q
        .starting_after
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => 0,
        Some(after) => {
            let id = parse_id(&Value::String(after.to_string()));
            items
                .iter()
                .position(|it| Some(id_of(it)) == id)
                .map(|i| i + 1)
                .ok_or_else(|| {
                    ApiError::invalid_param("starting_after", format!("unknown {what} id"))
                })?
        }
    };
    let rest = &items[start.min(items.len())..];
    let page = &rest[..limit.min(rest.len())];
    Ok((page, rest.len() > page.len()))
}

/// A list's `limit`: `default` when absent or empty, else 1 to `max`.
pub fn page_limit(raw: Option<&str>, default: usize, max: usize) -> ApiResult<usize> {
    match raw.map(str::trim).filter(|l| !l.is_empty()) {
        None => Ok(default),
        // Out of range is brought into it, as on the admin order list: a
        // client asking for "everything" gets the longest page and a cursor.
        Some(l) => {
            let digits = l.strip_prefix(['-', '+']).unwrap_or(l);
            match l.parse::<i64>() {
                Ok(n) => Ok(n.clamp(1, max as i64) as usize),
                // Too long for an i64, but a whole number all the same: as
                // far out of range as any, and brought into it likewise.
                Err(_) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                    Ok(if l.starts_with('-') { 1 } else { max })
                }
                Err(_) => Err(ApiError::invalid_param(
                    "limit",
                    format!("limit must be a whole number (pages hold 1-{max})"),
                )),
            }
        }
    }
}

/// The payment channels, and whether new orders may use them now (a
/// channel whose gateway keeps failing is held back by its breaker).
pub async fn list_channels(State(state): State<Shared>, _: ReadLimited) -> Json<Value> {
    let data: Vec<Value> = state
        .channel_names()
        .into_iter()
        .map(|n| json!({"name": n, "available": state.breakers.allows(n)}))
        .collect();
    Json(json!({"data": data, "has_more": false}))
}

pub async fn get_product(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.limits.check_ip(Class::Reads, ip).await?;
    let id = parse_id(&Value::String(id)).ok_or_else(|| ApiError::not_found("product"))?;
    state.gate.confirm_small(state.store.as_ref(), id).await;
    let p = state
        .catalog
        .product(state.store.as_ref(), &state.gate, id)
        .await?
        .filter(|p| p.visible)
        .ok_or_else(|| ApiError::not_found("product"))?;
    Ok(Json(&present::product_view(&p)).into_response())
}

const ORDERS_SCOPE: &str = "POST /api/v1/orders";

pub async fn create_order(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: JsonBody<OrderRequest>,
) -> Response {
    if let Err(e) = state.limits.check_ip(Class::Orders, ip).await {
        return e.into_response();
    }
    let key = match idempotent::header_key(&headers) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    // Bound to this client: another's same key and body is a conflict, never
    // the first order's answer with its access token. Built only for a
    // request with a key (a sold-out answer's instructions, callgrind).
    let request = match &key {
        Some(_) => idempotent::bound_to_client(&body.raw, ip),
        None => Vec::new(),
    };
    let idem = key.map(|key| Idempotency {
        scope: ORDERS_SCOPE,
        key,
        request_hash: idempotent::request_hash(&state, &request),
    });
    if let Some(idem) = &idem {
        match replay(&state, idem, &request).await {
            Ok(Some(res)) => return res,
            Ok(None) => {}
            Err(e) => return e.into_response(),
        }
    }
    match place_order(&state, &body.value, Some(ip), idem.as_ref()).await {
        // The order number is not recorded on the request's span: nothing
        // logs after this at `info`, the `debug` line of the order carries
        // it, and re-formatting the span's fields was 3% of the server's CPU
        // in a drop (perf).
        Ok(placed) => (StatusCode::CREATED, Json(placed.body)).into_response(),
        Err(e) if e.code == "idempotency_conflict" && idem.is_some() => {
            // A concurrent twin stored its response first: answer with it.
            match replay(&state, idem.as_ref().expect("checked"), &request).await {
                Ok(Some(res)) => res,
                _ => e.into_response(),
            }
        }
        Err(e) => {
            if let Some(idem) = &idem {
                if e.status.is_client_error() && e.status != StatusCode::TOO_MANY_REQUESTS {
                    let rec = sealed_response(&state, idem, e.status.as_u16(), &e.body());
                    match state.store.put_idempotency(&rec).await {
                        Ok(true) => {}
                        // A twin stored its answer first (it may have
                        // created the order while this one was refused, e.g.
                        // by the coupon it used up): that answer is the one.
                        Ok(false) => {
                            if let Ok(Some(res)) = replay(&state, idem, &request).await {
                                return res;
                            }
                        }
                        Err(store_err) => {
                            tracing::warn!(error = %store_err, "could not store an idempotent error response")
                        }
                    }
                }
            }
            e.into_response()
        }
    }
}

/// The stored response for this key, or a conflict when the key was first
/// used with another body or by another client.
async fn replay(state: &Shared, idem: &Idempotency, request: &[u8]) -> ApiResult<Option<Response>> {
    match state.store.get_idempotency(idem.scope, &idem.key).await? {
        Some(rec) => idempotent::replay(state, rec, &idem.request_hash, request),
        None => Ok(None),
    }
}

pub async fn get_order(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    Path(order_no): Path<String>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    state.limits.check_ip(Class::Reads, ip).await?;
    let (parts, _) = req.into_parts();
    let token = bearer(&parts).unwrap_or_default();
    let order = authorised_order(&state, &order_no, token).await?;
    tracing::Span::current().record("order_no", order.order_no.as_str());
    let cards = if order.status.0 == kami_core::OrderStatus::Delivered {
        Some(delivered_codes(state.store.as_ref(), &state.keys, &order).await?)
    } else {
        None
    };
    Ok(Json(&present::order_view(&order, cards.as_deref())).into_response())
}

/// The order, if `token` is its access token; otherwise the same 404 as for
/// an order that does not exist, so order numbers cannot be probed.
pub async fn authorised_order(
    state: &Shared,
    order_no: &str,
    token: &str,
) -> ApiResult<kami_store::Order> {
    let order = match kami_core::OrderNo::parse(order_no) {
        Some(no) => state.store.get_order(no.as_str()).await?,
        None => None,
    };
    match order {
        Some(o) if ct_eq(&o.access_token_hash, &token_hash(token)) => Ok(o),
        _ => Err(ApiError::not_found("order")),
    }
}

#[derive(Deserialize)]
pub struct LookupRequest {
    email: Option<String>,
    query_password: Option<String>,
    /// The page (API.md's list cursors), in the body or the query string.
    limit: Option<Value>,
    starting_after: Option<String>,
}

/// Most orders one lookup answers; `has_more` says when there are more.
pub const LOOKUP_PAGE: usize = 50;

const LOOKUP_SCOPE: &str = "POST /api/v1/orders/lookup";

pub async fn lookup_orders(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    RawQuery(raw_query): RawQuery,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
    body: JsonBody<LookupRequest>,
) -> Response {
    // Both limits come before the key is looked at: a stored key that
    // answered (a replay for the same body, a conflict for another) past
    // the per-email limit was an oracle for guessing query passwords.
    let email = match lookup_limits(&state, ip, &body.value).await {
        Ok(email) => email,
        Err(e) => return e.into_response(),
    };
    // The page may be asked in the query string: it is part of the request.
    let mut request = body.raw.to_vec();
    request.extend_from_slice(b"\n?");
    request.extend_from_slice(raw_query.unwrap_or_default().as_bytes());
    // The answer holds codes: only the client that asked hears it again.
    let request = idempotent::bound_to_client(&request, ip);
    let task_state = state.clone();
    idempotent::respond(
        &state,
        &headers,
        LOOKUP_SCOPE.into(),
        &request,
        move || async move {
            lookup_page(&task_state, &q, &email, &body.value)
                .await
                .map(Json)
                .into_response()
        },
    )
    .await
}

/// The lookup's limits, per IP and per email (API.md), and its email.
async fn lookup_limits(state: &Shared, ip: IpAddr, req: &LookupRequest) -> ApiResult<Email> {
    state.limits.check_ip(Class::Lookup, ip).await?;
    let email = Email::parse(req.email.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::invalid_param("email", e.to_string()))?;
    state.limits.check_email(email.as_str()).await?;
    Ok(email)
}

async fn lookup_page(
    state: &Shared,
    q: &ListQuery,
    email: &Email,
    req: &LookupRequest,
) -> ApiResult<Value> {
    let limit = match &req.limit {
        None | Some(Value::Null) => q.limit.clone(),
        Some(Value::String(l)) => Some(l.clone()),
        Some(other) => Some(other.to_string()),
    };
    let limit = page_limit(limit.as_deref(), LOOKUP_PAGE, LOOKUP_PAGE)?;
    let after = req.starting_after.as_ref().or(q.starting_after.as_ref());
    let (data, has_more) = lookup(
        state,
        email,
        req.query_password.as_deref().unwrap_or_default(),
        after.map(String::as_str),
        limit,
    )
    .await?;
    Ok(json!({"data": data, "has_more": has_more}))
}

/// Orders placed with this email and query password, newest first, with
/// their codes when delivered. Orders placed without a password never match.
/// `starting_after` is the last order number of the page before; only the
/// buyer's own orders are cursors, so the lookup tells nothing about other
/// order numbers. Answers the page and whether more follow.
pub async fn lookup(
    state: &Shared,
    email: &Email,
    password: &str,
    starting_after: Option<&str>,
    limit: usize,
) -> ApiResult<(Vec<Value>, bool)> {
    let password = password.trim();
    let after = starting_after.map(str::trim).filter(|s| !s.is_empty());
    if password.is_empty() {
        return match after {
            None => Ok((Vec::new(), false)),
            Some(_) => Err(unknown_cursor()),
        };
    }
    let hash = state.keys.query_password_hash(email.as_str(), password);
    // One query whether or not the order exists: the answer and its time
    // tell nothing about other buyers' order numbers.
    let before_id = match after {
        None => None,
        Some(no) => Some(
            state
                .store
                .buyer_order_id(email.as_str(), &hash, no)
                .await?
                .ok_or_else(unknown_cursor)?,
        ),
    };
    let mut orders = state
        .store
        .lookup_orders(email.as_str(), &hash, before_id, limit as i64 + 1)
        .await?;
    let has_more = orders.len() > limit;
    orders.truncate(limit);
    let mut out = Vec::with_capacity(orders.len());
    for o in &orders {
        let cards = if o.status.0 == kami_core::OrderStatus::Delivered {
            Some(delivered_codes(state.store.as_ref(), &state.keys, o).await?)
        } else {
            None
        };
        out.push(present::order(o, cards.as_deref()));
    }
    Ok((out, has_more))
}

fn unknown_cursor() -> ApiError {
    ApiError::invalid_param("starting_after", "not an order of this lookup")
}

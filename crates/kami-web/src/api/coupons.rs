//! Coupons in the admin API (an extension to API.md) and the public quote
//! that shows a buyer the discounted total before paying.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kami_core::pricing::{normalize_coupon_code, CouponKind, MAX_COUPON_CODE};
use kami_core::{now_millis, Currency};
use kami_store::{Coupon, NewCoupon};
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::{parse_time, ADMIN_PAGE};
use super::public::{page_after, ListQuery};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AdminKey, ClientIp, JsonBody};
use crate::present;
use crate::rate_limit::Class;
use crate::services::orders::{check_quantity, parse_id, quote};
use crate::state::Shared;

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct CouponInput {
    pub code: Option<String>,
    pub kind: Option<String>,
    pub value: Option<i64>,
    /// Fixed coupons: defaults to the product's currency when one is named.
    pub currency: Option<String>,
    pub product_id: Option<Value>,
    pub max_uses: Option<i64>,
    pub expires_at: Option<String>,
}

/// Validates and creates a coupon: the API and the admin panel's form.
pub async fn create_coupon_from(state: &Shared, input: CouponInput) -> ApiResult<Coupon> {
    let code = input
        .code
        .as_deref()
        .and_then(normalize_coupon_code)
        .ok_or_else(|| {
            ApiError::invalid_param(
                "code",
                format!("code must be 1-{MAX_COUPON_CODE} letters, digits, '-' or '_'"),
            )
        })?;
    let kind = input
        .kind
        .as_deref()
        .and_then(CouponKind::parse)
        .ok_or_else(|| ApiError::invalid_param("kind", "kind must be \"fixed\" or \"percent\""))?;
    let value = input
        .value
        .ok_or_else(|| ApiError::invalid_param("value", "value is required"))?;
    let product = match &input.product_id {
        None | Some(Value::Null) => None,
        Some(v) => {
            let id = parse_id(v)
                .ok_or_else(|| ApiError::invalid_param("product_id", "no such product"))?;
            Some(
                state
                    .store
                    .sale_terms(id)
                    .await?
                    .ok_or_else(|| ApiError::invalid_param("product_id", "no such product"))?,
            )
        }
    };
    let currency = match kind {
        CouponKind::Percent => {
            if !(1..=100).contains(&value) {
                return Err(ApiError::invalid_param(
                    "value",
                    "a percent coupon takes 1-100 percent off",
                ));
            }
            None
        }
        CouponKind::Fixed => {
            if !(1..=10_000_000_000).contains(&value) {
                return Err(ApiError::invalid_param(
                    "value",
                    "a fixed coupon takes a positive amount in minor units off",
                ));
            }
            let given = input
                .currency
                .as_deref()
                .or(product.as_ref().map(|p| p.currency.as_str()))
                .ok_or_else(|| {
                    ApiError::invalid_param("currency", "a fixed coupon needs a currency")
                })?;
            let c = Currency::parse(given)
                .map_err(|e| ApiError::invalid_param("currency", e.to_string()))?;
            if product.as_ref().is_some_and(|p| p.currency != c.as_str()) {
                return Err(ApiError::invalid_param(
                    "currency",
                    "the coupon's currency differs from the product's",
                ));
            }
            Some(c.as_str().to_string())
        }
    };
    if input.max_uses.is_some_and(|m| m < 1) {
        return Err(ApiError::invalid_param(
            "max_uses",
            "max_uses must be at least 1 or null",
        ));
    }
    let new = NewCoupon {
        code,
        kind,
        value,
        currency,
        product_id: product.map(|p| p.id),
        max_uses: input.max_uses,
        expires_at: parse_time("expires_at", &input.expires_at)?,
    };
    let created = state
        .store
        .create_coupon(&new)
        .await?
        .ok_or_else(|| ApiError::invalid_param("code", "a coupon with this code exists"))?;
    tracing::info!(coupon_id = created.id, "coupon created");
    Ok(created)
}

pub async fn create(
    State(state): State<Shared>,
    key: AdminKey,
    headers: HeaderMap,
    body: JsonBody<CouponInput>,
) -> Response {
    let scope = format!("POST /api/v1/admin/coupons key:{}", key.id);
    let task_state = state.clone();
    super::idempotent::respond(&state, &headers, scope, &body.raw, move || async move {
        create_coupon_from(&task_state, body.value)
            .await
            .map(|c| (StatusCode::CREATED, Json(present::coupon(&c))))
            .into_response()
    })
    .await
}

pub async fn list(
    State(state): State<Shared>,
    _key: AdminKey,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let coupons = state.store.list_coupons().await?;
    let (page, has_more) = page_after(&coupons, |c| c.id, &q, ADMIN_PAGE, "coupon")?;
    let data: Vec<Value> = page.iter().map(present::coupon).collect();
    Ok(Json(json!({"data": data, "has_more": has_more})))
}

#[derive(Debug, Deserialize)]
pub struct CouponPatch {
    pub disabled: bool,
}

/// `PATCH /api/v1/admin/coupons/{id}` `{"disabled": true|false}`.
pub async fn update(
    State(state): State<Shared>,
    _key: AdminKey,
    Path(id): Path<String>,
    body: JsonBody<CouponPatch>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&Value::String(id)).ok_or_else(|| ApiError::not_found("coupon"))?;
    if !state
        .store
        .set_coupon_disabled(id, body.value.disabled)
        .await?
    {
        return Err(ApiError::not_found("coupon"));
    }
    let c = state
        .store
        .list_coupons()
        .await?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| ApiError::not_found("coupon"))?;
    Ok(Json(present::coupon(&c)))
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct QuoteQuery {
    pub quantity: Option<i64>,
    pub coupon: Option<String>,
}

/// `GET /api/v1/products/{id}/quote?quantity=&coupon=`: what an order would
/// cost, with the same checks and messages as placing it.
pub async fn public_quote(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    Query(q): Query<QuoteQuery>,
) -> ApiResult<Json<Value>> {
    state.limits.check_ip(Class::Reads, ip).await?;
    let id = parse_id(&Value::String(id)).ok_or_else(|| ApiError::not_found("product"))?;
    let product = state
        .catalog
        .sale_terms(state.store.as_ref(), &state.gate, id)
        .await?
        .filter(|p| p.visible)
        .ok_or_else(|| ApiError::not_found("product"))?;
    let quantity = q.quantity.unwrap_or(product.min_quantity);
    check_quantity(&product, quantity)?;
    let quote = quote(
        &state,
        &product,
        quantity,
        q.coupon.as_deref(),
        Some(ip),
        now_millis(),
    )
    .await?;
    Ok(Json(quote.body(id)))
}

//! The admin API (`Authorization: Bearer <api key>`).

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use http_body_util::Limited;
use kami_core::pricing::{validate_tiers, WholesaleTier};
use kami_core::{Currency, OrderStatus, StockDisplay};
use kami_store::{NewProduct, OrderFilter, Product, ProductPatch};
use serde::Deserialize;
use serde_json::{json, Value};

use super::idempotent;
use super::public::{page_after, ListQuery};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AdminKey, JsonBody};
use crate::present;
use crate::scopes::need;
use crate::services::import::{import_into_shop, ImportError};
use crate::services::orders::parse_id;
use crate::state::Shared;

/// Product fields as the admin API takes them; `null` clears a nullable one
/// and is refused for the others.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ProductInput {
    #[serde(deserialize_with = "not_null::name")]
    pub name: Option<String>,
    #[serde(deserialize_with = "not_null::price")]
    pub price: Option<i64>,
    #[serde(deserialize_with = "not_null::currency")]
    pub currency: Option<String>,
    #[serde(deserialize_with = "not_null::description")]
    pub description: Option<String>,
    #[serde(deserialize_with = "double_option")]
    pub category: Option<Option<String>>,
    #[serde(deserialize_with = "not_null::min_quantity")]
    pub min_quantity: Option<i64>,
    #[serde(deserialize_with = "not_null::max_quantity")]
    pub max_quantity: Option<i64>,
    #[serde(deserialize_with = "double_option")]
    pub per_buyer_limit: Option<Option<i64>>,
    #[serde(deserialize_with = "not_null::visible")]
    pub visible: Option<bool>,
    #[serde(deserialize_with = "double_option")]
    pub sale_starts_at: Option<Option<String>>,
    #[serde(deserialize_with = "double_option")]
    pub sale_ends_at: Option<Option<String>>,
    #[serde(deserialize_with = "null_as_no_threshold")]
    pub low_stock_threshold: Option<i64>,
    /// `[{"min_quantity": 10, "price": 900}, …]` (extension to API.md); `[]`
    /// removes them.
    #[serde(deserialize_with = "not_null::wholesale_tiers")]
    pub wholesale_tiers: Option<Vec<WholesaleTier>>,
    /// Most codes one client address may hold (extension to API.md).
    #[serde(deserialize_with = "double_option")]
    pub per_ip_limit: Option<Option<i64>>,
    /// `exact`, `level`, `hidden`, or `null` / `inherit` for the shop's default.
    #[serde(deserialize_with = "double_option")]
    pub stock_display: Option<Option<String>>,
}

/// Fields a new product defaults when they are absent or `null`.
const DEFAULTED_FIELDS: [&str; 6] = [
    "description",
    "min_quantity",
    "max_quantity",
    "visible",
    "wholesale_tiers",
    "low_stock_threshold",
];

impl ProductInput {
    /// The request names `max_quantity` and not `min_quantity`.
    fn sent_max_only(&self) -> bool {
        self.min_quantity.is_none() && self.max_quantity.is_some()
    }
}

/// `deserialize_with` functions for the fields that have no "nothing"
/// value: without them serde reads `"price": null` as an absent field, and
/// a PATCH that meant to change something answered 200 and changed nothing.
/// The error names the field; `JsonBody` puts it in `param`.
mod not_null {
    use serde::de::{Deserialize, Deserializer, Error};

    macro_rules! refuse_null {
        ($($field:ident),* $(,)?) => {$(
            pub fn $field<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
            where
                T: Deserialize<'de>,
                D: Deserializer<'de>,
            {
                Option::<T>::deserialize(d)?.map(Some).ok_or_else(|| {
                    D::Error::custom(concat!(stringify!($field), " cannot be null"))
                })
            }
        )*};
    }

    refuse_null!(
        name,
        price,
        currency,
        description,
        min_quantity,
        max_quantity,
        visible,
        wholesale_tiers,
    );
}

/// `null` is no low-stock threshold, which a product stores as 0.
fn null_as_no_threshold<'de, D>(d: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<i64>::deserialize(d).map(|t| Some(t.unwrap_or(0)))
}

fn parse_stock_display(v: &Option<String>) -> ApiResult<Option<StockDisplay>> {
    match v.as_deref().map(str::trim) {
        None | Some("" | "inherit") => Ok(None),
        Some(s) => StockDisplay::parse(s).map(Some).ok_or_else(|| {
            ApiError::invalid_param(
                "stock_display",
                "stock_display must be exact, level, hidden or inherit",
            )
        }),
    }
}

/// Tells a missing field (`None`) from an explicit `null` (`Some(None)`).
fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

pub(crate) fn parse_time(field: &'static str, v: &Option<String>) -> ApiResult<Option<i64>> {
    match v.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|t| Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
            .map_err(|_| {
                ApiError::invalid_param(field, format!("{field} must be an RFC 3339 time"))
            }),
    }
}

/// A sale that ends must end after it starts: one ending first was stored,
/// and the product could never be bought.
fn check_sale_window(starts: Option<i64>, ends: Option<i64>) -> ApiResult<()> {
    match (starts, ends) {
        (Some(s), Some(e)) if e <= s => Err(ApiError::invalid_param(
            "sale_ends_at",
            "sale_ends_at must be after sale_starts_at",
        )),
        _ => Ok(()),
    }
}

fn check_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid_param(
            "name",
            "name must be 1-200 characters",
        ));
    }
    Ok(name.to_string())
}

fn check_price(price: i64) -> ApiResult<i64> {
    if !(1..=10_000_000_000).contains(&price) {
        return Err(ApiError::invalid_param(
            "price",
            "price must be a positive integer in minor units",
        ));
    }
    Ok(price)
}

fn check_currency(c: &str) -> ApiResult<String> {
    Currency::parse(c)
        .map(|c| c.as_str().to_string())
        .map_err(|e| ApiError::invalid_param("currency", e.to_string()))
}

fn check_tiers(price: i64, tiers: &[WholesaleTier]) -> ApiResult<()> {
    validate_tiers(price, tiers)
        .map_err(|e| ApiError::invalid_param("wholesale_tiers", e.to_string()))
}

fn check_ip_limit(limit: Option<i64>) -> ApiResult<()> {
    if limit.is_some_and(|l| l < 1) {
        return Err(ApiError::invalid_param(
            "per_ip_limit",
            "per_ip_limit must be at least 1 or null",
        ));
    }
    Ok(())
}

/// `sent_max_only`: the request named `max_quantity` and not
/// `min_quantity`, so a minimum above the maximum is the maximum's fault;
/// otherwise it is the minimum's (or both's, and naming one is enough).
fn check_quantities(min: i64, max: i64, limit: Option<i64>, sent_max_only: bool) -> ApiResult<()> {
    let wrong = if min < 1 {
        Some("min_quantity")
    } else if max > 10_000 {
        Some("max_quantity")
    } else if max < min {
        Some(if sent_max_only {
            "max_quantity"
        } else {
            "min_quantity"
        })
    } else {
        None
    };
    if let Some(param) = wrong {
        return Err(ApiError::invalid_param(
            param,
            "need 1 <= min_quantity <= max_quantity <= 10000",
        ));
    }
    if limit.is_some_and(|l| l < 1) {
        return Err(ApiError::invalid_param(
            "per_buyer_limit",
            "per_buyer_limit must be at least 1 or null",
        ));
    }
    Ok(())
}

fn check_description(d: &str) -> ApiResult<String> {
    if d.len() > 64 * 1024 {
        return Err(ApiError::invalid_param(
            "description",
            "description is longer than 64 KiB",
        ));
    }
    Ok(d.to_string())
}

async fn category_id(state: &Shared, name: &Option<String>) -> ApiResult<Option<i64>> {
    match name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(n) if n.chars().count() > 100 => Err(ApiError::invalid_param(
            "category",
            "category must be at most 100 characters",
        )),
        Some(n) => Ok(state.store.category_id_by_name(n, true).await?),
    }
}

pub async fn create_product(
    State(state): State<Shared>,
    key: AdminKey<need::ProductsWrite>,
    headers: HeaderMap,
    body: JsonBody<serde_json::Map<String, Value>>,
) -> Response {
    // A new product's `null` is the default of a field that has one (a
    // client that writes every field it knows, unset ones as null); only
    // a PATCH refuses it, where it would change nothing.
    let mut fields = body.value;
    fields.retain(|k, v| !(v.is_null() && DEFAULTED_FIELDS.contains(&k.as_str())));
    let input: ProductInput = match crate::extract::from_json(Value::Object(fields)) {
        Ok(input) => input,
        Err(e) => return e.into_response(),
    };
    let scope = format!("POST /api/v1/admin/products key:{}", key.id);
    let task_state = state.clone();
    idempotent::respond(&state, &headers, scope, &body.raw, move || async move {
        create_product_from(&task_state, input)
            .await
            .map(|p| (StatusCode::CREATED, Json(present::product(&p))))
            .into_response()
    })
    .await
}

/// Validates and creates a product: the API and the admin panel's form.
pub async fn create_product_from(state: &Shared, input: ProductInput) -> ApiResult<Product> {
    let name = check_name(
        input
            .name
            .as_deref()
            .ok_or_else(|| ApiError::invalid_param("name", "name is required"))?,
    )?;
    let price = check_price(
        input
            .price
            .ok_or_else(|| ApiError::invalid_param("price", "price is required"))?,
    )?;
    let currency = check_currency(
        input
            .currency
            .as_deref()
            .ok_or_else(|| ApiError::invalid_param("currency", "currency is required"))?,
    )?;
    let min_quantity = input.min_quantity.unwrap_or(1);
    let max_quantity = input.max_quantity.unwrap_or(10);
    let per_buyer_limit = input.per_buyer_limit.flatten();
    check_quantities(
        min_quantity,
        max_quantity,
        per_buyer_limit,
        input.sent_max_only(),
    )?;
    let wholesale_tiers = input.wholesale_tiers.unwrap_or_default();
    check_tiers(price, &wholesale_tiers)?;
    let per_ip_limit = input.per_ip_limit.flatten();
    check_ip_limit(per_ip_limit)?;
    let sale_starts_at = parse_time("sale_starts_at", &input.sale_starts_at.flatten())?;
    let sale_ends_at = parse_time("sale_ends_at", &input.sale_ends_at.flatten())?;
    check_sale_window(sale_starts_at, sale_ends_at)?;
    let new = NewProduct {
        category_id: category_id(state, &input.category.flatten()).await?,
        name,
        description: check_description(input.description.as_deref().unwrap_or_default())?,
        price,
        currency,
        min_quantity,
        max_quantity,
        per_buyer_limit,
        sale_starts_at,
        sale_ends_at,
        visible: input.visible.unwrap_or(true),
        low_stock_threshold: input.low_stock_threshold.unwrap_or(0).max(0),
        wholesale_tiers,
        per_ip_limit,
        stock_display: parse_stock_display(&input.stock_display.flatten())?,
    };
    let p = state.store.create_product(&new).await?;
    state.gate.observed(p.id, 0).await;
    state.catalog.invalidate();
    tracing::info!(product_id = p.id, "product created");
    Ok(p)
}

pub async fn update_product(
    State(state): State<Shared>,
    _key: AdminKey<need::ProductsWrite>,
    Path(id): Path<String>,
    body: JsonBody<ProductInput>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&Value::String(id)).ok_or_else(|| ApiError::not_found("product"))?;
    let p = update_product_from(&state, id, body.value).await?;
    Ok(Json(present::product(&p)))
}

/// Validates and applies a partial update: the API and the admin panel's form.
pub async fn update_product_from(
    state: &Shared,
    id: i64,
    input: ProductInput,
) -> ApiResult<Product> {
    // The terms only: `get_product` counts the product's codes, seconds of
    // PostgreSQL with ten million of them, and the update's answer counts
    // them once already.
    let cur = state
        .store
        .sale_terms(id)
        .await?
        .ok_or_else(|| ApiError::not_found("product"))?;
    let min = input.min_quantity.unwrap_or(cur.min_quantity);
    let max = input.max_quantity.unwrap_or(cur.max_quantity);
    let limit = input.per_buyer_limit.unwrap_or(cur.per_buyer_limit);
    check_quantities(min, max, limit, input.sent_max_only())?;
    check_tiers(
        input.price.unwrap_or(cur.price),
        input
            .wholesale_tiers
            .as_ref()
            .unwrap_or(&cur.wholesale_tiers),
    )?;
    check_ip_limit(input.per_ip_limit.unwrap_or(cur.per_ip_limit))?;
    let patch = ProductPatch {
        category_id: match &input.category {
            None => None,
            Some(name) => Some(category_id(state, name).await?),
        },
        name: input.name.as_deref().map(check_name).transpose()?,
        description: input
            .description
            .as_deref()
            .map(check_description)
            .transpose()?,
        price: input.price.map(check_price).transpose()?,
        currency: input.currency.as_deref().map(check_currency).transpose()?,
        min_quantity: input.min_quantity,
        max_quantity: input.max_quantity,
        per_buyer_limit: input.per_buyer_limit,
        sale_starts_at: input
            .sale_starts_at
            .as_ref()
            .map(|v| parse_time("sale_starts_at", v))
            .transpose()?,
        sale_ends_at: input
            .sale_ends_at
            .as_ref()
            .map(|v| parse_time("sale_ends_at", v))
            .transpose()?,
        visible: input.visible,
        low_stock_threshold: input.low_stock_threshold.map(|t| t.max(0)),
        wholesale_tiers: input.wholesale_tiers,
        per_ip_limit: input.per_ip_limit,
        stock_display: input
            .stock_display
            .as_ref()
            .map(parse_stock_display)
            .transpose()?,
    };
    check_sale_window(
        patch.sale_starts_at.unwrap_or(cur.sale_starts_at),
        patch.sale_ends_at.unwrap_or(cur.sale_ends_at),
    )?;
    let p = state
        .store
        .update_product(id, &patch)
        .await?
        .ok_or_else(|| ApiError::not_found("product"))?;
    state.catalog.invalidate();
    Ok(p)
}

pub async fn list_products(
    State(state): State<Shared>,
    _key: AdminKey<need::ProductsRead>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let products = state.store.list_products(false).await?;
    let (page, has_more) = page_after(&products, |p| p.id, &q, ADMIN_PAGE, "product")?;
    // The storefront's page shape (`present::ProductPage`), the same bytes.
    Ok(Json(&present::ProductPage {
        data: page.iter().map(present::product_view).collect(),
        has_more,
    })
    .into_response())
}

/// Most products or coupons one page of the admin API lists.
pub const ADMIN_PAGE: usize = 500;

/// The largest upload of codes (API.md).
pub const IMPORT_BODY_LIMIT: usize = 16 * 1024 * 1024;

pub async fn import(
    State(state): State<Shared>,
    key: AdminKey<need::CardsWrite>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = check_upload_type(&headers) {
        return e.into_response();
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > IMPORT_BODY_LIMIT as u64) {
        return upload_error("length limit exceeded").into_response();
    }
    let body = Body::new(Limited::new(body, IMPORT_BODY_LIMIT));
    match idempotent::header_key(&headers) {
        Ok(None) => return import_codes(&state, &id, body).await.into_response(),
        Ok(Some(_)) => {}
        Err(e) => return e.into_response(),
    }
    // With a key the upload is read whole first, to compare it with the
    // first upload under the key; the route's limit still holds.
    let upload = match to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return upload_error(&e.to_string()).into_response(),
    };
    let scope = format!("POST /api/v1/admin/products/{id}/cards key:{}", key.id);
    let (task_state, task_upload) = (state.clone(), upload.clone());
    idempotent::respond(&state, &headers, scope, &upload, move || async move {
        import_codes(&task_state, &id, Body::from(task_upload))
            .await
            .into_response()
    })
    .await
}

async fn import_codes(state: &Shared, id: &str, body: Body) -> ApiResult<Json<Value>> {
    let id =
        parse_id(&Value::String(id.to_string())).ok_or_else(|| ApiError::not_found("product"))?;
    product_exists(state, id).await?;
    // The import runs in its own task: if the client goes away mid-upload,
    // the body errors and the task still aborts the batch cleanly.
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        let chunks = body
            .into_data_stream()
            .map(|r| r.map_err(|e| e.to_string()))
            .boxed();
        import_into_shop(&task_state, id, chunks).await
    });
    let report = task.await.map_err(ApiError::internal)?;
    match report {
        Ok(r) => Ok(Json(serde_json::to_value(r).map_err(ApiError::internal)?)),
        Err(ImportError::Binary(e)) => Err(ApiError::invalid(e.to_string())),
        Err(ImportError::Body(e)) => Err(upload_error(&e)),
        Err(ImportError::Store(e)) => Err(e.into()),
        // Not to be retried: a 500 that says what became of the codes.
        Err(e @ ImportError::Interrupted(_)) => {
            tracing::error!(error = %e, "card import interrupted");
            Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                e.to_string(),
            ))
        }
    }
}

/// Codes come as text, one a line (API.md). Read that way, a JSON or
/// multipart body imports its own syntax (`{"codes":["J1"]}`, boundary
/// lines) as codes, so those types are refused. The form type is not: it is
/// what `curl --data-binary @codes.txt` sends unless told otherwise.
fn check_upload_type(headers: &HeaderMap) -> ApiResult<()> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if essence == "application/json"
        || essence.ends_with("+json")
        || essence.starts_with("multipart/")
    {
        return Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ..ApiError::invalid_param(
                "Content-Type",
                "send the codes as Content-Type: text/plain, one code per line",
            )
        });
    }
    Ok(())
}

/// An upload that could not be read: over the route's limit, or cut short.
fn upload_error(e: &str) -> ApiError {
    if e.contains("length limit") {
        ApiError::payload_too_large("16 MiB")
    } else if e == crate::listen::BodyTooSlow.to_string() {
        ApiError::body_too_slow()
    } else if e == crate::body_budget::BodyOverBudget.to_string() {
        crate::body_budget::BodyOverBudget::answer()
    } else {
        ApiError::bad_request(format!("upload failed: {e}"))
    }
}

/// 404 unless the product exists. Reads the product's row only:
/// `get_product` also counts its available codes, which with ten million
/// of them on PostgreSQL took seconds per import request.
async fn product_exists(state: &Shared, id: i64) -> ApiResult<()> {
    state
        .store
        .sale_terms(id)
        .await?
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("product"))
}

pub async fn stock(
    State(state): State<Shared>,
    _key: AdminKey<need::StockRead>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&Value::String(id)).ok_or_else(|| ApiError::not_found("product"))?;
    product_exists(&state, id).await?;
    let s = state.store.stock(id).await?;
    Ok(Json(
        json!({"available": s.available, "reserved": s.reserved, "sold": s.sold}),
    ))
}

#[derive(Debug, Deserialize)]
pub struct OrdersQuery {
    status: Option<String>,
    email: Option<String>,
    product_id: Option<String>,
    limit: Option<String>,
    starting_after: Option<String>,
}

pub async fn list_orders(
    State(state): State<Shared>,
    _key: AdminKey<need::OrdersRead>,
    Query(q): Query<OrdersQuery>,
) -> ApiResult<Json<Value>> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            OrderStatus::parse(s)
                .ok_or_else(|| ApiError::invalid_param("status", "unknown status"))?,
        ),
    };
    // Above 500 (or below 1) a page is 500 (or 1), as before the limit was
    // read as text; only what is not a number is refused.
    let limit = crate::api::public::page_limit(q.limit.as_deref(), 50, 500)? as i64;
    // The cursor is an item's `id` (API.md: ids go back unchanged) or its
    // `order_no`, which the OpenAPI document named first; an order number
    // starts with a letter, so the two never meet.
    let before_id = match q
        .starting_after
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(id) if id.bytes().all(|b| b.is_ascii_digit()) => {
            Some(id.parse::<i64>().map_err(|_| {
                ApiError::invalid_param("starting_after", "starting_after is out of range")
            })?)
        }
        Some(no) => Some(
            state
                .store
                .get_order(no)
                .await?
                .ok_or_else(|| ApiError::invalid_param("starting_after", "unknown order number"))?
                .id,
        ),
    };
    // A product id that is not one is refused: ignored, the filter listed
    // every product's orders as if they were that product's.
    let product_id = match q.product_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => Some(p.parse::<i64>().map_err(|_| {
            ApiError::invalid_param("product_id", "product_id must be a product's id")
        })?),
    };
    let filter = OrderFilter {
        status,
        email: q
            .email
            .map(|e| e.trim().to_lowercase())
            .filter(|e| !e.is_empty()),
        product_id,
        before_id,
        ..OrderFilter::default()
    };
    let (orders, has_more) = crate::services::orders::list_page(&state, filter, limit).await?;
    let data: Vec<Value> = orders.iter().map(present::admin_order).collect();
    Ok(Json(json!({"data": data, "has_more": has_more})))
}

fn events_json(events: &[kami_store::OrderEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            json!({"order_no": e.order_no, "kind": e.kind, "detail": e.detail,
                   "created_at": present::time(Some(e.created_at))})
        })
        .collect()
}

pub async fn get_order(
    State(state): State<Shared>,
    _key: AdminKey<need::OrdersRead>,
    Path(order_no): Path<String>,
) -> ApiResult<Json<Value>> {
    let order = state
        .store
        .get_order(&order_no)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    let events = state.store.order_events(order.id).await?;
    let mut v = present::admin_order(&order);
    v["events"] = json!(events_json(&events));
    Ok(Json(v))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    order_no: Option<String>,
    limit: Option<String>,
    starting_after: Option<String>,
}

/// Events by order number, including rejected notifications that named an
/// order that does not exist. Without `order_no`: the events that name no
/// order at all (a notification refused before any order number could be
/// read from it, a gateway's event about no order), newest first, a page
/// at a time (`limit`, `starting_after` an event's `id`).
pub async fn events(
    State(state): State<Shared>,
    _key: AdminKey<need::OrdersRead>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Value>> {
    if let Some(order_no) = q.order_no.as_deref().filter(|n| !n.trim().is_empty()) {
        let events = state.store.events_for_order_no(order_no).await?;
        return Ok(Json(
            json!({"data": events_json(&events), "has_more": false}),
        ));
    }
    let limit = crate::api::public::page_limit(q.limit.as_deref(), 100, ADMIN_PAGE)?;
    let before = match q.starting_after.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(after) => Some(after.parse::<i64>().map_err(|_| {
            ApiError::invalid_param("starting_after", "starting_after must be an event id")
        })?),
    };
    let mut events = state
        .store
        .events_without_order(before, limit as i64 + 1)
        .await?;
    let has_more = events.len() > limit;
    events.truncate(limit);
    // Stored events only, so each has its row's id: the page's cursor.
    let data: Vec<Value> = events_json(&events)
        .into_iter()
        .zip(&events)
        .map(|(mut v, e)| {
            v["id"] = json!(e.id);
            v
        })
        .collect();
    Ok(Json(json!({"data": data, "has_more": has_more})))
}

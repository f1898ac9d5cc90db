//! Products: list, create, edit. Validation is the admin API's, so a
//! product made in the panel obeys exactly the rules of one made by API.

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use kami_core::pricing::WholesaleTier;
use kami_core::Currency;
use kami_store::Product;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Operator;
use super::msg::{self, Msg};
use super::page::{PanelError, PanelResult};
use crate::api::admin::{create_product_from, update_product_from, ProductInput};
use crate::present::money;
use crate::state::Shared;

pub const CURRENCIES: &[&str] = &["CNY", "USD", "EUR", "HKD", "JPY", "GBP"];
/// The product form's choices; `inherit` follows the shop's settings.
const STOCK_DISPLAYS: &[&str] = &["inherit", "exact", "level", "hidden"];

/// Products in the storefront's order, each with its neighbours in the same
/// category (the ones a move swaps it with), and the categories in theirs.
pub async fn list(State(state): State<Shared>, op: Operator) -> PanelResult {
    // The gate's stock, as the storefront shows it: counting every product's
    // codes took seconds per view with ten million on PostgreSQL. The codes
    // page counts a product's codes by status.
    let products = crate::services::catalog::load(state.store.as_ref(), &state.gate).await?;
    let rows: Vec<Value> = products
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let same = |q: &Product| q.category_id == p.category_id;
            json!({"id": p.id, "name": p.name, "category": p.category, "stock": p.stock,
                   "price": money(p.price, &p.currency), "visible": p.visible,
                   "first": !products[..i].iter().any(same),
                   "last": !products[i + 1..].iter().any(same)})
        })
        .collect();
    let categories: Vec<Value> = state
        .store
        .list_categories()
        .await?
        .iter()
        .map(|c| json!({"id": c.id, "name": c.name}))
        .collect();
    Ok(op.render(
        "admin/products.html",
        json!({"nav": "products", "products": rows, "categories": categories}),
    ))
}

/// Every field defaults, so a form missing its token is refused as CSRF (403), not as malformed.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MoveForm {
    csrf: String,
    /// `up` or `down`.
    dir: String,
}

impl MoveForm {
    fn up(&self) -> PanelResult<bool> {
        match self.dir.as_str() {
            "up" => Ok(true),
            "down" => Ok(false),
            _ => Err(PanelError::Invalid(Msg::new("err_move_dir"))),
        }
    }
}

pub async fn move_product(
    State(state): State<Shared>,
    op: Operator,
    Path(id): Path<i64>,
    Form(form): Form<MoveForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    if !state.store.move_product(id, form.up()?).await? {
        return Err(PanelError::NotFound);
    }
    state.catalog.invalidate();
    op.audit(&state, "product_moved", &format!("product:{id}"), &form.dir)
        .await?;
    Ok(Redirect::to("/admin/products").into_response())
}

pub async fn move_category(
    State(state): State<Shared>,
    op: Operator,
    Path(id): Path<i64>,
    Form(form): Form<MoveForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    if !state.store.move_category(id, form.up()?).await? {
        return Err(PanelError::NotFound);
    }
    state.catalog.invalidate();
    op.audit(
        &state,
        "category_moved",
        &format!("category:{id}"),
        &form.dir,
    )
    .await?;
    Ok(Redirect::to("/admin/products#categories").into_response())
}

#[derive(Deserialize, Default)]
pub struct SavedQuery {
    #[serde(default)]
    pub ok: Option<String>,
}

pub async fn new_form(op: Operator) -> Response {
    let blank = json!({"currency": "CNY", "min_quantity": 1, "max_quantity": 10,
                       "visible": true, "low_stock_threshold": 0, "stock_display": "inherit"});
    form_page(&op, StatusCode::OK, None, blank, None, false)
}

pub async fn edit_form(
    State(state): State<Shared>,
    op: Operator,
    Path(id): Path<i64>,
    Query(q): Query<SavedQuery>,
) -> PanelResult {
    // The form shows no stock: the product's row without a count of its codes.
    let p = state
        .store
        .get_product_uncounted(id)
        .await?
        .ok_or(PanelError::NotFound)?;
    Ok(form_page(
        &op,
        StatusCode::OK,
        Some(id),
        values(&p),
        None,
        q.ok.is_some(),
    ))
}

fn form_page(
    op: &Operator,
    status: StatusCode,
    id: Option<i64>,
    f: Value,
    error: Option<Msg>,
    saved: bool,
) -> Response {
    let error = error.map(|m| m.text(op.lang));
    op.render_status(
        status,
        "admin/product_form.html",
        json!({"nav": "products", "id": id, "f": f, "error": error, "saved": saved,
               "currencies": CURRENCIES, "stock_displays": STOCK_DISPLAYS}),
    )
}

/// The form's values for an existing product.
fn values(p: &Product) -> Value {
    let decimal = Currency::parse(&p.currency)
        .map(|c| c.format_decimal(p.price))
        .unwrap_or_else(|_| p.price.to_string());
    json!({"name": p.name, "description": p.description, "price": decimal,
           "currency": p.currency, "category": p.category.clone().unwrap_or_default(),
           "min_quantity": p.min_quantity, "max_quantity": p.max_quantity,
           "per_buyer_limit": p.per_buyer_limit, "visible": p.visible,
           "sale_starts_at": p.sale_starts_at.map(local_input),
           "sale_ends_at": p.sale_ends_at.map(local_input),
           "low_stock_threshold": p.low_stock_threshold,
           "per_ip_limit": p.per_ip_limit,
           "stock_display": p.stock_display.map_or("inherit", |d| d.as_str()),
           "wholesale_tiers": tiers_text(p)})
}

/// Tiers as the form shows them: one `quantity = price` line each.
fn tiers_text(p: &Product) -> String {
    let currency = Currency::parse(&p.currency).ok();
    p.wholesale_tiers
        .iter()
        .map(|t| {
            let price = currency
                .map(|c| c.format_decimal(t.price))
                .unwrap_or_else(|| t.price.to_string());
            format!("{} = {price}\n", t.min_quantity)
        })
        .collect()
}

/// Parses the tiers textarea (`10 = 8.50` per line, blank lines skipped).
/// A refusal names the line by its number in the textarea and its text.
fn parse_tiers_text(currency: Currency, text: &str) -> Result<Vec<WholesaleTier>, Msg> {
    text.lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, line)| {
            let bad = |key| Msg::new(key).with("n", i + 1).with("line", line);
            let (q, p) = line
                .split_once('=')
                .ok_or_else(|| bad("err_tier_line_shape"))?;
            let min_quantity = q
                .trim()
                .parse()
                .map_err(|_| bad("err_tier_line_quantity"))?;
            let price = currency
                .parse_decimal(p.trim())
                .ok_or_else(|| bad("err_tier_line_price"))?;
            Ok(WholesaleTier {
                min_quantity,
                price,
            })
        })
        .collect()
}

/// `datetime-local` inputs speak `YYYY-MM-DDTHH:MM`; the panel reads them as UTC.
fn local_input(ms: i64) -> String {
    kami_core::order::rfc3339(ms)[..16].to_string()
}

/// Every field defaults, so a form missing its token is refused as CSRF (403), not as malformed.
#[derive(Deserialize, serde::Serialize, Default)]
#[serde(default)]
pub struct ProductForm {
    csrf: String,
    name: String,
    #[serde(default)]
    description: String,
    price: String,
    currency: String,
    #[serde(default)]
    category: String,
    min_quantity: String,
    max_quantity: String,
    #[serde(default)]
    per_buyer_limit: String,
    #[serde(default)]
    visible: Option<String>,
    #[serde(default)]
    sale_starts_at: String,
    #[serde(default)]
    sale_ends_at: String,
    #[serde(default)]
    low_stock_threshold: String,
    #[serde(default)]
    per_ip_limit: String,
    #[serde(default)]
    wholesale_tiers: String,
    /// `inherit` (the shop's default), `exact`, `level` or `hidden`.
    #[serde(default)]
    stock_display: String,
}

/// A whole number typed into the field labelled `label`, or none.
fn int(label: &'static str, s: &str) -> Result<Option<i64>, Msg> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| msg::whole_number(label))
}

/// `2026-12-01T10:00` → RFC 3339 in UTC, the API's time format.
fn utc(s: &str) -> Option<String> {
    let s = s.trim();
    match s.len() {
        0 => None,
        16 => Some(format!("{s}:00Z")),
        _ => Some(format!("{s}Z")),
    }
}

impl ProductForm {
    fn to_input(&self) -> Result<ProductInput, Msg> {
        let currency = Currency::parse(&self.currency).map_err(|e| msg::currency(&e))?;
        let price = currency.parse_decimal(self.price.trim()).ok_or_else(|| {
            if self.price.trim().starts_with('-') {
                Msg::new("err_price_negative")
            } else {
                Msg::new("err_price_decimals").with("decimals", currency.exponent())
            }
        })?;
        let category = Some(self.category.trim().to_string()).filter(|c| !c.is_empty());
        Ok(ProductInput {
            name: Some(self.name.clone()),
            price: Some(price),
            currency: Some(currency.as_str().to_string()),
            description: Some(self.description.clone()),
            category: Some(category),
            min_quantity: Some(int("min_quantity", &self.min_quantity)?.unwrap_or(1)),
            max_quantity: Some(int("max_quantity", &self.max_quantity)?.unwrap_or(10)),
            per_buyer_limit: Some(int("per_buyer_limit", &self.per_buyer_limit)?),
            visible: Some(self.visible.is_some()),
            sale_starts_at: Some(utc(&self.sale_starts_at)),
            sale_ends_at: Some(utc(&self.sale_ends_at)),
            low_stock_threshold: Some(
                int("low_stock_threshold", &self.low_stock_threshold)?.unwrap_or(0),
            ),
            per_ip_limit: Some(int("per_ip_limit", &self.per_ip_limit)?),
            wholesale_tiers: Some(parse_tiers_text(currency, &self.wholesale_tiers)?),
            stock_display: Some(Some(self.stock_display.clone())),
        })
    }

    /// What the operator typed, to show again beside an error.
    fn sticky(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["visible"] = json!(self.visible.is_some());
        v
    }
}

pub async fn create(
    State(state): State<Shared>,
    op: Operator,
    Form(form): Form<ProductForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    let saved = match form.to_input() {
        Ok(input) => create_product_from(&state, input)
            .await
            .map_err(PanelError::from),
        Err(m) => Err(PanelError::Invalid(m)),
    };
    match saved {
        Ok(p) => {
            op.audit(
                &state,
                "product_created",
                &format!("product:{}", p.id),
                &p.name,
            )
            .await?;
            Ok(Redirect::to(&format!("/admin/products/{}?ok=1", p.id)).into_response())
        }
        Err(PanelError::Invalid(m)) => Ok(form_page(
            &op,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            form.sticky(),
            Some(m),
            false,
        )),
        Err(e) => Err(e),
    }
}

pub async fn update(
    State(state): State<Shared>,
    op: Operator,
    Path(id): Path<i64>,
    Form(form): Form<ProductForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    let saved = match form.to_input() {
        Ok(input) => update_product_from(&state, id, input)
            .await
            .map_err(PanelError::from),
        Err(m) => Err(PanelError::Invalid(m)),
    };
    match saved {
        Ok(p) => {
            op.audit(&state, "product_updated", &format!("product:{id}"), &p.name)
                .await?;
            Ok(Redirect::to(&format!("/admin/products/{id}?ok=1")).into_response())
        }
        Err(PanelError::Invalid(m)) => Ok(form_page(
            &op,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(id),
            form.sticky(),
            Some(m),
            false,
        )),
        Err(e) => Err(e),
    }
}

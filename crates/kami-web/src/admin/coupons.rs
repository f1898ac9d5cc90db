//! Coupons: list with their use counts, create, disable and enable.
//! Validation is the admin API's (`api::coupons`), so a coupon made in the
//! panel obeys exactly the rules of one made by API.

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use kami_core::order::rfc3339;
use kami_core::pricing::CouponKind;
use kami_core::Currency;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{CsrfForm, Operator};
use super::msg::{self, Msg};
use super::page::{PanelError, PanelResult};
use crate::api::coupons::{create_coupon_from, CouponInput};
use crate::present::money;
use crate::state::Shared;

async fn page(
    state: &Shared,
    op: &Operator,
    status: StatusCode,
    error: Option<Msg>,
    sticky: Value,
) -> PanelResult {
    let error = error.map(|m| m.text(op.lang));
    let products = state.store.list_products_uncounted().await?;
    let names: std::collections::HashMap<i64, String> =
        products.iter().map(|p| (p.id, p.name.clone())).collect();
    let coupons: Vec<Value> = state
        .store
        .list_coupons()
        .await?
        .iter()
        .map(|c| {
            let value = match (c.kind, c.currency.as_deref()) {
                (CouponKind::Percent, _) => format!("{}%", c.value),
                (CouponKind::Fixed, Some(cur)) => money(c.value, cur),
                (CouponKind::Fixed, None) => c.value.to_string(),
            };
            json!({"id": c.id, "code": c.code, "value": value,
                   "product": c.product_id.map(|p| names.get(&p).cloned().unwrap_or_else(|| format!("#{p}"))),
                   "used": c.used, "max_uses": c.max_uses,
                   "expires_at": c.expires_at.map(rfc3339), "disabled": c.disabled})
        })
        .collect();
    let products: Vec<Value> = products
        .iter()
        .map(|p| json!({"id": p.id, "name": p.name}))
        .collect();
    Ok(op.render_status(
        status,
        "admin/coupons.html",
        json!({"nav": "coupons", "coupons": coupons, "products": products, "error": error,
               "f": sticky, "currencies": super::products::CURRENCIES}),
    ))
}

pub async fn list(State(state): State<Shared>, op: Operator) -> PanelResult {
    page(
        &state,
        &op,
        StatusCode::OK,
        None,
        json!({"kind": "percent"}),
    )
    .await
}

/// Every field defaults, so a form missing its token is refused as CSRF (403), not as malformed.
#[derive(Deserialize, serde::Serialize, Default)]
#[serde(default)]
pub struct CouponForm {
    csrf: String,
    code: String,
    kind: String,
    /// Percent, or a decimal amount for fixed coupons.
    value: String,
    currency: String,
    product_id: String,
    max_uses: String,
    /// `datetime-local`, read as UTC like the product form's times.
    expires_at: String,
}

impl CouponForm {
    fn to_input(&self) -> Result<CouponInput, Msg> {
        let kind = self.kind.trim();
        let value = match kind {
            "fixed" => {
                let currency = Currency::parse(&self.currency).map_err(|e| msg::currency(&e))?;
                currency
                    .parse_decimal(self.value.trim())
                    .ok_or_else(|| Msg::new("err_coupon_value_amount"))?
            }
            _ => self
                .value
                .trim()
                .parse()
                .map_err(|_| Msg::new("err_coupon_value_percent"))?,
        };
        let max_uses = match self.max_uses.trim() {
            "" => None,
            m => Some(
                m.parse()
                    .map_err(|_| msg::whole_number("coupon_max_uses"))?,
            ),
        };
        let product_id = match self.product_id.trim() {
            "" => None,
            p => Some(Value::String(p.to_string())),
        };
        let expires_at = match self.expires_at.trim() {
            "" => None,
            t if t.len() == 16 => Some(format!("{t}:00Z")),
            t => Some(format!("{t}Z")),
        };
        Ok(CouponInput {
            code: Some(self.code.clone()),
            kind: Some(kind.to_string()),
            value: Some(value),
            currency: Some(self.currency.clone()).filter(|_| kind == "fixed"),
            product_id,
            max_uses,
            expires_at,
        })
    }
}

pub async fn create(
    State(state): State<Shared>,
    op: Operator,
    Form(form): Form<CouponForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    let created = match form.to_input() {
        Ok(input) => create_coupon_from(&state, input)
            .await
            .map_err(PanelError::from),
        Err(m) => Err(PanelError::Invalid(m)),
    };
    match created {
        Ok(c) => {
            op.audit(
                &state,
                "coupon_created",
                &format!("coupon:{}", c.id),
                &c.code,
            )
            .await?;
            Ok(Redirect::to("/admin/coupons").into_response())
        }
        Err(PanelError::Invalid(m)) => {
            let mut sticky = serde_json::to_value(&form).unwrap_or_default();
            sticky["csrf"] = Value::Null;
            page(
                &state,
                &op,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(m),
                sticky,
            )
            .await
        }
        Err(e) => Err(e),
    }
}

async fn set_disabled(state: &Shared, op: &Operator, id: i64, disabled: bool) -> PanelResult {
    if !state.store.set_coupon_disabled(id, disabled).await? {
        return Err(PanelError::NotFound);
    }
    let action = if disabled {
        "coupon_disabled"
    } else {
        "coupon_enabled"
    };
    op.audit(state, action, &format!("coupon:{id}"), "").await?;
    Ok(Redirect::to("/admin/coupons").into_response())
}

pub async fn disable(
    State(state): State<Shared>,
    op: Operator,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PanelError> {
    op.check_csrf(&form.csrf)?;
    set_disabled(&state, &op, id, true).await
}

pub async fn enable(
    State(state): State<Shared>,
    op: Operator,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PanelError> {
    op.check_csrf(&form.csrf)?;
    set_disabled(&state, &op, id, false).await
}

//! Owner-only shop settings (issue 3): name, notice banner, order TTL and
//! the default stock display, stored in `settings` and applied live.

use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use kami_core::StockDisplay;
use serde::Deserialize;
use serde_json::json;

use super::auth::{Operator, Owner};
use super::msg::Msg;
use super::page::PanelResult;
use super::products::SavedQuery;
use crate::services::settings::{self, SettingsError, ShopSettings};
use crate::state::Shared;

fn page(
    fixed: settings::FixedByConfig,
    op: &Operator,
    status: StatusCode,
    f: serde_json::Value,
    error: Option<Msg>,
    saved: bool,
) -> axum::response::Response {
    let error = error.map(|m| m.text(op.lang));
    let displays: Vec<&str> = StockDisplay::ALL.iter().map(|d| d.as_str()).collect();
    op.render_status(
        status,
        "admin/settings.html",
        json!({"nav": "settings", "f": f, "error": error, "saved": saved,
               "stock_displays": displays, "max_ttl": settings::MAX_ORDER_TTL_SECS,
               "fixed": fixed}),
    )
}

pub async fn show(
    State(state): State<Shared>,
    Owner(op): Owner,
    Query(q): Query<SavedQuery>,
) -> PanelResult {
    let s = state.shop();
    let f = json!({"shop_name": s.shop_name, "notice": s.notice.clone().unwrap_or_default(),
                   "order_ttl": s.order_ttl_secs.to_string(),
                   "stock_display": s.stock_display.as_str()});
    Ok(page(
        state.settings.fixed_by_config,
        &op,
        StatusCode::OK,
        f,
        None,
        q.ok.is_some(),
    ))
}

/// A field's value: the current one when configuration fixes it.
fn pick<'a>(fixed: bool, posted: &'a str, current: &'a str) -> &'a str {
    if fixed {
        current
    } else {
        posted
    }
}

/// Every field defaults, so a form missing its token is refused as CSRF (403), not as malformed.
#[derive(Deserialize, serde::Serialize, Default)]
#[serde(default)]
pub struct SettingsForm {
    csrf: String,
    shop_name: String,
    notice: String,
    order_ttl: String,
    stock_display: String,
}

pub async fn save(
    State(state): State<Shared>,
    Owner(op): Owner,
    Form(form): Form<SettingsForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    // A field configuration fixes is read-only on the page; whatever a post
    // says for it, its value stays (`settings::save`).
    let fixed = state.settings.fixed_by_config;
    let now = state.shop();
    let ttl_now = now.order_ttl_secs.to_string();
    let notice_now = now.notice.clone().unwrap_or_default();
    let new = match ShopSettings::parse(
        pick(fixed.shop_name, &form.shop_name, &now.shop_name),
        pick(fixed.notice, &form.notice, &notice_now),
        pick(fixed.order_ttl, &form.order_ttl, &ttl_now),
        &form.stock_display,
    ) {
        Ok(s) => s,
        Err(e) => {
            let m = match e {
                SettingsError::ShopName => {
                    Msg::new("err_shop_name_length").with("max", settings::MAX_NAME_CHARS)
                }
                SettingsError::Notice => {
                    Msg::new("err_notice_length").with("max", settings::MAX_NOTICE_CHARS)
                }
                SettingsError::OrderTtl => {
                    Msg::new("err_order_ttl").with("max", settings::MAX_ORDER_TTL_SECS)
                }
                SettingsError::StockDisplay => Msg::new("err_shop_stock_display"),
            };
            let mut sticky = serde_json::to_value(&form).unwrap_or_default();
            sticky["csrf"] = json!(null);
            return Ok(page(
                fixed,
                &op,
                StatusCode::UNPROCESSABLE_ENTITY,
                sticky,
                Some(m),
                false,
            ));
        }
    };
    let detail = format!(
        "shop_name={:?} notice={} order_ttl={} stock_display={}",
        new.shop_name,
        if new.notice.is_some() { "set" } else { "none" },
        new.order_ttl_secs,
        new.stock_display.as_str()
    );
    // Audited first: a change nobody can account for is not made.
    op.audit(&state, "settings_updated", "settings", &detail)
        .await?;
    settings::save(&state, new).await?;
    state.catalog.invalidate();
    Ok(Redirect::to("/admin/settings?ok=1").into_response())
}

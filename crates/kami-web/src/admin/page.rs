//! Rendering panel pages: one template environment (auto-escaped HTML), the
//! panel's error type, and small display helpers.

use std::sync::LazyLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kami_store::StoreError;
use minijinja::Value;
use serde_json::json;

use super::i18n;
use super::msg::{self, Msg};
use crate::error::ApiError;

pub(super) const TEMPLATES: &[(&str, &str)] = &[
    (
        "admin/base.html",
        include_str!("../../templates/admin/base.html"),
    ),
    (
        "admin/login.html",
        include_str!("../../templates/admin/login.html"),
    ),
    (
        "admin/error.html",
        include_str!("../../templates/admin/error.html"),
    ),
    (
        "admin/dashboard.html",
        include_str!("../../templates/admin/dashboard.html"),
    ),
    (
        "admin/_orders_table.html",
        include_str!("../../templates/admin/_orders_table.html"),
    ),
    (
        "admin/products.html",
        include_str!("../../templates/admin/products.html"),
    ),
    (
        "admin/product_form.html",
        include_str!("../../templates/admin/product_form.html"),
    ),
    (
        "admin/codes.html",
        include_str!("../../templates/admin/codes.html"),
    ),
    (
        "admin/orders.html",
        include_str!("../../templates/admin/orders.html"),
    ),
    (
        "admin/order.html",
        include_str!("../../templates/admin/order.html"),
    ),
    (
        "admin/audit.html",
        include_str!("../../templates/admin/audit.html"),
    ),
    (
        "admin/staff.html",
        include_str!("../../templates/admin/staff.html"),
    ),
    (
        "admin/sessions.html",
        include_str!("../../templates/admin/sessions.html"),
    ),
    (
        "admin/keys.html",
        include_str!("../../templates/admin/keys.html"),
    ),
    (
        "admin/coupons.html",
        include_str!("../../templates/admin/coupons.html"),
    ),
    (
        "admin/security.html",
        include_str!("../../templates/admin/security.html"),
    ),
    (
        "admin/settings.html",
        include_str!("../../templates/admin/settings.html"),
    ),
    (
        "admin/channels.html",
        include_str!("../../templates/admin/channels.html"),
    ),
];

pub const CSS: &str = include_str!("../../static/admin.css");

/// Built once: the templates are compiled into the binary, so a broken one
/// fails the test suite, never a running shop.
static ENV: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    for (name, src) in TEMPLATES {
        env.add_template(name, src)
            .expect("admin templates are checked by the test suite");
    }
    env
});

#[derive(Debug, thiserror::Error)]
pub enum PanelError {
    #[error("this page is for the shop owner only")]
    Forbidden,
    #[error("the form expired or was not sent from this panel; reload and try again")]
    Csrf,
    #[error("not found")]
    NotFound,
    /// What the operator should fix, in words of the string table.
    #[error("{}", .0.text("en"))]
    Invalid(Msg),
    #[error("too many attempts; wait {0} s")]
    RateLimited(u64),
    #[error("the upload is larger than 16 MiB")]
    TooLarge,
    #[error("internal error")]
    Internal,
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl From<StoreError> for PanelError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "admin panel store error");
        Self::Internal
    }
}

impl From<ApiError> for PanelError {
    fn from(e: ApiError) -> Self {
        match e.status {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited(e.retry_after.unwrap_or(1)),
            s if s.is_client_error() => Self::Invalid(msg::api(&e)),
            _ => Self::Internal,
        }
    }
}

impl PanelError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden | Self::Csrf => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// Errors are shown in both languages: they are rare, and the extractor
/// that knows the operator's language may be the thing that failed.
impl IntoResponse for PanelError {
    fn into_response(self) -> Response {
        let status = self.status();
        let key = match &self {
            Self::Forbidden => "error_forbidden",
            Self::Csrf => "error_csrf",
            Self::NotFound => "error_not_found",
            Self::Invalid(_) => "error_invalid_request",
            Self::RateLimited(_) => "error_rate_limited",
            Self::TooLarge => "error_payload_too_large",
            Self::Internal => "error_internal_error",
            Self::MethodNotAllowed => "error_method_not_allowed",
        };
        // The detail in both languages too; once when it is data that
        // reads the same in both.
        let (detail_zh, detail_en) = match &self {
            Self::Invalid(m) => {
                let (zh, en) = (m.text("zh"), m.text("en"));
                let en = (en != zh).then_some(en);
                (Some(zh).filter(|d| !d.is_empty()), en)
            }
            _ => (None, None),
        };
        let mut res = render(
            "zh",
            status,
            "admin/error.html",
            json!({"status": status.as_u16(), "zh": i18n::tr("zh", key),
                   "en": i18n::tr("en", key), "detail": detail_zh, "detail_en": detail_en}),
        );
        if let Self::RateLimited(secs) = self {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        res
    }
}

pub type PanelResult<T = Response> = Result<T, PanelError>;

/// The panel's error page for a bare status (crate::html_errors): the
/// router's 404 and 405, an oversized or unreadable form.
pub fn error_page(status: StatusCode) -> Response {
    let error = match status {
        StatusCode::NOT_FOUND => PanelError::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE => PanelError::TooLarge,
        StatusCode::FORBIDDEN => PanelError::Forbidden,
        StatusCode::TOO_MANY_REQUESTS => PanelError::RateLimited(1),
        StatusCode::METHOD_NOT_ALLOWED => PanelError::MethodNotAllowed,
        s if s.is_client_error() => PanelError::Invalid(Msg::Raw(String::new())),
        _ => PanelError::Internal,
    };
    let mut res = error.into_response();
    // The status the router meant, even where the panel has no own variant.
    *res.status_mut() = status;
    res
}

/// Renders `name` with `ctx` plus the language and `tr`. Panel pages are
/// never cached: they show stock, orders and one-time secrets.
pub fn render(
    lang: &'static str,
    status: StatusCode,
    name: &str,
    mut ctx: serde_json::Value,
) -> Response {
    ctx["lang"] = json!(lang);
    let ctx = minijinja::context! {
        tr => Value::from_function(move |key: &str| i18n::tr(lang, key)),
        ..Value::from_serialize(&ctx)
    };
    match ENV.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "admin template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

pub fn add_cookies(res: &mut Response, cookies: &[String]) {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

/// `2026-11-29 18:05` (UTC) for tables.
pub fn time(ms: i64) -> String {
    let s = kami_core::order::rfc3339(ms);
    format!("{} {}", &s[..10], &s[11..16])
}

pub fn time_opt(ms: Option<i64>) -> Option<String> {
    ms.map(time)
}

pub async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        assert_eq!(ENV.templates().count(), TEMPLATES.len());
    }

    #[test]
    fn times_are_minutes_in_utc() {
        assert_eq!(time(0), "1970-01-01 00:00");
    }
}

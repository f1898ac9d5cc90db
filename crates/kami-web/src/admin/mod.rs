//! The admin panel: server-rendered pages under `/admin` for operators
//! signed in with a password (and optionally TOTP). One file per page group;
//! templates in `templates/admin/`, strings in `i18n.rs`. Every action is
//! CSRF-checked and written to the audit log; owner-only pages take the
//! `Owner` extractor, so a staff session cannot reach them.

mod accounts;
mod auth;
mod channels;
mod codes;
mod coupons;
mod dashboard;
mod export;
mod i18n;
mod login;
mod msg;
mod orders;
mod page;
mod products;
mod security;
mod settings;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

pub use auth::{AdminState, LOCK_MS, MAX_ATTEMPTS, SESSION_COOKIE};
pub use page::error_page;

use crate::state::Shared;

/// Card files may be large (API.md: 16 MiB); the rest of the panel posts
/// small forms (1 MiB, like the API).
const IMPORT_BODY_LIMIT: usize = 16 * 1024 * 1024;
const FORM_BODY_LIMIT: usize = 1024 * 1024;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/admin/login", get(login::login_page).post(login::login))
        .route("/admin/logout", post(login::logout))
        .route("/admin", get(dashboard::show))
        .route(
            "/admin/products",
            get(products::list).post(products::create),
        )
        .route("/admin/products/new", get(products::new_form))
        .route("/admin/products/{id}/move", post(products::move_product))
        .route("/admin/categories/{id}/move", post(products::move_category))
        .route(
            "/admin/products/{id}",
            get(products::edit_form).post(products::update),
        )
        .route("/admin/products/{id}/codes", get(codes::list))
        .route(
            "/admin/products/{id}/codes/import",
            post(codes::import).layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT)),
        )
        .route("/admin/products/{id}/codes/export", post(codes::export))
        .route(
            "/admin/products/{id}/codes/{card}/reveal",
            post(codes::reveal),
        )
        .route("/admin/products/{id}/codes/{card}/void", post(codes::void))
        .route("/admin/coupons", get(coupons::list).post(coupons::create))
        .route("/admin/coupons/{id}/disable", post(coupons::disable))
        .route("/admin/coupons/{id}/enable", post(coupons::enable))
        .route("/admin/orders", get(orders::list))
        .route("/admin/orders/export.csv", get(export::orders_csv))
        .route("/admin/orders/{no}", get(orders::detail))
        .route("/admin/orders/{no}/fulfil", post(orders::fulfil))
        .route("/admin/orders/{no}/refund", post(orders::refund))
        .route("/admin/audit", get(accounts::audit_log))
        .route(
            "/admin/staff",
            get(accounts::staff).post(accounts::create_staff),
        )
        .route("/admin/staff/{id}/disable", post(accounts::disable_staff))
        .route("/admin/sessions", get(accounts::sessions))
        .route(
            "/admin/sessions/{id}/revoke",
            post(accounts::revoke_session),
        )
        .route(
            "/admin/keys",
            get(accounts::keys).post(accounts::create_key),
        )
        .route("/admin/keys/{id}/revoke", post(accounts::revoke_key))
        .route("/admin/security", get(security::show))
        .route("/admin/security/totp", post(security::enable))
        .route("/admin/security/totp/disable", post(security::disable))
        .route(
            "/admin/security/recovery-codes",
            post(security::regenerate_recovery_codes),
        )
        .route("/admin/settings", get(settings::show).post(settings::save))
        .route("/admin/channels", get(channels::list))
        .route("/admin/channels/{name}", post(channels::save))
        .route(
            "/admin/channels/{name}/enabled",
            post(channels::set_enabled),
        )
        .route("/admin/channels/{name}/test", post(channels::test))
        .route("/static/admin.css", get(page::css))
        // Outside the import route's own limit, which therefore wins there.
        .layer(DefaultBodyLimit::max(FORM_BODY_LIMIT))
}

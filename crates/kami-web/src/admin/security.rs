//! Turning TOTP on and off for one's own account. The secret is shown once
//! (base32, otpauth:// URI, and a QR code rendered here as SVG), and stored
//! sealed only after the operator proves their app produces valid codes.

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use kami_core::{now_millis, totp};
use serde::Deserialize;
use serde_json::json;

use super::auth::{open_totp, totp_context, Operator};
use super::page::{PanelError, PanelResult};
use crate::state::Shared;

fn unix_now() -> u64 {
    (now_millis() / 1000) as u64
}

/// The setup page for a (new or resubmitted) secret.
fn setup(
    state: &Shared,
    op: &Operator,
    secret: &[u8],
    status: StatusCode,
    error: bool,
) -> PanelResult {
    let b32 = totp::secret_base32(secret).map_err(|_| PanelError::Internal)?;
    let uri = totp::otpauth_uri(secret, &state.shop().shop_name, &op.session.email)
        .map_err(|_| PanelError::Internal)?;
    let qr = crate::qr::svg_data_uri(&uri, 200).ok_or(PanelError::Internal)?;
    Ok(op.render_status(
        status,
        "admin/security.html",
        json!({"nav": "security", "enabled": false, "secret": b32, "uri": uri, "qr": qr, "error": error}),
    ))
}

pub async fn show(State(state): State<Shared>, op: Operator) -> PanelResult {
    let me = state
        .store
        .admin_by_id(op.session.admin_id)
        .await?
        .ok_or(PanelError::NotFound)?;
    if me.totp.is_some() {
        return Ok(op.render(
            "admin/security.html",
            json!({"nav": "security", "enabled": true}),
        ));
    }
    setup(&state, &op, &totp::generate_secret(), StatusCode::OK, false)
}

/// Every field defaults, so a form missing its token is refused as CSRF (403), not as malformed.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EnableForm {
    csrf: String,
    secret: String,
    code: String,
}

pub async fn enable(
    State(state): State<Shared>,
    op: Operator,
    Form(form): Form<EnableForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    let secret = totp::secret_from_base32(&form.secret)
        .ok_or_else(|| PanelError::Invalid("the key is malformed".into()))?;
    if !totp::check(&secret, &form.code, unix_now()) {
        return setup(&state, &op, &secret, StatusCode::UNPROCESSABLE_ENTITY, true);
    }
    let sealed = state.keys.seal(&totp_context(op.session.admin_id), &secret);
    state
        .store
        .set_admin_totp(
            op.session.admin_id,
            Some((&sealed.ciphertext, &sealed.nonce)),
        )
        .await?;
    op.audit(&state, "totp_enabled", &op.session.email, "")
        .await?;
    Ok(Redirect::to("/admin/security").into_response())
}

/// Every field defaults, so a form missing its token is refused as CSRF (403), not as malformed.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DisableForm {
    csrf: String,
    code: String,
}

/// Needs a current code: a hijacked session alone cannot turn TOTP off.
pub async fn disable(
    State(state): State<Shared>,
    op: Operator,
    Form(form): Form<DisableForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    let me = state
        .store
        .admin_by_id(op.session.admin_id)
        .await?
        .ok_or(PanelError::NotFound)?;
    let ok = me
        .totp
        .as_ref()
        .and_then(|s| open_totp(&state, me.id, s))
        .is_some_and(|secret| totp::check(&secret, &form.code, unix_now()));
    if !ok {
        return Ok(op.render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "admin/security.html",
            json!({"nav": "security", "enabled": true, "error": true}),
        ));
    }
    state.store.set_admin_totp(me.id, None).await?;
    op.audit(&state, "totp_disabled", &me.email, "").await?;
    Ok(Redirect::to("/admin/security").into_response())
}

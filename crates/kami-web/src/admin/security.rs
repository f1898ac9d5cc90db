//! Turning TOTP on and off for one's own account. The secret is shown once
//! (base32, otpauth:// URI, and a QR code rendered here as SVG), and stored
//! sealed only after the operator proves their app produces valid codes.
//! Turning it on also issues ten one-time recovery codes, shown once and
//! kept only as hashes; regenerating them (with a current TOTP code)
//! invalidates the old ones.

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use kami_core::{now_millis, recovery, totp};
use serde::Deserialize;
use serde_json::json;

use super::auth::{open_totp, totp_context, Operator};
use super::msg::Msg;
use super::page::{PanelError, PanelResult};
use crate::extract::ClientIp;
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

/// The page of an operator whose TOTP is on: how many recovery codes are
/// left, and the fresh ones when they were just issued (shown this once).
async fn enabled_page(
    state: &Shared,
    op: &Operator,
    status: StatusCode,
    fresh: Option<Vec<String>>,
    error: bool,
) -> PanelResult {
    let left = state
        .store
        .unused_recovery_codes(op.session.admin_id)
        .await?
        .len();
    Ok(op.render_status(
        status,
        "admin/security.html",
        json!({"nav": "security", "enabled": true, "recovery_left": left,
               "recovery_codes": fresh, "error": error}),
    ))
}

/// Issues a new set of recovery codes (replacing any old ones) and returns
/// them for showing once.
async fn issue_recovery_codes(state: &Shared, op: &Operator) -> PanelResult<Vec<String>> {
    let codes = recovery::generate();
    let hashes: Vec<Vec<u8>> = codes.iter().filter_map(|c| recovery::hash(c)).collect();
    state
        .store
        .replace_recovery_codes(op.session.admin_id, &hashes, now_millis())
        .await?;
    Ok(codes)
}

pub async fn show(State(state): State<Shared>, op: Operator) -> PanelResult {
    let me = signed_in(&state, &op).await?;
    if me.totp.is_some() {
        return enabled_page(&state, &op, StatusCode::OK, None, false).await;
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
    // Already on: a new key would void the phone's and the recovery codes
    // with no current code, which turning it off and new recovery codes
    // both ask for; a hijacked session could lock the operator out.
    let me = signed_in(&state, &op).await?;
    if me.totp.is_some() {
        return Err(PanelError::Invalid(Msg::new("err_totp_already_on")));
    }
    let secret = totp::secret_from_base32(&form.secret)
        .ok_or_else(|| PanelError::Invalid(Msg::new("err_totp_key_malformed")))?;
    let Some(step) = totp::matching_step(&secret, &form.code, unix_now()) else {
        return setup(&state, &op, &secret, StatusCode::UNPROCESSABLE_ENTITY, true);
    };
    // The code that turns TOTP on is spent before the key is stored, so it
    // can never sign in. (Refused only when a later step was spent with an
    // old key: this code is spent then too.)
    state
        .store
        .use_totp_step(op.session.admin_id, step as i64)
        .await?;
    let sealed = state.keys.seal(&totp_context(op.session.admin_id), &secret);
    state
        .store
        .set_admin_totp(
            op.session.admin_id,
            Some((&sealed.ciphertext, &sealed.nonce)),
        )
        .await?;
    let codes = issue_recovery_codes(&state, &op).await?;
    op.audit(
        &state,
        "totp_enabled",
        &op.session.email,
        &format!("{} recovery codes issued", codes.len()),
    )
    .await?;
    enabled_page(&state, &op, StatusCode::OK, Some(codes), false).await
}

/// Every field defaults, so a form missing its token is refused as CSRF (403), not as malformed.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DisableForm {
    csrf: String,
    code: String,
}

/// The signed-in operator's account.
async fn signed_in(state: &Shared, op: &Operator) -> PanelResult<kami_store::Admin> {
    state
        .store
        .admin_by_id(op.session.admin_id)
        .await?
        .ok_or(PanelError::NotFound)
}

/// Whether `code` is a current TOTP code of the signed-in operator, not
/// used before; accepting it spends its time step, as signing in does, so
/// a code seen over a shoulder (or the one that just signed in) cannot turn
/// TOTP off or issue recovery codes. Each try draws on the client's sign-in
/// attempts (ten, then one every six seconds): a session alone must not be
/// able to guess its way to turning TOTP off at the admin API's rate.
async fn current_code_ok(
    state: &Shared,
    op: &Operator,
    ip: std::net::IpAddr,
    code: &str,
) -> PanelResult<bool> {
    state
        .limits
        .check_login(ip)
        .await
        .map_err(PanelError::RateLimited)?;
    let me = signed_in(state, op).await?;
    let step = me
        .totp
        .as_ref()
        .and_then(|s| open_totp(state, me.id, s))
        .and_then(|secret| totp::matching_step(&secret, code, unix_now()));
    match step {
        Some(step) => Ok(state.store.use_totp_step(me.id, step as i64).await?),
        None => Ok(false),
    }
}

/// Needs a current code: a hijacked session alone cannot turn TOTP off.
pub async fn disable(
    State(state): State<Shared>,
    op: Operator,
    ClientIp(ip): ClientIp,
    Form(form): Form<DisableForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    if !current_code_ok(&state, &op, ip, &form.code).await? {
        return enabled_page(&state, &op, StatusCode::UNPROCESSABLE_ENTITY, None, true).await;
    }
    let id = op.session.admin_id;
    state.store.set_admin_totp(id, None).await?;
    state
        .store
        .replace_recovery_codes(id, &[], now_millis())
        .await?;
    op.audit(&state, "totp_disabled", &op.session.email, "")
        .await?;
    Ok(Redirect::to("/admin/security").into_response())
}

/// Needs a current code too: with new recovery codes a hijacked session
/// could sign in again later without the phone.
pub async fn regenerate_recovery_codes(
    State(state): State<Shared>,
    op: Operator,
    ClientIp(ip): ClientIp,
    Form(form): Form<DisableForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    if !current_code_ok(&state, &op, ip, &form.code).await? {
        return enabled_page(&state, &op, StatusCode::UNPROCESSABLE_ENTITY, None, true).await;
    }
    let codes = issue_recovery_codes(&state, &op).await?;
    op.audit(
        &state,
        "recovery_codes_regenerated",
        &op.session.email,
        &format!(
            "{} recovery codes issued; the old ones no longer work",
            codes.len()
        ),
    )
    .await?;
    enabled_page(&state, &op, StatusCode::OK, Some(codes), false).await
}

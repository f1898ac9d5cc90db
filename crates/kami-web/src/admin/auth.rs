//! Who is at the panel: login with lockout and per-IP rate limit, optional
//! TOTP, server-side sessions in a `kami_admin` cookie, per-session CSRF
//! tokens, and the `Operator` / `Owner` extractors every page takes.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use kami_core::now_millis;
use kami_core::secrets::{ct_eq, random_token, token_hash, Sealed};
use kami_store::{Admin, NewAudit, NewSession, Role, Session};
use serde::Deserialize;
use serde_json::json;

use super::page::{self, PanelError, PanelResult};
use crate::extract::ClientIp;
use crate::services::admins::verify_off_thread;
use crate::shop::cookies;
use crate::state::Shared;

pub const SESSION_COOKIE: &str = "kami_admin";
/// Double-submit token of the login form, which has no session yet.
const LOGIN_CSRF_COOKIE: &str = "kami_admin_login";
const SESSION_MS: i64 = 12 * 3600 * 1000;
/// Failed logins before the account locks, and for how long.
pub const MAX_ATTEMPTS: i64 = 5;
pub const LOCK_MS: i64 = 15 * 60 * 1000;

/// Panel-wide state kept in `AppState`: the login rate limiter.
pub struct AdminState {
    enabled: bool,
    logins: DefaultKeyedRateLimiter<IpAddr>,
}

impl AdminState {
    /// Ten login attempts per IP, then one every six seconds: enough for a
    /// person with a typo, far too few for password guessing.
    pub fn new(rate_limits: bool) -> Self {
        let quota = Quota::with_period(Duration::from_secs(6))
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(10).expect("non-zero"));
        Self {
            enabled: rate_limits,
            logins: RateLimiter::keyed(quota),
        }
    }

    fn check_login(&self, ip: IpAddr) -> PanelResult<()> {
        if !self.enabled {
            return Ok(());
        }
        self.logins.check_key(&ip).map_err(|not_until| {
            metrics::counter!("kami_rate_limited_total", "class" => "admin_login").increment(1);
            PanelError::RateLimited(
                not_until
                    .wait_time_from(DefaultClock::default().now())
                    .as_secs()
                    + 1,
            )
        })
    }

    pub fn prune(&self) {
        self.logins.retain_recent();
    }
}

/// The panel's language: `?lang=` (remembered in the storefront's cookie),
/// else that cookie, else Chinese.
pub fn language(headers: &HeaderMap, query: Option<&str>) -> (&'static str, Option<String>) {
    let asked = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("lang="));
    match asked {
        Some("en") => (
            "en",
            Some(cookies::set(cookies::LANG, "en", 365 * 86400, "Lax", false)),
        ),
        Some("zh") => (
            "zh",
            Some(cookies::set(cookies::LANG, "zh", 365 * 86400, "Lax", false)),
        ),
        _ => match cookies::get(headers, cookies::LANG) {
            Some("en") => ("en", None),
            _ => ("zh", None),
        },
    }
}

fn session_cookie(state: &Shared, value: &str, max_age_secs: i64) -> String {
    // Path=/admin: the storefront never sees it. Strict: no cross-site request
    // ever carries it, which is CSRF defence in depth.
    format!(
        "{SESSION_COOKIE}={value}; Path=/admin; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{}",
        if secure(state) { "; Secure" } else { "" }
    )
}

fn secure(state: &Shared) -> bool {
    state.settings.public_url.starts_with("https://")
}

/// A signed-in operator, from a live server-side session.
pub struct Operator {
    pub session: Session,
    pub lang: &'static str,
    pub ip: IpAddr,
    lang_cookie: Option<String>,
}

impl FromRequestParts<Shared> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let (lang, lang_cookie) = language(&parts.headers, parts.uri.query());
        let to_login = || Redirect::to("/admin/login").into_response();
        let Some(token) = cookies::get(&parts.headers, SESSION_COOKIE).filter(|t| t.len() <= 64)
        else {
            return Err(to_login());
        };
        let now = now_millis();
        let session = state
            .store
            .session_by_id(&token_hash(token), now)
            .await
            .map_err(|e| PanelError::from(e).into_response())?
            .ok_or_else(to_login)?;
        // At most one write a minute per session, not one per page view.
        if now - session.last_seen_at > 60_000 {
            if let Err(e) = state.store.touch_session(&session.id, now).await {
                tracing::warn!(error = %e, "could not refresh an admin session");
            }
        }
        Ok(Self {
            session,
            lang,
            ip,
            lang_cookie,
        })
    }
}

/// An operator with the owner role; staff get 403.
pub struct Owner(pub Operator);

impl FromRequestParts<Shared> for Owner {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let op = Operator::from_request_parts(parts, state).await?;
        if op.session.role != Role::Owner {
            return Err(PanelError::Forbidden.into_response());
        }
        Ok(Self(op))
    }
}

impl Operator {
    pub fn is_owner(&self) -> bool {
        self.session.role == Role::Owner
    }

    /// The form's token against this session's, in constant time.
    pub fn check_csrf(&self, submitted: &str) -> PanelResult<()> {
        if ct_eq(self.session.csrf.as_bytes(), submitted.as_bytes()) {
            Ok(())
        } else {
            Err(PanelError::Csrf)
        }
    }

    pub fn render(&self, name: &str, ctx: serde_json::Value) -> Response {
        self.render_status(StatusCode::OK, name, ctx)
    }

    pub fn render_status(
        &self,
        status: StatusCode,
        name: &str,
        mut ctx: serde_json::Value,
    ) -> Response {
        ctx["csrf"] = json!(self.session.csrf);
        ctx["me"] = json!({"email": self.session.email, "role": self.session.role.as_str(),
                           "owner": self.is_owner()});
        let mut res = page::render(self.lang, status, name, ctx);
        if let Some(c) = &self.lang_cookie {
            page::add_cookies(&mut res, std::slice::from_ref(c));
        }
        res
    }

    /// Writes the audit entry for an action of this operator. Callers that
    /// reveal secrets write it first and stop if it cannot be written.
    pub async fn audit(
        &self,
        state: &Shared,
        action: &str,
        target: &str,
        detail: &str,
    ) -> PanelResult<()> {
        audit(
            state,
            Some(self.session.admin_id),
            self.ip,
            action,
            target,
            detail,
        )
        .await
    }
}

pub async fn audit(
    state: &Shared,
    admin_id: Option<i64>,
    ip: IpAddr,
    action: &str,
    target: &str,
    detail: &str,
) -> PanelResult<()> {
    state
        .store
        .insert_audit(&NewAudit {
            admin_id,
            action: action.into(),
            target: target.into(),
            detail: detail.into(),
            ip: Some(ip.to_string()),
            at: now_millis(),
        })
        .await?;
    Ok(())
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    #[serde(default)]
    lang: Option<String>,
}

pub async fn login_page(headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let query = q.lang.as_deref().map(|l| format!("lang={l}"));
    let (lang, lang_cookie) = language(&headers, query.as_deref());
    login_form(lang, lang_cookie, &headers, StatusCode::OK, None, "")
}

fn login_form(
    lang: &'static str,
    lang_cookie: Option<String>,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
    email: &str,
) -> Response {
    let mut set = Vec::new();
    let csrf = match cookies::get(headers, LOGIN_CSRF_COOKIE).filter(|t| t.len() >= 20) {
        Some(t) => t.to_string(),
        None => {
            let t = random_token("");
            set.push(format!(
                "{LOGIN_CSRF_COOKIE}={t}; Path=/admin; Max-Age=3600; HttpOnly; SameSite=Strict"
            ));
            t
        }
    };
    set.extend(lang_cookie);
    let mut res = page::render(
        lang,
        status,
        "admin/login.html",
        json!({"csrf": csrf, "error": error, "email": email}),
    );
    page::add_cookies(&mut res, &set);
    res
}

/// Every field defaults, so a form missing its token is refused as CSRF (403), not as malformed.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    csrf: String,
    email: String,
    password: String,
    #[serde(default)]
    totp: String,
}

/// Why a login failed, for the audit log only: the person at the form sees
/// one message for all of them, so the form reveals no account.
enum Refusal {
    UnknownEmail,
    Disabled,
    Locked,
    WrongPassword,
    WrongCode,
}

impl Refusal {
    fn as_str(&self) -> &'static str {
        match self {
            Self::UnknownEmail => "unknown email",
            Self::Disabled => "account disabled",
            Self::Locked => "account locked",
            Self::WrongPassword => "wrong password",
            Self::WrongCode => "wrong TOTP code",
        }
    }
}

pub async fn login(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let (lang, _) = language(&headers, None);
    let cookie_ok = cookies::get(&headers, LOGIN_CSRF_COOKIE)
        .is_some_and(|c| ct_eq(c.as_bytes(), form.csrf.as_bytes()));
    if !cookie_ok {
        return PanelError::Csrf.into_response();
    }
    if let Err(e) = state.admin.check_login(ip) {
        return e.into_response();
    }
    let email = form.email.trim().to_lowercase();
    let result = match state.store.admin_by_email(&email).await {
        Ok(a) => check_login(&state, a, &form).await,
        Err(e) => return PanelError::from(e).into_response(),
    };
    match result {
        Ok(admin) => match start_session(&state, &admin, ip, &headers).await {
            Ok(res) => res,
            Err(e) => e.into_response(),
        },
        Err((admin_id, why)) => {
            tracing::info!(reason = why.as_str(), "admin login refused");
            if let Err(e) = audit(&state, admin_id, ip, "login_failed", &email, why.as_str()).await
            {
                return e.into_response();
            }
            let message = super::i18n::tr(lang, "login_failed");
            login_form(
                lang,
                None,
                &headers,
                StatusCode::UNAUTHORIZED,
                Some(message),
                &email,
            )
        }
    }
}

/// Every path verifies one Argon2 hash (a dummy one for unknown emails), so
/// the answer takes as long whether or not the account exists.
async fn check_login(
    state: &Shared,
    admin: Option<Admin>,
    form: &LoginForm,
) -> Result<Admin, (Option<i64>, Refusal)> {
    let dummy = || kami_core::password::dummy_hash().to_string();
    let Some(admin) = admin else {
        verify_off_thread(form.password.clone(), dummy()).await;
        return Err((None, Refusal::UnknownEmail));
    };
    let password_ok = verify_off_thread(form.password.clone(), admin.password_hash.clone()).await;
    let now = now_millis();
    if admin.disabled {
        return Err((Some(admin.id), Refusal::Disabled));
    }
    if admin.locked_until.is_some_and(|t| t > now) {
        return Err((Some(admin.id), Refusal::Locked));
    }
    let code_ok = match &admin.totp {
        None => true,
        Some(sealed) => match open_totp(state, admin.id, sealed) {
            Some(secret) => kami_core::totp::check(&secret, &form.totp, (now / 1000) as u64),
            None => false,
        },
    };
    if password_ok && code_ok {
        return Ok(admin);
    }
    let fail = state
        .store
        .record_login_failure(admin.id, now, MAX_ATTEMPTS, LOCK_MS)
        .await;
    if let Err(e) = fail {
        tracing::error!(error = %e, "could not count a failed login");
    }
    let why = if password_ok {
        Refusal::WrongCode
    } else {
        Refusal::WrongPassword
    };
    Err((Some(admin.id), why))
}

pub fn totp_context(admin_id: i64) -> String {
    format!("totp:{admin_id}")
}

pub fn open_totp(state: &Shared, admin_id: i64, sealed: &(Vec<u8>, Vec<u8>)) -> Option<Vec<u8>> {
    state
        .keys
        .open(
            &totp_context(admin_id),
            &Sealed {
                ciphertext: sealed.0.clone(),
                nonce: sealed.1.clone(),
                key_id: kami_core::secrets::CURRENT_KEY_ID,
            },
        )
        .ok()
}

async fn start_session(
    state: &Shared,
    admin: &Admin,
    ip: IpAddr,
    headers: &HeaderMap,
) -> PanelResult<Response> {
    state.store.record_login_success(admin.id).await?;
    let token = random_token("");
    let now = now_millis();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(200).collect());
    state
        .store
        .create_session(&NewSession {
            id: token_hash(&token),
            admin_id: admin.id,
            csrf: random_token(""),
            ip: Some(ip.to_string()),
            user_agent,
            created_at: now,
            expires_at: now + SESSION_MS,
        })
        .await?;
    audit(state, Some(admin.id), ip, "login", &admin.email, "").await?;
    let mut res = Redirect::to("/admin").into_response();
    page::add_cookies(
        &mut res,
        &[
            session_cookie(state, &token, SESSION_MS / 1000),
            format!("{LOGIN_CSRF_COOKIE}=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Strict"),
        ],
    );
    Ok(res)
}

/// Every field defaults, so a form missing its token is refused as CSRF (403), not as malformed.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CsrfForm {
    pub csrf: String,
}

pub async fn logout(
    State(state): State<Shared>,
    op: Operator,
    Form(form): Form<CsrfForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    state.store.revoke_session(&op.session.id).await?;
    op.audit(&state, "logout", &op.session.email, "").await?;
    let mut res = Redirect::to("/admin/login").into_response();
    page::add_cookies(&mut res, &[session_cookie(&state, "", 0)]);
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_limited_per_ip_unless_limits_are_off() {
        let limits = AdminState::new(true);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            limits.check_login(ip).unwrap();
        }
        assert!(matches!(limits.check_login(ip), Err(PanelError::RateLimited(s)) if s >= 1));
        limits.check_login("192.0.2.2".parse().unwrap()).unwrap();
        let off = AdminState::new(false);
        for _ in 0..100 {
            off.check_login(ip).unwrap();
        }
    }

    #[test]
    fn language_comes_from_the_query_then_the_cookie_then_chinese() {
        let mut h = HeaderMap::new();
        assert_eq!(language(&h, None).0, "zh");
        assert_eq!(language(&h, Some("a=1&lang=en")).0, "en");
        h.insert(header::COOKIE, "kami_lang=en".parse().unwrap());
        assert_eq!(language(&h, None), ("en", None));
    }
}

//! Signing in and out: the login form (its own double-submit CSRF cookie,
//! since there is no session yet), the per-IP rate limit, lockout, TOTP, and
//! the session cookie that a successful login sets.

use std::net::IpAddr;

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use kami_core::now_millis;
use kami_core::secrets::{random_token, token_hash};
use kami_store::{Admin, NewSession};
use serde::Deserialize;
use serde_json::json;

use super::auth::{
    admin_cookie, audit, language, open_totp, safe_next, secure, CsrfForm, Operator, DEVICE_COOKIE,
    DEVICE_MS, LOCK_MS, LOGIN_CSRF_COOKIE, MAX_ATTEMPTS, SESSION_COOKIE, SESSION_MS,
};
use super::page::{self, PanelError, PanelResult};
use crate::extract::{ClientIp, ReadLimited};
use crate::services::admins::{verify_dummy_off_thread, verify_off_thread};
use crate::shop::cookies;
use crate::state::Shared;

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    #[serde(default)]
    lang: Option<String>,
    /// The panel page to go back to after signing in (`auth::login_redirect`).
    #[serde(default)]
    next: Option<String>,
}

pub async fn login_page(
    State(state): State<Shared>,
    _: ReadLimited,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let query = q.lang.as_deref().map(|l| format!("lang={l}"));
    let (lang, lang_cookie) = language(&headers, query.as_deref(), secure(&state));
    let next = q.next.as_deref().and_then(safe_next).unwrap_or_default();
    login_form(
        &state,
        (lang, lang_cookie),
        &headers,
        StatusCode::OK,
        Shown {
            error: None,
            email: "",
            next,
        },
    )
}

/// What the login form shows again: the refusal, the email typed, and the
/// page to go back to after signing in.
struct Shown<'a> {
    error: Option<&'a str>,
    email: &'a str,
    next: &'a str,
}

/// The second argument is the language and the cookie that remembers a new choice.
fn login_form(
    state: &Shared,
    (lang, lang_cookie): (&'static str, Option<String>),
    headers: &HeaderMap,
    status: StatusCode,
    shown: Shown<'_>,
) -> Response {
    let Shown { error, email, next } = shown;
    let mut set = Vec::new();
    let csrf = match cookies::form_token(headers, LOGIN_CSRF_COOKIE) {
        Some(t) => t.to_string(),
        None => {
            let t = random_token("");
            set.push(admin_cookie(state, LOGIN_CSRF_COOKIE, &t, 3600));
            t
        }
    };
    set.extend(lang_cookie);
    let mut res = page::render(
        lang,
        status,
        "admin/login.html",
        json!({
            "csrf": csrf,
            "error": error,
            "email": email,
            "next": next,
            "next_query": form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>(),
        }),
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
    #[serde(default)]
    next: String,
}

/// Why a login failed, for the audit log only: the person at the form sees
/// one message for all of them, so the form reveals no account.
enum Refusal {
    UnknownEmail,
    Disabled,
    Locked,
    WrongPassword,
    WrongCode,
    WrongRecoveryCode,
}

impl Refusal {
    fn as_str(&self) -> &'static str {
        match self {
            Self::UnknownEmail => "unknown email",
            Self::Disabled => "account disabled",
            Self::Locked => "account locked",
            Self::WrongPassword => "wrong password",
            Self::WrongCode => "wrong TOTP code",
            Self::WrongRecoveryCode => "wrong or used recovery code",
        }
    }
}

pub async fn login(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let (lang, _) = language(&headers, None, false);
    if !cookies::form_token_ok(&headers, LOGIN_CSRF_COOKIE, &form.csrf) {
        return PanelError::Csrf.into_response();
    }
    if let Err(secs) = state.limits.check_login(ip).await {
        return PanelError::RateLimited(secs).into_response();
    }
    // Bounded: whatever is typed here is kept in the audit log.
    let email: String = form.email.trim().to_lowercase().chars().take(254).collect();
    let result = match state.store.admin_by_email(&email).await {
        Ok(a) => check_login(&state, a, &form, &headers).await,
        Err(e) => return PanelError::from(e).into_response(),
    };
    match result {
        Ok((admin, second)) => {
            if let SecondFactor::RecoveryCode { left } = second {
                let detail = format!("{left} recovery codes left");
                if let Err(e) = audit(
                    &state,
                    Some(admin.id),
                    ip,
                    "recovery_code_used",
                    &admin.email,
                    &detail,
                )
                .await
                {
                    return e.into_response();
                }
            }
            let next = safe_next(&form.next).unwrap_or("/admin");
            match start_session(&state, &admin, ip, &headers, next).await {
                Ok(res) => res,
                Err(e) => e.into_response(),
            }
        }
        Err((admin_id, why)) => {
            tracing::info!(reason = why.as_str(), "admin login refused");
            if let Err(e) = audit(&state, admin_id, ip, "login_failed", &email, why.as_str()).await
            {
                return e.into_response();
            }
            let message = super::i18n::tr(lang, "login_failed");
            login_form(
                &state,
                (lang, None),
                &headers,
                StatusCode::UNAUTHORIZED,
                Shown {
                    error: Some(message),
                    email: &email,
                    next: safe_next(&form.next).unwrap_or_default(),
                },
            )
        }
    }
}

/// What proved the second factor of a successful login.
enum SecondFactor {
    /// No TOTP on the account, or a TOTP code.
    None,
    Totp,
    /// A recovery code, now spent; `left` are still unused.
    RecoveryCode {
        left: usize,
    },
}

/// Checks a recovery code typed into the TOTP field and spends it. Only
/// called with the right password, so guessing passwords cannot burn codes.
async fn spend_recovery_code(state: &Shared, admin_id: i64, typed: &str) -> Option<usize> {
    let codes = state.store.unused_recovery_codes(admin_id).await.ok()?;
    let hashes: Vec<&[u8]> = codes.iter().map(|c| c.code_hash.as_slice()).collect();
    let i = kami_core::recovery::find(&hashes, typed)?;
    let spent = state
        .store
        .use_recovery_code(codes[i].id, now_millis())
        .await
        .unwrap_or(false);
    spent.then(|| codes.len() - 1)
}

/// Every path verifies one Argon2 hash (a dummy one for unknown emails), so
/// the answer takes as long whether or not the account exists.
///
/// Five failures lock the account for a quarter of an hour, except from a
/// browser the operator has signed in from before (its `DEVICE_COOKIE`):
/// with only the lock, anyone who knew the owner's email could keep them
/// out for ever at the login rate limit's pace (a security audit did), and
/// Kami's generated passwords are long past guessing at that pace anyway.
/// Failures from such a browser do not count towards the lock either.
async fn check_login(
    state: &Shared,
    admin: Option<Admin>,
    form: &LoginForm,
    headers: &HeaderMap,
) -> Result<(Admin, SecondFactor), (Option<i64>, Refusal)> {
    let Some(admin) = admin else {
        verify_dummy_off_thread(form.password.clone()).await;
        return Err((None, Refusal::UnknownEmail));
    };
    let password_ok = verify_off_thread(form.password.clone(), admin.password_hash.clone()).await;
    let now = now_millis();
    if admin.disabled {
        return Err((Some(admin.id), Refusal::Disabled));
    }
    let known_device = cookies::get(headers, DEVICE_COOKIE).is_some_and(|mark| {
        let expected = state.keys.admin_device_mark(admin.id, &admin.password_hash);
        kami_core::secrets::ct_eq(mark.as_bytes(), expected.as_bytes())
    });
    if admin.locked_until.is_some_and(|t| t > now) && !known_device {
        return Err((Some(admin.id), Refusal::Locked));
    }
    // The TOTP field takes either a 6-digit code or a recovery code; their
    // shapes never overlap.
    let recovery = admin.totp.is_some() && kami_core::recovery::normalise(&form.totp).is_some();
    let step = match &admin.totp {
        Some(sealed) if !recovery => open_totp(state, admin.id, sealed).and_then(|secret| {
            kami_core::totp::matching_step(&secret, &form.totp, (now / 1000) as u64)
        }),
        _ => None,
    };
    // The step (or recovery code) is spent only with the right password, so
    // guessing passwords cannot burn the owner's current code.
    let second = match (&admin.totp, step) {
        (None, _) => Some(SecondFactor::None),
        (Some(_), _) if !password_ok => None,
        (Some(_), _) if recovery => spend_recovery_code(state, admin.id, &form.totp)
            .await
            .map(|left| SecondFactor::RecoveryCode { left }),
        (Some(_), None) => None,
        (Some(_), Some(step)) => state
            .store
            .use_totp_step(admin.id, step as i64)
            .await
            .unwrap_or(false)
            .then_some(SecondFactor::Totp),
    };
    if let (true, Some(second)) = (password_ok, second) {
        return Ok((admin, second));
    }
    if !known_device {
        let fail = state
            .store
            .record_login_failure(admin.id, now, MAX_ATTEMPTS, LOCK_MS)
            .await;
        if let Err(e) = fail {
            tracing::error!(error = %e, "could not count a failed login");
        }
    }
    let why = if password_ok && recovery {
        Refusal::WrongRecoveryCode
    } else if password_ok {
        Refusal::WrongCode
    } else {
        Refusal::WrongPassword
    };
    Err((Some(admin.id), why))
}

async fn start_session(
    state: &Shared,
    admin: &Admin,
    ip: IpAddr,
    headers: &HeaderMap,
    next: &str,
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
    let mut res = Redirect::to(next).into_response();
    page::add_cookies(
        &mut res,
        &[
            admin_cookie(state, SESSION_COOKIE, &token, SESSION_MS / 1000),
            admin_cookie(state, LOGIN_CSRF_COOKIE, "", 0),
            admin_cookie(
                state,
                DEVICE_COOKIE,
                &state.keys.admin_device_mark(admin.id, &admin.password_hash),
                DEVICE_MS / 1000,
            ),
        ],
    );
    Ok(res)
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
    page::add_cookies(&mut res, &[admin_cookie(&state, SESSION_COOKIE, "", 0)]);
    Ok(res)
}

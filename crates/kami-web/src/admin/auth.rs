//! Who is at the panel: server-side sessions in a `kami_admin` cookie,
//! per-session CSRF tokens, the `Operator` / `Owner` extractors every page
//! takes and the audit helper (`login.rs` signs in; its rate limit is in
//! `rate_limit.rs`).

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use kami_core::now_millis;
use kami_core::secrets::{ct_eq, token_hash, Sealed};
use kami_store::{NewAudit, Role, Session};
use serde::Deserialize;
use serde_json::json;

use super::page::{self, PanelError, PanelResult};
use crate::extract::ClientIp;
use crate::rate_limit::Class;
use crate::shop::cookies;
use crate::state::Shared;

pub const SESSION_COOKIE: &str = "kami_admin";
/// The mark of a browser an operator signed in from (`Keys::admin_device_mark`):
/// an account locked by failed logins still lets it in (`login::check_login`).
pub const DEVICE_COOKIE: &str = "kami_device";
/// A year: how long a browser stays known without signing in again.
pub const DEVICE_MS: i64 = 365 * 24 * 3600 * 1000;
/// Double-submit token of the login form, which has no session yet.
pub(super) const LOGIN_CSRF_COOKIE: &str = "kami_admin_login";
pub(super) const SESSION_MS: i64 = 12 * 3600 * 1000;
/// A session unused this long ends, whatever its expiry.
const IDLE_MS: i64 = 2 * 3600 * 1000;
/// Failed logins before the account locks, and for how long.
pub const MAX_ATTEMPTS: i64 = 5;
pub const LOCK_MS: i64 = 15 * 60 * 1000;

/// Panel-wide state kept in `AppState`. The login rate limiter is one of
/// the shop's rate limits (`RateLimits::check_login`), shared through Redis.
pub struct AdminState;

impl AdminState {
    /// Starts making the dummy password hash in the background.
    pub fn start() -> Self {
        // The dummy hash is made on first use; making it now keeps that
        // one-off cost out of the first login for an unknown email.
        std::thread::spawn(|| {
            kami_core::password::dummy_hash();
        });
        Self
    }
}

/// The panel's language: `?lang=` (remembered in the storefront's cookie),
/// else that cookie, else the browser's `Accept-Language` (as the
/// storefront reads it), else Chinese.
pub fn language(
    headers: &HeaderMap,
    query: Option<&str>,
    secure: bool,
) -> (&'static str, Option<String>) {
    let asked = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("lang="));
    match asked {
        Some(l @ ("en" | "zh")) => (
            if l == "en" { "en" } else { "zh" },
            Some(cookies::set(cookies::LANG, l, 365 * 86400, "Lax", secure)),
        ),
        _ => match cookies::get(headers, cookies::LANG) {
            Some("en") => ("en", None),
            Some("zh") => ("zh", None),
            _ => (crate::shop::accept_language(headers), None),
        },
    }
}

/// Where a page the operator was sent away from (a deep link, a bookmark,
/// an expired session) is remembered: the login form carries it and a
/// successful login goes back there. Only panel pages qualify, so the login
/// can never be made to redirect off the shop (`safe_next`).
pub(super) fn login_redirect(back_to: Option<&str>) -> Response {
    match back_to.and_then(safe_next).filter(|p| *p != "/admin") {
        Some(path) => Redirect::to(&format!(
            "/admin/login?next={}",
            form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
        ))
        .into_response(),
        None => Redirect::to("/admin/login").into_response(),
    }
}

/// `next` when it is a panel page of this shop: `/admin` or under it, in
/// visible ASCII (a `Location` header takes nothing else), not the login or
/// logout, and of a sane length. Its path has no empty segment, no dot and
/// no `%`: browsers resolve `/admin/../x` and `/admin/%2e%2e/x` to `/x`, and
/// a dotted last segment is a download (`export.csv`), which would leave the
/// operator looking at the login form. Anything else — another host,
/// `//evil`, a backslash some browsers read as a slash — is ignored.
pub(super) fn safe_next(next: &str) -> Option<&str> {
    let path = next.split_once(['?', '#']).map_or(next, |(p, _)| p);
    let mut segments = path.split('/');
    let panel = segments.next() == Some("") && segments.next() == Some("admin");
    let rest: Vec<&str> = segments.collect();
    let plain = rest
        .iter()
        .all(|seg| !seg.is_empty() && !seg.contains(['.', '%']));
    let door = matches!(rest.first(), Some(&"login" | &"logout"));
    let clean = next.len() <= 2048 && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    (panel && plain && !door && clean).then_some(next)
}

/// A panel cookie. Path=/admin: the storefront never sees it. Strict: no
/// cross-site request ever carries it, which is CSRF defence in depth.
pub(super) fn admin_cookie(state: &Shared, name: &str, value: &str, max_age_secs: i64) -> String {
    format!(
        "{name}={value}; Path=/admin; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{}",
        if secure(state) { "; Secure" } else { "" }
    )
}

pub(super) fn secure(state: &Shared) -> bool {
    state.settings.served_over_https()
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
        state
            .limits
            .check_ip(Class::Admin, ip)
            .await
            .map_err(|e| PanelError::from(e).into_response())?;
        let (lang, lang_cookie) = language(&parts.headers, parts.uri.query(), secure(state));
        let back_to = matches!(
            parts.method,
            axum::http::Method::GET | axum::http::Method::HEAD
        )
        .then(|| parts.uri.path_and_query().map(|pq| pq.as_str()))
        .flatten();
        let to_login = || login_redirect(back_to);
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
        if now - session.last_seen_at > IDLE_MS {
            if let Err(e) = state.store.revoke_session(&session.id).await {
                tracing::warn!(error = %e, "could not end an idle admin session");
            }
            return Err(to_login());
        }
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
pub fn totp_context(admin_id: i64) -> String {
    kami_core::secrets::context::totp(admin_id)
}

pub fn open_totp(state: &Shared, admin_id: i64, sealed: &(Vec<u8>, Vec<u8>)) -> Option<Vec<u8>> {
    state
        .keys
        .open(
            &totp_context(admin_id),
            &Sealed {
                ciphertext: sealed.0.clone(),
                nonce: sealed.1.clone(),
                key_id: state.keys.key_id(),
            },
        )
        .ok()
}
/// Every field defaults, so a form missing its token is refused as CSRF (403), not as malformed.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CsrfForm {
    pub csrf: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    #[test]
    fn language_comes_from_the_query_then_the_cookie_then_chinese() {
        let mut h = HeaderMap::new();
        assert_eq!(language(&h, None, false).0, "zh");
        assert_eq!(language(&h, Some("a=1&lang=en"), false).0, "en");
        assert!(language(&h, Some("lang=zh"), true)
            .1
            .unwrap()
            .contains("Secure"));
        h.insert(header::COOKIE, "kami_lang=en".parse().unwrap());
        assert_eq!(language(&h, None, false), ("en", None));
    }

    #[test]
    fn the_browser_language_counts_only_without_a_choice() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_LANGUAGE, "en-US,en;q=0.9".parse().unwrap());
        assert_eq!(language(&h, None, false), ("en", None));
        // `?lang=` and the remembered choice win over the browser.
        assert_eq!(language(&h, Some("lang=zh"), false).0, "zh");
        h.insert(header::COOKIE, "kami_lang=zh".parse().unwrap());
        assert_eq!(language(&h, None, false), ("zh", None));
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_LANGUAGE,
            "zh-CN,zh;q=0.9,en;q=0.8".parse().unwrap(),
        );
        assert_eq!(language(&h, None, false).0, "zh");
        h.insert(header::COOKIE, "kami_lang=en".parse().unwrap());
        assert_eq!(language(&h, None, false).0, "en");
        h.insert(header::ACCEPT_LANGUAGE, "fr-FR".parse().unwrap());
        h.remove(header::COOKIE);
        assert_eq!(language(&h, None, false).0, "zh");
    }
}

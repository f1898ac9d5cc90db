//! Owner-only account pages: staff (create, disable), live sessions
//! (revoke), the audit log, and admin API keys.

use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use kami_core::now_millis;
use kami_store::Role;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{CsrfForm, Owner};
use super::i18n;
use super::msg::{self, Msg};
use super::page::{time, time_opt, PanelError, PanelResult};
use crate::scopes::{Scope, ScopeError, Scopes};
use crate::services::admins::{create_admin, create_api_key, AdminError};
use crate::state::Shared;

async fn staff_page(
    state: &Shared,
    op: &super::auth::Operator,
    created: Option<Value>,
    error: Option<Msg>,
) -> PanelResult {
    let error = error.map(|m| m.text(op.lang));
    let now = now_millis();
    let admins: Vec<Value> = state
        .store
        .list_admins()
        .await?
        .iter()
        .map(|a| {
            json!({"id": a.id, "email": a.email, "role": a.role.as_str(), "disabled": a.disabled,
                   "locked": a.locked_until.is_some_and(|t| t > now), "totp": a.totp.is_some(),
                   "created_at": time(a.created_at), "me": a.id == op.session.admin_id})
        })
        .collect();
    Ok(op.render(
        "admin/staff.html",
        json!({"nav": "staff", "admins": admins, "created": created, "error": error}),
    ))
}

pub async fn staff(State(state): State<Shared>, Owner(op): Owner) -> PanelResult {
    staff_page(&state, &op, None, None).await
}

/// Every field defaults, so a form missing its token is refused as CSRF (403), not as malformed.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct StaffForm {
    csrf: String,
    email: String,
}

/// The new account's password is shown on this response only.
pub async fn create_staff(
    State(state): State<Shared>,
    Owner(op): Owner,
    Form(form): Form<StaffForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    match create_admin(state.store.as_ref(), &form.email, Role::Staff).await {
        Ok((id, password)) => {
            op.audit(
                &state,
                "staff_created",
                &format!("admin:{id}"),
                form.email.trim(),
            )
            .await?;
            let created = json!({"email": form.email.trim().to_lowercase(), "password": password});
            staff_page(&state, &op, Some(created), None).await
        }
        Err(AdminError::Email(e)) => staff_page(&state, &op, None, Some(msg::email(&e))).await,
        Err(AdminError::EmailTaken) => {
            staff_page(&state, &op, None, Some(Msg::new("err_email_taken"))).await
        }
        Err(e) => {
            tracing::error!(error = %e, "could not create a staff account");
            Err(PanelError::Internal)
        }
    }
}

pub async fn disable_staff(
    State(state): State<Shared>,
    Owner(op): Owner,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    if id == op.session.admin_id {
        return Err(PanelError::Invalid(Msg::new("err_disable_self")));
    }
    let target = state
        .store
        .admin_by_id(id)
        .await?
        .ok_or(PanelError::NotFound)?;
    state.store.set_admin_disabled(id, true).await?;
    op.audit(
        &state,
        "staff_disabled",
        &format!("admin:{id}"),
        &target.email,
    )
    .await?;
    Ok(Redirect::to("/admin/staff").into_response())
}

pub async fn sessions(State(state): State<Shared>, Owner(op): Owner) -> PanelResult {
    let rows: Vec<Value> = state
        .store
        .list_sessions(now_millis())
        .await?
        .iter()
        .map(|s| {
            json!({"id": hex::encode(&s.id), "email": s.email, "role": s.role.as_str(), "ip": s.ip,
                   "user_agent": s.user_agent, "created_at": time(s.created_at),
                   "last_seen_at": time(s.last_seen_at), "current": s.id == op.session.id})
        })
        .collect();
    Ok(op.render(
        "admin/sessions.html",
        json!({"nav": "sessions", "sessions": rows}),
    ))
}

/// Sessions are named by the hex of their id (the token's SHA-256), which
/// opens nothing by itself.
pub async fn revoke_session(
    State(state): State<Shared>,
    Owner(op): Owner,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    let raw = hex::decode(&id).map_err(|_| PanelError::NotFound)?;
    if !state.store.revoke_session(&raw).await? {
        return Err(PanelError::NotFound);
    }
    op.audit(
        &state,
        "session_revoked",
        &format!("session:{}", &id[..12.min(id.len())]),
        "",
    )
    .await?;
    let to = if raw == op.session.id {
        "/admin/login"
    } else {
        "/admin/sessions"
    };
    Ok(Redirect::to(to).into_response())
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    before: Option<i64>,
}

pub async fn audit_log(
    State(state): State<Shared>,
    Owner(op): Owner,
    Query(q): Query<AuditQuery>,
) -> PanelResult {
    const PAGE: i64 = 100;
    let mut entries = state.store.list_audit(PAGE + 1, q.before).await?;
    let more = entries.len() as i64 > PAGE;
    entries.truncate(PAGE as usize);
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            // The action's label beside its stored name; the detail is data
            // (a product's name, an email) and shown as it was written.
            json!({"at": time(e.at), "admin": e.admin_email, "action": e.action,
                   "action_label": i18n::name_label(op.lang, "audit_", &e.action),
                   "target": e.target, "detail": e.detail, "ip": e.ip})
        })
        .collect();
    let next = if more {
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(op.render(
        "admin/audit.html",
        json!({"nav": "audit", "entries": rows, "next": next}),
    ))
}

async fn keys_page(
    state: &Shared,
    op: &super::auth::Operator,
    created: Option<Value>,
) -> PanelResult {
    let keys: Vec<Value> = state
        .store
        .list_api_keys()
        .await?
        .iter()
        .map(|k| {
            json!({"id": k.id, "name": k.name, "prefix": k.prefix, "created_at": time(k.created_at),
                   "scopes": Scopes::from_stored(&k.scopes).to_string(),
                   "last_used_at": time_opt(k.last_used_at), "revoked": k.revoked_at.is_some()})
        })
        .collect();
    let scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    Ok(op.render(
        "admin/keys.html",
        json!({"nav": "keys", "keys": keys, "created": created, "scopes": scopes}),
    ))
}

pub async fn keys(State(state): State<Shared>, Owner(op): Owner) -> PanelResult {
    keys_page(&state, &op, None).await
}

/// The key form's fields as pairs: one `scope` per ticked checkbox, which
/// a struct cannot take from a urlencoded body. A missing token is refused
/// as CSRF (403), not as malformed.
pub async fn create_key(
    State(state): State<Shared>,
    Owner(op): Owner,
    Form(form): Form<Vec<(String, String)>>,
) -> PanelResult {
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map_or("", |(_, v)| v.as_str())
    };
    op.check_csrf(field("csrf"))?;
    let name = field("name").trim();
    // Nothing ticked means an admin key, as `kami api-key create` without
    // `--scope` makes (and as this form made before it had scopes).
    let ticked: Vec<&str> = form
        .iter()
        .filter(|(n, _)| n == "scope")
        .map(|(_, v)| v.as_str())
        .collect();
    let scopes = if ticked.is_empty() {
        Scopes::parse(["admin"])
    } else {
        Scopes::parse(ticked)
    }
    .map_err(|e| {
        PanelError::Invalid(match e {
            ScopeError::Unknown(s) => Msg::new("err_scope_unknown").with("scope", s),
            ScopeError::Empty => Msg::new("err_scope_empty"),
        })
    })?;
    let (id, key) = match create_api_key(state.store.as_ref(), name, &scopes).await {
        Ok(created) => created,
        Err(AdminError::KeyName) => return Err(PanelError::Invalid(Msg::new("err_key_name"))),
        Err(e) => {
            tracing::error!(error = %e, "could not create an API key");
            return Err(PanelError::Internal);
        }
    };
    op.audit(
        &state,
        "api_key_created",
        &format!("api_key:{id}"),
        &format!("{name} ({scopes})"),
    )
    .await?;
    keys_page(
        &state,
        &op,
        Some(json!({"name": name, "key": key, "scopes": scopes.to_string()})),
    )
    .await
}

pub async fn revoke_key(
    State(state): State<Shared>,
    Owner(op): Owner,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    if !state.store.revoke_api_key(id, now_millis()).await? {
        return Err(PanelError::NotFound);
    }
    op.audit(&state, "api_key_revoked", &format!("api_key:{id}"), "")
        .await?;
    Ok(Redirect::to("/admin/keys").into_response())
}

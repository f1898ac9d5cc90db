//! Operators, their sessions and the audit log.

use kami_core::Millis;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::SqlStore;
use crate::types::*;
use crate::{Admin, AuditEntry, NewAdmin, NewAudit, NewSession, Result, Role, Session, StoreError};

const ADMIN_COLUMNS: &str = "id, email, password_hash, role, totp_secret, totp_nonce, \
     failed_attempts, locked_until, disabled, created_at";

fn role(s: &str) -> Result<Role> {
    Role::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown admin role {s:?}")))
}

fn admin(r: &AnyRow) -> Result<Admin> {
    let secret: Option<Vec<u8>> = r.try_get("totp_secret")?;
    let nonce: Option<Vec<u8>> = r.try_get("totp_nonce")?;
    Ok(Admin {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        password_hash: r.try_get("password_hash")?,
        role: role(&r.try_get::<String, _>("role")?)?,
        totp: secret.zip(nonce),
        failed_attempts: r.try_get("failed_attempts")?,
        locked_until: r.try_get("locked_until")?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

pub async fn create_admin(s: &SqlStore, a: &NewAdmin) -> Result<Option<i64>> {
    let mut tx = s.begin().await?;
    let id = sqlx::query_scalar(
        "INSERT INTO admins (merchant_id, email, password_hash, role, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (email) DO NOTHING RETURNING id",
    )
    .bind(DEFAULT_MERCHANT)
    .bind(&a.email)
    .bind(&a.password_hash)
    .bind(a.role.as_str())
    .bind(kami_core::now_millis())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn admin_by(s: &SqlStore, email: Option<&str>, id: Option<i64>) -> Result<Option<Admin>> {
    let sql = format!(
        "SELECT {ADMIN_COLUMNS} FROM admins WHERE {}",
        if email.is_some() {
            "email = $1"
        } else {
            "id = $1"
        }
    );
    let q = sqlx::query(&sql);
    let q = match email {
        Some(e) => q.bind(e.to_string()),
        None => q.bind(id.unwrap_or(0)),
    };
    // The write pool: a login right after a failure must see its count.
    q.fetch_optional(&s.write)
        .await?
        .as_ref()
        .map(admin)
        .transpose()
}

pub async fn list_admins(s: &SqlStore) -> Result<Vec<Admin>> {
    let sql = format!("SELECT {ADMIN_COLUMNS} FROM admins WHERE merchant_id = $1 ORDER BY id");
    let rows = sqlx::query(&sql)
        .bind(DEFAULT_MERCHANT)
        .fetch_all(&s.read)
        .await?;
    rows.iter().map(admin).collect()
}

/// One statement, so concurrent failures all count: the lock is set by the
/// update that reaches `max_attempts`.
pub async fn record_login_failure(
    s: &SqlStore,
    admin_id: i64,
    now: Millis,
    max_attempts: i64,
    lock_ms: i64,
) -> Result<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "UPDATE admins SET failed_attempts = failed_attempts + 1, \
         locked_until = CASE WHEN failed_attempts + 1 >= $3 THEN $2 ELSE locked_until END \
         WHERE id = $1",
    )
    .bind(admin_id)
    .bind(now + lock_ms)
    .bind(max_attempts)
    .execute(&mut *tx)
    .await?;
    // A lock starts a fresh count, so the next lock needs N new failures.
    sqlx::query("UPDATE admins SET failed_attempts = 0 WHERE id = $1 AND failed_attempts >= $2")
        .bind(admin_id)
        .bind(max_attempts)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A new password for the admin of `email`: the lock and the failure count
/// go, and so do the admin's sessions. The admin's id, if there is one.
pub async fn reset_admin_password(
    s: &SqlStore,
    email: &str,
    password_hash: &str,
) -> Result<Option<i64>> {
    let mut tx = s.begin().await?;
    let id: Option<i64> = sqlx::query_scalar(
        "UPDATE admins SET password_hash = $2, failed_attempts = 0, locked_until = NULL \
         WHERE email = $1 RETURNING id",
    )
    .bind(email)
    .bind(password_hash)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = id {
        sqlx::query("UPDATE sessions SET revoked = 1 WHERE admin_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(id)
}

pub async fn record_login_success(s: &SqlStore, admin_id: i64) -> Result<()> {
    exec(
        s,
        "UPDATE admins SET failed_attempts = 0, locked_until = NULL WHERE id = $1",
        admin_id,
    )
    .await
    .map(|_| ())
}

/// Conditional, so two logins racing with the same code cannot both win.
pub async fn use_totp_step(s: &SqlStore, admin_id: i64, step: i64) -> Result<bool> {
    let mut tx = s.begin().await?;
    let n = sqlx::query(
        "UPDATE admins SET totp_last_step = $2 WHERE id = $1 \
         AND (totp_last_step IS NULL OR totp_last_step < $2)",
    )
    .bind(admin_id)
    .bind(step)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

pub async fn set_admin_totp(
    s: &SqlStore,
    admin_id: i64,
    totp: Option<(&[u8], &[u8])>,
) -> Result<()> {
    let mut tx = s.begin().await?;
    sqlx::query("UPDATE admins SET totp_secret = $2, totp_nonce = $3 WHERE id = $1")
        .bind(admin_id)
        .bind(totp.map(|t| t.0.to_vec()))
        .bind(totp.map(|t| t.1.to_vec()))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn set_admin_disabled(s: &SqlStore, admin_id: i64, disabled: bool) -> Result<bool> {
    let mut tx = s.begin().await?;
    let n = sqlx::query("UPDATE admins SET disabled = $2 WHERE id = $1")
        .bind(admin_id)
        .bind(i64::from(disabled))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if disabled {
        sqlx::query("UPDATE sessions SET revoked = 1 WHERE admin_id = $1")
            .bind(admin_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(n == 1)
}

async fn exec(s: &SqlStore, sql: &str, id: i64) -> Result<u64> {
    let mut tx = s.begin().await?;
    let n = sqlx::query(sql)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
}

pub async fn create_session(s: &SqlStore, n: &NewSession) -> Result<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "INSERT INTO sessions (id, admin_id, csrf, ip, user_agent, created_at, last_seen_at, \
         expires_at) VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
    )
    .bind(&n.id)
    .bind(n.admin_id)
    .bind(&n.csrf)
    .bind(&n.ip)
    .bind(&n.user_agent)
    .bind(n.created_at)
    .bind(n.expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

const SESSION_SELECT: &str = "SELECT s.id, s.admin_id, a.email, a.role, s.csrf, s.ip, \
     s.user_agent, s.created_at, s.last_seen_at, s.expires_at FROM sessions s \
     JOIN admins a ON a.id = s.admin_id \
     WHERE s.revoked = 0 AND s.expires_at > $1 AND a.disabled = 0";

fn session(r: &AnyRow) -> Result<Session> {
    Ok(Session {
        id: r.try_get("id")?,
        admin_id: r.try_get("admin_id")?,
        email: r.try_get("email")?,
        role: role(&r.try_get::<String, _>("role")?)?,
        csrf: r.try_get("csrf")?,
        ip: r.try_get("ip")?,
        user_agent: r.try_get("user_agent")?,
        created_at: r.try_get("created_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

pub async fn session_by_id(s: &SqlStore, id: &[u8], now: Millis) -> Result<Option<Session>> {
    // The write pool: a revocation must take effect on the very next request.
    let row = sqlx::query(&format!("{SESSION_SELECT} AND s.id = $2"))
        .bind(now)
        .bind(id)
        .fetch_optional(&s.write)
        .await?;
    row.as_ref().map(session).transpose()
}

pub async fn touch_session(s: &SqlStore, id: &[u8], now: Millis) -> Result<()> {
    let mut tx = s.begin().await?;
    sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn list_sessions(s: &SqlStore, now: Millis) -> Result<Vec<Session>> {
    let rows = sqlx::query(&format!("{SESSION_SELECT} ORDER BY s.last_seen_at DESC"))
        .bind(now)
        .fetch_all(&s.read)
        .await?;
    rows.iter().map(session).collect()
}

pub async fn revoke_session(s: &SqlStore, id: &[u8]) -> Result<bool> {
    let mut tx = s.begin().await?;
    let n = sqlx::query("UPDATE sessions SET revoked = 1 WHERE id = $1 AND revoked = 0")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

pub async fn insert_audit(s: &SqlStore, e: &NewAudit) -> Result<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "INSERT INTO audit_log (merchant_id, admin_id, action, target, detail, ip, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(DEFAULT_MERCHANT)
    .bind(e.admin_id)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.detail)
    .bind(&e.ip)
    .bind(e.at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn list_audit(
    s: &SqlStore,
    limit: i64,
    before_id: Option<i64>,
) -> Result<Vec<AuditEntry>> {
    let rows = sqlx::query(&format!(
        "SELECT l.id, l.admin_id, a.email, l.action, l.target, l.detail, l.ip, l.at \
         FROM audit_log l LEFT JOIN admins a ON a.id = l.admin_id \
         WHERE l.merchant_id = $1 AND l.id < $2 ORDER BY l.id DESC LIMIT {}",
        limit.clamp(1, 500)
    ))
    .bind(DEFAULT_MERCHANT)
    .bind(before_id.unwrap_or(i64::MAX))
    .fetch_all(&s.read)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                id: r.try_get("id")?,
                admin_id: r.try_get("admin_id")?,
                admin_email: r.try_get("email")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                detail: r.try_get("detail")?,
                ip: r.try_get("ip")?,
                at: r.try_get("at")?,
            })
        })
        .collect()
}

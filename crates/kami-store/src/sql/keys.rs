use kami_core::{now_millis, Millis};
use sqlx::Row;

use super::SqlStore;
use crate::types::*;
use crate::Result;

pub async fn create_api_key(
    s: &SqlStore,
    name: &str,
    key_hash: &[u8],
    prefix: &str,
    scopes: &str,
) -> Result<i64> {
    let mut tx = s.begin().await?;
    let id = sqlx::query_scalar(
        "INSERT INTO api_keys (merchant_id, name, key_hash, prefix, scopes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(DEFAULT_MERCHANT)
    .bind(name)
    .bind(key_hash)
    .bind(prefix)
    .bind(scopes)
    .bind(now_millis())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Looks a key up by its SHA-256. `last_used_at` is refreshed at most once a
/// minute, so authenticated traffic does not turn every read into a write.
pub async fn api_key_by_hash(s: &SqlStore, key_hash: &[u8], now: Millis) -> Result<Option<ApiKey>> {
    let row = sqlx::query(
        "SELECT id, name, scopes, last_used_at FROM api_keys \
         WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(key_hash)
    .fetch_optional(&s.read)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let key = ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scopes: row.try_get("scopes")?,
    };
    let last: Option<i64> = row.try_get("last_used_at")?;
    if last.is_none_or(|t| t < now - 60_000) {
        let mut tx = s.begin().await?;
        sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
            .bind(key.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(Some(key))
}

pub async fn get_setting(s: &SqlStore, key: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&s.write)
            .await?,
    )
}

pub async fn init_setting(s: &SqlStore, key: &str, value: &str) -> Result<String> {
    let mut tx = s.begin().await?;
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await?;
    let stored = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(stored)
}

/// Stores the values whatever was there, all or none (the admin panel's
/// settings page).
pub async fn set_settings(s: &SqlStore, pairs: &[(&str, &str)]) -> Result<()> {
    let mut tx = s.begin().await?;
    put_settings(&mut tx, pairs).await?;
    tx.commit().await?;
    Ok(())
}

/// `set_settings` inside a transaction of the caller's.
pub(super) async fn put_settings(tx: &mut super::orders::Tx, pairs: &[(&str, &str)]) -> Result<()> {
    for (key, value) in pairs {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

//! Payment channels configured in the admin panel (`channel_configs`): the
//! store only keeps the sealed bytes; sealing and opening is the web layer's.

use sqlx::Row;

use super::SqlStore;
use crate::types::*;
use crate::Result;

pub async fn list(s: &SqlStore) -> Result<Vec<ChannelConfigRow>> {
    let rows = sqlx::query(
        "SELECT name, enabled, ciphertext, nonce, key_id, updated_at FROM channel_configs \
         WHERE merchant_id = $1 ORDER BY name",
    )
    .bind(DEFAULT_MERCHANT)
    .fetch_all(&s.write)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ChannelConfigRow {
                name: r.try_get("name")?,
                enabled: r.try_get::<i64, _>("enabled")? != 0,
                ciphertext: r.try_get("ciphertext")?,
                nonce: r.try_get("nonce")?,
                key_id: r.try_get("key_id")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect()
}

pub async fn put(s: &SqlStore, c: &ChannelConfigRow) -> Result<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "INSERT INTO channel_configs (merchant_id, name, enabled, ciphertext, nonce, key_id, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (merchant_id, name) DO UPDATE SET enabled = excluded.enabled, \
         ciphertext = excluded.ciphertext, nonce = excluded.nonce, key_id = excluded.key_id, \
         updated_at = excluded.updated_at",
    )
    .bind(DEFAULT_MERCHANT)
    .bind(&c.name)
    .bind(i64::from(c.enabled))
    .bind(c.ciphertext.as_slice())
    .bind(c.nonce.as_slice())
    .bind(c.key_id)
    .bind(c.updated_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

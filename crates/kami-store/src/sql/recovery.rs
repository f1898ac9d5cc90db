//! TOTP recovery codes: stored as hashes, each spent once.

use kami_core::Millis;
use sqlx::Row;

use super::SqlStore;
use crate::{RecoveryCode, Result};

pub async fn replace_recovery_codes(
    s: &SqlStore,
    admin_id: i64,
    hashes: &[Vec<u8>],
    now: Millis,
) -> Result<()> {
    let mut tx = s.begin().await?;
    sqlx::query("DELETE FROM admin_recovery_codes WHERE admin_id = $1")
        .bind(admin_id)
        .execute(&mut *tx)
        .await?;
    for h in hashes {
        sqlx::query(
            "INSERT INTO admin_recovery_codes (admin_id, code_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(admin_id)
        .bind(h.as_slice())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Read from the writer: a code spent a moment ago must not look unused.
pub async fn unused_recovery_codes(s: &SqlStore, admin_id: i64) -> Result<Vec<RecoveryCode>> {
    let rows = sqlx::query(
        "SELECT id, code_hash FROM admin_recovery_codes WHERE admin_id = $1 AND used_at IS NULL \
         ORDER BY id",
    )
    .bind(admin_id)
    .fetch_all(&s.write)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(RecoveryCode {
                id: r.try_get("id")?,
                code_hash: r.try_get("code_hash")?,
            })
        })
        .collect()
}

/// Conditional on `used_at IS NULL`, so two logins racing with one code
/// cannot both spend it.
pub async fn use_recovery_code(s: &SqlStore, id: i64, now: Millis) -> Result<bool> {
    let mut tx = s.begin().await?;
    let n = sqlx::query(
        "UPDATE admin_recovery_codes SET used_at = $2 WHERE id = $1 AND used_at IS NULL",
    )
    .bind(id)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

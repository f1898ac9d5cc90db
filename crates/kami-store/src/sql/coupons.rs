//! Coupons. Their use is counted by the order's own transaction
//! (`orders::take_holds`); these are the merchant's side.

use kami_core::now_millis;
use kami_core::pricing::CouponKind;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::SqlStore;
use crate::types::*;
use crate::{Result, StoreError};

const COLUMNS: &str = "id, code, kind, value, currency, product_id, max_uses, used, expires_at, \
                       disabled, created_at";

fn coupon(r: &AnyRow) -> Result<Coupon> {
    let kind: String = r.try_get("kind")?;
    Ok(Coupon {
        id: r.try_get("id")?,
        code: r.try_get("code")?,
        kind: CouponKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown coupon kind {kind:?}")))?,
        value: r.try_get("value")?,
        currency: r.try_get("currency")?,
        product_id: r.try_get("product_id")?,
        max_uses: r.try_get("max_uses")?,
        used: r.try_get("used")?,
        expires_at: r.try_get("expires_at")?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

/// `None` when the code is taken.
pub async fn create_coupon(s: &SqlStore, c: &NewCoupon) -> Result<Option<Coupon>> {
    let mut tx = s.begin().await?;
    let sql = format!(
        "INSERT INTO coupons (merchant_id, code, kind, value, currency, product_id, max_uses, \
         expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (merchant_id, code) DO NOTHING RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(DEFAULT_MERCHANT)
        .bind(&c.code)
        .bind(c.kind.as_str())
        .bind(c.value)
        .bind(c.currency.as_deref())
        .bind(c.product_id)
        .bind(c.max_uses)
        .bind(c.expires_at)
        .bind(now_millis())
        .fetch_optional(&mut *tx)
        .await?;
    let created = row.as_ref().map(coupon).transpose()?;
    tx.commit().await?;
    Ok(created)
}

pub async fn list_coupons(s: &SqlStore) -> Result<Vec<Coupon>> {
    let sql = format!("SELECT {COLUMNS} FROM coupons WHERE merchant_id = $1 ORDER BY id DESC");
    let rows = sqlx::query(&sql)
        .bind(DEFAULT_MERCHANT)
        .fetch_all(&s.read)
        .await?;
    rows.iter().map(coupon).collect()
}

pub async fn coupon_by_code(s: &SqlStore, code: &str) -> Result<Option<Coupon>> {
    let sql = format!("SELECT {COLUMNS} FROM coupons WHERE merchant_id = $1 AND code = $2");
    let row = sqlx::query(&sql)
        .bind(DEFAULT_MERCHANT)
        .bind(code)
        .fetch_optional(&s.read)
        .await?;
    row.as_ref().map(coupon).transpose()
}

pub async fn set_coupon_disabled(s: &SqlStore, id: i64, disabled: bool) -> Result<bool> {
    let mut tx = s.begin().await?;
    let n = sqlx::query("UPDATE coupons SET disabled = $2 WHERE id = $1 AND merchant_id = $3")
        .bind(id)
        .bind(i64::from(disabled))
        .bind(DEFAULT_MERCHANT)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

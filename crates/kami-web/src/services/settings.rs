//! The shop settings an owner changes in the panel (issue 3): name, notice
//! banner, order TTL and the default stock display. kami.toml and `KAMI_*`
//! give the first values; once a value is saved in the panel, the stored
//! one wins, at every start. The live copy is swapped whole (`ArcSwap`), so
//! the storefront, order creation and the expiry deadline read the current
//! values without a restart.

use kami_core::StockDisplay;
use kami_store::StoreError;

use crate::state::{AppState, Settings};

/// The `settings` table keys.
const SHOP_NAME: &str = "shop_name";
const NOTICE: &str = "notice";
const ORDER_TTL: &str = "order_ttl";
const STOCK_DISPLAY: &str = "stock_display";

/// The longest order TTL the panel accepts: a week.
pub const MAX_ORDER_TTL_SECS: i64 = 7 * 86400;
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_NOTICE_CHARS: usize = 2000;

/// A value typed into the settings form that cannot be saved; the panel
/// says which in the operator's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("shop_name must be 1 to {MAX_NAME_CHARS} characters")]
    ShopName,
    #[error("notice must be at most {MAX_NOTICE_CHARS} characters")]
    Notice,
    #[error("order_ttl must be whole seconds from 1 to {MAX_ORDER_TTL_SECS}")]
    OrderTtl,
    #[error("stock_display must be exact, level or hidden")]
    StockDisplay,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopSettings {
    pub shop_name: String,
    pub notice: Option<String>,
    /// Seconds an unpaid order holds its codes.
    pub order_ttl_secs: i64,
    /// For products that do not choose their own.
    pub stock_display: StockDisplay,
}

impl ShopSettings {
    pub fn from_config(s: &Settings) -> Self {
        Self {
            shop_name: s.shop_name.clone(),
            notice: s.notice.clone(),
            order_ttl_secs: s.order_ttl_secs,
            stock_display: StockDisplay::Exact,
        }
    }

    /// Checks values typed into the panel; the error names the field.
    pub fn parse(
        shop_name: &str,
        notice: &str,
        order_ttl: &str,
        stock_display: &str,
    ) -> Result<Self, SettingsError> {
        let shop_name = shop_name.trim();
        if shop_name.is_empty() || shop_name.chars().count() > MAX_NAME_CHARS {
            return Err(SettingsError::ShopName);
        }
        let notice = notice.trim();
        if notice.chars().count() > MAX_NOTICE_CHARS {
            return Err(SettingsError::Notice);
        }
        let order_ttl_secs = order_ttl
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|t| (1..=MAX_ORDER_TTL_SECS).contains(t))
            .ok_or(SettingsError::OrderTtl)?;
        let stock_display =
            StockDisplay::parse(stock_display).ok_or(SettingsError::StockDisplay)?;
        Ok(Self {
            shop_name: shop_name.to_string(),
            notice: Some(notice.to_string()).filter(|n| !n.is_empty()),
            order_ttl_secs,
            stock_display,
        })
    }
}

/// At start: the stored values over the configured ones.
pub async fn load(state: &AppState) -> Result<(), StoreError> {
    let mut s = ShopSettings::from_config(&state.settings);
    let store = state.store.as_ref();
    if let Some(v) = store.get_setting(SHOP_NAME).await? {
        s.shop_name = v;
    }
    if let Some(v) = store.get_setting(NOTICE).await? {
        // Saved empty means "no notice", even if the configuration has one.
        s.notice = Some(v).filter(|n| !n.is_empty());
    }
    if let Some(v) = store.get_setting(ORDER_TTL).await? {
        match v.parse::<i64>() {
            Ok(t) if t >= 1 => s.order_ttl_secs = t,
            _ => {
                tracing::warn!(value = %v, "ignoring a stored order_ttl that is not whole seconds")
            }
        }
    }
    if let Some(v) = store.get_setting(STOCK_DISPLAY).await? {
        s.stock_display = StockDisplay::parse(&v).unwrap_or_default();
    }
    state.shop.store(std::sync::Arc::new(s));
    Ok(())
}

/// Stores every value in one transaction, then makes them live.
pub async fn save(state: &AppState, s: ShopSettings) -> Result<(), StoreError> {
    let ttl = s.order_ttl_secs.to_string();
    state
        .store
        .set_settings(&[
            (SHOP_NAME, &s.shop_name),
            (NOTICE, s.notice.as_deref().unwrap_or_default()),
            (ORDER_TTL, &ttl),
            (STOCK_DISPLAY, s.stock_display.as_str()),
        ])
        .await?;
    state.shop.store(std::sync::Arc::new(s));
    Ok(())
}

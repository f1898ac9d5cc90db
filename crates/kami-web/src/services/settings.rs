//! The shop settings an owner changes in the panel (issue 3): name, notice
//! banner, order TTL and the default stock display. A setting that
//! configuration gives explicitly (kami.toml or `KAMI_*`) is fixed by it:
//! it wins over a stored value, and the panel shows it read-only and never
//! stores it (`FixedByConfig`). The others hold their default until saved in
//! the panel; the stored value then applies, at every start. The live copy
//! is swapped whole (`ArcSwap`), so the storefront, order creation and the
//! expiry deadline read the current values without a restart.

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

/// The panel's settings that configuration sets explicitly (kami.toml or
/// `KAMI_*`). Written in a deployment's files, they must not be overridden
/// by a value a form stored (`KAMI_ORDER_TTL` used to be ignored for good
/// once the form was saved, even for a change of the shop name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FixedByConfig {
    pub shop_name: bool,
    pub notice: bool,
    pub order_ttl: bool,
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

/// At start: the stored values over the defaults, and what configuration
/// fixes over both.
pub async fn load(state: &AppState) -> Result<(), StoreError> {
    let mut s = ShopSettings::from_config(&state.settings);
    let fixed = state.settings.fixed_by_config;
    let store = state.store.as_ref();
    let stored = |key: &'static str, fixed: bool| async move {
        match fixed {
            true => Ok(None),
            false => store.get_setting(key).await,
        }
    };
    if let Some(v) = stored(SHOP_NAME, fixed.shop_name).await? {
        s.shop_name = v;
    }
    if let Some(v) = stored(NOTICE, fixed.notice).await? {
        // Saved empty means "no notice", even if the default has one (demo).
        s.notice = Some(v).filter(|n| !n.is_empty());
    }
    if let Some(v) = stored(ORDER_TTL, fixed.order_ttl).await? {
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

/// Stores the values the operator changed, in one transaction, then makes
/// them live. A value left as it was is not stored: it would outlive a
/// later change of its default. What configuration fixes keeps its value
/// and is never stored.
pub async fn save(state: &AppState, mut s: ShopSettings) -> Result<(), StoreError> {
    let now = state.shop();
    let fixed = state.settings.fixed_by_config;
    if fixed.shop_name {
        s.shop_name = now.shop_name.clone();
    }
    if fixed.notice {
        s.notice = now.notice.clone();
    }
    if fixed.order_ttl {
        s.order_ttl_secs = now.order_ttl_secs;
    }
    let ttl = s.order_ttl_secs.to_string();
    let candidates = [
        (
            SHOP_NAME,
            s.shop_name != now.shop_name,
            s.shop_name.as_str(),
        ),
        (
            NOTICE,
            s.notice != now.notice,
            s.notice.as_deref().unwrap_or_default(),
        ),
        (ORDER_TTL, s.order_ttl_secs != now.order_ttl_secs, &ttl),
        (
            STOCK_DISPLAY,
            s.stock_display != now.stock_display,
            s.stock_display.as_str(),
        ),
    ];
    let changed: Vec<(&str, &str)> = candidates
        .iter()
        .filter(|(_, changed, _)| *changed)
        .map(|(key, _, value)| (*key, *value))
        .collect();
    if !changed.is_empty() {
        state.store.set_settings(&changed).await?;
    }
    state.shop.store(std::sync::Arc::new(s));
    Ok(())
}

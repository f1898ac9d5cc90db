use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use kami_core::secrets::Keys;
use kami_pay::sandbox::Sandbox;
use kami_pay::Channel;
use kami_store::{
    CreateOrderError, GroupCommit, NewOrder, NewPayment, Order, PayOutcome, Result as StoreResult,
    Store,
};
use tokio::sync::Notify;

use crate::breaker::Breakers;
use crate::rate_limit::RateLimits;
use crate::services::catalog::Catalog;
use crate::services::channels::ChannelSet;
use crate::services::gate::StockGate;
use crate::services::recent::RecentOrders;
use crate::services::settings::ShopSettings;

/// The group-commit writers of orders and payments (kami-store's
/// `GroupCommit` over `Store::create_orders` / `pay_orders`).
pub type OrderWriter = GroupCommit<NewOrder, StoreResult<Result<Order, CreateOrderError>>>;
pub type PayWriter = GroupCommit<NewPayment, StoreResult<PayOutcome>>;

/// Settings the web layer needs, already parsed and defaulted by the binary.
/// Shop name, notice and order TTL are only the first values: the live ones
/// are `AppState::shop()`, which the admin panel changes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where buyers and gateways reach this shop, without a trailing slash.
    pub public_url: String,
    /// Seconds an unpaid order holds its codes.
    pub order_ttl_secs: i64,
    pub shop_name: String,
    pub notice: Option<String>,
    pub rate_limits: bool,
    /// Enables the sandbox channel when set.
    pub sandbox_secret: Option<String>,
    /// How often the expiry sweep runs.
    pub expiry_interval_ms: i64,
    /// How often reconciliation asks gateways about unpaid orders they have
    /// seen; also the first wait of each order's backoff.
    pub reconcile_interval_ms: i64,
    /// Consecutive failed payment starts that open a channel's breaker.
    pub breaker_threshold: u32,
    /// How long an open channel is not offered before it is probed again.
    pub breaker_cooldown_ms: i64,
    /// Requests waiting for the order writer at most; more are shed (503).
    pub writer_queue: usize,
    /// Orders (or payments) per group-commit transaction at most.
    pub writer_batch: usize,
    /// Proxies whose `X-Forwarded-For` is believed (extract.rs `ClientIp`).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Shares the stock gate and rate limits between instances when set.
    pub redis: Option<crate::redis_conn::RedisSettings>,
    /// Bytes the request bodies still arriving may hold together
    /// (`body_budget.rs`).
    pub body_budget: u64,
    /// Connections one client address may hold open; 0 for no cap. Not
    /// applied when `rate_limits` is off (`peer_cap.rs`).
    pub connections_per_address: u32,
    /// The panel's settings that configuration fixes (`services::settings`).
    pub fixed_by_config: crate::services::settings::FixedByConfig,
}

impl Settings {
    /// Whether buyers reach the shop over https (behind a TLS proxy):
    /// cookies are then `Secure`, and browsers are told to keep to https.
    pub fn served_over_https(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            order_ttl_secs: 900,
            shop_name: "Kami".into(),
            notice: None,
            rate_limits: true,
            sandbox_secret: None,
            expiry_interval_ms: 1000,
            reconcile_interval_ms: 60_000,
            breaker_threshold: 3,
            breaker_cooldown_ms: 30_000,
            writer_queue: 4096,
            writer_batch: 256,
            trusted_proxies: Vec::new(),
            redis: None,
            body_budget: crate::body_budget::DEFAULT_BODY_BUDGET,
            connections_per_address: crate::peer_cap::DEFAULT_CONNECTIONS_PER_ADDRESS,
            fixed_by_config: Default::default(),
        }
    }
}

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub settings: Settings,
    /// Name, notice, order TTL, stock display: changed live by the panel.
    pub shop: ArcSwap<ShopSettings>,
    /// Every configured channel, enabled or not (services/channels.rs).
    pub channels: ArcSwap<ChannelSet>,
    pub limits: RateLimits,
    pub breakers: Breakers,
    /// Wakes the job worker early (e.g. right after an order is created with
    /// a very short TTL) instead of waiting for its next poll.
    pub wake_worker: Notify,
    pub templates: minijinja::Environment<'static>,
    /// The admin panel's login rate limiter.
    pub admin: crate::admin::AdminState,
    pub gate: StockGate,
    pub catalog: Catalog,
    pub order_writer: OrderWriter,
    /// Payment writers, one per shard of order ids: the twins of a
    /// duplicated notification land in the same writer, so on PostgreSQL two
    /// transactions never wait on each other's payment row.
    pub pay_writers: Vec<PayWriter>,
    /// Orders created here lately, for their payment notifications.
    pub recent_orders: RecentOrders,
    /// Held through each expiry sweep. On PostgreSQL a sweep skips the rows
    /// another holds locked, so a listing's sweep waits here for the periodic
    /// one rather than list an order that one is about to store as expired.
    pub expiring: tokio::sync::Mutex<()>,
    /// The bytes request bodies still arriving hold (`listen.rs`).
    pub body_budget: Arc<crate::body_budget::BodyBudget>,
    /// The database's last answer to `/readyz`, shared for a second.
    pub readiness: crate::readiness::Readiness,
}

pub type Shared = Arc<AppState>;

impl AppState {
    pub fn shop(&self) -> Guard<Arc<ShopSettings>> {
        self.shop.load()
    }

    /// A configured channel, even a disabled one: notifications and
    /// reconciliation for orders already on it still work.
    pub fn channel(&self, name: &str) -> Option<Arc<dyn Channel>> {
        self.channels.load().get(name).map(|e| e.channel.clone())
    }

    /// A channel new payments may start on: configured and enabled.
    pub fn enabled_channel(&self, name: &str) -> Option<Arc<dyn Channel>> {
        self.channels
            .load()
            .get(name)
            .filter(|e| e.enabled)
            .map(|e| e.channel.clone())
    }

    pub fn sandbox(&self) -> Option<Arc<Sandbox>> {
        self.channels.load().sandbox.clone()
    }

    pub fn pay_writer(&self, order_id: i64) -> &PayWriter {
        &self.pay_writers[order_id.unsigned_abs() as usize % self.pay_writers.len()]
    }

    /// This instance changed a product's stock other than by an order
    /// (import, expiry, fulfilment): the gate and the product cache follow.
    pub async fn stock_changed(&self, product_id: i64) {
        let refreshed = self.gate.refresh(self.store.as_ref(), product_id).await;
        self.gate_followed(product_id, refreshed);
    }

    /// This instance imported codes into a product: the gate counts them
    /// all, exactly (`StockGate::refresh_exact`).
    pub async fn stock_imported(&self, product_id: i64) {
        let refreshed = self
            .gate
            .refresh_exact(self.store.as_ref(), product_id)
            .await;
        self.gate_followed(product_id, refreshed);
    }

    /// An expiry on this instance released `quantity` codes of a product.
    pub async fn codes_released(&self, product_id: i64, quantity: i64) {
        let refreshed = self
            .gate
            .released(self.store.as_ref(), product_id, quantity)
            .await;
        self.gate_followed(product_id, refreshed);
    }

    /// An operator here voided `quantity` available codes of a product.
    pub async fn codes_voided(&self, product_id: i64, quantity: i64) {
        let refreshed = self
            .gate
            .removed(self.store.as_ref(), product_id, quantity)
            .await;
        self.gate_followed(product_id, refreshed);
    }

    /// The gate followed a change of stock (or failed to: the periodic
    /// re-sync catches up); the product cache follows too.
    fn gate_followed(&self, product_id: i64, refreshed: kami_store::Result<()>) {
        if let Err(e) = refreshed {
            tracing::warn!(product_id, error = %e, "stock gate refresh failed; the periodic re-sync will catch up");
        }
        self.catalog.invalidate();
    }

    /// The enabled channels.
    pub fn channel_names(&self) -> Vec<&'static str> {
        self.channels
            .load()
            .entries
            .iter()
            .filter(|e| e.enabled)
            .map(|e| e.channel.name())
            .collect()
    }

    /// The channels new orders may use now: configured, enabled, and not
    /// held back by an open circuit breaker.
    pub fn offered_channels(&self) -> Vec<&'static str> {
        self.channel_names()
            .into_iter()
            .filter(|n| self.breakers.allows(n))
            .collect()
    }
}

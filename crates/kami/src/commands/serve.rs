use std::sync::Arc;

use anyhow::Context;
use kami_core::pricing::{CouponKind, WholesaleTier};
use kami_core::secrets::random_token;
use kami_store::{NewCoupon, NewProduct, Store};
use kami_web::Settings;
use tokio::net::TcpListener;

use super::{init_logging, open_store};
use crate::config::Config;
use crate::master_key;

pub async fn run(mut cfg: Config) -> anyhow::Result<()> {
    init_logging(&cfg.log, true);
    if !sandbox_section_enables(&cfg)? {
        tracing::info!("the sandbox channel is off ([channels.sandbox] enabled = false)");
        cfg.sandbox_secret = None;
    } else if cfg.demo && cfg.sandbox_secret.is_none() {
        cfg.sandbox_secret = Some(random_token(""));
    }
    // What can refuse the start without the database comes first: a port
    // in use or a bad channel section leaves the database unmigrated and
    // no new master key behind.
    let public_url = cfg.public_url();
    let gateways = build_gateways(&cfg, &public_url)?;
    let listener = TcpListener::bind(&cfg.bind)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.bind))?;
    let store = open_store(&cfg).await?;
    if let Err(e) = store
        .warm_up(kami_web::writer_transactions(store.backend()))
        .await
    {
        tracing::warn!(error = %e, "could not ready the database connections at start; the first orders open them");
    }
    let keys = master_key::keys_for(&cfg, store.as_ref()).await?;
    store.guard_master_check(keys.check_value());
    let notice = match (&cfg.notice, cfg.demo) {
        (Some(n), _) => Some(n.clone()),
        (None, true) => Some("演示模式：演示商品与沙盒支付，不涉及真实资金。Demo mode: demo products, sandbox payments, no real money.".into()),
        (None, false) => None,
    };
    let settings = Settings {
        public_url: public_url.clone(),
        order_ttl_secs: cfg.order_ttl as i64,
        shop_name: cfg.shop_name.clone(),
        notice,
        rate_limits: cfg.rate_limits == "on",
        sandbox_secret: cfg.sandbox_secret.clone(),
        expiry_interval_ms: 1000,
        reconcile_interval_ms: cfg.reconcile_interval as i64 * 1000,
        breaker_threshold: cfg.channel_failure_threshold,
        breaker_cooldown_ms: cfg.channel_cooldown as i64 * 1000,
        writer_queue: cfg.writer_queue.max(1),
        writer_batch: cfg.writer_batch.max(1),
        trusted_proxies: cfg.trusted_proxy_ips()?,
        body_budget: cfg.body_budget,
        connections_per_address: cfg.connections_per_address,
        redis: cfg
            .redis_url
            .as_ref()
            .map(|url| kami_web::redis_conn::RedisSettings {
                url: url.clone(),
                prefix: cfg.redis_prefix.clone(),
            }),
        fixed_by_config: kami_web::services::settings::FixedByConfig {
            shop_name: cfg.is_configured("shop_name"),
            notice: cfg.is_configured("notice"),
            order_ttl: cfg.is_configured("order_ttl"),
        },
    };
    let config_managed = cfg.channels.keys().cloned().collect();
    let state = kami_web::build_state(
        store.clone() as Arc<dyn Store>,
        keys,
        settings,
        gateways,
        config_managed,
    )
    .map_err(|e| anyhow::anyhow!("invalid redis_url: {e}"))?;
    // Said once the URL is known good: an invalid one used to log this line
    // and then stop the server.
    if let Some(url) = &cfg.redis_url {
        tracing::info!(redis = %kami_store::redact_url(url), prefix = %cfg.redis_prefix,
            "stock gate and rate limits shared through Redis");
    }
    // The shop settings kami.toml or KAMI_* give win over what the admin
    // panel saved, the panel's over the defaults (services/settings.rs); for
    // channels kami.toml wins too (services/channels.rs).
    kami_web::services::settings::load(&state).await?;
    kami_web::services::channels::load_stored(&state).await?;
    if cfg.demo {
        seed_demo(&state).await?;
    }
    let addr = listener.local_addr()?;
    tracing::info!(%addr, public_url = %public_url, backend = %store.backend(), sandbox = state.sandbox().is_some(), "kami listening");
    if cfg.demo {
        eprintln!("\n  Kami demo shop is open: {public_url}/\n  (sandbox payments: press \"Pay\" on the payment page; no real money moves)\n");
    }
    kami_web::serve(listener, state, shutdown_signal()).await?;
    store.close().await;
    tracing::info!("kami stopped");
    Ok(())
}

/// `[channels.sandbox]` follows API.md's rule for every section: the channel
/// is on unless it says `enabled = false`. Its secret is `sandbox_secret`
/// (`KAMI_SANDBOX_SECRET`), so `enabled` is the section's only setting.
fn sandbox_section_enables(cfg: &Config) -> anyhow::Result<bool> {
    let Some(section) = cfg.channels.get(kami_pay::sandbox::NAME) else {
        return Ok(true);
    };
    if let Some(key) = section.keys().find(|k| k.as_str() != "enabled") {
        anyhow::bail!(
            "[channels.sandbox] has no setting {key:?}: its only one is `enabled`; \
             the secret is `sandbox_secret` (KAMI_SANDBOX_SECRET)"
        );
    }
    Ok(kami_pay::registry::section_enabled(
        kami_pay::sandbox::NAME,
        section,
    )?)
}

/// The real payment channels of `[channels.*]`. A section that cannot be
/// applied stops the start: a shop that silently lacks a channel it was
/// configured with would take orders nobody can pay. A section whose key is
/// empty is the exception DESIGN.md names: the shop starts, the channel is
/// not offered and refuses every notification.
fn build_gateways(
    cfg: &Config,
    public_url: &str,
) -> anyhow::Result<Vec<(Arc<dyn kami_pay::Channel>, bool)>> {
    let base_dir = cfg
        .config_file
        .as_deref()
        .and_then(|p| p.parent())
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let ctx = kami_pay::ChannelContext {
        public_url: public_url.to_string(),
        base_dir,
    };
    let mut gateways = Vec::new();
    for (name, section) in &cfg.channels {
        if name == kami_pay::sandbox::NAME {
            continue;
        }
        // `enabled = false`: not offered to new orders, but when its
        // credentials are there it still verifies the notifications of
        // orders made on it before, as a channel disabled in the panel
        // does: money a buyer paid is never turned away. A section without
        // them is simply off.
        let enabled = kami_pay::registry::section_enabled(name, section)?;
        let mut built = section.clone();
        built.remove("enabled");
        if let Some(channel) = kami_pay::registry::keyless(name, &built) {
            // DESIGN.md: a channel with an empty key rejects everything. It
            // is not offered, and its notify URL answers every notification
            // with the gateway's failure reply, recorded for the operator.
            if enabled {
                tracing::error!(channel = %name, field = channel.field(), "payment channel has an empty key: not offered, every notification to it is refused");
            }
            gateways.push((Arc::new(channel) as Arc<dyn kami_pay::Channel>, false));
            continue;
        }
        match kami_pay::build_channel(name, &built, &ctx) {
            Ok(Some(ch)) if enabled => {
                tracing::info!(channel = %name, "payment channel enabled");
                gateways.push((ch, true));
            }
            Ok(Some(ch)) => {
                tracing::info!(channel = %name, "payment channel disabled; its notifications are still verified");
                gateways.push((ch, false));
            }
            Err(e) if enabled => return Err(e.into()),
            // (`Ok(None)` does not come back: `enabled` was taken out.)
            Ok(None) | Err(_) => tracing::info!(channel = %name, "payment channel disabled"),
        }
    }
    Ok(gateways)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

/// `--demo`: one clearly marked demo product with demo codes, on an empty shop.
async fn seed_demo(state: &kami_web::Shared) -> anyhow::Result<()> {
    if !state.store.list_products(false).await?.is_empty() {
        return Ok(());
    }
    let category = state.store.category_id_by_name("演示 Demo", true).await?;
    let product = state
        .store
        .create_product(&NewProduct {
            category_id: category,
            name: "【演示】Demo 游戏点卡 Game card".into(),
            description: "这是演示商品：付款使用沙盒通道，卡密为演示数据。结账时可试用优惠券 DEMO10（九折）。\nDemo product: paid through the sandbox channel; the codes are demo data. Try the coupon DEMO10 (10% off) at the checkout.".into(),
            price: 990,
            currency: "CNY".into(),
            min_quantity: 1,
            max_quantity: 5,
            per_buyer_limit: None,
            sale_starts_at: None,
            sale_ends_at: None,
            visible: true,
            low_stock_threshold: 10,
            wholesale_tiers: vec![WholesaleTier {
                min_quantity: 3,
                price: 890,
            }],
            per_ip_limit: None,
            stock_display: None,
        })
        .await?;
    // A coupon to try at the checkout: 10 % off, shop-wide.
    state
        .store
        .create_coupon(&NewCoupon {
            code: "DEMO10".into(),
            kind: CouponKind::Percent,
            value: 10,
            currency: None,
            product_id: None,
            max_uses: None,
            expires_at: None,
        })
        .await?;
    let codes: String = (0..100)
        .map(|_| {
            let t = random_token("").to_uppercase().replace(['-', '_'], "X");
            format!("DEMO-{}-{}-{}\n", &t[0..4], &t[4..8], &t[8..12])
        })
        .collect();
    let chunks =
        futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(codes))]);
    let report = kami_web::services::import::import_cards(
        state.store.as_ref(),
        &state.keys,
        product.id,
        chunks,
        |_| {},
    )
    .await?;
    tracing::info!(
        product_id = product.id,
        imported = report.imported,
        coupon = "DEMO10",
        "demo product seeded; the coupon DEMO10 takes 10% off"
    );
    Ok(())
}

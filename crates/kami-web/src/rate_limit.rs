//! Token-bucket rate limits per client IP and per endpoint class (governor),
//! kept in Redis when `KAMI_REDIS_URL` is set so that every instance draws
//! from the same buckets (`rate_limit_redis.rs`). When Redis does not
//! answer, this process's own buckets take over (logged once, counted in
//! `kami_redis_fallbacks_total{what="rate_limit"}`): an outage of Redis
//! neither lifts the limits nor stops the shop.
//!
//! Defaults are deliberately generous per IP: buyers in China often share one
//! carrier-grade NAT address, so a tight per-IP limit would lock out a whole
//! city block; scalpers are held back by per-buyer limits instead. Lookups,
//! which guess at query passwords, are tight per IP and per email.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::rate_limit_redis::SharedLimits;
use crate::redis_conn::{fallback, Redis};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Creating orders (API and storefront form).
    Orders,
    /// Order lookup by email + query password.
    Lookup,
    /// Everything else a stranger can call: product and order reads, pages.
    Reads,
    /// Admin API requests.
    Admin,
    /// Anything that names a coupon code (quotes, orders, the product page):
    /// charged whether the code exists or not, so the answers cannot be
    /// used to guess codes at the order or read rate.
    Coupon,
}

impl Class {
    fn label(self) -> &'static str {
        match self {
            Class::Orders => "orders",
            Class::Lookup => "lookup",
            Class::Reads => "reads",
            Class::Admin => "admin",
            Class::Coupon => "coupon",
        }
    }
}

/// Every class's label in `kami_rate_limited_total`.
pub const CLASS_LABELS: [&str; 5] = ["orders", "lookup", "reads", "admin", "coupon"];

/// The documented defaults: (per second, burst).
pub const DEFAULTS: [(Class, u32, u32); 5] = [
    (Class::Orders, 30, 300),
    (Class::Lookup, 1, 10),
    (Class::Reads, 100, 400),
    (Class::Admin, 50, 200),
    (Class::Coupon, 5, 30),
];
/// Lookups per email: a burst of 5, then one a minute.
const LOOKUP_PER_EMAIL: (Duration, u32) = (Duration::from_secs(60), 5);
/// Payment notifications that fail verification, recorded per IP: a burst
/// of 100, then ten a second. Past it they are still refused and counted,
/// not written to the database: notify endpoints are never rate-limited
/// (API.md), and a stranger posting forged notifications must not be able
/// to fill the database or an order's timeline at wire speed. A gateway
/// misconfigured enough to fail every signature shows within its first
/// hundred. Not switched off by `KAMI_RATE_LIMITS=off`, which is about
/// answers, not records.
const UNVERIFIED_NOTIFICATIONS_RECORDED: (Duration, u32) = (Duration::from_millis(100), 100);
/// Admin sign-ins per IP: ten attempts, then one every six seconds, enough
/// for a person with a typo and far too few for password guessing.
const LOGIN_PER_IP: (Duration, u32) = (Duration::from_secs(6), 10);

pub struct RateLimits {
    enabled: bool,
    orders: DefaultKeyedRateLimiter<IpAddr>,
    lookup: DefaultKeyedRateLimiter<IpAddr>,
    reads: DefaultKeyedRateLimiter<IpAddr>,
    admin: DefaultKeyedRateLimiter<IpAddr>,
    coupon: DefaultKeyedRateLimiter<IpAddr>,
    lookup_email: DefaultKeyedRateLimiter<String>,
    logins: DefaultKeyedRateLimiter<IpAddr>,
    unverified_notifications: DefaultKeyedRateLimiter<IpAddr>,
    shared: Option<SharedLimits>,
}

/// A keyed limiter of `burst` requests, then one per `period`: a bucket as
/// `bucket` gives it.
fn keyed<K: std::hash::Hash + Eq + Clone>(
    (period, burst): (Duration, u32),
) -> DefaultKeyedRateLimiter<K> {
    RateLimiter::keyed(
        Quota::with_period(period)
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(burst).expect("non-zero")),
    )
}

/// (time per token, burst) of a class.
fn bucket(class: Class) -> (Duration, u32) {
    let (_, per_sec, burst) = DEFAULTS
        .iter()
        .find(|(c, _, _)| *c == class)
        .copied()
        .expect("every class has a default");
    (Duration::from_secs(1) / per_sec, burst)
}

/// The bucket a client draws from: an IPv6 client by its /64 (one
/// subscriber's network; counting single addresses would give a client
/// 2^64 buckets), anything else by its address. Also the client a public
/// endpoint's idempotency key is bound to (`api::idempotent::bound_to_client`).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked")),
        v4 => v4,
    }
}

/// The `Retry-After` seconds of a refusal.
fn retry_after(wait: Duration) -> u64 {
    wait.as_secs() + 1
}

impl RateLimits {
    /// Limits kept in Redis, with this process's buckets as the fallback.
    pub fn shared(enabled: bool, redis: Arc<Redis>) -> Self {
        Self {
            shared: Some(SharedLimits::new(redis)),
            ..Self::new(enabled)
        }
    }

    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            orders: keyed(bucket(Class::Orders)),
            lookup: keyed(bucket(Class::Lookup)),
            reads: keyed(bucket(Class::Reads)),
            admin: keyed(bucket(Class::Admin)),
            coupon: keyed(bucket(Class::Coupon)),
            lookup_email: keyed(LOOKUP_PER_EMAIL),
            logins: keyed(LOGIN_PER_IP),
            unverified_notifications: keyed(UNVERIFIED_NOTIFICATIONS_RECORDED),
            shared: None,
        }
    }

    /// Takes a token from one bucket: in Redis under `shared_key()` when
    /// Redis is configured, else (or while Redis does not answer) from this
    /// process's `local` bucket under `key`. A refusal is counted under
    /// `label` and carries the wait.
    async fn take<K: std::hash::Hash + Eq + Clone>(
        &self,
        label: &'static str,
        shared_key: impl FnOnce() -> String,
        (period, burst): (Duration, u32),
        local: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), Duration> {
        if !self.enabled {
            return Ok(());
        }
        let refused = |wait: Duration| {
            metrics::counter!("kami_rate_limited_total", "class" => label).increment(1);
            wait
        };
        if let Some(shared) = &self.shared {
            match shared.check(&shared_key(), period, burst).await {
                Some(None) => return Ok(()),
                Some(Some(wait)) => return Err(refused(wait)),
                None => fallback("rate_limit"),
            }
        }
        local
            .check_key(key)
            .map_err(|not_until| refused(not_until.wait_time_from(DefaultClock::default().now())))
    }

    pub async fn check_ip(&self, class: Class, ip: IpAddr) -> Result<(), ApiError> {
        let ip = client_key(ip);
        let label = class.label();
        let limiter = match class {
            Class::Orders => &self.orders,
            Class::Lookup => &self.lookup,
            Class::Reads => &self.reads,
            Class::Admin => &self.admin,
            Class::Coupon => &self.coupon,
        };
        self.take(
            label,
            || format!("{label}:{ip}"),
            bucket(class),
            limiter,
            &ip,
        )
        .await
        .map_err(|wait| ApiError::rate_limited(retry_after(wait)))
    }

    pub async fn check_email(&self, email: &str) -> Result<(), ApiError> {
        let hashed = || {
            let hashed = hex::encode(Sha256::digest(email.as_bytes()));
            format!("lookup_email:{hashed}")
        };
        self.take(
            "lookup_email",
            hashed,
            LOOKUP_PER_EMAIL,
            &self.lookup_email,
            &email.to_string(),
        )
        .await
        .map_err(|wait| ApiError::rate_limited(retry_after(wait)))
    }

    /// Admin sign-in attempts from `ip`, shared by every instance through
    /// Redis like the other limits; `Err` holds the seconds to wait.
    pub async fn check_login(&self, ip: IpAddr) -> Result<(), u64> {
        let ip = client_key(ip);
        self.take(
            "admin_login",
            || format!("admin_login:{ip}"),
            LOGIN_PER_IP,
            &self.logins,
            &ip,
        )
        .await
        .map_err(retry_after)
    }

    /// Whether one more payment notification from `ip` that failed
    /// verification is recorded (`UNVERIFIED_NOTIFICATIONS_RECORDED`). This
    /// process's own buckets only: a record is a write here.
    pub fn record_unverified_notification(&self, ip: IpAddr) -> bool {
        self.unverified_notifications
            .check_key(&client_key(ip))
            .is_ok()
    }

    /// Forgets idle buckets so the key maps do not grow without bound.
    pub fn prune(&self) {
        self.unverified_notifications.retain_recent();
        self.orders.retain_recent();
        self.lookup.retain_recent();
        self.reads.retain_recent();
        self.admin.retain_recent();
        self.coupon.retain_recent();
        self.lookup_email.retain_recent();
        self.logins.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_is_announced_in_the_metrics() {
        let labels: Vec<&str> = DEFAULTS.iter().map(|(c, _, _)| c.label()).collect();
        assert_eq!(labels, CLASS_LABELS);
    }

    #[tokio::test]
    async fn logins_are_limited_per_ip_unless_limits_are_off() {
        let limits = RateLimits::new(true);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            limits.check_login(ip).await.unwrap();
        }
        assert!(matches!(limits.check_login(ip).await, Err(s) if s >= 1));
        limits
            .check_login("192.0.2.2".parse().unwrap())
            .await
            .unwrap();
        let off = RateLimits::new(false);
        for _ in 0..100 {
            off.check_login(ip).await.unwrap();
        }
    }

    #[tokio::test]
    async fn an_ipv6_client_has_one_bucket_for_its_64() {
        let rl = RateLimits::new(true);
        for i in 0..10u16 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, 0, 0, 1));
            rl.check_ip(Class::Lookup, ip).await.unwrap();
        }
        let next = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 99, 0, 0, 1));
        assert!(rl.check_ip(Class::Lookup, next).await.is_err());
        let other = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        rl.check_ip(Class::Lookup, other).await.unwrap();
    }

    #[tokio::test]
    async fn lookup_bursts_then_limits_per_ip() {
        let rl = RateLimits::new(true);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..10 {
            rl.check_ip(Class::Lookup, ip).await.unwrap();
        }
        let err = rl.check_ip(Class::Lookup, ip).await.unwrap_err();
        assert_eq!(err.code, "rate_limited");
        assert!(err.retry_after.unwrap() >= 1);
        rl.check_ip(Class::Lookup, "127.0.0.2".parse().unwrap())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn disabled_limits_never_reject() {
        let rl = RateLimits::new(false);
        for _ in 0..1000 {
            rl.check_ip(Class::Lookup, "10.0.0.1".parse().unwrap())
                .await
                .unwrap();
            rl.check_email("a@b.c").await.unwrap();
        }
    }
}

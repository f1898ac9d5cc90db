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

/// The documented defaults: (per second, burst).
pub const DEFAULTS: [(Class, u32, u32); 5] = [
    (Class::Orders, 30, 300),
    (Class::Lookup, 1, 10),
    (Class::Reads, 100, 400),
    (Class::Admin, 50, 200),
    (Class::Coupon, 5, 30),
];
/// Lookups per email: a burst of 5, then one a minute.
const LOOKUP_PER_EMAIL: (u32, Duration) = (5, Duration::from_secs(60));
/// Admin sign-ins per IP: ten attempts, then one every six seconds, enough
/// for a person with a typo and far too few for password guessing.
const LOGIN_PER_IP: (u32, Duration) = (10, Duration::from_secs(6));

pub struct RateLimits {
    enabled: bool,
    orders: DefaultKeyedRateLimiter<IpAddr>,
    lookup: DefaultKeyedRateLimiter<IpAddr>,
    reads: DefaultKeyedRateLimiter<IpAddr>,
    admin: DefaultKeyedRateLimiter<IpAddr>,
    coupon: DefaultKeyedRateLimiter<IpAddr>,
    lookup_email: DefaultKeyedRateLimiter<String>,
    logins: DefaultKeyedRateLimiter<IpAddr>,
    shared: Option<SharedLimits>,
}

/// A keyed limiter of `burst` requests, then one per `period`.
fn keyed<K: std::hash::Hash + Eq + Clone>(
    (burst, period): (u32, Duration),
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

fn quota(class: Class) -> Quota {
    let (per_token, burst) = bucket(class);
    Quota::with_period(per_token)
        .expect("non-zero period")
        .allow_burst(NonZeroU32::new(burst).expect("non-zero"))
}

/// The bucket a client draws from: an IPv6 client by its /64 (one
/// subscriber's network; counting single addresses would give a client
/// 2^64 buckets), anything else by its address.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked")),
        v4 => v4,
    }
}

fn refused(label: &'static str, wait: Duration) -> ApiError {
    metrics::counter!("kami_rate_limited_total", "class" => label).increment(1);
    ApiError::rate_limited(wait.as_secs() + 1)
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
            orders: RateLimiter::keyed(quota(Class::Orders)),
            lookup: RateLimiter::keyed(quota(Class::Lookup)),
            reads: RateLimiter::keyed(quota(Class::Reads)),
            admin: RateLimiter::keyed(quota(Class::Admin)),
            coupon: RateLimiter::keyed(quota(Class::Coupon)),
            lookup_email: keyed(LOOKUP_PER_EMAIL),
            logins: keyed(LOGIN_PER_IP),
            shared: None,
        }
    }

    pub async fn check_ip(&self, class: Class, ip: IpAddr) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let ip = client_key(ip);
        let label = class.label();
        if let Some(shared) = &self.shared {
            let (per_token, burst) = bucket(class);
            match shared
                .check(&format!("{label}:{ip}"), per_token, burst)
                .await
            {
                Some(None) => return Ok(()),
                Some(Some(wait)) => return Err(refused(label, wait)),
                None => fallback("rate_limit"),
            }
        }
        let limiter = match class {
            Class::Orders => &self.orders,
            Class::Lookup => &self.lookup,
            Class::Reads => &self.reads,
            Class::Admin => &self.admin,
            Class::Coupon => &self.coupon,
        };
        limiter.check_key(&ip).map_err(|not_until| {
            refused(
                label,
                not_until.wait_time_from(DefaultClock::default().now()),
            )
        })
    }

    pub async fn check_email(&self, email: &str) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        if let Some(shared) = &self.shared {
            let (burst, period) = LOOKUP_PER_EMAIL;
            let hashed = hex::encode(Sha256::digest(email.as_bytes()));
            match shared
                .check(&format!("lookup_email:{hashed}"), period, burst)
                .await
            {
                Some(None) => return Ok(()),
                Some(Some(wait)) => return Err(refused("lookup_email", wait)),
                None => fallback("rate_limit"),
            }
        }
        self.lookup_email
            .check_key(&email.to_string())
            .map_err(|not_until| {
                refused(
                    "lookup_email",
                    not_until.wait_time_from(DefaultClock::default().now()),
                )
            })
    }

    /// Admin sign-in attempts from `ip`, shared by every instance through
    /// Redis like the other limits; `Err` holds the seconds to wait.
    pub async fn check_login(&self, ip: IpAddr) -> Result<(), u64> {
        if !self.enabled {
            return Ok(());
        }
        let ip = client_key(ip);
        let wait = |d: Duration| {
            metrics::counter!("kami_rate_limited_total", "class" => "admin_login").increment(1);
            d.as_secs() + 1
        };
        if let Some(shared) = &self.shared {
            let (burst, period) = LOGIN_PER_IP;
            match shared
                .check(&format!("admin_login:{ip}"), period, burst)
                .await
            {
                Some(None) => return Ok(()),
                Some(Some(d)) => return Err(wait(d)),
                None => fallback("rate_limit"),
            }
        }
        self.logins
            .check_key(&ip)
            .map_err(|not_until| wait(not_until.wait_time_from(DefaultClock::default().now())))
    }

    /// Forgets idle buckets so the key maps do not grow without bound.
    pub fn prune(&self) {
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

//! Token-bucket rate limits per client IP and per endpoint class (governor).
//!
//! Defaults are deliberately generous per IP: buyers in China often share one
//! carrier-grade NAT address, so a tight per-IP limit would lock out a whole
//! city block; scalpers are held back by per-buyer limits instead. Lookups,
//! which guess at query passwords, are tight per IP and per email.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

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
}

/// The documented defaults: (per second, burst).
pub const DEFAULTS: [(Class, u32, u32); 4] = [
    (Class::Orders, 30, 300),
    (Class::Lookup, 1, 10),
    (Class::Reads, 100, 400),
    (Class::Admin, 50, 200),
];
/// Lookups per email: a burst of 5, then one a minute.
const LOOKUP_PER_EMAIL: (u32, Duration) = (5, Duration::from_secs(60));

pub struct RateLimits {
    enabled: bool,
    orders: DefaultKeyedRateLimiter<IpAddr>,
    lookup: DefaultKeyedRateLimiter<IpAddr>,
    reads: DefaultKeyedRateLimiter<IpAddr>,
    admin: DefaultKeyedRateLimiter<IpAddr>,
    lookup_email: DefaultKeyedRateLimiter<String>,
}

fn quota(class: Class) -> Quota {
    let (_, per_sec, burst) = DEFAULTS
        .iter()
        .find(|(c, _, _)| *c == class)
        .copied()
        .expect("every class has a default");
    Quota::per_second(NonZeroU32::new(per_sec).expect("non-zero"))
        .allow_burst(NonZeroU32::new(burst).expect("non-zero"))
}

impl RateLimits {
    pub fn new(enabled: bool) -> Self {
        let (burst, period) = LOOKUP_PER_EMAIL;
        Self {
            enabled,
            orders: RateLimiter::keyed(quota(Class::Orders)),
            lookup: RateLimiter::keyed(quota(Class::Lookup)),
            reads: RateLimiter::keyed(quota(Class::Reads)),
            admin: RateLimiter::keyed(quota(Class::Admin)),
            lookup_email: RateLimiter::keyed(
                Quota::with_period(period)
                    .expect("non-zero period")
                    .allow_burst(NonZeroU32::new(burst).expect("non-zero")),
            ),
        }
    }

    pub fn check_ip(&self, class: Class, ip: IpAddr) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let limiter = match class {
            Class::Orders => &self.orders,
            Class::Lookup => &self.lookup,
            Class::Reads => &self.reads,
            Class::Admin => &self.admin,
        };
        limiter.check_key(&ip).map_err(|not_until| {
            metrics::counter!("kami_rate_limited_total", "class" => format!("{class:?}").to_lowercase())
                .increment(1);
            ApiError::rate_limited(not_until.wait_time_from(DefaultClock::default().now()).as_secs() + 1)
        })
    }

    pub fn check_email(&self, email: &str) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        self.lookup_email
            .check_key(&email.to_string())
            .map_err(|not_until| {
                metrics::counter!("kami_rate_limited_total", "class" => "lookup_email")
                    .increment(1);
                ApiError::rate_limited(
                    not_until
                        .wait_time_from(DefaultClock::default().now())
                        .as_secs()
                        + 1,
                )
            })
    }

    /// Forgets idle buckets so the key maps do not grow without bound.
    pub fn prune(&self) {
        self.orders.retain_recent();
        self.lookup.retain_recent();
        self.reads.retain_recent();
        self.admin.retain_recent();
        self.lookup_email.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_bursts_then_limits_per_ip() {
        let rl = RateLimits::new(true);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..10 {
            rl.check_ip(Class::Lookup, ip).unwrap();
        }
        let err = rl.check_ip(Class::Lookup, ip).unwrap_err();
        assert_eq!(err.code, "rate_limited");
        assert!(err.retry_after.unwrap() >= 1);
        rl.check_ip(Class::Lookup, "127.0.0.2".parse().unwrap())
            .unwrap();
    }

    #[test]
    fn disabled_limits_never_reject() {
        let rl = RateLimits::new(false);
        for _ in 0..1000 {
            rl.check_ip(Class::Lookup, "10.0.0.1".parse().unwrap())
                .unwrap();
            rl.check_email("a@b.c").unwrap();
        }
    }
}

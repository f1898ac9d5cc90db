//! A warning said at most once every ten seconds: for things that, under
//! attack or overload, happen on every request. The log is a record too, and
//! a line per refused request would fill the disk at the attacker's rate;
//! the counters in `/metrics` keep the exact numbers.

use std::sync::atomic::{AtomicI64, Ordering};

use kami_core::now_millis;

/// Seconds between two warnings of the same `Rarely`.
const EVERY_SECS: i64 = 10;

pub struct Rarely {
    /// Unix seconds of the last warning.
    said_at: AtomicI64,
}

impl Rarely {
    pub const fn new() -> Self {
        Self {
            said_at: AtomicI64::new(0),
        }
    }

    /// Whether it is time to say it again; true for one caller at most
    /// every ten seconds.
    pub fn due(&self) -> bool {
        let now = now_millis() / 1000;
        let last = self.said_at.load(Ordering::Relaxed);
        now - last >= EVERY_SECS
            && self
                .said_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl Default for Rarely {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn says_it_once_then_keeps_quiet() {
        let r = super::Rarely::new();
        assert!(r.due());
        assert!(!r.due());
        assert!(!r.due());
    }
}

//! A circuit breaker per payment channel. After `threshold` consecutive
//! failed `create_payment` calls the channel opens: the storefront stops
//! offering it and new orders for it are refused, so buyers pick another
//! channel instead of reserving codes they cannot pay for. After the
//! cool-down the channel is offered again and the next real create is the
//! probe: success closes the breaker, failure opens it for another cool-down.
//!
//! State is per process: each instance learns of a failing gateway from its
//! own calls, which is what decides whether *it* can start payments.

use std::collections::HashMap;
use std::sync::Mutex;

use kami_core::{now_millis, Millis};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Millis },
}

pub struct Breakers {
    threshold: u32,
    cooldown_ms: i64,
    states: Mutex<HashMap<String, State>>,
}

impl Breakers {
    pub fn new(channels: &[&str], threshold: u32, cooldown_ms: i64) -> Self {
        for c in channels {
            gauge(c, false);
        }
        Self {
            threshold: threshold.max(1),
            cooldown_ms,
            states: Mutex::new(HashMap::new()),
        }
    }

    fn state(&self, channel: &str) -> State {
        self.states
            .lock()
            .expect("breaker lock")
            .get(channel)
            .copied()
            .unwrap_or(State::Closed { failures: 0 })
    }

    /// Whether the channel may be offered and a payment started on it: closed,
    /// or open with its cool-down over (the next create is the probe).
    pub fn allows(&self, channel: &str) -> bool {
        match self.state(channel) {
            State::Closed { .. } => true,
            State::Open { until } => now_millis() >= until,
        }
    }

    /// Open (tripped and not yet closed by a successful probe).
    pub fn is_open(&self, channel: &str) -> bool {
        matches!(self.state(channel), State::Open { .. })
    }

    pub fn record_success(&self, channel: &str) {
        let mut states = self.states.lock().expect("breaker lock");
        if let Some(State::Open { .. }) =
            states.insert(channel.to_string(), State::Closed { failures: 0 })
        {
            tracing::info!(channel, "payment channel recovered; circuit closed");
        }
        gauge(channel, false);
    }

    pub fn record_failure(&self, channel: &str) {
        let mut states = self.states.lock().expect("breaker lock");
        let next = match states.get(channel).copied() {
            // A failed probe (or a failure racing it) opens it again.
            Some(State::Open { .. }) => State::Open {
                until: now_millis() + self.cooldown_ms,
            },
            Some(State::Closed { failures }) if failures + 1 >= self.threshold => State::Open {
                until: now_millis() + self.cooldown_ms,
            },
            None if self.threshold <= 1 => State::Open {
                until: now_millis() + self.cooldown_ms,
            },
            Some(State::Closed { failures }) => State::Closed {
                failures: failures + 1,
            },
            None => State::Closed { failures: 1 },
        };
        if let State::Open { .. } = next {
            tracing::warn!(
                channel,
                cooldown_ms = self.cooldown_ms,
                "payment channel failing; circuit open"
            );
        }
        gauge(channel, matches!(next, State::Open { .. }));
        states.insert(channel.to_string(), next);
    }
}

fn gauge(channel: &str, open: bool) {
    metrics::gauge!("kami_channel_circuit_open", "channel" => channel.to_string()).set(if open {
        1.0
    } else {
        0.0
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_a_probe_closes_it() {
        let b = Breakers::new(&["epay"], 3, 0);
        b.record_failure("epay");
        b.record_failure("epay");
        assert!(!b.is_open("epay"));
        b.record_failure("epay");
        assert!(b.is_open("epay"));
        // Cool-down 0: offered again at once, for the probe.
        assert!(b.allows("epay"));
        b.record_failure("epay");
        assert!(b.is_open("epay"));
        b.record_success("epay");
        assert!(!b.is_open("epay") && b.allows("epay"));
        assert!(b.allows("stripe"));
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breakers::new(&[], 2, 60_000);
        b.record_failure("x");
        b.record_success("x");
        b.record_failure("x");
        assert!(!b.is_open("x"));
        b.record_failure("x");
        assert!(b.is_open("x") && !b.allows("x"));
    }
}

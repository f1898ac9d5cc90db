//! Sold-out verdicts of the shared gate, kept in this process: once a drop
//! is gone, an instance answers `sold_out` from memory instead of waiting
//! for a Redis script run per batch (at stop 26 that wait cost a sold-out
//! answer twice the server's CPU of one from the in-process gate, and the
//! answers fell under the 0.60 of the ceiling; PERFORMANCE.md,
//! stop 27).
//!
//! A mark says "Redis found this product's count at 0 or below". It is
//! taken only from a script run that began while this instance was
//! subscribed to `<prefix>gate:raised`, and every script that lifts a count
//! from 0 or below to above it (`gate_give_back.lua`, `gate_set.lua`)
//! publishes the product there. So a mark is wiped by the first raise after
//! the run that made it, on every instance, as soon as the message arrives
//! (well under a millisecond on one network): a restock through one
//! instance is sold through every other at once, give or take that
//! message. A raise that arrives while the run is still out (the script ran
//! before the raise, its answer comes after the message) keeps the run from
//! marking at all: raises are numbered in the order they arrive, and a run
//! remembers the number it was sent after.
//!
//! Without the subscription (not yet connected, or lost: Redis restarted,
//! the network broke, a ping went unanswered) no mark is used, and every
//! mark made before is dropped, since raises may have been missed. A mark
//! also lapses after `ttl` (the re-sync period), so a raise missed on a
//! connection that died unnoticed (until its next ping) turns buyers away
//! for no longer than a count left too low already could (`gate.rs`). The
//! gate only rejects; the database decides (invariant 6).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub(super) struct Marks {
    ttl: Duration,
    /// Subscribed to raises: marks may be made and used.
    listening: AtomicBool,
    /// Products found sold out, and until when the mark holds. Read by
    /// every order without a lock; replaced whole (under `raises`) by the
    /// rare mark or raise.
    sold_out: ArcSwap<HashMap<i64, Instant>>,
    raises: Mutex<Raises>,
}

/// Raises numbered in the order they reached this process.
#[derive(Default)]
struct Raises {
    last: u64,
    /// Each product's last raise.
    by_product: HashMap<i64, u64>,
    /// The last time the subscription began or ended: any raise may have
    /// been missed before it.
    all: u64,
}

impl Marks {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            listening: AtomicBool::new(false),
            sold_out: ArcSwap::default(),
            raises: Mutex::default(),
        }
    }

    /// Whether `product_id` is known sold out: the order is refused without
    /// asking Redis.
    pub(super) fn sold_out(&self, product_id: i64) -> bool {
        self.listening.load(Ordering::Acquire)
            && self
                .sold_out
                .load()
                .get(&product_id)
                .is_some_and(|until| Instant::now() < *until)
    }

    /// The number a script run about to be sent must name when it marks.
    pub(super) fn since(&self) -> u64 {
        self.raises.lock().expect("marks lock").last
    }

    /// A script run sent at `sent`, after raise `since`, found `product_id`
    /// sold out. Not marked if a raise arrived since (it may have come after
    /// the run) or the subscription is not up. The mark's lifetime counts
    /// from `sent`: however late the answer, it holds no longer after the
    /// run than `ttl`.
    pub(super) fn mark(&self, product_id: i64, since: u64, sent: Instant) {
        let raises = self.raises.lock().expect("marks lock");
        if !self.listening.load(Ordering::Acquire)
            || raises.all > since
            || raises
                .by_product
                .get(&product_id)
                .is_some_and(|r| *r > since)
            || self.sold_out(product_id)
        {
            return;
        }
        let now = Instant::now();
        let mut marks = HashMap::clone(&self.sold_out.load());
        marks.retain(|_, until| now < *until);
        marks.insert(product_id, sent + self.ttl);
        self.sold_out.store(Arc::new(marks));
    }

    /// `product_id`'s count was lifted above 0 (a message from any
    /// instance, or this one's own script's answer).
    pub(super) fn raised(&self, product_id: i64) {
        let mut raises = self.raises.lock().expect("marks lock");
        raises.last += 1;
        let n = raises.last;
        raises.by_product.insert(product_id, n);
        let current = self.sold_out.load();
        if current.contains_key(&product_id) {
            let mut marks = HashMap::clone(&current);
            marks.remove(&product_id);
            self.sold_out.store(Arc::new(marks));
        }
    }

    /// The subscription began (`true`) or was lost: either way raises may
    /// have gone unheard, so every mark goes.
    pub(super) fn listen(&self, on: bool) {
        {
            let mut raises = self.raises.lock().expect("marks lock");
            raises.last += 1;
            raises.all = raises.last;
            self.sold_out.store(Arc::default());
            self.listening.store(on, Ordering::Release);
        }
        metrics::gauge!("kami_gate_raises_subscribed").set(if on { 1.0 } else { 0.0 });
    }

    #[cfg(test)]
    pub(super) fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listening() -> Marks {
        let m = Marks::new(Duration::from_secs(60));
        m.listen(true);
        m
    }

    #[test]
    fn a_mark_holds_until_a_raise() {
        let m = listening();
        let since = m.since();
        m.mark(1, since, Instant::now());
        assert!(m.sold_out(1));
        assert!(!m.sold_out(2));
        m.raised(1);
        assert!(!m.sold_out(1));
    }

    /// The run found the product sold out before another instance
    /// restocked it, and the restock's message arrived before the run's
    /// answer: the answer must not mark.
    #[test]
    fn a_raise_heard_while_a_run_is_out_keeps_it_from_marking() {
        let m = listening();
        let since = m.since();
        m.raised(1);
        m.mark(1, since, Instant::now());
        assert!(!m.sold_out(1));
        // Another product's raise does not stop a mark.
        let since = m.since();
        m.raised(2);
        m.mark(1, since, Instant::now());
        assert!(m.sold_out(1));
    }

    #[test]
    fn without_the_subscription_nothing_is_marked_or_used() {
        let m = Marks::new(Duration::from_secs(60));
        m.mark(1, m.since(), Instant::now());
        assert!(!m.sold_out(1), "marked before the subscription");
        m.listen(true);
        // A run sent before the subscription began may have missed raises.
        let before = 0;
        m.mark(1, before, Instant::now());
        assert!(!m.sold_out(1));
        m.mark(1, m.since(), Instant::now());
        assert!(m.sold_out(1));
        m.listen(false);
        assert!(!m.sold_out(1), "a mark outlived the subscription");
        m.listen(true);
        assert!(!m.sold_out(1), "a mark survived a new subscription");
    }

    /// A late answer marks for what is left of the lifetime since its run
    /// was sent, not a whole lifetime from its arrival.
    #[test]
    fn a_mark_counts_its_lifetime_from_the_run() {
        let m = Marks::new(Duration::from_millis(200));
        m.listen(true);
        let since = m.since();
        m.mark(1, since, Instant::now() - Duration::from_millis(300));
        assert!(!m.sold_out(1), "a run older than the lifetime marked");
        m.mark(2, since, Instant::now() - Duration::from_millis(100));
        assert!(m.sold_out(2));
    }

    #[test]
    fn a_mark_lapses_and_is_made_again() {
        let m = Marks::new(Duration::from_millis(200));
        m.listen(true);
        m.mark(1, m.since(), Instant::now());
        assert!(m.sold_out(1));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!m.sold_out(1));
        m.mark(1, m.since(), Instant::now());
        assert!(m.sold_out(1), "a lapsed mark was not made again");
        // And after a raise, by a run sent after it.
        m.raised(1);
        m.mark(1, m.since(), Instant::now());
        assert!(m.sold_out(1), "no mark after a raise");
    }
}

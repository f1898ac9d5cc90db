//! The stock gate: a per-product count of available codes, so that once a
//! drop is gone, `sold_out` costs no database round trip (DESIGN.md,
//! "Allocation under a flash sale"). It lives in this process's memory, or
//! — with `KAMI_REDIS_URL` — in Redis, so that every instance shares it
//! (`gate_redis.rs`).
//!
//! Invariant 6: the gate only rejects; the database decides. It may only
//! ever say "no" to an order the database would refuse too — so whenever it
//! is unsure it lets the request through, and every database answer puts it
//! right again. Its count can be wrong in both directions for a moment:
//! too high is harmless (the database refuses), too low would turn buyers
//! away wrongly, so counts below `EXACT_BELOW` are re-read from the database
//! every second (another instance's expiry or restock shows up within it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use kami_store::{Result as StoreResult, Store};

use super::gate_redis::{Hold, SharedGate};
use crate::redis_conn::Redis;

/// Counts at or above this are never re-read periodically: the gate cannot
/// reject on them (no order asks for that many), and counting a big stock
/// would cost more than it saves.
pub const EXACT_BELOW: i64 = 10_000;

/// The gate's answer before an order goes to the database.
#[derive(Debug)]
pub enum Admission {
    /// Let the database decide. With Redis, the codes asked for are held in
    /// the shared count until `StockGate::settle` (or the hold is dropped).
    Pass(Hold),
    /// Certain: the database would answer `sold_out`.
    SoldOut,
    /// Certain: only this many are left, fewer than asked.
    Insufficient(i64),
}

/// What the database answered an admitted order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The codes are reserved.
    Reserved,
    /// Nothing is available.
    SoldOut,
    /// Refused for another reason (or not answered): the gate learnt
    /// nothing about the stock.
    Refused,
}

#[derive(Default)]
pub struct StockGate {
    /// The counts this process decides on; with Redis, a mirror of the
    /// shared counts for display (product pages and `/metrics`).
    local: LocalCounts,
    shared: Option<SharedGate>,
}

impl StockGate {
    /// The gate shared through Redis.
    pub fn shared(redis: Arc<Redis>) -> Self {
        Self {
            local: LocalCounts::default(),
            shared: Some(SharedGate::new(redis)),
        }
    }

    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Loads every product's count (at start: the gate is only as good as the
    /// database it was read from). In Redis, counts other instances keep are
    /// left alone unless they could reject.
    pub async fn load(&self, store: &dyn Store) -> StoreResult<()> {
        let products = store.list_products(false).await?;
        match &self.shared {
            Some(shared) => {
                let ids: Vec<i64> = products.iter().map(|p| p.id).collect();
                shared.resync(store, &ids, &self.local, true).await
            }
            None => {
                self.local.replace(products.iter().map(|p| (p.id, p.stock)));
                Ok(())
            }
        }
    }

    pub async fn admit(&self, product_id: i64, quantity: i64) -> Admission {
        match &self.shared {
            Some(shared) => shared.admit(product_id, quantity, &self.local).await,
            None => match self.local.get(product_id) {
                Some(left) if left < quantity => verdict(left),
                _ => Admission::Pass(Hold::none()),
            },
        }
    }

    /// The database answered an order the gate admitted.
    pub async fn settle(&self, product_id: i64, quantity: i64, hold: Hold, outcome: Settled) {
        match &self.shared {
            Some(shared) => shared.settle(product_id, hold, outcome, &self.local).await,
            None => match outcome {
                Settled::Reserved => self.local.add(product_id, -quantity),
                Settled::SoldOut => self.local.set(product_id, 0),
                Settled::Refused => {}
            },
        }
    }

    /// The gate's count, if it has one (for display: it may lag by a second
    /// what other instances sold).
    pub fn count(&self, product_id: i64) -> Option<i64> {
        if self.shared.as_ref().is_some_and(|s| !s.available()) {
            return None;
        }
        self.local.get(product_id)
    }

    /// The database just said how many are available (a new product: 0).
    pub async fn observed(&self, product_id: i64, available: i64) {
        match &self.shared {
            Some(shared) => shared.set(product_id, available, &self.local).await,
            None => self.local.set(product_id, available),
        }
    }

    /// An expiry released `quantity` codes. The shared count takes them
    /// back as a delta, which cannot undo a concurrent order's decrement
    /// the way a re-read count could.
    pub async fn released(
        &self,
        store: &dyn Store,
        product_id: i64,
        quantity: i64,
    ) -> StoreResult<()> {
        match &self.shared {
            Some(shared) => {
                shared.give_back(product_id, quantity, &self.local).await;
                Ok(())
            }
            None => self.refresh(store, product_id).await,
        }
    }

    /// `quantity` available codes left the stock outside an order (an
    /// operator voided them): the count drops by as many, whatever its size
    /// (a re-read leaves a big count alone). Lower than the truth only if a
    /// re-read raced it, and then only until the next re-sync.
    pub async fn removed(&self, product_id: i64, quantity: i64) {
        match &self.shared {
            Some(shared) => shared.give_back(product_id, -quantity, &self.local).await,
            None => self.local.add(product_id, -quantity),
        }
    }

    /// Re-reads one product's count after its stock changed outside an
    /// order (import, fulfilment, late payment). A count that is below
    /// `EXACT_BELOW` in the database is taken as is; a bigger one only
    /// replaces a count of ours that is small (and could wrongly reject).
    pub async fn refresh(&self, store: &dyn Store, product_id: i64) -> StoreResult<()> {
        match &self.shared {
            Some(shared) => shared.refresh(store, product_id, &self.local).await,
            None => {
                let n = store.available_count(product_id, EXACT_BELOW).await?;
                if n < EXACT_BELOW {
                    self.local.set(product_id, n);
                } else if self.local.get(product_id).is_none_or(|c| c < EXACT_BELOW) {
                    let exact = store.available_count(product_id, i64::MAX).await?;
                    self.local.set(product_id, exact);
                }
                Ok(())
            }
        }
    }

    /// The periodic re-sync: every product whose count could make the gate
    /// reject is read again, so a wrong "no" lasts at most one period.
    /// `product_ids` are the shop's products (Redis: the counts to check;
    /// in process, the gate knows its own).
    pub async fn resync(&self, store: &dyn Store, product_ids: &[i64]) -> StoreResult<()> {
        if let Some(shared) = &self.shared {
            return shared.resync(store, product_ids, &self.local, false).await;
        }
        for product_id in self.local.below(EXACT_BELOW) {
            self.refresh(store, product_id).await?;
        }
        Ok(())
    }
}

pub(super) fn verdict(left: i64) -> Admission {
    if left <= 0 {
        Admission::SoldOut
    } else {
        Admission::Insufficient(left)
    }
}

/// Per-product counts in this process.
#[derive(Default)]
pub(super) struct LocalCounts {
    counts: RwLock<HashMap<i64, AtomicI64>>,
}

impl LocalCounts {
    pub(super) fn get(&self, product_id: i64) -> Option<i64> {
        let counts = self.counts.read().expect("gate lock");
        counts
            .get(&product_id)
            .map(|c| c.load(Ordering::Relaxed).max(0))
    }

    pub(super) fn add(&self, product_id: i64, delta: i64) {
        if let Some(c) = self.counts.read().expect("gate lock").get(&product_id) {
            c.fetch_add(delta, Ordering::Relaxed);
        }
    }

    pub(super) fn set(&self, product_id: i64, n: i64) {
        {
            let counts = self.counts.read().expect("gate lock");
            if let Some(c) = counts.get(&product_id) {
                c.store(n, Ordering::Relaxed);
                return;
            }
        }
        self.counts
            .write()
            .expect("gate lock")
            .insert(product_id, AtomicI64::new(n));
    }

    pub(super) fn forget(&self, product_id: i64) {
        self.counts.write().expect("gate lock").remove(&product_id);
    }

    fn replace(&self, all: impl Iterator<Item = (i64, i64)>) {
        let mut counts = self.counts.write().expect("gate lock");
        counts.clear();
        counts.extend(all.map(|(id, n)| (id, AtomicI64::new(n))));
    }

    fn below(&self, limit: i64) -> Vec<i64> {
        let counts = self.counts.read().expect("gate lock");
        counts
            .iter()
            .filter(|(_, c)| c.load(Ordering::Relaxed) < limit)
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passes(a: &Admission) -> bool {
        matches!(a, Admission::Pass(_))
    }

    #[tokio::test]
    async fn unknown_products_pass_and_counts_reject_only_when_short() {
        let g = StockGate::default();
        assert!(passes(&g.admit(1, 5).await));
        g.observed(1, 3).await;
        assert!(passes(&g.admit(1, 3).await));
        assert!(matches!(g.admit(1, 4).await, Admission::Insufficient(3)));
        g.settle(1, 3, Hold::none(), Settled::Reserved).await;
        assert!(matches!(g.admit(1, 1).await, Admission::SoldOut));
        g.observed(1, 2).await;
        assert!(passes(&g.admit(1, 2).await));
    }
}

//! The stock gate: a per-product count of available codes kept in memory, so
//! that once a drop is gone, `sold_out` costs no database round trip
//! (DESIGN.md, "Allocation under a flash sale").
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
use std::sync::RwLock;

use kami_store::{Result as StoreResult, Store};

/// Counts at or above this are never re-read periodically: the gate cannot
/// reject on them (no order asks for that many), and counting a big stock
/// would cost more than it saves.
pub const EXACT_BELOW: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateVerdict {
    /// Let the database decide.
    Pass,
    /// Certain: the database would answer `sold_out`.
    SoldOut,
    /// Certain: only this many are left, fewer than asked.
    Insufficient(i64),
}

#[derive(Default)]
pub struct StockGate {
    counts: RwLock<HashMap<i64, AtomicI64>>,
}

impl StockGate {
    /// Loads every product's count (at start: the gate is only as good as the
    /// database it was read from).
    pub async fn load(&self, store: &dyn Store) -> StoreResult<()> {
        let products = store.list_products(false).await?;
        let mut counts = self.counts.write().expect("gate lock");
        counts.clear();
        for p in products {
            counts.insert(p.id, AtomicI64::new(p.stock));
        }
        Ok(())
    }

    pub fn check(&self, product_id: i64, quantity: i64) -> GateVerdict {
        let Some(left) = self.count(product_id) else {
            return GateVerdict::Pass;
        };
        if left >= quantity {
            GateVerdict::Pass
        } else if left <= 0 {
            GateVerdict::SoldOut
        } else {
            GateVerdict::Insufficient(left)
        }
    }

    /// The gate's count, if it has one.
    pub fn count(&self, product_id: i64) -> Option<i64> {
        let counts = self.counts.read().expect("gate lock");
        counts
            .get(&product_id)
            .map(|c| c.load(Ordering::Relaxed).max(0))
    }

    /// The database reserved `quantity` codes.
    pub fn reserved(&self, product_id: i64, quantity: i64) {
        if let Some(c) = self.counts.read().expect("gate lock").get(&product_id) {
            c.fetch_sub(quantity, Ordering::Relaxed);
        }
    }

    /// The database just said how many are available (0 for `sold_out`).
    pub fn observed(&self, product_id: i64, available: i64) {
        {
            let counts = self.counts.read().expect("gate lock");
            if let Some(c) = counts.get(&product_id) {
                c.store(available, Ordering::Relaxed);
                return;
            }
        }
        self.counts
            .write()
            .expect("gate lock")
            .insert(product_id, AtomicI64::new(available));
    }

    /// Re-reads one product's count after its stock changed outside an
    /// order (import, expiry, fulfilment, late payment). A count that is
    /// below `EXACT_BELOW` in the database is taken as is; a bigger one only
    /// replaces a count of ours that is small (and could wrongly reject).
    pub async fn refresh(&self, store: &dyn Store, product_id: i64) -> StoreResult<()> {
        let n = store.available_count(product_id, EXACT_BELOW).await?;
        if n < EXACT_BELOW {
            self.observed(product_id, n);
        } else if self.count(product_id).is_none_or(|c| c < EXACT_BELOW) {
            let exact = store.available_count(product_id, i64::MAX).await?;
            self.observed(product_id, exact);
        }
        Ok(())
    }

    /// The periodic re-sync: every product whose count could make the gate
    /// reject is read again, so a wrong "no" lasts at most one period.
    pub async fn refresh_low(&self, store: &dyn Store) -> StoreResult<()> {
        let low: Vec<i64> = {
            let counts = self.counts.read().expect("gate lock");
            counts
                .iter()
                .filter(|(_, c)| c.load(Ordering::Relaxed) < EXACT_BELOW)
                .map(|(id, _)| *id)
                .collect()
        };
        for product_id in low {
            self.refresh(store, product_id).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_products_pass_and_counts_reject_only_when_short() {
        let g = StockGate::default();
        assert_eq!(g.check(1, 5), GateVerdict::Pass);
        g.observed(1, 3);
        assert_eq!(g.check(1, 3), GateVerdict::Pass);
        assert_eq!(g.check(1, 4), GateVerdict::Insufficient(3));
        g.reserved(1, 3);
        assert_eq!(g.check(1, 1), GateVerdict::SoldOut);
        g.observed(1, 2);
        assert_eq!(g.check(1, 2), GateVerdict::Pass);
    }
}

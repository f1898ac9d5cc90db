//! The orders this instance created lately, as much as a payment
//! notification checks about them: the order's id, product, amount,
//! currency and channel never change once the order exists, so the
//! notification needs no database read to compare them (pg_stat_statements
//! in a PostgreSQL notification storm: 60,000 order reads, one per
//! notification, most of the storm's statements). The payment itself is still decided by
//! the database in the payment's transaction; only the order's status is
//! assumed here, and only while the order cannot have expired yet.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use kami_core::{Millis, OrderStatus};
use kami_store::Order;

/// How long before its expiry an order is no longer answered from memory:
/// room for another instance's clock running ahead of ours.
const EXPIRY_MARGIN_MS: Millis = 10_000;

/// Orders remembered at most (about 150 bytes each).
const CAPACITY: usize = 131_072;

/// Independent parts the memory is split into, each with its own lock, map
/// and age queue, an order going to one by a hash of its number. One map of
/// 131,072 orders doubled its table when it passed 57,344 and 114,688
/// entries, rehashing every key while holding the one lock, and neither
/// HTTP worker could create an order or take a notification meanwhile (perf
/// in a drop: `reserve_rehash` and SipHash, a worker alone on its core while
/// the other slept on the lock and no answer went out). The slowest of
/// 131,072 `remember`s in a row (a release-build probe, stop 46): 17.7–18.1
/// ms in one map, 1.2–1.6 ms in sixteen, and the workers seldom meet on a
/// lock.
const SHARDS: usize = 16;
const SHARD_CAPACITY: usize = CAPACITY / SHARDS;

/// What a payment notification checks about an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayFacts {
    pub id: i64,
    pub order_no: String,
    pub product_id: i64,
    pub amount: i64,
    pub currency: String,
    pub channel: String,
    pub created_at: Millis,
    /// As read from the database, or `Pending` when answered from memory.
    pub status: OrderStatus,
}

impl PayFacts {
    pub fn of(o: &Order) -> Self {
        Self {
            id: o.id,
            order_no: o.order_no.clone(),
            product_id: o.product_id,
            amount: o.amount,
            currency: o.currency.clone(),
            channel: o.channel.clone(),
            created_at: o.created_at,
            status: o.status.0,
        }
    }
}

/// An order as remembered: its number is shared with the age queue, and
/// its currency and channel with every other order (a handful of values).
struct Remembered {
    id: i64,
    product_id: i64,
    amount: i64,
    created_at: Millis,
    expires_at: Millis,
    currency: Arc<str>,
    channel: Arc<str>,
}

#[derive(Default)]
struct Inner {
    by_no: HashMap<Arc<str>, Remembered>,
    /// Order numbers, oldest first: the one to forget when full.
    age: VecDeque<Arc<str>>,
    /// The currencies and channel names seen, each stored once.
    names: HashSet<Arc<str>>,
}

impl Inner {
    fn name(&mut self, s: &str) -> Arc<str> {
        if let Some(n) = self.names.get(s) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(s);
        self.names.insert(n.clone());
        n
    }
}

/// A bounded memory of the orders created here, first in first out within
/// each of its parts (`SHARDS`).
#[derive(Default)]
pub struct RecentOrders {
    shards: [Mutex<Inner>; SHARDS],
    /// Picks an order's part; seeded at random like the maps themselves.
    spread: RandomState,
}

impl RecentOrders {
    fn shard(&self, order_no: &str) -> std::sync::MutexGuard<'_, Inner> {
        let at = self.spread.hash_one(order_no) as usize % SHARDS;
        self.shards[at].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers an order just created (pending) by this instance.
    pub fn remember(&self, o: &Order) {
        let mut inner = self.shard(&o.order_no);
        if inner.by_no.contains_key(o.order_no.as_str()) {
            return;
        }
        if inner.age.len() >= SHARD_CAPACITY {
            if let Some(old) = inner.age.pop_front() {
                inner.by_no.remove(&old);
            }
        }
        let no: Arc<str> = Arc::from(o.order_no.as_str());
        let remembered = Remembered {
            id: o.id,
            product_id: o.product_id,
            amount: o.amount,
            created_at: o.created_at,
            expires_at: o.expires_at,
            currency: inner.name(&o.currency),
            channel: inner.name(&o.channel),
        };
        inner.age.push_back(no.clone());
        inner.by_no.insert(no, remembered);
    }

    /// The order, if this instance created it and it is still surely
    /// pending or already paid by a notification (which the payment's
    /// transaction tells apart): `now` is well before its expiry.
    pub fn payable(&self, order_no: &str, now: Millis) -> Option<PayFacts> {
        let inner = self.shard(order_no);
        let r = inner.by_no.get(order_no)?;
        (now < r.expires_at - EXPIRY_MARGIN_MS).then(|| PayFacts {
            id: r.id,
            order_no: order_no.to_string(),
            product_id: r.product_id,
            amount: r.amount,
            currency: r.currency.to_string(),
            channel: r.channel.to_string(),
            created_at: r.created_at,
            status: OrderStatus::Pending,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).by_no.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kami_store::OrderStatusField;

    fn order(no: &str, expires_at: Millis) -> Order {
        Order {
            id: 7,
            order_no: no.into(),
            product_id: 3,
            quantity: 1,
            unit_price: 990,
            discount: 0,
            amount: 990,
            currency: "CNY".into(),
            email: "a@b.test".into(),
            access_token_hash: vec![1; 32],
            has_query_password: false,
            buyer_ip: None,
            channel: "sandbox".into(),
            status: OrderStatusField(OrderStatus::Pending),
            created_at: 1_000,
            expires_at,
            paid_at: None,
            delivered_at: None,
            coupon_id: None,
            limit_holds: 0,
        }
    }

    #[test]
    fn answers_only_well_before_expiry() {
        let recent = RecentOrders::default();
        recent.remember(&order("K1", 100_000));
        let facts = recent.payable("K1", 50_000).expect("remembered");
        assert_eq!(
            (facts.id, facts.amount, facts.channel.as_str()),
            (7, 990, "sandbox")
        );
        assert_eq!(facts.status, OrderStatus::Pending);
        assert!(recent.payable("K1", 100_000 - EXPIRY_MARGIN_MS).is_none());
        assert!(recent.payable("K1", 200_000).is_none());
        assert!(recent.payable("K2", 50_000).is_none());
    }

    #[test]
    fn forgets_the_oldest_when_full() {
        let recent = RecentOrders::default();
        // Under capacity nothing is forgotten, however the parts fill.
        for i in 0..SHARD_CAPACITY {
            recent.remember(&order(&format!("K{i}"), Millis::MAX));
        }
        assert_eq!(recent.len(), SHARD_CAPACITY);
        // Twice the capacity: every part has seen far more than it holds
        // (about 16,384 each), so each is full and kept its newest.
        let total = 2 * CAPACITY;
        for i in SHARD_CAPACITY..total {
            recent.remember(&order(&format!("K{i}"), Millis::MAX));
        }
        assert_eq!(recent.len(), CAPACITY);
        assert!(recent.payable("K0", 0).is_none());
        assert!(recent.payable("K1", 0).is_none());
        // The latest thousand are at most a few hundred per part.
        for i in total - 1_000..total {
            assert!(recent.payable(&format!("K{i}"), 0).is_some(), "K{i}");
        }
    }

    #[test]
    fn remembers_an_order_once() {
        let recent = RecentOrders::default();
        recent.remember(&order("K1", 100_000));
        let mut again = order("K1", 100_000);
        again.amount = 1;
        recent.remember(&again);
        assert_eq!(recent.len(), 1);
        assert_eq!(recent.payable("K1", 0).map(|f| f.amount), Some(990));
    }
}

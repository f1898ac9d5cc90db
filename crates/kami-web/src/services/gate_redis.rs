//! The stock gate in Redis, shared by every instance (`KAMI_REDIS_URL`).
//!
//! Key `<prefix>gate:<product id>` holds the count of available codes minus
//! the codes of orders on their way to the database. One Lua script per
//! order (`lua/gate_take.lua`) checks and takes the codes atomically, so N
//! instances turn buyers away once the drop is gone without asking the
//! database. The database still decides every order (invariant 6):
//!
//! - no key, or no answer from Redis: the order passes (fail open), counted
//!   in `kami_redis_fallbacks_total{what="gate"}`;
//! - an order the database refuses gives its codes back
//!   (`lua/gate_give_back.lua`), and so does a request dropped half-way
//!   (`Hold`'s `Drop`); `sold_out` sets the count to 0;
//! - an expiry gives its codes back as a delta; an import, fulfilment or
//!   late payment sets the count re-read from the database;
//! - every second one instance (a lease key, `<prefix>gate:resync`) re-reads
//!   every count that is missing (a Redis restart, a new product) or below
//!   `EXACT_BELOW`, so a count left too low (a give-back lost with a crash,
//!   a re-read racing an expiry) turns buyers away for at most that long.
//!   At start an instance does the same without waiting for the lease.
//!
//! Cost: one round trip per order that passes or is turned away; a second
//! only when the database refuses an order the gate let through.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use kami_store::{Result as StoreResult, Store};
use redis::Script;

use super::gate::{verdict, Admission, LocalCounts, Settled, EXACT_BELOW};
use crate::redis_conn::{fallback, Redis};

static TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/gate_take.lua")));
static GIVE_BACK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/gate_give_back.lua")));

/// How long one instance holds the re-sync lease (a little under the
/// re-sync period, so it is free again at the next tick).
const RESYNC_LEASE: Duration = Duration::from_millis(900);

/// Codes taken from the shared count for an order on its way to the
/// database. Dropped without `keep` (the request was cancelled, or the
/// database refused), it gives them back.
#[derive(Debug, Default)]
pub struct Hold {
    held: Option<Held>,
}

#[derive(Debug)]
struct Held {
    redis: Arc<Redis>,
    key: String,
    quantity: i64,
}

impl Hold {
    /// Nothing held (the gate is in process, or Redis keeps no count).
    pub fn none() -> Self {
        Self::default()
    }

    fn keep(mut self) {
        self.held = None;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(h) = self.held.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    give_back(&h.redis, &h.key, h.quantity).await;
                });
            }
        }
    }
}

async fn give_back(redis: &Redis, key: &str, quantity: i64) -> Option<i64> {
    let key = key.to_string();
    redis
        .call("gate_give_back", |mut c| async move {
            GIVE_BACK
                .key(key)
                .arg(quantity)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .filter(|n| *n >= 0)
}

pub(super) struct SharedGate {
    redis: Arc<Redis>,
    /// Who holds the re-sync lease (for nobody but a human reading Redis).
    instance: String,
}

impl SharedGate {
    pub(super) fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            instance: kami_core::secrets::random_token("gate_"),
        }
    }

    fn key(&self, product_id: i64) -> String {
        self.redis.key(format_args!("gate:{product_id}"))
    }

    pub(super) fn available(&self) -> bool {
        self.redis.available()
    }

    pub(super) async fn admit(
        &self,
        product_id: i64,
        quantity: i64,
        mirror: &LocalCounts,
    ) -> Admission {
        let key = self.key(product_id);
        let answer = self
            .redis
            .call("gate_take", |mut c| {
                let key = key.clone();
                async move {
                    TAKE.key(key)
                        .arg(quantity)
                        .invoke_async::<(i64, i64)>(&mut c)
                        .await
                }
            })
            .await;
        match answer {
            Some((1, left)) => {
                mirror.set(product_id, left);
                Admission::Pass(Hold {
                    held: Some(Held {
                        redis: self.redis.clone(),
                        key,
                        quantity,
                    }),
                })
            }
            Some((0, left)) => {
                mirror.set(product_id, left);
                verdict(left)
            }
            // No count kept yet: the next re-sync loads it.
            Some(_) => Admission::Pass(Hold::none()),
            None => {
                fallback("gate");
                Admission::Pass(Hold::none())
            }
        }
    }

    pub(super) async fn settle(
        &self,
        product_id: i64,
        hold: Hold,
        outcome: Settled,
        mirror: &LocalCounts,
    ) {
        match outcome {
            Settled::Reserved => hold.keep(),
            Settled::SoldOut => {
                hold.keep();
                self.set(product_id, 0, mirror).await;
            }
            Settled::Refused => {
                if let Some(h) = hold.held.as_ref() {
                    let (key, quantity) = (h.key.clone(), h.quantity);
                    hold.keep();
                    if let Some(n) = give_back(&self.redis, &key, quantity).await {
                        mirror.set(product_id, n);
                    }
                }
            }
        }
    }

    pub(super) async fn give_back(&self, product_id: i64, quantity: i64, mirror: &LocalCounts) {
        if let Some(n) = give_back(&self.redis, &self.key(product_id), quantity).await {
            mirror.set(product_id, n);
        }
    }

    pub(super) async fn set(&self, product_id: i64, available: i64, mirror: &LocalCounts) {
        let key = self.key(product_id);
        let done = self
            .redis
            .call("gate_set", |mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(available)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        if done.is_some() {
            mirror.set(product_id, available);
        }
    }

    async fn get(&self, product_id: i64) -> Option<Option<i64>> {
        let key = self.key(product_id);
        self.redis
            .call("gate_get", |mut c| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<i64>>(&mut c)
                    .await
            })
            .await
    }

    /// `StockGate::refresh` against the shared count.
    pub(super) async fn refresh(
        &self,
        store: &dyn Store,
        product_id: i64,
        mirror: &LocalCounts,
    ) -> StoreResult<()> {
        let n = store.available_count(product_id, EXACT_BELOW).await?;
        if n < EXACT_BELOW {
            self.set(product_id, n, mirror).await;
            return Ok(());
        }
        match self.get(product_id).await {
            // Redis is away: nothing to correct now.
            None => {}
            Some(current) if current.is_none_or(|c| c < EXACT_BELOW) => {
                let exact = store.available_count(product_id, i64::MAX).await?;
                self.set(product_id, exact, mirror).await;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Reads every product's shared count into the display mirror and, if
    /// this instance holds the lease (or `at_start`), re-reads from the
    /// database each count that is missing or could reject.
    pub(super) async fn resync(
        &self,
        store: &dyn Store,
        product_ids: &[i64],
        mirror: &LocalCounts,
        at_start: bool,
    ) -> StoreResult<()> {
        if product_ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = product_ids.iter().map(|id| self.key(*id)).collect();
        let Some(counts) = self
            .redis
            .call("gate_mget", |mut c| async move {
                redis::cmd("MGET")
                    .arg(keys)
                    .query_async::<Vec<Option<i64>>>(&mut c)
                    .await
            })
            .await
        else {
            return Ok(());
        };
        let mut stale = Vec::new();
        for (id, count) in product_ids.iter().zip(counts) {
            match count {
                Some(n) => mirror.set(*id, n),
                None => mirror.forget(*id),
            }
            if count.is_none_or(|n| n < EXACT_BELOW) {
                stale.push(*id);
            }
        }
        if stale.is_empty() || !(at_start || self.take_lease().await) {
            return Ok(());
        }
        for product_id in stale {
            let n = store.available_count(product_id, EXACT_BELOW).await?;
            let n = if n < EXACT_BELOW {
                n
            } else {
                store.available_count(product_id, i64::MAX).await?
            };
            self.set(product_id, n, mirror).await;
        }
        Ok(())
    }

    async fn take_lease(&self) -> bool {
        let key = self.redis.key("gate:resync");
        let instance = self.instance.clone();
        self.redis
            .call("gate_lease", |mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(instance)
                    .arg("NX")
                    .arg("PX")
                    .arg(RESYNC_LEASE.as_millis() as u64)
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
            .await
            .flatten()
            .is_some()
    }
}

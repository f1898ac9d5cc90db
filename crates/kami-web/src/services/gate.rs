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
//!
//! A re-read must not make the count too low either. It may already see an
//! order that committed but whose answer has not reached the gate yet; that
//! answer's decrement, applied after the re-read, would count the order
//! twice. So every count remembers which reading it stands on, an order
//! remembers the reading it was admitted on, and its answer is applied only
//! if no re-read came in between (too high for a moment instead, which is
//! harmless). Before this, the last few hundred buyers of a drop were told
//! `sold_out` for up to a second while codes were left (223 of 100,000 in
//! one benchmark run on SQLite, docs/PERFORMANCE.md stop 26).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kami_core::Millis;
use kami_store::{Result as StoreResult, Store};

use super::gate_redis::{Hold, SharedGate};
use crate::redis_conn::Redis;

/// Counts at or above this are never re-read periodically: the gate cannot
/// reject on them (no order asks for that many), and counting a big stock
/// would cost more than it saves.
pub const EXACT_BELOW: i64 = 10_000;

/// How old a count of this process's gate may be when it turns an order
/// away, or shows a product's own page as short: older, it is read again
/// first. The periodic re-sync alone left `kami cards import`'s codes next
/// to a running server unsold for up to a second; the import now returns
/// this long after its commit, so whatever asks after it is answered from a
/// reading that saw the codes.
pub const CONFIRM_WITHIN: Duration = Duration::from_millis(250);

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
    /// Per product, when the last re-read `confirm` ran began; its lock
    /// lets one re-read run at a time.
    confirmed: RwLock<HashMap<i64, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
    /// When the last look for finished imports began (`reread_restocked`).
    restocks_seen: AtomicI64,
    /// Finished imports whose products were re-read since they finished,
    /// by batch, with their `finished_at` (forgotten once the looks no
    /// longer reach back to it).
    restocks_reread: Mutex<HashMap<i64, Millis>>,
}

/// How far back each look for finished imports reaches past the last one:
/// a batch's `finished_at` is stamped before its transaction commits, and
/// by another process's clock.
const RESTOCK_LOOKBACK_MS: i64 = 5_000;

impl StockGate {
    /// The gate shared through Redis.
    pub fn shared(redis: Arc<Redis>) -> Self {
        Self {
            shared: Some(SharedGate::new(redis)),
            ..Self::default()
        }
    }

    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Loads every product's count (at start: the gate is only as good as the
    /// database it was read from). In Redis, counts other instances keep are
    /// left alone unless they could reject.
    pub async fn load(&self, store: &dyn Store) -> StoreResult<()> {
        self.restocks_seen
            .store(kami_core::now_millis(), Ordering::Relaxed);
        match &self.shared {
            Some(shared) => {
                let products = store.list_products(false).await?;
                let ids: Vec<i64> = products.iter().map(|p| p.id).collect();
                shared.resync(store, &ids, &self.local, true).await
            }
            None => {
                let reading = self.local.reading();
                let products = store.list_products(false).await?;
                self.local
                    .replace(reading, products.iter().map(|p| (p.id, p.stock)));
                Ok(())
            }
        }
    }

    pub async fn admit(&self, product_id: i64, quantity: i64) -> Admission {
        match &self.shared {
            Some(shared) => shared.admit(product_id, quantity, &self.local).await,
            None => match self.local.admit(product_id) {
                Some((left, _)) if left < quantity => verdict(left),
                Some((_, reading)) => Admission::Pass(Hold::on_reading(reading)),
                None => Admission::Pass(Hold::none()),
            },
        }
    }

    /// `admit`, with this process's count read again first when it would
    /// turn the order away and is older than `CONFIRM_WITHIN`.
    pub async fn admit_confirmed(
        &self,
        store: &dyn Store,
        product_id: i64,
        quantity: i64,
    ) -> Admission {
        if self.shared.is_none()
            && self
                .local
                .admit(product_id)
                .is_some_and(|(left, _)| left < quantity)
        {
            self.confirm(store, product_id).await;
        }
        self.admit(product_id, quantity).await
    }

    /// Before a product's own page shows it short: its count, if it is
    /// small, no older than `CONFIRM_WITHIN` (lists keep the re-sync's
    /// second). Nothing with Redis, whose counts every instance shares.
    pub async fn confirm_small(&self, store: &dyn Store, product_id: i64) {
        if self.shared.is_none() && self.local.get(product_id).is_some_and(|n| n < EXACT_BELOW) {
            self.confirm(store, product_id).await;
        }
    }

    /// Makes the product's count stand on a reading begun within
    /// `CONFIRM_WITHIN`, running one if none is under way. At most one
    /// re-read per product runs at a time, and one per period at most is
    /// started however many buyers ask; only the buyer who starts it waits.
    /// A failed re-read leaves the count as it was.
    async fn confirm(&self, store: &dyn Store, product_id: i64) {
        let slot = {
            let known = self
                .confirmed
                .read()
                .expect("gate lock")
                .get(&product_id)
                .cloned();
            match known {
                Some(slot) => slot,
                None => self
                    .confirmed
                    .write()
                    .expect("gate lock")
                    .entry(product_id)
                    .or_default()
                    .clone(),
            }
        };
        // A re-read under way: memory answers meanwhile, so that a drop's
        // sold-out traffic never queues behind one (PostgreSQL's count of a
        // sold-out product takes milliseconds under load).
        let Ok(mut began) = slot.try_lock() else {
            return;
        };
        if began.is_some_and(|t| t.elapsed() < CONFIRM_WITHIN) {
            return;
        }
        let now = Instant::now();
        match self.refresh(store, product_id).await {
            Ok(()) => *began = Some(now),
            Err(e) => {
                tracing::warn!(error = %e, product_id, "re-reading a count before refusing failed")
            }
        }
    }

    /// The database answered an order the gate admitted.
    pub async fn settle(&self, product_id: i64, quantity: i64, hold: Hold, outcome: Settled) {
        match &self.shared {
            Some(shared) => shared.settle(product_id, hold, outcome, &self.local).await,
            None => {
                let Some(reading) = hold.reading else { return };
                match outcome {
                    Settled::Reserved => self.local.settle(product_id, reading, |n| n - quantity),
                    Settled::SoldOut => self.local.settle(product_id, reading, |_| 0),
                    Settled::Refused => {}
                }
            }
        }
    }

    /// The gate's count, if it has one (for display: it may lag by a second
    /// what other instances sold).
    pub fn count(&self, product_id: i64) -> Option<i64> {
        if self.shared.as_ref().is_some_and(|s| !s.mirror_fresh()) {
            return None;
        }
        self.local.get(product_id)
    }

    /// The database just said how many are available (a new product: 0).
    pub async fn observed(&self, product_id: i64, available: i64) {
        match &self.shared {
            Some(shared) => {
                if let Some(reading) = shared.reading().await {
                    shared
                        .set(product_id, available, reading, &self.local)
                        .await;
                }
            }
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
    /// operator voided them). A drop by as many could land under a re-read
    /// already under way that saw the void, counting it twice (too low:
    /// buyers turned away). In process the drop is followed by a re-read
    /// numbered after both, which puts any count that could reject right.
    /// In Redis a give-back numbered in between could keep that re-read
    /// out, so the count is only re-read, and dropped by the delta only
    /// where a re-read leaves it alone (a big count, which cannot reject).
    pub async fn removed(
        &self,
        store: &dyn Store,
        product_id: i64,
        quantity: i64,
    ) -> StoreResult<()> {
        match &self.shared {
            Some(shared) => {
                if !shared.refresh(store, product_id, &self.local).await? {
                    shared.give_back(product_id, -quantity, &self.local).await;
                }
                Ok(())
            }
            None => {
                self.local.add(product_id, -quantity);
                self.refresh(store, product_id).await
            }
        }
    }

    /// Re-reads one product's count after its stock changed outside an
    /// order (import, fulfilment, late payment). A count that is below
    /// `EXACT_BELOW` in the database is taken as is; a bigger one only
    /// replaces a count of ours that is small (and could wrongly reject).
    pub async fn refresh(&self, store: &dyn Store, product_id: i64) -> StoreResult<()> {
        match &self.shared {
            Some(shared) => shared
                .refresh(store, product_id, &self.local)
                .await
                .map(|_| ()),
            None => {
                // Numbered before the database is read: a reading that
                // started earlier never overwrites this one.
                let reading = self.local.reading();
                let n = store.available_count(product_id, EXACT_BELOW).await?;
                if n < EXACT_BELOW {
                    self.local.read(product_id, reading, n);
                    Ok(())
                } else if self.local.get(product_id).is_none_or(|c| c < EXACT_BELOW) {
                    self.refresh_exact(store, product_id).await
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Re-reads one product's count exactly, however big: after an import.
    /// `refresh` leaves a big count of ours alone, and an import makes its
    /// codes sellable a chunk at a time (`Store::commit_import`), so a
    /// re-sync during it may have set a big count that was only part of
    /// the codes: kept, the gate ran out early, and the last buyers of a
    /// drop right after the import were told `sold_out` while codes were
    /// left (197 and 264 of 100,000 in two benchmark runs). An import
    /// into a product that already had a big count was left out the same
    /// way until the count fell low.
    pub async fn refresh_exact(&self, store: &dyn Store, product_id: i64) -> StoreResult<()> {
        match &self.shared {
            Some(shared) => shared.refresh_exact(store, product_id, &self.local).await,
            None => {
                let reading = self.local.reading();
                let exact = store.available_count(product_id, i64::MAX).await?;
                self.local.read(product_id, reading, exact);
                Ok(())
            }
        }
    }

    /// The periodic re-sync: every product whose count could make the gate
    /// reject is read again, so a wrong "no" lasts at most one period.
    /// `product_ids` are the shop's products (Redis: the counts to check;
    /// in process, the gate knows its own).
    pub async fn resync(&self, store: &dyn Store, product_ids: &[i64]) -> StoreResult<()> {
        self.reread_restocked(store).await?;
        if let Some(shared) = &self.shared {
            return shared.resync(store, product_ids, &self.local, false).await;
        }
        for product_id in self.local.below(EXACT_BELOW) {
            self.refresh(store, product_id).await?;
        }
        Ok(())
    }

    /// Re-reads exactly the count of every product an import is making
    /// sellable, or made sellable since the last look, whichever process
    /// imported: `kami cards import` beside a shop without Redis, or another
    /// instance. `resync` alone re-reads only small counts, so a big count
    /// it read in the middle of an import's chunked flip (a part of the
    /// codes) stayed: the shop showed too few codes, and its gate ran out
    /// before the stock did.
    ///
    /// A finished import is re-read once: the looks reach
    /// `RESTOCK_LOOKBACK_MS` back and see it for five more seconds, and an
    /// exact count of ten million codes is 0.4 s of a core. Counted every
    /// second after an import, it ran through a drop begun three seconds
    /// later and slowed every order of it by a third (perf, stop 47). One
    /// still flipping its codes is re-read at every look.
    async fn reread_restocked(&self, store: &dyn Store) -> StoreResult<()> {
        let started = kami_core::now_millis();
        let since = self.restocks_seen.load(Ordering::Relaxed) - RESTOCK_LOOKBACK_MS;
        let restocks = store.restocks_since(since).await?;
        let mut due: BTreeMap<i64, Vec<(i64, Millis)>> = BTreeMap::new();
        {
            let reread = self.restocks_reread.lock().expect("gate lock");
            for r in restocks {
                match r.finished_at {
                    None => {
                        due.entry(r.product_id).or_default();
                    }
                    Some(at) if !reread.contains_key(&r.batch_id) => {
                        due.entry(r.product_id).or_default().push((r.batch_id, at));
                    }
                    Some(_) => {}
                }
            }
        }
        for (product_id, finished) in due {
            self.refresh_exact(store, product_id).await?;
            self.restocks_reread
                .lock()
                .expect("gate lock")
                .extend(finished);
        }
        self.restocks_reread
            .lock()
            .expect("gate lock")
            .retain(|_, at| *at >= since);
        self.restocks_seen.store(started, Ordering::Relaxed);
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

/// One product's count, and the reading of the database it stands on.
#[derive(Debug)]
struct Count {
    left: i64,
    /// The number of the last reading applied (`LocalCounts::reading`).
    reading: u64,
}

impl Count {
    /// `n`, read by `reading`, unless a later reading was applied first.
    fn read(&mut self, reading: u64, n: i64) {
        if self.reading < reading {
            *self = Count { left: n, reading };
        }
    }
}

/// Per-product counts in this process.
#[derive(Default)]
pub(super) struct LocalCounts {
    counts: RwLock<HashMap<i64, Mutex<Count>>>,
    /// Numbers readings in the order they start.
    readings: AtomicU64,
}

impl LocalCounts {
    pub(super) fn get(&self, product_id: i64) -> Option<i64> {
        self.admit(product_id).map(|(left, _)| left)
    }

    /// The count, and the reading an order admitted on it must name when
    /// its answer is settled.
    fn admit(&self, product_id: i64) -> Option<(i64, u64)> {
        let counts = self.counts.read().expect("gate lock");
        let c = counts.get(&product_id)?.lock().expect("gate count lock");
        Some((c.left.max(0), c.reading))
    }

    /// An order admitted on `reading` was answered: `f` applies its answer,
    /// unless a reading came in since, which may already count it.
    fn settle(&self, product_id: i64, reading: u64, f: impl FnOnce(i64) -> i64) {
        if let Some(c) = self.counts.read().expect("gate lock").get(&product_id) {
            let mut c = c.lock().expect("gate count lock");
            if c.reading == reading {
                c.left = f(c.left);
            }
        }
    }

    /// A change that is no order's answer (codes voided): applied whatever
    /// the reading.
    pub(super) fn add(&self, product_id: i64, delta: i64) {
        if let Some(c) = self.counts.read().expect("gate lock").get(&product_id) {
            c.lock().expect("gate count lock").left += delta;
        }
    }

    /// The number of a reading about to start.
    fn reading(&self) -> u64 {
        self.readings.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A count read from the database by `reading`; dropped if a later
    /// reading was applied first.
    fn read(&self, product_id: i64, reading: u64, n: i64) {
        {
            let counts = self.counts.read().expect("gate lock");
            if let Some(c) = counts.get(&product_id) {
                c.lock().expect("gate count lock").read(reading, n);
                return;
            }
        }
        // Another reading may have added the count since the read lock was
        // let go: the newer of the two stays.
        self.counts
            .write()
            .expect("gate lock")
            .entry(product_id)
            .and_modify(|c| c.get_mut().expect("gate count lock").read(reading, n))
            .or_insert_with(|| Mutex::new(Count { left: n, reading }));
    }

    /// A count known as of now (a new product; Redis's shared count).
    pub(super) fn set(&self, product_id: i64, n: i64) {
        let reading = self.reading();
        self.read(product_id, reading, n);
    }

    pub(super) fn forget(&self, product_id: i64) {
        self.counts.write().expect("gate lock").remove(&product_id);
    }

    fn replace(&self, reading: u64, all: impl Iterator<Item = (i64, i64)>) {
        let mut counts = self.counts.write().expect("gate lock");
        counts.clear();
        counts.extend(all.map(|(id, left)| (id, Mutex::new(Count { left, reading }))));
    }

    fn below(&self, limit: i64) -> Vec<i64> {
        let counts = self.counts.read().expect("gate lock");
        counts
            .iter()
            .filter(|(_, c)| c.lock().expect("gate count lock").left < limit)
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

    fn hold(a: Admission) -> Hold {
        match a {
            Admission::Pass(h) => h,
            other => panic!("expected a pass, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unknown_products_pass_and_counts_reject_only_when_short() {
        let g = StockGate::default();
        assert!(passes(&g.admit(1, 5).await));
        g.observed(1, 3).await;
        assert!(passes(&g.admit(1, 3).await));
        assert!(matches!(g.admit(1, 4).await, Admission::Insufficient(3)));
        let h = hold(g.admit(1, 3).await);
        g.settle(1, 3, h, Settled::Reserved).await;
        assert!(matches!(g.admit(1, 1).await, Admission::SoldOut));
        g.observed(1, 2).await;
        assert!(passes(&g.admit(1, 2).await));
    }

    /// The interleaving a drop's last second meets: an order is admitted,
    /// commits, a re-read counts it, and only then is its answer settled.
    #[tokio::test]
    async fn a_reading_that_already_counts_an_order_is_not_lowered_by_its_answer() {
        let g = StockGate::default();
        g.observed(1, 3).await;
        let (a, b) = (hold(g.admit(1, 1).await), hold(g.admit(1, 1).await));
        // Both orders committed; the database has 1 left, and a re-read
        // (its number taken before it read) says so.
        let reading = g.local.reading();
        g.local.read(1, reading, 1);
        g.settle(1, 1, a, Settled::Reserved).await;
        g.settle(1, 1, b, Settled::SoldOut).await;
        assert_eq!(g.count(1), Some(1), "the last code is still for sale");
        // An order admitted after the re-read is counted as before.
        let c = hold(g.admit(1, 1).await);
        g.settle(1, 1, c, Settled::Reserved).await;
        assert!(matches!(g.admit(1, 1).await, Admission::SoldOut));
    }

    #[tokio::test]
    async fn an_older_reading_never_overwrites_a_newer_one() {
        let g = StockGate::default();
        // A product with no count yet: the older reading lands second.
        let (older, newer) = (g.local.reading(), g.local.reading());
        g.local.read(2, newer, 100);
        g.local.read(2, older, 0);
        assert_eq!(g.count(2), Some(100));
        g.observed(1, 0).await;
        let (older, newer) = (g.local.reading(), g.local.reading());
        // A restock's re-read finishes before the periodic one that
        // started before the restock.
        g.local.read(1, newer, 5);
        g.local.read(1, older, 0);
        assert_eq!(g.count(1), Some(5));
        // Voided codes leave the count whatever the reading.
        g.local.add(1, -2);
        assert_eq!(g.count(1), Some(3));
    }
}

/// The look for finished imports (`reread_restocked`) against a real
/// SQLite store.
#[cfg(test)]
mod restock_tests {
    use super::*;
    use kami_store::{ImportCounts, NewCard, NewProduct, SqlStore};
    use rand::Rng;

    /// A migrated store in a directory of its own, removed by the caller.
    async fn store() -> (SqlStore, std::path::PathBuf) {
        let tag: u64 = rand::thread_rng().gen();
        let dir = std::env::temp_dir().join(format!("kami-gate-restock-{tag:x}"));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqlStore::connect(&format!("sqlite://{}/kami.db", dir.display()), 4)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        (store, dir)
    }

    async fn import(store: &SqlStore, product_id: i64, codes: usize) {
        let (batch, _lease) = store.begin_import(product_id).await.unwrap();
        let cards: Vec<NewCard> = (0..codes)
            .map(|_| {
                let fp: [u8; 32] = rand::thread_rng().gen();
                NewCard {
                    ciphertext: fp.to_vec(),
                    nonce: vec![0; 12],
                    key_id: 1,
                    fingerprint: fp.to_vec(),
                }
            })
            .collect();
        let imported = store.stage_cards(batch, product_id, &cards).await.unwrap();
        let counts = ImportCounts {
            imported,
            ..ImportCounts::default()
        };
        store
            .commit_import(batch, product_id, &counts)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_finished_import_is_counted_once_and_every_new_one_again() {
        let (store, dir) = store().await;
        let product = store
            .create_product(&NewProduct {
                name: "drop".into(),
                price: 100,
                currency: "CNY".into(),
                min_quantity: 1,
                max_quantity: 1,
                visible: true,
                ..NewProduct::default()
            })
            .await
            .unwrap()
            .id;
        let gate = StockGate::default();
        gate.load(&store).await.unwrap();
        // Imported by another process: the gate hears of it only from the
        // look at the batches.
        import(&store, product, 3).await;
        gate.resync(&store, &[]).await.unwrap();
        assert_eq!(gate.count(product), Some(3), "a finished import is counted");

        // A big count nothing else re-reads: only an exact count of the
        // import would put it right, and the import was counted already.
        let big = EXACT_BELOW + 7;
        gate.local.set(product, big);
        for _ in 0..3 {
            gate.resync(&store, &[]).await.unwrap();
            assert_eq!(
                gate.count(product),
                Some(big),
                "the same import counted again"
            );
        }

        import(&store, product, 2).await;
        gate.resync(&store, &[]).await.unwrap();
        assert_eq!(gate.count(product), Some(5), "a new import is counted");
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! The stock gate in Redis, shared by every instance (`KAMI_REDIS_URL`).
//!
//! Key `<prefix>gate:<product id>` holds the count of available codes minus
//! the codes of orders on their way to the database, and
//! `<prefix>gate:<product id>:held` those orders' codes. A Lua script
//! (`lua/gate_take.lua`) checks and takes the codes atomically, so N
//! instances turn buyers away once the drop is gone without asking the
//! database. The database still decides every order (invariant 6):
//!
//! - no key, or no answer from Redis: the order passes (fail open), counted
//!   in `kami_redis_fallbacks_total{what="gate"}`;
//! - an order the count is short for, but not with the codes in flight
//!   counted back in, passes without taking any: orders in flight may yet
//!   be refused (a per-buyer limit, an `Idempotency-Key` sent twice at
//!   once) and their codes come back, so only the database can say. The
//!   gate refuses only when the count and everything in flight together
//!   fall short. Before this, one buyer's refused burst, or a client's
//!   doubled retries, turned everyone else away as sold out while most of
//!   the codes were unsold. An answered order's codes leave the held count
//!   with the next batch's script (`Settlements`); an order refused gives
//!   them back at once;
//! - an order the database refuses gives its codes back
//!   (`lua/gate_give_back.lua`), and so does a request dropped half-way
//!   (`Hold`'s `Drop`); `sold_out` sets the count to 0 unless the count
//!   was re-read since the order was admitted (the re-read may have seen a
//!   restock the answer predates);
//! - an expiry gives its codes back as a delta; an import or a late
//!   payment sets the count re-read from the database. Readings are
//!   numbered (`<prefix>gate:readings`) before the database is read, and
//!   `<prefix>gate:<product id>:read` keeps the number the count was last
//!   set from (a give-back takes a fresh one), so an older reading never
//!   overwrites a newer count (`lua/gate_set.lua`); a number from before
//!   the counter was lost (Redis restarted empty) orders nothing;
//! - every second one instance (a lease key, `<prefix>gate:resync`) re-reads
//!   every count that is missing (a Redis restart, a new product) or below
//!   `EXACT_BELOW`, so a count left too low (a give-back lost with a crash,
//!   a re-read racing an expiry) turns buyers away for at most that long.
//!   At start an instance does the same without waiting for the lease.
//!
//! Cost: one script run per batch of orders. Orders arriving while a batch
//! is with Redis wait for the next one (`take_batches`), as the database's
//! writers batch reservations: in a drop each order costs Redis a few
//! lines of a script instead of a call of its own (stop 24, PERFORMANCE.md).
//! Every order the gate lets through is answered from a run that began
//! after it arrived. Once a run finds a product sold out, this instance
//! answers its orders from memory until a raise of its count is published
//! (`gate_marks.rs`: a restock through one instance reaches every other as
//! fast as a Redis message). A second round trip only when the database
//! refuses an order the gate let through.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::{Duration, Instant};

use kami_store::{Result as StoreResult, Store};
use redis::aio::{PubSubSink, PubSubStream};
use redis::Script;
use tokio::sync::{mpsc, oneshot};

use super::gate::{verdict, Admission, LocalCounts, Settled, EXACT_BELOW};
use super::gate_marks::Marks;
use crate::redis_conn::{fallback, Redis};

static TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/gate_take.lua")));
static GIVE_BACK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/gate_give_back.lua")));
static SET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/gate_set.lua")));

/// How long one instance holds the re-sync lease (a little under the
/// re-sync period, so it is free again at the next tick).
const RESYNC_LEASE: Duration = Duration::from_millis(900);

/// Most orders one script run checks: Redis runs a script alone, so a long
/// one would hold up every other client (256 take well under a millisecond).
const MAX_BATCH: usize = 256;
/// Longest an order waits for its batch's answer before it goes to the
/// database ungated (fail open): two Redis calls' deadlines, so a batch
/// that queued behind a slow one still gets its own chance.
const WAIT: Duration = Duration::from_millis(1000);
/// Longest a sold-out mark holds without a raise: the re-sync period, the
/// longest a count left too low may turn buyers away anyway.
const MARK_TTL: Duration = Duration::from_millis(1000);
/// Pause before subscribing again after the subscription was lost.
const RESUBSCRIBE: Duration = Duration::from_millis(500);
/// The subscription is pinged this often, and given up if a ping is not
/// answered in `PING_TIMEOUT`: a dead connection is noticed within 0.75 s,
/// before a mark made just before it died would lapse anyway.
const PING_EVERY: Duration = Duration::from_millis(250);
const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// Codes taken from the shared count for an order on its way to the
/// database. Dropped without `keep` (the request was cancelled, or the
/// database refused), it gives them back.
#[derive(Debug, Default)]
pub struct Hold {
    held: Option<Held>,
    /// Which reading of the count the order was admitted on: its answer
    /// is applied only if no reading came since (`LocalCounts::settle`;
    /// in Redis, a `sold_out`, `lua/gate_set.lua`).
    pub(super) reading: Option<u64>,
}

#[derive(Debug)]
struct Held {
    redis: Arc<Redis>,
    product_id: i64,
    /// Shared with the other takes of its batch for the same product.
    key: Arc<str>,
    /// The product's codes in flight (`held_key`), which these are part of.
    held_key: Arc<str>,
    quantity: i64,
}

impl Hold {
    /// Nothing held (the gate is in process, or Redis keeps no count).
    pub fn none() -> Self {
        Self::default()
    }

    /// The in-process gate admitted the order on this reading of its count.
    pub(super) fn on_reading(reading: u64) -> Self {
        Self {
            held: None,
            reading: Some(reading),
        }
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
                    give_back(
                        &h.redis,
                        &h.key,
                        Some(&h.held_key),
                        h.product_id,
                        h.quantity,
                    )
                    .await;
                });
            }
        }
    }
}

/// `gate_give_back.lua`: the count afterwards, if one is kept. (Marks of
/// this instance are wiped by the raise's message, as everyone's.) `held`:
/// the codes were an order's, in flight until now.
async fn give_back(
    redis: &Redis,
    key: &str,
    held: Option<&str>,
    product_id: i64,
    quantity: i64,
) -> Option<i64> {
    let (read, counter) = (reading_key(key), readings_key(redis));
    let channel = raises_channel(redis);
    let key = key.to_string();
    let held = held.map(str::to_string);
    redis
        .call("gate_give_back", |mut c| async move {
            let mut script = GIVE_BACK.key(key);
            script.key(read).key(counter);
            if let Some(held) = held {
                script.key(held);
            }
            script
                .arg(quantity)
                .arg(channel)
                .arg(product_id)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .filter(|n| *n >= 0)
}

/// Where scripts publish a product whose count they lifted above 0.
fn raises_channel(redis: &Redis) -> String {
    redis.key("gate:raised")
}

/// Keeps `marks` subscribed to the raises for as long as they are in use:
/// while subscribed, marks may be made; a lost subscription drops them all
/// and is retried.
async fn listen(redis: Arc<Redis>, marks: Weak<Marks>) {
    let channel = raises_channel(&redis);
    loop {
        match redis.subscribe(&channel).await {
            Ok((sink, raises)) => {
                let _subscribed = Subscribed::new(&marks);
                hear(sink, raises, &marks).await;
                if marks.strong_count() > 0 {
                    tracing::warn!("lost the subscription to the stock gate's raises; answering sold-out from Redis until it is back");
                }
            }
            Err(error) => {
                metrics::counter!("kami_redis_errors_total", "op" => "gate_subscribe").increment(1);
                tracing::debug!(%error, "cannot subscribe to the stock gate's raises yet");
            }
        }
        tokio::time::sleep(RESUBSCRIBE).await;
        if marks.strong_count() == 0 {
            return;
        }
    }
}

/// Marks are used while this lives: however the subscription ends (a
/// panic included), they stop.
struct Subscribed<'a>(&'a Weak<Marks>);

impl<'a> Subscribed<'a> {
    fn new(marks: &'a Weak<Marks>) -> Self {
        if let Some(m) = marks.upgrade() {
            m.listen(true);
        }
        Self(marks)
    }
}

impl Drop for Subscribed<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.0.upgrade() {
            m.listen(false);
        }
    }
}

/// Applies raises until the connection is lost: the stream ends, or a
/// ping goes unanswered (an idle connection can die without a word, behind
/// a NAT or with a host gone, and nothing else would notice). Messages are
/// applied while a ping is out.
async fn hear(sink: PubSubSink, mut raises: PubSubStream, marks: &Weak<Marks>) {
    use futures::StreamExt;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pong: Option<Pin<Box<dyn Future<Output = bool> + Send>>> = None;
    loop {
        tokio::select! {
            message = raises.next() => {
                let (Some(message), Some(m)) = (message, marks.upgrade()) else { return };
                match message.get_payload::<i64>() {
                    Ok(product_id) => m.raised(product_id),
                    // Not ours to read: assume the worst.
                    Err(_) => m.listen(true),
                }
            }
            _ = ping.tick(), if pong.is_none() => {
                let mut sink = sink.clone();
                pong = Some(Box::pin(async move {
                    let answer = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>());
                    matches!(answer.await, Ok(Ok(_)))
                }));
            }
            answered = async { pong.as_mut().expect("a ping is out").await }, if pong.is_some() => {
                pong = None;
                if !answered || marks.strong_count() == 0 {
                    return;
                }
            }
        }
    }
}

/// One order's check-and-take, waiting for its batch.
struct Take {
    product_id: i64,
    quantity: i64,
    /// The script's answer; `None` if Redis did not answer.
    answer: oneshot::Sender<Option<Answer>>,
}

/// `gate_take.lua`'s answer for one take, with the codes it took already
/// held: however the request goes away — before its answer is sent, or
/// after, unread — dropping the answer gives them back.
#[derive(Debug)]
struct Answer {
    verdict: i64,
    count: i64,
    hold: Hold,
}

/// The key that keeps the number of the reading a count was last set from.
fn reading_key(count_key: &str) -> String {
    format!("{count_key}:read")
}

/// The key that keeps how many of a product's codes orders in flight hold
/// (taken by `gate_take.lua`, not yet answered by the database).
fn held_key(count_key: &str) -> String {
    format!("{count_key}:held")
}

/// Codes of orders the database has answered (reserved, or refused as
/// sold out) since the last batch, per product's held key: no longer in
/// flight. Applied at the start of the next batch's script, before its
/// takes are checked, or by a run of their own `SETTLE_WITHIN` after they
/// came if no take comes first (another instance's buyers must not wait
/// for this one's next order). A run that failed drops them: it may have
/// run in Redis before its answer was lost, and applied twice they would
/// make the held count too low (false refusals again), while left out
/// they only leave it too high (orders the database refuses, until the
/// count expires 5 s after its product's last take).
#[derive(Default)]
struct Settlements {
    pending: std::sync::Mutex<std::collections::HashMap<Arc<str>, i64>>,
    landed: tokio::sync::Notify,
}

impl Settlements {
    fn add(&self, held_key: Arc<str>, quantity: i64) {
        *self
            .pending
            .lock()
            .expect("settlements lock")
            .entry(held_key)
            .or_default() += quantity;
        self.landed.notify_one();
    }

    fn take(&self) -> Vec<(Arc<str>, i64)> {
        self.pending
            .lock()
            .expect("settlements lock")
            .drain()
            .collect()
    }
}

/// Longest answered orders' codes wait for a batch of takes to carry them
/// out of the held count before a run carries them alone.
const SETTLE_WITHIN: Duration = Duration::from_millis(5);

/// The counter readings are numbered by.
fn readings_key(redis: &Redis) -> String {
    redis.key("gate:readings")
}

/// Runs the queued takes, a batch at a time: everything that queued while
/// the last batch was with Redis goes in the next. The queue is unbounded
/// but never long: each take is a request waiting for its answer, and one
/// that stopped waiting (`WAIT`) is left out of the next run.
async fn take_batches(
    redis: Arc<Redis>,
    marks: Arc<Marks>,
    settlements: Arc<Settlements>,
    mut queue: mpsc::UnboundedReceiver<Take>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            biased;
            n = queue.recv_many(&mut batch, MAX_BATCH) => if n == 0 { return },
            () = settlements.landed.notified() => {
                // Orders were answered and no take is waiting: a moment
                // for takes to carry their codes, or a run of their own.
                tokio::select! {
                    n = queue.recv_many(&mut batch, MAX_BATCH) => if n == 0 { return },
                    () = tokio::time::sleep(SETTLE_WITHIN) => {}
                }
            }
        }
        batch.retain(|take| !take.answer.is_closed());
        let settled = settlements.take();
        if batch.is_empty() && settled.is_empty() {
            continue;
        }
        if !batch.is_empty() {
            metrics::histogram!("kami_gate_batch_size").record(batch.len() as f64);
        }
        let keys = batch_keys(&redis, &batch);
        let (since, sent) = (marks.since(), Instant::now());
        let answers = take_batch(&redis, &settled, &batch, &keys).await;
        let mut marked = None;
        for ((i, take), (key, _, held_key)) in batch.drain(..).enumerate().zip(keys) {
            let answer = answers.as_ref().map(|a| {
                let (verdict, count, reading) = (a[3 * i], a[3 * i + 1], a[3 * i + 2]);
                if verdict == 0 && count <= 0 && marked != Some(take.product_id) {
                    marks.mark(take.product_id, since, sent);
                    marked = Some(take.product_id);
                }
                let hold = if verdict == 1 {
                    Hold {
                        held: Some(Held {
                            redis: redis.clone(),
                            product_id: take.product_id,
                            key,
                            held_key,
                            quantity: take.quantity,
                        }),
                        reading: Some(reading.max(0) as u64),
                    }
                } else {
                    Hold::none()
                };
                Answer {
                    verdict,
                    count,
                    hold,
                }
            });
            // Refused when the request went away: the answer is dropped
            // here, and its hold with it.
            let _ = take.answer.send(answer);
        }
    }
}

/// A product's count key, its reading key (`reading_key`) and its held
/// key (`held_key`).
type Keys = (Arc<str>, Arc<str>, Arc<str>);

/// Each take's keys: its count's, its reading's and its held codes'. A
/// drop's batch is one product over and over: its keys are named once and
/// shared by the batch's takes and their holds.
fn batch_keys(redis: &Redis, batch: &[Take]) -> Vec<Keys> {
    let mut named: Option<(i64, Keys)> = None;
    batch
        .iter()
        .map(|take| match &named {
            Some((id, keys)) if *id == take.product_id => keys.clone(),
            _ => {
                let key = gate_key(redis, take.product_id);
                let reading: Arc<str> = reading_key(&key).into();
                let held: Arc<str> = held_key(&key).into();
                let keys = (Arc::<str>::from(key), reading, held);
                named = Some((take.product_id, keys.clone()));
                keys
            }
        })
        .collect()
}

/// One run of `gate_take.lua` for the batch, after the settlements: three
/// numbers per take, or `None`.
async fn take_batch(
    redis: &Redis,
    settled: &[(Arc<str>, i64)],
    batch: &[Take],
    keys: &[Keys],
) -> Option<Vec<i64>> {
    let mut invocation = TAKE.prepare_invoke();
    invocation.arg(settled.len());
    for (held, quantity) in settled {
        invocation.key(&**held).arg(*quantity);
    }
    for (take, (count, reading, held)) in batch.iter().zip(keys) {
        invocation
            .key(&**count)
            .key(&**reading)
            .key(&**held)
            .arg(take.quantity);
    }
    redis
        .call("gate_take", |mut c| async move {
            invocation.invoke_async::<Vec<i64>>(&mut c).await
        })
        .await
        .filter(|answers| answers.len() == 3 * batch.len())
}

fn gate_key(redis: &Redis, product_id: i64) -> String {
    redis.key(format_args!("gate:{product_id}"))
}

pub(super) struct SharedGate {
    redis: Arc<Redis>,
    /// Who holds the re-sync lease (for nobody but a human reading Redis).
    instance: String,
    /// The queue `take_batches` serves, started (with the subscription to
    /// raises) by the first order or re-sync, inside the server's runtime.
    takes: OnceLock<mpsc::UnboundedSender<Take>>,
    marks: Arc<Marks>,
    /// Codes of this instance's orders answered since the last batch.
    settlements: Arc<Settlements>,
    /// Whether to subscribe to raises (always, but in a test of what an
    /// instance does without hearing them).
    hears_raises: bool,
    /// Unix millis of the last re-sync that read the shared counts into the
    /// display mirror (`resync`, every second).
    mirrored_at: AtomicI64,
}

/// How old the display mirror may be before the shop shows the database's
/// counts instead: a few re-syncs that did not run (a re-sync that finds
/// Redis away marks the mirror stale at once). While Redis is away the mirror
/// stops moving, and it showed every instance's buyers the stock of the
/// moment Redis went, sold codes included, for as long as it was away (a
/// multi-instance audit).
const MIRROR_FRESH_MS: i64 = 5_000;

impl SharedGate {
    pub(super) fn new(redis: Arc<Redis>) -> Self {
        Self::with_mark_ttl(redis, MARK_TTL)
    }

    fn with_mark_ttl(redis: Arc<Redis>, ttl: Duration) -> Self {
        Self {
            redis,
            instance: kami_core::secrets::random_token("gate_"),
            takes: OnceLock::new(),
            marks: Arc::new(Marks::new(ttl)),
            settlements: Arc::default(),
            hears_raises: true,
            mirrored_at: AtomicI64::new(0),
        }
    }

    /// Whether the display mirror follows the shared counts: Redis answers,
    /// and a re-sync read them lately.
    pub(super) fn mirror_fresh(&self) -> bool {
        self.redis.available()
            && kami_core::now_millis() - self.mirrored_at.load(AtomicOrdering::Relaxed)
                < MIRROR_FRESH_MS
    }

    fn takes(&self) -> &mpsc::UnboundedSender<Take> {
        self.takes.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(take_batches(
                self.redis.clone(),
                self.marks.clone(),
                self.settlements.clone(),
                rx,
            ));
            if self.hears_raises {
                tokio::spawn(listen(self.redis.clone(), Arc::downgrade(&self.marks)));
            }
            tx
        })
    }

    /// Checks and takes `quantity` codes in the next batch. `None` (let the
    /// order through) when Redis is away, or the answer takes longer than
    /// `WAIT`: a late answer's codes are given back when it is dropped.
    async fn take(&self, product_id: i64, quantity: i64) -> Option<Answer> {
        if !self.redis.available() {
            return None;
        }
        let (answer, answered) = oneshot::channel();
        let take = Take {
            product_id,
            quantity,
            answer,
        };
        self.takes().send(take).ok()?;
        tokio::time::timeout(WAIT, answered)
            .await
            .ok()?
            .ok()
            .flatten()
    }

    fn key(&self, product_id: i64) -> String {
        gate_key(&self.redis, product_id)
    }

    #[cfg(test)]
    fn listening(&self) -> bool {
        self.marks.listening()
    }

    pub(super) async fn admit(
        &self,
        product_id: i64,
        quantity: i64,
        mirror: &LocalCounts,
    ) -> Admission {
        if self.marks.sold_out(product_id) {
            return Admission::SoldOut;
        }
        match self.take(product_id, quantity).await {
            Some(Answer {
                verdict: 1,
                count,
                hold,
            }) => {
                mirror.set(product_id, count);
                Admission::Pass(hold)
            }
            Some(Answer {
                verdict: 0, count, ..
            }) => {
                mirror.set(product_id, count);
                verdict(count)
            }
            // Short only by codes orders in flight hold: theirs may come
            // back, so the database decides. Reserved, such an order leaves
            // the count a little high until the next re-sync (a second at
            // most: counts this small are re-read each one), which lets the
            // database answer and turns nobody away.
            Some(Answer {
                verdict: 2, count, ..
            }) => {
                mirror.set(product_id, count);
                Admission::Pass(Hold::none())
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
            Settled::Reserved => self.landed(hold),
            Settled::SoldOut => {
                // No reading is 0, as the script counts it.
                let reading = hold.reading.unwrap_or(0);
                self.landed(hold);
                self.store(product_id, 0, reading, "same", mirror).await;
            }
            Settled::Refused => {
                if let Some(h) = hold.held.as_ref() {
                    let (key, held, quantity) = (h.key.clone(), h.held_key.clone(), h.quantity);
                    // Disarmed only once given back: a request dropped during
                    // the script (its buyer went away) leaves the codes to
                    // the hold's drop, which gives them back, at worst twice.
                    // A count too high only lets buyers through to the
                    // database until the next re-sync; given back never, it
                    // turned them away.
                    self.gave_back(product_id, quantity, &key, Some(&held), mirror)
                        .await;
                    hold.keep();
                }
            }
        }
    }

    /// The database answered the order of `hold` without giving its codes
    /// back to the count (they are reserved, or there were none): they are
    /// no longer in flight as of the next batch.
    fn landed(&self, hold: Hold) {
        if let Some(h) = hold.held.as_ref() {
            self.settlements.add(h.held_key.clone(), h.quantity);
        }
        hold.keep();
    }

    pub(super) async fn give_back(&self, product_id: i64, quantity: i64, mirror: &LocalCounts) {
        self.gave_back(product_id, quantity, &self.key(product_id), None, mirror)
            .await;
    }

    /// Gives `quantity` codes back to the count at `key`; `held`: an
    /// order's, in flight until now (`give_back`).
    async fn gave_back(
        &self,
        product_id: i64,
        quantity: i64,
        key: &str,
        held: Option<&str>,
        mirror: &LocalCounts,
    ) {
        if let Some(n) = give_back(&self.redis, key, held, product_id, quantity).await {
            self.holds(product_id, n, mirror);
        }
    }

    /// One of this instance's scripts left the count at `n`: the display
    /// mirror follows, and a count above 0 wipes this instance's mark at
    /// once, before its own message comes.
    fn holds(&self, product_id: i64, n: i64, mirror: &LocalCounts) {
        if n > 0 {
            self.marks.raised(product_id);
        }
        mirror.set(product_id, n);
    }

    /// The number of a reading about to start; `None` when Redis is away
    /// (and no count could be set anyway).
    pub(super) async fn reading(&self) -> Option<u64> {
        let key = readings_key(&self.redis);
        self.redis
            .call("gate_reading", |mut c| async move {
                redis::cmd("INCR").arg(key).query_async::<u64>(&mut c).await
            })
            .await
    }

    /// A count just read from the database by `reading`.
    pub(super) async fn set(
        &self,
        product_id: i64,
        available: i64,
        reading: u64,
        mirror: &LocalCounts,
    ) {
        self.store(product_id, available, reading, "newer", mirror)
            .await;
    }

    /// `gate_set.lua`: `mode` "newer" or "same" (see there).
    async fn store(
        &self,
        product_id: i64,
        available: i64,
        reading: u64,
        mode: &'static str,
        mirror: &LocalCounts,
    ) {
        let key = self.key(product_id);
        let (read, counter) = (reading_key(&key), readings_key(&self.redis));
        let channel = raises_channel(&self.redis);
        let held = self
            .redis
            .call("gate_set", |mut c| async move {
                SET.key(key)
                    .key(read)
                    .key(counter)
                    .arg(available)
                    .arg(reading)
                    .arg(mode)
                    .arg(channel)
                    .arg(product_id)
                    .invoke_async::<Option<i64>>(&mut c)
                    .await
            })
            .await;
        if let Some(Some(n)) = held {
            self.holds(product_id, n, mirror);
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

    /// `StockGate::refresh_exact` against the shared count.
    pub(super) async fn refresh_exact(
        &self,
        store: &dyn Store,
        product_id: i64,
        mirror: &LocalCounts,
    ) -> StoreResult<()> {
        if let Some(reading) = self.reading().await {
            let exact = store.available_count(product_id, i64::MAX).await?;
            self.set(product_id, exact, reading, mirror).await;
        }
        Ok(())
    }

    /// `StockGate::refresh` against the shared count: whether the count
    /// was read anew (false: Redis is away, or a big count was left alone).
    pub(super) async fn refresh(
        &self,
        store: &dyn Store,
        product_id: i64,
        mirror: &LocalCounts,
    ) -> StoreResult<bool> {
        // Redis is away: nothing to correct now.
        let Some(reading) = self.reading().await else {
            return Ok(false);
        };
        let n = store.available_count(product_id, EXACT_BELOW).await?;
        if n < EXACT_BELOW {
            self.set(product_id, n, reading, mirror).await;
            return Ok(true);
        }
        match self.get(product_id).await {
            Some(current) if current.is_none_or(|c| c < EXACT_BELOW) => {
                let exact = store.available_count(product_id, i64::MAX).await?;
                self.set(product_id, exact, reading, mirror).await;
                Ok(true)
            }
            _ => Ok(false),
        }
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
        // Subscribes to raises before the first order needs a mark.
        self.takes();
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
            // Redis is away: the mirror stops following it from now.
            self.mirrored_at.store(0, AtomicOrdering::Relaxed);
            return Ok(());
        };
        self.mirrored_at
            .store(kami_core::now_millis(), AtomicOrdering::Relaxed);
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
        // One number for the pass: it is still taken before every read.
        let Some(reading) = self.reading().await else {
            return Ok(());
        };
        for product_id in stale {
            let n = store.available_count(product_id, EXACT_BELOW).await?;
            let n = if n < EXACT_BELOW {
                n
            } else {
                store.available_count(product_id, i64::MAX).await?
            };
            self.set(product_id, n, reading, mirror).await;
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

/// Against a real Redis (`KAMI_TEST_REDIS_URL`, default
/// `redis://127.0.0.1:6379`), each test under a prefix of its own.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_conn::RedisSettings;
    use std::future::Future;
    use std::time::Instant;

    struct Fixture {
        gate: Arc<SharedGate>,
        mirror: Arc<LocalCounts>,
        admin: redis::Client,
        prefix: String,
    }

    fn redis_url() -> String {
        std::env::var("KAMI_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// A gate as an instance keeps it, on the keys under `prefix`.
    fn instance(prefix: &str, mark_ttl: Duration) -> SharedGate {
        let redis = Redis::open(&RedisSettings {
            url: redis_url(),
            prefix: prefix.to_string(),
        })
        .expect("Redis URL");
        SharedGate::with_mark_ttl(Arc::new(redis), mark_ttl)
    }

    impl Fixture {
        fn new() -> Self {
            Self::with_mark_ttl(MARK_TTL)
        }

        fn with_mark_ttl(mark_ttl: Duration) -> Self {
            Self::with_gate(|prefix| instance(prefix, mark_ttl))
        }

        /// An instance that never subscribes to raises.
        fn deaf() -> Self {
            Self::with_gate(|prefix| SharedGate {
                hears_raises: false,
                ..instance(prefix, Duration::from_secs(3600))
            })
        }

        fn with_gate(gate: impl FnOnce(&str) -> SharedGate) -> Self {
            let url = redis_url();
            let prefix = format!(
                "kami_u_{}:",
                kami_core::secrets::random_token("").to_lowercase()
            );
            Self {
                gate: Arc::new(gate(&prefix)),
                mirror: Arc::new(LocalCounts::default()),
                admin: redis::Client::open(url).expect("Redis URL"),
                prefix,
            }
        }

        fn conn(&self) -> redis::Connection {
            self.admin
                .get_connection()
                .expect("a Redis for the gate's tests (KAMI_TEST_REDIS_URL)")
        }

        fn set(&self, product_id: i64, n: impl redis::ToRedisArgs) {
            redis::cmd("SET")
                .arg(format!("{}gate:{product_id}", self.prefix))
                .arg(n)
                .query::<()>(&mut self.conn())
                .unwrap();
        }

        fn count(&self, product_id: i64) -> Option<i64> {
            redis::cmd("GET")
                .arg(format!("{}gate:{product_id}", self.prefix))
                .query(&mut self.conn())
                .unwrap()
        }

        /// The product's codes in flight, if Redis keeps a count of them.
        fn held(&self, product_id: i64) -> Option<i64> {
            redis::cmd("GET")
                .arg(format!("{}gate:{product_id}:held", self.prefix))
                .query(&mut self.conn())
                .unwrap()
        }

        async fn admit(&self, product_id: i64, quantity: i64) -> Admission {
            self.gate.admit(product_id, quantity, &self.mirror).await
        }

        /// Redis answers `product_id` sold out, and the gate marks it: a
        /// count then written behind the scripts' back (it publishes
        /// nothing) is not asked for. Leaves the count at 0.
        async fn sold_out_and_marked(&self, product_id: i64, when: &str) {
            self.set(product_id, 0);
            assert!(matches!(
                self.admit(product_id, 1).await,
                Admission::SoldOut
            ));
            self.set(product_id, 4);
            assert!(matches!(
                self.admit(product_id, 1).await,
                Admission::SoldOut
            ));
            assert_eq!(self.count(product_id), Some(4), "not marked ({when})");
            self.set(product_id, 0);
        }

        /// A command on the test's own keys (`gate:…` gets its prefix).
        fn raw(&self, cmd: &str, args: &[&str]) {
            let mut c = redis::cmd(cmd);
            for arg in args {
                match arg.strip_prefix("gate:") {
                    Some(_) => c.arg(format!("{}{arg}", self.prefix)),
                    None => c.arg(*arg),
                };
            }
            c.query::<()>(&mut self.conn()).unwrap();
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            if let Ok(mut c) = self.admin.get_connection() {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}*", self.prefix))
                    .query(&mut c)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut c);
                }
            }
        }
    }

    fn held(a: &Admission) -> bool {
        matches!(a, Admission::Pass(Hold { held: Some(_), .. }))
    }

    fn hold(a: Admission) -> Hold {
        match a {
            Admission::Pass(h) => h,
            other => panic!("expected a pass, got {other:?}"),
        }
    }

    /// A database `sold_out` older than a re-read (an import's, which saw
    /// the restock) leaves the re-read's count; with no re-read since the
    /// order was admitted, it sets the count to 0.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sold_out_answer_older_than_a_re_read_leaves_its_count() {
        let f = Fixture::new();
        f.set(8, 2);
        let (a, b) = (hold(f.admit(8, 1).await), hold(f.admit(8, 1).await));
        // An import commits five codes and re-reads the count; then the
        // database's answer to an order admitted before it arrives.
        let reading = f.gate.reading().await.unwrap();
        f.gate.set(8, 5, reading, &f.mirror).await;
        f.gate.settle(8, a, Settled::SoldOut, &f.mirror).await;
        assert_eq!(f.count(8), Some(5), "the restock was hidden");
        assert_eq!(f.mirror.get(8), Some(5));
        b.keep();
        let c = hold(f.admit(8, 1).await);
        f.gate.settle(8, c, Settled::SoldOut, &f.mirror).await;
        assert_eq!(f.count(8), Some(0));
    }

    /// Redis restarted empty (or lost the counter alone): a number taken
    /// before, however high, orders nothing after, and neither does a
    /// stored one above the counter; without that, one stale number would
    /// outrank every reading until the counter caught up with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reading_from_before_the_counter_was_lost_orders_nothing() {
        let f = Fixture::new();
        f.raw("SET", &["gate:readings", "1000"]);
        let stale = f.gate.reading().await.unwrap();
        f.raw("DEL", &["gate:readings"]);
        let fresh = f.gate.reading().await.unwrap();
        assert!(fresh < stale);
        f.gate.set(10, 3, fresh, &f.mirror).await;
        f.gate.set(10, 0, stale, &f.mirror).await;
        assert_eq!(f.count(10), Some(3), "a stale reading was set");
        let restock = f.gate.reading().await.unwrap();
        f.gate.set(10, 8, restock, &f.mirror).await;
        assert_eq!(f.count(10), Some(8));
        f.raw("SET", &["gate:10:read", "5000"]);
        let next = f.gate.reading().await.unwrap();
        f.gate.set(10, 4, next, &f.mirror).await;
        assert_eq!(f.count(10), Some(4), "a stale stored reading outranked");
    }

    /// Codes given back (an expiry's, a refused order's) stand on a reading
    /// of their own: a re-read begun before, or a `sold_out` to an order
    /// admitted before, may not know of them and leaves them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn codes_given_back_outrank_older_readings() {
        let f = Fixture::new();
        f.set(11, 1);
        let order = hold(f.admit(11, 1).await);
        let older = f.gate.reading().await.unwrap();
        f.gate.give_back(11, 2, &f.mirror).await;
        assert_eq!(f.count(11), Some(2));
        f.gate.set(11, 0, older, &f.mirror).await;
        f.gate.settle(11, order, Settled::SoldOut, &f.mirror).await;
        assert_eq!(f.count(11), Some(2), "released codes were hidden");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_older_re_read_never_overwrites_a_newer_one() {
        let f = Fixture::new();
        let older = f.gate.reading().await.unwrap();
        let newer = f.gate.reading().await.unwrap();
        assert!(older < newer);
        f.gate.set(9, 5, newer, &f.mirror).await;
        f.gate.set(9, 0, older, &f.mirror).await;
        assert_eq!(f.count(9), Some(5));
        assert_eq!(f.mirror.get(9), Some(5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_orders_in_batches_take_exactly_the_count() {
        let f = Arc::new(Fixture::new());
        f.set(1, 50);
        f.set(2, 7);
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let f = f.clone();
                // Two products in the same batches, one asking for two.
                let (pid, q) = if i % 2 == 0 { (1, 1) } else { (2, 2) };
                tokio::spawn(async move { (pid, f.admit(pid, q).await) })
            })
            .collect();
        let mut passed = [0, 0];
        let mut answers = Vec::new();
        for t in tasks {
            let (pid, a) = t.await.unwrap();
            match &a {
                a if held(a) => passed[(pid - 1) as usize] += 1,
                // Short, but with orders in flight that may yet give codes
                // back: the database decides. (Refusals can only come once
                // the held orders are answered.)
                Admission::Pass(Hold { held: None, .. }) => {}
                other => panic!("refused with every take still in flight: {other:?}"),
            }
            answers.push((pid, a));
        }
        // 50 of one code; 7 codes in twos make three orders and one left.
        assert_eq!(passed, [50, 3]);
        for (pid, a) in answers {
            if let Admission::Pass(h) = a {
                f.gate.settle(pid, h, Settled::Reserved, &f.mirror).await;
            }
        }
        // (The display mirror may end on any answer: requests set it as
        // they are scheduled, and the re-sync puts it right each second.)
        assert_eq!((f.count(1), f.count(2)), (Some(0), Some(1)));
        // Every take answered: now the gate is certain.
        assert!(matches!(f.admit(1, 1).await, Admission::SoldOut));
        assert!(matches!(f.admit(2, 2).await, Admission::Insufficient(1)));
    }

    /// An answered order's codes leave the held count by a run of their
    /// own when no take comes to carry them (another instance's buyers
    /// must not wait for this one's next order), well before the held
    /// count's expiry; answers for two products go in one run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answered_orders_leave_the_held_count_without_a_take() {
        let f = Fixture::new();
        f.set(21, 1);
        f.set(22, 3);
        let (a, b) = (f.admit(21, 1).await, f.admit(22, 2).await);
        assert!(held(&a) && held(&b), "{a:?} {b:?}");
        f.gate
            .settle(21, hold(a), Settled::Reserved, &f.mirror)
            .await;
        f.gate
            .settle(22, hold(b), Settled::SoldOut, &f.mirror)
            .await;
        let deadline = Instant::now() + Duration::from_secs(1);
        for pid in [21, 22] {
            loop {
                let held_left = f.held(pid);
                if held_left.is_none() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{held_left:?} of {pid} still held"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        // A held count that is not a number fails no order (an instance
        // that hears no raises makes no marks, so each order asks Redis).
        let g = Fixture::deaf();
        g.raw("SET", &["gate:23:held", "not a number"]);
        g.set(23, 0);
        assert!(matches!(g.admit(23, 1).await, Admission::SoldOut));
        g.set(23, 1);
        let a = g.admit(23, 1).await;
        assert!(held(&a), "{a:?}");
        g.gate
            .settle(23, hold(a), Settled::Reserved, &g.mirror)
            .await;
    }

    /// Orders in flight that the database then refuses (a per-buyer
    /// limit, the twin of an `Idempotency-Key`) do not turn other buyers
    /// away meanwhile: an order the count is short for only by codes in
    /// flight passes to the database; once every take is answered the gate
    /// refuses on its own again, and the held count is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orders_in_flight_that_fail_do_not_turn_others_away() {
        let f = Fixture::new();
        f.set(20, 2);
        let (a, b) = (f.admit(20, 1).await, f.admit(20, 1).await);
        assert!(held(&a) && held(&b), "{a:?} {b:?}");
        let c = f.admit(20, 1).await;
        assert!(
            matches!(c, Admission::Pass(Hold { held: None, .. })),
            "turned away while two orders were in flight: {c:?}"
        );
        // Two more than the count and everything in flight: refused.
        assert!(matches!(f.admit(20, 3).await, Admission::Insufficient(2)));
        // The database refuses `a` (the buyer's limit): its code is back.
        f.gate
            .settle(20, hold(a), Settled::Refused, &f.mirror)
            .await;
        let d = f.admit(20, 1).await;
        assert!(held(&d), "{d:?}");
        f.gate
            .settle(20, hold(b), Settled::Reserved, &f.mirror)
            .await;
        f.gate
            .settle(20, hold(d), Settled::Reserved, &f.mirror)
            .await;
        assert!(matches!(f.admit(20, 1).await, Admission::SoldOut));
        assert_eq!(f.count(20), Some(0));
        assert_eq!(f.held(20), None, "codes left in flight");
    }

    /// Waits until the gate is subscribed to raises (it subscribes with
    /// its first re-sync or order).
    async fn subscribed(gate: &SharedGate) {
        gate.takes();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gate.listening() {
            assert!(Instant::now() < deadline, "never subscribed to raises");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Admits one code of `product_id` until it passes; panics after 5 s.
    async fn passes_soon(f: &Fixture, product_id: i64, why: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match f.admit(product_id, 1).await {
                Admission::Pass(h) => {
                    return f
                        .gate
                        .settle(product_id, h, Settled::Reserved, &f.mirror)
                        .await
                }
                other => assert!(Instant::now() < deadline, "{why}: still {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Once Redis found a product sold out, the instance answers from
    /// memory — until another instance lifts the count: its script
    /// publishes the product, and the mark goes before its TTL (an hour
    /// here) could end it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sold_out_mark_holds_until_another_instance_raises_the_count() {
        let f = Fixture::with_mark_ttl(Duration::from_secs(3600));
        let other = instance(&f.prefix, MARK_TTL);
        subscribed(&f.gate).await;
        f.sold_out_and_marked(12, "first sale").await;
        // Another instance's restock (a re-read from its database).
        let reading = other.reading().await.unwrap();
        other.set(12, 3, reading, &LocalCounts::default()).await;
        passes_soon(&f, 12, "the restock never reached the mark").await;
        assert_eq!(f.count(12), Some(2));
        // Sold out again, then codes an expiry on the other instance
        // released.
        f.sold_out_and_marked(12, "after the raise").await;
        other.give_back(12, 1, &LocalCounts::default()).await;
        passes_soon(&f, 12, "the give-back never reached the mark").await;
        assert_eq!(f.count(12), Some(0));
    }

    /// This instance's own give-backs and re-reads wipe its mark at once,
    /// without waiting for their message (this instance hears none): the
    /// next order through it passes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_instance_sees_its_own_raises_at_once() {
        let f = Fixture::deaf();
        f.gate.marks.listen(true);
        f.sold_out_and_marked(13, "first sale").await;
        f.gate.give_back(13, 1, &f.mirror).await;
        let a = f.admit(13, 1).await;
        assert!(held(&a), "the mark outlived a give-back: {a:?}");
        f.gate
            .settle(13, hold(a), Settled::Reserved, &f.mirror)
            .await;
        // Sold out and marked again; then a re-read finds a restock.
        assert!(matches!(f.admit(13, 1).await, Admission::SoldOut));
        let reading = f.gate.reading().await.unwrap();
        f.gate.set(13, 2, reading, &f.mirror).await;
        let a = f.admit(13, 1).await;
        assert!(held(&a), "the mark outlived a re-read: {a:?}");
        hold(a).keep();
    }

    /// Without the subscription nothing is marked: every order is answered
    /// from a run that began after it arrived, so even a count written
    /// behind the scripts' back is seen by the next order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_the_subscription_every_order_asks_redis() {
        let f = Fixture::deaf();
        f.set(3, 0);
        assert!(matches!(f.admit(3, 1).await, Admission::SoldOut));
        f.set(3, 2);
        let a = f.admit(3, 1).await;
        assert!(held(&a));
        if let Admission::Pass(h) = a {
            h.keep();
        }
        assert_eq!(f.count(3), Some(1));
        // No count kept: let the database decide.
        assert!(matches!(
            f.admit(4, 1).await,
            Admission::Pass(Hold { held: None, .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_count_that_is_not_a_number_fails_no_other_order_of_its_batch() {
        let f = Arc::new(Fixture::new());
        f.set(6, "not a number");
        f.set(7, 1);
        let (bad, good) = tokio::join!(f.admit(6, 1), f.admit(7, 1));
        assert!(
            matches!(bad, Admission::Pass(Hold { held: None, .. })),
            "{bad:?}"
        );
        assert!(held(&good), "{good:?}");
        if let Admission::Pass(h) = good {
            h.keep();
        }
        assert_eq!(f.count(7), Some(0));
        assert!(f.gate.redis.available(), "one bad count opened the breaker");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_order_gone_before_its_batch_answered_gives_its_codes_back() {
        let f = Fixture::new();
        f.set(5, 3);
        // Polled once (queued in the next batch), then dropped: the
        // request went away while Redis took its codes.
        let mut gone = Box::pin(f.admit(5, 2));
        std::future::poll_fn(|cx| {
            assert!(gone.as_mut().poll(cx).is_pending(), "answered at once");
            std::task::Poll::Ready(())
        })
        .await;
        drop(gone);
        // Batches run in arrival order, so once this one is answered the
        // dropped one has run too.
        let a = f.admit(5, 1).await;
        assert!(held(&a));
        if let Admission::Pass(h) = a {
            h.keep();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while f.count(5) != Some(2) {
            assert!(
                Instant::now() < deadline,
                "the dropped order's codes were not given back: {:?}",
                f.count(5)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

//! SQLite's hot paths without sqlx's worker threads: the group commit's
//! order and payment batches, and the order lookup every notification and
//! order page starts with.
//!
//! Why by hand: sqlx runs each SQLite connection on a thread of its own and
//! hands every statement, and every result row, across a channel to it and
//! back. During a drop perf showed a quarter of the server's time in those
//! hand-offs (`finish_task_switch`, flume's `SyncSignal::fire`) and more in
//! re-parsing statements, while the one writer sat idle between them. Here
//! one thread owns a second write connection (rusqlite) and runs a whole
//! batch on it with cached prepared statements: one hand-off per batch.
//!
//! The batches decide exactly as `batch.rs` and `payments.rs` do, with the
//! same statements. Anything outside the common case (a short claim, a late
//! payment, a payment for a paid order, any error) rolls the batch back and
//! returns `None`/`Err`, and the caller replays it through the sqlx path, so
//! the rare cases keep one implementation. Both write connections open their
//! transactions with `BEGIN IMMEDIATE`, so SQLite's write lock serialises
//! them as it serialises any two writers (and `kami cards import`).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use kami_core::limits::{email_limit_key, ip_limit_key};
use kami_core::OrderStatus;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

use super::orders;
use super::rows::ORDER_COLUMNS;
use crate::types::*;
use crate::{Result, StoreError};

/// The same settings as the sqlx write connection (`connect.rs`), with a
/// 24 MiB page cache (the batches touch the hot end of a few indexes) and
/// its own checkpoint as a mere backstop (`BACKSTOP_PRAGMA`).
const WRITER_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON; PRAGMA cache_size = -24576; PRAGMA temp_store = MEMORY;";
const READER_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA cache_size = -2048;";
/// Idle read connections kept for reuse.
const READERS_KEPT: usize = 8;
/// Prepared statements kept per connection (the batches use about twenty).
const STATEMENT_CACHE: usize = 64;

/// How long the WAL may grow, in frames (a 4 KiB page and a 24-byte header
/// each: about 540 MB), before the writer finishes the background
/// checkpoint (`restart_wal`). Every restart stops the writer for the copy
/// and the two syncs of what the background passes left; since those passes
/// catch up first and sync the database after each copy (`connect.rs`,
/// `checkpoint_loop`) that is a few hundred frames, 3–18 ms in a notification
/// storm whatever the WAL's length (40–90 ms before stop 16, when the restart
/// also synced every page the passes had copied since the last one). A storm
/// of payments for orders spread over the whole sale writes about 60,000
/// frames a second (every payment dirties its own pages
/// of the orders, codes and payments indexes), so restarting once a second,
/// as this did before stop 11, stopped the writer an eighth of the time, and
/// every connection waited through it. Past this length the stalls come
/// every two or three seconds in the worst storm and never in an ordinary
/// day. The WAL file keeps its longest length on disk (SQLite reuses it from
/// the start; up to twice this if the backstop is reached), and a start
/// after a crash reads it.
pub(super) const RESTART_FRAMES: i64 = 131_072;

/// Past this many frames the committing writer checkpoints itself (SQLite's
/// `wal_autocheckpoint`, in every commit while the WAL stays that long):
/// only if the background checkpoint or the restarts have stopped working.
/// Well above `RESTART_FRAMES`, or every commit of a storm would copy.
pub(super) const BACKSTOP_FRAMES: i64 = 2 * RESTART_FRAMES;
pub(super) static BACKSTOP_PRAGMA: LazyLock<String> =
    LazyLock::new(|| format!("PRAGMA wal_autocheckpoint = {BACKSTOP_FRAMES};"));

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

// Statements with the merchant written in, built once: a `format!` per row
// on the writer thread, the serial point of a drop, only allocates.
static ORDER_BY_NO: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_no = ?1"));
static INSERT_ORDER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO orders (merchant_id, order_no, product_id, quantity, unit_price, \
         discount, amount, currency, email, query_password_hash, access_token_hash, \
         buyer_ip, channel, status, created_at, expires_at, idempotency_key, coupon_id, \
         limit_holds) VALUES ({DEFAULT_MERCHANT}, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
         ?10, ?11, ?12, 'pending', ?13, ?14, ?15, ?16, ?17)"
    )
});
static INSERT_PAYMENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO payments (merchant_id, order_id, channel, trade_no, amount, currency, \
         raw, received_at) VALUES ({DEFAULT_MERCHANT}, ?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (channel, trade_no) DO NOTHING"
    )
});

/// How often an idle writer thread looks at the WAL's length. An import
/// writes through the other connection and can leave a WAL of a gigabyte
/// (a million codes); restarted only at the next order batch, it stalled the
/// first batches of the drop that followed (a 60–90 ms p99 in a 10,000-order
/// sale on a million codes, against 30 ms on 10,000). Idle, the restart
/// keeps no one waiting.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// How long the WAL restart waits for a writer or a reader of an older
/// snapshot before it gives up.
const RESTART_PATIENCE: Duration = Duration::from_millis(20);
/// How long a restart that gave up waits before the next try: behind a long
/// reader (a backup, a big listing) every try costs the writer
/// `RESTART_PATIENCE`.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// The writers' busy timeout (`WRITER_PRAGMAS`, `wait_for_lock`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the writer thread sleeps between two tries at a lock.
const BUSY_POLL: Duration = Duration::from_micros(250);

thread_local! {
    /// When the writer thread's current wait for a lock began.
    static BUSY_SINCE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// The writer thread's busy handler: tries again every `BUSY_POLL` until
/// `patience` has passed since the first refusal. SQLite's own handler
/// (`busy_timeout`) sleeps 1, 2, 5, 10, 15, 20, then 25 ms between tries,
/// so a lock held 9 ms by another connection kept the writer, and every
/// buyer queued behind it, waiting 18 ms. A try is a lock call on the
/// shared memory, microseconds: polling costs little, and only while the
/// lock is held elsewhere (`kami cards import` beside the shop, the expiry
/// sweep's transaction, the restart waiting for readers).
fn busy_wait(tries: i32, patience: Duration) -> bool {
    let now = Instant::now();
    let since = BUSY_SINCE.with(|since| {
        if tries == 0 || since.get().is_none() {
            since.set(Some(now));
        }
        since.get().unwrap_or(now)
    });
    if now.duration_since(since) >= patience {
        return false;
    }
    std::thread::sleep(BUSY_POLL);
    true
}

/// The writer's busy handler for its transactions (`BUSY_TIMEOUT`).
fn wait_for_lock(tries: i32) -> bool {
    busy_wait(tries, BUSY_TIMEOUT)
}

/// The writer's busy handler while it restarts the WAL (`RESTART_PATIENCE`).
fn wait_for_restart(tries: i32) -> bool {
    busy_wait(tries, RESTART_PATIENCE)
}

/// Finishes the background checkpoint so the WAL starts over: the
/// background task's passive checkpoints copy most of the WAL while commits
/// go on, but never all of it, and SQLite only reuses the WAL from its start
/// after a finished one; without this the WAL grew to 2.6 GB in one
/// notification storm. Here, between two batches, RESTART copies what the
/// passive checkpoints left (the 200–300 frames committed since their last
/// catch-up pass, `connect.rs`), syncs them, and waits for the readers of
/// older snapshots, a few milliseconds. Run from the background
/// task instead it had to win the write lock from this thread, which took
/// over a second under load. It waits `RESTART_PATIENCE` at most: a long
/// reader (a backup, a big listing) or the other writer only postpones it
/// (`RESTART_BACKOFF`). Whether the WAL was restarted.
fn restart_wal(conn: &Connection) -> bool {
    let restart = || -> rusqlite::Result<(i64, i64)> {
        conn.busy_handler(Some(wait_for_restart))?;
        let answer = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        });
        conn.busy_handler(Some(wait_for_lock))?;
        answer
    };
    match restart() {
        Ok((0, _)) => true,
        Ok((_, frames)) => {
            tracing::debug!(frames, "WAL restart postponed: a reader or writer was busy");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "WAL restart failed; retrying in a second");
            false
        }
    }
}

/// The writer thread's nice value, when the process may raise it
/// (`CAP_SYS_NICE`, root, or systemd's `LimitNICE=-10`). The thread is the
/// one serial point of a drop and a notification storm, and with the HTTP
/// workers busy on two cores it waited as long to be scheduled as it ran:
/// `/proc/<pid>/task/<tid>/schedstat` over 5 s of a drop read 2.45 s running
/// and 1.35 s runnable but waiting. At -10 it waited 0.37–0.45 s. It only
/// runs when there is work, so the boost costs nothing when idle.
const WRITER_NICE: i32 = -10;

/// Raises the calling thread's scheduling priority to `WRITER_NICE`; a
/// process without the privilege keeps the default and says so once.
fn raise_priority() {
    let tid = rustix::thread::gettid();
    match rustix::process::setpriority_process(Some(tid), WRITER_NICE) {
        Ok(()) => tracing::debug!(nice = WRITER_NICE, "SQLite writer thread priority raised"),
        Err(e) => tracing::info!(
            error = %e,
            "the SQLite writer thread keeps the default priority (raising it needs CAP_SYS_NICE or LimitNICE=-10)"
        ),
    }
}

pub(crate) struct Direct {
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    /// Turns at SQLite's write lock, first come first served, shared with
    /// the sqlx write connection (`SqlStore::begin`). SQLite itself keeps
    /// no queue: a writer that finds the lock taken sleeps and retries (1,
    /// 2, 5 … 100 ms), and this thread, fed back to back during a drop,
    /// took the lock again within microseconds of every commit, so the
    /// expiry sweep or a restock could wait out their 10 s busy timeout.
    turn: tokio::sync::Mutex<()>,
}

fn closed() -> StoreError {
    StoreError::Corrupt("the SQLite writer thread has stopped".into())
}

impl Direct {
    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the write connection and starts its thread.
    /// `wal_frames` is the WAL's length as the background checkpoint last saw it.
    pub(crate) fn open(path: &Path, wal_frames: Arc<AtomicI64>) -> Result<Direct> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch(WRITER_PRAGMAS)?;
        conn.busy_handler(Some(wait_for_lock))?;
        conn.execute_batch(&BACKSTOP_PRAGMA)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("kami-sqlite-writer".into())
            .spawn(move || {
                raise_priority();
                let mut conn = conn;
                let mut restart_after = Instant::now();
                // Ends when the store is closed or dropped (every sender gone).
                loop {
                    let job = match rx.recv_timeout(IDLE_CHECK) {
                        Ok(job) => Some(job),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    if let Some(job) = job {
                        if !conn.is_autocommit() {
                            // A transaction a failed job left open would
                            // hold the write lock for good.
                            let _ = conn.execute_batch("ROLLBACK");
                        }
                        // A panicking job drops its transaction (rolled
                        // back) and its reply (the caller sees an error);
                        // the thread goes on.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                    }
                    // Zeroed first: the next background pass reports the
                    // WAL's length again (short once it has started over).
                    if wal_frames.load(Ordering::Relaxed) >= RESTART_FRAMES
                        && Instant::now() >= restart_after
                    {
                        wal_frames.store(0, Ordering::Relaxed);
                        if !restart_wal(&conn) {
                            restart_after = Instant::now() + RESTART_BACKOFF;
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Direct {
            path: path.to_path_buf(),
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            readers: Mutex::new(Vec::new()),
            turn: tokio::sync::Mutex::new(()),
        })
    }

    /// Runs `f` on the writer thread and waits for its answer.
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        let _turn = self.turn.lock().await;
        self.jobs
            .lock()
            .map_err(|_| closed())?
            .as_ref()
            .ok_or_else(closed)?
            .send(job)
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())
    }

    /// A turn at the write lock for a transaction on the sqlx connection,
    /// to hold until its `BEGIN IMMEDIATE` has taken the lock.
    pub(crate) async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// Stops the writer thread once its current job is done and closes its
    /// connection and the read connections.
    pub(crate) async fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Ok(mut readers) = self.readers.lock() {
            readers.clear();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// An order batch in one transaction; `Ok(None)` when it must be
    /// replayed through the general path (nothing was written then).
    pub(crate) async fn create_orders(
        &self,
        batch: Vec<NewOrder>,
    ) -> Result<Option<Vec<Result<Order, CreateOrderError>>>> {
        self.run(move |c| write_orders(c, &batch)).await?
    }

    /// A payment batch in one transaction when every payment in it is a
    /// duplicate or the first payment of a pending order; `Ok(None)`
    /// otherwise (nothing was written then).
    pub(crate) async fn pay_orders(
        &self,
        batch: Vec<NewPayment>,
    ) -> Result<Option<Vec<PayOutcome>>> {
        self.run(move |c| write_payments(c, &batch)).await?
    }

    /// One order by number, read on the calling thread: a point lookup by
    /// a unique index costs microseconds, less than handing it to a thread.
    pub(crate) fn get_order(&self, order_no: &str) -> Result<Option<Order>> {
        let conn = match self.readers.lock().map_err(|_| closed())?.pop() {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.execute_batch(READER_PRAGMAS)?;
                c
            }
        };
        let found = conn
            .prepare_cached(&ORDER_BY_NO)?
            .query_row([order_no], |r| Ok(order(r)))
            .optional()?
            .transpose()?;
        let mut readers = self.readers.lock().map_err(|_| closed())?;
        if readers.len() < READERS_KEPT {
            readers.push(conn);
        }
        Ok(found)
    }
}

/// An order from a row of `ORDER_COLUMNS`, its fields read by position:
/// rusqlite finds a column by name by comparing it with each column's name
/// in turn, a quarter of the instructions of a polled order (callgrind,
/// docs/PERFORMANCE.md, stop 45). `order_columns_are_read_by_position`
/// checks the positions against the names.
fn order(r: &rusqlite::Row<'_>) -> Result<Order> {
    let status: String = r.get(13)?;
    let status = OrderStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown order status {status:?}")))?;
    Ok(Order {
        id: r.get(0)?,
        order_no: r.get(1)?,
        product_id: r.get(2)?,
        quantity: r.get(3)?,
        unit_price: r.get(4)?,
        discount: r.get(5)?,
        amount: r.get(6)?,
        currency: r.get(7)?,
        email: r.get(8)?,
        access_token_hash: r.get(9)?,
        has_query_password: r.get::<_, i64>(10)? != 0,
        buyer_ip: r.get(11)?,
        channel: r.get(12)?,
        status: OrderStatusField(status),
        created_at: r.get(14)?,
        expires_at: r.get(15)?,
        paid_at: r.get(16)?,
        delivered_at: r.get(17)?,
        coupon_id: r.get(18)?,
        limit_holds: r.get(19)?,
    })
}

fn begin(c: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

/// `batch.rs`'s `write_orders`, statement for statement.
fn write_orders(
    c: &mut Connection,
    batch: &[NewOrder],
) -> Result<Option<Vec<Result<Order, CreateOrderError>>>> {
    let tx = begin(c)?;
    let mut wanted: HashMap<i64, i64> = HashMap::new();
    for o in batch {
        *wanted.entry(o.product_id).or_default() += o.quantity;
    }
    let mut budget = HashMap::with_capacity(wanted.len());
    // The codes the batch may claim, per product, in claiming order: the
    // writer holds SQLite's only write lock, so they stay available until
    // the claims below (which still check it).
    let mut free: HashMap<i64, std::collections::VecDeque<i64>> =
        HashMap::with_capacity(wanted.len());
    for (product_id, want) in wanted {
        let ids = tx
            .prepare_cached(
                "SELECT id FROM cards WHERE product_id = ?1 AND status = 'available' \
                 ORDER BY id LIMIT ?2",
            )?
            .query_map(params![product_id, want], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<std::collections::VecDeque<i64>>>()?;
        budget.insert(product_id, ids.len() as i64);
        free.insert(product_id, ids);
    }
    // A lone order is answered as `orders::create_order` answers it: its
    // limits and coupon before its stock, and a refusal rolls back the
    // whole transaction (nothing else is in it).
    let lone = batch.len() == 1;
    let mut verdicts: Vec<Option<CreateOrderError>> = Vec::with_capacity(batch.len());
    for o in batch {
        // As in batch.rs: the key is claimed before the order is decided.
        if let Some(rec) = &o.idempotency {
            if !insert_idempotency(&tx, rec)? {
                verdicts.push(Some(CreateOrderError::IdempotencyKeyTaken));
                continue;
            }
        }
        let verdict = decide(&tx, o, &mut budget, lone)?;
        if let (true, Some(refused)) = (lone, verdict) {
            drop(tx);
            return Ok(Some(vec![Err(refused)]));
        }
        if let (Some(_), Some(rec)) = (&verdict, &o.idempotency) {
            tx.prepare_cached(orders::DELETE_IDEMPOTENCY)?
                .execute(params![rec.scope, rec.key])?;
        }
        verdicts.push(verdict);
    }
    let mut out = Vec::with_capacity(batch.len());
    for (o, verdict) in batch.iter().zip(verdicts) {
        if let Some(refused) = verdict {
            out.push(Err(refused));
            continue;
        }
        // No `RETURNING id`: SQLite runs RETURNING as a trigger, and a
        // statement with a trigger keeps a statement journal (perf: 10% of
        // the writer's samples in a drop, copying pages into it).
        tx.prepare_cached(&INSERT_ORDER)?.execute(params![
            o.order_no,
            o.product_id,
            o.quantity,
            o.unit_price,
            o.discount,
            o.amount,
            o.currency,
            o.email,
            o.query_password_hash,
            o.access_token_hash,
            o.buyer_ip,
            o.channel,
            o.created_at,
            o.expires_at,
            o.idempotency.as_ref().map(|r| r.key.as_str()),
            o.coupon_id,
            o.limit_holds(),
        ])?;
        let id = tx.last_insert_rowid();
        tx.prepare_cached(orders::INSERT_DEADLINE)?
            .execute(params![id, o.expires_at])?;
        // One claim statement per order, as DESIGN.md has it, checked by
        // its count. A single code is claimed by its id: a statement that
        // can change only one row needs no statement journal. More codes
        // take DESIGN.md's statement, `floor` narrowing its index scan.
        let ids = free.entry(o.product_id).or_default();
        let claimed = match (o.quantity, ids.pop_front()) {
            (1, Some(card)) => tx
                .prepare_cached(
                    "UPDATE cards SET status = 'reserved', order_id = ?1, reserved_until = ?2 \
                     WHERE id = ?3 AND status = 'available'",
                )?
                .execute(params![id, o.expires_at, card])?,
            (_, Some(floor)) => {
                ids.drain(..(o.quantity as usize - 1).min(ids.len()));
                tx.prepare_cached(
                    "UPDATE cards SET status = 'reserved', order_id = ?1, reserved_until = ?2 \
                     WHERE id IN (SELECT id FROM cards WHERE product_id = ?3 \
                     AND status = 'available' AND id >= ?5 ORDER BY id LIMIT ?4)",
                )?
                .execute(params![
                    id,
                    o.expires_at,
                    o.product_id,
                    o.quantity,
                    floor
                ])?
            }
            (_, None) => 0,
        };
        if (claimed as i64) < o.quantity {
            // The budget counted these codes in this very transaction, so
            // this cannot happen on SQLite; the general path decides anew.
            return Ok(None);
        }
        // Its `created` entry is the order's row (`orders::lifecycle`).
        out.push(Ok(super::orders::pending_order(id, o)));
    }
    tx.commit()?;
    Ok(Some(out))
}

fn insert_idempotency(tx: &Transaction<'_>, rec: &IdempotencyRecord) -> Result<bool> {
    let n = tx
        .prepare_cached(orders::INSERT_IDEMPOTENCY)?
        .execute(params![
            DEFAULT_MERCHANT,
            rec.scope,
            rec.key,
            rec.request_hash,
            rec.status_code,
            rec.response,
            rec.response_nonce,
            rec.created_at
        ])?;
    Ok(n == 1)
}

/// `batch.rs`'s `decide` with `orders.rs`'s `take_holds`: `None` grants.
/// `holds_first` (a lone order): the limits and the coupon are decided
/// before the stock, as `orders::create_order` decides them; a refusal of
/// the stock then leaves holds taken, for the caller's rollback to undo.
fn decide(
    tx: &Transaction<'_>,
    o: &NewOrder,
    budget: &mut HashMap<i64, i64>,
    holds_first: bool,
) -> Result<Option<CreateOrderError>> {
    if holds_first {
        if o.above_a_limit() {
            return Ok(Some(CreateOrderError::LimitExceeded));
        }
        if let Some(refused) = take_holds(tx, o)? {
            return Ok(Some(refused));
        }
    }
    let left = match super::batch::budget_verdict(o, budget) {
        Ok(left) => left,
        Err(refused) => return Ok(Some(refused)),
    };
    if !holds_first {
        if let Some(refused) = take_holds(tx, o)? {
            return Ok(Some(refused));
        }
    }
    budget.insert(o.product_id, left - o.quantity);
    Ok(None)
}

/// `orders.rs`'s `take_holds`: the order's quantity against its per-buyer
/// and per-IP limits, then one use of its coupon; a refusal gives back
/// what it took.
fn take_holds(tx: &Transaction<'_>, o: &NewOrder) -> Result<Option<CreateOrderError>> {
    // What this order has taken so far, given back if a later hold refuses.
    let mut taken: Vec<(&str, &str, String)> = Vec::new();
    let ip = o
        .per_ip_limit
        .zip(o.buyer_ip.as_deref())
        .map(|(limit, ip)| (limit, ip_limit_key(ip)));
    let holds = o
        .per_buyer_limit
        .map(|l| ("buyer_purchases", "email", email_limit_key(&o.email), l))
        .into_iter()
        .chain(ip.map(|(l, key)| ("buyer_ip_purchases", "ip", key, l)));
    for (table, column, key, limit) in holds {
        let n = tx
            .prepare_cached(&orders::add_held_sql(table, column))?
            .execute(params![o.product_id, key, o.quantity, limit])?;
        if n != 1 {
            give_back(tx, o.product_id, o.quantity, &taken)?;
            return Ok(Some(CreateOrderError::LimitExceeded));
        }
        taken.push((table, column, key));
    }
    if let Some(coupon) = o.coupon_id {
        let n = tx
            .prepare_cached(orders::TAKE_COUPON_USE)?
            .execute(params![coupon, o.created_at])?;
        if n != 1 {
            give_back(tx, o.product_id, o.quantity, &taken)?;
            return Ok(Some(CreateOrderError::CouponUsedUp));
        }
    }
    Ok(None)
}

/// Undoes the limit holds a refused order took (`release_holds`).
fn give_back(
    tx: &Transaction<'_>,
    product_id: i64,
    quantity: i64,
    taken: &[(&str, &str, String)],
) -> Result<()> {
    for (table, column, key) in taken {
        tx.prepare_cached(&format!(
            "UPDATE {table} SET quantity = CASE WHEN quantity - ?3 > 0 THEN quantity - ?3 ELSE 0 END \
             WHERE product_id = ?1 AND {column} = ?2"
        ))?
        .execute(params![product_id, key, quantity])?;
    }
    Ok(())
}

/// `payments.rs`'s `write_payments` for its common case: each payment is a
/// duplicate (its row was already stored, or an earlier one in this batch
/// stored it) or the first payment of a pending order, which sells the
/// order's reserved codes and delivers it.
fn write_payments(c: &mut Connection, batch: &[NewPayment]) -> Result<Option<Vec<PayOutcome>>> {
    let tx = begin(c)?;
    let mut out = Vec::with_capacity(batch.len());
    // The rows this batch wrote, by trade number: a twin later in the batch
    // is told apart without a statement.
    let mut written: HashMap<(&str, &str), i64> = HashMap::with_capacity(batch.len());
    for p in batch {
        let inserted = tx.prepare_cached(&INSERT_PAYMENT)?.execute(params![
            p.order_id,
            p.channel,
            p.trade_no,
            p.amount,
            p.currency,
            p.raw,
            p.received_at
        ])?;
        if inserted == 0 {
            // A duplicate of this order's payment, or a trade number
            // already stored for another order (refused).
            let owner: i64 = match written.get(&(p.channel.as_str(), p.trade_no.as_str())) {
                Some(owner) => *owner,
                None => tx
                    .prepare_cached(
                        "SELECT order_id FROM payments WHERE channel = ?1 AND trade_no = ?2",
                    )?
                    .query_row(params![p.channel, p.trade_no], |r| r.get(0))?,
            };
            out.push(if owner == p.order_id {
                PayOutcome::Duplicate
            } else {
                PayOutcome::TradeNoTaken
            });
            continue;
        }
        written.insert((&p.channel, &p.trade_no), p.order_id);
        // The order moves on only from pending; a row that is not pending
        // means a late payment, or one for a paid order. Read, then written
        // by a statement that can change one row only and has no RETURNING
        // (a trigger to SQLite): neither keeps a statement journal, which
        // copies every page a statement touches first (perf: 5% of the
        // writer's samples in a notification storm).
        let order: Option<(i64, String)> = tx
            .prepare_cached("SELECT quantity, status FROM orders WHERE id = ?1")?
            .query_row(params![p.order_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((quantity, "pending")) = order.as_ref().map(|(q, s)| (*q, s.as_str())) else {
            // The general path: it re-reads the order after the rollback.
            return Ok(None);
        };
        let moved = tx
            .prepare_cached(
                "UPDATE orders SET status = 'delivered', paid_at = ?2, delivered_at = ?2 \
                 WHERE id = ?1 AND status = 'pending'",
            )?
            .execute(params![p.order_id, p.received_at])?;
        if moved != 1 {
            return Ok(None);
        }
        let cards = tx
            .prepare_cached("SELECT id FROM cards WHERE order_id = ?1 AND status = 'reserved'")?
            .query_map(params![p.order_id], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        let mut sold = 0;
        for card in cards {
            sold += tx
                .prepare_cached(
                    "UPDATE cards SET status = 'sold', sold_at = ?2, reserved_until = NULL \
                     WHERE id = ?1 AND status = 'reserved'",
                )?
                .execute(params![card, p.received_at])?;
        }
        if sold as i64 != quantity {
            // Impossible while the invariants hold; the general path refuses
            // it (Corrupt) so the gateway retries and an operator looks.
            return Ok(None);
        }
        // Its `paid` and `delivered` entries are the order's row and this
        // payment (`orders::lifecycle`).
        out.push(PayOutcome::Delivered);
    }
    tx.commit()?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ORDER_COLUMNS`' names (or aliases), in the positions `order` reads.
    const ORDER_FIELDS: [&str; 20] = [
        "id",
        "order_no",
        "product_id",
        "quantity",
        "unit_price",
        "discount",
        "amount",
        "currency",
        "email",
        "access_token_hash",
        "has_qp",
        "buyer_ip",
        "channel",
        "status",
        "created_at",
        "expires_at",
        "paid_at",
        "delivered_at",
        "coupon_id",
        "limit_holds",
    ];

    /// `order` reads an order's fields by position: the statement it reads
    /// them from selects `ORDER_COLUMNS`, whose names (or aliases) must be
    /// `ORDER_FIELDS`, in that order.
    #[test]
    fn order_columns_are_read_by_position() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, order_no TEXT, product_id INTEGER, \
             quantity INTEGER, unit_price INTEGER, discount INTEGER, amount INTEGER, \
             currency TEXT, email TEXT, query_password_hash BLOB, access_token_hash BLOB, \
             buyer_ip TEXT, channel TEXT, status TEXT, created_at INTEGER, expires_at INTEGER, \
             paid_at INTEGER, delivered_at INTEGER, coupon_id INTEGER, limit_holds INTEGER)",
        )
        .unwrap();
        let stmt = conn.prepare(&ORDER_BY_NO).unwrap();
        assert_eq!(stmt.column_names(), ORDER_FIELDS);
        conn.execute(
            "INSERT INTO orders VALUES (7, 'K1', 3, 2, 990, 10, 1970, 'CNY', 'a@b.c', x'01', \
             x'02', '127.0.0.1', 'sandbox', 'delivered', 100, 200, 150, 160, 5, 1)",
            [],
        )
        .unwrap();
        let o = conn
            .prepare(&ORDER_BY_NO)
            .unwrap()
            .query_row(["K1"], |r| Ok(order(r)))
            .unwrap()
            .unwrap();
        assert_eq!(
            (o.id, o.order_no.as_str(), o.product_id, o.quantity),
            (7, "K1", 3, 2)
        );
        assert_eq!((o.unit_price, o.discount, o.amount), (990, 10, 1970));
        assert_eq!((o.currency.as_str(), o.email.as_str()), ("CNY", "a@b.c"));
        assert_eq!(o.access_token_hash, vec![2u8]);
        assert!(o.has_query_password);
        assert_eq!(
            (o.buyer_ip.as_deref(), o.channel.as_str()),
            (Some("127.0.0.1"), "sandbox")
        );
        assert_eq!(o.status.0, OrderStatus::Delivered);
        assert_eq!((o.created_at, o.expires_at), (100, 200));
        assert_eq!((o.paid_at, o.delivered_at), (Some(150), Some(160)));
        assert_eq!((o.coupon_id, o.limit_holds), (Some(5), 1));
    }
}

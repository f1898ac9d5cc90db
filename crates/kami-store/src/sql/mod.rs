//! The `Store` implementation for both backends, through sqlx's `Any` driver.
//!
//! The two backends share their SQL: every statement here is valid SQLite and
//! PostgreSQL (`$n` parameters, `RETURNING`, `ON CONFLICT`), and `Backend`
//! supplies the few words that differ (`BEGIN IMMEDIATE`, `SKIP LOCKED`).
//! Schemas and migrations are per backend (`migrations/sqlite`, `/postgres`).

mod admin;
mod admin_views;
mod attempts;
mod batch;
mod catalog;
mod channel_configs;
mod connect;
mod coupons;
mod direct;
mod import_locks;
mod jobs;
mod keys;
mod orders;
mod payments;
mod pg_sets;
mod pg_status;
mod recovery;
mod rotate;
mod rows;
mod wal_prefetch;
mod wal_sync;

use async_trait::async_trait;
use kami_core::{Millis, OrderStatus};
use sqlx::AnyPool;
use sqlx::{Any, Transaction};

pub use rotate::Rotated;

use crate::types::*;
use crate::{
    Admin, ApiKeyRow, AuditEntry, CardRow, DaySales, NewAdmin, NewAudit, NewSession, Session,
};
use crate::{Backend, Result, Store};

#[derive(Clone)]
pub struct SqlStore {
    backend: Backend,
    /// SQLite: a single connection, since SQLite has one writer anyway and
    /// queueing in the pool is fairer than spinning on busy_timeout.
    write: AnyPool,
    /// SQLite: read-only connections that never wait for the writer (WAL).
    /// PostgreSQL: the same pool as `write`.
    read: AnyPool,
    /// SQLite: the group commit's batches and the order lookup without
    /// sqlx's worker threads (`direct.rs`). `None` on PostgreSQL.
    direct: Option<std::sync::Arc<direct::Direct>>,
    /// SQLite: the background checkpoint's connection (`connect.rs`),
    /// closed with the others so that the last close removes the WAL.
    checkpointer: Option<AnyPool>,
    /// SQLite: the background checkpoint's task, waited for by `close`.
    checkpoint_task: Option<std::sync::Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>>,
    /// Where the expiry sweep's tidying of `order_deadlines` goes on from
    /// (`pg_status::tidy_deadlines`, `orders::tidy_sqlite_deadlines`).
    tidy_from: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// SQLite: another process (a shop serving) writes to this database too
    /// (`yield_write_lock`).
    beside_others: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// PostgreSQL: where the last batches found each product's first
    /// available code (`batch::StockFloors`).
    stock_floors: std::sync::Arc<batch::StockFloors>,
    /// How many order batches each path wrote (`/metrics`).
    batch_paths: std::sync::Arc<batch::BatchPaths>,
    /// SQLite: syncs the WAL before a payment is acknowledged
    /// (`wal_sync.rs`). `None` on PostgreSQL, whose commits wait for the disk.
    wal_sync: Option<std::sync::Arc<wal_sync::WalSync>>,
    /// PostgreSQL: the connection holding this process's shared advisory
    /// lock on the database, which `kami keys rotate` takes exclusively
    /// (`rotate::hold_instance_lock`).
    instance_lock: std::sync::Arc<rotate::InstanceLock>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend)
            .finish()
    }
}

impl SqlStore {
    /// PostgreSQL: opens `connections` of the pool (at most all of it) at
    /// once and readies each for a drop's batches (`batch::warm`), so the
    /// first buyers of a drop wait for no connection to open and no
    /// statement to be planned (a drop's first half second had about twice
    /// the latency of the rest: docs/PERFORMANCE.md, stop 44). The pool keeps
    /// idle connections open (`connect.rs`), so they stay ready.
    pub async fn warm_up(&self, connections: u32) -> Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let n = connections.min(self.write.options().get_max_connections());
        let mut conns = futures::future::try_join_all((0..n).map(|_| self.write.acquire())).await?;
        for conn in &mut conns {
            batch::warm(conn).await?;
        }
        Ok(())
    }

    /// Says that another process writes to this SQLite database too: `kami
    /// cards import` beside `kami serve`. Its long runs of write
    /// transactions (an import's staging and flip) then leave the lock free
    /// between them (`yield_write_lock`).
    pub fn share_writes_with_other_processes(&self) {
        self.beside_others
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// After one of a long run of write transactions that took `took`: on
    /// SQLite beside another process, leaves the write lock free as long
    /// (10 ms at least). The other process waits for the lock in SQLite's
    /// busy handler, which sleeps up to 100 ms between tries; a process
    /// that takes the lock again at once starved it (orders beside a
    /// 150,000-code `kami cards import` waited 1.5 s, docs/PERFORMANCE.md,
    /// stop 35). Within one process the writer's turns are fair already.
    pub(crate) async fn yield_write_lock(&self, took: std::time::Duration) {
        if self.backend == Backend::Sqlite
            && self
                .beside_others
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            tokio::time::sleep(took.max(std::time::Duration::from_millis(10))).await;
        }
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        // SQLite: wait for a turn with the writer thread's batches, so this
        // connection is not starved of the write lock (`direct.rs`). The
        // turn ends once BEGIN IMMEDIATE holds the lock.
        let _turn = match &self.direct {
            Some(d) => Some(d.turn().await),
            None => None,
        };
        Ok(self.write.begin_with(self.backend.begin_write()).await?)
    }

    /// A group commit's transaction; on PostgreSQL begun with `settings`
    /// (a statement of `set_config(…, true)` calls) in the same round trip.
    async fn begin_batch(&self, settings: &str) -> Result<Transaction<'static, Any>> {
        match self.backend {
            Backend::Postgres => Ok(self.write.begin_with(format!("BEGIN; {settings}")).await?),
            Backend::Sqlite => self.begin().await,
        }
    }

    /// Closes every connection. On SQLite the last one to close folds the
    /// WAL into the database and removes it, which a read-only connection
    /// cannot do: the readers go first and the write pool, always open and
    /// read-write, last. The background checkpoint's connection is opened
    /// lazily, so it could not be the last one.
    pub async fn close(&self) {
        if let Some(w) = &self.wal_sync {
            w.close();
        }
        self.read.close().await;
        if let Some(d) = &self.direct {
            d.close().await;
        }
        if let Some(c) = &self.checkpointer {
            c.close().await;
        }
        // The task stops at its next wake-up (100 ms at most), and a
        // connection it was still opening is closed with it.
        let task = self
            .checkpoint_task
            .as_ref()
            .and_then(|t| t.lock().ok()?.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        self.instance_lock.close().await;
        self.write.close().await;
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    fn order_batch_paths(&self) -> OrderBatchPaths {
        self.batch_paths.read()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn category_id_by_name(&self, name: &str, create: bool) -> Result<Option<i64>> {
        catalog::category_id_by_name(self, name, create).await
    }
    async fn list_categories(&self) -> Result<Vec<Category>> {
        catalog::list_categories(self).await
    }
    async fn move_category(&self, id: i64, up: bool) -> Result<bool> {
        catalog::move_category(self, id, up).await
    }
    async fn move_product(&self, id: i64, up: bool) -> Result<bool> {
        catalog::move_product(self, id, up).await
    }
    async fn create_product(&self, p: &NewProduct) -> Result<Product> {
        catalog::create_product(self, p).await
    }
    async fn update_product(&self, id: i64, patch: &ProductPatch) -> Result<Option<Product>> {
        catalog::update_product(self, id, patch).await
    }
    async fn get_product(&self, id: i64) -> Result<Option<Product>> {
        catalog::get_product(self.backend, &self.read, id).await
    }
    async fn get_product_uncounted(&self, id: i64) -> Result<Option<Product>> {
        catalog::get_product_with(&self.read, id, rows::PRODUCT_COLUMNS_UNCOUNTED).await
    }
    async fn list_products(&self, visible_only: bool) -> Result<Vec<Product>> {
        catalog::list_products(self, visible_only).await
    }
    async fn list_products_uncounted(&self) -> Result<Vec<Product>> {
        catalog::list_products_uncounted(self).await
    }
    async fn sale_terms(&self, id: i64) -> Result<Option<SaleTerms>> {
        catalog::sale_terms(self, id).await
    }
    async fn stock(&self, product_id: i64) -> Result<StockCounts> {
        catalog::stock(self, product_id).await
    }
    async fn available_count(&self, product_id: i64, cap: i64) -> Result<i64> {
        catalog::count_available(self.backend, &self.read, product_id, cap).await
    }
    async fn available_by_product(&self) -> Result<Vec<(i64, i64)>> {
        catalog::available_by_product(self).await
    }

    async fn begin_import(&self, product_id: i64) -> Result<(i64, crate::ImportLease)> {
        catalog::begin_import(self, product_id).await
    }
    async fn stage_cards(&self, batch: i64, product_id: i64, cards: &[NewCard]) -> Result<u64> {
        catalog::stage_cards(self, batch, product_id, cards).await
    }
    async fn commit_import(
        &self,
        batch: i64,
        product_id: i64,
        report: &ImportCounts,
    ) -> Result<()> {
        catalog::commit_import(self, batch, product_id, report).await
    }
    async fn abort_import(&self, batch: i64) -> Result<bool> {
        catalog::abort_import(self, batch).await
    }
    async fn reap_stale_imports(&self, stale_before: Millis) -> Result<Reaped> {
        catalog::reap_stale_imports(self, stale_before).await
    }
    async fn restocks_since(&self, since: Millis) -> Result<Vec<Restock>> {
        catalog::restocks_since(self, since).await
    }

    // Orders are answered without waiting for the WAL's sync (payments
    // wait, `durable`): a pending order lost to a power cut can only be one
    // the background checkpoint had not yet synced, within about 100 ms of
    // its answer, and a payment naming it would be refused and recorded for
    // the operator. Waiting for it cost the drop after a ten-million-code
    // import its p99 (68 against 19 ms, the sync queued behind the import's
    // checkpoint; docs/PERFORMANCE.md, stop 40).
    async fn create_order(&self, o: &NewOrder) -> Result<Result<Order, CreateOrderError>> {
        orders::create_order(self, o).await
    }
    async fn create_orders(
        &self,
        batch: &[NewOrder],
    ) -> Vec<Result<Result<Order, CreateOrderError>>> {
        batch::create_orders(self, batch).await
    }
    async fn pay_orders(&self, batch: &[NewPayment]) -> Vec<Result<PayOutcome>> {
        let out = payments::pay_orders(self, batch).await;
        self.durable_all(out).await
    }
    async fn get_order(&self, order_no: &str) -> Result<Option<Order>> {
        if let Some(d) = &self.direct {
            return d.get_order(order_no);
        }
        orders::get_order(self, order_no).await
    }
    async fn order_cards(&self, order_id: i64) -> Result<Vec<SealedCard>> {
        orders::order_cards(self, order_id).await
    }
    async fn lookup_orders(
        &self,
        email: &str,
        qp_hash: &[u8],
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Order>> {
        orders::lookup_orders(self, email, qp_hash, before_id, limit).await
    }
    async fn buyer_order_id(
        &self,
        email: &str,
        qp_hash: &[u8],
        order_no: &str,
    ) -> Result<Option<i64>> {
        orders::buyer_order_id(self, email, qp_hash, order_no).await
    }
    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>> {
        orders::list_orders(self, filter).await
    }
    async fn pay_order(&self, p: &NewPayment) -> Result<PayOutcome> {
        let out = payments::pay_order(self, p).await?;
        self.durable().await?;
        Ok(out)
    }
    async fn expire_due_orders(&self, now: Millis, limit: i64) -> Result<Vec<Order>> {
        orders::expire_due_orders(self, now, limit).await
    }
    async fn fulfil_unfulfilled(&self, product_id: i64, now: Millis) -> Result<Vec<String>> {
        let mut tx = self.begin().await?;
        let done = orders::fulfil_unfulfilled_in(self.backend, &mut tx, product_id, now).await?;
        tx.commit().await?;
        Ok(done)
    }
    async fn record_event(&self, ev: &NewEvent) -> Result<()> {
        let mut tx = self.begin().await?;
        orders::insert_event(&mut tx, ev).await?;
        tx.commit().await?;
        Ok(())
    }
    async fn record_event_once(&self, ev: &NewEvent) -> Result<bool> {
        let mut tx = self.begin().await?;
        let stored = orders::insert_event_once(self.backend, &mut tx, ev).await?;
        tx.commit().await?;
        Ok(stored)
    }
    async fn order_events(&self, order_id: i64) -> Result<Vec<OrderEvent>> {
        orders::order_events(self, Some(order_id), None).await
    }
    async fn events_for_order_no(&self, order_no: &str) -> Result<Vec<OrderEvent>> {
        orders::order_events(self, None, Some(order_no)).await
    }
    async fn events_without_order(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<OrderEvent>> {
        orders::events_without_order(self, before, limit).await
    }
    async fn count_orders_by_status(&self) -> Result<Vec<(String, i64)>> {
        orders::count_orders_by_status(self).await
    }

    async fn start_payment_attempt(&self, a: &NewPaymentAttempt) -> Result<PaymentAttempt> {
        attempts::start(self, a).await
    }
    async fn payment_attempt(&self, order_id: i64) -> Result<Option<PaymentAttempt>> {
        attempts::get(self, order_id).await
    }
    async fn due_payment_checks(&self, now: Millis, limit: i64) -> Result<Vec<PaymentAttempt>> {
        attempts::due(self, now, limit).await
    }
    async fn payment_checked(&self, id: i64, next_check_at: Option<Millis>) -> Result<()> {
        attempts::checked(self, id, next_check_at).await
    }

    async fn get_idempotency(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>> {
        orders::get_idempotency(self, scope, key).await
    }
    async fn put_idempotency(&self, rec: &IdempotencyRecord) -> Result<bool> {
        let mut tx = self.begin().await?;
        let stored = orders::insert_idempotency(&mut tx, rec).await?;
        tx.commit().await?;
        Ok(stored)
    }
    async fn settle_idempotency(&self, rec: &IdempotencyRecord, owner: &[u8]) -> Result<bool> {
        let mut tx = self.begin().await?;
        let settled = orders::settle_idempotency(&mut tx, rec, owner).await?;
        tx.commit().await?;
        Ok(settled)
    }
    async fn prune_idempotency(&self, before: Millis, limit: i64) -> Result<u64> {
        orders::prune_idempotency(self, before, limit).await
    }
    async fn release_idempotency(&self, scope: &str, key: &str, owner: &[u8]) -> Result<()> {
        let mut tx = self.begin().await?;
        orders::release_idempotency(&mut tx, scope, key, owner).await?;
        tx.commit().await?;
        Ok(())
    }
    async fn retake_idempotency(
        &self,
        scope: &str,
        key: &str,
        seen: &[u8],
        owner: &[u8],
        now: Millis,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let taken = orders::retake_idempotency(&mut tx, scope, key, seen, owner, now).await?;
        tx.commit().await?;
        Ok(taken)
    }

    async fn enqueue_job(&self, job: &NewJob) -> Result<()> {
        jobs::enqueue(self, job).await
    }
    async fn claim_jobs(
        &self,
        worker: &str,
        now: Millis,
        lease_ms: i64,
        max: i64,
    ) -> Result<Vec<Job>> {
        jobs::claim(self, worker, now, lease_ms, max).await
    }
    async fn finish_job(&self, id: i64) -> Result<()> {
        jobs::finish(self, id).await
    }
    async fn reschedule_job(&self, id: i64, run_at: Millis) -> Result<()> {
        jobs::reschedule(self, id, run_at).await
    }
    async fn fail_job(&self, id: i64, error: &str, retry_at: Option<Millis>) -> Result<()> {
        jobs::fail(self, id, error, retry_at).await
    }
    async fn job_counts(&self) -> Result<JobCounts> {
        jobs::counts(self).await
    }

    async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        keys::get_setting(self, key).await
    }
    async fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        keys::init_setting(self, key, value).await
    }
    async fn set_settings(&self, pairs: &[(&str, &str)]) -> Result<()> {
        keys::set_settings(self, pairs).await
    }
    async fn channel_configs(&self) -> Result<Vec<ChannelConfigRow>> {
        channel_configs::list(self).await
    }
    async fn put_channel_config(&self, c: &ChannelConfigRow) -> Result<()> {
        channel_configs::put(self, c).await
    }

    async fn create_api_key(
        &self,
        name: &str,
        key_hash: &[u8],
        prefix: &str,
        scopes: &str,
    ) -> Result<i64> {
        keys::create_api_key(self, name, key_hash, prefix, scopes).await
    }
    async fn api_key_by_hash(&self, key_hash: &[u8], now: Millis) -> Result<Option<ApiKey>> {
        keys::api_key_by_hash(self, key_hash, now).await
    }

    // --- admin -------------------------------------------------------------
    async fn create_admin(&self, a: &NewAdmin) -> Result<Option<i64>> {
        admin::create_admin(self, a).await
    }
    async fn admin_by_email(&self, email: &str) -> Result<Option<Admin>> {
        admin::admin_by(self, Some(email), None).await
    }
    async fn admin_by_id(&self, id: i64) -> Result<Option<Admin>> {
        admin::admin_by(self, None, Some(id)).await
    }
    async fn list_admins(&self) -> Result<Vec<Admin>> {
        admin::list_admins(self).await
    }
    async fn record_login_failure(
        &self,
        admin_id: i64,
        now: Millis,
        max_attempts: i64,
        lock_ms: i64,
    ) -> Result<()> {
        admin::record_login_failure(self, admin_id, now, max_attempts, lock_ms).await
    }
    async fn reset_admin_password(&self, email: &str, password_hash: &str) -> Result<Option<i64>> {
        admin::reset_admin_password(self, email, password_hash).await
    }
    async fn record_login_success(&self, admin_id: i64) -> Result<()> {
        admin::record_login_success(self, admin_id).await
    }
    async fn use_totp_step(&self, admin_id: i64, step: i64) -> Result<bool> {
        admin::use_totp_step(self, admin_id, step).await
    }
    async fn set_admin_totp(&self, admin_id: i64, totp: Option<(&[u8], &[u8])>) -> Result<()> {
        admin::set_admin_totp(self, admin_id, totp).await
    }
    async fn set_admin_disabled(&self, admin_id: i64, disabled: bool) -> Result<bool> {
        admin::set_admin_disabled(self, admin_id, disabled).await
    }
    async fn create_session(&self, s: &NewSession) -> Result<()> {
        admin::create_session(self, s).await
    }
    async fn session_by_id(&self, id: &[u8], now: Millis) -> Result<Option<Session>> {
        admin::session_by_id(self, id, now).await
    }
    async fn touch_session(&self, id: &[u8], now: Millis) -> Result<()> {
        admin::touch_session(self, id, now).await
    }
    async fn list_sessions(&self, now: Millis) -> Result<Vec<Session>> {
        admin::list_sessions(self, now).await
    }
    async fn revoke_session(&self, id: &[u8]) -> Result<bool> {
        admin::revoke_session(self, id).await
    }
    async fn insert_audit(&self, e: &NewAudit) -> Result<()> {
        admin::insert_audit(self, e).await
    }
    async fn list_audit(&self, limit: i64, before_id: Option<i64>) -> Result<Vec<AuditEntry>> {
        admin::list_audit(self, limit, before_id).await
    }
    async fn list_cards(
        &self,
        product_id: i64,
        status: Option<&str>,
        limit: i64,
        before_id: Option<i64>,
    ) -> Result<Vec<CardRow>> {
        admin_views::list_cards(self, product_id, status, limit, before_id).await
    }
    async fn sealed_card(&self, product_id: i64, card_id: i64) -> Result<Option<SealedCard>> {
        admin_views::sealed_card(self, product_id, card_id).await
    }
    async fn void_card(&self, product_id: i64, card_id: i64) -> Result<bool> {
        admin_views::void_card(self, product_id, card_id).await
    }
    async fn unsold_cards(&self, product_id: i64) -> Result<Vec<SealedCard>> {
        admin_views::unsold_cards(self, product_id).await
    }
    async fn refund_order(
        &self,
        order_id: i64,
        seen: OrderStatus,
        now: Millis,
        detail: &str,
    ) -> Result<bool> {
        admin_views::refund_order(self, order_id, seen, now, detail).await
    }
    async fn sales_by_day(&self, since: Millis, day_ms: i64) -> Result<Vec<DaySales>> {
        admin_views::sales_by_day(self, since, day_ms).await
    }
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        admin_views::list_api_keys(self).await
    }
    async fn revoke_api_key(&self, id: i64, now: Millis) -> Result<bool> {
        admin_views::revoke_api_key(self, id, now).await
    }

    async fn create_coupon(&self, c: &NewCoupon) -> Result<Option<Coupon>> {
        coupons::create_coupon(self, c).await
    }
    async fn list_coupons(&self) -> Result<Vec<Coupon>> {
        coupons::list_coupons(self).await
    }
    async fn coupon_by_code(&self, code: &str) -> Result<Option<Coupon>> {
        coupons::coupon_by_code(self, code).await
    }
    async fn set_coupon_disabled(&self, id: i64, disabled: bool) -> Result<bool> {
        coupons::set_coupon_disabled(self, id, disabled).await
    }
    async fn replace_recovery_codes(
        &self,
        admin_id: i64,
        hashes: &[Vec<u8>],
        now: Millis,
    ) -> Result<()> {
        recovery::replace_recovery_codes(self, admin_id, hashes, now).await
    }
    async fn unused_recovery_codes(&self, admin_id: i64) -> Result<Vec<crate::RecoveryCode>> {
        recovery::unused_recovery_codes(self, admin_id).await
    }
    async fn use_recovery_code(&self, id: i64, now: Millis) -> Result<bool> {
        recovery::use_recovery_code(self, id, now).await
    }
}

impl SqlStore {
    /// Whether `sql` (a query with `$1` for `now`) finds a row, asked on a
    /// read connection. Periodic work that usually finds nothing to do asks
    /// this first: its write transaction would take SQLite's write lock,
    /// which the order and payment writer thread then waits out in SQLite's
    /// busy handler (sleeps of 1-5 ms, several a second during a drop, seen
    /// with strace). Work that falls due in between is found next time.
    async fn any_due(&self, sql: &str, now: Millis) -> Result<bool> {
        let row = sqlx::query(sql)
            .bind(now)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.is_some())
    }

    /// An online, consistent copy of a SQLite database (`VACUUM INTO`).
    pub async fn backup_sqlite(&self, path: &str) -> Result<()> {
        sqlx::query("VACUUM INTO $1")
            .bind(path)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// `PRAGMA integrity_check` of a SQLite database: "ok" when intact.
    pub async fn integrity_check(&self) -> Result<String> {
        let row: (String,) = sqlx::query_as("PRAGMA integrity_check")
            .fetch_one(&self.write)
            .await?;
        Ok(row.0)
    }
}

impl SqlStore {
    /// SQLite: returns once everything committed so far is on the disk, so
    /// that it may be acknowledged (`wal_sync.rs`). At once on PostgreSQL.
    async fn durable(&self) -> Result<()> {
        match &self.wal_sync {
            Some(w) => w.synced().await,
            None => Ok(()),
        }
    }

    /// `durable` for a payment batch's outcomes: when the sync fails, each
    /// is answered as an error (committed, not acknowledged: the gateway
    /// retries and finds it).
    async fn durable_all<T>(&self, out: Vec<Result<T>>) -> Vec<Result<T>> {
        if !out.iter().any(|r| r.is_ok()) {
            return out;
        }
        match self.durable().await {
            Ok(()) => out,
            Err(e) => {
                let msg = e.to_string();
                out.into_iter()
                    .map(|r| {
                        r.and_then(|_| {
                            Err(crate::StoreError::Database(sqlx::Error::Io(
                                std::io::Error::other(msg.clone()),
                            )))
                        })
                    })
                    .collect()
            }
        }
    }

    /// SQLite: how many times the WAL was synced for acknowledgements.
    pub fn wal_syncs(&self) -> u64 {
        self.wal_sync.as_ref().map_or(0, |w| w.passes())
    }
}

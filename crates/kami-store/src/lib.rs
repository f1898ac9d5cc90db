//! Storage for Kami: the `Store` trait the web layer is written against, and
//! its implementation for SQLite and PostgreSQL (`sql`), each backend with its
//! own migrations under `migrations/`.
//!
//! Every method that changes more than one row is one transaction, so the
//! invariants of DESIGN.md hold at commit boundaries whatever the caller does.

mod admin;
mod backend;
pub mod group_commit;
mod sql;
mod types;

pub use admin::*;
pub use backend::{redact_url, Backend};
pub use group_commit::{BatchStats, GroupCommit, SubmitError, WriterConfig};
pub use sql::{Rotated, SqlStore};
pub use types::*;

use async_trait::async_trait;
use kami_core::{Millis, OrderStatus};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("the database is in use: {0}; stop the shop first")]
    InUse(String),
}

impl StoreError {
    /// The database could not be reached or would not take the connection
    /// (what `/readyz` answers 503 for): nothing is wrong with the request,
    /// the client should come back. PostgreSQL's classes 08 (connection),
    /// 53 (resources) and 57 (operator intervention: shutting down, not
    /// accepting connections yet), and 55000 (a database not accepting
    /// connections).
    pub fn is_unreachable(&self) -> bool {
        use sqlx::Error as E;
        match self {
            StoreError::Database(e) => match e {
                E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) => true,
                E::Database(db) => db.code().is_some_and(|c| {
                    c.starts_with("08")
                        || c.starts_with("53")
                        || c.starts_with("57")
                        || c == "55000"
                }),
                _ => false,
            },
            _ => false,
        }
    }

    /// SQLite could not take the write now but may in a moment: the lock
    /// stayed held past `busy_timeout` (a long import from the CLI beside
    /// the server), or the disk is full or failing. Nothing is wrong with the
    /// request and nothing was written: 503 with `Retry-After`, not 500.
    pub fn is_transient(&self) -> bool {
        // SQLite's primary result codes: BUSY 5, LOCKED 6, IOERR 10, FULL 13.
        const TRANSIENT: [i32; 4] = [5, 6, 10, 13];
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => db
                .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                .and_then(sqlx::error::DatabaseError::code)
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| TRANSIENT.contains(&(c & 0xff))),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                TRANSIENT.contains(&(e.extended_code & 0xff))
            }
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What keeps an import alive in the eyes of a reaper, until dropped: the
/// lock of its batch (an advisory lock held by a connection of its own on
/// PostgreSQL, a file lock on SQLite), which also ends with its process.
pub struct ImportLease(#[allow(dead_code)] Box<dyn std::any::Any + Send>);

impl ImportLease {
    pub(crate) fn new(held: impl std::any::Any + Send) -> Self {
        Self(Box::new(held))
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    async fn ping(&self) -> Result<()>;
    /// How order batches were written since the store was opened.
    fn order_batch_paths(&self) -> OrderBatchPaths {
        OrderBatchPaths::default()
    }

    // --- catalog -----------------------------------------------------------
    async fn category_id_by_name(&self, name: &str, create: bool) -> Result<Option<i64>>;
    async fn list_categories(&self) -> Result<Vec<Category>>;
    /// Swaps a category with its neighbour in display order (`up` or down);
    /// false when there is no such category. At either end it changes nothing.
    async fn move_category(&self, id: i64, up: bool) -> Result<bool>;
    /// Swaps a product with its neighbour in the same category, in display
    /// order; false when there is no such product.
    async fn move_product(&self, id: i64, up: bool) -> Result<bool>;
    async fn create_product(&self, p: &NewProduct) -> Result<Product>;
    async fn update_product(&self, id: i64, patch: &ProductPatch) -> Result<Option<Product>>;
    async fn get_product(&self, id: i64) -> Result<Option<Product>>;
    /// The product with `stock` 0 instead of a count of its codes (seconds
    /// of PostgreSQL with ten million): for pages that show no stock or
    /// count it their own way.
    async fn get_product_uncounted(&self, id: i64) -> Result<Option<Product>>;
    async fn list_products(&self, visible_only: bool) -> Result<Vec<Product>>;
    /// Every product, visible or not, with `stock` 0 instead of a count of
    /// its codes (for a caller that knows the counts, the stock gate, or
    /// needs none: a page that names products).
    async fn list_products_uncounted(&self) -> Result<Vec<Product>>;
    async fn sale_terms(&self, id: i64) -> Result<Option<SaleTerms>>;

    // --- stock -------------------------------------------------------------
    async fn stock(&self, product_id: i64) -> Result<StockCounts>;
    /// Available codes of one product, counted no further than `cap`.
    async fn available_count(&self, product_id: i64, cap: i64) -> Result<i64>;
    /// Available codes for every product that has any.
    async fn available_by_product(&self) -> Result<Vec<(i64, i64)>>;

    // --- import ------------------------------------------------------------
    /// A new import batch for the product, and the lease that keeps it
    /// alive: hold it until the import is committed or aborted.
    async fn begin_import(&self, product_id: i64) -> Result<(i64, ImportLease)>;
    /// Stages cards under the batch; returns how many were new (the rest were
    /// duplicates of codes in this upload or ever imported for the product).
    async fn stage_cards(&self, batch: i64, product_id: i64, cards: &[NewCard]) -> Result<u64>;
    /// Claims the batch for its commit, then makes its staged cards
    /// sellable (on SQLite a chunk per transaction, so orders commit between
    /// them), fulfilling `paid_unfulfilled` orders of the product, oldest
    /// first, in the transaction that makes each chunk sellable. A claimed
    /// batch whose importer dies is finished by `reap_stale_imports`.
    async fn commit_import(&self, batch: i64, product_id: i64, report: &ImportCounts)
        -> Result<()>;
    /// Aborts an import still staging: its staged codes go. True when the
    /// batch is (now) aborted; false when it was claimed for its commit
    /// (`commit_import`), whose codes are sellable or about to be.
    async fn abort_import(&self, batch: i64) -> Result<bool>;
    /// Ends imports whose importer is gone (those whose lock no process
    /// holds, and on SQLite a batch without a lock file, an older build's,
    /// whose last beat is before `stale_before`): aborts those still
    /// staging, and finishes those already claimed for their commit.
    async fn reap_stale_imports(&self, stale_before: Millis) -> Result<Reaped>;
    /// Imports making codes sellable now (`committing`), or that made them
    /// sellable at or after `since` (their `finished_at`), whichever process
    /// imported: the stock gate re-reads their products' counts exactly.
    async fn restocks_since(&self, since: Millis) -> Result<Vec<Restock>>;

    // --- orders ------------------------------------------------------------
    async fn create_order(&self, o: &NewOrder) -> Result<Result<Order, CreateOrderError>>;
    /// Group commit: the orders in one transaction where it can, each with
    /// its own outcome in the same order as `batch` (sql/batch.rs).
    async fn create_orders(
        &self,
        batch: &[NewOrder],
    ) -> Vec<Result<Result<Order, CreateOrderError>>>;
    /// Group commit of payments; each outcome as `pay_order` would give it.
    async fn pay_orders(&self, batch: &[NewPayment]) -> Vec<Result<PayOutcome>>;
    async fn get_order(&self, order_no: &str) -> Result<Option<Order>>;
    async fn order_cards(&self, order_id: i64) -> Result<Vec<SealedCard>>;
    /// Newest first; `before_id` continues a page after its last order.
    async fn lookup_orders(
        &self,
        email: &str,
        query_password_hash: &[u8],
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Order>>;
    /// The id of the order with this number if it was placed with this
    /// email and query password (a lookup's cursor).
    async fn buyer_order_id(
        &self,
        email: &str,
        query_password_hash: &[u8],
        order_no: &str,
    ) -> Result<Option<i64>>;
    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>>;
    /// Records a verified payment and moves the order on, in one transaction.
    async fn pay_order(&self, p: &NewPayment) -> Result<PayOutcome>;
    /// Expires overdue pending orders and releases their codes; returns them.
    async fn expire_due_orders(&self, now: Millis, limit: i64) -> Result<Vec<Order>>;
    /// Delivers `paid_unfulfilled` orders of the product, oldest first, while
    /// codes last; returns the delivered orders' numbers.
    async fn fulfil_unfulfilled(&self, product_id: i64, now: Millis) -> Result<Vec<String>>;
    async fn record_event(&self, ev: &NewEvent) -> Result<()>;
    /// Records `ev` unless its order already has an event of the same kind
    /// and detail; racing callers (a retried notification and a
    /// reconciliation's answer) store it once. Whether it was stored.
    async fn record_event_once(&self, ev: &NewEvent) -> Result<bool>;
    async fn order_events(&self, order_id: i64) -> Result<Vec<OrderEvent>>;
    async fn events_for_order_no(&self, order_no: &str) -> Result<Vec<OrderEvent>>;
    /// Events that name no order (a rejected notification whose body named
    /// none, a genuine gateway event about no order), newest first, with
    /// ids below `before`.
    async fn events_without_order(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<OrderEvent>>;
    async fn count_orders_by_status(&self) -> Result<Vec<(String, i64)>>;

    // --- payment attempts (reconciliation) ---------------------------------
    /// Records that the order was handed to a gateway (with a
    /// `payment_started` event) unless it already was; returns its attempt.
    async fn start_payment_attempt(&self, a: &NewPaymentAttempt) -> Result<PaymentAttempt>;
    async fn payment_attempt(&self, order_id: i64) -> Result<Option<PaymentAttempt>>;
    /// Attempts of still unpaid orders whose next check is due.
    async fn due_payment_checks(&self, now: Millis, limit: i64) -> Result<Vec<PaymentAttempt>>;
    /// Counts a check; `None` means nothing is left to ask the gateway.
    async fn payment_checked(&self, id: i64, next_check_at: Option<Millis>) -> Result<()>;

    // --- idempotency -------------------------------------------------------
    async fn get_idempotency(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>>;
    /// Stores a response unless the key is already taken; true when stored.
    async fn put_idempotency(&self, rec: &IdempotencyRecord) -> Result<bool>;
    /// Fills in the response of a key taken while its request ran (stored
    /// with `status_code` [`IDEMPOTENCY_IN_FLIGHT`] and the taker's `owner`
    /// token in `response_nonce`); true when this owner still held it.
    async fn settle_idempotency(&self, rec: &IdempotencyRecord, owner: &[u8]) -> Result<bool>;
    /// Forgets up to `limit` keys taken before `before` (their requests can
    /// no longer be retried as the same); how many went.
    async fn prune_idempotency(&self, before: Millis, limit: i64) -> Result<u64>;
    /// Frees a key this owner took while its request ran, unless settled.
    async fn release_idempotency(&self, scope: &str, key: &str, owner: &[u8]) -> Result<()>;
    /// Takes over a key left running by `seen` (a request that never
    /// ended) for `owner`; true unless another request took it first.
    async fn retake_idempotency(
        &self,
        scope: &str,
        key: &str,
        seen: &[u8],
        owner: &[u8],
        now: Millis,
    ) -> Result<bool>;

    // --- jobs --------------------------------------------------------------
    async fn enqueue_job(&self, job: &NewJob) -> Result<()>;
    async fn claim_jobs(
        &self,
        worker: &str,
        now: Millis,
        lease_ms: i64,
        max: i64,
    ) -> Result<Vec<Job>>;
    async fn finish_job(&self, id: i64) -> Result<()>;
    /// Puts a periodic job back in the queue for its next run.
    async fn reschedule_job(&self, id: i64, run_at: Millis) -> Result<()>;
    async fn fail_job(&self, id: i64, error: &str, retry_at: Option<Millis>) -> Result<()>;
    async fn job_counts(&self) -> Result<JobCounts>;

    // --- settings ----------------------------------------------------------
    async fn get_setting(&self, key: &str) -> Result<Option<String>>;
    /// Sets the value only if the key has none yet; returns the value stored.
    async fn init_setting(&self, key: &str, value: &str) -> Result<String>;
    /// Sets the values, replacing any, in one transaction (the admin
    /// panel's settings page).
    async fn set_settings(&self, pairs: &[(&str, &str)]) -> Result<()>;

    // --- payment channels configured in the panel --------------------------
    async fn channel_configs(&self) -> Result<Vec<ChannelConfigRow>>;
    /// Inserts or replaces the channel's row.
    async fn put_channel_config(&self, c: &ChannelConfigRow) -> Result<()>;

    // --- api keys ----------------------------------------------------------
    async fn create_api_key(
        &self,
        name: &str,
        key_hash: &[u8],
        prefix: &str,
        scopes: &str,
    ) -> Result<i64>;
    async fn api_key_by_hash(&self, key_hash: &[u8], now: Millis) -> Result<Option<ApiKey>>;

    // --- admin -------------------------------------------------------------
    /// Creates an operator; `None` when the email is taken.
    async fn create_admin(&self, a: &NewAdmin) -> Result<Option<i64>>;
    async fn admin_by_email(&self, email: &str) -> Result<Option<Admin>>;
    async fn admin_by_id(&self, id: i64) -> Result<Option<Admin>>;
    async fn list_admins(&self) -> Result<Vec<Admin>>;
    /// Counts a failed login; the account locks until `now + lock_ms` once
    /// `max_attempts` failures have piled up.
    async fn record_login_failure(
        &self,
        admin_id: i64,
        now: Millis,
        max_attempts: i64,
        lock_ms: i64,
    ) -> Result<()>;
    async fn record_login_success(&self, admin_id: i64) -> Result<()>;
    /// Sets a new password for the admin of `email`, unlocks the account and
    /// ends its sessions; the admin's id, `None` when there is no such admin.
    async fn reset_admin_password(&self, email: &str, password_hash: &str) -> Result<Option<i64>>;
    /// Records a TOTP time step as used; false when it (or a later one) was
    /// used already, so each code signs in at most once.
    async fn use_totp_step(&self, admin_id: i64, step: i64) -> Result<bool>;
    /// Sets (sealed ciphertext, nonce) or clears the TOTP secret.
    async fn set_admin_totp(&self, admin_id: i64, totp: Option<(&[u8], &[u8])>) -> Result<()>;
    /// Disabling also revokes every session of the operator.
    async fn set_admin_disabled(&self, admin_id: i64, disabled: bool) -> Result<bool>;
    async fn create_session(&self, s: &NewSession) -> Result<()>;
    /// A live session (not revoked, not expired, operator not disabled).
    async fn session_by_id(&self, id: &[u8], now: Millis) -> Result<Option<Session>>;
    /// Refreshes `last_seen_at`.
    async fn touch_session(&self, id: &[u8], now: Millis) -> Result<()>;
    async fn list_sessions(&self, now: Millis) -> Result<Vec<Session>>;
    async fn revoke_session(&self, id: &[u8]) -> Result<bool>;
    async fn insert_audit(&self, e: &NewAudit) -> Result<()>;
    async fn list_audit(&self, limit: i64, before_id: Option<i64>) -> Result<Vec<AuditEntry>>;
    async fn list_cards(
        &self,
        product_id: i64,
        status: Option<&str>,
        limit: i64,
        before_id: Option<i64>,
    ) -> Result<Vec<CardRow>>;
    async fn sealed_card(&self, product_id: i64, card_id: i64) -> Result<Option<SealedCard>>;
    /// Voids an available code; false when it is reserved, sold or missing.
    async fn void_card(&self, product_id: i64, card_id: i64) -> Result<bool>;
    /// The available codes of a product, sealed, oldest first.
    async fn unsold_cards(&self, product_id: i64) -> Result<Vec<SealedCard>>;
    /// Marks a paid order refunded (from `paid_unfulfilled` or `delivered`)
    /// and records it on its timeline, only while it is still in `seen`, the
    /// state the operator decided on; false otherwise. An order refunded
    /// before it was delivered gives back what it held of the per-buyer
    /// limits and its coupon: it never happened for the buyer.
    async fn refund_order(
        &self,
        order_id: i64,
        seen: OrderStatus,
        now: Millis,
        detail: &str,
    ) -> Result<bool>;
    /// Orders created and paid per day since `since` (days of `day_ms`).
    async fn sales_by_day(&self, since: Millis, day_ms: i64) -> Result<Vec<DaySales>>;
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>>;
    async fn revoke_api_key(&self, id: i64, now: Millis) -> Result<bool>;

    // --- coupons -------------------------------------------------------------
    /// Creates a coupon; `None` when its code is taken.
    async fn create_coupon(&self, c: &NewCoupon) -> Result<Option<Coupon>>;
    async fn list_coupons(&self) -> Result<Vec<Coupon>>;
    /// By normalised code (`kami_core::pricing::normalize_coupon_code`).
    async fn coupon_by_code(&self, code: &str) -> Result<Option<Coupon>>;
    async fn set_coupon_disabled(&self, id: i64, disabled: bool) -> Result<bool>;

    // --- TOTP recovery codes -------------------------------------------------
    /// Replaces every recovery code of the operator with these hashes (none
    /// clears them), in one transaction.
    async fn replace_recovery_codes(
        &self,
        admin_id: i64,
        hashes: &[Vec<u8>],
        now: Millis,
    ) -> Result<()>;
    async fn unused_recovery_codes(&self, admin_id: i64) -> Result<Vec<RecoveryCode>>;
    /// Spends a code; false when it was spent already (a racing login).
    async fn use_recovery_code(&self, id: i64, now: Millis) -> Result<bool>;
}

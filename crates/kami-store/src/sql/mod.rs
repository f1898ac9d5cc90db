//! The `Store` implementation for both backends, through sqlx's `Any` driver.
//!
//! The two backends share their SQL: every statement here is valid SQLite and
//! PostgreSQL (`$n` parameters, `RETURNING`, `ON CONFLICT`), and `Backend`
//! supplies the few words that differ (`BEGIN IMMEDIATE`, `SKIP LOCKED`).
//! Schemas and migrations are per backend (`migrations/sqlite`, `/postgres`).

mod batch;
mod catalog;
mod connect;
mod jobs;
mod keys;
mod orders;
mod payments;
mod rows;

use async_trait::async_trait;
use kami_core::Millis;
use sqlx::AnyPool;
use sqlx::{Any, Transaction};

use crate::types::*;
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
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend)
            .finish()
    }
}

impl SqlStore {
    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        Ok(self.write.begin_with(self.backend.begin_write()).await?)
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
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
    async fn create_product(&self, p: &NewProduct) -> Result<Product> {
        catalog::create_product(self, p).await
    }
    async fn update_product(&self, id: i64, patch: &ProductPatch) -> Result<Option<Product>> {
        catalog::update_product(self, id, patch).await
    }
    async fn get_product(&self, id: i64) -> Result<Option<Product>> {
        catalog::get_product(&self.read, id).await
    }
    async fn list_products(&self, visible_only: bool) -> Result<Vec<Product>> {
        catalog::list_products(self, visible_only).await
    }
    async fn sale_terms(&self, id: i64) -> Result<Option<SaleTerms>> {
        catalog::sale_terms(self, id).await
    }
    async fn stock(&self, product_id: i64) -> Result<StockCounts> {
        catalog::stock(self, product_id).await
    }
    async fn available_count(&self, product_id: i64, cap: i64) -> Result<i64> {
        catalog::count_available(&self.read, product_id, cap).await
    }
    async fn available_by_product(&self) -> Result<Vec<(i64, i64)>> {
        catalog::available_by_product(self).await
    }

    async fn begin_import(&self, product_id: i64) -> Result<i64> {
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
    async fn abort_import(&self, batch: i64) -> Result<()> {
        catalog::abort_import(self, batch).await
    }
    async fn reap_stale_imports(&self, stale_before: Millis) -> Result<u64> {
        catalog::reap_stale_imports(self, stale_before).await
    }

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
        payments::pay_orders(self, batch).await
    }
    async fn get_order(&self, order_no: &str) -> Result<Option<Order>> {
        orders::get_order(self, order_no).await
    }
    async fn order_cards(&self, order_id: i64) -> Result<Vec<SealedCard>> {
        orders::order_cards(self, order_id).await
    }
    async fn lookup_orders(&self, email: &str, qp_hash: &[u8], limit: i64) -> Result<Vec<Order>> {
        orders::lookup_orders(self, email, qp_hash, limit).await
    }
    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>> {
        orders::list_orders(self, filter).await
    }
    async fn pay_order(&self, p: &NewPayment) -> Result<PayOutcome> {
        payments::pay_order(self, p).await
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
    async fn order_events(&self, order_id: i64) -> Result<Vec<OrderEvent>> {
        orders::order_events(self, Some(order_id), None).await
    }
    async fn events_for_order_no(&self, order_no: &str) -> Result<Vec<OrderEvent>> {
        orders::order_events(self, None, Some(order_no)).await
    }
    async fn count_orders_by_status(&self) -> Result<Vec<(String, i64)>> {
        orders::count_orders_by_status(self).await
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

    async fn create_api_key(&self, name: &str, key_hash: &[u8], prefix: &str) -> Result<i64> {
        keys::create_api_key(self, name, key_hash, prefix).await
    }
    async fn api_key_by_hash(&self, key_hash: &[u8], now: Millis) -> Result<Option<ApiKey>> {
        keys::api_key_by_hash(self, key_hash, now).await
    }
}

impl SqlStore {
    /// An online, consistent copy of a SQLite database (`VACUUM INTO`).
    pub async fn backup_sqlite(&self, path: &str) -> Result<()> {
        sqlx::query("VACUUM INTO $1")
            .bind(path)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}

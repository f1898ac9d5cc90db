//! Product reads served from memory: during a drop every buyer refreshes the
//! product page, and none of that should cost a database round trip.
//!
//! The cache holds the whole product list for a short time (`TTL`) and is
//! dropped at once when this instance changes a product or its stock; the
//! `stock` it shows comes from the stock gate, which follows every order, so
//! it is as fresh as the gate. Other instances' product edits show within
//! the TTL (plus one reload, during which the expired list is still served). Ordering never trusts this cache for anything but display and
//! sale terms, and the database re-checks stock on every order (invariant 6).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kami_store::{Product, Result as StoreResult, SaleTerms, Store};
use tokio::sync::Mutex;

use super::gate::StockGate;

/// How long a product list read from the database is served.
pub const TTL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Catalog {
    cached: std::sync::RwLock<Option<(Instant, Arc<Vec<Product>>)>>,
    /// One reload at a time: a thousand buyers arriving at an expired cache
    /// cause one query, not a thousand.
    reload: Mutex<()>,
}

impl Catalog {
    /// Forgets the cached list (a product was edited or restocked here).
    pub fn invalidate(&self) {
        *self.cached.write().expect("catalog lock") = None;
    }

    fn fresh(&self) -> Option<Arc<Vec<Product>>> {
        let cached = self.cached.read().expect("catalog lock");
        cached
            .as_ref()
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, list)| list.clone())
    }

    async fn list(&self, store: &dyn Store, gate: &StockGate) -> StoreResult<Arc<Vec<Product>>> {
        if let Some(list) = self.fresh() {
            return Ok(list);
        }
        // An expired list keeps being served while one request reloads it:
        // the reload counts every product's codes, which with ten million
        // in stock takes hundreds of milliseconds, and making every buyer
        // wait for it once a second was the drop's p99 (docs/PERFORMANCE.md).
        // Only when nothing is cached (first use, or this instance changed a
        // product) does everyone wait for the database.
        let stale = self
            .cached
            .read()
            .expect("catalog lock")
            .as_ref()
            .map(|(_, list)| list.clone());
        let _one = match (stale, self.reload.try_lock()) {
            (_, Ok(guard)) => guard,
            (Some(stale), Err(_)) => return Ok(stale),
            (None, Err(_)) => self.reload.lock().await,
        };
        if let Some(list) = self.fresh() {
            return Ok(list);
        }
        let list = Arc::new(load(store, gate).await?);
        *self.cached.write().expect("catalog lock") = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// Every product (visible or not), with the gate's live stock.
    pub async fn products(&self, store: &dyn Store, gate: &StockGate) -> StoreResult<Vec<Product>> {
        let list = self.list(store, gate).await?;
        Ok(list.iter().map(|p| with_live_stock(p, gate)).collect())
    }

    pub async fn visible(&self, store: &dyn Store, gate: &StockGate) -> StoreResult<Vec<Product>> {
        let mut all = self.products(store, gate).await?;
        all.retain(|p| p.visible);
        Ok(all)
    }

    pub async fn product(
        &self,
        store: &dyn Store,
        gate: &StockGate,
        id: i64,
    ) -> StoreResult<Option<Product>> {
        let list = self.list(store, gate).await?;
        match list.iter().find(|p| p.id == id) {
            Some(p) => Ok(Some(with_live_stock(p, gate))),
            // Created moments ago on another instance: ask the database.
            None => store.get_product(id).await,
        }
    }

    pub async fn sale_terms(
        &self,
        store: &dyn Store,
        gate: &StockGate,
        id: i64,
    ) -> StoreResult<Option<SaleTerms>> {
        Ok(self.product(store, gate, id).await?.map(|p| p.sale_terms()))
    }
}

/// The product list, read now (no cache). The stock shown comes from the
/// gate, so when the gate has a count for every product the list is read
/// without counting their codes: with a million codes that count took
/// 200-480 ms of PostgreSQL time per reload (its slow-statement log), once
/// a second during a drop, and seconds with ten million (the panel's pages).
/// The gate's counts at reload stand in for a display without the gate.
pub async fn load(store: &dyn Store, gate: &StockGate) -> StoreResult<Vec<Product>> {
    let mut list = store.list_products_uncounted().await?;
    for p in &mut list {
        match gate.count(p.id) {
            Some(n) => p.stock = n,
            None => return store.list_products(false).await,
        }
    }
    Ok(list)
}

fn with_live_stock(p: &Product, gate: &StockGate) -> Product {
    Product {
        stock: gate.count(p.id).unwrap_or(p.stock),
        ..p.clone()
    }
}

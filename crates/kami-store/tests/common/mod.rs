//! The store tests' harness: a fresh database per test on either backend,
//! products with codes, and the invariant checker of DESIGN.md.
#![allow(dead_code)]

use std::sync::Arc;

use kami_core::now_millis;
use kami_store::*;
use rand::Rng;
use sqlx::Row;

pub struct Db {
    pub store: Arc<SqlStore>,
    /// Another pool on the same database, for checks with plain SQL.
    pub check: sqlx::AnyPool,
    _pg: Option<PgDatabase>,
}

/// A PostgreSQL database of the test's own, dropped with this value.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

pub fn pg_admin_url() -> String {
    std::env::var("KAMI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// An empty PostgreSQL database, no migration applied.
pub async fn empty_postgres() -> PgDatabase {
    sqlx::any::install_default_drivers();
    let tag: u64 = rand::thread_rng().gen();
    let admin = pg_admin_url();
    let name = format!("kami_store_t_{tag:x}");
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    PgDatabase {
        url: format!("{base}/{name}"),
        name,
    }
}

pub async fn open(backend: Backend) -> Db {
    let (url, pg) = match backend {
        Backend::Sqlite => {
            let tag: u64 = rand::thread_rng().gen();
            let dir = std::env::temp_dir().join(format!("kami-store-race-{tag:x}"));
            std::fs::create_dir_all(&dir).unwrap();
            (format!("sqlite://{}/kami.db", dir.display()), None)
        }
        Backend::Postgres => {
            let pg = empty_postgres().await;
            (pg.url.clone(), Some(pg))
        }
    };
    let store = SqlStore::connect(&url, 16).await.unwrap();
    store.migrate().await.unwrap();
    let check = sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    Db {
        store: Arc::new(store),
        check,
        _pg: pg,
    }
}

/// A code whose ciphertext and fingerprint are `fp` (the store never opens
/// it; these tests only count and compare).
pub fn card(fp: &[u8]) -> NewCard {
    NewCard {
        ciphertext: fp.to_vec(),
        nonce: vec![0; 12],
        key_id: 1,
        fingerprint: fp.to_vec(),
    }
}

/// A visible product at 1.00 CNY, one to ten codes an order.
pub fn new_product(name: &str) -> NewProduct {
    NewProduct {
        name: name.into(),
        price: 100,
        currency: "CNY".into(),
        min_quantity: 1,
        max_quantity: 10,
        visible: true,
        ..NewProduct::default()
    }
}

pub async fn product_with_codes(db: &Db, codes: usize) -> i64 {
    let p = db.store.create_product(&new_product("race")).await.unwrap();
    restock(db, p.id, codes).await;
    p.id
}

/// A product with `codes` codes and one pending order of one code in it.
pub async fn product_with_an_order(db: &Db, codes: usize) -> (i64, Order) {
    let product = product_with_codes(db, codes).await;
    let order = db
        .store
        .create_order(&new_order(product, 1, 60_000))
        .await
        .unwrap()
        .unwrap();
    (product, order)
}

pub async fn restock(db: &Db, product_id: i64, codes: usize) {
    restock_store(&db.store, product_id, codes).await
}

/// `restock` through the store alone, for a task of its own.
pub async fn restock_store(store: &SqlStore, product_id: i64, codes: usize) {
    let (batch, _batch_lease) = store.begin_import(product_id).await.unwrap();
    let cards: Vec<NewCard> = (0..codes)
        .map(|_| {
            let fp: [u8; 32] = rand::thread_rng().gen();
            card(&fp)
        })
        .collect();
    let n = store.stage_cards(batch, product_id, &cards).await.unwrap();
    assert_eq!(n as usize, codes);
    store
        .commit_import(
            batch,
            product_id,
            &ImportCounts {
                imported: n,
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

pub fn new_order(product_id: i64, quantity: i64, ttl_ms: i64) -> NewOrder {
    let now = now_millis();
    NewOrder {
        order_no: kami_core::OrderNo::generate(now).as_str().to_string(),
        product_id,
        quantity,
        unit_price: 100,
        discount: 0,
        amount: 100 * quantity,
        currency: "CNY".into(),
        email: format!("b{}@x.test", rand::thread_rng().gen::<u32>()),
        query_password_hash: None,
        access_token_hash: vec![1; 32],
        buyer_ip: None,
        channel: "sandbox".into(),
        created_at: now,
        expires_at: now + ttl_ms,
        per_buyer_limit: None,
        per_ip_limit: None,
        coupon_id: None,
        idempotency: None,
    }
}

pub fn payment(order: &Order, trade_no: &str) -> NewPayment {
    NewPayment {
        order_id: order.id,
        channel: "sandbox".into(),
        trade_no: trade_no.into(),
        amount: order.amount,
        currency: order.currency.clone(),
        raw: "{}".into(),
        received_at: now_millis(),
    }
}

/// Pays `order` in full with a trade number of its own (`T-<order_no>`).
pub async fn pay_in_full(store: &SqlStore, order: &Order) -> PayOutcome {
    let trade_no = format!("T-{}", order.order_no);
    store.pay_order(&payment(order, &trade_no)).await.unwrap()
}

/// The invariants of DESIGN.md, read straight from the rows.
pub async fn assert_invariants(db: &Db, product_id: i64, imported: i64) {
    let rows = sqlx::query("SELECT id, status, quantity FROM orders WHERE product_id = $1")
        .bind(product_id)
        .fetch_all(&db.check)
        .await
        .unwrap();
    for r in rows {
        let id: i64 = r.get("id");
        let status: String = r.get("status");
        let quantity: i64 = r.get("quantity");
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM cards WHERE order_id = $1 AND status IN ('reserved', 'sold')",
        )
        .bind(id)
        .fetch_one(&db.check)
        .await
        .unwrap();
        let sold: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM cards WHERE order_id = $1 AND status = 'sold'",
        )
        .bind(id)
        .fetch_one(&db.check)
        .await
        .unwrap();
        match status.as_str() {
            "pending" => assert_eq!((held, sold), (quantity, 0), "pending order {id}"),
            "delivered" => assert_eq!((held, sold), (quantity, quantity), "delivered order {id}"),
            "expired" | "paid_unfulfilled" => {
                assert_eq!(held, 0, "{status} order {id} holds codes")
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let stray: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM cards WHERE product_id = $1 AND status IN ('reserved', 'sold') AND order_id IS NULL",
    )
    .bind(product_id)
    .fetch_one(&db.check)
    .await
    .unwrap();
    assert_eq!(stray, 0, "codes reserved or sold without an order");
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cards WHERE product_id = $1")
        .bind(product_id)
        .fetch_one(&db.check)
        .await
        .unwrap();
    assert_eq!(total, imported, "cards appeared or vanished");
    let paid_orders: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT order_id) FROM payments p JOIN orders o ON o.id = p.order_id WHERE o.product_id = $1",
    )
    .bind(product_id)
    .fetch_one(&db.check)
    .await
    .unwrap();
    let settled: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM orders WHERE product_id = $1 AND status IN ('delivered', 'paid_unfulfilled')",
    )
    .bind(product_id)
    .fetch_one(&db.check)
    .await
    .unwrap();
    assert_eq!(
        paid_orders, settled,
        "a paid order is neither delivered nor paid_unfulfilled"
    );
    assert_references(db).await;
    assert_status_counts(db).await;
    assert_status_books(db).await;
}

/// Neither backend keeps an index of pending orders (PostgreSQL's migration
/// 0010, SQLite's 0012): every pending order must be named by a deadline
/// row, or it would never expire. On PostgreSQL the marks must be exactly
/// the paid_unfulfilled, expired and refunded orders, or restocks, lists and
/// counts would miss or invent some.
pub async fn assert_status_books(db: &Db) {
    if db.store.backend() != Backend::Postgres {
        let undated: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM orders o WHERE o.status = 'pending' AND NOT EXISTS \
             (SELECT 1 FROM order_deadlines d WHERE d.order_id = o.id \
              AND d.expires_at = o.expires_at)",
        )
        .fetch_one(&db.check)
        .await
        .unwrap();
        assert_eq!(undated, 0, "pending orders without their deadline row");
        return;
    }
    let undated: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM orders o WHERE o.status = 'pending' AND NOT EXISTS \
         (SELECT 1 FROM order_deadlines d WHERE o.id = ANY(d.order_ids))",
    )
    .fetch_one(&db.check)
    .await
    .unwrap();
    assert_eq!(undated, 0, "pending orders without a deadline row");
    let wrong: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT id, status, product_id FROM orders \
           WHERE status IN ('paid_unfulfilled', 'expired', 'refunded')) o \
         FULL JOIN order_marks m \
           ON m.order_id = o.id AND m.status = o.status AND m.product_id = o.product_id \
         WHERE o.id IS NULL OR m.order_id IS NULL",
    )
    .fetch_one(&db.check)
    .await
    .unwrap();
    assert_eq!(wrong, 0, "order marks that are not the orders' statuses");
}

/// The ids of the pending orders the store lists, newest first.
pub async fn pending_listed(db: &Db) -> Vec<i64> {
    let f = OrderFilter {
        status: Some(kami_core::OrderStatus::Pending),
        limit: 50,
        ..OrderFilter::default()
    };
    let orders = db.store.list_orders(&f).await.unwrap();
    orders.iter().map(|o| o.id).collect()
}

/// The store's counts by status (`/metrics`, the dashboard) are the rows'
/// own, although SQLite counts them without an index of every order by
/// status (migration 0008): every status listed, zeros too.
pub async fn assert_status_counts(db: &Db) {
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM orders GROUP BY status")
        .fetch_all(&db.check)
        .await
        .unwrap();
    let mut expected: Vec<(String, i64)> = kami_core::OrderStatus::ALL
        .iter()
        .map(|st| (st.as_str().to_string(), 0))
        .collect();
    for r in rows {
        let status: String = r.get("status");
        let slot = expected.iter_mut().find(|(s, _)| *s == status);
        slot.unwrap_or_else(|| panic!("unknown status {status}")).1 = r.get("n");
    }
    assert_eq!(db.store.count_orders_by_status().await.unwrap(), expected);
}

/// Every reference the hot tables hold names a row that exists: what their
/// foreign keys checked row by row on PostgreSQL until migration 0007, so
/// every race checks it afterwards instead.
pub async fn assert_references(db: &Db) {
    for (what, sql) in [
        (
            "orders naming a missing merchant or product",
            "SELECT COUNT(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM merchants m WHERE m.id = o.merchant_id) \
             OR NOT EXISTS (SELECT 1 FROM products p WHERE p.id = o.product_id)",
        ),
        (
            "payments naming a missing merchant or order",
            "SELECT COUNT(*) FROM payments x WHERE NOT EXISTS (SELECT 1 FROM merchants m WHERE m.id = x.merchant_id) \
             OR NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = x.order_id)",
        ),
        (
            "timeline rows naming a missing merchant or order",
            "SELECT COUNT(*) FROM order_events x WHERE NOT EXISTS (SELECT 1 FROM merchants m WHERE m.id = x.merchant_id) \
             OR (x.order_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = x.order_id))",
        ),
    ] {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&db.check).await.unwrap();
        assert_eq!(n, 0, "{what}: {n}");
    }
}

#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(kami_store::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(kami_store::Backend::Postgres).await })*
        }
    };
}

/// How many PostgreSQL transactions wrote these orders (their `xmin`): 1
/// when a batch committed as one, more when it was replayed order by order.
pub async fn transactions_that_wrote(db: &Db, order_nos: &[&str]) -> i64 {
    let quoted: Vec<String> = order_nos.iter().map(|n| format!("'{n}'")).collect();
    sqlx::query_scalar(&format!(
        "SELECT COUNT(DISTINCT xmin::text) FROM orders WHERE order_no IN ({})",
        quoted.join(", ")
    ))
    .fetch_one(&db.check)
    .await
    .unwrap()
}

//! Store-level races on both backends: payments, expiry sweeps, new orders
//! and restocks racing as real tasks on one database, with every invariant
//! of DESIGN.md checked against the rows afterwards.

use std::sync::Arc;

use kami_core::now_millis;
use kami_store::*;
use rand::Rng;
use sqlx::Row;

struct Db {
    store: Arc<SqlStore>,
    /// Another pool on the same database, for checks with plain SQL.
    check: sqlx::AnyPool,
    drop_pg: Option<String>,
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(name) = &self.drop_pg {
            let _ = std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-qc"])
                .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .output();
        }
    }
}

fn pg_admin_url() -> String {
    std::env::var("KAMI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn open(backend: Backend) -> Db {
    let tag: u64 = rand::thread_rng().gen();
    let (url, drop_pg) = match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("kami-store-race-{tag:x}"));
            std::fs::create_dir_all(&dir).unwrap();
            (format!("sqlite://{}/kami.db", dir.display()), None)
        }
        Backend::Postgres => {
            sqlx::any::install_default_drivers();
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
            (format!("{base}/{name}"), Some(name))
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
        drop_pg,
    }
}

async fn product_with_codes(db: &Db, codes: usize) -> i64 {
    let p = db
        .store
        .create_product(&NewProduct {
            name: "race".into(),
            price: 100,
            currency: "CNY".into(),
            min_quantity: 1,
            max_quantity: 10,
            visible: true,
            ..NewProduct::default()
        })
        .await
        .unwrap();
    restock(db, p.id, codes).await;
    p.id
}

async fn restock(db: &Db, product_id: i64, codes: usize) {
    let batch = db.store.begin_import(product_id).await.unwrap();
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
    let n = db
        .store
        .stage_cards(batch, product_id, &cards)
        .await
        .unwrap();
    assert_eq!(n as usize, codes);
    db.store
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

fn new_order(product_id: i64, quantity: i64, ttl_ms: i64) -> NewOrder {
    let now = now_millis();
    NewOrder {
        order_no: kami_core::OrderNo::generate(now).as_str().to_string(),
        product_id,
        quantity,
        unit_price: 100,
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
        idempotency: None,
    }
}

fn payment(order: &Order, trade_no: &str) -> NewPayment {
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

/// The invariants of DESIGN.md, read straight from the rows.
async fn assert_invariants(db: &Db, product_id: i64, imported: i64) {
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
}

/// Payments (each sent three times), expiry sweeps and new buyers race for
/// the same codes while orders expire under them.
async fn payments_race_expiry_and_new_buyers(backend: Backend) {
    let db = open(backend).await;
    let product = product_with_codes(&db, 40).await;
    let mut orders = Vec::new();
    for i in 0..20 {
        // Half are already due for expiry when the race starts.
        let ttl = if i % 2 == 0 { -1 } else { 60_000 };
        orders.push(
            db.store
                .create_order(&new_order(product, 2, ttl))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for o in orders.clone() {
        for _ in 0..3 {
            let (store, o) = (db.store.clone(), o.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .pay_order(&payment(&o, &format!("T-{}", o.order_no)))
                    .await
                    .unwrap();
            }));
        }
    }
    for _ in 0..4 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            store.expire_due_orders(now_millis(), 100).await.unwrap();
        }));
    }
    for _ in 0..20 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            let _ = store
                .create_order(&new_order(product, 1, 60_000))
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_invariants(&db, product, 40).await;
    // Every paid order ended delivered or waiting for stock, never lost.
    for o in &orders {
        let now = db.store.get_order(&o.order_no).await.unwrap().unwrap();
        assert!(
            matches!(
                now.status.0,
                kami_core::OrderStatus::Delivered | kami_core::OrderStatus::PaidUnfulfilled
            ),
            "order {} ended {:?}",
            o.order_no,
            now.status.0
        );
    }
    // A restock serves whoever still waits, and the books still balance.
    restock(&db, product, 40).await;
    assert_invariants(&db, product, 80).await;
    let waiting = db
        .store
        .list_orders(&OrderFilter {
            status: Some(kami_core::OrderStatus::PaidUnfulfilled),
            product_id: Some(product),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        waiting.is_empty(),
        "restock left paid orders waiting: {}",
        waiting.len()
    );
}

/// Importers racing each other with overlapping codes: each code is stored
/// once, and the duplicates are counted, never sold twice.
async fn racing_imports_store_each_code_once(backend: Backend) {
    let db = open(backend).await;
    let product = product_with_codes(&db, 0).await;
    let shared: Vec<[u8; 32]> = (0..300).map(|_| rand::thread_rng().gen()).collect();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (store, shared) = (db.store.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let batch = store.begin_import(product).await.unwrap();
            let cards: Vec<NewCard> = shared
                .iter()
                .map(|fp| NewCard {
                    ciphertext: fp.to_vec(),
                    nonce: vec![0; 12],
                    key_id: 1,
                    fingerprint: fp.to_vec(),
                })
                .collect();
            let n = store.stage_cards(batch, product, &cards).await.unwrap();
            store
                .commit_import(
                    batch,
                    product,
                    &ImportCounts {
                        imported: n,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(
        total, 300,
        "overlapping imports stored a code twice or lost one"
    );
    assert_eq!(db.store.stock(product).await.unwrap().available, 300);
}

/// An aborted import leaves nothing sellable and frees its codes for a
/// later import.
async fn aborted_import_leaves_nothing(backend: Backend) {
    let db = open(backend).await;
    let product = product_with_codes(&db, 5).await;
    let batch = db.store.begin_import(product).await.unwrap();
    let fp: [u8; 32] = rand::thread_rng().gen();
    let card = NewCard {
        ciphertext: fp.to_vec(),
        nonce: vec![0; 12],
        key_id: 1,
        fingerprint: fp.to_vec(),
    };
    db.store
        .stage_cards(batch, product, std::slice::from_ref(&card))
        .await
        .unwrap();
    assert_eq!(
        db.store.stock(product).await.unwrap().available,
        5,
        "staged codes are not sellable"
    );
    db.store.abort_import(batch).await.unwrap();
    let again = db.store.begin_import(product).await.unwrap();
    assert_eq!(
        db.store.stage_cards(again, product, &[card]).await.unwrap(),
        1
    );
    db.store
        .commit_import(again, product, &ImportCounts::default())
        .await
        .unwrap();
    assert_eq!(db.store.stock(product).await.unwrap().available, 6);
}

/// Two workers claiming jobs at once never get the same job.
async fn job_claims_are_exclusive(backend: Backend) {
    let db = open(backend).await;
    for i in 0..50 {
        db.store
            .enqueue_job(&NewJob {
                kind: "test".into(),
                payload: format!("{{\"i\":{i}}}"),
                run_at: 0,
                dedupe_key: None,
                max_attempts: 3,
            })
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..5 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let jobs = store
                    .claim_jobs(&format!("w{w}"), now_millis(), 30_000, 3)
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    break;
                }
                mine.extend(jobs.into_iter().map(|j| j.id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (50, 50), "a job was claimed twice or never");
}

/// Buyers reloading the pay page at once: one attempt per order, one
/// `payment_started` event, and every caller gets the first pay URL. Only
/// unpaid orders are due for reconciliation, and a check reschedules.
async fn one_payment_attempt_per_order(backend: Backend) {
    let db = open(backend).await;
    let product = product_with_codes(&db, 4).await;
    let mut orders = Vec::new();
    for _ in 0..2 {
        let o = db
            .store
            .create_order(&new_order(product, 1, 60_000))
            .await
            .unwrap()
            .unwrap();
        orders.push(o);
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, o) = (db.store.clone(), orders[0].clone());
        tasks.push(tokio::spawn(async move {
            store
                .start_payment_attempt(&NewPaymentAttempt {
                    order_id: o.id,
                    order_no: o.order_no.clone(),
                    channel: "sandbox".into(),
                    reference: Some(format!("ref-{i}")),
                    pay_url: format!("https://gateway.example/{i}"),
                    created_at: now_millis(),
                    first_check_at: 0,
                })
                .await
                .unwrap()
        }));
    }
    let mut urls = Vec::new();
    for t in tasks {
        urls.push(t.await.unwrap().pay_url);
    }
    urls.dedup();
    assert_eq!(
        urls.len(),
        1,
        "every caller gets the same attempt: {urls:?}"
    );
    let events = db.store.order_events(orders[0].id).await.unwrap();
    let started = events
        .iter()
        .filter(|e| e.kind == "payment_started")
        .count();
    assert_eq!(started, 1, "{events:?}");

    // The paid order drops out of reconciliation; a check reschedules.
    let due = db.store.due_payment_checks(now_millis(), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    db.store
        .payment_checked(due[0].id, Some(now_millis() + 60_000))
        .await
        .unwrap();
    assert!(db
        .store
        .due_payment_checks(now_millis(), 10)
        .await
        .unwrap()
        .is_empty());
    let again = db
        .store
        .payment_attempt(orders[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.checks, 1);
    db.store
        .pay_order(&payment(&orders[0], "T-attempt"))
        .await
        .unwrap();
    db.store.payment_checked(again.id, Some(0)).await.unwrap();
    assert!(db
        .store
        .due_payment_checks(now_millis(), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(db
        .store
        .payment_attempt(orders[1].id)
        .await
        .unwrap()
        .is_none());
}

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

both_backends!(
    payments_race_expiry_and_new_buyers,
    racing_imports_store_each_code_once,
    aborted_import_leaves_nothing,
    job_claims_are_exclusive,
    one_payment_attempt_per_order,
);

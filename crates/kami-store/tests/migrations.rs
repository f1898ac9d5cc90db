//! Migrations that move data: run against a database holding rows from
//! before them.

mod common;

use common::*;
use kami_core::{now_millis, OrderStatus};
use kami_store::*;
use rand::Rng;

/// A database of the test's own, a store on it, and a pool holding the
/// schema of every migration but `version` (`schema_without`).
async fn shop_without(version: &str) -> (PgDatabase, SqlStore, sqlx::AnyPool) {
    let pg = empty_postgres().await;
    let store = SqlStore::connect(&pg.url, 4).await.unwrap();
    let pool = schema_without(&pg.url, version).await;
    (pg, store, pool)
}

/// `n` codes of `product` in import `batch`, stored with `status` as an
/// import leaves them (their ciphertexts are never opened here).
async fn insert_codes(pool: &sqlx::AnyPool, product: i64, batch: i64, status: &str, n: i64) {
    sqlx::query(&format!(
        "INSERT INTO cards (merchant_id, product_id, batch_id, ciphertext, nonce, key_id, \
         fingerprint, status, created_at) \
         SELECT 1, {product}, {batch}, '\\x00', '\\x00', 1, '\\x00', '{status}', 0 \
         FROM generate_series(1, {n})"
    ))
    .execute(pool)
    .await
    .unwrap();
}

/// A pool on `url` holding the schema of every migration but `version`, from
/// the migrations' own files: a shop that has not applied it yet, and that
/// this build's store can write to, since the migrations after it touch
/// other tables. `SqlStore::migrate` then applies it to the rows written.
async fn schema_without(url: &str, version: &str) -> sqlx::AnyPool {
    let tag: u64 = rand::thread_rng().gen();
    let before = std::env::temp_dir().join(format!("kami-migrations-{tag:x}"));
    std::fs::create_dir_all(&before).unwrap();
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        if !file.starts_with(version) {
            std::fs::copy(&path, before.join(&file)).unwrap();
        }
    }
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(before.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    std::fs::remove_dir_all(&before).unwrap();
    pool
}

/// Migration 0009 moves the fingerprints of codes imported before it into
/// `card_fingerprints` and drops the unique index on `cards`: a code stored
/// before the upgrade is still caught as a duplicate after it, and a new
/// code is still stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprints_imported_before_0009_still_catch_duplicates() {
    let (_pg, store, pool) = shop_without("0009").await;

    let product = store
        .create_product(&new_product("upgraded"))
        .await
        .unwrap()
        .id;
    let (batch, first_lease) = store.begin_import(product).await.unwrap();
    let old: Vec<[u8; 32]> = (0..3).map(|_| rand::thread_rng().gen()).collect();
    for fp in &old {
        sqlx::query(&format!(
            "INSERT INTO cards (merchant_id, product_id, batch_id, ciphertext, nonce, key_id, \
             fingerprint, status, created_at) \
             VALUES (1, {product}, {batch}, $1, $2, 1, $1, 'available', 0)"
        ))
        .bind(fp.as_slice())
        .bind([0u8; 12].as_slice())
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(&format!(
        "UPDATE card_batches SET status = 'committed' WHERE id = {batch}"
    ))
    .execute(&pool)
    .await
    .unwrap();

    store.migrate().await.unwrap();
    let unique_left: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_constraint WHERE conname = 'cards_product_id_fingerprint_key'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unique_left, 0, "the unique index on cards is still there");

    let new: [u8; 32] = rand::thread_rng().gen();
    let mut cards: Vec<NewCard> = old.iter().map(|fp| card(fp)).collect();
    cards.push(card(&new));
    drop(first_lease); // one import into a product at a time
    let (batch, _batch_lease) = store.begin_import(product).await.unwrap();
    let staged = store.stage_cards(batch, product, &cards).await.unwrap();
    assert_eq!(
        staged, 1,
        "a code imported before the upgrade was stored again"
    );
    store
        .commit_import(batch, product, &ImportCounts::default())
        .await
        .unwrap();
    assert_eq!(store.stock(product).await.unwrap().available, 4);
    pool.close().await;
}

/// Migration 0010 drops the orders' indexes by status and keeps what they
/// answered in `order_deadlines` and `order_marks`: orders of every status
/// stored before it are counted, listed, expired and fulfilled after it as
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_stored_before_0010_keep_their_statuses() {
    let (_pg, store, pool) = shop_without("0010").await;

    let product = store
        .create_product(&new_product("upgraded"))
        .await
        .unwrap()
        .id;
    // Five codes, written as an import leaves them (a committed import
    // fulfils waiting orders, which reads this build's marks).
    let (batch, _batch_lease) = store.begin_import(product).await.unwrap();
    insert_codes(&pool, product, batch, "available", 5).await;
    sqlx::query(&format!(
        "UPDATE card_batches SET status = 'committed' WHERE id = {batch}"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let order = |quantity| {
        let store = &store;
        async move {
            store
                .create_order(&new_order(product, quantity, 60_000))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let pay = |o: Order| {
        let store = &store;
        async move { pay_in_full(store, &o).await }
    };
    let pending = order(1).await;
    let delivered = order(1).await;
    let refunded = order(1).await;
    let late = order(1).await;
    let expired = order(1).await;
    assert_eq!(pay(delivered.clone()).await, PayOutcome::Delivered);
    assert_eq!(pay(refunded.clone()).await, PayOutcome::Delivered);
    // Refunded and expired as Kami before 0010 left them (expired orders
    // gave their codes back).
    sqlx::query(&format!(
        "UPDATE orders SET status = 'refunded' WHERE id = {}",
        refunded.id
    ))
    .execute(&pool)
    .await
    .unwrap();
    for o in [&late, &expired] {
        sqlx::raw_sql(&format!(
            "UPDATE orders SET status = 'expired' WHERE id = {0}; \
             UPDATE cards SET status = 'available', order_id = NULL, reserved_until = NULL \
             WHERE order_id = {0}",
            o.id
        ))
        .execute(&pool)
        .await
        .unwrap();
    }
    let second = order(2).await;
    assert_eq!(pay(late.clone()).await, PayOutcome::PaidUnfulfilled);

    store.migrate().await.unwrap();
    let counts = |pending, delivered, expired, paid_unfulfilled, refunded| {
        let mut c = vec![
            ("pending", pending),
            ("paid_unfulfilled", paid_unfulfilled),
            ("delivered", delivered),
            ("expired", expired),
            ("refunded", refunded),
        ];
        c.sort_by_key(|(st, _)| {
            OrderStatus::ALL
                .iter()
                .position(|s| s.as_str() == *st)
                .unwrap()
        });
        c.into_iter()
            .map(|(st, n)| (st.to_string(), n))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        store.count_orders_by_status().await.unwrap(),
        counts(2, 1, 1, 1, 1)
    );
    let listed = |status| {
        let store = &store;
        async move {
            let f = OrderFilter {
                status: Some(status),
                limit: 10,
                ..OrderFilter::default()
            };
            let orders = store.list_orders(&f).await.unwrap();
            orders.into_iter().map(|o| o.order_no).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(OrderStatus::Pending).await,
        [second.order_no.as_str(), pending.order_no.as_str()]
    );
    assert_eq!(
        listed(OrderStatus::Expired).await,
        [expired.order_no.as_str()]
    );
    assert_eq!(
        listed(OrderStatus::PaidUnfulfilled).await,
        [late.order_no.as_str()]
    );
    assert_eq!(
        listed(OrderStatus::Refunded).await,
        [refunded.order_no.as_str()]
    );

    // The two pending orders expire when due; the codes they give back go
    // to the order paid late first.
    let swept = store
        .expire_due_orders(now_millis() + 120_000, 10)
        .await
        .unwrap();
    let mut swept: Vec<String> = swept.into_iter().map(|o| o.order_no).collect();
    swept.sort();
    let mut due = vec![pending.order_no.clone(), second.order_no.clone()];
    due.sort();
    assert_eq!(swept, due);
    let late_now = store.get_order(&late.order_no).await.unwrap().unwrap();
    assert_eq!(late_now.status.0, OrderStatus::Delivered);
    assert_eq!(
        store.count_orders_by_status().await.unwrap(),
        counts(0, 2, 3, 0, 1)
    );
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM order_deadlines")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    pool.close().await;
}

/// Migration 0011 indexes available and staged codes by stored columns
/// computed from the status: codes imported before it, available or still
/// staged, are counted, sold and committed after it as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_stored_before_0011_are_found_after_it() {
    let (_pg, store, pool) = shop_without("0011").await;
    let product: i64 = sqlx::query_scalar(
        "INSERT INTO products (merchant_id, name, price, currency, created_at, updated_at) \
         VALUES (1, 'upgraded', 100, 'CNY', 0, 0) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let batch = |status: &'static str| {
        let pool = &pool;
        async move {
            let id: i64 = sqlx::query_scalar(&format!(
                "INSERT INTO card_batches (merchant_id, product_id, status, heartbeat_at, created_at) \
                 VALUES (1, {product}, '{status}', 0, 0) RETURNING id"
            ))
            .fetch_one(pool)
            .await
            .unwrap();
            id
        }
    };
    let committed = batch("committed").await;
    let importing = batch("importing").await;
    insert_codes(&pool, product, committed, "available", 3).await;
    insert_codes(&pool, product, importing, "staged", 2).await;

    store.migrate().await.unwrap();
    assert_eq!(store.stock(product).await.unwrap().available, 3);
    assert_eq!(store.get_product(product).await.unwrap().unwrap().stock, 3);
    let order = store
        .create_order(&new_order(product, 3, 60_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.stock(product).await.unwrap().available, 0);
    assert_eq!(pay_in_full(&store, &order).await, PayOutcome::Delivered);
    assert_eq!(store.order_cards(order.id).await.unwrap().len(), 3);
    store
        .commit_import(importing, product, &ImportCounts::default())
        .await
        .unwrap();
    assert_eq!(store.stock(product).await.unwrap().available, 2);
    pool.close().await;
}

/// SQLite's migration 0012 drops `orders_pending_expiry` and names every
/// pending order by a row of `order_deadlines` instead: orders stored
/// before it, one at a time and in a batch, are counted, listed and expired
/// after it as before. The shop before it is this build's with 0012 undone
/// by hand (the migration only adds the table and drops the index).
#[tokio::test]
async fn sqlite_orders_stored_before_0012_still_expire() {
    let db = open(Backend::Sqlite).await;
    let product = product_with_codes(&db, 10).await;
    let mut pending = Vec::new();
    for _ in 0..2 {
        pending.push(
            db.store
                .create_order(&new_order(product, 1, 60_000))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let batch: Vec<NewOrder> = (0..3).map(|_| new_order(product, 2, 60_000)).collect();
    for o in db.store.create_orders(&batch).await {
        pending.push(o.unwrap().unwrap());
    }
    let paid = pending.remove(1);
    assert_eq!(pay_in_full(&db.store, &paid).await, PayOutcome::Delivered);
    sqlx::raw_sql(
        "DROP TABLE order_deadlines; \
         CREATE INDEX orders_pending_expiry ON orders (expires_at) WHERE status = 'pending'; \
         DELETE FROM _sqlx_migrations WHERE version = 12",
    )
    .execute(&db.check)
    .await
    .unwrap();

    db.store.migrate().await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM order_deadlines")
        .fetch_one(&db.check)
        .await
        .unwrap();
    assert_eq!(rows, 4, "a row per pending order");
    let index: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'orders_pending_expiry'",
    )
    .fetch_one(&db.check)
    .await
    .unwrap();
    assert_eq!(index, 0, "the pending index is back");
    assert_eq!(pending_count(&db).await, 4);
    let listed = pending_listed(&db).await;
    let mut want: Vec<i64> = pending.iter().map(|o| o.id).collect();
    want.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(listed, want);

    let expired = db
        .store
        .expire_due_orders(now_millis() + 120_000, 10)
        .await
        .unwrap();
    let mut ids: Vec<i64> = expired.iter().map(|o| o.id).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, want);
    assert_eq!(pending_count(&db).await, 0);
    assert_invariants(&db, product, 10).await;
}

/// The store's count of pending orders (`/metrics`, the dashboard).
async fn pending_count(db: &Db) -> i64 {
    let counts = db.store.count_orders_by_status().await.unwrap();
    counts.iter().find(|(s, _)| s == "pending").unwrap().1
}

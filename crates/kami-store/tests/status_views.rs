//! The operator's views of orders by status, on both backends: every status
//! listed newest first and counted, although SQLite has no index of every
//! order by status since migration 0008 (the rare statuses have partial
//! indexes, `delivered` is the rest) and PostgreSQL none naming the status
//! since its migration 0010 (pending orders are found through their
//! deadline rows, the rare statuses through their marks).

mod common;

use common::*;
use kami_core::{now_millis, OrderStatus};
use kami_store::*;
use sqlx::Row;

async fn every_status_is_listed_and_counted(backend: Backend) {
    let db = open(backend).await;
    let product = product_with_codes(&db, 5).await;
    let order = |ttl_ms| {
        let store = db.store.clone();
        async move {
            store
                .create_order(&new_order(product, 1, ttl_ms))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let pay = |o: Order| {
        let store = db.store.clone();
        async move { pay_in_full(&store, &o).await }
    };

    // Three orders expire; one of them is paid late, after the stock is gone.
    let late = order(-1).await;
    let expired = [order(-1).await, order(-1).await];
    assert_eq!(
        db.store
            .expire_due_orders(now_millis(), 10)
            .await
            .unwrap()
            .len(),
        3
    );
    let delivered = [
        order(60_000).await,
        order(60_000).await,
        order(60_000).await,
    ];
    let refunded = order(60_000).await;
    let pending = order(60_000).await;
    for o in delivered.iter().chain([&refunded]) {
        assert_eq!(pay(o.clone()).await, PayOutcome::Delivered);
    }
    assert!(db
        .store
        .refund_order(refunded.id, OrderStatus::Delivered, now_millis(), "test")
        .await
        .unwrap());
    assert_eq!(pay(late.clone()).await, PayOutcome::PaidUnfulfilled);

    let newest_first = |orders: &[&Order]| {
        let mut nos: Vec<(i64, String)> =
            orders.iter().map(|o| (o.id, o.order_no.clone())).collect();
        nos.sort_by_key(|n| std::cmp::Reverse(n.0));
        nos.into_iter().map(|(_, no)| no).collect::<Vec<_>>()
    };
    let expected = [
        (OrderStatus::Pending, newest_first(&[&pending])),
        (
            OrderStatus::Delivered,
            newest_first(&delivered.iter().collect::<Vec<_>>()),
        ),
        (
            OrderStatus::Expired,
            newest_first(&expired.iter().collect::<Vec<_>>()),
        ),
        (OrderStatus::PaidUnfulfilled, newest_first(&[&late])),
        (OrderStatus::Refunded, newest_first(&[&refunded])),
    ];
    for (status, nos) in &expected {
        let listed = list(&db, *status, 10, None).await;
        assert_eq!(&listed, nos, "{} orders", status.as_str());
    }
    // Paged: two at a time, newest first, the next page below the last id.
    let first = db
        .store
        .list_orders(&OrderFilter {
            status: Some(OrderStatus::Delivered),
            limit: 2,
            ..OrderFilter::default()
        })
        .await
        .unwrap();
    let rest = list(&db, OrderStatus::Delivered, 2, Some(first[1].id)).await;
    let paged: Vec<String> = first
        .iter()
        .map(|o| o.order_no.clone())
        .chain(rest)
        .collect();
    assert_eq!(paged, expected[1].1);
    // The same for a status PostgreSQL reads through its marks, and the
    // filters inside them: by e-mail, by product.
    let newest = list(&db, OrderStatus::Expired, 1, None).await;
    let next = db.store.get_order(&newest[0]).await.unwrap().unwrap();
    let older = list(&db, OrderStatus::Expired, 1, Some(next.id)).await;
    assert_eq!([newest, older].concat(), expected[2].1);
    let by_email = db
        .store
        .list_orders(&OrderFilter {
            status: Some(OrderStatus::Expired),
            email: Some(expired[0].email.parse().unwrap()),
            product_id: Some(product),
            limit: 10,
            ..OrderFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_email.len(), 1);
    assert_eq!(by_email[0].order_no, expired[0].order_no);
    let other_product = db
        .store
        .list_orders(&OrderFilter {
            status: Some(OrderStatus::Refunded),
            product_id: Some(product + 1000),
            limit: 10,
            ..OrderFilter::default()
        })
        .await
        .unwrap();
    assert!(other_product.is_empty());

    let counts = db.store.count_orders_by_status().await.unwrap();
    let counted: Vec<(String, i64)> = expected
        .iter()
        .map(|(st, nos)| (st.as_str().to_string(), nos.len() as i64))
        .collect();
    assert_eq!(counts, counted);
    assert_status_counts(&db).await;
}

/// A status nobody holds any more is counted as zero, not left out: the
/// `/metrics` gauge must fall back to 0 when the last pending order is paid.
async fn a_status_emptied_counts_zero(backend: Backend) {
    let db = open(backend).await;
    let (_, order) = product_with_an_order(&db, 1).await;
    assert!(count(&db, OrderStatus::Pending).await == 1);
    db.store
        .pay_order(&payment(&order, "T-zero"))
        .await
        .unwrap();
    assert_eq!(count(&db, OrderStatus::Pending).await, 0);
    assert_eq!(count(&db, OrderStatus::Delivered).await, 1);
}

async fn list(db: &Db, status: OrderStatus, limit: i64, before_id: Option<i64>) -> Vec<String> {
    db.store
        .list_orders(&OrderFilter {
            status: Some(status),
            limit,
            before_id,
            ..OrderFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.order_no)
        .collect()
}

async fn count(db: &Db, status: OrderStatus) -> i64 {
    let counts = db.store.count_orders_by_status().await.unwrap();
    let found = counts.iter().find(|(s, _)| s == status.as_str());
    found.expect("every status is counted").1
}

/// The panel's pages that show no stock read the product without counting
/// its codes; everything else about it reads the same.
async fn a_product_reads_the_same_without_its_count(backend: Backend) {
    let db = open(backend).await;
    let (product, _order) = product_with_an_order(&db, 5).await;
    let counted = db.store.get_product(product).await.unwrap().unwrap();
    assert_eq!(counted.stock, 4, "one of five codes is reserved");
    let uncounted = db
        .store
        .get_product_uncounted(product)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(uncounted.stock, 0);
    let zeroed = Product {
        stock: 0,
        ..counted
    };
    assert_eq!(format!("{uncounted:?}"), format!("{zeroed:?}"));
    assert!(db
        .store
        .get_product_uncounted(product + 1000)
        .await
        .unwrap()
        .is_none());
}

/// The sweep reads `order_deadlines`: one row per statement that inserted
/// orders on PostgreSQL (migration 0010), one per order on SQLite (0012). A row is cleared once none of its orders
/// is pending, its pending orders expire together, and a drop's rows of paid
/// orders, due first, are cleared in the same call as the one pending order
/// behind them: they do not count against the sweep's limit.
async fn a_sweep_clears_paid_deadlines_and_expires_behind_them(backend: Backend) {
    let db = open(backend).await;
    let product = product_with_codes(&db, 200).await;
    for _ in 0..150 {
        let o = db
            .store
            .create_order(&new_order(product, 1, 1_000))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(pay_in_full(&db.store, &o).await, PayOutcome::Delivered);
    }
    // One batch: five orders in one statement, four of them paid.
    let created = granted_batch(&db, product, 5, 2_000).await;
    for o in &created[1..] {
        assert_eq!(pay_in_full(&db.store, o).await, PayOutcome::Delivered);
    }
    let rows = deadline_rows(&db).await;
    match backend {
        Backend::Postgres => assert_eq!(rows, 151, "a row per single order and one for the batch"),
        // Tidied by the sweep below: a row per order until then.
        Backend::Sqlite => assert_eq!(rows, 155, "a row per order"),
    }
    assert_sweeps_nothing(&db, now_millis()).await;

    let later = now_millis() + 60_000;
    let expired = db.store.expire_due_orders(later, 10).await.unwrap();
    let nos: Vec<&str> = expired.iter().map(|o| o.order_no.as_str()).collect();
    assert_eq!(nos, [created[0].order_no.as_str()]);
    assert_sweeps_nothing(&db, later).await;
    assert_eq!(
        deadline_rows(&db).await,
        0,
        "settled deadline rows were left"
    );
    assert_eq!(count(&db, OrderStatus::Expired).await, 1);
    assert_eq!(count(&db, OrderStatus::Delivered).await, 154);
    assert_invariants(&db, product, 200).await;
}

/// A paid order's update and its codes' sale are HOT updates on PostgreSQL
/// (migrations 0010 and 0011): no index of `orders` names the status, the
/// codes' indexes name columns a sale leaves alone, and pages keep room for
/// the new versions of the orders a batch pays (here four payment writers
/// each take a quarter of the order ids; Kami runs two, each taking half).
/// Were an index on either status added again, every payment would index
/// its order and its codes anew; this fails then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_pays_orders_with_hot_updates() {
    let db = open(Backend::Postgres).await;
    let product = product_with_codes(&db, 60).await;
    let created = granted_batch(&db, product, 60, 60_000).await;
    for shard in 0..4 {
        let payments: Vec<NewPayment> = created
            .iter()
            .filter(|o| o.id % 4 == shard)
            .map(|o| payment(o, &format!("T-{}", o.order_no)))
            .collect();
        for outcome in db.store.pay_orders(&payments).await {
            assert_eq!(outcome.unwrap(), PayOutcome::Delivered);
        }
    }
    // No index names the status, so an update that changes nothing else
    // indexed can be HOT (a generated column counts only if its value
    // changes: a sale leaves `stock_product` and `staged_batch` NULL).
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_indexdef(x.indexrelid) FROM pg_index x \
         JOIN pg_class t ON t.oid = x.indrelid WHERE t.relname IN ('cards', 'orders')",
    )
    .fetch_all(&db.check)
    .await
    .unwrap();
    assert!(indexes.len() >= 6, "{indexes:?}");
    for def in &indexes {
        assert!(!def.contains("status"), "an index names the status: {def}");
    }
    // And they were: each code's import commit and claim change an indexed
    // value (staged to available, available to reserved), its sale does
    // not. Whether every sale fits on its code's page depends on when
    // PostgreSQL pruned the versions the import and the claim left there,
    // which other tests' load beside this one moves (24–38 of 60 sales HOT
    // in three runs of ten, all 60 in the others); with an index on the
    // status none is.
    let (updates, hot) = hot_counts(&db, "cards", 180).await;
    assert_eq!(updates, 180);
    assert!(hot > 0, "no sale was a HOT update");
    let (updates, hot) = hot_counts(&db, "orders", 60).await;
    assert_eq!(updates, 60);
    assert!(hot > 0, "no payment was a HOT update");
    assert_invariants(&db, product, 60).await;
}

/// A sweep at `at` finds no order to expire.
async fn assert_sweeps_nothing(db: &Db, at: i64) {
    let expired = db.store.expire_due_orders(at, 10).await.unwrap();
    assert!(expired.is_empty(), "expired {} orders", expired.len());
}

/// Rows of `order_deadlines`.
async fn deadline_rows(db: &Db) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM order_deadlines")
        .fetch_one(&db.check)
        .await
        .unwrap()
}

/// `n` orders of one code each, created as one group commit, all granted.
async fn granted_batch(db: &Db, product: i64, n: usize, ttl_ms: i64) -> Vec<Order> {
    let batch: Vec<NewOrder> = (0..n).map(|_| new_order(product, 1, ttl_ms)).collect();
    db.store
        .create_orders(&batch)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect()
}

/// `(n_tup_upd, n_tup_hot_upd)` of `table` once it reports `updates`: the
/// pool's sessions report their counters when idle, within about ten
/// seconds.
async fn hot_counts(db: &Db, table: &str, updates: i64) -> (i64, i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let row = sqlx::query(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = $1",
        )
        .bind(table)
        .fetch_one(&db.check)
        .await
        .unwrap();
        let counts: (i64, i64) = (row.get(0), row.get(1));
        if counts.0 >= updates || std::time::Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

both_backends!(
    a_sweep_clears_paid_deadlines_and_expires_behind_them,
    every_status_is_listed_and_counted,
    a_status_emptied_counts_zero,
    a_product_reads_the_same_without_its_count
);

/// The ids a deadline row names, and its row version (`xmin`), by the
/// row's first order.
async fn deadline_of(db: &Db, first: i64) -> Option<(Vec<i64>, String)> {
    sqlx::query(
        "SELECT array_to_string(order_ids, ',') AS ids, xmin::text AS v FROM order_deadlines \
         WHERE $1 = ANY(order_ids)",
    )
    .bind(first)
    .fetch_optional(&db.check)
    .await
    .unwrap()
    .map(|row| {
        let ids: String = row.get("ids");
        let ids = ids.split(',').map(|id| id.parse().unwrap()).collect();
        (ids, row.get("v"))
    })
}

/// Every sweep tidies the deadline rows not yet due: paid orders leave
/// them, a row with no pending order left goes, and a row whose orders are
/// all still pending is not written. The pending count and list then look
/// up only pending orders (after a drop of 100,000 paid orders they looked
/// up every one of them until the rows fell due).
#[tokio::test]
async fn a_sweep_tidies_deadline_rows_before_they_fall_due() {
    let db = open(Backend::Postgres).await;
    let product = product_with_codes(&db, 20).await;
    let part_paid = granted_batch(&db, product, 5, 60_000).await;
    let all_paid = granted_batch(&db, product, 3, 60_000).await;
    let unpaid = granted_batch(&db, product, 4, 60_000).await;
    for o in part_paid[1..].iter().chain(&all_paid) {
        assert_eq!(pay_in_full(&db.store, o).await, PayOutcome::Delivered);
    }
    let (ids, unpaid_version) = deadline_of(&db, unpaid[0].id).await.unwrap();
    assert_eq!(ids.len(), 4);
    assert_eq!(deadline_rows(&db).await, 3);

    // Nothing is due; the sweep expires nothing and tidies the rows.
    assert_sweeps_nothing(&db, now_millis()).await;
    let (ids, _) = deadline_of(&db, part_paid[0].id).await.unwrap();
    assert_eq!(ids, [part_paid[0].id], "paid orders left the row");
    assert_eq!(deadline_of(&db, all_paid[0].id).await, None);
    assert_eq!(deadline_rows(&db).await, 2);
    let (ids, version) = deadline_of(&db, unpaid[0].id).await.unwrap();
    assert_eq!((ids.len(), &version), (4, &unpaid_version), "rewritten");
    assert_eq!(count(&db, OrderStatus::Pending).await, 5);

    // The tidied rows still expire their orders when due.
    let later = now_millis() + 120_000;
    let expired = db.store.expire_due_orders(later, 10).await.unwrap();
    assert_eq!(expired.len(), 5);
    assert_eq!(deadline_rows(&db).await, 0);
    assert_invariants(&db, product, 20).await;
}

/// SQLite's deadline rows (migration 0012), one per order: a sweep with
/// nothing due clears the rows of the orders paid since and keeps those of
/// the pending ones, which still expire when due; the pending list and
/// count read through the rows.
#[tokio::test]
async fn sqlite_a_sweep_tidies_deadline_rows_before_they_fall_due() {
    let db = open(Backend::Sqlite).await;
    let product = product_with_codes(&db, 20).await;
    let batch = granted_batch(&db, product, 8, 60_000).await;
    let single = db
        .store
        .create_order(&new_order(product, 1, 60_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deadline_rows(&db).await, 9, "a row per order");
    for o in batch.iter().step_by(2) {
        assert_eq!(pay_in_full(&db.store, o).await, PayOutcome::Delivered);
    }
    assert_eq!(deadline_rows(&db).await, 9, "a payment leaves the row");
    assert_eq!(count(&db, OrderStatus::Pending).await, 5);

    assert_sweeps_nothing(&db, now_millis()).await;
    assert_eq!(deadline_rows(&db).await, 5, "paid orders' rows were kept");
    let listed = pending_listed(&db).await;
    let mut pending: Vec<i64> = batch.iter().skip(1).step_by(2).map(|o| o.id).collect();
    pending.push(single.id);
    pending.reverse();
    assert_eq!(listed, pending, "the pending list, newest first");

    let later = now_millis() + 120_000;
    let expired = db.store.expire_due_orders(later, 10).await.unwrap();
    assert_eq!(expired.len(), 5);
    assert_eq!(deadline_rows(&db).await, 0);
    assert_eq!(count(&db, OrderStatus::Pending).await, 0);
    assert_invariants(&db, product, 20).await;
}

//! The operator's views of orders by status, on both backends: every status
//! listed newest first and counted, although SQLite has no index of every
//! order by status since migration 0008 (the rare statuses have partial
//! indexes, `delivered` is the rest).

mod common;

use common::*;
use kami_core::{now_millis, OrderStatus};
use kami_store::*;

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
        async move {
            let t = format!("T-{}", o.order_no);
            store.pay_order(&payment(&o, &t)).await.unwrap()
        }
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
        .refund_order(refunded.id, now_millis(), "test")
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

both_backends!(
    every_status_is_listed_and_counted,
    a_status_emptied_counts_zero,
    a_product_reads_the_same_without_its_count
);

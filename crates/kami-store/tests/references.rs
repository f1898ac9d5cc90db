//! Rows that orders, payments and timelines refer to cannot be deleted, on
//! either backend: SQLite by its foreign keys, PostgreSQL by the triggers of
//! migration 0007 (which dropped the per-row checks from the hot tables).

mod common;

use common::*;
use kami_store::*;

async fn referenced_rows_are_never_deleted(backend: Backend) {
    let db = open(backend).await;
    let (product, order) = product_with_an_order(&db, 3).await;
    db.store
        .pay_order(&payment(&order, "T-refs"))
        .await
        .unwrap();
    let before = row_counts(&db).await;
    let mut statements = vec![
        format!("DELETE FROM orders WHERE id = {}", order.id),
        format!("DELETE FROM products WHERE id = {product}"),
        "DELETE FROM merchants".to_string(),
    ];
    if backend == Backend::Postgres {
        statements.push("TRUNCATE orders CASCADE".into());
        statements.push("TRUNCATE products CASCADE".into());
    }
    for sql in &statements {
        let refused = sqlx::query(sql).execute(&db.check).await;
        assert!(refused.is_err(), "{sql} was allowed");
    }
    assert_eq!(
        row_counts(&db).await,
        before,
        "a refused delete changed something"
    );
    assert_invariants(&db, product, 3).await;
}

/// Rows of the referenced tables and of those a cascade would empty.
async fn row_counts(db: &Db) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in [
        "merchants",
        "products",
        "orders",
        "payments",
        "order_events",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&db.check)
            .await
            .unwrap();
        counts.push(n);
    }
    counts
}

both_backends!(referenced_rows_are_never_deleted);

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
    let count = |table: &'static str| {
        let pool = db.check.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let before = (
        count("merchants").await,
        count("products").await,
        count("orders").await,
    );
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
        (
            count("merchants").await,
            count("products").await,
            count("orders").await
        ),
        before,
        "a refused delete changed something"
    );
    assert_references(&db).await;
    assert_invariants(&db, product, 3).await;
}

both_backends!(referenced_rows_are_never_deleted);

//! PostgreSQL's statistics of the codes follow big imports (the planner's
//! estimates come from them; autovacuum may be late or off).

mod common;

use common::*;
use kami_store::Backend;

async fn counted(db: &Db) -> f64 {
    sqlx::query_scalar("SELECT reltuples::float8 FROM pg_class WHERE oid = 'cards'::regclass")
        .fetch_one(&db.check)
        .await
        .unwrap()
}

/// An import of a tenth or more of the codes last counted refreshes the
/// count (`ANALYZE`, which counts a small table exactly); a smaller one
/// leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_imports_refresh_the_codes_statistics() {
    let db = open(Backend::Postgres).await;
    // Only Kami's own ANALYZE may count the codes here, not autovacuum's.
    sqlx::query("ALTER TABLE cards SET (autovacuum_enabled = false)")
        .execute(&db.check)
        .await
        .unwrap();
    let product = product_with_codes(&db, 2000).await;
    assert_eq!(
        counted(&db).await,
        2000.0,
        "the first import was not counted"
    );
    restock(&db, product, 150).await;
    assert_eq!(
        counted(&db).await,
        2000.0,
        "a 7% import re-counted the codes"
    );
    restock(&db, product, 250).await;
    assert_eq!(counted(&db).await, 2400.0, "a 12% import was not counted");
}

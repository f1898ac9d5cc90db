//! The imports the stock gate re-reads exactly (`Store::restocks_since`),
//! on both backends: each finished one once it is in reach, every one still
//! making its codes sellable, and none still staging.

mod common;

use common::*;
use kami_core::now_millis;
use kami_store::*;

async fn batch_of(db: &Db, product_id: i64) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT MAX(id) FROM card_batches WHERE product_id = $1")
        .bind(product_id)
        .fetch_one(&db.check)
        .await
        .unwrap()
}

async fn restocks_name_finished_and_flipping_imports_not_staging_ones(backend: Backend) {
    let db = open(backend).await;
    let before = now_millis();
    let finished = product_with_codes(&db, 3).await;
    let finished_batch = batch_of(&db, finished).await;
    let after = now_millis();

    let staging = db
        .store
        .create_product(&new_product("staging"))
        .await
        .unwrap()
        .id;
    let (staging_batch, _staging_lease) = db.store.begin_import(staging).await.unwrap();

    // An import claimed for its commit and flipping its codes (as one whose
    // importer died mid-flip stays until it is reaped).
    let flipping = db
        .store
        .create_product(&new_product("flipping"))
        .await
        .unwrap()
        .id;
    let (flipping_batch, _flipping_lease) = db.store.begin_import(flipping).await.unwrap();
    sqlx::query("UPDATE card_batches SET status = 'committing' WHERE id = $1")
        .bind(flipping_batch)
        .execute(&db.check)
        .await
        .unwrap();

    let mut found = db.store.restocks_since(before).await.unwrap();
    found.sort_by_key(|r| r.batch_id);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        (found[0].batch_id, found[0].product_id),
        (finished_batch, finished)
    );
    let at = found[0]
        .finished_at
        .expect("a finished import has its time");
    assert!(
        (before..=after).contains(&at),
        "{at} not in {before}..={after}"
    );
    assert_eq!(
        found[1],
        Restock {
            batch_id: flipping_batch,
            product_id: flipping,
            finished_at: None
        }
    );
    assert!(found.iter().all(|r| r.batch_id != staging_batch));

    // Out of reach once finished before `since`; a flipping one never is.
    let later = db.store.restocks_since(after + 1).await.unwrap();
    assert_eq!(later, vec![found[1]]);
}

both_backends!(restocks_name_finished_and_flipping_imports_not_staging_ones);

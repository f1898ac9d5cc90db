//! Migrations that move data: run against a database holding rows from
//! before them, on PostgreSQL (the only backend with such a migration).

mod common;

use common::*;
use kami_store::*;
use rand::Rng;

/// Migration 0009 moves the fingerprints of codes imported before it into
/// `card_fingerprints` and drops the unique index on `cards`: a code stored
/// before the upgrade is still caught as a duplicate after it, and a new
/// code is still stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprints_imported_before_0009_still_catch_duplicates() {
    let pg = empty_postgres().await;
    let url = &pg.url;
    let tag: u64 = rand::thread_rng().gen();

    // The schema as it was before 0009, from the migrations' own files.
    let before = std::env::temp_dir().join(format!("kami-migrations-{tag:x}"));
    std::fs::create_dir_all(&before).unwrap();
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        if file.as_str() < "0009" {
            std::fs::copy(&path, before.join(&file)).unwrap();
        }
    }
    let store = SqlStore::connect(url, 4).await.unwrap();
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

    let product = store
        .create_product(&new_product("upgraded"))
        .await
        .unwrap()
        .id;
    let batch = store.begin_import(product).await.unwrap();
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
    let batch = store.begin_import(product).await.unwrap();
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

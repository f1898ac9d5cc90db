//! Store-level races on both backends: payments, expiry sweeps, new orders
//! and restocks racing as real tasks on one database, with every invariant
//! of DESIGN.md checked against the rows afterwards.

mod common;

use common::*;
use kami_core::now_millis;
use kami_store::*;
use rand::Rng;

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

/// Restocks of a product racing each other and late payments that park
/// their orders for want of stock: when the dust settles, a code is never
/// left on sale while a paid buyer waits for one, and waiting buyers are
/// served oldest first. Each restock serves the waiting orders in the
/// transaction that makes its codes sellable, and a late payment claims
/// what is in stock when it parks its order; on PostgreSQL two restocks
/// (or a restock and a parking) side by side each saw only what had
/// committed, and the first one's locks hid the waiting orders from the
/// second (`FOR UPDATE SKIP LOCKED`): found by an audit, one code of six
/// racing one-code imports stranded beside seven waiting buyers.
async fn restocks_and_late_payments_racing_leave_no_code_beside_a_waiting_buyer(backend: Backend) {
    for round in 0..6 {
        let db = open(backend).await;
        let product = product_with_codes(&db, 24).await;
        // 24 orders due at once, expired: their codes go back to stock.
        let mut late = Vec::new();
        for _ in 0..24 {
            late.push(
                db.store
                    .create_order(&new_order(product, 1, -1))
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        assert_eq!(
            db.store
                .expire_due_orders(now_millis(), 100)
                .await
                .unwrap()
                .len(),
            24
        );
        // The stock sells out to other buyers.
        for _ in 0..24 {
            let o = db
                .store
                .create_order(&new_order(product, 1, 60_000))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(pay_in_full(&db.store, &o).await, PayOutcome::Delivered);
        }
        // Half the late payments park their orders before the race, the
        // other half race eight one-code restocks.
        let (parked, racing) = late.split_at(12);
        for o in parked {
            assert_eq!(pay_in_full(&db.store, o).await, PayOutcome::PaidUnfulfilled);
        }
        let mut tasks = Vec::new();
        for o in racing.iter().cloned() {
            let store = db.store.clone();
            tasks.push(tokio::spawn(async move {
                let trade_no = format!("T-{}", o.order_no);
                store.pay_order(&payment(&o, &trade_no)).await.unwrap();
            }));
        }
        // Extra payments (other trade numbers) for parked orders, in the
        // same writers' batches: each locks its waiting order's row, which
        // a restock's fulfilment waits for.
        for o in parked.iter().take(4).cloned() {
            let store = db.store.clone();
            tasks.push(tokio::spawn(async move {
                let trade_no = format!("X-{}", o.order_no);
                store.pay_order(&payment(&o, &trade_no)).await.unwrap();
            }));
        }
        for _ in 0..8 {
            let store = db.store.clone();
            tasks.push(tokio::spawn(async move {
                restock_store(&store, product, 1).await
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_invariants(&db, product, 32).await;
        let available = db.store.stock(product).await.unwrap().available;
        let waiting: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM orders WHERE product_id = $1 AND status = 'paid_unfulfilled' ORDER BY id",
        )
        .bind(product)
        .fetch_all(&db.check)
        .await
        .unwrap();
        assert_eq!(
            (available, waiting.len()),
            (0, 16),
            "round {round}: eight restocked codes, 24 paid buyers waiting for them"
        );
        // Oldest first among the parked ones: the twelve parked before the
        // race were older than the racing ones and waited longer.
        let served_parked = parked.iter().filter(|o| !waiting.contains(&o.id)).count();
        assert_eq!(
            served_parked, 8,
            "round {round}: restocks skipped the oldest waiting buyers"
        );
    }
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
            let (batch, _batch_lease) = store.begin_import(product).await.unwrap();
            let cards: Vec<NewCard> = shared.iter().map(|fp| card(fp)).collect();
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
    let (batch, first_lease) = db.store.begin_import(product).await.unwrap();
    let fp: [u8; 32] = rand::thread_rng().gen();
    let code = card(&fp);
    db.store
        .stage_cards(batch, product, std::slice::from_ref(&code))
        .await
        .unwrap();
    assert_eq!(
        db.store.stock(product).await.unwrap().available,
        5,
        "staged codes are not sellable"
    );
    db.store.abort_import(batch).await.unwrap();
    drop(first_lease); // one import into a product at a time
    let (again, _again_lease) = db.store.begin_import(product).await.unwrap();
    assert_eq!(
        db.store.stage_cards(again, product, &[code]).await.unwrap(),
        1
    );
    db.store
        .commit_import(again, product, &ImportCounts::default())
        .await
        .unwrap();
    assert_eq!(db.store.stock(product).await.unwrap().available, 6);
}

/// An import into a product waits for another one into it to end. Staged
/// codes count as duplicates, so an import beside one that then failed
/// (its client gone, its process killed) reported the codes they shared as
/// duplicates, and they were stored nowhere (an audit: 40,618 of 100,000).
async fn an_import_beside_one_that_fails_stores_every_code(backend: Backend) {
    let db = open(backend).await;
    let product = product_with_codes(&db, 0).await;
    let shared: Vec<[u8; 32]> = (0..50).map(|_| rand::thread_rng().gen()).collect();
    let (first, first_lease) = db.store.begin_import(product).await.unwrap();
    let cards: Vec<NewCard> = shared.iter().map(|fp| card(fp)).collect();
    db.store.stage_cards(first, product, &cards).await.unwrap();
    let (store, again) = (db.store.clone(), cards.clone());
    let second = tokio::spawn(async move {
        let (batch, _lease) = store.begin_import(product).await.unwrap();
        let n = store.stage_cards(batch, product, &again).await.unwrap();
        let counts = ImportCounts {
            imported: n,
            duplicates: again.len() as u64 - n,
            ..Default::default()
        };
        store.commit_import(batch, product, &counts).await.unwrap();
        counts
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second import did not wait for the first"
    );
    assert!(db.store.abort_import(first).await.unwrap());
    drop(first_lease);
    let counts = second.await.unwrap();
    assert_eq!((counts.imported, counts.duplicates), (50, 0));
    assert_eq!(db.store.stock(product).await.unwrap().available, 50);
}

/// An import cut off after it claimed its batch for the commit (a part of
/// its codes may be on sale) is whole: an abort leaves it and says so, and
/// the reaper makes the rest sellable and names its product, whose stock
/// the gate must then re-read.
async fn a_claimed_import_is_finished_not_aborted(backend: Backend) {
    let db = open(backend).await;
    let product = product_with_codes(&db, 0).await;
    let (batch, lease) = db.store.begin_import(product).await.unwrap();
    let cards: Vec<NewCard> = (0..7)
        .map(|_| card(&rand::thread_rng().gen::<[u8; 32]>()))
        .collect();
    db.store.stage_cards(batch, product, &cards).await.unwrap();
    // The claim `commit_import` makes first, and then nothing: the
    // importer died before its first chunk.
    sqlx::query("UPDATE card_batches SET status = 'committing' WHERE id = $1")
        .bind(batch)
        .execute(&db.check)
        .await
        .unwrap();
    assert!(
        !db.store.abort_import(batch).await.unwrap(),
        "a claimed batch was aborted"
    );
    assert_eq!(db.store.stock(product).await.unwrap().available, 0);
    drop(lease);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let reaped = loop {
        let reaped = db.store.reap_stale_imports(now_millis() + 1).await.unwrap();
        if !reaped.finished.is_empty() {
            break reaped;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dead import was never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        reaped,
        Reaped {
            aborted: 0,
            finished: vec![product]
        }
    );
    assert_eq!(db.store.stock(product).await.unwrap().available, 7);
    assert_invariants(&db, product, 7).await;
    // Finished once: the next reaper finds nothing.
    assert_eq!(
        db.store.reap_stale_imports(now_millis() + 1).await.unwrap(),
        Reaped::default()
    );
}

/// An import taken for dead while it was in fact still staging (its lock
/// lost): its commit is refused, and the abort that follows takes what it
/// staged after the reaper's abort too, so a later import of those codes
/// is not told they are duplicates.
async fn an_import_aborted_under_its_importer_leaves_nothing_behind(backend: Backend) {
    let db = open(backend).await;
    let product = product_with_codes(&db, 0).await;
    let (batch, first_lease) = db.store.begin_import(product).await.unwrap();
    let fp: [u8; 32] = rand::thread_rng().gen();
    db.store.abort_import(batch).await.unwrap();
    db.store
        .stage_cards(batch, product, &[card(&fp)])
        .await
        .unwrap();
    assert!(db
        .store
        .commit_import(batch, product, &ImportCounts::default())
        .await
        .is_err());
    db.store.abort_import(batch).await.unwrap();
    assert_eq!(db.store.stock(product).await.unwrap().available, 0);
    drop(first_lease); // one import into a product at a time
    let (again, _again_lease) = db.store.begin_import(product).await.unwrap();
    assert_eq!(
        db.store
            .stage_cards(again, product, &[card(&fp)])
            .await
            .unwrap(),
        1,
        "the orphaned code counted as a duplicate"
    );
}

/// One import holding the same code twice in a statement's chunk, twice
/// across chunks, and a code sold earlier: each new code is stored once, and
/// on PostgreSQL every stored code has its fingerprint (migration 0009).
async fn duplicates_within_an_import_are_stored_once(backend: Backend) {
    let db = open(backend).await;
    let (product, order) = product_with_an_order(&db, 1).await;
    let earlier: Vec<u8> = sqlx::query_scalar(&format!(
        "SELECT fingerprint FROM cards WHERE order_id = {}",
        order.id
    ))
    .fetch_one(&db.check)
    .await
    .unwrap();

    let fresh: Vec<[u8; 32]> = (0..1500).map(|_| rand::thread_rng().gen()).collect();
    let mut cards: Vec<NewCard> = fresh.iter().map(|fp| card(fp)).collect();
    cards.insert(10, card(&fresh[3])); // twice in the first chunk
    cards.push(card(&fresh[5])); // again in the second chunk
    cards.push(card(&earlier)); // reserved by the order above
    let (batch, _batch_lease) = db.store.begin_import(product).await.unwrap();
    let staged = db.store.stage_cards(batch, product, &cards).await.unwrap();
    assert_eq!(staged, 1500, "a duplicate was staged or a code was lost");
    db.store
        .commit_import(batch, product, &ImportCounts::default())
        .await
        .unwrap();
    assert_eq!(db.store.stock(product).await.unwrap().available, 1500);
    let stored: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(DISTINCT fingerprint) FROM cards WHERE product_id = {product}"
    ))
    .fetch_one(&db.check)
    .await
    .unwrap();
    let rows: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM cards WHERE product_id = {product}"
    ))
    .fetch_one(&db.check)
    .await
    .unwrap();
    assert_eq!((stored, rows), (1501, 1501));
    if backend == Backend::Postgres {
        let unmatched: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM cards c FULL JOIN card_fingerprints f \
             ON f.product_id = c.product_id AND f.fingerprint = c.fingerprint \
             WHERE c.id IS NULL OR f.product_id IS NULL",
        )
        .fetch_one(&db.check)
        .await
        .unwrap();
        assert_eq!(unmatched, 0, "codes and fingerprints disagree");
    }
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

/// Periodic work that finds nothing due takes no write lock: with another
/// connection holding SQLite's write lock, a job poll and an expiry sweep
/// answer at once, where they used to wait the lock out (the busy timeout
/// is 10 s); once the lock is free, what falls due is still done.
#[tokio::test]
async fn idle_periodic_work_takes_no_write_lock_sqlite() {
    let db = open(Backend::Sqlite).await;
    let job = NewJob {
        kind: "test".into(),
        payload: "{}".into(),
        run_at: now_millis() + 60_000,
        dedupe_key: None,
        max_attempts: 3,
    };
    db.store.enqueue_job(&job).await.unwrap();
    let (product, order) = product_with_an_order(&db, 1).await;

    let mut holder = db.check.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let quickly = std::time::Duration::from_secs(2);
    let poll = db.store.claim_jobs("w", now_millis(), 30_000, 10);
    let claimed = tokio::time::timeout(quickly, poll)
        .await
        .expect("a job poll with nothing due waited for the write lock")
        .unwrap();
    assert!(claimed.is_empty());
    let sweep = db.store.expire_due_orders(now_millis(), 100);
    let expired = tokio::time::timeout(quickly, sweep)
        .await
        .expect("an expiry sweep with nothing due waited for the write lock")
        .unwrap();
    assert!(expired.is_empty());
    sqlx::query("COMMIT").execute(&mut *holder).await.unwrap();
    drop(holder);

    let later = now_millis() + 120_000;
    let claimed = db.store.claim_jobs("w", later, 30_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "the job fell due and was not claimed");
    let expired = db.store.expire_due_orders(later, 100).await.unwrap();
    assert_eq!(
        expired.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![order.id],
        "the order fell due and did not expire"
    );
    assert_invariants(&db, product, 1).await;
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

/// A retried notification and a reconciliation's answer saying the same
/// "not paid yet" at once: the order's timeline notes it once, and another
/// status is noted again.
async fn racing_notes_of_one_event_store_it_once(backend: Backend) {
    let db = open(backend).await;
    let (_, order) = product_with_an_order(&db, 1).await;
    let note = |detail: &str| NewEvent {
        order_id: Some(order.id),
        order_no: Some(order.order_no.clone()),
        kind: "notify_unpaid".into(),
        detail: detail.into(),
        at: now_millis(),
    };
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = db.store.clone();
            let ev = note("stripe reported status unpaid");
            tokio::spawn(async move { store.record_event_once(&ev).await.unwrap() })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        stored += usize::from(t.await.unwrap());
    }
    assert_eq!(stored, 1, "the same note was stored {stored} times");
    assert!(db
        .store
        .record_event_once(&note("stripe reported status expired"))
        .await
        .unwrap());
    let kinds: Vec<String> = db
        .store
        .order_events(order.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "notify_unpaid")
        .map(|e| e.detail)
        .collect();
    assert_eq!(
        kinds,
        [
            "stripe reported status unpaid",
            "stripe reported status expired"
        ]
    );
}

both_backends!(
    restocks_and_late_payments_racing_leave_no_code_beside_a_waiting_buyer,
    an_import_beside_one_that_fails_stores_every_code,
    a_claimed_import_is_finished_not_aborted,
    racing_notes_of_one_event_store_it_once,
    payments_race_expiry_and_new_buyers,
    racing_imports_store_each_code_once,
    aborted_import_leaves_nothing,
    an_import_aborted_under_its_importer_leaves_nothing_behind,
    duplicates_within_an_import_are_stored_once,
    job_claims_are_exclusive,
    one_payment_attempt_per_order,
);

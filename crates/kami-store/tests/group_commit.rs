//! The group-commit writer under racing buyers, on both backends: batched
//! orders keep every invariant, each buyer gets their own outcome, and a
//! full queue refuses before anything is written.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use kami_core::now_millis;
use kami_store::*;

type Outcome = Result<Result<Order, CreateOrderError>>;

fn writer(db: &Db, queue: usize, writers: usize) -> Arc<GroupCommit<NewOrder, Outcome>> {
    let store = db.store.clone();
    Arc::new(GroupCommit::spawn(
        WriterConfig {
            queue,
            max_batch: 64,
            writers,
            // As the server runs PostgreSQL's writers.
            even_shares: db.store.backend() == Backend::Postgres,
        },
        move |batch: Vec<NewOrder>| {
            let store = store.clone();
            async move { store.create_orders(&batch).await }
        },
        |_| {},
    ))
}

/// 500 buyers (250 emails, two orders each, limit 3 per email, quantity 1
/// or 2) race for 300 codes through the batched writer.
async fn five_hundred_buyers_through_the_batched_writer_keep_every_invariant(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 300).await;
    let w = writer(&db, 1000, if backend == Backend::Sqlite { 1 } else { 4 });
    let mut tasks = Vec::new();
    for i in 0..500 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let mut o = new_order(pid, 1 + (i % 2), 60_000);
            o.email = format!("buyer{}@x.test", i % 250);
            o.per_buyer_limit = Some(3);
            let q = o.quantity;
            let email = o.email.clone();
            (email, q, w.submit(o).await.expect("queue has room"))
        }));
    }
    let mut held: HashMap<String, i64> = HashMap::new();
    let (mut reserved, mut refused_stock) = (0, 0);
    for t in tasks {
        let (email, q, out) = t.await.unwrap();
        match out.expect("no database error") {
            Ok(order) => {
                assert_eq!(order.quantity, q);
                *held.entry(email).or_default() += q;
                reserved += q;
            }
            Err(CreateOrderError::SoldOut | CreateOrderError::InsufficientStock { .. }) => {
                refused_stock += 1
            }
            Err(CreateOrderError::LimitExceeded) => {}
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    // 250 emails × 3 = 750 > 300 codes: the drop sells out.
    assert_eq!(reserved, 300, "every code reserved exactly once");
    assert!(refused_stock > 0, "late buyers were told sold out");
    assert!(
        held.values().all(|&n| n <= 3),
        "per-buyer limit held: {held:?}"
    );
    assert_eq!(db.store.stock(pid).await.unwrap().reserved, 300);
    assert_invariants(&db, pid, 300).await;
}

/// A full queue answers `Overloaded` at once; every request it accepted is
/// committed and answered, and nothing else exists in the database.
async fn a_full_queue_refuses_and_loses_nothing_it_accepted(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 1000).await;
    let w = writer(&db, 2, 1);
    let mut tasks = Vec::new();
    for _ in 0..400 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let o = new_order(pid, 1, 60_000);
            let no = o.order_no.clone();
            (no, w.submit(o).await)
        }));
    }
    let (mut accepted, mut shed) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            (no, Ok(out)) => {
                let order = out.unwrap().expect("stock is plenty");
                assert_eq!(order.order_no, no);
                accepted.push(no);
            }
            (_, Err(SubmitError::Overloaded)) => shed += 1,
            (_, Err(e)) => panic!("{e}"),
        }
    }
    assert!(shed > 0, "a queue of 2 must shed some of 400 racing buyers");
    let in_db: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE product_id = $1")
        .bind(pid)
        .fetch_one(&db.check)
        .await
        .unwrap();
    assert_eq!(
        in_db as usize,
        accepted.len(),
        "exactly the accepted orders exist"
    );
    for no in &accepted {
        assert!(db.store.get_order(no).await.unwrap().is_some());
    }
    assert_invariants(&db, pid, 1000).await;
}

/// One buyer's refusal inside a batch fails nobody else in it.
async fn a_refused_order_in_a_batch_fails_no_other(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 3).await;
    let limited = |email: &str, q: i64| {
        let mut o = new_order(pid, q, 60_000);
        o.email = email.into();
        o.per_buyer_limit = Some(1);
        o
    };
    let batch = vec![
        limited("a@x.test", 1),
        limited("a@x.test", 1), // over a's limit
        limited("b@x.test", 2), // over the limit outright
        limited("c@x.test", 1),
        limited("d@x.test", 1),
        limited("e@x.test", 1), // no stock left
    ];
    let out: Vec<_> = db
        .store
        .create_orders(&batch)
        .await
        .into_iter()
        .map(|r| r.unwrap().map(|o| o.order_no))
        .collect();
    assert_eq!(out[0].as_ref().unwrap(), &batch[0].order_no);
    assert_eq!(out[1], Err(CreateOrderError::LimitExceeded));
    assert_eq!(out[2], Err(CreateOrderError::LimitExceeded));
    assert_eq!(out[3].as_ref().unwrap(), &batch[3].order_no);
    assert_eq!(out[4].as_ref().unwrap(), &batch[4].order_no);
    assert_eq!(out[5], Err(CreateOrderError::SoldOut));
    assert_invariants(&db, pid, 3).await;
    assert_eq!(db.store.stock(pid).await.unwrap().reserved, 3);
}

/// A retried request (same Idempotency-Key) in the same batch as its twin
/// hears "replay that order", never a refusal of its own, even where the
/// per-buyer limit or the stock would refuse it; a refused keyed order
/// leaves its key free.
async fn a_retried_request_in_a_batch_is_told_to_replay_its_twin(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 2).await;
    let keyed = |key: &str, email: &str| {
        let mut o = new_order(pid, 1, 60_000);
        o.email = email.into();
        o.per_buyer_limit = Some(1);
        o.idempotency = Some(IdempotencyRecord {
            scope: "POST /api/v1/orders".into(),
            key: key.into(),
            request_hash: vec![7; 32],
            status_code: 201,
            response: vec![1, 2, 3],
            response_nonce: vec![0; 12],
            created_at: now_millis(),
        });
        o
    };
    let batch = vec![
        keyed("retry-1", "a@x.test"),
        keyed("retry-1", "a@x.test"), // the client's retry: over a's limit too
        keyed("other", "b@x.test"),
        keyed("refused", "c@x.test"), // no stock left
    ];
    let out: Vec<_> = db
        .store
        .create_orders(&batch)
        .await
        .into_iter()
        .map(|r| r.unwrap().map(|o| o.order_no))
        .collect();
    assert_eq!(out[0].as_ref().unwrap(), &batch[0].order_no);
    assert_eq!(out[1], Err(CreateOrderError::IdempotencyKeyTaken));
    assert_eq!(out[2].as_ref().unwrap(), &batch[2].order_no);
    assert_eq!(out[3], Err(CreateOrderError::SoldOut));
    let scope = "POST /api/v1/orders";
    assert!(db
        .store
        .get_idempotency(scope, "retry-1")
        .await
        .unwrap()
        .is_some());
    assert!(
        db.store
            .get_idempotency(scope, "refused")
            .await
            .unwrap()
            .is_none(),
        "a refused order's key was kept"
    );
    assert_invariants(&db, pid, 2).await;
}

/// Idempotency keys past their time go, a limited number per call; newer
/// ones stay.
async fn keys_older_than_the_cutoff_are_forgotten(backend: Backend) {
    let db = open(backend).await;
    let key = |k: &str, at: i64| IdempotencyRecord {
        scope: "POST /test".into(),
        key: k.into(),
        request_hash: vec![1],
        status_code: 200,
        response: vec![2],
        response_nonce: vec![3],
        created_at: at,
    };
    for (k, at) in [
        ("old-1", 1_000),
        ("old-2", 2_000),
        ("old-3", 3_000),
        ("new", 9_000),
    ] {
        assert!(db.store.put_idempotency(&key(k, at)).await.unwrap());
    }
    assert_eq!(db.store.prune_idempotency(5_000, 2).await.unwrap(), 2);
    assert_eq!(db.store.prune_idempotency(5_000, 2).await.unwrap(), 1);
    assert_eq!(db.store.prune_idempotency(5_000, 2).await.unwrap(), 0);
    for k in ["old-1", "old-2", "old-3"] {
        assert!(db
            .store
            .get_idempotency("POST /test", k)
            .await
            .unwrap()
            .is_none());
    }
    assert!(db
        .store
        .get_idempotency("POST /test", "new")
        .await
        .unwrap()
        .is_some());
}

/// One payment batch's outcomes, none of them a database error.
async fn paid(db: &Db, batch: &[NewPayment]) -> Vec<PayOutcome> {
    db.store
        .pay_orders(batch)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// A trade number names one payment: in one batch (after the order that
/// wrote it, its twin, another order's claim to it) and in a later batch,
/// another order's payment under it is refused and changes nothing.
async fn a_trade_number_stored_for_one_order_pays_no_other(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 6).await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        let o = db.store.create_order(&new_order(pid, 1, 60_000)).await;
        orders.push(o.unwrap().unwrap());
    }
    let batch = vec![
        payment(&orders[0], "same"),
        payment(&orders[1], "same"),
        payment(&orders[0], "same"),
        payment(&orders[2], "own"),
    ];
    let out = paid(&db, &batch).await;
    assert_eq!(
        out,
        [
            PayOutcome::Delivered,
            PayOutcome::TradeNoTaken,
            PayOutcome::Duplicate,
            PayOutcome::Delivered
        ]
    );
    // Later, alone and in a batch: the same answers.
    let later = vec![payment(&orders[1], "same"), payment(&orders[0], "same")];
    let out = paid(&db, &later).await;
    assert_eq!(out, [PayOutcome::TradeNoTaken, PayOutcome::Duplicate]);
    assert_eq!(
        db.store
            .pay_order(&payment(&orders[1], "own"))
            .await
            .unwrap(),
        PayOutcome::TradeNoTaken
    );
    let o1 = db
        .store
        .get_order(&orders[1].order_no)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o1.status.0, kami_core::OrderStatus::Pending);
    let s = db.store.stock(pid).await.unwrap();
    assert_eq!((s.available, s.reserved, s.sold), (3, 1, 2));
    assert_invariants(&db, pid, 6).await;
}

/// Payments in one batch: twins of a notification, and a second payment
/// for an order the batch already delivered, each get their own outcome.
async fn a_payment_batch_with_twins_delivers_each_order_once(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 10).await;
    let mut orders = Vec::new();
    for _ in 0..5 {
        let o = db.store.create_order(&new_order(pid, 2, 60_000)).await;
        orders.push(o.unwrap().unwrap());
    }
    let mut batch = Vec::new();
    for (i, o) in orders.iter().enumerate() {
        batch.push(payment(o, &format!("t{i}")));
        batch.push(payment(o, &format!("t{i}")));
    }
    batch.push(payment(&orders[0], "another"));
    let out = paid(&db, &batch).await;
    for i in 0..5 {
        assert_eq!(out[2 * i], PayOutcome::Delivered, "{out:?}");
        assert_eq!(out[2 * i + 1], PayOutcome::Duplicate, "{out:?}");
    }
    assert_eq!(out[10], PayOutcome::AlreadyPaid);
    // The timeline names the payment that paid (the first to arrive, t0),
    // then the extra one, whatever order the rows were stored in
    // (PostgreSQL stores "another" first).
    let events = db.store.order_events(orders[0].id).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["created", "paid", "delivered", "payment_for_paid_order"],
        "{events:?}"
    );
    assert!(events[1].detail.ends_with("trade t0"), "{events:?}");
    assert!(events[3].detail.contains("trade another"), "{events:?}");
    let again = db.store.pay_orders(&batch).await;
    assert!(again
        .into_iter()
        .all(|r| r.unwrap() == PayOutcome::Duplicate));
    assert_eq!(db.store.stock(pid).await.unwrap().sold, 10);
    assert_invariants(&db, pid, 10).await;
}

/// Orders of several codes each, paid in one batch: each is delivered with
/// every one of its codes sold and none of another order's (on SQLite the
/// writer thread sells them code by code).
async fn a_payment_batch_sells_every_code_of_each_order(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 12).await;
    let batch: Vec<NewOrder> = [3, 1, 2, 3]
        .iter()
        .map(|&q| new_order(pid, q, 60_000))
        .collect();
    for r in db.store.create_orders(&batch).await {
        r.unwrap().expect("stock for every order");
    }
    let orders = read_orders(&db, &batch).await;
    let payments: Vec<NewPayment> = orders
        .iter()
        .map(|o| payment(o, &format!("multi-{}", o.id)))
        .collect();
    for r in db.store.pay_orders(&payments).await {
        assert_eq!(r.unwrap(), PayOutcome::Delivered);
    }
    for o in &orders {
        let statuses: Vec<String> =
            sqlx::query_scalar("SELECT status FROM cards WHERE order_id = $1")
                .bind(o.id)
                .fetch_all(&db.check)
                .await
                .unwrap();
        assert_eq!(
            statuses,
            vec!["sold"; o.quantity as usize],
            "order {}",
            o.id
        );
        let read = db.store.get_order(&o.order_no).await.unwrap().unwrap();
        assert_eq!(read.status.0, kami_core::OrderStatus::Delivered);
    }
    assert_eq!(db.store.stock(pid).await.unwrap().sold, 9);
    assert_invariants(&db, pid, 12).await;
}

/// A batch's rows land exactly as written, whatever they hold: bytes of
/// every value, quotes, backslashes, commas, newlines and non-ASCII text
/// (PostgreSQL carries a batch's rows as one JSON parameter, SQLite binds
/// them one by one on its writer thread).
async fn batched_rows_keep_every_field_as_written(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 10).await;
    let tricky = "a,b \"q\" 'x' \\ \n 雪 $1 ?";
    let batch: Vec<NewOrder> = (0..4u8)
        .map(|i| {
            let mut o = new_order(pid, 1, 60_000);
            o.email = format!("{tricky}{i}@x.test");
            o.access_token_hash = (0..=255u8).rev().map(|b| b ^ i).collect();
            o.query_password_hash = (i % 2 == 0).then(|| vec![0, i, 255]);
            o.buyer_ip = (i % 2 == 1).then(|| format!("2001:db8::{i}"));
            o.per_buyer_limit = Some(5);
            o
        })
        .collect();
    let created = db.store.create_orders(&batch).await;
    for (o, out) in batch.iter().zip(created) {
        let got = out.unwrap().unwrap();
        let read = db.store.get_order(&o.order_no).await.unwrap().unwrap();
        for order in [&got, &read] {
            assert_eq!(order.email, o.email);
            assert_eq!(order.access_token_hash, o.access_token_hash);
            assert_eq!(order.has_query_password, o.query_password_hash.is_some());
            assert_eq!(order.buyer_ip, o.buyer_ip);
            assert_eq!(
                (order.amount, order.created_at, order.expires_at),
                (o.amount, o.created_at, o.expires_at)
            );
            assert_eq!(order.limit_holds, o.limit_holds());
        }
    }
    let orders: Vec<Order> = read_orders(&db, &batch).await;
    let payments: Vec<NewPayment> = orders
        .iter()
        .map(|o| {
            let mut p = payment(o, &format!("{tricky}{}", o.id));
            p.raw = format!("{{\"order\": \"{}\", \"note\": \"{tricky}\"}}", o.order_no);
            p
        })
        .collect();
    let paid = db.store.pay_orders(&payments).await;
    assert!(paid
        .into_iter()
        .all(|r| r.unwrap() == PayOutcome::Delivered));
    for p in &payments {
        let raw: String = sqlx::query_scalar("SELECT raw FROM payments WHERE order_id = $1")
            .bind(p.order_id)
            .fetch_one(&db.check)
            .await
            .unwrap();
        assert_eq!(raw, p.raw);
        let events = db.store.order_events(p.order_id).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["created", "paid", "delivered"]);
        assert!(events[1].detail.contains(&p.trade_no), "{:?}", events[1]);
    }
    assert_invariants(&db, pid, 10).await;
}

async fn read_orders(db: &Db, batch: &[NewOrder]) -> Vec<Order> {
    let mut out = Vec::new();
    for o in batch {
        out.push(db.store.get_order(&o.order_no).await.unwrap().unwrap());
    }
    out
}

/// One batch of several products' orders of several quantities, on stock
/// imported in turns (so each product's codes are not one run of ids), and
/// on PostgreSQL with fresh statistics (`ANALYZE`, as autovacuum leaves
/// them): each order gets exactly its quantity of its own product's codes,
/// each product's lowest ids first, whatever plan the claim ran with.
async fn a_batch_of_several_products_claims_each_its_own_codes(backend: Backend) {
    let db = open(backend).await;
    let a = product_with_codes(&db, 4).await;
    let b = product_with_codes(&db, 4).await;
    let c = product_with_codes(&db, 4).await;
    restock(&db, a, 4).await;
    restock(&db, b, 4).await;
    restock(&db, c, 4).await;
    if backend == Backend::Postgres {
        sqlx::query("ANALYZE").execute(&db.check).await.unwrap();
    }
    // a: 1 + 3 + 2 = 6 of 8; b: 2 + 1 + 2 = 5 of 8; c: 1 + 3 = 4 of 8.
    let wants = [
        (a, 1),
        (b, 2),
        (a, 3),
        (c, 1),
        (b, 1),
        (a, 2),
        (c, 3),
        (b, 2),
    ];
    let batch: Vec<NewOrder> = wants
        .iter()
        .map(|&(p, q)| new_order(p, q, 60_000))
        .collect();
    for r in db.store.create_orders(&batch).await {
        r.unwrap().expect("stock for every order");
    }
    let orders = read_orders(&db, &batch).await;
    if backend == Backend::Postgres {
        // One transaction wrote them all: the set-based claim served the
        // batch, rather than the one-order-at-a-time replay any short claim
        // falls back to.
        let numbers: Vec<&str> = orders.iter().map(|o| o.order_no.as_str()).collect();
        let writers = transactions_that_wrote(&db, &numbers).await;
        assert_eq!(writers, 1, "the batch was replayed order by order");
    }
    for (o, &(product, quantity)) in orders.iter().zip(&wants) {
        let held: Vec<i64> = sqlx::query_scalar(
            "SELECT product_id FROM cards WHERE order_id = $1 AND status = 'reserved'",
        )
        .bind(o.id)
        .fetch_all(&db.check)
        .await
        .unwrap();
        assert_eq!(held, vec![product; quantity as usize], "order {}", o.id);
    }
    for (product, taken) in [(a, 6), (b, 5), (c, 4)] {
        let ids = |status: &'static str| {
            sqlx::query_scalar::<_, i64>(
                "SELECT id FROM cards WHERE product_id = $1 AND status = $2 ORDER BY id",
            )
            .bind(product)
            .bind(status)
            .fetch_all(&db.check)
        };
        let (reserved, available) = (
            ids("reserved").await.unwrap(),
            ids("available").await.unwrap(),
        );
        assert_eq!(reserved.len(), taken);
        assert!(
            reserved.last() < available.first(),
            "the lowest ids went first: {reserved:?} {available:?}"
        );
        assert_invariants(&db, product, 8).await;
    }
}

/// The timeline of an order written before stop 24, whose `created`,
/// `paid` and `delivered` events are rows, shows each once; one written
/// since shows the same from the order's row and its payment.
async fn stored_and_derived_lifecycle_entries_read_alike(backend: Backend) {
    let db = open(backend).await;
    let (pid, old) = product_with_an_order(&db, 4).await;
    let new = db
        .store
        .create_order(&new_order(pid, 1, 60_000))
        .await
        .unwrap()
        .unwrap();
    let out = db
        .store
        .pay_orders(&[payment(&old, "t-old"), payment(&new, "t-new")])
        .await;
    assert!(out.into_iter().all(|r| r.unwrap() == PayOutcome::Delivered));
    // As the writers stored them until stop 24.
    let o = db.store.get_order(&old.order_no).await.unwrap().unwrap();
    for (kind, detail, at) in [
        ("created", "stored: created".to_string(), o.created_at),
        ("paid", "stored: paid".to_string(), o.paid_at.unwrap()),
        ("delivered", String::new(), o.delivered_at.unwrap()),
    ] {
        sqlx::query(
            "INSERT INTO order_events (merchant_id, order_id, order_no, kind, detail, created_at) \
             VALUES (1, $1, $2, $3, $4, $5)",
        )
        .bind(old.id)
        .bind(&old.order_no)
        .bind(kind)
        .bind(detail)
        .bind(at)
        .execute(&db.check)
        .await
        .unwrap();
    }
    for (order, paid) in [(&old, "stored: paid"), (&new, "via sandbox trade t-new")] {
        for events in [
            db.store.order_events(order.id).await.unwrap(),
            db.store.events_for_order_no(&order.order_no).await.unwrap(),
        ] {
            let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
            assert_eq!(kinds, ["created", "paid", "delivered"], "{events:?}");
            assert!(events[1].detail.ends_with(paid), "{events:?}");
            assert!(events
                .iter()
                .all(|e| e.order_no.as_deref() == Some(&order.order_no[..])));
        }
    }
    // What the new order's row says, entry by entry.
    let n = db.store.get_order(&new.order_no).await.unwrap().unwrap();
    let events = db.store.order_events(new.id).await.unwrap();
    let entries: Vec<(&str, &str, i64)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.detail.as_str(), e.created_at))
        .collect();
    let paid = format!("{} {} via sandbox trade t-new", n.amount, n.currency);
    assert_eq!(
        entries,
        [
            (
                "created",
                "reserved 1 code(s) until expiry; channel sandbox",
                n.created_at
            ),
            ("paid", paid.as_str(), n.paid_at.unwrap()),
            ("delivered", "", n.delivered_at.unwrap()),
        ]
    );
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM order_events WHERE order_id = $1")
        .bind(new.id)
        .fetch_one(&db.check)
        .await
        .unwrap();
    assert_eq!(
        stored, 0,
        "a drop's order and its payment store no timeline rows"
    );
}

/// Codes that come back below where the last batch found a product's first
/// available code (an expired order's) are sold to the next batch, not
/// refused as sold out: PostgreSQL's batches start counting at that hint
/// (`batch::StockFloors`) and count again from the first code when the
/// stock above it runs short.
async fn codes_released_below_the_last_batch_are_sold_again(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 10).await;
    // Two batches take the ten codes; the first batch's orders expire at once.
    let first: Vec<NewOrder> = (0..5).map(|_| new_order(pid, 1, 1)).collect();
    let second: Vec<NewOrder> = (0..5).map(|_| new_order(pid, 1, 60_000)).collect();
    for batch in [&first, &second] {
        for out in db.store.create_orders(batch).await {
            out.expect("no database error").expect("granted");
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let expired = db.store.expire_due_orders(now_millis(), 100).await.unwrap();
    assert_eq!(expired.len(), 5, "the first batch's orders expired");
    // The five codes back are the lowest ids, below the last batch's hint.
    let again: Vec<NewOrder> = (0..5).map(|_| new_order(pid, 1, 60_000)).collect();
    let outs = db.store.create_orders(&again).await;
    for out in &outs {
        assert!(
            matches!(out, Ok(Ok(_))),
            "a released code is sold again: {outs:?}"
        );
    }
    let sixth = db.store.create_orders(&[new_order(pid, 1, 60_000)]).await;
    assert!(
        matches!(sixth[0], Ok(Err(CreateOrderError::SoldOut))),
        "{sixth:?}"
    );
    assert_invariants(&db, pid, 10).await;
}

/// PostgreSQL writes a batch of plain orders (a drop's: no limit, coupon
/// or `Idempotency-Key`) in one round trip (`kami_reserve_orders`); a batch
/// it cannot fill whole it leaves unwritten to the counted path, which
/// answers each order on its own; a batch with a limit goes the counted
/// path. SQLite's all go to its writer thread.
async fn each_batch_takes_the_path_its_orders_need(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 5).await;
    let pg = backend == Backend::Postgres;
    let paths = |one_trip, counted| {
        if pg {
            OrderBatchPaths {
                one_trip,
                counted,
                ..Default::default()
            }
        } else {
            OrderBatchPaths {
                writer_thread: one_trip + counted,
                ..Default::default()
            }
        }
    };
    let plain: Vec<NewOrder> = (0..3).map(|_| new_order(pid, 1, 60_000)).collect();
    for out in db.store.create_orders(&plain).await {
        out.unwrap().expect("granted");
    }
    assert_eq!(db.store.order_batch_paths(), paths(1, 0));
    // Two codes left, three asked: the first order granted, the second
    // told how many are left, whichever path answered.
    let short = [new_order(pid, 1, 60_000), new_order(pid, 2, 60_000)];
    let out = db.store.create_orders(&short).await;
    assert!(matches!(out[0], Ok(Ok(_))), "{out:?}");
    assert!(
        matches!(
            out[1],
            Ok(Err(CreateOrderError::InsufficientStock { available: 1 }))
        ),
        "{out:?}"
    );
    assert_eq!(db.store.order_batch_paths(), paths(1, 1));
    let mut limited = [new_order(pid, 1, 60_000), new_order(pid, 1, 60_000)];
    for o in &mut limited {
        o.per_buyer_limit = Some(1);
    }
    let out = db.store.create_orders(&limited).await;
    assert!(matches!(out[0], Ok(Ok(_))), "{out:?}");
    assert!(
        matches!(out[1], Ok(Err(CreateOrderError::SoldOut))),
        "{out:?}"
    );
    assert_eq!(db.store.order_batch_paths(), paths(1, 2));
    assert_invariants(&db, pid, 5).await;
}

/// A one-trip batch that fails part-way (here an order the database
/// refuses) leaves nothing behind: no order and no reserved code of the
/// batch, which is then replayed order by order, every other order served.
async fn a_failed_one_trip_batch_writes_nothing() {
    let db = open(Backend::Postgres).await;
    let pid = product_with_codes(&db, 6).await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.email LIKE 'refused%' THEN RAISE EXCEPTION 'refused by the test'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_marked BEFORE INSERT ON orders FOR EACH ROW \
         EXECUTE FUNCTION refuse_marked();",
    )
    .execute(&db.check)
    .await
    .unwrap();
    let mut batch: Vec<NewOrder> = (0..4).map(|_| new_order(pid, 1, 60_000)).collect();
    batch[2].email = "refused@x.test".into();
    let out = db.store.create_orders(&batch).await;
    assert!(out[2].is_err(), "the refused order fails: {out:?}");
    for i in [0, 1, 3] {
        assert!(matches!(out[i], Ok(Ok(_))), "order {i}: {out:?}");
    }
    assert_eq!(
        db.store.order_batch_paths(),
        OrderBatchPaths {
            one_by_one: 1,
            ..Default::default()
        },
        "the one-trip batch and the counted one both failed"
    );
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&db.check)
        .await
        .unwrap();
    assert_eq!(orders, 3, "the failed batches left no order behind");
    assert_invariants(&db, pid, 6).await;
    assert_eq!(db.store.stock(pid).await.unwrap().reserved, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_failed_one_trip_batch_writes_nothing() {
    a_failed_one_trip_batch_writes_nothing().await
}

/// PostgreSQL: `warm_up` opens the connections asked and readies each
/// for a drop without writing anything; the connections stay open, and
/// once their backends are gone (a server restart), those idle for a
/// second are found dead by a ping and replaced: the next batch is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_warmed_connections_stay_and_dead_ones_are_replaced() {
    let db = open(Backend::Postgres).await;
    let pid = product_with_codes(&db, 10).await;
    db.store.warm_up(6).await.unwrap();
    let sessions = "FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'kami'";
    let open: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) {sessions}"))
        .fetch_one(&db.check)
        .await
        .unwrap();
    assert!(open >= 6, "{open} connections open");
    let (orders, drawn): (i64, bool) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM orders), (SELECT is_called FROM orders_id_seq)",
    )
    .fetch_one(&db.check)
    .await
    .unwrap();
    assert_eq!((orders, drawn), (0, false), "readying wrote nothing");
    assert_eq!(db.store.stock(pid).await.unwrap().available, 10);
    sqlx::query(&format!("SELECT pg_terminate_backend(pid) {sessions}"))
        .execute(&db.check)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let batch: Vec<NewOrder> = (0..3).map(|_| new_order(pid, 1, 60_000)).collect();
    for out in db.store.create_orders(&batch).await {
        out.unwrap().expect("granted on a fresh connection");
    }
    assert_eq!(db.store.order_batch_paths().one_trip, 1);
    assert_invariants(&db, pid, 10).await;
}

both_backends!(
    each_batch_takes_the_path_its_orders_need,
    codes_released_below_the_last_batch_are_sold_again,
    stored_and_derived_lifecycle_entries_read_alike,
    a_batch_of_several_products_claims_each_its_own_codes,
    batched_rows_keep_every_field_as_written,
    batches_race_expiry_restock_and_single_writes,
    a_payment_batch_with_twins_delivers_each_order_once,
    a_trade_number_stored_for_one_order_pays_no_other,
    keys_older_than_the_cutoff_are_forgotten,
    a_payment_batch_sells_every_code_of_each_order,
    five_hundred_buyers_through_the_batched_writer_keep_every_invariant,
    a_full_queue_refuses_and_loses_nothing_it_accepted,
    a_refused_order_in_a_batch_fails_no_other,
    a_retried_request_in_a_batch_is_told_to_replay_its_twin,
);

/// Every kind of write at once, as in a drop that runs into its expiry
/// sweep and a restock: batched orders and batched payments (on SQLite the
/// writer thread's own connection), the expiry sweep, a restock, late
/// payments and single orders (on SQLite the sqlx connection). The two
/// SQLite write connections only ever meet through SQLite's write lock;
/// whatever interleaving it gives, the invariants hold and every accepted
/// request gets its answer.
async fn batches_race_expiry_restock_and_single_writes(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 150).await;
    let w = writer(&db, 2000, if backend == Backend::Sqlite { 2 } else { 4 });
    // Orders already due when the race starts, so the sweep surely releases
    // codes while the batches claim them. (The race's own short-lived
    // orders may all be refused on a busy machine, the batches taking the
    // stock first, and a batch's deadline row on PostgreSQL is its latest
    // expiry: the sweep met none of them once in CI.)
    for _ in 0..10 {
        let o = new_order(pid, 1, 1);
        db.store.create_order(&o).await.unwrap().unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = {
        let store = db.store.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut expired = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                expired += store
                    .expire_due_orders(now_millis(), 50)
                    .await
                    .unwrap()
                    .len();
                tokio::task::yield_now().await;
            }
            expired
        })
    };
    let mut tasks = Vec::new();
    for i in 0..400i64 {
        let w = w.clone();
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            // A third of the orders expire almost at once, so the sweep
            // releases codes while the batches claim them.
            let ttl = if i % 3 == 0 { 5 } else { 60_000 };
            let o = new_order(pid, 1 + (i % 2), ttl);
            let placed = if i % 10 == 0 {
                store.create_order(&o).await.unwrap()
            } else {
                w.submit(o).await.expect("queue has room").unwrap()
            };
            let Ok(order) = placed else { return (0, None) };
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            // Pay twice, the second time from a batch that also holds its
            // twin, and once more alone: exactly one payment may count.
            let p = payment(&order, &format!("t{i}"));
            let batch = vec![p.clone(), p.clone()];
            let mut outcomes: Vec<PayOutcome> = store
                .pay_orders(&batch)
                .await
                .into_iter()
                .map(|r| r.unwrap())
                .collect();
            outcomes.push(store.pay_order(&p).await.unwrap());
            let counted = outcomes
                .iter()
                .filter(|o| **o != PayOutcome::Duplicate)
                .count();
            assert_eq!(counted, 1, "one payment counts once: {outcomes:?}");
            (order.quantity, Some(outcomes[0]))
        }));
    }
    // A restock in the middle of the drop, through the sqlx connection.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    restock(&db, pid, 100).await;
    let mut delivered = 0;
    for t in tasks {
        if let (q, Some(PayOutcome::Delivered)) = t.await.unwrap() {
            delivered += q;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        sweeper.await.unwrap() > 0,
        "the sweep expired orders mid-drop"
    );
    assert!(delivered > 0);
    assert!(db.store.stock(pid).await.unwrap().sold >= delivered);
    assert_invariants(&db, pid, 250).await;
}

/// SQLite commits with `synchronous = NORMAL`, which a power cut can undo:
/// a payment's acknowledgement waits for a sync of the WAL (`wal_sync.rs`,
/// invariant 3). Each acknowledged payment here is followed by a sync pass
/// done while it was being answered. Orders do not wait (the background
/// checkpoint syncs them within about 100 ms), nor do refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_acknowledges_payments_once_the_wal_is_synced() {
    let db = open(Backend::Sqlite).await;
    let pid = product_with_codes(&db, 4).await;
    let single = db
        .store
        .create_order(&new_order(pid, 1, 60_000))
        .await
        .unwrap()
        .unwrap();
    let batch = db
        .store
        .create_orders(&[new_order(pid, 1, 60_000), new_order(pid, 2, 60_000)])
        .await;
    let batched: Vec<Order> = batch.into_iter().map(|r| r.unwrap().unwrap()).collect();
    let mut synced = db.store.wal_syncs();
    let mut after = |what: &str| {
        let now = db.store.wal_syncs();
        assert!(
            now > synced,
            "{what}: acknowledged without a sync of the WAL"
        );
        synced = now;
    };
    let paid = db
        .store
        .pay_orders(&[payment(&batched[0], "t-b0"), payment(&batched[1], "t-b1")])
        .await;
    assert!(paid
        .iter()
        .all(|p| *p.as_ref().unwrap() == PayOutcome::Delivered));
    after("a batch of payments");
    assert_eq!(
        db.store.pay_order(&payment(&single, "t-s")).await.unwrap(),
        PayOutcome::Delivered
    );
    after("a single payment");
    // A duplicate is acknowledged as the first was: after a sync too.
    assert_eq!(
        db.store.pay_order(&payment(&single, "t-s")).await.unwrap(),
        PayOutcome::Duplicate
    );
    after("a duplicate payment");
    // Sold out: refused, nothing written, no sync waited for.
    let refused = db.store.create_orders(&[new_order(pid, 1, 60_000)]).await;
    assert!(
        matches!(refused[0], Ok(Err(CreateOrderError::SoldOut))),
        "{refused:?}"
    );
    assert_eq!(db.store.wal_syncs(), synced, "a refusal waited for a sync");
    assert_invariants(&db, pid, 4).await;
}

/// The SQLite writer thread, the serial point of a drop, runs at nice -10
/// when the process may raise it (as root, which CI is); otherwise at the
/// default. Read back from /proc, field 19 of the thread's `stat`.
#[tokio::test]
async fn the_sqlite_writer_thread_runs_at_a_raised_priority_when_allowed() {
    let _db = open(Backend::Sqlite).await;
    let mut nices = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if comm.trim() != "kami-sqlite-wri" {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the parenthesised name: state is field 3, nice 19.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let nice: i32 = after.split(' ').nth(16).unwrap().parse().unwrap();
        nices.push(nice);
    }
    assert!(!nices.is_empty(), "the store started a writer thread");
    let expected = if rustix::process::geteuid().is_root() {
        -10
    } else {
        0
    };
    for nice in nices {
        assert!(
            nice == expected || nice == -10,
            "writer thread at nice {nice}, expected {expected}"
        );
    }
}

/// With even shares, no batch takes more than its writer's share of the
/// requests in flight, every request is answered once with its own outcome,
/// and the writers share the load: 200 requests at once through 4 writers
/// are never more than 50 to a batch (each batch is held 5 ms, so the queue
/// fills while the first ones commit). Without the cap the first writer to
/// come free takes everything queued.
#[tokio::test]
async fn even_shares_cap_each_batch_at_its_writers_share() {
    for (even_shares, capped) in [(true, true), (false, false)] {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let w = Arc::new(GroupCommit::spawn(
            WriterConfig {
                queue: 1000,
                max_batch: 256,
                writers: 4,
                even_shares,
            },
            move |batch: Vec<u32>| {
                seen.lock().unwrap().push(batch.len());
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    batch.into_iter().map(|n| n * 2).collect::<Vec<_>>()
                }
            },
            |_| {},
        ));
        let tasks: Vec<_> = (0..200u32)
            .map(|n| {
                let w = w.clone();
                tokio::spawn(async move { (n, w.submit(n).await) })
            })
            .collect();
        for t in tasks {
            let (n, out) = t.await.unwrap();
            assert_eq!(out, Ok(n * 2), "each request gets its own outcome");
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 200, "{sizes:?}");
        let largest = sizes.iter().copied().max().unwrap();
        if capped {
            assert!(largest <= 50, "a batch above its share: {sizes:?}");
        } else {
            assert!(
                largest > 50,
                "the uncapped writer took the queue: {sizes:?}"
            );
        }
        assert_eq!(w.depth(), 0);
    }
}

/// Every batch is reported once it is committed: its size, its oldest
/// request's wait for a writer, and its commit's time (`/metrics`).
#[tokio::test]
async fn each_batch_reports_its_size_wait_and_commit() {
    let stats = Arc::new(std::sync::Mutex::new(Vec::<BatchStats>::new()));
    let seen = stats.clone();
    let w = Arc::new(GroupCommit::spawn(
        WriterConfig {
            queue: 1000,
            max_batch: 16,
            writers: 1,
            even_shares: false,
        },
        |batch: Vec<u32>| async move {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            batch
        },
        move |b| seen.lock().unwrap().push(b),
    ));
    let tasks: Vec<_> = (0..40u32)
        .map(|n| {
            let w = w.clone();
            tokio::spawn(async move { w.submit(n).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = stats.lock().unwrap().clone();
    assert_eq!(stats.iter().map(|b| b.size).sum::<usize>(), 40, "{stats:?}");
    assert!(stats.iter().all(|b| b.size <= 16), "{stats:?}");
    let ms = std::time::Duration::from_millis(10);
    assert!(stats.iter().all(|b| b.took >= ms), "{stats:?}");
    // One writer, three batches at least: the last one's oldest request
    // waited for the commits before it.
    assert!(stats.len() >= 3, "{stats:?}");
    assert!(stats.last().unwrap().waited >= ms, "{stats:?}");
}

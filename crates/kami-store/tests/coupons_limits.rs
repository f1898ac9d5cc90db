//! Coupons and per-IP limits under racing buyers, on both backends: a capped
//! coupon is held by at most its cap of orders, a per-IP limit holds however
//! the buyers spread over emails, a refusal leaves nothing taken, and an
//! expired order gives back what it held (a late payment takes it again).

mod common;

use std::sync::Arc;

use common::*;
use kami_core::now_millis;
use kami_core::pricing::CouponKind;
use kami_store::*;

type Outcome = Result<Result<Order, CreateOrderError>>;

fn writer(db: &Db, writers: usize) -> Arc<GroupCommit<NewOrder, Outcome>> {
    let store = db.store.clone();
    Arc::new(GroupCommit::spawn(
        WriterConfig {
            queue: 1000,
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

fn writers_for(backend: Backend) -> usize {
    if backend == Backend::Sqlite {
        1
    } else {
        4
    }
}

async fn coupon(db: &Db, code: &str, max_uses: Option<i64>) -> Coupon {
    db.store
        .create_coupon(&NewCoupon {
            code: code.into(),
            kind: CouponKind::Percent,
            value: 10,
            currency: None,
            product_id: None,
            max_uses,
            expires_at: None,
        })
        .await
        .unwrap()
        .expect("code is new")
}

async fn used(db: &Db, code: &str) -> i64 {
    db.store.coupon_by_code(code).await.unwrap().unwrap().used
}

async fn held(db: &Db, table: &str, product_id: i64) -> i64 {
    sqlx::query_scalar::<_, i64>(&format!(
        "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM {table} WHERE product_id = $1"
    ))
    .bind(product_id)
    .fetch_one(&db.check)
    .await
    .unwrap()
}

/// 100 buyers race for a coupon capped at 10, half through the batched
/// writer and half on the single-order path at the same time.
async fn a_coupon_capped_at_ten_is_used_ten_times_by_a_hundred_racing_buyers(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 200).await;
    let c = coupon(&db, "RACE10", Some(10)).await;
    let w = writer(&db, writers_for(backend));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (w, store) = (w.clone(), db.store.clone());
        tasks.push(tokio::spawn(async move {
            let mut o = new_order(pid, 1, 60_000);
            o.coupon_id = Some(c.id);
            o.discount = 10;
            if i % 2 == 0 {
                w.submit(o).await.expect("queue has room")
            } else {
                store.create_order(&o).await
            }
        }));
    }
    let (mut granted, mut used_up) = (0, 0);
    for t in tasks {
        match t.await.unwrap().expect("no database error") {
            Ok(order) => {
                assert_eq!(order.coupon_id, Some(c.id));
                granted += 1;
            }
            Err(CreateOrderError::CouponUsedUp) => used_up += 1,
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    assert_eq!((granted, used_up), (10, 90));
    assert_eq!(used(&db, "RACE10").await, 10);
    let with_coupon: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE coupon_id = $1 AND discount = 10")
            .bind(c.id)
            .fetch_one(&db.check)
            .await
            .unwrap();
    assert_eq!(with_coupon, 10, "only granted orders exist");
    assert_eq!(db.store.stock(pid).await.unwrap().reserved, 10);
    assert_invariants(&db, pid, 200).await;
}

/// Expiry gives a coupon use and the limits back; a late payment of that
/// order takes them again, even past the cap (the buyer paid).
async fn expiry_gives_holds_back_and_a_late_payment_takes_them_again(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 10).await;
    let c = coupon(&db, "ONCE", Some(1)).await;
    let mut first = new_order(pid, 2, 50);
    first.coupon_id = Some(c.id);
    first.per_buyer_limit = Some(2);
    first.per_ip_limit = Some(2);
    first.buyer_ip = Some("2001:db8:7:7::1".into());
    let first = db.store.create_order(&first).await.unwrap().unwrap();
    assert_eq!(used(&db, "ONCE").await, 1);
    assert_eq!(held(&db, "buyer_purchases", pid).await, 2);
    assert_eq!(held(&db, "buyer_ip_purchases", pid).await, 2);

    // Another address in the same /64 is the same client for the limit.
    let mut same_net = new_order(pid, 1, 60_000);
    same_net.per_ip_limit = Some(2);
    same_net.buyer_ip = Some("2001:db8:7:7:ffff::2".into());
    assert!(matches!(
        db.store.create_order(&same_net).await.unwrap(),
        Err(CreateOrderError::LimitExceeded)
    ));

    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    let expired = db.store.expire_due_orders(now_millis(), 100).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(used(&db, "ONCE").await, 0, "the coupon use came back");
    assert_eq!(held(&db, "buyer_purchases", pid).await, 0);
    assert_eq!(held(&db, "buyer_ip_purchases", pid).await, 0);

    // Someone else uses the coupon meanwhile; then the first order is paid.
    let mut second = new_order(pid, 1, 60_000);
    second.coupon_id = Some(c.id);
    db.store.create_order(&second).await.unwrap().unwrap();
    assert_eq!(
        db.store
            .pay_order(&payment(&first, "late-1"))
            .await
            .unwrap(),
        PayOutcome::Delivered
    );
    assert_eq!(used(&db, "ONCE").await, 2, "a paid order counts its use");
    assert_eq!(held(&db, "buyer_purchases", pid).await, 2);
    assert_eq!(held(&db, "buyer_ip_purchases", pid).await, 2);
    assert_invariants(&db, pid, 10).await;
}

/// 60 buyers with 60 emails from one address race for a product limited to
/// 3 per address and 2 per email; an order refused by the address limit or
/// by a used-up coupon leaves no quantity held for its email.
async fn a_per_ip_limit_holds_across_emails_and_refusals_take_nothing(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 100).await;
    let c = coupon(&db, "FEW", Some(1)).await;
    let w = writer(&db, writers_for(backend));
    let mut tasks = Vec::new();
    for i in 0..60 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let mut o = new_order(pid, 1, 60_000);
            o.per_ip_limit = Some(3);
            o.per_buyer_limit = Some(2);
            o.buyer_ip = Some("198.51.100.7".into());
            if i % 3 == 0 {
                o.coupon_id = Some(c.id);
            }
            w.submit(o).await.expect("queue has room")
        }));
    }
    let mut granted = 0;
    for t in tasks {
        match t.await.unwrap().expect("no database error") {
            Ok(_) => granted += 1,
            Err(CreateOrderError::LimitExceeded | CreateOrderError::CouponUsedUp) => {}
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    assert_eq!(granted, 3, "three codes per address");
    assert_eq!(held(&db, "buyer_ip_purchases", pid).await, 3);
    assert_eq!(
        held(&db, "buyer_purchases", pid).await,
        3,
        "refused orders left nothing held for their emails"
    );
    assert!(used(&db, "FEW").await <= 1);
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE product_id = $1")
        .bind(pid)
        .fetch_one(&db.check)
        .await
        .unwrap();
    assert_eq!(orders, 3);
    assert_invariants(&db, pid, 100).await;
}

/// A limit set after an order was placed is not released by that order's
/// expiry: the order never counted against it.
async fn expiry_releases_only_the_limits_an_order_counted_against(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 20).await;
    let from = |q: i64, ttl: i64, limit: Option<i64>| {
        let mut o = new_order(pid, q, ttl);
        o.buyer_ip = Some("192.0.2.44".into());
        o.per_ip_limit = limit;
        o
    };
    db.store
        .create_order(&from(3, 50, None))
        .await
        .unwrap()
        .unwrap();
    db.store
        .create_order(&from(5, 60_000, Some(5)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held(&db, "buyer_ip_purchases", pid).await, 5);
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    assert_eq!(
        db.store
            .expire_due_orders(now_millis(), 100)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        held(&db, "buyer_ip_purchases", pid).await,
        5,
        "the unlimited order's expiry left the limit's count alone"
    );
    assert!(matches!(
        db.store
            .create_order(&from(1, 60_000, Some(5)))
            .await
            .unwrap(),
        Err(CreateOrderError::LimitExceeded)
    ));
    assert_invariants(&db, pid, 20).await;
}

/// One code for a buyer (`a…` or `b…`, each with an address of its own)
/// under generous per-buyer and per-address limits, with or without a coupon.
fn limited_order(pid: i64, email: &str, coupon: Option<i64>, ttl_ms: i64) -> NewOrder {
    let mut o = new_order(pid, 1, ttl_ms);
    o.email = email.into();
    o.per_buyer_limit = Some(1_000);
    o.per_ip_limit = Some(1_000);
    let ip = if email.starts_with('a') {
        "198.51.100.1"
    } else {
        "198.51.100.2"
    };
    o.buyer_ip = Some(ip.into());
    if coupon.is_some() {
        o.coupon_id = coupon;
        o.discount = 10;
    }
    o
}

/// Batches naming the same two limited buyers and one coupon in opposite
/// orders, several at once, as a scalper's retries and a launch coupon do in
/// a drop. Each order takes its buyer's row and the coupon's row; without a
/// common order of taking them, two PostgreSQL batches each hold a row the
/// other waits for, PostgreSQL aborts one after `deadlock_timeout` (a second)
/// and it is replayed order by order. Every batch must commit as one
/// transaction, and the holds must add up.
async fn batches_naming_the_same_buyers_in_opposite_orders_do_not_deadlock(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 200).await;
    let c = coupon(&db, "LAUNCH", None).await;
    let order = |email: &str, with_coupon: bool| {
        limited_order(pid, email, with_coupon.then_some(c.id), 60_000)
    };
    let started = std::time::Instant::now();
    let mut batches = Vec::new();
    for _round in 0..10 {
        let round = (0..4).map(|k| {
            let (first, second) = if k % 2 == 0 {
                ("a@x.test", "b@x.test")
            } else {
                ("b@x.test", "a@x.test")
            };
            vec![
                order(first, true),
                order(second, false),
                order(first, false),
            ]
        });
        batches.extend(race_batches(&db, round.collect()).await);
    }
    let elapsed = started.elapsed();
    assert_eq!(
        used(&db, "LAUNCH").await,
        40,
        "one use per batch's coupon order"
    );
    assert_eq!(held(&db, "buyer_purchases", pid).await, 120);
    assert_eq!(held(&db, "buyer_ip_purchases", pid).await, 120);
    assert_each_written_at_once(
        &db,
        backend,
        &batches,
        &format!("40 batches took {elapsed:?}"),
    )
    .await;
    assert_invariants(&db, pid, 200).await;
}

/// A payment batch paying two expired orders late (buyer a with the coupon,
/// then buyer b) takes their holds again while order batches for b with the
/// coupon, then a, run beside it. Locking the late payments' holds one at a
/// time, the payment batch held a's row and the coupon and waited for b's,
/// while an order batch held b's and waited for the coupon: a deadlock.
async fn late_payments_in_one_batch_do_not_deadlock_with_orders(backend: Backend) {
    const ROUNDS: i64 = 16;
    let db = open(backend).await;
    let pid = product_with_codes(&db, 200).await;
    let c = coupon(&db, "LATE", None).await;
    let mut batches = Vec::new();
    for round in 0..ROUNDS {
        // New buyers each round: their lock names sort differently.
        let (a, b) = (format!("a{round}@x.test"), format!("b{round}@x.test"));
        let late = [
            limited_order(pid, &a, Some(c.id), 20),
            limited_order(pid, &b, None, 20),
        ];
        let mut placed = Vec::new();
        for o in &late {
            placed.push(db.store.create_order(o).await.unwrap().unwrap());
        }
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        db.store.expire_due_orders(now_millis(), 100).await.unwrap();
        let payments: Vec<NewPayment> = placed
            .iter()
            .map(|o| payment(o, &format!("late-{round}-{}", o.id)))
            .collect();
        let store = db.store.clone();
        let pay = tokio::spawn(async move { store.pay_orders(&payments).await });
        let round = (0..3).map(|_| {
            vec![
                limited_order(pid, &b, Some(c.id), 60_000),
                limited_order(pid, &a, None, 60_000),
            ]
        });
        batches.extend(race_batches(&db, round.collect()).await);
        for outcome in pay.await.unwrap() {
            assert_eq!(outcome.expect("no database error"), PayOutcome::Delivered);
        }
    }
    // Per round: the late coupon order and three batches' coupon orders.
    assert_eq!(used(&db, "LATE").await, ROUNDS * 4);
    assert_eq!(held(&db, "buyer_purchases", pid).await, ROUNDS * 8);
    assert_each_written_at_once(&db, backend, &batches, "beside late payments").await;
    assert_invariants(&db, pid, 200).await;
}

/// Lone late payments (each its own transaction, as at low load or in a
/// failed batch's replay) racing expiry sweeps, every order on one coupon.
/// A sweep takes the product's restock lock, then its orders' rows and
/// holds; a late payment that took its order's row and the coupon's hold
/// before the restock lock waited for the sweep while the sweep waited for
/// it, and PostgreSQL failed one of them (a review of the lock order).
async fn lone_late_payments_racing_expiry_sweeps_do_not_deadlock(backend: Backend) {
    const ROUNDS: usize = 6;
    let db = open(backend).await;
    let pid = product_with_codes(&db, 400).await;
    let c = coupon(&db, "SWEPT", None).await;
    for round in 0..ROUNDS {
        let mut late = Vec::new();
        for i in 0..12 {
            let o = limited_order(pid, &format!("a{round}-{i}@x.test"), Some(c.id), 20);
            late.push(db.store.create_order(&o).await.unwrap().unwrap());
        }
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        db.store.expire_due_orders(now_millis(), 100).await.unwrap();
        // Due, not yet swept: the sweeps below take them with the coupon.
        for i in 0..12 {
            let o = limited_order(pid, &format!("b{round}-{i}@x.test"), Some(c.id), 20);
            db.store.create_order(&o).await.unwrap().unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        let mut tasks = Vec::new();
        for o in late {
            let store = db.store.clone();
            tasks.push(tokio::spawn(async move {
                let paid = store
                    .pay_order(&payment(&o, &format!("lone-{}", o.id)))
                    .await
                    .expect("no database error");
                assert_eq!(paid, PayOutcome::Delivered);
            }));
        }
        for _ in 0..3 {
            let store = db.store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .expire_due_orders(now_millis(), 4)
                    .await
                    .expect("no database error");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        db.store.expire_due_orders(now_millis(), 100).await.unwrap();
    }
    // Each round's twelve late payments took their coupon use back; the
    // swept orders gave theirs up.
    assert_eq!(used(&db, "SWEPT").await, (ROUNDS * 12) as i64);
    assert_invariants(&db, pid, 400).await;
}

/// Runs the batches at once, each as one group-commit store call, and
/// expects every order granted; the batches, for `assert_each_written_at_once`.
async fn race_batches(db: &Db, batches: Vec<Vec<NewOrder>>) -> Vec<Vec<NewOrder>> {
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let store = db.store.clone();
            tokio::spawn(async move {
                for o in store.create_orders(&batch).await {
                    o.expect("no database error")
                        .expect("every order is granted");
                }
                batch
            })
        })
        .collect();
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    done
}

/// PostgreSQL: one transaction wrote each batch's orders (its `xmin`). A
/// batch a deadlock aborted is replayed order by order, one each.
async fn assert_each_written_at_once(
    db: &Db,
    backend: Backend,
    batches: &[Vec<NewOrder>],
    context: &str,
) {
    if backend != Backend::Postgres {
        return;
    }
    for batch in batches {
        let numbers: Vec<&str> = batch.iter().map(|o| o.order_no.as_str()).collect();
        let writers = transactions_that_wrote(db, &numbers).await;
        assert_eq!(
            writers, 1,
            "a batch was replayed order by order ({context})"
        );
    }
}

/// A per-email hold is keyed by the mailbox (`a+tag@x` is `a@x`); an order
/// placed before that key, its hold stored under the address as written,
/// gives back to that row when it expires, not to the mailbox's.
async fn a_hold_from_before_mailbox_keys_is_given_back_where_it_was_taken(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 10).await;
    let order = |email: &str, ttl| {
        let mut o = new_order(pid, 1, ttl);
        o.email = email.into();
        o.per_buyer_limit = Some(2);
        o
    };
    let rows = |email: &'static str| {
        let db = &db;
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM buyer_purchases \
                 WHERE product_id = $1 AND email = $2",
            )
            .bind(pid)
            .bind(email)
            .fetch_one(&db.check)
            .await
            .unwrap()
        }
    };
    // Two spellings of one mailbox share one limit.
    let old = db
        .store
        .create_order(&order("a+1@x.test", 50))
        .await
        .unwrap()
        .unwrap();
    db.store
        .create_order(&order("a@x.test", 60_000))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        db.store
            .create_order(&order("a+2@x.test", 60_000))
            .await
            .unwrap(),
        Err(CreateOrderError::LimitExceeded)
    ));
    assert_eq!(rows("a@x.test").await, 2);
    // Make the first order one placed before mailbox keys: its hold under
    // the address as written, and no mailbox flag.
    sqlx::query("UPDATE orders SET limit_holds = $1 WHERE order_no = $2")
        .bind(LIMIT_HOLD_EMAIL)
        .bind(&old.order_no)
        .execute(&db.check)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE buyer_purchases SET quantity = quantity - 1 WHERE product_id = $1 AND email = 'a@x.test'",
    )
    .bind(pid)
    .execute(&db.check)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO buyer_purchases (product_id, email, quantity) VALUES ($1, 'a+1@x.test', 1)",
    )
    .bind(pid)
    .execute(&db.check)
    .await
    .unwrap();

    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    let expired = db.store.expire_due_orders(now_millis(), 100).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(rows("a+1@x.test").await, 0, "given back where it was taken");
    assert_eq!(
        rows("a@x.test").await,
        1,
        "the mailbox keeps the newer order's hold"
    );
    // The mailbox still has one more to take, and no more.
    db.store
        .create_order(&order("A+3@x.test", 60_000))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        db.store
            .create_order(&order("a@x.test", 60_000))
            .await
            .unwrap(),
        Err(CreateOrderError::LimitExceeded)
    ));
}

/// A batch of one (a quiet moment of a drop; on SQLite the writer thread
/// takes it too) answers as the single-order path does: limits and coupon
/// before stock, and a refusal leaves nothing taken: no hold, no coupon
/// use, no idempotency key, no code.
async fn a_lone_order_in_the_batch_path_answers_as_a_single_order_does(backend: Backend) {
    let db = open(backend).await;
    let pid = product_with_codes(&db, 1).await;
    let c = coupon(&db, "LONE", Some(1)).await;
    let limited = |email: &str, q: i64| {
        let mut o = new_order(pid, q, 60_000);
        o.email = email.into();
        o.per_buyer_limit = Some(1);
        o.per_ip_limit = Some(3);
        o.buyer_ip = Some("198.51.100.7".into());
        o
    };
    let lone = |o: &NewOrder| {
        let store = db.store.clone();
        let o = o.clone();
        async move {
            let mut out = store.create_orders(std::slice::from_ref(&o)).await;
            assert_eq!(out.len(), 1);
            out.remove(0).unwrap().map(|o| o.order_no)
        }
    };
    // Granted alone: its code, its holds and its coupon use are taken.
    let mut first = limited("a@x.test", 1);
    first.coupon_id = Some(c.id);
    assert_eq!(lone(&first).await.as_ref(), Ok(&first.order_no));
    assert_eq!(used(&db, "LONE").await, 1);
    assert_eq!(held(&db, "buyer_purchases", pid).await, 1);
    assert_eq!(held(&db, "buyer_ip_purchases", pid).await, 1);

    // Sold out now; each refusal names the limit or the coupon first.
    let again = limited("a@x.test", 1);
    assert_eq!(
        lone(&again).await,
        Err(CreateOrderError::LimitExceeded),
        "the buyer's limit before the stock"
    );
    assert_eq!(
        lone(&limited("b@x.test", 2)).await,
        Err(CreateOrderError::LimitExceeded),
        "a quantity over the limit before the stock"
    );
    let mut coupon_gone = limited("c@x.test", 1);
    coupon_gone.coupon_id = Some(c.id);
    assert_eq!(
        lone(&coupon_gone).await,
        Err(CreateOrderError::CouponUsedUp),
        "the coupon before the stock"
    );
    let mut keyed = limited("d@x.test", 1);
    keyed.idempotency = Some(IdempotencyRecord {
        scope: "orders".into(),
        key: "lone-key".into(),
        request_hash: b"h".to_vec(),
        status_code: 201,
        response: b"{}".to_vec(),
        response_nonce: vec![0; 12],
        created_at: now_millis(),
    });
    assert_eq!(lone(&keyed).await, Err(CreateOrderError::SoldOut));
    // The single-order path agrees, order for order.
    assert_eq!(
        db.store
            .create_order(&again)
            .await
            .unwrap()
            .map(|o| o.order_no),
        Err(CreateOrderError::LimitExceeded)
    );
    assert_eq!(
        db.store
            .create_order(&coupon_gone)
            .await
            .unwrap()
            .map(|o| o.order_no),
        Err(CreateOrderError::CouponUsedUp)
    );

    // The refusals took nothing: the holds are the first order's, and the
    // refused key is free for a retry.
    assert_eq!(used(&db, "LONE").await, 1);
    assert_eq!(held(&db, "buyer_purchases", pid).await, 1);
    assert_eq!(held(&db, "buyer_ip_purchases", pid).await, 1);
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys WHERE key = $1")
        .bind("lone-key")
        .fetch_one(&db.check)
        .await
        .unwrap();
    assert_eq!(keys, 0);
    restock(&db, pid, 1).await;
    assert_eq!(lone(&keyed).await.as_ref(), Ok(&keyed.order_no));
    assert_eq!(held(&db, "buyer_ip_purchases", pid).await, 2);
    assert_invariants(&db, pid, 2).await;
}

both_backends!(
    a_lone_order_in_the_batch_path_answers_as_a_single_order_does,
    a_hold_from_before_mailbox_keys_is_given_back_where_it_was_taken,
    expiry_releases_only_the_limits_an_order_counted_against,
    a_coupon_capped_at_ten_is_used_ten_times_by_a_hundred_racing_buyers,
    expiry_gives_holds_back_and_a_late_payment_takes_them_again,
    a_per_ip_limit_holds_across_emails_and_refusals_take_nothing,
    batches_naming_the_same_buyers_in_opposite_orders_do_not_deadlock,
    late_payments_in_one_batch_do_not_deadlock_with_orders,
    lone_late_payments_racing_expiry_sweeps_do_not_deadlock,
);

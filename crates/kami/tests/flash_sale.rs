//! Invariants 1, 2 and 4 under concurrency: no oversell, no duplicate code,
//! duplicate notifications change nothing. Each test runs on the sandbox and
//! again through EPay and Stripe against the fake gateway (`Rail`).

#[macro_use]
mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::gateways::Rail;
use common::*;
use reqwest::StatusCode;
use serde_json::json;

on_every_rail!(
    two_hundred_buyers_race_for_fifty_codes_and_exactly_fifty_win,
    notifications_sent_five_times_concurrently_deliver_each_order_exactly_once,
);

async fn two_hundred_buyers_race_for_fifty_codes_and_exactly_fifty_win(
    backend: Backend,
    channel: &'static str,
) {
    let (kami, rail) = Rail::spawn(backend, channel).await;
    let rail = Arc::new(rail);
    let pid = kami.product("Flash sale", json!({})).await;
    let codes = make_codes("FLASH", 50);
    kami.import_codes(pid, &codes).await;
    assert_eq!(kami.stock3(pid).await, (50, 0, 0));

    let kami = std::sync::Arc::new(kami);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let k = kami.clone();
        tasks.push(tokio::spawn(async move {
            k.order(json!({"product_id": pid, "quantity": 1,
                           "email": format!("buyer{i}@example.com"), "channel": channel}))
                .await
        }));
    }
    let mut won = Vec::new();
    let mut refusals: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        let (status, v) = t.await.unwrap();
        match status {
            StatusCode::CREATED => {
                assert_eq!(v["status"], json!("pending"), "{v}");
                assert_eq!(v["amount"], json!(990), "{v}");
                won.push(v);
            }
            StatusCode::CONFLICT => {
                let code = error_code(&v).to_string();
                assert!(
                    code == "sold_out" || code == "insufficient_stock",
                    "a losing buyer got 409 {v}"
                );
                *refusals.entry(code).or_default() += 1;
            }
            other => panic!("unexpected answer {other}: {v}"),
        }
    }
    assert_eq!(won.len(), 50, "winners; refusals were {refusals:?}");
    let numbers: HashSet<&str> = won
        .iter()
        .map(|v| v["order_no"].as_str().unwrap())
        .collect();
    assert_eq!(numbers.len(), 50, "order numbers must be distinct");
    assert_eq!(kami.stock3(pid).await, (0, 50, 0), "stock after the race");

    // Pay every winner, concurrently.
    let mut pays = Vec::new();
    for v in won.clone() {
        let (k, r) = (kami.clone(), rail.clone());
        pays.push(tokio::spawn(async move { r.pay_ok(&k, &v).await }));
    }
    for p in pays {
        p.await.unwrap();
    }
    let mut delivered = Vec::new();
    for v in &won {
        let seen = kami.view(v).await;
        assert_eq!(seen["status"], json!("delivered"), "{seen}");
        let cards = cards_of(&seen);
        assert_eq!(cards.len(), 1, "{seen}");
        delivered.extend(cards);
    }
    assert_distinct_from(&delivered, &codes);
    assert_eq!(delivered.len(), 50);
    assert_eq!(kami.stock3(pid).await, (0, 0, 50), "stock after payment");

    // Sold out for good.
    let (status, v) = kami
        .order(json!({"product_id": pid, "quantity": 1, "email": "late@example.com", "channel": channel}))
        .await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::CONFLICT, "sold_out"),
        "{v}"
    );
}

async fn notifications_sent_five_times_concurrently_deliver_each_order_exactly_once(
    backend: Backend,
    channel: &'static str,
) {
    let (kami, rail) = Rail::spawn(backend, channel).await;
    let rail = Arc::new(rail);
    let pid = kami.product("Duplicates", json!({})).await;
    let codes = make_codes("DUP", 60);
    kami.import_codes(pid, &codes).await;

    // 24 orders of 1, 2 and 3 codes: 48 codes reserved.
    let mut orders = Vec::new();
    for i in 0..24 {
        let q = (i % 3) + 1;
        orders.push(
            kami.buy_on(channel, pid, q, &format!("dup{i}@example.com"))
                .await,
        );
    }
    let total: i64 = orders
        .iter()
        .map(|o| o["amount"].as_i64().unwrap() / 990)
        .sum();
    assert_eq!(total, 48, "amounts are quantity x price");
    assert_eq!(kami.stock3(pid).await, (12, 48, 0));

    let kami = std::sync::Arc::new(kami);
    let mut tasks = Vec::new();
    let mut deliveries = Vec::new();
    for o in &orders {
        // One payment, its notification delivered five times at once (the
        // sandbox signs each copy separately, as a retrying gateway would).
        let d = rail.paid_notification(&kami, o).await;
        deliveries.push(d.clone());
        for _ in 0..5 {
            let (k, r, d) = (kami.clone(), rail.clone(), d.clone());
            tasks.push(tokio::spawn(async move { r.deliver_ok(&k, &d).await }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }

    let mut delivered = Vec::new();
    for o in &orders {
        let seen = kami.view(o).await;
        assert_eq!(seen["status"], json!("delivered"), "{seen}");
        let cards = cards_of(&seen);
        let q = seen["quantity"].as_i64().unwrap();
        assert_eq!(
            cards.len() as i64,
            q,
            "order delivered its quantity exactly: {seen}"
        );
        assert_eq!(q * 990, o["amount"].as_i64().unwrap());
        delivered.extend(cards);
        let no = o["order_no"].as_str().unwrap();
        assert_eq!(
            kami.count_events(no, "paid").await,
            1,
            "one paid event for {no}: {:?}",
            kami.events(no).await
        );
        assert_eq!(
            kami.count_events(no, "delivered").await,
            1,
            "one delivered event for {no}"
        );
    }
    assert_eq!(delivered.len(), 48);
    assert_distinct_from(&delivered, &codes);
    assert_eq!(kami.stock3(pid).await, (12, 0, 48));

    // A late duplicate of an already-processed notification: same answer, no change.
    let o = &orders[0];
    let before = kami.view(o).await;
    rail.deliver_ok(&kami, &deliveries[0]).await;
    assert_eq!(kami.view(o).await["cards"], before["cards"]);
    assert_eq!(
        kami.stock3(pid).await,
        (12, 0, 48),
        "a duplicate takes no code"
    );
}

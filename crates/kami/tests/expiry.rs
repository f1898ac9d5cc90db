//! Order expiry with `KAMI_ORDER_TTL=2`, and late payments (invariant 3),
//! on the sandbox and through EPay and Stripe against the fake gateway.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::gateways::Rail;
use common::*;
use reqwest::StatusCode;
use serde_json::json;

on_every_rail!(
    expired_order_releases_codes_and_late_payment_waits_for_restock,
    late_payment_while_codes_are_free_reserves_again_and_delivers,
);

async fn spawn_short_ttl(backend: Backend, channel: &'static str) -> (Kami, Rail) {
    Rail::spawn_with(
        backend,
        channel,
        Options {
            order_ttl: Some(2),
            ..Options::default()
        },
    )
    .await
}

/// Polls the stock until `available` reaches `want` (codes released by the sweep).
async fn wait_available(kami: &Kami, pid: i64, want: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (available, _, _) = kami.stock3(pid).await;
        if available == want {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "available never reached {want} within {timeout:?}: {}",
                kami.stock(pid).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn expired_order_releases_codes_and_late_payment_waits_for_restock(
    backend: Backend,
    channel: &'static str,
) {
    let (kami, rail) = spawn_short_ttl(backend, channel).await;
    let pid = kami.product("Expiring", json!({})).await;
    let first_batch = make_codes("EXP", 2);
    kami.import_codes(pid, &first_batch).await;

    let a = kami.buy_on(channel, pid, 2, "slow@example.com").await;
    let created = Instant::now();
    // The buyer pays in time, but the gateway's notification arrives late.
    let late_payment = rail.paid_notification(&kami, &a).await;
    assert_eq!(kami.stock3(pid).await, (0, 2, 0));
    let (status, v) = kami
        .order(json!({"product_id": pid, "quantity": 1, "email": "other@example.com", "channel": channel}))
        .await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::CONFLICT, "sold_out"),
        "{v}"
    );

    // Reads as expired once expires_at passes, codes back within ~5 s.
    let seen = kami
        .wait_status(&a, "expired", Duration::from_secs(6))
        .await;
    assert!(
        seen.get("cards").is_none() || seen["cards"].is_null(),
        "{seen}"
    );
    assert!(
        created.elapsed() >= Duration::from_millis(1500),
        "expired too early: {:?}",
        created.elapsed()
    );
    wait_available(&kami, pid, 2, Duration::from_secs(8)).await;
    let no_a = a["order_no"].as_str().unwrap();
    assert_eq!(
        kami.count_events(no_a, "expired").await,
        1,
        "{:?}",
        kami.events(no_a).await
    );

    // Someone else takes the released codes and pays at once.
    let c = kami.buy_on(channel, pid, 2, "quick@example.com").await;
    rail.pay_ok(&kami, &c).await;
    let c_cards = kami.codes(&c).await;
    assert_eq!(c_cards.len(), 2);
    assert_distinct_from(&c_cards, &first_batch);
    assert_eq!(kami.stock3(pid).await, (0, 0, 2));

    // The slow buyer's payment arrives late: acknowledged, paid, nothing to deliver.
    rail.deliver_ok(&kami, &late_payment).await;
    let seen = kami.view(&a).await;
    assert_eq!(seen["status"], json!("paid_unfulfilled"), "{seen}");
    assert!(
        seen.get("cards").is_none() || seen["cards"].is_null(),
        "{seen}"
    );
    assert_eq!(
        kami.count_events(no_a, "paid_unfulfilled").await,
        1,
        "{:?}",
        kami.events(no_a).await
    );
    assert_eq!(
        kami.stock3(pid).await,
        (0, 0, 2),
        "no code taken from the buyer who was delivered"
    );
    assert_eq!(kami.codes(&c).await, c_cards);

    // Restock fulfils it.
    let second_batch = make_codes("RESTOCK", 3);
    kami.import_codes(pid, &second_batch).await;
    let seen = kami
        .wait_status(&a, "delivered", Duration::from_secs(10))
        .await;
    let a_cards = cards_of(&seen);
    assert_eq!(a_cards.len(), 2, "{seen}");
    assert_distinct_from(&a_cards, &second_batch);
    assert_eq!(kami.stock3(pid).await, (1, 0, 4));
    assert_eq!(kami.count_events(no_a, "delivered").await, 1);
}

async fn late_payment_while_codes_are_free_reserves_again_and_delivers(
    backend: Backend,
    channel: &'static str,
) {
    let (kami, rail) = spawn_short_ttl(backend, channel).await;
    let pid = kami.product("Late but lucky", json!({})).await;
    let codes = make_codes("LATE", 3);
    kami.import_codes(pid, &codes).await;

    let d = kami.buy_on(channel, pid, 2, "late@example.com").await;
    let late_payment = rail.paid_notification(&kami, &d).await;
    let expires_at = d["expires_at"].as_str().unwrap().to_string();
    assert!(!expires_at.is_empty());
    kami.wait_status(&d, "expired", Duration::from_secs(6))
        .await;
    wait_available(&kami, pid, 3, Duration::from_secs(8)).await;

    // The payment of the expired order reserves again and is answered once delivered.
    rail.deliver_ok(&kami, &late_payment).await;
    let seen = kami.view(&d).await;
    assert_eq!(
        seen["status"],
        json!("delivered"),
        "late payment with free codes: {seen}"
    );
    let cards = cards_of(&seen);
    assert_eq!(cards.len(), 2);
    assert_distinct_from(&cards, &codes);
    assert_eq!(kami.stock3(pid).await, (1, 0, 2));

    // The last code still sells normally.
    let e = kami.buy_on(channel, pid, 1, "next@example.com").await;
    rail.pay_ok(&kami, &e).await;
    let mut all = cards.clone();
    all.extend(kami.codes(&e).await);
    assert_distinct_from(&all, &codes);
    assert_eq!(kami.stock3(pid).await, (0, 0, 3));
}

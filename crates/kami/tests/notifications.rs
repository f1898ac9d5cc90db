//! Payment notifications: everything that fails verification is refused,
//! changes nothing and is recorded; an acknowledged payment survives SIGKILL
//! (on the sandbox, and through EPay and Stripe against the fake gateway).

#[macro_use]
mod common;

use std::time::Duration;

use common::gateways::Rail;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

both_backends!(rejected_notifications_change_nothing_and_are_recorded);
both_backends!(a_flood_of_forgeries_is_refused_without_filling_the_timeline);
on_every_rail!(acknowledged_payment_survives_sigkill);

async fn rejected_notifications_change_nothing_and_are_recorded(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Rejections", json!({})).await;
    let codes = make_codes("REJ", 5);
    kami.import_codes(pid, &codes).await;
    let order = kami.buy(pid, 2, "victim@example.com").await;
    let no = order["order_no"].as_str().unwrap().to_string();
    let amount = order["amount"].as_i64().unwrap();
    assert_eq!(amount, 1980);
    let stock = kami.stock3(pid).await;
    assert_eq!(stock, (3, 2, 0));

    let trade = format!("T-{}", random_token(10));
    let body_for = |amount: i64, currency: &str, order_no: &str| -> Vec<u8> {
        json!({"order_no": order_no, "trade_no": trade, "amount": amount,
               "currency": currency, "status": "paid"})
        .to_string()
        .into_bytes()
    };
    let good = body_for(amount, "CNY", &no);
    let now = now_secs();

    // (case, body, Kami-Signature header)
    let mut cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        (
            "forged signature",
            good.clone(),
            Some(format!("t={now},v1={}", hex::encode([7u8; 32]))),
        ),
        (
            "wrong secret",
            good.clone(),
            Some(sign_with("not-the-secret", now, &good)),
        ),
        ("wrong amount", body_for(amount - 1, "CNY", &no), None),
        ("wrong currency", body_for(amount, "USD", &no), None),
        // Well past the 300 s window: the cases are signed up front, and a
        // "future" signature one second out would be valid again once the
        // loop below has taken a second (seen on a loaded machine).
        ("stale timestamp", good.clone(), Some(kami.sign(now - 330, &good))),
        ("future timestamp", good.clone(), Some(kami.sign(now + 330, &good))),
        ("missing header", good.clone(), None),
        ("malformed header", good.clone(), Some("garbage".into())),
        (
            "malformed header (bad t)",
            good.clone(),
            Some(kami.sign(now, &good).replacen(&format!("t={now}"), "t=soon", 1)),
        ),
        (
            "malformed header (bad v1)",
            good.clone(),
            Some(format!("t={now},v1=zz-not-hex")),
        ),
        (
            "body with wrong field types",
            json!({"order_no": no, "trade_no": trade, "amount": "lots", "currency": "CNY", "status": "paid"})
                .to_string()
                .into_bytes(),
            None,
        ),
        (
            "body signed for another body",
            body_for(1, "CNY", &no),
            Some(kami.sign(now, &good)),
        ),
    ];
    // Cases without a header but a sound body get a valid signature, except "missing header".
    for (name, body, header) in cases.iter_mut() {
        if header.is_none() && *name != "missing header" {
            *header = Some(kami.sign(now, body));
        }
    }

    for (name, body, header) in cases {
        let before = kami.count_events(&no, "notify_rejected").await;
        let (status, text) = kami.notify(body, header).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: answered {text}");
        let seen = kami.view(&order).await;
        assert_eq!(seen["status"], json!("pending"), "{name}: {seen}");
        assert!(
            seen.get("cards").is_none_or(Value::is_null),
            "{name}: codes shown for an unpaid order: {seen}"
        );
        assert_eq!(kami.stock3(pid).await, stock, "{name}: stock changed");
        let after = kami.count_events(&no, "notify_rejected").await;
        assert_eq!(
            after,
            before + 1,
            "{name}: one notify_rejected event recorded; events: {:?}",
            kami.events(&no).await
        );
    }

    // Malformed JSON names no order: refused, nothing changes.
    let junk = b"{\"order_no\": \"".to_vec();
    let (status, text) = kami.notify(junk.clone(), Some(kami.sign(now, &junk))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "malformed JSON: {text}");
    let junk = b"not json at all".to_vec();
    let (status, text) = kami.notify(junk, None).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "malformed JSON without a header: {text}"
    );
    assert_eq!(kami.view(&order).await["status"], json!("pending"));
    assert_eq!(kami.stock3(pid).await, stock);
    // Both name no order: the operator finds them among the events of no
    // order, newest first, a page at a time.
    let (status, page) = kami.admin_get("/api/v1/admin/events?limit=1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["has_more"], json!(true), "{page}");
    let newest = &page["data"][0];
    assert_eq!(
        (&newest["kind"], &newest["order_no"]),
        (&json!("notify_rejected"), &Value::Null),
        "{page}"
    );
    let (_, next) = kami
        .admin_get(&format!(
            "/api/v1/admin/events?limit=5&starting_after={}",
            newest["id"]
        ))
        .await;
    let older = next["data"].as_array().unwrap();
    assert!(
        older.len() == 1 && older[0]["id"].as_i64() < newest["id"].as_i64(),
        "{next}"
    );
    assert_eq!(next["has_more"], json!(false), "{next}");

    // An order that does not exist: refused and recorded under the claimed number.
    let ghost = format!("K20990101000000{}", random_token(8).to_uppercase());
    let body = body_for(amount, "CNY", &ghost);
    let (status, text) = kami
        .notify(body.clone(), Some(kami.sign(now_secs(), &body)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown order: {text}");
    let ev = kami.events(&ghost).await;
    assert!(
        ev.iter()
            .any(|e| e["kind"] == json!("notify_rejected") && e["order_no"] == json!(ghost)),
        "rejection of an unknown order recorded: {ev:?}"
    );
    assert_eq!(kami.stock3(pid).await, stock);

    // Recorded reasons are kept and name what went wrong.
    let ev = kami.events(&no).await;
    let details: Vec<String> = ev
        .iter()
        .filter(|e| e["kind"] == json!("notify_rejected"))
        .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        details.iter().all(|d| !d.trim().is_empty()),
        "every rejection has a reason: {details:?}"
    );
    let admin = kami.admin_order(&no).await;
    let admin_events = admin["events"]
        .as_array()
        .unwrap_or_else(|| panic!("admin order has events: {admin}"));
    assert!(
        admin_events
            .iter()
            .any(|e| e["kind"] == json!("notify_rejected")),
        "{admin}"
    );
    assert!(
        admin.get("cards").is_none(),
        "the admin order view carries no codes: {admin}"
    );

    // A verified notification that is not a payment: acknowledged, nothing but the timeline.
    let failed = json!({"order_no": no, "trade_no": trade, "amount": amount, "currency": "CNY", "status": "failed"})
        .to_string()
        .into_bytes();
    let (status, text) = kami
        .notify(failed.clone(), Some(kami.sign(now_secs(), &failed)))
        .await;
    assert_eq!(status, StatusCode::OK, "unpaid status: {text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        json!({"received": true})
    );
    assert_eq!(kami.view(&order).await["status"], json!("pending"));
    assert_eq!(kami.stock3(pid).await, stock);
    assert_eq!(
        kami.count_events(&no, "notify_unpaid").await,
        1,
        "{:?}",
        kami.events(&no).await
    );
    assert_eq!(kami.count_events(&no, "paid").await, 0);

    // None of the above left a payment behind: the genuine notification, with
    // the very trade number the forgeries used, still pays the order.
    let (status, text) = kami
        .notify(good.clone(), Some(kami.sign(now_secs(), &good)))
        .await;
    assert_eq!(status, StatusCode::OK, "genuine notification: {text}");
    let seen = kami.view(&order).await;
    assert_eq!(seen["status"], json!("delivered"), "{seen}");
    let cards = cards_of(&seen);
    assert_eq!(cards.len(), 2);
    assert_distinct_from(&cards, &codes);
    assert_eq!(kami.stock3(pid).await, (3, 0, 2));
}

async fn acknowledged_payment_survives_sigkill(backend: Backend, channel: &'static str) {
    let (kami, rail) = Rail::spawn(backend, channel).await;
    let pid = kami.product("Crash", json!({})).await;
    let codes = make_codes("CRASH", 30);
    kami.import_codes(pid, &codes).await;

    // One order alone: killed the instant its 200 arrives.
    let first = kami.buy_on(channel, pid, 2, "first@example.com").await;
    rail.pay_ok(&kami, &first).await;
    kami.stop(Stop::Kill);
    kami.restart(Stop::Kill).await;
    let seen = kami.view(&first).await;
    assert_eq!(
        seen["status"],
        json!("delivered"),
        "acknowledged payment lost across SIGKILL: {seen}"
    );
    let first_cards = cards_of(&seen);
    assert_eq!(first_cards.len(), 2);

    // Ten payments in flight; SIGKILL as soon as the first is acknowledged.
    let mut orders = Vec::new();
    for i in 0..10 {
        orders.push(
            kami.buy_on(channel, pid, 1, &format!("crash{i}@example.com"))
                .await,
        );
    }
    let mut deliveries = Vec::new();
    for o in &orders {
        deliveries.push(rail.paid_notification(&kami, o).await);
    }
    let kami = std::sync::Arc::new(kami);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, d) in deliveries.iter().enumerate() {
        let (k, d, tx) = (kami.clone(), d.clone(), tx.clone());
        tokio::spawn(async move {
            let r = k.try_deliver(channel, &d).await;
            let _ = tx.send((i, r.map(|(s, _)| s).ok()));
        });
    }
    drop(tx);
    let mut acknowledged = Vec::new();
    let mut killed = false;
    while let Some((i, status)) = rx.recv().await {
        if status == Some(StatusCode::OK) {
            acknowledged.push(i);
            if !killed {
                kami.stop(Stop::Kill);
                killed = true;
            }
        }
    }
    assert!(
        !acknowledged.is_empty(),
        "no payment was acknowledged at all"
    );
    kami.restart(Stop::Kill).await;

    for &i in &acknowledged {
        let seen = kami.view(&orders[i]).await;
        assert_eq!(
            seen["status"],
            json!("delivered"),
            "acknowledged order {i} not delivered after SIGKILL: {seen}"
        );
        assert_eq!(cards_of(&seen).len(), 1);
    }
    // The gateway retries the rest; every order ends delivered, codes distinct.
    for d in &deliveries {
        rail.deliver_ok(&kami, d).await;
    }
    let mut delivered = first_cards;
    for o in &orders {
        let seen = kami
            .wait_status(o, "delivered", Duration::from_secs(5))
            .await;
        delivered.extend(cards_of(&seen));
    }
    assert_eq!(delivered.len(), 12);
    assert_distinct_from(&delivered, &codes);
    assert_eq!(kami.stock3(pid).await, (18, 0, 12));
}

/// Forged notifications are refused however many come, but a stranger
/// posting them cannot fill the database: past a burst of 100 per client
/// address (then ten a second) they are counted in
/// `kami_notifications_unrecorded_total`, not written to the order's
/// timeline. The genuine notification after the flood still pays.
async fn a_flood_of_forgeries_is_refused_without_filling_the_timeline(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Flood", json!({})).await;
    kami.import_codes(pid, &make_codes("FLOOD", 2)).await;
    let order = kami.buy(pid, 1, "flooded@example.com").await;
    let no = order["order_no"].as_str().unwrap().to_string();
    let good = json!({"order_no": no, "trade_no": format!("T-{}", random_token(10)),
                      "amount": order["amount"], "currency": "CNY", "status": "paid"})
    .to_string()
    .into_bytes();
    let forged = format!("t={},v1={}", now_secs(), "0".repeat(64));

    const SENT: usize = 400;
    let started = std::time::Instant::now();
    let replies = futures::future::join_all(
        (0..SENT).map(|_| kami.notify(good.clone(), Some(forged.clone()))),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    for (status, text) in &replies {
        assert_eq!(*status, StatusCode::BAD_REQUEST, "a forgery: {text}");
    }
    let recorded = kami.count_events(&no, "notify_rejected").await;
    let allowed = 100 + (10.0 * elapsed).ceil() as usize + 1;
    assert!(
        (100..=allowed).contains(&recorded),
        "{recorded} of {SENT} forgeries recorded in {elapsed:.2} s (at most {allowed})"
    );
    let unrecorded = metric_sum(&kami.metrics().await, "kami_notifications_unrecorded_total");
    assert_eq!(
        unrecorded as usize,
        SENT - recorded,
        "the forgeries not recorded are counted"
    );
    assert_eq!(kami.view(&order).await["status"], json!("pending"));
    assert_eq!(kami.stock3(pid).await, (1, 1, 0));

    let (status, text) = kami
        .notify(good.clone(), Some(kami.sign(now_secs(), &good)))
        .await;
    assert_eq!(status, StatusCode::OK, "genuine notification: {text}");
    assert_eq!(kami.view(&order).await["status"], json!("delivered"));
}

/// The sum of a counter's series in a Prometheus text page.
fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

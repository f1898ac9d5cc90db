//! EPay, epusdt and Stripe against a fake gateway built on the gateways' own
//! libraries (tests/gateways/fake_gateway.py), on SQLite and PostgreSQL:
//! genuine notifications pay once, forged or mismatched ones are refused and
//! recorded, lost ones are found by reconciliation, and a failing gateway is
//! taken off the shelf by its circuit breaker until it recovers. The
//! concurrency invariants run through these channels in flash_sale.rs.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::gateways::{spawn_with_gateways, success_reply, Delivery, FakeGateway};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

both_backends!(
    epay_signed_notifications_pay_once_and_forgeries_are_refused,
    epusdt_signed_notifications_pay_once_and_forgeries_are_refused,
    stripe_signed_events_pay_once_and_forgeries_are_refused,
    epay_api_mode_asks_mapi_for_the_pay_url,
    a_channel_turned_off_in_kami_toml_still_pays_orders_made_on_it,
    a_channel_with_an_empty_key_is_not_offered_and_refuses_every_notification,
    reconciliation_completes_orders_whose_notification_was_lost,
    a_failing_gateway_is_taken_off_the_shelf_until_it_recovers,
);

/// Sends a forged or mismatched notification and checks that it was
/// refused with the gateway's failure reply, changed nothing, and was
/// recorded with a reason containing `reason`.
async fn assert_refused(
    kami: &Kami,
    channel: &str,
    created: &Value,
    product: i64,
    case: &str,
    d: &Delivery,
    reason: &str,
) {
    let no = created["order_no"].as_str().unwrap();
    let before = kami.count_events(no, "notify_rejected").await;
    let stock = kami.stock3(product).await;
    let (status, text) = kami.deliver(channel, d).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: answered {text}");
    assert_ne!(text, success_reply(channel), "{case}");
    assert_eq!(
        kami.view(created).await["status"],
        json!("pending"),
        "{case}"
    );
    assert_eq!(kami.stock3(product).await, stock, "{case}: stock changed");
    let events = kami.events(no).await;
    let rejected: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == json!("notify_rejected"))
        .collect();
    assert_eq!(
        rejected.len(),
        before + 1,
        "{case}: one rejection recorded: {events:?}"
    );
    let detail = rejected.last().unwrap()["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        events.iter().any(|e| e["kind"] == json!("notify_rejected")
            && e["detail"].as_str().unwrap_or_default().contains(reason)),
        "{case}: reason {reason:?} recorded; last was {detail:?}"
    );
}

/// Sends one genuine notification five times at once: every copy gets the
/// success reply, the order is delivered once.
async fn deliver_five_times_at_once(kami: &Arc<Kami>, channel: &'static str, d: Delivery) {
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (k, d) = (kami.clone(), d.clone());
        tasks.push(tokio::spawn(async move { k.deliver(channel, &d).await }));
    }
    for t in tasks {
        let (status, text) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(text, success_reply(channel));
    }
}

async fn assert_delivered_once(kami: &Kami, created: &Value, codes: &[String]) {
    let seen = kami
        .wait_status(created, "delivered", Duration::from_secs(15))
        .await;
    let cards = cards_of(&seen);
    assert_eq!(cards.len() as i64, seen["quantity"].as_i64().unwrap());
    assert_distinct_from(&cards, codes);
    let no = created["order_no"].as_str().unwrap();
    assert_eq!(
        kami.count_events(no, "paid").await,
        1,
        "{:?}",
        kami.events(no).await
    );
    assert_eq!(kami.count_events(no, "delivered").await, 1);
}

async fn epay_signed_notifications_pay_once_and_forgeries_are_refused(backend: Backend) {
    let (kami, gw) = spawn_with_gateways(backend).await;
    let pid = kami.product("EPay card", json!({"price": 1000})).await;
    let codes = make_codes("EPAY", 5);
    kami.import_codes(pid, &codes).await;
    let order = kami.buy_on("epay", pid, 1, "epay@example.com").await;
    let no = order["order_no"].as_str().unwrap().to_string();
    kami.start_payment(&gw, "epay", &order).await;
    // Kami asked for exactly the order's amount, in decimal yuan.
    assert_eq!(
        gw.recorded("epay", &no).await["params"]["money"],
        json!("10.00")
    );
    let sandbox_order = kami.buy(pid, 1, "sandbox@example.com").await;

    let sign = |extra: Value| gw.notification("epay", &no, extra);
    let cases = [
        (
            "changed amount",
            sign(json!({"override": {"money": "9.99"}})).await,
            "amount mismatch",
        ),
        (
            "other merchant",
            sign(json!({"override": {"pid": "2002"}})).await,
            "merchant",
        ),
        (
            "wrong key",
            sign(json!({"key": "not-the-merchant-key"})).await,
            "signature does not match",
        ),
        (
            // MD5 signed, naming RSA: a gateway that signs another way is
            // not checked by the MD5 rule (it was accepted).
            "sign_type RSA",
            sign(json!({"sign_type": "RSA"})).await,
            "sign_type",
        ),
        (
            "order of another channel",
            sign(json!({"override": {"out_trade_no": sandbox_order["order_no"]}})).await,
            "created for channel sandbox",
        ),
    ];
    for (case, d, reason) in &cases {
        let target = if *case == "order of another channel" {
            &sandbox_order
        } else {
            &order
        };
        assert_refused(&kami, "epay", target, pid, case, d, reason).await;
    }
    let Delivery::Query(genuine) = sign(json!({})).await else {
        unreachable!()
    };
    let tampered = Delivery::Query(genuine.replace("money=10.00", "money=0.01"));
    assert_refused(
        &kami,
        "epay",
        &order,
        pid,
        "tampered after signing",
        &tampered,
        "signature",
    )
    .await;

    // Genuine but unpaid: acknowledged, only the timeline changes.
    let waiting = sign(json!({"override": {"trade_status": "WAIT_BUYER_PAY"}})).await;
    let (status, text) = kami.deliver("epay", &waiting).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "success"));
    assert_eq!(kami.view(&order).await["status"], json!("pending"));
    assert_eq!(kami.count_events(&no, "notify_unpaid").await, 1);
    // Some forks POST the same parameters as a form: the same verdict, and
    // the repeated report is not recorded twice.
    let Delivery::Query(form) = waiting else {
        unreachable!()
    };
    let res = kami
        .http
        .post(kami.url("/pay/epay/notify"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "success");
    assert_eq!(kami.count_events(&no, "notify_unpaid").await, 1);

    // "10" is the same money as "10.00"; five copies at once deliver once.
    let kami = Arc::new(kami);
    let paid = sign(json!({"override": {"money": "10"}})).await;
    deliver_five_times_at_once(&kami, "epay", paid).await;
    assert_delivered_once(&kami, &order, &codes).await;
    // The raw notification is kept without the merchant key.
    assert!(
        !kami.logs().contains(&gw.epay_key),
        "the EPay key reached the logs"
    );
}

async fn epusdt_signed_notifications_pay_once_and_forgeries_are_refused(backend: Backend) {
    let (kami, gw) = spawn_with_gateways(backend).await;
    let pid = kami.product("USDT card", json!({})).await;
    let codes = make_codes("USDT", 5);
    kami.import_codes(pid, &codes).await;
    let order = kami.buy_on("epusdt", pid, 2, "usdt@example.com").await;
    let no = order["order_no"].as_str().unwrap().to_string();
    kami.start_payment(&gw, "epusdt", &order).await;
    let sandbox_order = kami.buy(pid, 1, "sandbox@example.com").await;

    let sign = |extra: Value| gw.notification("epusdt", &no, extra);
    let cases = [
        (
            "changed amount",
            sign(json!({"override": {"amount": 19.7}})).await,
            "amount mismatch",
        ),
        (
            "wrong token",
            sign(json!({"token": "not-the-token"})).await,
            "signature does not match",
        ),
        (
            "order of another channel",
            sign(json!({"override": {"order_id": sandbox_order["order_no"], "amount": 9.9}})).await,
            "created for channel sandbox",
        ),
    ];
    for (case, d, reason) in &cases {
        let target = if *case == "order of another channel" {
            &sandbox_order
        } else {
            &order
        };
        assert_refused(&kami, "epusdt", target, pid, case, d, reason).await;
    }
    let waiting = sign(json!({"override": {"status": 1}})).await;
    let (status, text) = kami.deliver("epusdt", &waiting).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(kami.count_events(&no, "notify_unpaid").await, 1);

    let kami = Arc::new(kami);
    deliver_five_times_at_once(&kami, "epusdt", sign(json!({})).await).await;
    assert_delivered_once(&kami, &order, &codes).await;
}

async fn stripe_signed_events_pay_once_and_forgeries_are_refused(backend: Backend) {
    let (kami, gw) = spawn_with_gateways(backend).await;
    let pid = kami
        .product("Stripe card", json!({"price": 1250, "currency": "USD"}))
        .await;
    let codes = make_codes("STRIPE", 5);
    kami.import_codes(pid, &codes).await;
    let order = kami.buy_on("stripe", pid, 1, "stripe@example.com").await;
    let no = order["order_no"].as_str().unwrap().to_string();
    kami.start_payment(&gw, "stripe", &order).await;
    let asked = gw.recorded("stripe", &no).await;
    // Stripe sends the buyer back here; that is never proof of payment.
    let back = asked["params"]["success_url"].as_str().unwrap().to_string();
    assert_eq!(back, kami.url(&format!("/pay/stripe/return?order_no={no}")));
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The buyer's browser holds the order (it was given the pay page's
    // token): on to the order page. Nothing is paid.
    let token = order["access_token"].as_str().unwrap();
    let res = no_redirects
        .get(&back)
        .header("cookie", format!("kt_{no}={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["location"], format!("/orders/{no}").as_str());
    assert_eq!(kami.view(&order).await["status"], json!("pending"));
    assert_eq!(
        asked["params"]["line_items[0][price_data][unit_amount]"],
        json!("1250")
    );
    assert_eq!(
        asked["params"]["line_items[0][price_data][currency]"],
        json!("usd")
    );
    let sandbox_order = kami.buy(pid, 1, "sandbox@example.com").await;

    let sign = |extra: Value| gw.notification("stripe", &no, extra);
    let session = |s: Value| json!({"override": {"session": s}});
    let cases = [
        (
            "stale timestamp",
            sign(json!({"age_offset": -400})).await,
            "tolerance",
        ),
        (
            "wrong secret",
            sign(json!({"secret": "whsec_not_ours"})).await,
            "signature does not match",
        ),
        (
            "changed amount",
            sign(session(json!({"amount_total": 1}))).await,
            "amount mismatch",
        ),
        (
            "other currency",
            sign(session(json!({"currency": "eur"}))).await,
            "amount mismatch",
        ),
        (
            "order of another channel",
            sign(session(
                json!({"client_reference_id": sandbox_order["order_no"]}),
            ))
            .await,
            "created for channel sandbox",
        ),
    ];
    for (case, d, reason) in &cases {
        let target = if *case == "order of another channel" {
            &sandbox_order
        } else {
            &order
        };
        assert_refused(&kami, "stripe", target, pid, case, d, reason).await;
    }
    // Genuine events that are not a completed payment: 2xx, nothing paid.
    for (case, extra) in [
        (
            "unpaid session",
            session(json!({"payment_status": "unpaid"})),
        ),
        (
            "another event type",
            json!({"override": {"type": "customer.created"}}),
        ),
    ] {
        let (status, text) = kami.deliver("stripe", &sign(extra).await).await;
        assert_eq!(status, StatusCode::OK, "{case}: {text}");
        assert_eq!(
            kami.view(&order).await["status"],
            json!("pending"),
            "{case}"
        );
    }
    assert_eq!(kami.count_events(&no, "notify_unpaid").await, 1);

    let kami = Arc::new(kami);
    deliver_five_times_at_once(&kami, "stripe", sign(json!({})).await).await;
    assert_delivered_once(&kami, &order, &codes).await;
    // The later async-success event of the same session is a duplicate.
    let again =
        sign(json!({"override": {"type": "checkout.session.async_payment_succeeded"}})).await;
    assert_eq!(kami.deliver("stripe", &again).await.0, StatusCode::OK);
    assert_delivered_once(&kami, &order, &codes).await;
    assert!(!kami.logs().contains(&gw.stripe_secret_key));
    assert!(!kami.logs().contains(&gw.stripe_webhook_secret));
}

async fn epay_api_mode_asks_mapi_for_the_pay_url(backend: Backend) {
    let gw = FakeGateway::start();
    let toml = gw.kami_toml().replace(
        "[channels.epay]\n",
        "[channels.epay]\nmode = \"api\"\ntype = \"wxpay\"\n",
    );
    let kami = spawn_kami_with(
        backend,
        Options {
            config_toml: Some(toml),
            ..Options::default()
        },
    )
    .await;
    let pid = kami.product("EPay API mode", json!({})).await;
    let codes = make_codes("MAPI", 2);
    kami.import_codes(pid, &codes).await;
    let order = kami.buy_on("epay", pid, 1, "mapi@example.com").await;
    let no = order["order_no"].as_str().unwrap().to_string();
    let url = kami
        .open_pay_page(&order)
        .await
        .expect("pay URL from mapi.php");
    assert!(
        url.starts_with(&format!("{}/epay/cashier/", gw.base)),
        "{url}"
    );
    let asked = gw.recorded("epay", &no).await;
    assert_eq!(asked["params"]["type"], json!("wxpay"));
    assert_eq!(asked["params"]["money"], json!("9.90"));
    let paid = gw.notification("epay", &no, json!({})).await;
    assert_eq!(kami.deliver("epay", &paid).await.1, "success");
    assert_delivered_once(&kami, &order, &codes).await;
}

/// `enabled = false` in kami.toml takes a channel off the shelf, but the
/// orders made on it before still get paid by their notifications, as with
/// a channel disabled in the panel: money a buyer paid is never turned away.
async fn a_channel_turned_off_in_kami_toml_still_pays_orders_made_on_it(backend: Backend) {
    let gw = FakeGateway::start();
    let kami = spawn_kami_with(
        backend,
        Options {
            config_toml: Some(gw.kami_toml()),
            ..Options::default()
        },
    )
    .await;
    let pid = kami.product("Turned off", json!({})).await;
    let codes = make_codes("TOFF", 3);
    kami.import_codes(pid, &codes).await;
    let order = kami.buy_on("epay", pid, 1, "before@example.com").await;
    let no = order["order_no"].as_str().unwrap().to_string();
    kami.start_payment(&gw, "epay", &order).await;

    let off = gw
        .kami_toml()
        .replace("[channels.epay]\n", "[channels.epay]\nenabled = false\n");
    assert_ne!(off, gw.kami_toml(), "the epay section");
    std::fs::write(kami.config_path(), off).unwrap();
    kami.restart(Stop::Term).await;

    let (s, v) = kami.send(kami.http.get(kami.url("/api/v1/channels"))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        !v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == json!("epay")),
        "a channel turned off is not offered: {v}"
    );
    let (s, v) = kami
        .order(json!({"product_id": pid, "quantity": 1, "email": "after@example.com", "channel": "epay"}))
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        "{v}"
    );
    let paid = gw.notification("epay", &no, json!({})).await;
    assert_eq!(kami.deliver("epay", &paid).await.1, "success");
    assert_delivered_once(&kami, &order, &codes).await;
}

async fn reconciliation_completes_orders_whose_notification_was_lost(backend: Backend) {
    let (kami, gw) = spawn_with_gateways(backend).await;
    let pid = kami.product("Lost notifications", json!({})).await;
    let codes = make_codes("LOST", 6);
    kami.import_codes(pid, &codes).await;
    let mut orders = Vec::new();
    for channel in ["epay", "stripe"] {
        let paid = kami.buy_on(channel, pid, 1, "paid@example.com").await;
        kami.start_payment(&gw, channel, &paid).await;
        gw.mark_paid(channel, paid["order_no"].as_str().unwrap())
            .await;
        let unpaid = kami.buy_on(channel, pid, 1, "unpaid@example.com").await;
        kami.start_payment(&gw, channel, &unpaid).await;
        orders.push((paid, unpaid));
    }
    // No notification is ever sent; reconciliation asks the gateway.
    for (paid, unpaid) in &orders {
        assert_delivered_once(&kami, paid, &codes).await;
        let no = paid["order_no"].as_str().unwrap();
        assert_eq!(kami.count_events(no, "payment_started").await, 1);
        assert_eq!(kami.view(unpaid).await["status"], json!("pending"));
    }
}

async fn a_failing_gateway_is_taken_off_the_shelf_until_it_recovers(backend: Backend) {
    let (kami, gw) = spawn_with_gateways(backend).await;
    let pid = kami.product("Breaker", json!({})).await;
    kami.import_codes(pid, &make_codes("BRK", 10)).await;
    let offered = |v: &Value, name: &str| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == json!(name) && c["available"] == json!(true))
    };
    gw.set_failing("stripe", true).await;
    for i in 0..3 {
        let order = kami
            .buy_on("stripe", pid, 1, &format!("b{i}@example.com"))
            .await;
        let (status, _) = kami
            .open_pay_page(&order)
            .await
            .expect_err("gateway is down");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // Open: not offered, refused for new orders, the others still offered.
    let (_, channels) = kami.send(kami.http.get(kami.url("/api/v1/channels"))).await;
    assert!(
        !offered(&channels, "stripe") && offered(&channels, "epay"),
        "{channels}"
    );
    let page = kami
        .http
        .get(kami.url(&format!("/products/{pid}")))
        .send()
        .await
        .unwrap();
    let html = page.text().await.unwrap();
    assert!(!html.contains("value=\"stripe\"") && html.contains("value=\"epay\""));
    let (status, v) = kami
        .order(json!({"product_id": pid, "quantity": 1, "email": "x@example.com", "channel": "stripe"}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let metrics = kami.metrics().await;
    assert!(
        metrics.contains("kami_channel_circuit_open{channel=\"stripe\"} 1"),
        "{metrics}"
    );

    // After the cool-down the next real payment start is the probe.
    gw.set_failing("stripe", false).await;
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let (_, channels) = kami.send(kami.http.get(kami.url("/api/v1/channels"))).await;
    assert!(offered(&channels, "stripe"), "{channels}");
    let order = kami.buy_on("stripe", pid, 1, "probe@example.com").await;
    kami.start_payment(&gw, "stripe", &order).await;
    let metrics = kami.metrics().await;
    assert!(
        metrics.contains("kami_channel_circuit_open{channel=\"stripe\"} 0"),
        "{metrics}"
    );
}

/// DESIGN.md: "a channel with an empty key rejects everything". The shop
/// starts; the channel is not offered, and every notification to it, even
/// one its gateway signed for an order made before, gets the gateway's
/// failure reply, changes nothing and is recorded.
async fn a_channel_with_an_empty_key_is_not_offered_and_refuses_every_notification(
    backend: Backend,
) {
    let (kami, gw) = spawn_with_gateways(backend).await;
    let pid = kami.product("Keyless", json!({})).await;
    let codes = make_codes("KEYLESS", 3);
    kami.import_codes(pid, &codes).await;
    let mut orders = Vec::new();
    for channel in ["epay", "stripe"] {
        let order = kami.buy_on(channel, pid, 1, "before@example.com").await;
        kami.start_payment(&gw, channel, &order).await;
        orders.push((channel, order));
    }

    let toml = gw.kami_toml();
    let keyless = toml
        .lines()
        .map(|l| {
            if l.starts_with("key = ") {
                "key = \"\"".to_string()
            } else if l.starts_with("webhook_secret = ") {
                "webhook_secret = \"  \"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(keyless, toml);
    std::fs::write(kami.config_path(), keyless).unwrap();
    kami.restart(Stop::Term).await;

    let (s, v) = kami.send(kami.http.get(kami.url("/api/v1/channels"))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let names: Vec<&Value> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert!(!names.contains(&&json!("epay")), "{v}");
    assert!(!names.contains(&&json!("stripe")), "{v}");
    assert!(
        names.contains(&&json!("epusdt")),
        "the keyed channel stays: {v}"
    );
    for channel in ["epay", "stripe"] {
        let (s, v) = kami
            .order(json!({"product_id": pid, "quantity": 1, "email": "after@example.com", "channel": channel}))
            .await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            "{channel}: {v}"
        );
    }
    for (channel, order) in &orders {
        let no = order["order_no"].as_str().unwrap();
        let stock = kami.stock3(pid).await;
        let genuine = gw.notification(channel, no, json!({})).await;
        let (status, text) = kami.deliver(channel, &genuine).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{channel}: {text}");
        assert_ne!(text, success_reply(channel), "{channel}");
        assert_eq!(
            kami.view(order).await["status"],
            json!("pending"),
            "{channel}"
        );
        assert_eq!(kami.stock3(pid).await, stock, "{channel}");
    }
    let metrics = kami.metrics().await;
    for channel in ["epay", "stripe"] {
        let line =
            format!("kami_notifications_total{{channel=\"{channel}\",verdict=\"rejected\"}} 1");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

/// A gateway that takes yuan only (EPay, epusdt) is not offered for a
/// product priced in dollars, and an order on it is refused as the buyer's
/// to change (422, reserving nothing). It used to be placed, then fail at
/// the pay page as a gateway failure: three such orders opened the
/// channel's breaker, so any buyer could switch EPay off for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_currency_the_gateway_cannot_take_is_refused_without_tripping_its_breaker() {
    let (kami, gw) = spawn_with_gateways(Backend::Sqlite).await;
    let usd = kami
        .product("Dollars", json!({"price": 500, "currency": "USD"}))
        .await;
    kami.import_codes(usd, &make_codes("USD", 5)).await;
    for channel in ["epay", "epusdt", "epay", "epay", "epay"] {
        let (status, v) = kami
            .order(json!({"product_id": usd, "quantity": 1, "email": "d@example.com", "channel": channel}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{channel}: {v}");
        assert_eq!(v["error"]["code"], json!("invalid_request"), "{v}");
        assert_eq!(v["error"]["param"], json!("channel"), "{v}");
    }
    assert_eq!(kami.stock3(usd).await, (5, 0, 0), "nothing was reserved");
    let html = kami
        .http
        .get(kami.url(&format!("/products/{usd}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !html.contains("value=\"epay\"") && !html.contains("value=\"epusdt\""),
        "yuan-only channels offered for a dollar price"
    );
    assert!(html.contains("value=\"stripe\""), "Stripe takes dollars");

    // EPay is still on for yuan, and sells.
    let (_, channels) = kami.send(kami.http.get(kami.url("/api/v1/channels"))).await;
    assert!(
        channels["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == json!("epay") && c["available"] == json!(true)),
        "{channels}"
    );
    let cny = kami.product("Yuan", json!({})).await;
    kami.import_codes(cny, &make_codes("CNY", 1)).await;
    let order = kami.buy_on("epay", cny, 1, "y@example.com").await;
    kami.start_payment(&gw, "epay", &order).await;
    let stripe = kami.buy_on("stripe", usd, 1, "s@example.com").await;
    kami.start_payment(&gw, "stripe", &stripe).await;
    assert_eq!(kami.stock3(usd).await, (4, 1, 0));
}

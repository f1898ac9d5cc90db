//! Alipay (RSA2) and WeChat Pay (API v3) end to end: the real `kami` binary
//! against a fake gateway that checks Kami's request signatures and produces
//! genuine notifications with the gateways' own Python libraries
//! (tests/gateways_rsa), run by common::gateways::python().

#[macro_use]
mod common;
#[path = "channels_rsa/gateway.rs"]
mod gateway;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gateway::FakeGateway;
use reqwest::StatusCode;
use serde_json::{json, Value};

both_backends!(
    alipay_genuine_notification_delivers_once_despite_concurrent_duplicates,
    alipay_forged_foreign_and_unpaid_notifications_change_nothing,
    wechatpay_genuine_callback_delivers_once_despite_concurrent_duplicates,
    wechatpay_forged_stale_probe_and_unpaid_callbacks_change_nothing,
    scan_to_pay_channels_show_a_qr_code_until_the_order_is_paid,
);

/// A shop with both RSA channels pointed at a fresh fake gateway. kami.toml
/// goes in the data directory (the server's working directory, where it is
/// looked for) and the key files beside it, named relatively.
async fn shop(backend: Backend) -> (Kami, FakeGateway) {
    let kami = spawn_kami(backend).await;
    let gw = FakeGateway::start(kami.data_dir());
    std::fs::write(kami.data_dir().join("kami.toml"), gw.kami_toml()).unwrap();
    kami.restart(Stop::Kill).await;
    (kami, gw)
}

/// A product with `n` codes and a one-code order for `channel`. (The pay
/// page that calls `create_payment` is the generic one; create and query
/// are tested against the gateway in `query`.)
async fn order_for(kami: &Kami, channel: &str, n: usize) -> (i64, Vec<String>, Value) {
    let pid = kami.product(&format!("RSA {channel}"), json!({})).await;
    let codes = make_codes("RSA", n);
    kami.import_codes(pid, &codes).await;
    let (status, order) = kami
        .order(
            json!({"product_id": pid, "quantity": 1, "email": "buyer@example.com",
                      "channel": channel}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "order on {channel}: {order}");
    (pid, codes, order)
}

fn order_no(order: &Value) -> String {
    order["order_no"].as_str().unwrap().to_string()
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

// ---- Alipay ------------------------------------------------------------

fn alipay_params(gw: &FakeGateway, order: &Value, trade_no: &str) -> Value {
    json!({
        "notify_type": "trade_status_sync",
        "notify_id": format!("N{}", random_token(20)),
        "notify_time": "2026-01-01 08:00:00",
        "app_id": gw.config["alipay"]["app_id"],
        "seller_id": gw.config["alipay"]["seller_id"],
        "out_trade_no": order["order_no"],
        "trade_no": trade_no,
        "total_amount": yuan(order["amount"].as_i64().unwrap()),
        "trade_status": "TRADE_SUCCESS",
        "subject": "点卡 & 充值",
        "charset": "utf-8",
        "version": "1.0",
    })
}

/// A notification form signed by the fake Alipay; `key` "wrong" forges it.
async fn alipay_notification(gw: &FakeGateway, params: Value, key: &str) -> (String, bool) {
    let v = gw
        .control("alipay/notify", json!({"params": params, "key": key}))
        .await;
    (
        v["body"].as_str().unwrap().to_string(),
        v["library_verdict"] == json!(true),
    )
}

async fn post_alipay(kami: &Kami, body: String) -> (StatusCode, String) {
    let res = kami
        .http
        .post(kami.url("/pay/alipay/notify"))
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(body)
        .send()
        .await
        .expect("alipay notify");
    (res.status(), res.text().await.unwrap())
}

async fn alipay_genuine_notification_delivers_once_despite_concurrent_duplicates(backend: Backend) {
    let (kami, gw) = shop(backend).await;
    let (pid, codes, order) = order_for(&kami, "alipay", 3).await;

    let trade_no = format!("2026{}", random_token(20));
    let (body, genuine) =
        alipay_notification(&gw, alipay_params(&gw, &order, &trade_no), "alipay").await;
    assert!(
        genuine,
        "python-alipay-sdk does not verify its own notification"
    );
    let kami = Arc::new(kami);
    let sends = (0..5).map(|_| {
        let (kami, body) = (kami.clone(), body.clone());
        tokio::spawn(async move { post_alipay(&kami, body).await })
    });
    for r in futures::future::join_all(sends).await {
        assert_eq!(r.unwrap(), (StatusCode::OK, "success".to_string()));
    }
    let delivered = kami.codes(&order).await;
    assert_eq!(delivered.len(), 1);
    assert_distinct_from(&delivered, &codes);
    assert_eq!(kami.stock3(pid).await, (2, 0, 1));
    let no = order_no(&order);
    assert_eq!(kami.count_events(&no, "delivered").await, 1);
    // TRADE_FINISHED follows TRADE_SUCCESS for the same trade: a duplicate.
    let mut finished = alipay_params(&gw, &order, &trade_no);
    finished["trade_status"] = json!("TRADE_FINISHED");
    let (body, _) = alipay_notification(&gw, finished, "alipay").await;
    assert_eq!(post_alipay(&kami, body).await.1, "success");
    assert_eq!(kami.view(&order).await["cards"], json!(delivered));
    assert_eq!(kami.stock3(pid).await, (2, 0, 1));

    // A partial refund keeps TRADE_SUCCESS and adds refund_fee and
    // gmt_refund: acknowledged and noted on the timeline once, the order
    // still delivered with its code. It read as the payment again and went
    // unrecorded (a payment audit).
    let mut refund = alipay_params(&gw, &order, &trade_no);
    refund["refund_fee"] = json!("1.00");
    refund["gmt_refund"] = json!("2026-01-02 08:00:00.000");
    refund["out_biz_no"] = json!("R1");
    let (body, genuine) = alipay_notification(&gw, refund, "alipay").await;
    assert!(genuine, "python-alipay-sdk's verdict on the refund");
    for _ in 0..2 {
        assert_eq!(
            post_alipay(&kami, body.clone()).await,
            (StatusCode::OK, "success".to_string())
        );
    }
    let noted: Vec<Value> = kami
        .events(&no)
        .await
        .into_iter()
        .filter(|e| e["kind"] == json!("notify_unpaid"))
        .collect();
    assert_eq!(noted.len(), 1, "{noted:?}");
    assert!(
        noted[0].to_string().contains("refunded 1.00 yuan"),
        "{noted:?}"
    );
    let view = kami.view(&order).await;
    assert_eq!(view["status"], json!("delivered"));
    assert_eq!(view["cards"], json!(delivered));
    assert_eq!(kami.stock3(pid).await, (2, 0, 1));
    assert_eq!(kami.count_events(&no, "delivered").await, 1);
}

async fn alipay_forged_foreign_and_unpaid_notifications_change_nothing(backend: Backend) {
    let (kami, gw) = shop(backend).await;
    let (pid, _, order) = order_for(&kami, "alipay", 3).await;
    let no = order_no(&order);
    let amount = order["amount"].as_i64().unwrap();
    let trade_no = format!("2026{}", random_token(20));
    let good = alipay_params(&gw, &order, &trade_no);
    let with = |k: &str, v: Value| {
        let mut p = good.clone();
        p[k] = v;
        p
    };

    // (case, params, signing key, how Kami states the reason)
    let cases = [
        (
            "changed amount",
            with("total_amount", json!(yuan(amount - 1))),
            "alipay",
            "amount mismatch",
        ),
        (
            "other app_id",
            with("app_id", json!("2021000000000000")),
            "alipay",
            "app_id",
        ),
        (
            "other seller_id",
            with("seller_id", json!("2088000000000000")),
            "alipay",
            "seller_id",
        ),
        ("wrong key", good.clone(), "wrong", "signature"),
    ];
    for (case, params, key, reason) in cases {
        let (body, genuine) = alipay_notification(&gw, params, key).await;
        assert_eq!(genuine, key == "alipay", "{case}: library verdict");
        assert_rejected(
            &kami,
            &no,
            case,
            reason,
            post_alipay(&kami, body).await,
            "fail",
        )
        .await;
    }
    // Signed, then changed on the way: the signature no longer covers it.
    let (body, _) = alipay_notification(&gw, good.clone(), "alipay").await;
    let tampered = body.replace(
        &format!("total_amount={}", yuan(amount)),
        "total_amount=0.01",
    );
    assert_ne!(tampered, body);
    let reply = post_alipay(&kami, tampered).await;
    assert_rejected(&kami, &no, "tampered amount", "signature", reply, "fail").await;

    // Genuine for an order placed on another channel.
    let (_, _, sandbox_order) = order_for(&kami, "sandbox", 1).await;
    let (body, _) =
        alipay_notification(&gw, alipay_params(&gw, &sandbox_order, &trade_no), "alipay").await;
    let reply = post_alipay(&kami, body).await;
    let sandbox_no = order_no(&sandbox_order);
    assert_rejected(
        &kami,
        &sandbox_no,
        "other channel",
        "created for channel sandbox",
        reply,
        "fail",
    )
    .await;

    // Genuine, for an order that does not exist: filed under its number.
    let ghost = json!({"order_no": format!("K{}", random_token(16)), "amount": amount});
    let (body, _) = alipay_notification(&gw, alipay_params(&gw, &ghost, &trade_no), "alipay").await;
    assert_eq!(post_alipay(&kami, body).await.1, "fail");
    assert_ghost_recorded(&kami, &ghost).await;

    // Genuine but unpaid: acknowledged, only noted.
    let (body, _) =
        alipay_notification(&gw, with("trade_status", json!("WAIT_BUYER_PAY")), "alipay").await;
    assert_eq!(
        post_alipay(&kami, body).await,
        (StatusCode::OK, "success".into())
    );
    assert_eq!(kami.count_events(&no, "notify_unpaid").await, 1);
    assert_eq!(kami.view(&order).await["status"], json!("pending"));
    assert_eq!(kami.stock3(pid).await, (2, 1, 0));

    // Nothing above used the trade up: the genuine one still pays.
    let (body, _) = alipay_notification(&gw, good, "alipay").await;
    assert_eq!(post_alipay(&kami, body).await.1, "success");
    kami.wait_status(&order, "delivered", Duration::from_secs(5))
        .await;
}

/// The gateway got its failure reply, the order is untouched and the reason
/// is on its timeline.
async fn assert_rejected(
    kami: &Kami,
    order_no: &str,
    case: &str,
    reason: &str,
    (status, body): (StatusCode, String),
    failure_body: &str,
) {
    assert!(status.is_client_error(), "{case}: answered {status} {body}");
    assert!(body.contains(failure_body), "{case}: answered {body}");
    let events = kami.events(order_no).await;
    let rejected: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == json!("notify_rejected"))
        .collect();
    assert!(
        rejected
            .iter()
            .any(|e| e["detail"].as_str().unwrap_or("").contains(reason)),
        "{case}: no notify_rejected event mentioning {reason:?}: {events:?}"
    );
    assert_eq!(kami.count_events(order_no, "paid").await, 0, "{case}");
    let (_, v) = kami
        .admin_get(&format!("/api/v1/admin/orders/{order_no}"))
        .await;
    assert_eq!(v["status"], json!("pending"), "{case}: {v}");
}

/// A notification for an order that does not exist is recorded under the
/// number it claimed, where an operator searching for it will look.
async fn assert_ghost_recorded(kami: &Kami, ghost: &Value) {
    let no = order_no(ghost);
    let events = kami.events(&no).await;
    assert!(
        events.iter().any(|e| e["kind"] == json!("notify_rejected")
            && e["detail"].as_str().unwrap_or("").contains("unknown order")),
        "no rejection recorded for {no}: {events:?}"
    );
}

// ---- WeChat Pay ----------------------------------------------------------

fn transaction(gw: &FakeGateway, order: &Value, transaction_id: &str) -> Value {
    json!({
        "appid": gw.config["wechatpay"]["appid"],
        "mchid": gw.config["wechatpay"]["mchid"],
        "out_trade_no": order["order_no"],
        "transaction_id": transaction_id,
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "success_time": "2026-01-01T08:00:00+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": order["amount"], "payer_total": order["amount"],
                   "currency": "CNY", "payer_currency": "CNY"},
    })
}

/// A callback signed by the fake platform; `extra` picks the key, timestamp,
/// signature or serial.
async fn wechat_callback(
    gw: &FakeGateway,
    tx: Value,
    extra: Value,
) -> (Vec<(String, String)>, String, Value) {
    let mut req = json!({"transaction": tx});
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    let v = gw.control("wechatpay/notify", req).await;
    let headers = v["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    (
        headers,
        v["body"].as_str().unwrap().to_string(),
        v["library_verdict"].clone(),
    )
}

async fn post_wechat(
    kami: &Kami,
    headers: &[(String, String)],
    body: String,
) -> (StatusCode, String) {
    let mut req = kami
        .http
        .post(kami.url("/pay/wechatpay/notify"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let res = req.send().await.expect("wechatpay notify");
    (res.status(), res.text().await.unwrap())
}

async fn wechatpay_genuine_callback_delivers_once_despite_concurrent_duplicates(backend: Backend) {
    let (kami, gw) = shop(backend).await;
    let (pid, codes, order) = order_for(&kami, "wechatpay", 3).await;

    let tx = transaction(&gw, &order, &format!("4200{}", random_token(24)));
    let (headers, body, verdict) = wechat_callback(&gw, tx, json!({})).await;
    assert_eq!(
        verdict,
        json!(true),
        "wechatpayv3 does not accept its own callback"
    );
    let kami = Arc::new(kami);
    let sends = (0..5).map(|_| {
        let (kami, headers, body) = (kami.clone(), headers.clone(), body.clone());
        tokio::spawn(async move { post_wechat(&kami, &headers, body).await })
    });
    for r in futures::future::join_all(sends).await {
        assert_eq!(r.unwrap(), (StatusCode::NO_CONTENT, String::new()));
    }
    let delivered = kami.codes(&order).await;
    assert_eq!(delivered.len(), 1);
    assert_distinct_from(&delivered, &codes);
    assert_eq!(kami.stock3(pid).await, (2, 0, 1));
    assert_eq!(kami.count_events(&order_no(&order), "delivered").await, 1);
}

async fn wechatpay_forged_stale_probe_and_unpaid_callbacks_change_nothing(backend: Backend) {
    let (kami, gw) = shop(backend).await;
    let (pid, _, order) = order_for(&kami, "wechatpay", 3).await;
    let no = order_no(&order);
    let amount = order["amount"].as_i64().unwrap();
    let good = transaction(&gw, &order, &format!("4200{}", random_token(24)));
    let with = |k: &str, v: Value| {
        let mut t = good.clone();
        t[k] = v;
        t
    };
    let stale = now_secs() - 301;

    // (case, transaction, signing options, library verdict, reason)
    let cases = [
        (
            "changed amount",
            with("amount", json!({"total": amount - 1, "currency": "CNY"})),
            json!({}),
            json!(true),
            "amount mismatch",
        ),
        (
            "other currency",
            with("amount", json!({"total": amount, "currency": "USD"})),
            json!({}),
            json!(true),
            "amount mismatch",
        ),
        (
            "other mchid",
            with("mchid", json!("1900000000")),
            json!({}),
            json!(true),
            "mchid",
        ),
        (
            "other appid",
            with("appid", json!("wx0000000000000000")),
            json!({}),
            json!(true),
            "appid",
        ),
        (
            "stale timestamp",
            good.clone(),
            json!({"timestamp": stale}),
            json!(true),
            "300 s",
        ),
        (
            "wrong key",
            good.clone(),
            json!({"key": "wrong"}),
            json!(false),
            "signature does not match",
        ),
        (
            "probe signature",
            good.clone(),
            json!({"signature": "WECHATPAY/SIGNTEST/c2lnbg=="}),
            json!(false),
            "probe",
        ),
        (
            "other platform serial",
            good.clone(),
            json!({"serial": "PUB_KEY_ID_0000"}),
            Value::Null,
            "serial",
        ),
    ];
    for (case, tx, extra, verdict, reason) in cases {
        let (headers, body, library) = wechat_callback(&gw, tx, extra).await;
        assert_eq!(library, verdict, "{case}: wechatpayv3's verdict");
        let reply = post_wechat(&kami, &headers, body).await;
        assert_rejected(&kami, &no, case, reason, reply.clone(), "\"code\":\"FAIL\"").await;
        assert_eq!(reply.0, StatusCode::BAD_REQUEST, "{case}");
    }

    let (_, _, sandbox_order) = order_for(&kami, "sandbox", 1).await;
    let (headers, body, _) =
        wechat_callback(&gw, transaction(&gw, &sandbox_order, "4200x"), json!({})).await;
    let reply = post_wechat(&kami, &headers, body).await;
    let sandbox_no = order_no(&sandbox_order);
    assert_rejected(
        &kami,
        &sandbox_no,
        "other channel",
        "created for channel sandbox",
        reply,
        "FAIL",
    )
    .await;

    let ghost = json!({"order_no": format!("K{}", random_token(16)), "amount": amount});
    let (headers, body, _) =
        wechat_callback(&gw, transaction(&gw, &ghost, "4200g"), json!({})).await;
    assert_eq!(
        post_wechat(&kami, &headers, body).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_ghost_recorded(&kami, &ghost).await;

    let mut notpay = with("trade_state", json!("NOTPAY"));
    notpay.as_object_mut().unwrap().remove("transaction_id");
    let (headers, body, _) = wechat_callback(&gw, notpay, json!({})).await;
    assert_eq!(
        post_wechat(&kami, &headers, body).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(kami.count_events(&no, "notify_unpaid").await, 1);
    assert_eq!(kami.stock3(pid).await, (2, 1, 0));

    // A refund's callback (its resource has no appid, trade state or
    // currency) is acknowledged, so WeChat Pay stops retrying, and noted on
    // the order's timeline; it pays nothing. It was refused as a malformed
    // transaction (a payment audit).
    let refund = json!({
        "mchid": gw.config["wechatpay"]["mchid"],
        "out_trade_no": order["order_no"],
        "transaction_id": "4200000000000000000000000001",
        "out_refund_no": "R1",
        "refund_id": "50000000000000000000000000001",
        "refund_status": "SUCCESS",
        "success_time": "2026-01-01T08:00:00+08:00",
        "user_received_account": "支付用户零钱",
        "amount": {"total": amount, "refund": amount, "payer_total": amount, "payer_refund": amount},
    });
    let (headers, body, library) =
        wechat_callback(&gw, refund.clone(), json!({"event_type": "REFUND.SUCCESS"})).await;
    assert_eq!(library, json!(true), "wechatpayv3's verdict");
    assert_eq!(
        post_wechat(&kami, &headers, body).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(kami.count_events(&no, "notify_unpaid").await, 2);
    assert_eq!(kami.stock3(pid).await, (2, 1, 0));
    // Another merchant's refund is refused.
    let mut theirs = refund;
    theirs["mchid"] = json!("1900000000");
    let (headers, body, _) =
        wechat_callback(&gw, theirs, json!({"event_type": "REFUND.SUCCESS"})).await;
    let reply = post_wechat(&kami, &headers, body).await;
    assert_rejected(
        &kami,
        &no,
        "another merchant's refund",
        "mchid",
        reply,
        "FAIL",
    )
    .await;

    let (headers, body, _) = wechat_callback(&gw, good, json!({})).await;
    assert_eq!(
        post_wechat(&kami, &headers, body).await.0,
        StatusCode::NO_CONTENT
    );
    kami.wait_status(&order, "delivered", Duration::from_secs(5))
        .await;
}

#[path = "channels_rsa/query.rs"]
mod query;

// ---- the pay page ------------------------------------------------------

/// WeChat Pay Native and Alipay precreate answer with a URL for the buyer's
/// phone: the pay page shows it as a QR code (after a create request the
/// fake gateway verified) and, once the payment lands, moves to the order.
async fn scan_to_pay_channels_show_a_qr_code_until_the_order_is_paid(backend: Backend) {
    let (kami, gw) = shop(backend).await;
    for channel in ["wechatpay", "alipay"] {
        let (_, _, order) = order_for(&kami, channel, 2).await;
        let page = match kami.open_pay_page(&order).await {
            Err((status, page)) => {
                assert_eq!(status, StatusCode::OK, "{channel}: {page}");
                page
            }
            Ok(location) => panic!("{channel}: redirected to {location} instead of a QR code"),
        };
        assert!(
            // (the template escapes the '/' of the data URI as &#x2f;)
            page.contains(r#"<img class="qr" src="data:image"#) && page.contains("svg+xml;base64,"),
            "{channel}: no QR code on the pay page:\n{page}"
        );
        assert!(page.contains(&order_no(&order)), "{channel}");
        // Paid: the same page now leads to the order and its codes.
        if channel == "wechatpay" {
            let tx = transaction(&gw, &order, &format!("4200{}", random_token(24)));
            let (headers, body, _) = wechat_callback(&gw, tx, json!({})).await;
            assert_eq!(
                post_wechat(&kami, &headers, body).await.0,
                StatusCode::NO_CONTENT
            );
        } else {
            let params = alipay_params(&gw, &order, &format!("2026{}", random_token(20)));
            let (body, _) = alipay_notification(&gw, params, "alipay").await;
            assert_eq!(post_alipay(&kami, body).await.1, "success");
        }
        let location = kami
            .open_pay_page(&order)
            .await
            .expect("a paid order's pay page redirects");
        assert_eq!(location, format!("/orders/{}", order_no(&order)));
    }
    gw.assert_all_verified(2).await;
}

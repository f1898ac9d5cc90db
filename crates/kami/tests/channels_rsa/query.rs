//! `query_payment` (reconciliation) and `create_payment` straight through
//! kami-pay against the fake gateway: requests must pass the gateway
//! libraries' signature checks, and answers are trusted only once their
//! signature verifies.

use std::path::Path;

use kami_pay::{ChannelContext, PaymentRequest};
use serde_json::json;

use super::gateway::FakeGateway;
use crate::common::random_token;

fn channel(
    gw: &FakeGateway,
    dir: &Path,
    name: &str,
    overrides: &[(&str, &str)],
) -> std::sync::Arc<dyn kami_pay::Channel> {
    let ctx = ChannelContext {
        public_url: "http://127.0.0.1:9".into(),
        base_dir: dir.to_path_buf(),
    };
    kami_pay::build_channel(name, &gw.section(name, overrides), &ctx)
        .expect("channel builds")
        .expect("channel enabled")
}

fn request() -> PaymentRequest {
    PaymentRequest {
        order_no: format!("K{}", random_token(16)),
        amount: 1990,
        currency: "CNY".into(),
        subject: "点卡 Game card".into(),
        notify_url: "http://127.0.0.1:9/pay/x/notify".into(),
        return_url: "http://127.0.0.1:9/pay/x/return".into(),
        reference: None,
    }
}

#[tokio::test]
async fn alipay_query_reads_verified_answers_only() {
    let dir = tempfile::tempdir().unwrap();
    let gw = FakeGateway::start(dir.path());
    let alipay = channel(&gw, dir.path(), "alipay", &[]);
    let req = request();

    let start = alipay.create_payment(&req).await.expect("precreate");
    assert!(start.pay_url.starts_with("https://qr.alipay.com/"));
    let waiting = alipay
        .query_payment(&req)
        .await
        .unwrap()
        .expect("known trade");
    assert_eq!(
        (waiting.paid, waiting.status.as_str()),
        (false, "WAIT_BUYER_PAY")
    );

    gw.control(
        "alipay/trade",
        json!({"out_trade_no": req.order_no, "trade_status": "TRADE_SUCCESS", "trade_no": "2026Q1"}),
    )
    .await;
    let paid = alipay
        .query_payment(&req)
        .await
        .unwrap()
        .expect("known trade");
    assert!(paid.paid);
    assert_eq!(
        (paid.amount, paid.currency.as_str(), paid.trade_no.as_str()),
        (1990, "CNY", "2026Q1")
    );
    assert_eq!(paid.order_no, req.order_no);

    let unknown = PaymentRequest {
        order_no: "K-never-created".into(),
        ..request()
    };
    assert!(alipay.query_payment(&unknown).await.unwrap().is_none());
    gw.assert_all_verified(4).await;

    // An answer whose signature does not verify is not believed.
    gw.control("corrupt", json!({"gateway": "alipay"})).await;
    let err = alipay.query_payment(&req).await.unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");

    // And the gateway really checks Kami's signature: a request signed with
    // another key is refused, and Kami reports the refusal.
    let forger = channel(
        &gw,
        dir.path(),
        "alipay",
        &[("app_private_key_file", "wrong_private.pem")],
    );
    assert!(forger.create_payment(&request()).await.is_err());
    let log = gw.log().await;
    assert_eq!(log.last().unwrap()["verified"], json!(false), "{log:?}");
}

#[tokio::test]
async fn wechatpay_query_reads_verified_answers_only() {
    let dir = tempfile::tempdir().unwrap();
    let gw = FakeGateway::start(dir.path());
    let wechat = channel(&gw, dir.path(), "wechatpay", &[]);
    let req = request();

    let start = wechat.create_payment(&req).await.expect("native order");
    assert!(start.pay_url.starts_with("weixin://wxpay/bizpayurl"));
    let waiting = wechat
        .query_payment(&req)
        .await
        .unwrap()
        .expect("known order");
    assert_eq!((waiting.paid, waiting.status.as_str()), (false, "NOTPAY"));

    gw.control(
        "wechatpay/trade",
        json!({"out_trade_no": req.order_no, "trade_state": "SUCCESS", "transaction_id": "4200Q1"}),
    )
    .await;
    let paid = wechat
        .query_payment(&req)
        .await
        .unwrap()
        .expect("known order");
    assert!(paid.paid);
    assert_eq!(
        (paid.amount, paid.currency.as_str(), paid.trade_no.as_str()),
        (1990, "CNY", "4200Q1")
    );

    let unknown = PaymentRequest {
        order_no: "K-never-created".into(),
        ..request()
    };
    assert!(wechat.query_payment(&unknown).await.unwrap().is_none());
    gw.assert_all_verified(4).await;

    gw.control("corrupt", json!({"gateway": "wechatpay"})).await;
    let err = wechat.query_payment(&req).await.unwrap_err();
    assert!(err.to_string().contains("not trusted"), "{err}");

    let forger = channel(
        &gw,
        dir.path(),
        "wechatpay",
        &[("merchant_private_key_file", "wrong_private.pem")],
    );
    assert!(forger.create_payment(&request()).await.is_err());
    let log = gw.log().await;
    assert_eq!(log.last().unwrap()["verified"], json!(false), "{log:?}");
}

/// page/wap pay: the signed URL the buyer's browser takes to the cashier
/// passes the official SDK's signature check.
#[tokio::test]
async fn alipay_page_and_wap_pay_urls_are_signed_for_the_cashier() {
    let dir = tempfile::tempdir().unwrap();
    let gw = FakeGateway::start(dir.path());
    for mode in ["page", "wap"] {
        let alipay = channel(&gw, dir.path(), "alipay", &[("mode", mode)]);
        let start = alipay.create_payment(&request()).await.expect("pay URL");
        let cashier = reqwest::get(&start.pay_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(cashier.contains("收银台 19.90"), "{mode}: {cashier}");
    }
    gw.assert_all_verified(2).await;
}

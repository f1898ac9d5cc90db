use super::*;
use crate::rsa_keys::{self, test_keys};

const APIV3_KEY: &str = "0123456789abcdef0123456789ABCDEF";
const PLATFORM_SERIAL: &str = "PUB_KEY_ID_0114232134912410000000000000";

#[test]
fn request_signing_string_has_five_lines() {
    assert_eq!(
        crypto::request_message(
            "GET",
            "/v3/pay/transactions/out-trade-no/K1?mchid=1900000001",
            1_554_208_460,
            "593BEC0C930BF1AFEB40B4A08C8FB242",
            ""
        ),
        "GET\n/v3/pay/transactions/out-trade-no/K1?mchid=1900000001\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
    );
    assert_eq!(
        crypto::platform_message("1554208460", "N", b"{\"a\":1}"),
        b"1554208460\nN\n{\"a\":1}\n"
    );
}

struct Fixture {
    channel: Wechatpay,
    platform_private: SigningKey<Sha256>,
    merchant_public: VerifyingKey<Sha256>,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn config() -> WechatpayConfig {
    WechatpayConfig {
        gateway: "http://127.0.0.1:1".into(),
        mchid: "1900000001".into(),
        appid: "wxd678efh567hg6787".into(),
        apiv3_key: APIV3_KEY.into(),
        merchant_serial: "5157F09EFDC096DE15EBE81A47057A7232F1B8E1".into(),
        merchant_private_key_file: Some("merchant_private.pem".into()),
        merchant_private_key: None,
        platform_serial: PLATFORM_SERIAL.into(),
        platform_public_key_file: Some("platform_public.pem".into()),
        platform_public_key: None,
    }
}

fn fixture() -> Fixture {
    let dir = test_keys::temp_dir("wechatpay");
    let (_, merchant_public) = test_keys::pair(&dir, "merchant");
    let (platform_private, _) = test_keys::pair(&dir, "platform");
    let ctx = ChannelContext {
        public_url: "http://127.0.0.1:1".into(),
        base_dir: dir.clone(),
    };
    Fixture {
        channel: Wechatpay::new(config(), &ctx).unwrap(),
        platform_private: rsa_keys::load_private_key("k", &platform_private).unwrap(),
        merchant_public: rsa_keys::load_public_key("k", &merchant_public).unwrap(),
        dir,
    }
}

fn transaction(overrides: serde_json::Value) -> String {
    let mut tx = serde_json::json!({
        "appid": "wxd678efh567hg6787",
        "mchid": "1900000001",
        "out_trade_no": "K1234567890",
        "transaction_id": "4200000000202601010000000001",
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "amount": {"total": 990, "payer_total": 990, "currency": "CNY", "payer_currency": "CNY"},
    });
    for (k, v) in overrides.as_object().unwrap() {
        tx[k] = v.clone();
    }
    tx.to_string()
}

fn callback(
    key: &SigningKey<Sha256>,
    ts: i64,
    plain: &str,
    signature: Option<&str>,
) -> Notification {
    let nonce = "fdasflkja484";
    let body = serde_json::json!({
        "id": "EV-2018022511223320873",
        "create_time": "2026-01-01T08:00:00+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": {
            "original_type": "transaction",
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": crypto::encrypt(APIV3_KEY.as_bytes().try_into().unwrap(), nonce, "transaction", plain),
            "associated_data": "transaction",
            "nonce": nonce,
        },
    })
    .to_string();
    let header_nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
    let sig = signature.map(str::to_string).unwrap_or_else(|| {
        rsa_keys::sign(
            key,
            &crypto::platform_message(&ts.to_string(), header_nonce, body.as_bytes()),
        )
    });
    Notification {
        query: String::new(),
        headers: vec![
            ("wechatpay-serial".into(), PLATFORM_SERIAL.into()),
            ("wechatpay-timestamp".into(), ts.to_string()),
            ("wechatpay-nonce".into(), header_nonce.into()),
            ("wechatpay-signature".into(), sig),
            (
                "wechatpay-signature-type".into(),
                "WECHATPAY2-SHA256-RSA2048".into(),
            ),
        ],
        body: body.into_bytes(),
    }
}

#[test]
fn a_genuine_callback_is_verified_decrypted_and_parsed() {
    let f = fixture();
    let n = callback(
        &f.platform_private,
        1000,
        &transaction(serde_json::json!({})),
        None,
    );
    let notice = f.channel.verify_notification(&n, 1200).unwrap();
    assert_eq!(notice.order_no, "K1234567890");
    assert_eq!(notice.trade_no, "4200000000202601010000000001");
    assert_eq!((notice.amount, notice.currency.as_str()), (990, "CNY"));
    assert!(notice.paid);
    assert!(!notice.raw.contains(APIV3_KEY));

    let notpay = transaction(serde_json::json!({"trade_state": "NOTPAY", "transaction_id": null}));
    let n = callback(&f.platform_private, 1000, &notpay, None);
    let notice = f.channel.verify_notification(&n, 1000).unwrap();
    assert!(!notice.paid);
    assert_eq!(notice.status, "NOTPAY");
}

#[test]
fn forged_stale_probe_and_foreign_callbacks_are_rejected() {
    let f = fixture();
    let good = transaction(serde_json::json!({}));
    let reason = |n: &Notification, now: i64| f.channel.verify_notification(n, now).unwrap_err();

    let stale = callback(&f.platform_private, 1000, &good, None);
    let rej = reason(&stale, 1301);
    assert!(rej.reason.contains("300 s"), "{}", rej.reason);
    // The order number comes from the resource, so the rejection is filed on the order.
    assert_eq!(rej.order_no.as_deref(), Some("K1234567890"));
    assert!(reason(&stale, 699).reason.contains("300 s"));

    let probe = callback(
        &f.platform_private,
        1000,
        &good,
        Some("WECHATPAY/SIGNTEST/AAAA"),
    );
    assert!(reason(&probe, 1000).reason.contains("probe"));

    let mut body_changed = callback(&f.platform_private, 1000, &good, None);
    body_changed.body = String::from_utf8(body_changed.body)
        .unwrap()
        .replace("支付成功", "pay ok")
        .into_bytes();
    assert!(reason(&body_changed, 1000).reason.contains("signature"));

    let mut other_serial = callback(&f.platform_private, 1000, &good, None);
    other_serial.headers[0].1 = "PUB_KEY_ID_OTHER".into();
    assert!(reason(&other_serial, 1000).reason.contains("serial"));

    let other_mchid = callback(
        &f.platform_private,
        1000,
        &transaction(serde_json::json!({"mchid": "1900000002"})),
        None,
    );
    assert!(reason(&other_mchid, 1000).reason.contains("mchid"));
    let other_appid = callback(
        &f.platform_private,
        1000,
        &transaction(serde_json::json!({"appid": "wx0"})),
        None,
    );
    assert!(reason(&other_appid, 1000).reason.contains("appid"));

    let mut sm2 = callback(&f.platform_private, 1000, &good, None);
    sm2.headers[4].1 = "WECHATPAY2-SM2-WITH-SM3".into();
    assert!(reason(&sm2, 1000).reason.contains("Signature-Type"));

    let mut no_header = callback(&f.platform_private, 1000, &good, None);
    no_header
        .headers
        .retain(|(k, _)| k != "wechatpay-signature");
    assert!(reason(&no_header, 1000)
        .reason
        .contains("Wechatpay-Signature"));
}

#[test]
fn the_authorization_header_is_signed_with_the_merchant_key() {
    let f = fixture();
    let auth = Authorizer {
        mchid: &f.channel.mchid,
        serial: &f.channel.merchant_serial,
        key: &f.channel.merchant_key,
    }
    .header(
        "POST",
        "/v3/pay/transactions/native",
        "{\"a\":1}",
        1_554_208_460,
        "NONCE",
    );
    let fields: std::collections::HashMap<&str, &str> = auth
        .strip_prefix("WECHATPAY2-SHA256-RSA2048 ")
        .unwrap()
        .split(',')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k, v.trim_matches('"'))
        })
        .collect();
    assert_eq!(fields["mchid"], "1900000001");
    assert_eq!(fields["timestamp"], "1554208460");
    assert_eq!(
        fields["serial_no"],
        "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
    );
    let message = "POST\n/v3/pay/transactions/native\n1554208460\nNONCE\n{\"a\":1}\n";
    assert!(rsa_keys::verify(
        &f.merchant_public,
        message.as_bytes(),
        fields["signature"]
    ));
}

#[test]
fn a_short_apiv3_key_or_missing_key_file_refuses_to_build() {
    let f = fixture();
    let ctx = ChannelContext {
        public_url: "http://127.0.0.1:1".into(),
        base_dir: f.dir.clone(),
    };
    let short = WechatpayConfig {
        apiv3_key: "too short".into(),
        ..config()
    };
    assert!(Wechatpay::new(short, &ctx).is_err());
    let missing = WechatpayConfig {
        platform_public_key_file: Some("nowhere.pem".into()),
        platform_public_key: None,
        ..config()
    };
    assert!(Wechatpay::new(missing, &ctx).is_err());
}

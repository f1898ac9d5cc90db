use super::*;
use crate::rsa_keys::test_keys;

#[test]
fn request_signing_string_is_sorted_non_empty_raw_and_skips_sign() {
    let p: BTreeMap<String, String> = [
        ("sign", "zzz"),
        ("method", "alipay.trade.precreate"),
        ("app_id", "2021000000000001"),
        (
            "biz_content",
            r#"{"out_trade_no":"K1","total_amount":"9.90","subject":"点卡 a&b"}"#,
        ),
        ("notify_url", "http://127.0.0.1/pay/alipay/notify"),
        ("empty", ""),
        ("sign_type", "RSA2"),
        ("timestamp", "2026-01-02 03:04:05"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        signing_string(&p, &["sign"]),
        "app_id=2021000000000001&biz_content={\"out_trade_no\":\"K1\",\"total_amount\":\"9.90\",\"subject\":\"点卡 a&b\"}\
         &method=alipay.trade.precreate&notify_url=http://127.0.0.1/pay/alipay/notify\
         &sign_type=RSA2&timestamp=2026-01-02 03:04:05"
    );
    // Notifications leave sign_type out as well.
    assert!(!signing_string(&p, &["sign", "sign_type"]).contains("sign_type"));
}

#[test]
fn timestamp_is_beijing_time() {
    let t = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap(); // 2026-01-01 00:00 UTC
    assert_eq!(timestamp(t), "2026-01-01 08:00:00");
}

#[test]
fn yuan_amounts_are_exact() {
    assert_eq!(yuan(990), "9.90");
    assert_eq!(yuan(5), "0.05");
    assert_eq!(yuan(100_000), "1000.00");
    assert_eq!(parse_yuan("9.90"), Some(990));
    assert_eq!(parse_yuan("9.9"), Some(990));
    assert_eq!(parse_yuan("9"), Some(900));
    assert_eq!(parse_yuan("0.01"), Some(1));
    for bad in [
        "", "9.901", "-9.90", "+9.90", "9.", ".9", "9,90", "1e3", " 9.90", "9.9x",
    ] {
        assert_eq!(parse_yuan(bad), None, "{bad:?}");
    }
}

struct Fixture {
    channel: Alipay,
    alipay_private: SigningKey<Sha256>,
    dir: std::path::PathBuf,
}

fn fixture(seller_id: Option<&str>) -> Fixture {
    let dir = test_keys::temp_dir("alipay");
    test_keys::pair(&dir, "app");
    let (alipay_private, _) = test_keys::pair(&dir, "alipay");
    let ctx = ChannelContext {
        public_url: "http://127.0.0.1:1".into(),
        base_dir: dir.clone(),
    };
    let cfg = AlipayConfig {
        gateway: "http://127.0.0.1:1/gateway.do".into(),
        app_id: "2021000000000001".into(),
        seller_id: seller_id.map(str::to_string),
        // Relative paths resolve against the kami.toml directory.
        app_private_key_file: Some("app_private.pem".into()),
        app_private_key: None,
        alipay_public_key_file: Some("alipay_public.pem".into()),
        alipay_public_key: None,
        mode: Mode::Page,
    };
    Fixture {
        channel: Alipay::new(cfg, &ctx).unwrap(),
        alipay_private: rsa_keys::load_private_key("k", &alipay_private).unwrap(),
        dir,
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn notify(key: &SigningKey<Sha256>, overrides: &[(&str, &str)]) -> Notification {
    let mut p: BTreeMap<String, String> = [
        ("app_id", "2021000000000001"),
        ("seller_id", "2088000000000001"),
        ("out_trade_no", "K1234567890"),
        ("trade_no", "2026010122001400000000000001"),
        ("total_amount", "9.90"),
        ("trade_status", "TRADE_SUCCESS"),
        ("subject", "点卡 & more"),
        ("notify_time", "2026-01-01 08:00:00"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        p.insert(k.to_string(), v.to_string());
    }
    let sig = rsa_keys::sign(key, signing_string(&p, &["sign", "sign_type"]).as_bytes());
    p.insert("sign".into(), sig);
    p.insert("sign_type".into(), "RSA2".into());
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&p)
        .finish();
    Notification {
        body: body.into_bytes(),
        ..Default::default()
    }
}

#[test]
fn a_genuine_notification_is_verified_and_parsed() {
    let f = fixture(Some("2088000000000001"));
    let notice = f
        .channel
        .verify_notification(&notify(&f.alipay_private, &[]), 0)
        .unwrap();
    assert_eq!(notice.order_no, "K1234567890");
    assert_eq!(notice.trade_no, "2026010122001400000000000001");
    assert_eq!((notice.amount, notice.currency.as_str()), (990, "CNY"));
    assert!(notice.paid);

    let waiting = notify(&f.alipay_private, &[("trade_status", "WAIT_BUYER_PAY")]);
    let notice = f.channel.verify_notification(&waiting, 0).unwrap();
    assert!(!notice.paid);
    assert_eq!(notice.status, "WAIT_BUYER_PAY");

    // A partial refund keeps TRADE_SUCCESS: it is noted, never a payment.
    for extra in [
        &[
            ("refund_fee", "3.00"),
            ("gmt_refund", "2026-01-02 08:00:00.000"),
        ][..],
        &[("refund_fee", "3.00")][..],
        &[("gmt_refund", "2026-01-02 08:00:00.000")][..],
    ] {
        let refund = notify(&f.alipay_private, extra);
        let notice = f.channel.verify_notification(&refund, 0).unwrap();
        assert!(!notice.paid, "{extra:?}");
        assert!(
            notice.status.starts_with("TRADE_SUCCESS: refunded"),
            "{}",
            notice.status
        );
    }
    // An empty or zero refund_fee is no refund.
    for fee in ["", "0.00"] {
        let n = notify(&f.alipay_private, &[("refund_fee", fee)]);
        assert!(
            f.channel.verify_notification(&n, 0).unwrap().paid,
            "{fee:?}"
        );
    }
}

#[test]
fn tampered_foreign_and_malformed_notifications_are_rejected() {
    let f = fixture(Some("2088000000000001"));
    let reason = |n: &Notification| f.channel.verify_notification(n, 0).unwrap_err().reason;

    let mut tampered = notify(&f.alipay_private, &[]);
    tampered.body = String::from_utf8(tampered.body)
        .unwrap()
        .replace("total_amount=9.90", "total_amount=0.01")
        .into_bytes();
    assert!(reason(&tampered).contains("signature"));

    let other_key = {
        let dir = test_keys::temp_dir("alipay-other");
        let (k, _) = test_keys::pair(&dir, "x");
        let key = rsa_keys::load_private_key("k", &k).unwrap();
        std::fs::remove_dir_all(dir).ok();
        key
    };
    let forged = notify(&other_key, &[]);
    let rej = f.channel.verify_notification(&forged, 0).unwrap_err();
    assert!(rej.reason.contains("signature"));
    assert_eq!(rej.order_no.as_deref(), Some("K1234567890"));

    let other_app = notify(&f.alipay_private, &[("app_id", "2021000000000002")]);
    assert!(reason(&other_app).contains("app_id"));
    let other_seller = notify(&f.alipay_private, &[("seller_id", "2088000000000002")]);
    assert!(reason(&other_seller).contains("seller_id"));
    let odd_amount = notify(&f.alipay_private, &[("total_amount", "9.901")]);
    assert!(reason(&odd_amount).contains("total_amount"));

    let mut unsigned = notify(&f.alipay_private, &[]);
    unsigned.body = b"out_trade_no=K1&total_amount=9.90".to_vec();
    assert_eq!(reason(&unsigned), "missing sign");
    let mut twice = notify(&f.alipay_private, &[]);
    twice.body.extend_from_slice(b"&total_amount=0.01");
    assert!(reason(&twice).contains("twice"));
}

#[tokio::test]
async fn page_pay_url_carries_a_request_signed_with_the_app_key() {
    let f = fixture(None);
    let start = f
        .channel
        .create_payment(&PaymentRequest {
            order_no: "K1234567890".into(),
            amount: 990,
            currency: "CNY".into(),
            subject: "Game card".into(),
            notify_url: String::new(),
            return_url: "http://127.0.0.1:1/pay/alipay/return".into(),
            reference: None,
        })
        .await
        .unwrap();
    let (base, query) = start.pay_url.split_once('?').unwrap();
    assert_eq!(base, "http://127.0.0.1:1/gateway.do");
    let p = parse_form(query.as_bytes()).unwrap();
    assert_eq!(p["method"], "alipay.trade.page.pay");
    assert_eq!(p["notify_url"], "http://127.0.0.1:1/pay/alipay/notify");
    let biz: serde_json::Value = serde_json::from_str(&p["biz_content"]).unwrap();
    assert_eq!(biz["total_amount"], "9.90");
    assert_eq!(biz["product_code"], "FAST_INSTANT_TRADE_PAY");
    let app_public = rsa_keys::load_public_key("k", &f.dir.join("app_public.pem")).unwrap();
    assert!(rsa_keys::verify(
        &app_public,
        signing_string(&p, &["sign"]).as_bytes(),
        &p["sign"]
    ));
}

#[test]
fn a_missing_or_empty_key_refuses_to_build() {
    let f = fixture(None);
    std::fs::write(f.dir.join("alipay_public.pem"), "").unwrap();
    let cfg = AlipayConfig {
        gateway: "http://127.0.0.1:1/gateway.do".into(),
        app_id: "2021000000000001".into(),
        seller_id: None,
        app_private_key_file: Some("app_private.pem".into()),
        app_private_key: None,
        alipay_public_key_file: Some("alipay_public.pem".into()),
        alipay_public_key: None,
        mode: Mode::Precreate,
    };
    let ctx = ChannelContext {
        public_url: "http://127.0.0.1:1".into(),
        base_dir: f.dir.clone(),
    };
    assert!(Alipay::new(cfg, &ctx).is_err());
}

#[test]
fn the_registry_builds_it_from_its_section_and_refuses_unknown_keys() {
    let f = fixture(None);
    let ctx = ChannelContext {
        public_url: "http://127.0.0.1:1".into(),
        base_dir: f.dir.clone(),
    };
    let section: toml::Table = toml::from_str(
        r#"
        gateway = "http://127.0.0.1:1/gateway.do"
        app_id = "2021000000000001"
        app_private_key_file = "app_private.pem"
        alipay_public_key_file = "alipay_public.pem"
        mode = "wap"
        "#,
    )
    .unwrap();
    let built = crate::build_channel(NAME, &section, &ctx).unwrap().unwrap();
    assert_eq!(built.name(), NAME);
    let mut typo = section.clone();
    typo.insert("app_private_key".into(), "x".into());
    assert!(crate::build_channel(NAME, &typo, &ctx).is_err());
    let mut bad_mode = section;
    bad_mode.insert("mode".into(), "app".into());
    assert!(crate::build_channel(NAME, &bad_mode, &ctx).is_err());
}

#[test]
fn pasted_pem_keys_build_the_same_channel_as_key_files() {
    let f = fixture(None);
    let ctx = ChannelContext {
        public_url: "http://127.0.0.1:1".into(),
        base_dir: std::path::PathBuf::from("/nonexistent"),
    };
    let pem = |name: &str| std::fs::read_to_string(f.dir.join(name)).unwrap();
    let mut section = toml::Table::new();
    section.insert("gateway".into(), "http://127.0.0.1:1/gateway.do".into());
    section.insert("app_id".into(), "2021000000000001".into());
    section.insert("app_private_key".into(), pem("app_private.pem").into());
    section.insert("alipay_public_key".into(), pem("alipay_public.pem").into());
    let built = crate::build_channel(NAME, &section, &ctx).unwrap().unwrap();
    let n = notify(&f.alipay_private, &[]);
    assert!(built.verify_notification(&n, 0).is_ok());

    // A bad paste is a clear error that names the field, never the key.
    let mut bad = section.clone();
    bad.insert(
        "app_private_key".into(),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----".into(),
    );
    let e = crate::build_channel(NAME, &bad, &ctx)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("app_private_key") && e.contains("not a PEM"),
        "{e}"
    );
    let mut empty = section;
    empty.insert("alipay_public_key".into(), "  ".into());
    let e = crate::build_channel(NAME, &empty, &ctx)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("empty"), "{e}");
}

#[test]
fn empty_parameters_count_in_a_notifications_signature() {
    // Alipay's SDKs sign and check a notification's string with its empty
    // parameters (`passback_params=`) in it.
    let f = fixture(Some("2088000000000001"));
    let mut n = notify(&f.alipay_private, &[]);
    let mut p: BTreeMap<String, String> = form_urlencoded::parse(&n.body).into_owned().collect();
    p.remove("sign");
    p.insert("passback_params".into(), String::new());
    let full: String = p
        .iter()
        .filter(|(k, _)| k.as_str() != "sign_type")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    p.insert(
        "sign".into(),
        rsa_keys::sign(&f.alipay_private, full.as_bytes()),
    );
    n.body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&p)
        .finish()
        .into_bytes();
    let notice = f.channel.verify_notification(&n, 0).unwrap();
    assert_eq!(notice.order_no, "K1234567890");
    // A value changed after signing still fails.
    p.insert("total_amount".into(), "0.01".into());
    n.body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&p)
        .finish()
        .into_bytes();
    assert!(f.channel.verify_notification(&n, 0).is_err());
}

//! Issue 4 over real HTTP on both backends: payment channels configured in
//! the admin panel against the fake gateway (built on the gateways' own
//! libraries), paid with genuinely signed notifications; the Test button's
//! real round trip; secrets never on disk in plaintext, in a dump, in the
//! logs or in the page; and a disabled channel that takes no new orders but
//! still accepts the notifications of orders already on it.

#[macro_use]
mod common;

use std::process::Command;
use std::time::Duration;

use common::gateways::{success_reply, FakeGateway};
use common::panel::{create_admin, Page, Panel};
use common::{contains_bytes, files_under, make_codes, spawn_kami, Backend, Kami, Stop};
use reqwest::StatusCode;
use serde_json::{json, Value};

both_backends!(
    channels_configured_in_the_panel_take_real_payments,
    a_disabled_channel_takes_no_new_orders_but_keeps_paid_money
);

async fn owner_panel(kami: &Kami, email: &str) -> Panel {
    let password = create_admin(kami, email, "owner");
    let p = Panel::new(kami);
    p.login(email, &password).await;
    p
}

async fn save_channel(p: &Panel, name: &str, fields: &[(&str, &str)], enabled: bool) -> Page {
    let csrf = p.get("/admin/channels").await.csrf();
    let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf)];
    form.extend_from_slice(fields);
    if enabled {
        form.push(("enabled", "1"));
    }
    p.post(&format!("/admin/channels/{name}"), &form).await
}

async fn test_channel(p: &Panel, name: &str) -> String {
    let csrf = p.get("/admin/channels").await.csrf();
    let page = p
        .post(&format!("/admin/channels/{name}/test"), &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let marker = format!("data-channel-note=\"{name}\">");
    let start = page.body.find(&marker).expect("a note on the channel") + marker.len();
    let end = page.body[start..].find('<').unwrap();
    page.body[start..start + end].to_string()
}

async fn offered(kami: &Kami) -> Vec<String> {
    let v: Value = kami
        .http
        .get(kami.url("/api/v1/channels"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn epay_fields(gw: &FakeGateway) -> Vec<(&'static str, String)> {
    vec![
        ("gateway", format!("{}/epay/", gw.base)),
        ("pid", gw.epay_pid.clone()),
        ("key", gw.epay_key.clone()),
    ]
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

/// Pays `created` through the pay page and a notification the gateway's
/// library signed; asserts the gateway's success reply and delivery.
async fn pay_through(kami: &Kami, gw: &FakeGateway, channel: &str, created: &Value) {
    kami.start_payment(gw, channel, created).await;
    let no = created["order_no"].as_str().unwrap();
    let d = gw.notification(channel, no, json!({})).await;
    let (status, text) = kami.deliver(channel, &d).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(text, success_reply(channel));
    kami.wait_status(created, "delivered", Duration::from_secs(10))
        .await;
}

fn stored_bytes(kami: &Kami) -> Vec<(String, Vec<u8>)> {
    match kami.backend {
        Backend::Sqlite => files_under(kami.data_dir())
            .into_iter()
            .filter_map(|p| Some((p.display().to_string(), std::fs::read(&p).ok()?)))
            .collect(),
        Backend::Postgres => {
            let out = Command::new("pg_dump")
                .args(["--data-only", "--no-owner"])
                .arg(&kami.database_url)
                .output()
                .expect("run pg_dump");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            vec![("pg_dump".into(), out.stdout)]
        }
    }
}

async fn channels_configured_in_the_panel_take_real_payments(backend: Backend) {
    let gw = FakeGateway::start();
    let kami = spawn_kami(backend).await;
    let p = owner_panel(&kami, "owner@example.com").await;
    assert_eq!(offered(&kami).await, ["sandbox"]);
    let page = p.get("/admin/channels").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("由 kami.toml 管理"), "{}", page.body);
    // Each field by its label, with its kami.toml key beside it.
    assert!(
        page.body
            .contains("商户 ID <span class=\"key-name\">pid</span>"),
        "{}",
        page.body
    );

    // Refused builds change nothing: an empty key, a bad PEM.
    let mut empty_key = epay_fields(&gw);
    empty_key[2].1 = String::new();
    let refused = save_channel(&p, "epay", &as_refs(&empty_key), true).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    // The gateway library's words, in the panel's sentence.
    assert!(
        refused.body.contains("配置有误：") && refused.body.contains("non-empty pid and key"),
        "{}",
        refused.body
    );
    let bad_pem = save_channel(
        &p,
        "alipay",
        &[
            ("gateway", "http://127.0.0.1:9/gateway.do"),
            ("app_id", "2021"),
            (
                "app_private_key",
                "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----",
            ),
            ("alipay_public_key", "garbage"),
        ],
        true,
    )
    .await;
    assert_eq!(bad_pem.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad_pem.body.contains("配置有误：") && bad_pem.body.contains("not a PEM"),
        "{}",
        bad_pem.body
    );
    assert_eq!(offered(&kami).await, ["sandbox"]);

    // EPay and Stripe through the panel, pointed at the fake gateway.
    let saved = save_channel(&p, "epay", &as_refs(&epay_fields(&gw)), true).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let stripe_gateway = format!("{}/stripe", gw.base);
    let saved = save_channel(
        &p,
        "stripe",
        &[
            ("gateway", &stripe_gateway),
            ("secret_key", &gw.stripe_secret_key),
            ("webhook_secret", &gw.stripe_webhook_secret),
        ],
        true,
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let mut live = offered(&kami).await;
    live.sort();
    assert_eq!(live, ["epay", "sandbox", "stripe"]);

    assert_eq!(test_channel(&p, "epay").await, "连接成功，凭据有效。");
    assert_eq!(test_channel(&p, "stripe").await, "连接成功，凭据有效。");

    let product = kami.product("Panel channel item", json!({})).await;
    kami.import_codes(product, &make_codes("PCH", 6)).await;
    let a = kami.buy_on("epay", product, 1, "epay@example.com").await;
    pay_through(&kami, &gw, "epay", &a).await;
    let b = kami
        .buy_on("stripe", product, 1, "stripe@example.com")
        .await;
    pay_through(&kami, &gw, "stripe", &b).await;

    // A wrong key saves (it builds) but the Test button says why it fails;
    // a blank secret keeps the stored one.
    let mut wrong = epay_fields(&gw);
    wrong[2].1 = "wrong-key-0123456789".into();
    assert_eq!(
        save_channel(&p, "epay", &as_refs(&wrong), true)
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    let mut blank = epay_fields(&gw);
    blank[2].1 = String::new();
    assert_eq!(
        save_channel(&p, "epay", &as_refs(&blank), true)
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    let failed = test_channel(&p, "epay").await;
    assert!(
        failed.starts_with("被拒绝：") && failed.contains("KEY"),
        "{failed}"
    );
    let unreachable = save_channel(
        &p,
        "stripe",
        &[
            ("gateway", "http://127.0.0.1:9"),
            ("secret_key", ""),
            ("webhook_secret", ""),
        ],
        true,
    )
    .await;
    assert_eq!(unreachable.status, StatusCode::SEE_OTHER);
    assert!(test_channel(&p, "stripe").await.starts_with("无法连接："));
    assert_eq!(
        save_channel(&p, "epay", &as_refs(&epay_fields(&gw)), true)
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(test_channel(&p, "epay").await, "连接成功，凭据有效。");
    // In English for an operator who reads English.
    p.get("/admin/channels?lang=en").await;
    assert_eq!(
        test_channel(&p, "epay").await,
        "Reachable, credentials accepted."
    );
    p.get("/admin/channels?lang=zh").await;

    // Secrets: never in the page, the audit log, the logs or the stored bytes.
    let secrets = [
        &gw.epay_key,
        &gw.stripe_secret_key,
        &gw.stripe_webhook_secret,
    ];
    let page = p.get("/admin/channels").await.body;
    assert!(page.contains("已设置 — 留空则保持不变"), "{page}");
    assert!(page.contains(&gw.epay_pid), "non-secret fields are shown");
    let audit = p.get("/admin/audit").await.body;
    for word in ["channel_saved", "channel_tested", "channel_save_refused"] {
        assert!(audit.contains(word), "{word} audited: {audit}");
    }
    let logs = kami.logs_bytes();
    for s in secrets {
        assert!(!page.contains(s.as_str()), "the page shows a secret");
        assert!(!audit.contains(s.as_str()), "the audit log shows a secret");
        assert!(
            !contains_bytes(&logs, s.as_bytes()),
            "the logs hold a secret"
        );
    }
    let stored = stored_bytes(&kami);
    assert!(
        stored
            .iter()
            .any(|(_, b)| contains_bytes(b, b"Panel channel item")),
        "the scan found the product name: right database"
    );
    for (name, bytes) in &stored {
        for s in secrets {
            assert!(
                !contains_bytes(bytes, s.as_bytes()),
                "{name} holds a channel secret in plaintext"
            );
        }
    }

    // Stored channels come back at the next start.
    kami.restart(Stop::Term).await;
    let mut live = offered(&kami).await;
    live.sort();
    assert_eq!(live, ["epay", "sandbox", "stripe"]);
    let c = kami.buy_on("epay", product, 1, "again@example.com").await;
    pay_through(&kami, &gw, "epay", &c).await;
}

async fn a_disabled_channel_takes_no_new_orders_but_keeps_paid_money(backend: Backend) {
    let gw = FakeGateway::start();
    let kami = spawn_kami(backend).await;
    let p = owner_panel(&kami, "owner@example.com").await;
    let saved = save_channel(&p, "epay", &as_refs(&epay_fields(&gw)), true).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let product = kami.product("Disable me", json!({})).await;
    kami.import_codes(product, &make_codes("DIS", 4)).await;
    let page = kami
        .http
        .get(kami.url(&format!("/products/{product}")))
        .send()
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("value=\"epay\""));

    // An order on EPay, sent to the gateway, not yet paid.
    let pending = kami.buy_on("epay", product, 1, "pending@example.com").await;
    kami.start_payment(&gw, "epay", &pending).await;

    let csrf = p.get("/admin/channels").await.csrf();
    let off = p
        .post(
            "/admin/channels/epay/enabled",
            &[("csrf", &csrf), ("enabled", "0")],
        )
        .await;
    assert_eq!(off.status, StatusCode::SEE_OTHER, "{}", off.body);
    assert_eq!(offered(&kami).await, ["sandbox"]);
    let page = kami
        .http
        .get(kami.url(&format!("/products/{product}")))
        .send()
        .await
        .unwrap();
    assert!(!page.text().await.unwrap().contains("value=\"epay\""));
    let (status, v) = kami
        .order(
            json!({"product_id": product, "quantity": 1, "email": "new@example.com",
                      "channel": "epay"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "invalid_request");

    // The buyer had already paid: the notification is verified and accepted.
    let no = pending["order_no"].as_str().unwrap();
    let d = gw.notification("epay", no, json!({})).await;
    let (status, text) = kami.deliver("epay", &d).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "success"));
    kami.wait_status(&pending, "delivered", Duration::from_secs(10))
        .await;
    // A forged one is still refused.
    let forged = gw
        .notification("epay", no, json!({"key": "not-the-key"}))
        .await;
    let (status, _) = kami.deliver("epay", &forged).await;
    assert_ne!(
        status,
        StatusCode::OK,
        "a bad signature is refused on a disabled channel too"
    );

    // Disabled survives a restart; enabling brings it back at once.
    kami.restart(Stop::Term).await;
    assert_eq!(offered(&kami).await, ["sandbox"]);
    let p = owner_panel(&kami, "owner2@example.com").await;
    let csrf = p.get("/admin/channels").await.csrf();
    let on = p
        .post(
            "/admin/channels/epay/enabled",
            &[("csrf", &csrf), ("enabled", "1")],
        )
        .await;
    assert_eq!(on.status, StatusCode::SEE_OTHER);
    let mut live = offered(&kami).await;
    live.sort();
    assert_eq!(live, ["epay", "sandbox"]);
    let audit = p.get("/admin/audit").await.body;
    assert!(
        audit.contains("channel_disabled") && audit.contains("channel_enabled"),
        "{audit}"
    );
}

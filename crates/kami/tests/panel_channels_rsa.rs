//! Alipay configured in the admin panel with PEM keys pasted into the form
//! (no key files), against the fake Alipay built on the gateway's own
//! library: the Test button's signed trade.query is accepted with the right
//! key and refused (invalid signature) with another one, and the private
//! key never reaches the page, the logs or the stored bytes.

#[macro_use]
mod common;
#[path = "channels_rsa/gateway.rs"]
#[allow(dead_code)]
mod gateway;

use common::panel::{create_admin, Panel};
use common::{contains_bytes, files_under, spawn_kami, Backend};
use gateway::FakeGateway;
use reqwest::StatusCode;

both_backends!(alipay_with_pasted_pem_keys_passes_the_test_button);

async fn alipay_with_pasted_pem_keys_passes_the_test_button(backend: Backend) {
    let key_dir = tempfile::tempdir().unwrap();
    let gw = FakeGateway::start(key_dir.path());
    let kami = spawn_kami(backend).await;
    let password = create_admin(&kami, "owner@example.com", "owner");
    let p = Panel::new(&kami);
    p.login("owner@example.com", &password).await;

    let cfg = &gw.config["alipay"];
    let read = |field: &str| {
        std::fs::read_to_string(key_dir.path().join(cfg[field].as_str().unwrap())).unwrap()
    };
    let private_pem = read("app_private_key_file");
    let public_pem = read("alipay_public_key_file");
    let save = |private: String| {
        let p = &p;
        let (gateway, app_id) = (
            cfg["gateway"].as_str().unwrap().to_string(),
            cfg["app_id"].as_str().unwrap().to_string(),
        );
        let public_pem = public_pem.clone();
        async move {
            let csrf = p.get("/admin/channels").await.csrf();
            p.post(
                "/admin/channels/alipay",
                &[
                    ("csrf", csrf.as_str()),
                    ("gateway", &gateway),
                    ("app_id", &app_id),
                    ("seller_id", ""),
                    ("app_private_key", &private),
                    ("alipay_public_key", &public_pem),
                    ("enabled", "1"),
                ],
            )
            .await
        }
    };
    let test = || async {
        let csrf = p.get("/admin/channels").await.csrf();
        let page = p
            .post("/admin/channels/alipay/test", &[("csrf", &csrf)])
            .await;
        assert_eq!(page.status, StatusCode::OK);
        let marker = "data-channel-note=\"alipay\">";
        let start = page.body.find(marker).expect("a note") + marker.len();
        let end = page.body[start..].find('<').unwrap();
        page.body[start..start + end].to_string()
    };

    let saved = save(private_pem.clone()).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(test().await, "连接成功，凭据有效。");

    // Another (valid) private key: Alipay refuses the signature.
    let other = std::fs::read_to_string(key_dir.path().join("merchant_private.pem")).unwrap();
    let saved = save(other).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let failed = test().await;
    assert!(
        failed.starts_with("被拒绝：") && failed.contains("invalid-signature"),
        "{failed}"
    );

    let page = p.get("/admin/channels").await.body;
    let body_line = private_pem.lines().nth(1).unwrap().to_string();
    assert!(!page.contains(&body_line), "the private key is not echoed");
    assert!(!contains_bytes(&kami.logs_bytes(), body_line.as_bytes()));
    if backend == Backend::Sqlite {
        for f in files_under(kami.data_dir()) {
            let bytes = std::fs::read(&f).unwrap_or_default();
            assert!(
                !contains_bytes(&bytes, body_line.as_bytes()),
                "{} holds the private key",
                f.display()
            );
        }
    }
}

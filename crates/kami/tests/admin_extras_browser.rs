//! Issue 3's admin extras in a real headless Chromium, on SQLite: moving a
//! product up in the panel reorders the storefront, the orders page's
//! "Export CSV" link downloads the file, and an operator who lost the phone
//! signs in with a recovery code. Needs `chromium` and `chromium-driver`.

#[allow(unused_macros)] // both_backends!: this test runs on SQLite only.
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::panel::{create_admin, totp_now};
use common::{make_codes, spawn_kami, Backend, Kami};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver(Child, String);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver (apt-get install -y chromium chromium-driver)");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver(child, url)
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium",
               "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=zh-CN"]}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.1)
        .await
        .expect("WebDriver session")
}

async fn text(c: &Client) -> String {
    c.execute("return document.body.innerText", vec![])
        .await
        .unwrap()
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn fill(c: &Client, id: &str, value: &str) {
    let e = c.find(Locator::Id(id)).await.expect(id);
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

/// Clicks and waits until the next page has loaded.
async fn submit(c: &Client, css: &str) {
    c.execute("window.__kami_old_page = true", vec![])
        .await
        .unwrap();
    c.find(Locator::Css(css))
        .await
        .expect(css)
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = c
            .execute(
                "return window.__kami_old_page === undefined && document.readyState === 'complete'",
                vec![],
            )
            .await;
        if matches!(done, Ok(Value::Bool(true))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no new page after clicking {css}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn login(c: &Client, kami: &Kami, email: &str, password: &str, code: &str) {
    c.goto(&kami.url("/admin/login")).await.unwrap();
    fill(c, "email", email).await;
    fill(c, "password", password).await;
    fill(c, "totp", code).await;
    submit(c, "form[action='/admin/login'] button").await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/admin",
        "login did not reach the dashboard: {}",
        text(c).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reorder_export_and_recovery_code_in_a_real_browser() {
    let kami = spawn_kami(Backend::Sqlite).await;
    let password = create_admin(&kami, "owner@example.com", "owner");
    let first = kami.product("首发商品", json!({"category": "游戏"})).await;
    let second = kami
        .product("Second card", json!({"category": "游戏"}))
        .await;
    kami.import_codes(first, &make_codes("BRW", 2)).await;
    let order = kami.buy(first, 1, "buyer@example.com").await;
    kami.pay_ok(&order).await;

    let driver = start_driver().await;
    let c = browser(&driver).await;
    let downloads = tempfile::tempdir().unwrap();
    let session = c.session_id().await.unwrap().unwrap();
    let cdp = reqwest::Client::new()
        .post(format!("{}/session/{session}/goog/cdp/execute", driver.1))
        .json(&json!({"cmd": "Page.setDownloadBehavior",
                      "params": {"behavior": "allow", "downloadPath": downloads.path()}}))
        .send()
        .await
        .unwrap();
    assert!(cdp.status().is_success());
    login(&c, &kami, "owner@example.com", &password, "").await;

    // Reorder: the second product moves above the first, on the storefront too.
    c.goto(&kami.url("/admin/products")).await.unwrap();
    submit(&c, &format!("#product-{second} .move-up")).await;
    c.goto(&kami.url("/")).await.unwrap();
    let shop = text(&c).await;
    let (a, b) = (
        shop.find("首发商品").unwrap(),
        shop.find("Second card").unwrap(),
    );
    assert!(b < a, "the storefront follows the panel's order: {shop}");

    // Export: the link downloads a CSV with the paid order, and no code.
    c.goto(&kami.url("/admin/orders?status=delivered"))
        .await
        .unwrap();
    c.find(Locator::Id("export-csv"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let csv = loop {
        let done: Vec<_> = std::fs::read_dir(downloads.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .collect();
        if let Some(p) = done.first() {
            break std::fs::read(p).unwrap();
        }
        assert!(Instant::now() < deadline, "no CSV was downloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.starts_with('\u{feff}'));
    assert!(csv.contains(order["order_no"].as_str().unwrap()), "{csv}");
    assert!(csv.contains("首发商品"));
    assert!(!csv.contains("BRW"), "no code in the export");

    // TOTP on; the recovery codes are shown once.
    c.goto(&kami.url("/admin/security")).await.unwrap();
    let secret = c
        .find(Locator::Id("totp-secret"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    fill(&c, "code", &totp_now(&secret)).await;
    submit(&c, "form[action='/admin/security/totp'] button").await;
    let mut codes = Vec::new();
    for e in c.find_all(Locator::Css(".recovery-code")).await.unwrap() {
        codes.push(e.text().await.unwrap());
    }
    assert_eq!(codes.len(), 10, "{}", text(&c).await);
    submit(&c, "form[action='/admin/logout'] button").await;

    // The phone is gone: a recovery code signs in, once.
    login(&c, &kami, "owner@example.com", &password, &codes[0]).await;
    c.goto(&kami.url("/admin/security")).await.unwrap();
    let left = c
        .find(Locator::Id("recovery-left"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(left, "9");
    submit(&c, "form[action='/admin/logout'] button").await;
    fill(&c, "email", "owner@example.com").await;
    fill(&c, "password", &password).await;
    fill(&c, "totp", &codes[0]).await;
    submit(&c, "form[action='/admin/login'] button").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/admin/login");
    assert!(text(&c).await.contains("验证码错误"));
    c.close().await.unwrap();
}

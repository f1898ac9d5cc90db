//! The admin panel and storefront in a real headless Chromium (WebDriver via
//! /usr/bin/chromedriver), on the real binary with SQLite: an operator logs
//! in with TOTP, creates a product, imports codes through the upload form,
//! and follows a paid order from the dashboard to its timeline. On the way,
//! every page is checked for XSS (payloads in product, description, category
//! and buyer email stay inert text), console errors, and horizontal
//! overflow at 375 px; forms without their CSRF token are refused and a
//! staff account meets 403 on owner pages. With `KAMI_SCREENSHOTS=1`,
//! screenshots of the main pages are written to docs/screenshots/ for the
//! README (off by default, so a test run leaves the tree clean).
//!
//! A third test moves a product up in the panel and sees the storefront
//! follow, downloads the orders CSV, and signs in with a TOTP recovery code.
//!
//! A second journey is a buyer's: the owner makes a coupon in the panel,
//! the buyer applies it on the product page (the price box updates in
//! place), pays through the sandbox button and copies the delivered codes.
//!
//! Needs `chromium` and `chromium-driver` (Debian; `.ci/run` installs them).

#[allow(unused_macros)] // both_backends!: this test runs on SQLite only.
mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::panel::{create_admin, totp_next, totp_now};
use common::{make_codes, spawn_kami, Backend, Kami};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const XSS_NAME: &str = "<img src=x onerror=window.__xss=1>Card";
const XSS_DESCRIPTION: &str = "<script>window.__xss=2</script><b onmouseover=window.__xss=2>d</b>";
const XSS_CATEGORY: &str = "\"><svg onload=window.__xss=3>";
/// Email syntax forbids `<>"`, so the buyer's payload breaks out of
/// single-quoted attributes instead.
const XSS_EMAIL: &str = "x'onfocus='window.__xss=4'autofocus='@example.com";

struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists(),
        "{CHROMEDRIVER} is missing: apt-get install -y chromium chromium-driver"
    );
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
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver { child, url }
}

/// The browser and what the checks need beside WebDriver proper.
struct Browser {
    client: Client,
    driver_url: String,
    session: String,
    http: reqwest::Client,
    /// Where screenshots go, when they are wanted.
    shots: Option<PathBuf>,
}

impl Browser {
    async fn new(driver: &Driver) -> Self {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium",
                   "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=zh-CN"],
                   // A Chinese operator's browser: headless Chromium asks for
                   // English whatever `--lang` says, and the panel follows
                   // `Accept-Language`.
                   "prefs": {"intl.accept_languages": "zh-CN,zh"}}),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("WebDriver session");
        let session = client.session_id().await.unwrap().expect("session id");
        let shots = std::env::var("KAMI_SCREENSHOTS")
            .is_ok_and(|v| !v.is_empty() && v != "0")
            .then(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots"));
        if let Some(dir) = &shots {
            std::fs::create_dir_all(dir).unwrap();
        }
        Self {
            client,
            driver_url: driver.url.clone(),
            session,
            http: reqwest::Client::new(),
            shots,
        }
    }

    /// A Chrome DevTools command through chromedriver.
    async fn cdp(&self, cmd: &str, params: Value) {
        let url = format!(
            "{}/session/{}/goog/cdp/execute",
            self.driver_url, self.session
        );
        let res = self
            .http
            .post(url)
            .json(&json!({"cmd": cmd, "params": params}))
            .send()
            .await
            .unwrap();
        assert!(
            res.status().is_success(),
            "CDP {cmd}: {}",
            res.text().await.unwrap()
        );
    }

    async fn viewport(&self, width: u32) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 600}),
        )
        .await;
    }

    /// Console entries at error level since the last call (chromedriver's log endpoint).
    async fn console_errors(&self) -> Vec<String> {
        let url = format!("{}/session/{}/se/log", self.driver_url, self.session);
        let v: Value = self
            .http
            .post(url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == json!("SEVERE"))
            // The storefront's templates declare no favicon (outside this
            // work); Chromium's own request for it is not a page error.
            .filter(|e| !e["message"].as_str().unwrap_or("").contains("favicon.ico"))
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect(script)
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect(url);
    }

    async fn text(&self) -> String {
        self.js("return document.body.innerText")
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The text of the element with this id; the page's text when it is missing.
    async fn text_of(&self, id: &str) -> String {
        match self.client.find(Locator::Id(id)).await {
            Ok(e) => e.text().await.unwrap(),
            Err(_) => panic!(
                "no #{id} on {}:\n{}",
                self.client.current_url().await.unwrap(),
                self.text().await
            ),
        }
    }

    async fn fill(&self, id: &str, value: &str) {
        let e = self.client.find(Locator::Id(id)).await.expect(id);
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    /// Clicks and waits for the next page: WebDriver's click may return
    /// before a form's navigation has finished.
    async fn submit(&self, css: &str) {
        self.js("window.__kami_old_page = true").await;
        let target = self.client.find(Locator::Css(css)).await.expect(css);
        target.click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let done = self
                .client
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

    /// The checks every page must pass, at desktop width and at 375 px.
    async fn check_page(&self, url: &str, shot: Option<&str>) {
        for width in [1280, 375] {
            self.viewport(width).await;
            self.goto(url).await;
            let xss = self
                .js("return [window.__xss === undefined, document.querySelectorAll('[onerror],[onload],[onmouseover],[onfocus]').length]")
                .await;
            assert_eq!(
                xss,
                json!([true, 0]),
                "an XSS payload became markup on {url}"
            );
            let inner = self.js("return window.innerWidth").await;
            assert_eq!(inner, json!(width), "viewport on {url}");
            if width == 375 {
                let scroll = self.js("return document.documentElement.scrollWidth").await;
                assert!(
                    scroll.as_i64().unwrap() <= 375,
                    "{url} overflows 375 px: scrollWidth {scroll}"
                );
                // Tables keep readable columns and scroll in their frame
                // rather than squeezing each cell to a few characters.
                let narrow = self
                    .js("return [...document.querySelectorAll('.table-wrap .table')].map(t => t.offsetWidth).filter(w => w < 560)")
                    .await;
                assert_eq!(narrow, json!([]), "squeezed tables on {url} at 375 px");
            }
            let errors = self.console_errors().await;
            assert!(
                errors.is_empty(),
                "console errors on {url} at {width} px: {errors:?}"
            );
            if let (Some(name), Some(dir)) = (shot, &self.shots) {
                let suffix = if width == 375 { "-mobile" } else { "" };
                let png = self.client.screenshot().await.unwrap();
                std::fs::write(dir.join(format!("{name}{suffix}.png")), png).unwrap();
            }
        }
        self.viewport(1280).await;
    }
}

async fn login(b: &Browser, kami: &Kami, email: &str, password: &str, totp: Option<&str>) {
    b.goto(&kami.url("/admin/login")).await;
    b.fill("email", email).await;
    b.fill("password", password).await;
    if let Some(code) = totp {
        b.fill("totp", code).await;
    }
    b.submit("form[action='/admin/login'] button").await;
    let url = b.client.current_url().await.unwrap();
    assert_eq!(
        url.path(),
        "/admin",
        "login did not reach the dashboard: {}",
        b.text().await
    );
}

/// The refusals a step provoked on purpose are logged by Chromium as failed
/// loads; they must be exactly those, and the log is clear afterwards.
async fn assert_only_forbidden(b: &Browser, expected: usize) {
    let errors = b.console_errors().await;
    assert_eq!(errors.len(), expected, "{errors:?}");
    assert!(
        errors.iter().all(|e| e.contains("403 (Forbidden)")),
        "{errors:?}"
    );
}

async fn logout(b: &Browser) {
    b.submit("form[action='/admin/logout'] button").await;
    assert_eq!(b.client.current_url().await.unwrap().path(), "/admin/login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_journey_in_a_real_browser() {
    let kami = spawn_kami(Backend::Sqlite).await;
    let password = create_admin(&kami, "owner@example.com", "owner");
    let driver = start_driver().await;
    let b = Browser::new(&driver).await;
    b.check_page(&kami.url("/admin/login"), Some("login")).await;

    // Log in, turn TOTP on, and log in again with a code.
    login(&b, &kami, "owner@example.com", &password, None).await;
    b.goto(&kami.url("/admin/security")).await;
    let secret = b.text_of("totp-secret").await;
    b.fill("code", &totp_now(&secret)).await;
    b.submit("form[action='/admin/security/totp'] button").await;
    assert!(
        b.text().await.contains("已开启"),
        "TOTP is on: {}",
        b.text().await
    );
    logout(&b).await;
    login(
        &b,
        &kami,
        "owner@example.com",
        &password,
        Some(&totp_next(&secret)),
    )
    .await;

    // A product whose every text field is an XSS payload.
    b.goto(&kami.url("/admin/products/new")).await;
    b.fill("name", XSS_NAME).await;
    b.fill("description", XSS_DESCRIPTION).await;
    b.fill("price", "9.90").await;
    b.fill("category", XSS_CATEGORY).await;
    b.fill("max_quantity", "5").await;
    b.submit("form.card button[type=submit]").await;
    let url = b.client.current_url().await.unwrap();
    let id: i64 = url
        .path()
        .trim_start_matches("/admin/products/")
        .parse()
        .expect("product page");
    assert!(b.text().await.contains("已保存"));

    // Import codes through the upload form.
    let codes = make_codes("WEB", 5);
    let file = kami.data_dir().join("codes.txt");
    std::fs::write(&file, codes.join("\n") + "\n" + &codes[0]).unwrap();
    b.goto(&kami.url(&format!("/admin/products/{id}/codes")))
        .await;
    b.client
        .find(Locator::Id("file"))
        .await
        .unwrap()
        .send_keys(&file.display().to_string())
        .await
        .unwrap();
    b.submit("form[enctype='multipart/form-data'] button").await;
    let imported = b.text_of("report-imported").await;
    let duplicates = b.text_of("report-duplicates").await;
    assert_eq!((imported.as_str(), duplicates.as_str()), ("5", "1"));
    assert_eq!(kami.stock3(id).await, (5, 0, 0));
    // The report is on a page of its own: a refresh shows it again and
    // posts nothing a second time.
    let after = b.client.current_url().await.unwrap();
    assert_eq!(after.path(), format!("/admin/products/{id}/codes"));
    b.client.refresh().await.unwrap();
    assert_eq!(b.text_of("report-imported").await, "5");
    assert_eq!(kami.stock3(id).await, (5, 0, 0));

    // A buyer with a hostile email orders through the API and pays.
    let order = kami.buy(id, 2, XSS_EMAIL).await;
    kami.pay_ok(&order).await;
    let no = order["order_no"].as_str().unwrap().to_string();
    b.goto(&kami.url("/admin")).await;
    let dashboard = b.text().await;
    assert!(dashboard.contains(&no), "the dashboard lists the order");
    assert!(dashboard.contains(XSS_NAME), "names are shown as text");
    b.submit(&format!("a[href='/admin/orders/{no}']")).await;
    let detail = b.text().await;
    for kind in ["created", "paid", "delivered"] {
        assert!(detail.contains(kind), "timeline lacks {kind}: {detail}");
    }
    assert!(detail.contains(XSS_EMAIL));

    // Every admin page, then every storefront page, is inert, clean and narrow.
    let token = order["access_token"].as_str().unwrap();
    let pages = [
        ("/admin", Some("dashboard")),
        ("/admin/products", Some("products")),
        (&*format!("/admin/products/{id}"), Some("product-edit")),
        ("/admin/products/new", None),
        (&*format!("/admin/products/{id}/codes"), Some("codes")),
        ("/admin/orders", Some("orders")),
        (&*format!("/admin/orders/{no}"), Some("order")),
        (&*format!("/admin/orders?q={XSS_EMAIL}"), None),
        ("/admin/audit", Some("audit")),
        ("/admin/staff", None),
        ("/admin/sessions", None),
        ("/admin/keys", None),
        ("/admin/security", None),
        ("/admin?lang=en", Some("dashboard-en")),
        ("/admin?lang=zh", None),
        ("/", Some("shop")),
        (&*format!("/products/{id}"), None),
        (&*format!("/orders/{no}?token={token}"), None),
        ("/lookup", None),
    ];
    for (path, shot) in pages {
        b.check_page(&kami.url(path), shot).await;
    }
    let product_page = {
        b.goto(&kami.url(&format!("/products/{id}"))).await;
        b.text().await
    };
    assert!(product_page.contains(XSS_NAME) && product_page.contains("window.__xss=2"));

    // kami.js: an order opened by its link leaves the token in the cookie,
    // not the address bar; times show in the reader's zone, UTC as the
    // title; the language links keep the page's other parameters.
    b.goto(&kami.url(&format!("/orders/{no}?token={token}")))
        .await;
    assert_eq!(b.js("return location.search").await, json!(""));
    let when = b
        .js("var t = document.querySelector('time'); return [t.textContent, t.title]")
        .await;
    assert!(
        when[0].as_str().unwrap().contains("(UTC") && when[1].as_str().unwrap().ends_with(" UTC"),
        "{when}"
    );
    b.goto(&kami.url(&format!("/products/{id}?quantity=2")))
        .await;
    let href = b
        .js("return document.querySelector('.lang-switch a[hreflang=en]').getAttribute('href')")
        .await;
    assert_eq!(href, json!(format!("/products/{id}?quantity=2&lang=en")));

    // A form whose CSRF token was removed is refused.
    b.goto(&kami.url("/admin/products/new")).await;
    b.js("document.querySelector('input[name=csrf]').remove()")
        .await;
    b.fill("name", "no token").await;
    b.fill("price", "1").await;
    b.submit("form.card button[type=submit]").await;
    let refused = b.text().await;
    assert!(refused.contains("403"), "no token, no product: {refused}");
    assert_only_forbidden(&b, 1).await;
    assert_eq!(
        kami.admin_get("/api/v1/admin/products").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The owner adds a staff account; staff meet 403 on owner pages.
    b.goto(&kami.url("/admin/staff")).await;
    b.fill("staff-email", "staff@example.com").await;
    b.submit("form[action='/admin/staff'] button").await;
    let staff_pw = b.text_of("new-password").await;
    logout(&b).await;
    login(&b, &kami, "staff@example.com", &staff_pw, None).await;
    assert!(
        b.client.find(Locator::LinkText("审计日志")).await.is_err(),
        "no owner links for staff"
    );
    for path in [
        "/admin/audit",
        "/admin/staff",
        "/admin/sessions",
        "/admin/keys",
    ] {
        b.goto(&kami.url(path)).await;
        assert!(b.text().await.contains("403"), "staff reached {path}");
    }
    assert_only_forbidden(&b, 4).await;
    b.check_page(&kami.url("/admin"), None).await;
    assert!(b.console_errors().await.is_empty());
    // A timed drop counts down live to its second.
    let starts = kami_core::order::rfc3339(kami_core::now_millis() + 2 * 3600 * 1000 + 5_000);
    let drop = kami
        .product("Timed drop", json!({ "sale_starts_at": starts }))
        .await;
    let drop_page = kami.url(&format!("/products/{drop}"));
    b.check_page(&drop_page, None).await;
    b.goto(&drop_page).await;
    let countdown = b
        .js("var e = document.querySelector('[data-countdown]'); return e && !e.hidden ? e.textContent : null")
        .await;
    let countdown = countdown.as_str().expect("a visible countdown").to_string();
    assert!(
        countdown.contains("02:00:0") || countdown.contains("01:59:5"),
        "countdown shows {countdown:?}"
    );
    b.client.close().await.unwrap();
}

/// Waits until the script returns something other than null.
async fn wait_for(b: &Browser, script: &str, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = b.js(script).await;
        if !v.is_null() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened:\n{}",
            b.text().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buyer_applies_a_coupon_pays_and_copies_the_codes_in_a_real_browser() {
    let kami = spawn_kami(Backend::Sqlite).await;
    let password = create_admin(&kami, "owner@example.com", "owner");
    let driver = start_driver().await;
    let b = Browser::new(&driver).await;

    // The owner makes a coupon through the panel's form.
    login(&b, &kami, "owner@example.com", &password, None).await;
    b.goto(&kami.url("/admin/coupons")).await;
    b.fill("code", "spring").await;
    b.fill("value", "20").await;
    b.submit("form[action='/admin/coupons'] button[type=submit]")
        .await;
    assert!(b.text_of("coupons").await.contains("SPRING"));
    b.check_page(&kami.url("/admin/coupons"), Some("coupons"))
        .await;

    let pid = kami.product("Coupon card", json!({"price": 1000})).await;
    let codes = make_codes("BRW", 3);
    kami.import_codes(pid, &codes).await;

    // The buyer finds the product from the home page (its listing is cached
    // for a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    let link = loop {
        b.goto(&kami.url("/")).await;
        let css = format!("a[href='/products/{pid}']");
        if let Ok(link) = b.client.find(Locator::Css(&css)).await {
            break link;
        }
        assert!(Instant::now() < deadline, "the product is not listed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    link.click().await.unwrap();
    wait_for(
        &b,
        "return document.getElementById('coupon')",
        "the product page",
    )
    .await;
    b.fill("quantity", "2").await;
    b.fill("email", "buyer@example.com").await;
    // A payload typed as a coupon comes back as inert text in the price box.
    b.fill("coupon", "<img src=x onerror=window.__xss=5>").await;
    let apply = b
        .client
        .find(Locator::Id("coupon-apply"))
        .await
        .expect("the apply button is shown when scripts run");
    apply.click().await.unwrap();
    wait_for(
        &b,
        "return document.querySelector('#quote .coupon-error')",
        "the coupon refusal",
    )
    .await;
    assert_eq!(
        b.js("return [window.__xss === undefined, document.querySelectorAll('[onerror]').length]")
            .await,
        json!([true, 0]),
        "a typed coupon became markup"
    );
    b.fill("coupon", "spring").await;
    apply.click().await.unwrap();
    let total = wait_for(
        &b,
        "var t = document.getElementById('quote-total'); \
         return t && t.textContent === '¥16.00' ? t.textContent : null",
        "the discounted total",
    )
    .await;
    assert_eq!(total, json!("¥16.00"));
    assert!(b.text_of("quote").await.contains("SPRING"));
    b.submit(&format!(
        "form[action='/products/{pid}/buy'] button[type=submit]"
    ))
    .await;
    assert!(
        b.text().await.contains("¥16.00"),
        "the pay page asks for 16.00"
    );
    b.submit("form[action^='/pay/sandbox/'] button[type=submit]")
        .await;

    // The order page shows the codes; "copy all" puts them on the clipboard.
    wait_for(
        &b,
        "return document.querySelector('.code')",
        "the delivered codes",
    )
    .await;
    let origin = kami.url("");
    b.cdp(
        "Browser.grantPermissions",
        json!({"origin": origin.trim_end_matches('/'),
               "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}),
    )
    .await;
    let shown = b
        .js("return Array.prototype.map.call(document.querySelectorAll('.code'), function (e) { return e.textContent; })")
        .await;
    let shown: Vec<String> = serde_json::from_value(shown).unwrap();
    assert_eq!(shown.len(), 2);
    assert!(shown.iter().all(|c| codes.contains(c)), "{shown:?}");
    b.js("document.querySelector('button[data-copy=all]').click()")
        .await;
    let copied = wait_for(
        &b,
        "var btn = document.querySelector('button[data-copy=all]'); \
         return btn.textContent === btn.getAttribute('data-done') ? true : null",
        "the copy confirmation",
    )
    .await;
    assert_eq!(copied, json!(true));
    let clip = b
        .client
        .execute_async(
            "var done = arguments[arguments.length - 1]; \
             navigator.clipboard.readText().then(done, function (e) { done('error: ' + e); });",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        clip,
        json!(shown.join("\n")),
        "the clipboard holds the codes"
    );
    let url = b.client.current_url().await.unwrap();
    b.check_page(url.as_str(), None).await;
    b.check_page(
        &kami.url(&format!("/products/{pid}?coupon=SPRING&quantity=2")),
        Some("product-coupon"),
    )
    .await;
    b.client.close().await.unwrap();
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
    let b = Browser::new(&driver).await;
    let downloads = tempfile::tempdir().unwrap();
    b.cdp(
        "Page.setDownloadBehavior",
        json!({"behavior": "allow", "downloadPath": downloads.path()}),
    )
    .await;
    login(&b, &kami, "owner@example.com", &password, None).await;

    // Reorder: the second product moves above the first, on the storefront too.
    b.client.goto(&kami.url("/admin/products")).await.unwrap();
    b.submit(&format!("#product-{second} .move-up")).await;
    b.client.goto(&kami.url("/")).await.unwrap();
    let shop = b.text().await;
    let (first_at, second_at) = (
        shop.find("首发商品").unwrap(),
        shop.find("Second card").unwrap(),
    );
    assert!(
        second_at < first_at,
        "the storefront follows the panel's order: {shop}"
    );

    // Export: the link downloads a CSV with the paid order, and no code.
    b.client
        .goto(&kami.url("/admin/orders?status=delivered"))
        .await
        .unwrap();
    b.client
        .find(Locator::Id("export-csv"))
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
    b.client.goto(&kami.url("/admin/security")).await.unwrap();
    let secret = b
        .client
        .find(Locator::Id("totp-secret"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    b.fill("code", &totp_now(&secret)).await;
    b.submit("form[action='/admin/security/totp'] button").await;
    let mut codes = Vec::new();
    for e in b
        .client
        .find_all(Locator::Css(".recovery-code"))
        .await
        .unwrap()
    {
        codes.push(e.text().await.unwrap());
    }
    assert_eq!(codes.len(), 10, "{}", b.text().await);
    b.submit("form[action='/admin/logout'] button").await;

    // The phone is gone: a recovery code signs in, once.
    login(&b, &kami, "owner@example.com", &password, Some(&codes[0])).await;
    b.client.goto(&kami.url("/admin/security")).await.unwrap();
    let left = b
        .client
        .find(Locator::Id("recovery-left"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(left, "9");
    b.submit("form[action='/admin/logout'] button").await;
    b.fill("email", "owner@example.com").await;
    b.fill("password", &password).await;
    b.fill("totp", &codes[0]).await;
    b.submit("form[action='/admin/login'] button").await;
    assert_eq!(b.client.current_url().await.unwrap().path(), "/admin/login");
    assert!(b.text().await.contains("验证码错误"));
    b.client.close().await.unwrap();
}

//! The admin panel over plain HTTP, on the real binary and both backends:
//! lockout, session revocation, CSRF refusal, role checks, TOTP, and the
//! audit trail every action leaves.

#[macro_use]
mod common;

use common::panel::{attr_after, create_admin, text_after, Panel};
use common::{spawn_kami, Backend, Kami};
use reqwest::StatusCode;
use serde_json::json;

const LOGIN_FAILED_ZH: &str = "邮箱、密码或验证码错误";

async fn owner(kami: &Kami) -> (String, String) {
    let email = "owner@example.com".to_string();
    let password = create_admin(kami, &email, "owner");
    (email, password)
}

async fn lockout_after_repeated_failures(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let (email, password) = owner(&kami).await;
    let p = Panel::new(&kami);
    for _ in 0..5 {
        let page = p.try_login(&email, "wrong password", "").await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(page.body.contains(LOGIN_FAILED_ZH), "{}", page.body);
    }
    // Locked: the right password is refused too, with the same message.
    let locked = p.try_login(&email, &password, "").await;
    assert_eq!(locked.status, StatusCode::UNAUTHORIZED);
    assert!(locked.body.contains(LOGIN_FAILED_ZH));
    assert!(p.cookie(common::panel::SESSION).is_none());
    // An unknown email reads exactly like a wrong password.
    let unknown = p.try_login("nobody@example.com", "whatever", "").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(unknown.body.contains(LOGIN_FAILED_ZH));

    let other = Panel::new(&kami);
    let pw2 = create_admin(&kami, "second@example.com", "owner");
    other.login("second@example.com", &pw2).await;
    let audit = other.get("/admin/audit").await.body;
    assert!(audit.contains("account locked"), "{audit}");
    assert!(audit.contains("wrong password"));
    assert!(audit.contains("unknown email"));
    assert!(
        !audit.contains(&password),
        "the audit log never holds a password"
    );
    // Once: `kami admin create` printing it (the harness keeps CLI output too).
    assert_eq!(
        kami.logs().matches(password.as_str()).count(),
        1,
        "logs never hold a password"
    );
}

/// Anyone who knows the owner's email can lock the account at the login
/// rate limit's pace, again every quarter of an hour (a security audit kept
/// an owner out so). A browser the owner signed in from before gets past the
/// lock; a new browser needs `kami admin reset-password`, which also ends
/// every session, and whose new password makes the old browsers' marks
/// worthless.
async fn a_known_browser_gets_past_a_lock_and_the_cli_resets_a_password(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let (email, password) = owner(&kami).await;
    let known = Panel::new(&kami);
    known.login(&email, &password).await;
    assert!(
        known.cookie("kami_device").is_some(),
        "no device cookie after a login"
    );
    let stranger = Panel::new(&kami);
    for _ in 0..5 {
        let page = stranger.try_login(&email, "guess", "").await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    let locked = stranger.try_login(&email, &password, "").await;
    assert_eq!(
        locked.status,
        StatusCode::UNAUTHORIZED,
        "the lock did not hold"
    );
    // Another browser with a made-up mark is not let in.
    let forger = Panel::new(&kami);
    forger.set_cookie("kami_device", &"0".repeat(64));
    assert_eq!(
        forger.try_login(&email, &password, "").await.status,
        StatusCode::UNAUTHORIZED
    );
    // The owner's own browser is, its session and all.
    known.login(&email, &password).await;
    assert_eq!(known.get("/admin").await.status, StatusCode::OK);

    let out = kami.cli(&["admin", "reset-password", "--email", &email]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_password = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(new_password.len() >= 20 && new_password != password);
    // Every session ended; the lock is gone; the old password is no more.
    assert_eq!(known.get("/admin").await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        stranger.try_login(&email, &password, "").await.status,
        StatusCode::UNAUTHORIZED
    );
    stranger.login(&email, &new_password).await;
    // Locked again by someone else: the old browser's mark was for the old
    // password, so it waits like anyone.
    let other = Panel::new(&kami);
    for _ in 0..5 {
        other.try_login(&email, "guess", "").await;
    }
    assert_eq!(
        known.try_login(&email, &new_password, "").await.status,
        StatusCode::UNAUTHORIZED
    );
    let out = kami.cli(&["admin", "reset-password", "--email", "nobody@example.com"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no admin"));
}

async fn logout_and_revocation_end_sessions(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let (email, password) = owner(&kami).await;
    let a = Panel::new(&kami);
    let b = Panel::new(&kami);
    a.login(&email, &password).await;
    b.login(&email, &password).await;
    assert_eq!(b.get("/admin").await.status, StatusCode::OK);

    // A revokes B's session from the session list.
    let list = a.get("/admin/sessions").await.body;
    let rows: Vec<&str> = list.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), 2, "two live sessions: {list}");
    let other = rows
        .iter()
        .find(|r| !r.contains("badge-delivered"))
        .expect("a session that is not the current one");
    let action = attr_after(other, "action=\"").unwrap();
    let csrf = a.csrf().await;
    let revoked = a.post(&action, &[("csrf", &csrf)]).await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    let gone = b.get("/admin").await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER);
    assert_eq!(gone.location.as_deref(), Some("/admin/login"));
    // The revoked cookie stays useless for forms too.
    assert_eq!(
        b.post("/admin/products", &[("csrf", &csrf)]).await.status,
        StatusCode::SEE_OTHER
    );

    // Logout revokes A's own session server-side, not just the cookie.
    let cookie = a.cookie(common::panel::SESSION).unwrap();
    assert_eq!(
        a.post("/admin/logout", &[("csrf", &csrf)]).await.status,
        StatusCode::SEE_OTHER
    );
    let replay = Panel::new(&kami);
    replay.set_cookie(common::panel::SESSION, &cookie);
    assert_eq!(replay.get("/admin").await.status, StatusCode::SEE_OTHER);

    let c = Panel::new(&kami);
    c.login(&email, &password).await;
    let audit = c.get("/admin/audit").await.body;
    assert!(
        audit.contains("session_revoked") && audit.contains("logout"),
        "{audit}"
    );
    assert!(
        !kami.logs().contains(&cookie),
        "logs never hold a session token"
    );
}

async fn forms_without_their_csrf_token_are_refused(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let (email, password) = owner(&kami).await;
    let a = Panel::new(&kami);
    a.login(&email, &password).await;
    let product = [
        ("name", "CSRF probe"),
        ("price", "1"),
        ("currency", "CNY"),
        ("min_quantity", "1"),
        ("max_quantity", "2"),
        ("visible", "1"),
    ];
    assert_eq!(
        a.post("/admin/products", &product).await.status,
        StatusCode::FORBIDDEN
    );
    let mut wrong = product.to_vec();
    wrong.push(("csrf", "not-the-token"));
    assert_eq!(
        a.post("/admin/products", &wrong).await.status,
        StatusCode::FORBIDDEN
    );
    // Another session's token does not fit this session.
    let b = Panel::new(&kami);
    b.login(&email, &password).await;
    let foreign = b.csrf().await;
    let mut cross = product.to_vec();
    cross.push(("csrf", &foreign));
    assert_eq!(
        a.post("/admin/products", &cross).await.status,
        StatusCode::FORBIDDEN
    );
    // The import form is multipart: no token, no import.
    let id = kami.product("csrf import", json!({})).await;
    let import = a
        .post_multipart(
            &format!("/admin/products/{id}/codes/import"),
            &[("codes", None, b"X-1\nX-2")],
        )
        .await;
    assert_eq!(import.status, StatusCode::FORBIDDEN);
    assert_eq!(kami.stock3(id).await, (0, 0, 0));
    // Forms are capped at 1 MiB like the API; the import form takes 16 MiB.
    let csrf_a = a.csrf().await;
    let huge = "x".repeat(1_100_000);
    let big = a
        .post("/admin/products", &[("csrf", &csrf_a), ("name", &huge)])
        .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    let many: String = (0..12_000).map(|i| format!("{i:0>100}\n")).collect();
    assert!(many.len() > 1024 * 1024);
    let imported = a
        .post_multipart(
            &format!("/admin/products/{id}/codes/import"),
            &[
                ("csrf", None, csrf_a.as_bytes()),
                ("codes", None, many.as_bytes()),
            ],
        )
        .await;
    assert_eq!(imported.status, StatusCode::SEE_OTHER);
    assert_eq!(kami.stock3(id).await, (12_000, 0, 0));
    // A paste and a file at once: refused whole, not one of them dropped.
    let csrf_a = a.csrf().await;
    let both = a
        .post_multipart(
            &format!("/admin/products/{id}/codes/import"),
            &[
                ("csrf", None, csrf_a.as_bytes()),
                ("codes", None, b"PASTED-1"),
                ("file", Some("more.txt"), b"FILED-1\nFILED-2"),
            ],
        )
        .await;
    assert_eq!(both.status, StatusCode::UNPROCESSABLE_ENTITY);
    // The error page says it in both languages.
    assert!(
        both.body.contains("二者只能选一个") && both.body.contains("not both"),
        "{}",
        both.body
    );
    assert_eq!(kami.stock3(id).await, (12_000, 0, 0));
    // Logout and login forms too.
    assert_eq!(
        a.post("/admin/logout", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let fresh = Panel::new(&kami);
    let login = fresh
        .post(
            "/admin/login",
            &[("email", email.as_str()), ("password", password.as_str())],
        )
        .await;
    assert_eq!(login.status, StatusCode::FORBIDDEN);
    let (status, v) = kami.admin_get("/api/v1/admin/products").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v["data"].as_array().unwrap().len(),
        1,
        "only the API's product exists: {v}"
    );
    // With the token the same form works.
    let csrf = a.csrf().await;
    let mut ok = product.to_vec();
    ok.push(("csrf", &csrf));
    assert_eq!(
        a.post("/admin/products", &ok).await.status,
        StatusCode::SEE_OTHER
    );
}

async fn staff_cannot_reach_owner_pages(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let (email, password) = owner(&kami).await;
    let o = Panel::new(&kami);
    o.login(&email, &password).await;
    let csrf = o.csrf().await;
    let created = o
        .post(
            "/admin/staff",
            &[("csrf", &csrf), ("email", "Staff@Example.com")],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK);
    let staff_pw =
        text_after(&created.body, "id=\"new-password\">").expect("the password is shown once");
    let id = kami.product("staff product", json!({})).await;
    kami.import_codes(id, &common::make_codes("STAFF", 2)).await;

    let s = Panel::new(&kami);
    s.login("staff@example.com", &staff_pw).await;
    let again = kami.cli(&["admin", "create", "--email", "staff@example.com"]);
    assert!(!again.status.success(), "an email has one account");
    for ok in [
        "/admin",
        "/admin/products",
        "/admin/orders",
        &format!("/admin/products/{id}/codes"),
        "/admin/security",
    ] {
        assert_eq!(s.get(ok).await.status, StatusCode::OK, "{ok}");
    }
    for owner_only in [
        "/admin/audit",
        "/admin/staff",
        "/admin/sessions",
        "/admin/keys",
    ] {
        assert_eq!(
            s.get(owner_only).await.status,
            StatusCode::FORBIDDEN,
            "{owner_only}"
        );
    }
    let dashboard = s.get("/admin").await.body;
    assert!(
        !dashboard.contains("href=\"/admin/audit\""),
        "staff see no owner links"
    );
    let codes = s.get(&format!("/admin/products/{id}/codes")).await.body;
    assert!(!codes.contains("/reveal"), "staff see no reveal buttons");
    let card = attr_after(&codes, "id=\"card-").unwrap();
    let scsrf = s.csrf().await;
    for post in [
        format!("/admin/products/{id}/codes/{card}/reveal"),
        format!("/admin/products/{id}/codes/export"),
        "/admin/staff".to_string(),
        "/admin/keys".to_string(),
    ] {
        let p = s
            .post(
                &post,
                &[("csrf", &scsrf), ("email", "x@example.com"), ("name", "x")],
            )
            .await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{post}");
    }
    // Disabling the staff account ends its sessions at once.
    let staff_row = o.get("/admin/staff").await.body;
    let disable = staff_row
        .split("<tr>")
        .find(|r| r.contains("staff@example.com"))
        .and_then(|r| attr_after(r, "action=\""))
        .expect("a disable button for the staff account");
    assert_eq!(
        o.post(&disable, &[("csrf", &csrf)]).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(s.get("/admin").await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        s.try_login("staff@example.com", &staff_pw, "").await.status,
        StatusCode::UNAUTHORIZED
    );
}
async fn totp_login_needs_the_current_code(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let (email, password) = owner(&kami).await;
    let a = Panel::new(&kami);
    a.login(&email, &password).await;
    let setup = a.get("/admin/security").await.body;
    let secret = text_after(&setup, "id=\"totp-secret\">").expect("the secret is shown");
    assert!(setup.contains("otpauth:"), "the otpauth URI is shown");
    assert!(setup.contains("src=\"data:image"), "a QR code is shown");
    let csrf = a.csrf().await;
    let wrong = a
        .post(
            "/admin/security/totp",
            &[("csrf", &csrf), ("secret", &secret), ("code", "000000")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    let code = common::panel::totp_now(&secret);
    let on = a
        .post(
            "/admin/security/totp",
            &[("csrf", &csrf), ("secret", &secret), ("code", &code)],
        )
        .await;
    assert_eq!(on.status, StatusCode::OK, "{}", on.body);
    assert!(
        on.body.contains("recovery-code"),
        "recovery codes are shown once: {}",
        on.body
    );

    let b = Panel::new(&kami);
    assert_eq!(
        b.try_login(&email, &password, "").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        b.try_login(&email, &password, "123456").await.status,
        StatusCode::UNAUTHORIZED
    );
    // The code that turned TOTP on was spent doing it.
    let enabling = code;
    assert_eq!(
        b.try_login(&email, &password, &enabling).await.status,
        StatusCode::UNAUTHORIZED
    );
    let code = common::panel::totp_next(&secret);
    let ok = b.try_login(&email, &password, &code).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    // RFC 6238 5.2: a code that signed in once does not sign in again.
    let replay = Panel::new(&kami).try_login(&email, &password, &code).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    let audit = b.get("/admin/audit").await.body;
    assert!(
        audit.contains("totp_enabled") && audit.contains("wrong TOTP code"),
        "{audit}"
    );
    assert!(!audit.contains(&secret));
    if backend == Backend::Sqlite {
        // The secret is sealed at rest: its bytes are nowhere in the files.
        let raw = totp_rs::Secret::Encoded(secret.clone()).to_bytes().unwrap();
        for file in common::files_under(kami.data_dir()) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !common::contains_bytes(&bytes, &raw),
                "{file:?} holds the TOTP secret"
            );
            assert!(
                !common::contains_bytes(&bytes, secret.as_bytes()),
                "{file:?}"
            );
        }
    }
}
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Rate limits are off in the other tests; a second instance on the same
/// data turns them on to show the login limit per IP (without Redis it
/// lives in the process, so one backend is enough; `redis_shared.rs` shows
/// it shared by two instances).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_attempts_are_rate_limited_per_ip() {
    let kami = spawn_kami(Backend::Sqlite).await;
    let (email, _) = owner(&kami).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let limited = kami
        .command()
        .arg("serve")
        .env("KAMI_BIND", format!("127.0.0.1:{port}"))
        .env("KAMI_RATE_LIMITS", "on")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _limited = KillOnDrop(limited);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !reqwest::get(format!("{base}/readyz"))
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "second instance did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let p = Panel::at(&base);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(p.try_login(&email, "guess", "").await.status);
    }
    assert!(
        statuses[..10]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(statuses[10], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
}

/// A panel link opened without a session (a bookmark, a link in a chat, a
/// session that ran out) comes back to its page after the login; a `next`
/// pointing anywhere but the panel is ignored, so the login cannot be used
/// to send an operator off the shop.
async fn a_deep_link_is_restored_after_login(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let (email, password) = owner(&kami).await;
    let p = Panel::new(&kami);
    let away = p.get("/admin/orders?status=pending").await;
    assert_eq!(away.status, StatusCode::SEE_OTHER);
    let login_url = away.location.expect("a redirect to the login");
    assert_eq!(
        login_url,
        "/admin/login?next=%2Fadmin%2Forders%3Fstatus%3Dpending"
    );
    // A HEAD (a link checker, a browser's prefetch) is sent the same way.
    let head = p.head("/admin/orders?status=pending").await;
    assert_eq!(head.status, StatusCode::SEE_OTHER);
    assert_eq!(head.location.as_deref(), Some(login_url.as_str()));
    let form = p.get(&login_url).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("name=\"next\""), "{}", form.body);
    // Switching the language keeps the page to go back to.
    assert!(
        form.body
            .contains("?lang=en&amp;next=%2Fadmin%2Forders%3Fstatus%3Dpending"),
        "{}",
        form.body
    );
    // A wrong password shows the form again, still carrying the page.
    let csrf = form.csrf();
    let wrong = p
        .post(
            "/admin/login",
            &[
                ("csrf", &csrf),
                ("email", &email),
                ("password", "wrong"),
                ("next", "/admin/orders?status=pending"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("name=\"next\""), "{}", wrong.body);
    let ok = p
        .post(
            "/admin/login",
            &[
                ("csrf", &csrf),
                ("email", &email),
                ("password", &password),
                ("next", "/admin/orders?status=pending"),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.location.as_deref(), Some("/admin/orders?status=pending"));
    assert_eq!(
        p.get("/admin/orders?status=pending").await.status,
        StatusCode::OK
    );

    // Anything but a panel page is ignored: the login goes to the dashboard.
    for next in [
        "//evil.example/admin",
        "https://evil.example/admin",
        "/admin\\@evil.example",
        "/adminx",
        "/admin/login",
        "/admin/logout",
        "/admin/orders?x=\u{4e2d}",
        // Browsers resolve dot segments, encoded or not: these are not
        // panel pages, nor is a download.
        "/admin/../api/v1/products",
        "/admin/%2e%2e/%2e%2e/x",
        "/admin/./login",
        "/admin//evil.example/x",
        "/admin/orders/export.csv",
        "",
    ] {
        let q = Panel::new(&kami);
        let csrf = q.get("/admin/login").await.csrf();
        let page = q
            .post(
                "/admin/login",
                &[
                    ("csrf", &csrf),
                    ("email", &email),
                    ("password", &password),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(
            page.status,
            StatusCode::SEE_OTHER,
            "{next:?}: {}",
            page.body
        );
        assert_eq!(page.location.as_deref(), Some("/admin"), "{next:?}");
        // Nor is it carried into the form.
        let shown = q
            .get(&format!(
                "/admin/login?next={}",
                next.replace('/', "%2F")
                    .replace('?', "%3F")
                    .replace('&', "%26")
            ))
            .await;
        assert!(!shown.body.contains("name=\"next\""), "{next:?}");
    }
    // A form posted after the session ended goes to the login plainly: its
    // page is not a GET to come back to.
    let gone = Panel::new(&kami);
    let refused = gone.post("/admin/products", &[("csrf", "x")]).await;
    assert_eq!(refused.status, StatusCode::SEE_OTHER);
    assert_eq!(refused.location.as_deref(), Some("/admin/login"));
}

/// Until the operator picks a language, the panel speaks the browser's
/// (`Accept-Language`), Chinese when it asks for neither; `?lang=` and the
/// cookie it leaves win over the browser.
async fn the_panel_speaks_the_browser_language_until_one_is_picked(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let (email, password) = owner(&kami).await;
    const LOGIN_EN: &str = "Sign in to the admin panel";
    const LOGIN_ZH: &str = "登录管理后台";
    let english = |body: &str| body.contains("<html lang=\"en\">");
    let chinese = |body: &str| body.contains("<html lang=\"zh-CN\">");

    let en = Panel::new(&kami);
    en.set_accept_language("en-US,en;q=0.9");
    let login = en.get("/admin/login").await.body;
    assert!(english(&login) && login.contains(LOGIN_EN), "{login}");
    assert!(!login.contains(LOGIN_ZH), "{login}");
    for (asked, who) in [
        (Some("zh-CN"), "zh-CN"),
        (Some("fr-FR,de;q=0.5"), "fr"),
        (None, "none"),
    ] {
        let p = Panel::new(&kami);
        if let Some(a) = asked {
            p.set_accept_language(a);
        }
        let login = p.get("/admin/login").await.body;
        assert!(
            chinese(&login) && login.contains(LOGIN_ZH),
            "{who}: {login}"
        );
        assert!(!login.contains(LOGIN_EN), "{who}");
    }

    // Behind the login too, and the refusal of a wrong password.
    let wrong = en.try_login(&email, "wrong", "").await;
    assert!(
        wrong.body.contains("Wrong email, password or code"),
        "{}",
        wrong.body
    );
    en.login(&email, &password).await;
    let dashboard = en.get("/admin").await.body;
    assert!(
        english(&dashboard) && dashboard.contains(">Dashboard<"),
        "{dashboard}"
    );
    // `?lang=zh` wins over the browser, and is remembered.
    assert!(chinese(&en.get("/admin?lang=zh").await.body));
    let products = en.get("/admin/products").await.body;
    assert!(
        chinese(&products) && products.contains("新建商品"),
        "{products}"
    );

    // A Chinese browser whose operator chose English keeps English.
    let zh = Panel::new(&kami);
    zh.set_accept_language("zh-CN,zh;q=0.9");
    zh.set_cookie("kami_lang", "en");
    let login = zh.get("/admin/login").await.body;
    assert!(english(&login) && login.contains(LOGIN_EN), "{login}");
    zh.login(&email, &password).await;
    assert!(english(&zh.get("/admin/products").await.body));
}

both_backends!(
    the_panel_speaks_the_browser_language_until_one_is_picked,
    a_deep_link_is_restored_after_login,
    lockout_after_repeated_failures,
    a_known_browser_gets_past_a_lock_and_the_cli_resets_a_password,
    logout_and_revocation_end_sessions,
    forms_without_their_csrf_token_are_refused,
    staff_cannot_reach_owner_pages,
    totp_login_needs_the_current_code,
);

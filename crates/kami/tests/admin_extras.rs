//! Issue 3's admin extras over HTTP, on the real binary and both backends:
//! API key scopes, reordering the catalogue, the orders CSV export, and
//! TOTP recovery codes.

#[macro_use]
mod common;

use common::panel::{attr_after, create_admin, totp_next, totp_now, Panel};
use common::{spawn_kami, Backend, Kami};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// `kami api-key create` with scopes; the key is the last line of stdout.
fn scoped_key(kami: &Kami, name: &str, scopes: &[&str]) -> String {
    let mut args = vec!["api-key", "create", "--name", name];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    let out = kami.cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

async fn get_with(kami: &Kami, key: &str, path: &str) -> (StatusCode, Value) {
    kami.send(kami.http.get(kami.url(path)).bearer_auth(key))
        .await
}

async fn post_with(kami: &Kami, key: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    kami.send(kami.http.post(kami.url(path)).bearer_auth(key).json(body))
        .await
}

async fn owner_panel(kami: &Kami) -> Panel {
    let password = create_admin(kami, "owner@example.com", "owner");
    let p = Panel::new(kami);
    p.login("owner@example.com", &password).await;
    p
}

async fn api_key_scopes_are_enforced(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let product = kami.product("Scoped", json!({})).await;
    let reader = scoped_key(&kami, "reader", &["orders:read"]);

    let (s, v) = get_with(&kami, &reader, "/api/v1/admin/orders").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["data"].is_array());
    let (s, v) = post_with(
        &kami,
        &reader,
        "/api/v1/admin/products",
        &json!({"name": "x", "price": 1, "currency": "CNY"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "forbidden");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("products:write"));
    // The scope is checked before the body is read.
    let (s, v) = kami
        .send(
            kami.http
                .post(kami.url("/api/v1/admin/products"))
                .bearer_auth(&reader)
                .body("not json"),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _) = get_with(
        &kami,
        &reader,
        &format!("/api/v1/admin/products/{product}/stock"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Authentication still comes first.
    let (s, v) = post_with(&kami, "kami_nonsense", "/api/v1/admin/products", &json!({})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "unauthorized");
    // The default key (API.md's command, no --scope) is an admin key.
    let (s, _) = kami.admin_get("/api/v1/admin/orders").await;
    assert_eq!(s, StatusCode::OK);
    // An unknown scope is refused by the CLI.
    let out = kami.cli(&[
        "api-key",
        "create",
        "--name",
        "x",
        "--scope",
        "orders:write",
    ]);
    assert!(!out.status.success());

    // The panel: create a key with chosen scopes, see them, revoke it.
    let p = owner_panel(&kami).await;
    let csrf = p.csrf().await;
    let created = p
        .post(
            "/admin/keys",
            &[
                ("csrf", &csrf),
                ("name", "stock bot"),
                ("scope", "stock:read"),
                ("scope", "products:write"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let key = common::panel::text_after(&created.body, "<code class=\"code\" id=\"new-key\">")
        .expect("the new key is shown");
    assert!(
        created.body.contains("stock:read products:write")
            || created.body.contains("products:write stock:read")
    );
    let (s, _) = get_with(
        &kami,
        &key,
        &format!("/api/v1/admin/products/{product}/stock"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = get_with(&kami, &key, "/api/v1/admin/products").await;
    assert_eq!(s, StatusCode::OK, "products:write includes products:read");
    let (s, _) = get_with(&kami, &key, "/api/v1/admin/orders").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Last used shows once the key has been used.
    let keys = p.get("/admin/keys").await.body;
    let row = keys
        .split("<tr>")
        .find(|r| r.contains("stock bot"))
        .unwrap();
    assert!(!row.contains("<td>—</td>"), "last used is shown: {row}");
    // An unknown scope is refused, nothing created.
    let bogus = p
        .post(
            "/admin/keys",
            &[
                ("csrf", &csrf),
                ("name", "bogus"),
                ("scope", "orders:write"),
            ],
        )
        .await;
    assert_eq!(bogus.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!p.get("/admin/keys").await.body.contains("bogus"));
    // Revoked: 401, not 403.
    let action = attr_after(row, "action=\"").unwrap();
    let revoked = p.post(&action, &[("csrf", &csrf)]).await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    let (s, v) = get_with(
        &kami,
        &key,
        &format!("/api/v1/admin/products/{product}/stock"),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let audit = p.get("/admin/audit").await.body;
    assert!(audit.contains("api_key_created") && audit.contains("api_key_revoked"));
}

/// The product names in the order the storefront's home page shows them.
async fn storefront_order(kami: &Kami, names: &[&str]) -> Vec<String> {
    let html = kami
        .http
        .get(kami.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut found: Vec<(usize, String)> = names
        .iter()
        .map(|n| {
            (
                html.find(n).unwrap_or_else(|| panic!("{n} not listed")),
                n.to_string(),
            )
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

async fn move_in_panel(p: &Panel, what: &str, id: i64, dir: &str) -> StatusCode {
    let csrf = p.csrf().await;
    p.post(
        &format!("/admin/{what}/{id}/move"),
        &[("csrf", &csrf), ("dir", dir)],
    )
    .await
    .status
}

async fn reorder_reflects_on_the_storefront(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let a = kami
        .product("Alpha card", json!({"category": "Games"}))
        .await;
    let b = kami
        .product("Bravo card", json!({"category": "Games"}))
        .await;
    let c = kami
        .product("Charlie card", json!({"category": "Games"}))
        .await;
    let d = kami
        .product("Delta card", json!({"category": "Music"}))
        .await;
    let names = ["Alpha card", "Bravo card", "Charlie card", "Delta card"];
    assert_eq!(storefront_order(&kami, &names).await, names);
    let p = owner_panel(&kami).await;

    assert_eq!(
        move_in_panel(&p, "products", c, "up").await,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        move_in_panel(&p, "products", c, "up").await,
        StatusCode::SEE_OTHER
    );
    // At the top already: nothing changes.
    assert_eq!(
        move_in_panel(&p, "products", c, "up").await,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        move_in_panel(&p, "products", a, "down").await,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        storefront_order(&kami, &names).await,
        ["Charlie card", "Bravo card", "Alpha card", "Delta card"]
    );
    // Categories: Music first.
    let list = p.get("/admin/products").await.body;
    let music = list
        .split("<tr id=\"category-")
        .skip(1)
        .find(|r| r.contains("Music"))
        .unwrap();
    let music_id: i64 = music[..music.find('"').unwrap()].parse().unwrap();
    assert_eq!(
        move_in_panel(&p, "categories", music_id, "up").await,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        storefront_order(&kami, &names).await,
        ["Delta card", "Charlie card", "Bravo card", "Alpha card"]
    );
    // The JSON API lists in the same order.
    let (_, v) = kami.send(kami.http.get(kami.url("/api/v1/products"))).await;
    assert_eq!(common::ids_of(&v), [d, c, b, a]);

    // CSRF, bad direction, unknown product.
    let no_csrf = p
        .post(&format!("/admin/products/{a}/move"), &[("dir", "up")])
        .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    assert_eq!(
        move_in_panel(&p, "products", a, "sideways").await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        move_in_panel(&p, "products", 99_999, "up").await,
        StatusCode::NOT_FOUND
    );
    let audit = p.get("/admin/audit").await.body;
    assert!(
        audit.contains("product_moved") && audit.contains("category_moved"),
        "{audit}"
    );
}

async fn export_csv(p: &Panel, query: &str) -> (StatusCode, String, String, Vec<u8>) {
    let (status, headers, body) = p
        .download(&format!("/admin/orders/export.csv?{query}"))
        .await;
    let h = |n: &str| {
        headers
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (status, h("content-type"), h("content-disposition"), body)
}

fn rows(csv: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(&csv[3..]).unwrap();
    text.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

async fn orders_csv_respects_filters_and_defuses_formulas(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let evil = kami
        .product("=HYPERLINK(\"http://evil\",\"x\")", json!({}))
        .await;
    let chinese = kami.product("腾讯视频月卡", json!({})).await;
    let codes = common::make_codes("SECRET-CODE", 5);
    kami.import_codes(evil, &codes[..2]).await;
    kami.import_codes(chinese, &codes[2..]).await;
    let paid = kami.buy(chinese, 1, "alice@example.com").await;
    kami.pay_ok(&paid).await;
    let delivered = kami.codes(&paid).await;
    assert_eq!(delivered.len(), 1);
    let pending = kami.buy(evil, 1, "bob@example.com").await;
    kami.buy(chinese, 1, "alice@example.com").await;

    let p = owner_panel(&kami).await;
    let (s, ct, cd, all) = export_csv(&p, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct, "text/csv; charset=utf-8");
    assert!(
        cd.starts_with("attachment; filename=\"orders-") && cd.ends_with(".csv\""),
        "{cd}"
    );
    assert_eq!(&all[..3], b"\xEF\xBB\xBF", "UTF-8 BOM for Excel");
    let text = String::from_utf8(all.clone()).unwrap();
    assert!(text.contains("order_no,status,product_id,product"));
    assert_eq!(rows(&all).len(), 3, "{text}");
    assert!(text.contains("腾讯视频月卡"));
    assert!(
        text.contains("\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\""),
        "{text}"
    );
    assert!(!text.contains(",=HYPERLINK"));
    for c in &codes {
        assert!(!text.contains(c.as_str()), "the export never holds a code");
    }

    let (_, _, _, alice) = export_csv(&p, "q=alice%40example.com").await;
    let alice = rows(&alice);
    assert_eq!(alice.len(), 2);
    assert!(alice.iter().all(|r| r.contains("alice@example.com")));
    let (_, _, _, done) = export_csv(&p, "status=delivered").await;
    let done = rows(&done);
    assert_eq!(done.len(), 1);
    assert!(done[0].starts_with(paid["order_no"].as_str().unwrap()));
    let no = pending["order_no"].as_str().unwrap();
    let (_, _, _, one) = export_csv(&p, &format!("q={no}")).await;
    assert_eq!(rows(&one).len(), 1);
    let today = &kami_today();
    let (_, _, _, t) = export_csv(&p, &format!("from={today}&to={today}")).await;
    assert_eq!(rows(&t).len(), 3);
    let (_, _, _, later) = export_csv(&p, "from=2999-01-01").await;
    assert_eq!(rows(&later).len(), 0);
    let (_, _, _, earlier) = export_csv(&p, "to=2000-01-01").await;
    assert_eq!(rows(&earlier).len(), 0);
    let (s, _, _, _) = export_csv(&p, "from=yesterday").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // The list page shows the same filters and links the export with them.
    let list = p
        .get("/admin/orders?q=alice%40example.com&status=delivered")
        .await
        .body;
    let href = attr_after(&list, "id=\"export-csv\" href=\"").unwrap();
    assert_eq!(
        href,
        "/admin/orders/export.csv?q=alice%40example.com&amp;status=delivered&amp;from=&amp;to="
    );

    // Staff may export too; every export is audited.
    let pw = create_admin(&kami, "staff@example.com", "staff");
    let staff = Panel::new(&kami);
    staff.login("staff@example.com", &pw).await;
    let res = staff.get("/admin/orders/export.csv").await;
    assert_eq!(res.status, StatusCode::OK);
    let audit = p.get("/admin/audit").await.body;
    assert!(audit.matches("orders_exported").count() >= 8, "{audit}");
    // Signed out: no file.
    let anon = Panel::new(&kami).get("/admin/orders/export.csv").await;
    assert_ne!(anon.status, StatusCode::OK);
    assert!(!anon.body.contains("alice@example.com"));
}

fn kami_today() -> String {
    let secs = common::now_secs();
    let days = secs.div_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Turns TOTP on for the signed-in operator; returns the secret and the
/// recovery codes shown once.
pub async fn enable_totp(p: &Panel) -> (String, Vec<String>) {
    let page = p.get("/admin/security").await;
    let secret =
        common::panel::text_after(&page.body, "<code class=\"code\" id=\"totp-secret\">").unwrap();
    let on = p
        .post(
            "/admin/security/totp",
            &[
                ("csrf", &page.csrf()),
                ("secret", &secret),
                ("code", &totp_now(&secret)),
            ],
        )
        .await;
    assert_eq!(on.status, StatusCode::OK, "{}", on.body);
    (secret, recovery_codes(&on.body))
}

fn recovery_codes(html: &str) -> Vec<String> {
    html.split("<code class=\"code recovery-code\">")
        .skip(1)
        .map(|s| s[..s.find('<').unwrap()].to_string())
        .collect()
}

async fn recovery_codes_sign_in_once(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let email = "owner@example.com";
    let password = create_admin(&kami, email, "owner");
    let p = Panel::new(&kami);
    p.login(email, &password).await;
    let (secret, codes) = enable_totp(&p).await;
    assert_eq!(codes.len(), 10);
    // With TOTP on, the session alone cannot put a key of its own in its
    // place (which would void the phone and the recovery codes).
    let page = p.get("/admin/security").await;
    let other = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let swapped = p
        .post(
            "/admin/security/totp",
            &[
                ("csrf", &page.csrf()),
                ("secret", other),
                ("code", &totp_now(other)),
            ],
        )
        .await;
    assert_eq!(
        swapped.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        swapped.body
    );
    assert!(
        recovery_codes(&swapped.body).is_empty(),
        "no new recovery codes"
    );
    let again = p.get("/admin/security").await.body;
    assert!(recovery_codes(&again).is_empty(), "shown only once");
    assert!(again.contains("id=\"recovery-left\">10<"));

    // TOTP is required: no code, a wrong one, or a made-up recovery code fail.
    let b = Panel::new(&kami);
    for wrong in ["", "000000", "AAAA-BBBB-CCCC-DDDD"] {
        let page = b.try_login(email, &password, wrong).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{wrong:?}");
    }
    // A recovery code with the wrong password is refused and not spent.
    let page = b.try_login(email, "wrong password", &codes[0]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    // Typed loosely (lower case, spaces): signs in once.
    let loose = codes[0].to_lowercase().replace('-', " ");
    let ok = b.try_login(email, &password, &loose).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let c = Panel::new(&kami);
    let reused = c.try_login(email, &password, &codes[0]).await;
    assert_eq!(
        reused.status,
        StatusCode::UNAUTHORIZED,
        "each code works once"
    );
    let ok = c.try_login(email, &password, &codes[1]).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert!(c
        .get("/admin/security")
        .await
        .body
        .contains("id=\"recovery-left\">8<"));

    // Regenerate: needs a current TOTP code; the old unused codes stop working.
    let csrf = c.csrf().await;
    let refused = c
        .post(
            "/admin/security/recovery-codes",
            &[("csrf", &csrf), ("code", "000000")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fresh = c
        .post(
            "/admin/security/recovery-codes",
            &[("csrf", &csrf), ("code", &totp_next(&secret))],
        )
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
    let fresh = recovery_codes(&fresh.body);
    assert_eq!(fresh.len(), 10);
    assert!(fresh.iter().all(|f| !codes.contains(f)));
    let d = Panel::new(&kami);
    let old = d.try_login(email, &password, &codes[2]).await;
    assert_eq!(
        old.status,
        StatusCode::UNAUTHORIZED,
        "regenerating invalidates"
    );
    let new = d.try_login(email, &password, &fresh[0]).await;
    assert_eq!(new.status, StatusCode::SEE_OTHER);

    let audit = d.get("/admin/audit").await.body;
    for action in [
        "totp_enabled",
        "recovery_code_used",
        "recovery_codes_regenerated",
        "wrong or used recovery code",
    ] {
        assert!(audit.contains(action), "audit has {action}");
    }
    for code in codes.iter().chain(&fresh) {
        assert!(!audit.contains(code.as_str()));
        assert!(
            !kami.logs().contains(code.as_str()),
            "codes are never logged"
        );
    }
}

/// Every accepted TOTP code spends its time step, wherever it is accepted
/// (RFC 6238 5.2): the code that signed in cannot then issue new recovery
/// codes or turn TOTP off, and the code that turned TOTP on cannot sign in.
async fn a_totp_code_is_accepted_once_wherever_it_is_typed(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let email = "once@example.com";
    let password = create_admin(&kami, email, "owner");
    let a = Panel::new(&kami);
    a.login(email, &password).await;
    let page = a.get("/admin/security").await;
    let secret =
        common::panel::text_after(&page.body, "<code class=\"code\" id=\"totp-secret\">").unwrap();
    let enabling = totp_now(&secret);
    let on = a
        .post(
            "/admin/security/totp",
            &[
                ("csrf", &page.csrf()),
                ("secret", &secret),
                ("code", &enabling),
            ],
        )
        .await;
    assert_eq!(on.status, StatusCode::OK, "{}", on.body);
    let b = Panel::new(&kami);
    let page = b.try_login(email, &password, &enabling).await;
    assert_eq!(
        page.status,
        StatusCode::UNAUTHORIZED,
        "the enabling code signed in"
    );

    let code = totp_next(&secret);
    let page = b.try_login(email, &password, &code).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    for path in [
        "/admin/security/recovery-codes",
        "/admin/security/totp/disable",
    ] {
        let csrf = b.csrf().await;
        let reused = b.post(path, &[("csrf", &csrf), ("code", &code)]).await;
        assert_eq!(
            reused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path} took the code that signed in: {}",
            reused.body
        );
        assert!(recovery_codes(&reused.body).is_empty(), "{path}");
    }
    let page = b.get("/admin/security").await.body;
    assert!(
        page.contains("/admin/security/totp/disable"),
        "TOTP is still on"
    );
    assert!(page.contains("id=\"recovery-left\">10<"), "the codes stand");
}

both_backends!(
    api_key_scopes_are_enforced,
    reorder_reflects_on_the_storefront,
    orders_csv_respects_filters_and_defuses_formulas,
    recovery_codes_sign_in_once,
    a_totp_code_is_accepted_once_wherever_it_is_typed,
);

/// More orders than one page of the stream (500): every one comes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_csv_streams_past_one_page() {
    let kami = spawn_kami(Backend::Sqlite).await;
    let product = kami.product("Bulk", json!({"max_quantity": 1})).await;
    kami.import_codes(product, &common::make_codes("BULK", 520))
        .await;
    for chunk in (0..520).collect::<Vec<_>>().chunks(40) {
        let kami = &kami;
        let orders = chunk
            .iter()
            .map(|i| async move { kami.buy(product, 1, &format!("b{i}@example.com")).await });
        futures::future::join_all(orders).await;
    }
    let p = owner_panel(&kami).await;
    let (status, _, _, csv) = export_csv(&p, "").await;
    assert_eq!(status, StatusCode::OK);
    let mut numbers: Vec<String> = rows(&csv)
        .iter()
        .map(|r| r.split(',').next().unwrap().to_string())
        .collect();
    assert_eq!(numbers.len(), 520);
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), 520, "no order twice");
}

/// Turning TOTP off (or new recovery codes) asks for a current code, and
/// guessing it draws on the sign-in attempts of the client's address: a
/// session alone cannot try its way through a million codes at the admin
/// rate (an audit made 265 guesses in 1.3 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guessing_the_current_code_runs_into_the_sign_in_limit() {
    let kami = common::spawn_kami_with(
        Backend::Sqlite,
        common::Options {
            env: vec![("KAMI_RATE_LIMITS".into(), "on".into())],
            ..common::Options::default()
        },
    )
    .await;
    let email = "guessed@example.com";
    let password = create_admin(&kami, email, "owner");
    let p = Panel::new(&kami);
    p.login(email, &password).await;
    enable_totp(&p).await;
    let mut limited = false;
    for i in 0..15 {
        let csrf = p.csrf().await;
        let tried = p
            .post(
                "/admin/security/totp/disable",
                &[("csrf", &csrf), ("code", &format!("{i:06}"))],
            )
            .await;
        if tried.status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(
            tried.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            tried.body
        );
    }
    assert!(limited, "15 wrong codes in a row were not limited");
    let page = p.get("/admin/security").await.body;
    assert!(
        page.contains("/admin/security/totp/disable"),
        "TOTP is still on"
    );
}

//! Every error a buyer can reach through the storefront's HTML forms comes
//! back as a friendly, translated page or inline message with a way back:
//! never raw JSON, a stack trace or a blank page. So do the router's own
//! 404, 405 and 413 on storefront and panel routes. (`unavailable`,
//! `overloaded`, `idempotency_conflict` and `unauthorized` cannot be
//! provoked through the HTML forms on demand; their texts are checked by the
//! storefront's translation tests.)

#[macro_use]
mod common;

use common::panel::{Page, Panel};
use common::{spawn_kami, spawn_kami_with, Backend, Kami, Options};
use reqwest::StatusCode;
use serde_json::json;

/// A friendly page: the status, the text, a link back, and no JSON.
fn assert_friendly(page: &Page, status: StatusCode, text: &str) {
    assert_eq!(page.status, status, "{}", page.body);
    assert!(
        page.body.starts_with("<!doctype html>"),
        "an HTML page: {}",
        page.body
    );
    assert!(page.body.contains(text), "{text:?} in {}", page.body);
    assert!(
        !page.body.contains("{\"error\""),
        "no raw JSON: {}",
        page.body
    );
    assert!(
        page.body.contains("href=\"/\"") || page.body.contains("href=\"/admin\""),
        "a way back: {}",
        page.body
    );
}

/// Opens the product page (for the CSRF cookie and token) and submits its form.
async fn buy(b: &Panel, product: i64, quantity: &str, email: &str) -> Page {
    let form = b.get(&format!("/products/{product}")).await;
    let csrf = form.csrf();
    b.post(
        &format!("/products/{product}/buy"),
        &[
            ("csrf", &csrf),
            ("quantity", quantity),
            ("email", email),
            ("channel", "sandbox"),
        ],
    )
    .await
}

async fn storefront_form_errors_are_friendly(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let b = Panel::new(&kami);
    let none = kami.product("Empty", json!({})).await;
    let one = kami.product("One left", json!({})).await;
    kami.import_codes(one, &common::make_codes("ONE", 1)).await;
    let limited = kami.product("Limited", json!({"per_buyer_limit": 1})).await;
    kami.import_codes(limited, &common::make_codes("LIM", 3))
        .await;
    let soon = kami
        .product("Soon", json!({"sale_starts_at": "2999-01-01T00:00:00Z"}))
        .await;
    kami.import_codes(soon, &common::make_codes("SOON", 1))
        .await;
    let over = kami
        .product("Over", json!({"sale_ends_at": "2001-01-01T00:00:00Z"}))
        .await;
    kami.import_codes(over, &common::make_codes("OVER", 1))
        .await;

    assert_friendly(
        &buy(&b, none, "1", "a@example.com").await,
        StatusCode::CONFLICT,
        "已售罄",
    );
    assert_friendly(
        &buy(&b, one, "2", "a@example.com").await,
        StatusCode::CONFLICT,
        "库存不足",
    );
    let first = buy(&b, limited, "1", "a@example.com").await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    assert_friendly(
        &buy(&b, limited, "1", "a@example.com").await,
        StatusCode::CONFLICT,
        "限购",
    );
    assert_friendly(
        &buy(&b, soon, "1", "a@example.com").await,
        StatusCode::CONFLICT,
        "尚未开售",
    );
    assert_friendly(
        &buy(&b, over, "1", "a@example.com").await,
        StatusCode::CONFLICT,
        "停止销售",
    );
    // The fields a buyer types are named wholly in Chinese, without the
    // API's English rule.
    let bad_email = buy(&b, one, "1", "not an email").await;
    assert_friendly(
        &bad_email,
        StatusCode::UNPROCESSABLE_ENTITY,
        "请填写有效的邮箱地址",
    );
    assert!(!bad_email.body.contains("(email"), "{}", bad_email.body);
    let bad_quantity = buy(&b, one, "0", "a@example.com").await;
    assert_friendly(
        &bad_quantity,
        StatusCode::UNPROCESSABLE_ENTITY,
        "每单可购 1 至 10 件",
    );
    assert!(
        !bad_quantity.body.contains("(quantity"),
        "{}",
        bad_quantity.body
    );
    // A product that does not exist, or went away while the form was open.
    assert_friendly(
        &b.get("/products/999999").await,
        StatusCode::NOT_FOUND,
        "不存在",
    );
    let csrf = b.get(&format!("/products/{one}")).await.csrf();
    let gone = b
        .post(
            "/products/999999/buy",
            &[
                ("csrf", &csrf),
                ("quantity", "1"),
                ("email", "a@example.com"),
            ],
        )
        .await;
    assert_friendly(&gone, StatusCode::NOT_FOUND, "不存在");
    assert_friendly(
        &b.get("/orders/K0000000000").await,
        StatusCode::NOT_FOUND,
        "不存在",
    );
    // No CSRF token (an expired form), or a form missing its fields.
    let stale = Panel::new(&kami)
        .post(
            &format!("/products/{one}/buy"),
            &[("csrf", "x"), ("quantity", "1"), ("email", "a@example.com")],
        )
        .await;
    assert_friendly(&stale, StatusCode::FORBIDDEN, "页面已过期");
    let partial = b
        .post(&format!("/products/{one}/buy"), &[("quantity", "1")])
        .await;
    assert_friendly(&partial, StatusCode::UNPROCESSABLE_ENTITY, "提交的信息有误");
    let lookup = b.post("/lookup", &[("email", "a@example.com")]).await;
    assert_friendly(&lookup, StatusCode::UNPROCESSABLE_ENTITY, "提交的信息有误");

    // The same pages in English.
    let en = Panel::new(&kami);
    en.get("/?lang=en").await;
    assert_friendly(
        &buy(&en, none, "1", "a@example.com").await,
        StatusCode::CONFLICT,
        "sold out",
    );
    assert_friendly(
        &en.get("/products/999999").await,
        StatusCode::NOT_FOUND,
        "could not find",
    );
}

async fn router_errors_on_pages_are_friendly(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let b = Panel::new(&kami);
    let product = kami.product("Anything", json!({})).await;
    assert_friendly(
        &b.get("/no/such/page").await,
        StatusCode::NOT_FOUND,
        "不存在",
    );
    let wrong_method = b.get(&format!("/products/{product}/buy")).await;
    assert_friendly(
        &wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "无法以这种方式打开",
    );
    assert_friendly(
        &b.post("/", &[]).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "无法以这种方式打开",
    );
    // The panel's routes answer with the panel's error page.
    assert_friendly(
        &b.get("/admin/no/such/page").await,
        StatusCode::NOT_FOUND,
        "不存在",
    );
    let put = reqwest::Client::new()
        .put(kami.url("/admin/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body = put.text().await.unwrap();
    assert!(
        body.starts_with("<!doctype html>") && body.contains("href=\"/admin\""),
        "{body}"
    );

    // The JSON API and the health checks keep their machine answers.
    let api = reqwest::get(kami.url("/api/v1/nope")).await.unwrap();
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    let v: serde_json::Value = api.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    let api405 = kami
        .send(kami.http.delete(kami.url("/api/v1/products")))
        .await;
    assert_eq!(api405.0, StatusCode::METHOD_NOT_ALLOWED);
    assert!(!api405.1.to_string().contains("<!doctype"));

    // Bodies over the 1 MiB form limit. The server answers without reading
    // them and closes the connection, so each goes on a client of its own.
    let huge = "x".repeat(2 * 1024 * 1024);
    let too_big = Panel::new(&kami)
        .post(
            &format!("/products/{product}/buy"),
            &[("csrf", "x"), ("email", &huge)],
        )
        .await;
    assert_friendly(&too_big, StatusCode::PAYLOAD_TOO_LARGE, "提交的内容过大");
    let admin_big = Panel::new(&kami)
        .post("/admin/login", &[("csrf", &huge)])
        .await;
    assert_friendly(&admin_big, StatusCode::PAYLOAD_TOO_LARGE, "提交的内容过大");
}

/// With the documented rate limits on, a buyer who keeps trying gets a
/// friendly "too many attempts" page with Retry-After.
async fn rate_limited_lookup_is_friendly(backend: Backend) {
    let kami: Kami = spawn_kami_with(
        backend,
        Options {
            env: vec![("KAMI_RATE_LIMITS".into(), "on".into())],
            ..Options::default()
        },
    )
    .await;
    let b = Panel::new(&kami);
    let csrf = b.get("/lookup").await.csrf();
    let mut last = None;
    for _ in 0..12 {
        let p = b
            .post(
                "/lookup",
                &[
                    ("csrf", &csrf),
                    ("email", "a@example.com"),
                    ("query_password", "pw"),
                ],
            )
            .await;
        if p.status == StatusCode::TOO_MANY_REQUESTS {
            last = Some(p);
            break;
        }
        assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    }
    let page = last.expect("the lookup limit is reached");
    assert_friendly(&page, StatusCode::TOO_MANY_REQUESTS, "操作过于频繁");
    // API.md: a limited request gets 429 with `Retry-After`, pages too.
    let wait: u64 = page
        .retry_after
        .as_deref()
        .expect("Retry-After on the page's 429")
        .parse()
        .unwrap();
    assert!(wait >= 1, "{wait}");
}

both_backends!(
    storefront_form_errors_are_friendly,
    router_errors_on_pages_are_friendly,
    rate_limited_lookup_is_friendly,
);

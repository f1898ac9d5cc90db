//! Health, metrics, request ids, and the storefront's escaping.

#[macro_use]
mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

both_backends!(
    health_metrics_and_request_ids,
    storefront_lists_products_with_names_escaped,
    product_descriptions_render_markdown_and_nothing_else,
);

/// A description is Markdown: its formatting shows, its raw HTML is text,
/// and a `javascript:` link loses its target.
async fn product_descriptions_render_markdown_and_nothing_else(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let description = "**Region:** CN\n\n- works on Steam\n\n\
                       <img src=x onerror=alert(1)> [help](javascript:alert(2))";
    let pid = kami
        .product("Described", json!({ "description": description }))
        .await;
    let page = kami
        .http
        .get(kami.url(&format!("/products/{pid}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<strong>Region:</strong>"), "{page}");
    assert!(page.contains("<li>works on Steam</li>"), "{page}");
    assert!(!page.contains("<img src=x"), "raw HTML reached the page");
    assert!(
        page.contains("&lt;img src=x"),
        "raw HTML was not shown as text"
    );
    assert!(
        !page.contains("javascript:alert(2)\""),
        "a script link kept its target"
    );
    // The API keeps the Markdown as written.
    let (_, v) = kami.admin_get("/api/v1/admin/products").await;
    assert!(v.to_string().contains("**Region:**"));
}

async fn health_metrics_and_request_ids(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let h = &kami.http;

    for path in ["/healthz", "/readyz"] {
        let res = h.get(kami.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    let doc: serde_json::Value = h
        .get(kami.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .expect("the OpenAPI document is JSON");
    assert!(doc["paths"]["/api/v1/orders"]["post"].is_object());

    // Some traffic: an order, a payment, a rejected notification.
    let pid = kami.product("Metered", json!({})).await;
    kami.import_codes(pid, &make_codes("MET", 3)).await;
    let o = kami.buy(pid, 1, "metrics@example.com").await;
    kami.pay_ok(&o).await;
    let (s, _) = kami.notify(b"{}".to_vec(), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let res = h.get(kami.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    assert!(
        ct.starts_with("text/plain"),
        "Prometheus text format, got content-type {ct:?}"
    );
    let text = res.text().await.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("# TYPE ")),
        "no # TYPE lines:\n{text}"
    );
    for l in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let value = l.rsplit(' ').next().unwrap_or("");
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "not a sample line: {l:?}"
        );
    }
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(
        samples.iter().any(|l| l.contains("order")),
        "no order metric after an order:\n{text}"
    );
    assert!(
        samples.iter().any(|l| l.contains("notif")),
        "no notification metric after notifications:\n{text}"
    );
    assert!(
        samples.iter().any(|l| l.contains("http")),
        "no HTTP metric:\n{text}"
    );
    // Counters an operator alerts on are there at zero before anything
    // was refused, per class, writer and channel.
    for series in [
        r#"kami_rate_limited_total{class="lookup"} 0"#,
        r#"kami_shed_total{writer="orders"} 0"#,
        r#"kami_connections_refused_total{reason="per_address"} 0"#,
        "kami_body_budget_refusals_total 0",
        r#"kami_notifications_unrecorded_total{channel="sandbox"} 0"#,
    ] {
        assert!(samples.contains(&series), "no {series:?}:\n{text}");
    }

    // Requests are counted by route, method and answer, whichever worker
    // thread served them; a method nobody standardised is `other`, so
    // invented methods cannot add series.
    let healthz_ok = r#"route="/healthz",method="GET",status="200""#;
    let before = kami.counter("kami_http_requests_total", healthz_ok).await;
    for _ in 0..20 {
        let res = h.get(kami.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    for m in ["BREW", "WHEN"] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let res = h
            .request(method, kami.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    let after = kami.counter("kami_http_requests_total", healthz_ok).await;
    assert_eq!(after, before + 20.0);
    let other = r#"route="/healthz",method="other",status="405""#;
    assert_eq!(kami.counter("kami_http_requests_total", other).await, 2.0);
    let text = kami.metrics().await;
    assert!(!text.contains("BREW") && !text.contains("WHEN"), "{text}");

    // Every response carries x-request-id: success, errors, HTML, notify, admin, 404.
    let mut ids = std::collections::HashSet::new();
    let requests = vec![
        ("healthz", h.get(kami.url("/healthz"))),
        ("readyz", h.get(kami.url("/readyz"))),
        ("metrics", h.get(kami.url("/metrics"))),
        ("storefront", h.get(kami.url("/"))),
        ("products", h.get(kami.url("/api/v1/products"))),
        ("unknown route", h.get(kami.url("/no/such/route"))),
        (
            "invalid order",
            h.post(kami.url("/api/v1/orders")).json(&json!({"quantity": 0})),
        ),
        (
            "order",
            h.post(kami.url("/api/v1/orders"))
                .json(&json!({"product_id": pid, "quantity": 1, "email": "rid@example.com", "channel": "sandbox"})),
        ),
        (
            "sold out",
            h.post(kami.url("/api/v1/orders"))
                .json(&json!({"product_id": pid, "quantity": 5, "email": "rid@example.com", "channel": "sandbox"})),
        ),
        (
            "order without token",
            h.get(kami.url(&format!("/api/v1/orders/{}", o["order_no"].as_str().unwrap()))),
        ),
        ("admin without key", h.get(kami.url("/api/v1/admin/products"))),
        (
            "admin",
            h.get(kami.url("/api/v1/admin/products")).bearer_auth(&kami.api_key),
        ),
        ("notify rejected", h.post(kami.url("/pay/sandbox/notify")).body("{}")),
        ("NUL in the address", h.get(kami.url("/api/v1/products?x=%00"))),
        ("page not found", h.get(kami.url("/products/999999"))),
        (
            "import",
            h.post(kami.url(&format!("/api/v1/admin/products/{pid}/cards")))
                .bearer_auth(&kami.api_key)
                .header("content-type", "text/plain")
                .body("RID-1\n"),
        ),
    ];
    for (what, req) in requests {
        let res = req.send().await.unwrap();
        let id = res
            .headers()
            .get("x-request-id")
            .unwrap_or_else(|| panic!("{what} ({}) has no x-request-id", res.status()))
            .to_str()
            .unwrap()
            .to_string();
        assert!(!id.is_empty(), "{what}: empty x-request-id");
        assert!(ids.insert(id.clone()), "{what}: request id {id} reused");
        // And the security headers, whatever answered; no HSTS over plain
        // http (`storefront.rs` has it over https).
        for (name, value) in [
            (
                "content-security-policy",
                "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
                 img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            ("referrer-policy", "same-origin"),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
        ] {
            assert_eq!(
                res.headers().get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{what} ({}): {name}",
                res.status()
            );
        }
        assert!(
            !res.headers().contains_key("strict-transport-security"),
            "{what}: HSTS over http"
        );
    }
    // A client's own id is kept if it is short and plain; a long one (which
    // every log line of the request would carry) is replaced.
    let echo = |sent: String| {
        let req = kami
            .http
            .get(kami.url("/healthz"))
            .header("x-request-id", sent);
        async move {
            let res = req.send().await.unwrap();
            res.headers()["x-request-id"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(echo("trace-42.a:b".into()).await, "trace-42.a:b");
    let long = "x".repeat(5000);
    let answered = echo(long.clone()).await;
    assert!(
        answered != long && answered.len() <= 128 && !answered.is_empty(),
        "a 5,000-byte request id was echoed"
    );
}

async fn storefront_lists_products_with_names_escaped(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let evil = "<script>alert(1)</script>";
    let pid = kami.product(evil, json!({})).await;
    kami.import_codes(pid, &make_codes("HTML", 2)).await;
    let plain = format!("Plain product {}", random_token(6));
    kami.product(&plain, json!({})).await;
    let hidden = format!("Hidden product {}", random_token(6));
    kami.product(&hidden, json!({"visible": false})).await;

    let res = kami.http.get(kami.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ct = res
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    let page = res.text().await.unwrap();
    assert!(
        !page.contains(evil),
        "the raw product name is in the page unescaped"
    );
    assert!(
        !page.contains("<script>alert"),
        "an unescaped script tag is in the page"
    );
    assert!(
        page.contains("&lt;script&gt;"),
        "the escaped name is not in the page"
    );
    assert!(
        page.contains(&plain),
        "a visible product is missing from the storefront"
    );
    assert!(
        !page.contains(&hidden),
        "a hidden product is on the storefront"
    );

    // The JSON API returns the name as it was given.
    let (s, v) = kami
        .send(kami.http.get(kami.url(&format!("/api/v1/products/{pid}"))))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["name"], json!(evil));
    assert_eq!(v["stock"], json!(2), "{v}");
}

/// The server runs with transparent huge pages off (`main.rs`,
/// `no_transparent_huge_pages`): zeroing a fresh 2 MiB page inside a page
/// fault stopped a worker, and every order behind it, for milliseconds.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn serve_runs_without_transparent_huge_pages() {
    let kami = spawn_kami(Backend::Sqlite).await;
    let pid = kami.pid().expect("the server is running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let thp = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(str::trim);
    // Kernels before 5.0 do not report it; every one this runs on does.
    assert_eq!(thp, Some("0"), "{status}");
}

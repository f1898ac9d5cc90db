//! API.md's conventions on the routes beyond orders: `Idempotency-Key` on
//! every POST of the JSON API, list cursors on the lookup, the admin order
//! list's documented query, `null` clearing a product's category, the
//! sandbox's return URL, and machine errors as API.md's JSON error.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

both_backends!(
    idempotency_key_holds_on_every_post_of_the_api,
    concurrent_retries_of_an_admin_post_create_one_product,
    lookup_pages_with_limit_and_starting_after,
    admin_order_list_takes_its_documented_query,
    admin_product_and_coupon_lists_page_with_cursors,
    null_clears_a_products_category,
    sandbox_return_shows_the_order,
    machine_errors_are_json,
    a_trade_number_pays_one_order,
    a_stale_idempotency_key_is_taken_over_once,
    a_sandbox_section_saying_disabled_turns_the_sandbox_off,
    the_status_filter_agrees_with_the_status_shown_at_the_deadline,
    a_value_of_the_wrong_type_names_its_field,
    a_nul_character_is_refused_not_a_server_error,
);

async fn post_idem(kami: &Kami, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
    kami.send(
        kami.http
            .post(kami.url(path))
            .bearer_auth(&kami.api_key)
            .header("Idempotency-Key", key)
            .json(body),
    )
    .await
}

async fn import_idem(kami: &Kami, pid: i64, key: &str, body: &str) -> (StatusCode, Value) {
    kami.send(
        kami.http
            .post(kami.url(&format!("/api/v1/admin/products/{pid}/cards")))
            .bearer_auth(&kami.api_key)
            .header("Idempotency-Key", key)
            .header("content-type", "text/plain")
            .body(body.to_string()),
    )
    .await
}

async fn product_count(kami: &Kami) -> usize {
    let (s, v) = kami.admin_get("/api/v1/admin/products").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["data"].as_array().expect("product list").len()
}

/// `422 invalid_request`.
fn assert_invalid(s: StatusCode, v: &Value) {
    assert_eq!(
        (s, error_code(v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        "{v}"
    );
}

fn conflict(v: &Value) -> bool {
    error_code(v) == "idempotency_conflict"
}

async fn idempotency_key_holds_on_every_post_of_the_api(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let products = "/api/v1/admin/products";

    // Creating a product: the retry is the first answer, one product.
    let before = product_count(&kami).await;
    let body = json!({"name": "Once", "price": 500, "currency": "CNY"});
    let key = format!("p-{}", random_token(12));
    let (s1, v1) = post_idem(&kami, products, &key, &body).await;
    assert_eq!(s1, StatusCode::CREATED, "{v1}");
    let (s2, v2) = post_idem(&kami, products, &key, &body).await;
    assert_eq!((s2, &v2), (StatusCode::CREATED, &v1), "the replay");
    assert_eq!(product_count(&kami).await, before + 1);
    // The same key with another body is refused and creates nothing.
    let other = json!({"name": "Other", "price": 500, "currency": "CNY"});
    let (s3, v3) = post_idem(&kami, products, &key, &other).await;
    assert_eq!(s3, StatusCode::CONFLICT, "{v3}");
    assert!(conflict(&v3), "{v3}");
    assert_eq!(product_count(&kami).await, before + 1);
    // Another API key has keys of its own.
    let out = kami.cli(&["api-key", "create", "--name", "second"]);
    assert!(out.status.success(), "{out:?}");
    let second = String::from_utf8(out.stdout).unwrap();
    let second = second.lines().last().unwrap().trim().to_string();
    let (s4, v4) = kami
        .send(
            kami.http
                .post(kami.url(products))
                .bearer_auth(&second)
                .header("Idempotency-Key", &key)
                .json(&body),
        )
        .await;
    assert_eq!(s4, StatusCode::CREATED, "{v4}");
    assert_ne!(v4["id"], v1["id"], "another key's request is its own");
    // A refusal of the client's own making is kept too: the retry hears it.
    let bad_key = format!("bad-{}", random_token(12));
    let bad = json!({"name": "No price", "currency": "CNY"});
    let (s5, v5) = post_idem(&kami, products, &bad_key, &bad).await;
    assert_eq!(s5, StatusCode::UNPROCESSABLE_ENTITY, "{v5}");
    let (s6, v6) = post_idem(&kami, products, &bad_key, &bad).await;
    assert_eq!((s6, &v6), (s5, &v5));
    // Without a key, the same body is another product.
    let (s7, v7) = kami.admin_post(products, &body).await;
    assert_eq!(s7, StatusCode::CREATED, "{v7}");
    assert_ne!(v7["id"], v1["id"]);

    // Importing codes: the retry imports nothing more.
    let pid = v1["id"].as_i64().unwrap();
    let key = format!("i-{}", random_token(12));
    let (s, first) = import_idem(&kami, pid, &key, "IDEM-A\nIDEM-B\n").await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(first["imported"], json!(2), "{first}");
    let (s, again) = import_idem(&kami, pid, &key, "IDEM-A\nIDEM-B\n").await;
    assert_eq!((s, &again), (StatusCode::OK, &first), "the replay");
    let (s, v) = import_idem(&kami, pid, &key, "IDEM-C\n").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(conflict(&v), "{v}");
    assert_eq!(kami.stock3(pid).await, (2, 0, 0));

    // Creating a coupon.
    let key = format!("c-{}", random_token(12));
    let coupon = json!({"code": "ONCE10", "kind": "percent", "value": 10});
    let (s, c1) = post_idem(&kami, "/api/v1/admin/coupons", &key, &coupon).await;
    assert_eq!(s, StatusCode::CREATED, "{c1}");
    let (s, c2) = post_idem(&kami, "/api/v1/admin/coupons", &key, &coupon).await;
    assert_eq!((s, &c2), (StatusCode::CREATED, &c1));

    // Looking up orders.
    let buyer = json!({"product_id": pid, "quantity": 1, "email": "idem@example.com",
                       "query_password": "pw-1", "channel": "sandbox"});
    let (s, o) = kami.order(buyer).await;
    assert_eq!(s, StatusCode::CREATED, "{o}");
    let key = format!("l-{}", random_token(12));
    let ask = json!({"email": "idem@example.com", "query_password": "pw-1"});
    let (s, l1) = post_idem(&kami, "/api/v1/orders/lookup", &key, &ask).await;
    assert_eq!(s, StatusCode::OK, "{l1}");
    assert_eq!(l1["data"][0]["order_no"], o["order_no"], "{l1}");
    let (s, l2) = post_idem(&kami, "/api/v1/orders/lookup", &key, &ask).await;
    assert_eq!((s, &l2), (StatusCode::OK, &l1));
    let wrong = json!({"email": "idem@example.com", "query_password": "pw-2"});
    let (s, v) = post_idem(&kami, "/api/v1/orders/lookup", &key, &wrong).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(conflict(&v), "{v}");

    // A malformed key is refused.
    let (s, v) = post_idem(&kami, products, "   ", &body).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}

async fn concurrent_retries_of_an_admin_post_create_one_product(backend: Backend) {
    let kami = Arc::new(spawn_kami(backend).await);
    let before = product_count(&kami).await;
    let key = format!("burst-{}", random_token(12));
    let body = json!({"name": "Burst", "price": 700, "currency": "CNY"});
    let ids = race_creates(&kami, &key, &body, 8).await;
    assert_eq!(ids.len(), 1, "every answer names one product: {ids:?}");
    assert_eq!(product_count(&kami).await, before + 1);
    // Once it has ended, a retry hears its answer.
    let (s, v) = post_idem(&kami, "/api/v1/admin/products", &key, &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(ids.contains(&v["id"].to_string()));
}

/// `n` product creations with one key at once: the ids the 201s named
/// (the others must be 409s: still running when they came, nothing done).
async fn race_creates(kami: &Arc<Kami>, key: &str, body: &Value, n: usize) -> HashSet<String> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (kami, key, body) = (kami.clone(), key.to_string(), body.clone());
        tasks.push(tokio::spawn(async move {
            post_idem(&kami, "/api/v1/admin/products", &key, &body).await
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        let (s, v) = t.await.unwrap();
        match s {
            StatusCode::CREATED => {
                ids.insert(v["id"].to_string());
            }
            StatusCode::CONFLICT => assert!(conflict(&v), "{v}"),
            _ => panic!("concurrent retry: {s} {v}"),
        }
    }
    ids
}

async fn lookup_page(kami: &Kami, body: Value, query: &str) -> (StatusCode, Value) {
    kami.send(
        kami.http
            .post(kami.url(&format!("/api/v1/orders/lookup{query}")))
            .json(&body),
    )
    .await
}

fn numbers(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|o| o["order_no"].as_str().unwrap().to_string())
        .collect()
}

async fn lookup_pages_with_limit_and_starting_after(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Pages", json!({})).await;
    kami.import_codes(pid, &make_codes("PAGE", 60)).await;
    let email = format!("pages-{}@example.com", random_token(6).to_lowercase());
    let mut placed = Vec::new();
    for _ in 0..52 {
        let (s, o) = kami
            .order(json!({"product_id": pid, "quantity": 1, "email": email,
                          "query_password": "pages", "channel": "sandbox"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{o}");
        placed.push(o["order_no"].as_str().unwrap().to_string());
    }
    // Someone else's order, and one of the same buyer without the password.
    let stranger = kami.buy(pid, 1, "stranger@example.com").await;
    let ask = json!({"email": email, "query_password": "pages"});

    // The first page is 50, newest first, and says more follow.
    let (s, v) = lookup_page(&kami, ask.clone(), "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let first = numbers(&v);
    assert_eq!(first.len(), 50);
    assert_eq!(v["has_more"], json!(true), "52 orders, 50 shown");
    let newest: Vec<String> = placed.iter().rev().cloned().collect();
    assert_eq!(first, newest[..50]);
    // The rest after its last.
    let mut next = ask.clone();
    next["starting_after"] = json!(first[49]);
    let (s, v) = lookup_page(&kami, next, "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(numbers(&v), newest[50..]);
    assert_eq!(v["has_more"], json!(false));

    // Smaller pages, in the body or the query string.
    let mut small = ask.clone();
    small["limit"] = json!(20);
    let (s, v) = lookup_page(&kami, small, "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(numbers(&v), newest[..20]);
    assert_eq!(v["has_more"], json!(true));
    let query = format!("?limit=2&starting_after={}", newest[49]);
    let (s, v) = lookup_page(&kami, ask.clone(), &query).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(numbers(&v), newest[50..]);
    assert_eq!(v["has_more"], json!(false));

    // A cursor that is not one of these orders, and a bad limit.
    for cursor in [
        stranger["order_no"].as_str().unwrap(),
        "K20990101000000NOSUCH00",
    ] {
        let mut bad = ask.clone();
        bad["starting_after"] = json!(cursor);
        let (s, v) = lookup_page(&kami, bad, "").await;
        assert_invalid(s, &v);
    }
    let mut bad = ask.clone();
    bad["limit"] = json!("many");
    let (s, v) = lookup_page(&kami, bad, "").await;
    assert_invalid(s, &v);
    // Out of range is clamped, as on every list.
    for (limit, len) in [(0, 1), (51, 50)] {
        let mut out_of_range = ask.clone();
        out_of_range["limit"] = json!(limit);
        let (s, v) = lookup_page(&kami, out_of_range, "").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(numbers(&v).len(), len, "limit {limit}");
    }
}

async fn admin_order_list_takes_its_documented_query(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Listed", json!({})).await;
    kami.import_codes(pid, &make_codes("LIST", 3)).await;
    let a = kami.buy(pid, 1, "a@example.com").await;
    let b = kami.buy(pid, 1, "b@example.com").await;

    let (s, v) = kami
        .admin_get("/api/v1/admin/orders?status=&email=&limit=&starting_after=")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(numbers(&v), [b["order_no"].clone(), a["order_no"].clone()]);
    assert_eq!(v["has_more"], json!(false));
    let (s, v) = kami.admin_get("/api/v1/admin/orders?limit=1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(numbers(&v), [b["order_no"].clone()]);
    assert_eq!(v["has_more"], json!(true));
    // The next page after the last item, named by its `id` (API.md: ids go
    // back unchanged) or by its order number.
    let id = &v["data"][0]["id"];
    assert!(id.is_i64(), "{v}");
    for cursor in [id.to_string(), b["order_no"].as_str().unwrap().to_string()] {
        let (s, v) = kami
            .admin_get(&format!(
                "/api/v1/admin/orders?limit=1&starting_after={cursor}"
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{cursor}: {v}");
        assert_eq!(numbers(&v), [a["order_no"].clone()], "after {cursor}");
        assert_eq!(v["has_more"], json!(false));
    }
    // Out of range is the nearest page size, as it always was.
    let (s, v) = kami.admin_get("/api/v1/admin/orders?limit=0").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(numbers(&v).len(), 1);
    let (s, v) = kami.admin_get("/api/v1/admin/orders?limit=9999").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(numbers(&v).len(), 2);
    // However far: a number too long for 64 bits is out of range too.
    let huge = "9".repeat(40);
    for (limit, len) in [(huge.clone(), 2), (format!("-{huge}"), 1)] {
        let (s, v) = kami
            .admin_get(&format!("/api/v1/admin/orders?limit={limit}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(numbers(&v).len(), len, "{limit}");
        let (s, v) = kami
            .send(
                kami.http
                    .get(kami.url(&format!("/api/v1/products?limit={limit}"))),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    for bad in ["?limit=abc", "?limit=1.5", "?product_id=abc"] {
        let (s, v) = kami.admin_get(&format!("/api/v1/admin/orders{bad}")).await;
        assert_invalid(s, &v);
    }
    // A parameter given twice names itself, in our words rather than the
    // extractor's.
    let (s, v) = kami.admin_get("/api/v1/admin/orders?limit=2&limit=3").await;
    assert_invalid(s, &v);
    assert_eq!(v["error"]["param"], "limit", "{v}");
    let (s, v) = kami
        .send(kami.http.get(kami.url("/api/v1/products?limit=2&limit=3")))
        .await;
    assert_invalid(s, &v);
    assert_eq!(v["error"]["param"], "limit", "{v}");
    assert_eq!(
        v["error"]["message"], "invalid query string: duplicate field `limit`",
        "{v}"
    );
    // The product filter: its orders, and none of another product's.
    let other = kami.product("Other", json!({})).await;
    let (s, v) = kami
        .admin_get(&format!("/api/v1/admin/orders?product_id={pid}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(numbers(&v).len(), 2, "{v}");
    let (s, v) = kami
        .admin_get(&format!("/api/v1/admin/orders?product_id={other}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(numbers(&v).is_empty(), "{v}");
}

/// API.md's lists take `limit` and `starting_after`: the admin API's
/// products and coupons too, walked here page by page to the end.
async fn admin_product_and_coupon_lists_page_with_cursors(backend: Backend) {
    let kami = spawn_kami(backend).await;
    for i in 0..5 {
        kami.product(&format!("Paged {i}"), json!({})).await;
        let (s, v) = kami
            .admin_post(
                "/api/v1/admin/coupons",
                &json!({"code": format!("PAGE{i}"), "kind": "percent", "value": 10}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    for list in ["/api/v1/admin/products", "/api/v1/admin/coupons"] {
        let (s, all) = kami.admin_get(list).await;
        assert_eq!(s, StatusCode::OK, "{all}");
        assert_eq!(all["has_more"], json!(false));
        let ids: Vec<Value> = all["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].clone())
            .collect();
        assert_eq!(ids.len(), 5, "{all}");
        let mut walked = Vec::new();
        let mut query = "?limit=2".to_string();
        loop {
            let (s, v) = kami.admin_get(&format!("{list}{query}")).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            let page = v["data"].as_array().unwrap();
            assert!(page.len() <= 2, "{v}");
            walked.extend(page.iter().map(|x| x["id"].clone()));
            if v["has_more"] == json!(false) {
                break;
            }
            let last = page.last().unwrap()["id"].to_string();
            query = format!("?limit=2&starting_after={}", last.trim_matches('"'));
        }
        assert_eq!(walked, ids, "{list}");
        for bad in ["?limit=abc", "?starting_after=999999"] {
            let (s, v) = kami.admin_get(&format!("{list}{bad}")).await;
            assert_invalid(s, &v);
        }
    }
}

async fn null_clears_a_products_category(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Filed", json!({"category": "Games"})).await;
    let path = format!("/api/v1/admin/products/{pid}");
    let (_, v) = kami.admin_patch(&path, &json!({"price": 880})).await;
    assert_eq!(
        v["category"],
        json!("Games"),
        "an absent field is kept: {v}"
    );
    let (s, v) = kami.admin_patch(&path, &json!({"category": null})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["category"].is_null(), "null clears it: {v}");
    let (_, v) = kami
        .send(kami.http.get(kami.url(&format!("/api/v1/products/{pid}"))))
        .await;
    assert!(v["category"].is_null(), "{v}");
}

async fn sandbox_return_shows_the_order(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Returned", json!({})).await;
    kami.import_codes(pid, &make_codes("RET", 1)).await;
    let o = kami.buy(pid, 1, "back@example.com").await;
    let no = o["order_no"].as_str().unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // A browser that holds the order (it opened the pay page) goes on to
    // the order page.
    let token = o["access_token"].as_str().unwrap();
    let res = http
        .get(kami.url(&format!("/pay/sandbox/return?order_no={no}")))
        .header("cookie", format!("kt_{no}={token}"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_redirection(), "{}", res.status());
    assert_eq!(
        res.headers()["location"].to_str().unwrap(),
        format!("/orders/{no}")
    );
    // Any other client is shown the order's number, not a 404, and
    // nothing of its state.
    for path in [
        format!("/pay/sandbox/return?order_no={no}"),
        format!("/pay/epay/return?out_trade_no={no}"),
    ] {
        let res = http.get(kami.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let page = res.text().await.unwrap();
        assert!(page.contains(no), "{page}");
        assert!(page.contains("href=\"/lookup\""), "{page}");
        assert!(!page.contains("back@example.com"), "{page}");
    }
    // What carries an order's codes or token is never cached.
    for req in [
        http.get(kami.url(&format!("/api/v1/orders/{no}")))
            .bearer_auth(token),
        http.get(kami.url(&format!("/orders/{no}?token={token}"))),
        http.get(kami.url(&format!("/pay/sandbox/return?order_no={no}"))),
    ] {
        let res = req.send().await.unwrap();
        assert_eq!(res.headers()["cache-control"], "no-store", "{}", res.url());
    }
    // Never proof of payment.
    assert_eq!(kami.view(&o).await["status"], json!("pending"));
}

async fn machine_errors_are_json(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Errors", json!({})).await;
    let is_error = |s: StatusCode, v: &Value, status: StatusCode, code: &str| {
        assert_eq!(s, status, "{v}");
        assert_eq!(error_code(v), code, "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    };

    let (s, v) = kami
        .send(kami.http.delete(kami.url("/api/v1/products")))
        .await;
    is_error(s, &v, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let (s, v) = kami
        .send(
            kami.http
                .get(kami.url("/api/v1/admin/events?starting_after=abc"))
                .bearer_auth(&kami.api_key),
        )
        .await;
    is_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    // Query strings the extractor cannot read are API.md's 422 too.
    for path in [
        "/api/v1/products?limit=1&limit=2".to_string(),
        format!("/api/v1/products/{pid}/quote?quantity=abc"),
    ] {
        let (s, v) = kami.send(kami.http.get(kami.url(&path))).await;
        is_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
    // The scheme's name is case-insensitive.
    let (s, v) = kami
        .send(
            kami.http
                .get(kami.url(&format!("/api/v1/admin/products/{pid}/stock")))
                .header("authorization", format!("bearer {}", kami.api_key)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A channel name that is not UTF-8 names no channel either: the same
    // JSON 404, not the extractor's plain-text 400.
    for path in ["/pay/nochannel/notify", "/pay/%FF/notify"] {
        let (s, v) = kami.send(kami.http.post(kami.url(path)).body("x=1")).await;
        is_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    }
    // Probes and health checks are programs too: the router's own 405 on
    // them is the JSON error, with `Allow`.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let res = kami.http.post(kami.url(path)).send().await.unwrap();
        assert!(res.headers().contains_key("allow"), "{path}");
        let s = res.status();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        is_error(s, &v, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    let (s, v) = kami.send(kami.http.get(kami.url("/api/v2/nothing"))).await;
    is_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    // A page route answers a program asking for JSON in JSON, and a
    // browser with the error page.
    for (accept, json) in [
        ("application/json", true),
        ("text/html,application/xhtml+xml,*/*;q=0.8", false),
    ] {
        for (req, status, code) in [
            (
                kami.http.get(kami.url("/no/such/page")),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                kami.http.delete(kami.url("/lookup")),
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
        ] {
            let res = req.header("accept", accept).send().await.unwrap();
            let s = res.status();
            let ctype = res.headers()["content-type"].to_str().unwrap().to_string();
            if json {
                let v: Value = res.json().await.unwrap_or(Value::Null);
                is_error(s, &v, status, code);
            } else {
                assert_eq!(s, status);
                assert!(ctype.starts_with("text/html"), "{ctype}");
            }
        }
    }

    // Bodies over the limit. The server may answer before reading one and
    // close, so a failed send is a refusal too; an answer must be this one.
    let refused = |req: reqwest::RequestBuilder, status: StatusCode, code: &'static str| async move {
        if let Ok(res) = req.send().await {
            let s = res.status();
            let v: Value = res.json().await.unwrap_or(Value::Null);
            is_error(s, &v, status, code);
        }
    };
    // A notification over 1 MiB.
    let notify = kami
        .http
        .post(kami.url("/pay/sandbox/notify"))
        .body(vec![b'x'; 1_100_000]);
    refused(notify, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    // An import over 16 MiB: the key first, then the size.
    let huge = vec![b'x'; 17 * 1024 * 1024];
    let import = kami
        .http
        .post(kami.url(&format!("/api/v1/admin/products/{pid}/cards")));
    refused(
        import.try_clone().unwrap().body(huge.clone()),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    refused(
        import.bearer_auth(&kami.api_key).body(huge),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert_eq!(kami.stock3(pid).await, (0, 0, 0));
}

async fn notify_with(kami: &Kami, created: &Value, trade_no: &str) -> (StatusCode, String) {
    let body = Kami::paid_body(created, trade_no);
    let sig = kami.sign(now_secs(), &body);
    kami.notify(body, Some(sig)).await
}

async fn a_trade_number_pays_one_order(backend: Backend) {
    let kami = Arc::new(spawn_kami(backend).await);
    let pid = kami.product("Trade numbers", json!({})).await;
    kami.import_codes(pid, &make_codes("TRADE", 8)).await;
    let a = kami.buy(pid, 1, "a@example.com").await;
    let b = kami.buy(pid, 1, "b@example.com").await;
    let trade = format!("T-SAME-{}", random_token(8));
    let (s, _) = notify_with(&kami, &a, &trade).await;
    assert_eq!(s, StatusCode::OK);
    // The same trade number for another order is not its payment: refused,
    // recorded on that order, nothing paid.
    let (s, body) = notify_with(&kami, &b, &trade).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(kami.view(&b).await["status"], json!("pending"));
    let b_no = b["order_no"].as_str().unwrap();
    let rejected: Vec<Value> = kami
        .events(b_no)
        .await
        .into_iter()
        .filter(|e| e["kind"] == json!("notify_rejected"))
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0]["detail"]
            .as_str()
            .unwrap()
            .contains("trade number"),
        "{rejected:?}"
    );
    // The first order's own duplicate is still a success.
    let (s, _) = notify_with(&kami, &a, &trade).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(kami.codes(&a).await.len(), 1);

    // Raced: one trade number sent for several orders at once pays one.
    let orders: Vec<Value> = {
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(kami.buy(pid, 1, &format!("race{i}@example.com")).await);
        }
        v
    };
    let trade = format!("T-RACE-{}", random_token(8));
    let mut tasks = Vec::new();
    for o in &orders {
        let (kami, o, trade) = (kami.clone(), o.clone(), trade.clone());
        tasks.push(tokio::spawn(async move {
            notify_with(&kami, &o, &trade).await.0
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::BAD_REQUEST => {}
            s => panic!("raced notification answered {s}"),
        }
    }
    assert_eq!(ok, 1, "one of the raced notifications pays");
    let mut delivered = 0;
    for o in &orders {
        if kami.view(o).await["status"] == json!("delivered") {
            delivered += 1;
        }
    }
    assert_eq!(delivered, 1);
    assert_eq!(kami.stock3(pid).await, (1, 5, 2));

    // No trade number at all is malformed, not a payment.
    for empty in ["", "   "] {
        let (s, body) = notify_with(&kami, &b, empty).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{empty:?}: {body}");
        assert_eq!(kami.view(&b).await["status"], json!("pending"));
    }
}

/// A key left running by a request that never ended (its server died) is
/// refused as running until it is stale, then handed to one retry.
async fn a_stale_idempotency_key_is_taken_over_once(backend: Backend) {
    let kami = Arc::new(spawn_kami(backend).await);
    let key = format!("stale-{}", random_token(12));
    let body = json!({"name": "Late", "price": 300, "currency": "CNY"});
    let before = product_count(&kami).await;
    // As a dead server's request left it: taken, no answer, by another owner.
    let (s, first) = post_idem(&kami, "/api/v1/admin/products", &key, &body).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let run = |created_at: i64| leave_running(&kami, &key, created_at);
    run(now_millis()).await;
    let (s, v) = post_idem(&kami, "/api/v1/admin/products", &key, &body).await;
    assert_eq!(s, StatusCode::CONFLICT, "a running key: {v}");
    assert!(conflict(&v), "{v}");
    assert_eq!(product_count(&kami).await, before + 1);

    // Stale: of several retries at once, one runs it again.
    run(now_millis() - 11 * 60 * 1000).await;
    let created = race_creates(&kami, &key, &body, 6).await;
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(product_count(&kami).await, before + 2);
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Makes a key's row look as a request that never ended left it: taken by
/// an owner that is gone, no answer, taken at `created_at`.
async fn leave_running(kami: &Kami, key: &str, created_at: i64) {
    use sqlx::Connection;
    let sql = "UPDATE idempotency_keys SET status_code = 0, response = $1, \
               response_nonce = $2, created_at = $3 WHERE key = $4";
    let empty: &[u8] = b"";
    let owner: &[u8] = b"a-dead-owner";
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&kami.database_url)
        .await
        .unwrap();
    let n = sqlx::query(sql)
        .bind(empty)
        .bind(owner)
        .bind(created_at)
        .bind(key)
        .execute(&mut c)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1, "the key's row");
}

/// `[channels.sandbox] enabled = false` turns the sandbox off even with its
/// secret set, as any `[channels.X]` section would (API.md).
async fn a_sandbox_section_saying_disabled_turns_the_sandbox_off(backend: Backend) {
    let kami = spawn_kami_with(
        backend,
        Options {
            config_toml: Some("[channels.sandbox]\nenabled = false\n".into()),
            ..Options::default()
        },
    )
    .await;
    let (s, v) = kami.send(kami.http.get(kami.url("/api/v1/channels"))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v.to_string().contains("sandbox"), "{v}");
    let pid = kami.product("Off", json!({})).await;
    kami.import_codes(pid, &make_codes("OFF", 1)).await;
    let (s, v) = kami
        .order(json!({"product_id": pid, "quantity": 1, "email": "off@example.com", "channel": "sandbox"}))
        .await;
    assert_invalid(s, &v);
}

/// A client that writes its whole upload before it reads (Python's
/// `urllib`, curl without `Expect`) still reads the answer to a body refused
/// unread: the 413 of a body over its limit, the 401 of an import without a
/// key. The server used to close with the upload unread, and such a client
/// saw a broken pipe instead (`drain.rs`). Then the connection carries the
/// next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_refused_unread_still_gets_its_answer() {
    let kami = spawn_kami(Backend::Sqlite).await;
    let pid = kami.product("Big uploads", json!({})).await;
    let addr = kami.base.trim_start_matches("http://").to_string();
    let import = format!("/api/v1/admin/products/{pid}/cards");
    let cases = [
        (
            import.clone(),
            Some(kami.api_key.clone()),
            (16 << 20) + 1,
            "text/plain",
            413,
        ),
        (import, None, 17 << 20, "text/plain", 401),
        (
            "/api/v1/orders".to_string(),
            None,
            8 << 20,
            "application/json",
            413,
        ),
    ];
    for (path, key, size, content_type, want) in cases {
        let addr = addr.clone();
        let shown = path.clone();
        let answers = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&addr).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            let mut head = format!(
                "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {content_type}\r\ncontent-length: {size}\r\n"
            );
            if let Some(key) = key {
                head.push_str(&format!("authorization: Bearer {key}\r\n"));
            }
            head.push_str("\r\n");
            s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
            let chunk = vec![b'a'; 64 * 1024];
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len());
                s.write_all(&chunk[..n])
                    .map_err(|e| format!("writing the body: {e}"))?;
                left -= n;
            }
            let read_answer = |s: &mut std::net::TcpStream| -> Result<String, String> {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).map_err(|e| format!("reading: {e}"))?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            };
            let first = read_answer(&mut s)?;
            s.write_all(format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
                .map_err(|e| format!("the next request: {e}"))?;
            Ok::<_, String>((first, read_answer(&mut s)?))
        })
        .await
        .unwrap();
        let (first, next) = answers.unwrap_or_else(|e| panic!("{shown}: {e}"));
        assert!(
            first.starts_with(&format!("HTTP/1.1 {want} ")),
            "{shown}: {first}"
        );
        assert!(first.contains("\"error\""), "{shown}: {first}");
        assert!(next.starts_with("HTTP/1.1 200 "), "{shown}, then: {next}");
    }
}

/// From an order's deadline on, the admin list's status filter and the
/// status it shows agree: the order is listed under `expired`, not under
/// `pending` while reading `expired` (as it was until the sweep, up to a
/// second later). Orders fall due every few milliseconds for two seconds,
/// so some fall due just before the periodic sweep starts, and listings run
/// beside it (on PostgreSQL a listing's own sweep skipped the rows the
/// periodic one held locked, and listed them still pending).
async fn the_status_filter_agrees_with_the_status_shown_at_the_deadline(backend: Backend) {
    let kami = std::sync::Arc::new(
        spawn_kami_with(
            backend,
            Options {
                order_ttl: Some(1),
                ..Options::default()
            },
        )
        .await,
    );
    let pid = kami.product("Deadline", json!({})).await;
    kami.import_codes(pid, &make_codes("DEADLINE", 400)).await;
    let placed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, i64)>::new()));
    let buyer = {
        let (kami, placed) = (kami.clone(), placed.clone());
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + std::time::Duration::from_millis(2000);
            while tokio::time::Instant::now() < until {
                let order = kami.buy(pid, 1, "deadline@example.com").await;
                let expires_at = time::OffsetDateTime::parse(
                    order["expires_at"].as_str().unwrap(),
                    &time::format_description::well_known::Rfc3339,
                )
                .unwrap();
                let no = order["order_no"].as_str().unwrap().to_string();
                let ms = (expires_at.unix_timestamp_nanos() / 1_000_000) as i64;
                placed.lock().unwrap().push((no, ms));
                tokio::time::sleep(std::time::Duration::from_millis(7)).await;
            }
        })
    };
    let listed = |status: &'static str| {
        let kami = &kami;
        async move {
            let (s, v) = kami
                .admin_get(&format!("/api/v1/admin/orders?status={status}&limit=500"))
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v["data"].as_array().unwrap().clone()
        }
    };
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(2200);
    let (mut rounds, mut checked) = (0, 0);
    while tokio::time::Instant::now() < until {
        let asked = now_millis();
        let due: Vec<String> = placed
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at <= asked)
            .map(|(no, _)| no.clone())
            .collect();
        let (pending, expired) = tokio::join!(listed("pending"), listed("expired"));
        for no in &due {
            assert!(
                !pending.iter().any(|o| o["order_no"] == json!(no)),
                "{no}, past its deadline, is not listed as pending (round {rounds})"
            );
            let shown = expired
                .iter()
                .find(|o| o["order_no"] == json!(no))
                .unwrap_or_else(|| panic!("{no} is listed as expired (round {rounds})"));
            assert_eq!(shown["status"], json!("expired"));
        }
        checked += due.len();
        rounds += 1;
    }
    buyer.await.unwrap();
    assert!(checked > rounds, "{checked} checks in {rounds} rounds");
}

/// With the database refusing connections, a request that needs it is `503
/// unavailable` with `Retry-After` (as `/readyz` says), not a 500; the shop
/// answers again once the database does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_refusing_connections_is_503_not_500() {
    let kami = spawn_kami(Backend::Postgres).await;
    let pid = kami.product("Unreachable", json!({})).await;
    kami.import_codes(pid, &make_codes("UNREACH", 2)).await;
    let order = kami.buy(pid, 1, "unreachable@example.com").await;
    let db = kami
        .database_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let psql = |sql: String| {
        let out = std::process::Command::new("psql")
            .arg(pg_admin_url())
            .args(["-q", "-c", &sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"));
    psql(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
    ));
    let res = kami
        .http
        .get(kami.url(&format!(
            "/api/v1/orders/{}",
            order["order_no"].as_str().unwrap()
        )))
        .bearer_auth(order["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let status = res.status();
    let retry_after = res.headers().get("retry-after").cloned();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    psql(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"));
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "{body}"
    );
    assert!(retry_after.is_some(), "Retry-After on the 503");
    // Back once the database takes connections again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (s, v) = kami
            .send(
                kami.http
                    .get(kami.url(&format!(
                        "/api/v1/orders/{}",
                        order["order_no"].as_str().unwrap()
                    )))
                    .bearer_auth(order["access_token"].as_str().unwrap()),
            )
            .await;
        if s == StatusCode::OK {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s} {v}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A value of the wrong type is `422 invalid_request` naming its field in
/// `param`, as a value out of range is (it used to be `param: null`).
async fn a_value_of_the_wrong_type_names_its_field(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Typed", json!({})).await;
    for (body, field) in [
        (
            json!({"product_id": pid, "quantity": "1", "email": "t@example.com", "channel": "sandbox"}),
            "quantity",
        ),
        (
            json!({"product_id": pid, "quantity": 1.5, "email": "t@example.com", "channel": "sandbox"}),
            "quantity",
        ),
        (
            json!({"product_id": pid, "quantity": 1, "email": 7, "channel": "sandbox"}),
            "email",
        ),
    ] {
        let (s, v) = kami.order(body).await;
        assert_invalid(s, &v);
        assert_eq!(v["error"]["param"], json!(field), "{v}");
    }
    let (s, v) = kami
        .admin_post(
            "/api/v1/admin/products",
            &json!({"name": "Typed", "price": "1", "currency": "CNY"}),
        )
        .await;
    assert_invalid(s, &v);
    assert_eq!(v["error"]["param"], json!("price"), "{v}");
    // Not JSON at all names nothing.
    let (s, v) = kami
        .send(
            kami.http
                .post(kami.url("/api/v1/orders"))
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_invalid(s, &v);
    assert_eq!(v["error"]["param"], Value::Null, "{v}");
    // JSON under a type a browser may post to any site unasked is refused
    // from a browser: a web page would otherwise make its visitors place
    // orders. A program (no `Origin`, no `Sec-Fetch-Site`) is read as
    // before: curl's `-d` sends the form type.
    let body =
        json!({"product_id": pid, "quantity": 1, "email": "t@example.com", "channel": "sandbox"});
    // So is a body without a type: `fetch` of a Blob in `no-cors` mode and
    // `navigator.sendBeacon` send one to any site unasked (a security
    // audit placed orders so).
    for ctype in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
        Some("application/octet-stream"),
    ] {
        for (name, value) in [
            ("origin", "https://elsewhere.example"),
            ("sec-fetch-site", "cross-site"),
        ] {
            let mut req = kami
                .http
                .post(kami.url("/api/v1/orders"))
                .header(name, value)
                .body(body.to_string());
            if let Some(ctype) = ctype {
                req = req.header("content-type", ctype);
            }
            let (s, v) = kami.send(req).await;
            assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ctype:?}: {v}");
            assert_eq!(error_code(&v), "invalid_request", "{v}");
        }
    }
    // A browser saying JSON is read (cross-site it would have needed a
    // preflight first, which Kami does not answer).
    for ctype in [
        "application/json",
        "application/json; charset=utf-8",
        "application/merge-patch+json",
    ] {
        let (s, v) = kami
            .send(
                kami.http
                    .post(kami.url("/api/v1/orders"))
                    .header("content-type", ctype)
                    .header("sec-fetch-site", "same-origin")
                    .body(body.to_string()),
            )
            .await;
        assert_eq!(error_code(&v), "sold_out", "{ctype}: {s} {v}");
    }
    let (s, v) = kami
        .send(
            kami.http
                .post(kami.url("/api/v1/orders"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.to_string()),
        )
        .await;
    assert_eq!(error_code(&v), "sold_out", "{s} {v}");
    // A body that is JSON but not an object changes nothing: serde would
    // read `[]` as a PATCH of no field.
    for body in ["[]", "[\"x\"]", "null", "7"] {
        let (s, v) = kami
            .send(
                kami.http
                    .patch(kami.url(&format!("/api/v1/admin/products/{pid}")))
                    .bearer_auth(&kami.api_key)
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        assert_invalid(s, &v);
    }
}

/// Sends `count` GETs of `path` as the client at `client`, 50 at a time;
/// the statuses in the order sent, and whether every 429 had `Retry-After`.
async fn hammer(
    kami: &Kami,
    http: &reqwest::Client,
    client: &str,
    path: &str,
    count: usize,
) -> (Vec<StatusCode>, bool) {
    let mut statuses = Vec::with_capacity(count);
    let mut retry_after = true;
    for chunk in (0..count).collect::<Vec<_>>().chunks(50) {
        let sent = chunk.iter().map(|_| {
            http.get(kami.url(path))
                .header("x-forwarded-for", client)
                .send()
        });
        for res in futures::future::join_all(sent).await {
            let res = res.unwrap();
            if res.status() == StatusCode::TOO_MANY_REQUESTS {
                retry_after &= res.headers().contains_key("retry-after");
            }
            statuses.push(res.status());
        }
    }
    (statuses, retry_after)
}

/// Public routes that had no limit at all (an audit sent 450 of each, all
/// answered) draw on the general per-IP limit (400 at once, then 100/s):
/// past it, 429 with `Retry-After`. `/readyz` is never refused (monitoring
/// polls it); it shares one database answer a second instead.
/// `KAMI_RATE_LIMITS=off` lifts the limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unlimited_public_routes_draw_on_the_read_limit() {
    for limits in ["on", "off"] {
        let kami = spawn_kami_with(
            Backend::Sqlite,
            Options {
                env: vec![
                    ("KAMI_TRUSTED_PROXIES".into(), "127.0.0.1".into()),
                    ("KAMI_RATE_LIMITS".into(), limits.into()),
                ],
                ..Options::default()
            },
        )
        .await;
        let pid = kami.product("Limited", json!({})).await;
        kami.import_codes(pid, &make_codes("LIM", 1)).await;
        let order = kami.buy(pid, 1, "limited@example.com").await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let return_page = format!(
            "/pay/sandbox/return?order_no={}",
            order["order_no"].as_str().unwrap()
        );
        let epay_return = format!(
            "/pay/epay/return?out_trade_no={}",
            order["order_no"].as_str().unwrap()
        );
        let paths = [
            "/api/v1/channels",
            "/api/v1/openapi.json",
            "/admin/login",
            return_page.as_str(),
            epay_return.as_str(),
        ];
        for (i, path) in paths.iter().enumerate() {
            // A client of its own per route: each starts with a full bucket.
            let client = format!("198.51.100.{i}");
            let (statuses, retry_after) = hammer(&kami, &http, &client, path, 1000).await;
            let first_refused = statuses
                .iter()
                .position(|s| *s == StatusCode::TOO_MANY_REQUESTS);
            let served = first_refused.unwrap_or(statuses.len());
            assert!(
                statuses[..served].iter().all(|s| s.is_success()),
                "{limits} {path}: {:?}",
                statuses[..served].iter().collect::<HashSet<_>>()
            );
            if limits == "on" {
                assert!(
                    first_refused.is_some(),
                    "{path}: 1000 answered, none limited"
                );
                assert!(
                    served >= 400,
                    "{path}: limited after {served}, within the burst"
                );
                assert!(retry_after, "{path}: a 429 without Retry-After");
            } else {
                assert_eq!(served, 1000, "{path} was limited with limits off");
            }
        }
        let (statuses, _) = hammer(&kami, &http, "198.51.100.99", "/readyz", 700).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{limits} /readyz: {:?}",
            statuses.iter().collect::<HashSet<_>>()
        );
    }
}

/// A NUL character (U+0000) in a JSON string, a query or a path: no field
/// of Kami's holds one and PostgreSQL's text cannot, so it failed there as a
/// database error (500), and a forged notification claiming such an order
/// number went unrecorded. Now 422 naming the field, and the rejection is
/// recorded; a missing field is named too (serde gives it no path).
async fn a_nul_character_is_refused_not_a_server_error(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Nul", json!({})).await;
    kami.import_codes(pid, &["NUL-1".to_string()]).await;
    for (body, field) in [
        (
            json!({"product_id": pid, "quantity": 1, "email": "a\u{0}b@example.com", "channel": "sandbox"}),
            "email",
        ),
        (
            json!({"product_id": pid, "quantity": 1, "email": "n@example.com", "query_password": "x\u{0}", "channel": "sandbox"}),
            "query_password",
        ),
        (
            json!({"quantity": 1, "email": "n@example.com", "channel": "sandbox"}),
            "product_id",
        ),
    ] {
        let (s, v) = kami.order(body).await;
        assert_invalid(s, &v);
        assert_eq!(v["error"]["param"], json!(field), "{v}");
    }
    let (s, v) = kami
        .send(kami.http.post(kami.url("/api/v1/orders/lookup")).json(
            &json!({"email": "n@example.com", "query_password": "x", "starting_after": "K\u{0}"}),
        ))
        .await;
    assert_invalid(s, &v);
    assert_eq!(v["error"]["param"], json!("starting_after"), "{v}");
    let (s, v) = kami
        .admin_post(
            "/api/v1/admin/products",
            &json!({"name": "a\u{0}b", "price": 100, "currency": "CNY"}),
        )
        .await;
    assert_invalid(s, &v);
    assert_eq!(v["error"]["param"], json!("name"), "{v}");
    for path in [
        "/api/v1/admin/orders?email=a%00b",
        "/api/v1/admin/orders?starting_after=K%00",
        "/api/v1/admin/orders/K%00",
        "/api/v1/admin/events?order_no=K%00",
    ] {
        let (s, v) = kami.admin_get(path).await;
        assert_invalid(s, &v);
    }
    // A forged notification claiming such a number: refused and recorded.
    let forged = json!({"order_no": "K\u{0}X", "trade_no": "T1", "amount": 100,
        "currency": "CNY", "status": "paid"})
    .to_string()
    .into_bytes();
    let (s, _) = kami.notify(forged, Some("t=1,v1=00".into())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(kami.count_events("K\u{FFFD}X", "notify_rejected").await, 1);
    // Nothing was taken.
    assert_eq!(kami.stock3(pid).await.0, 1, "{}", kami.stock(pid).await);
    assert!(
        !kami.logs().contains("internal_error"),
        "{}",
        kami.logs_tail(20)
    );
}

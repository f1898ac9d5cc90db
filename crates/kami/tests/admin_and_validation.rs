//! The admin API (authentication, products) and validation of orders.

#[macro_use]
mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

both_backends!(
    admin_api_authenticates_first_and_validates_products,
    orders_are_validated_and_limited_per_buyer,
    the_product_list_pages_with_limit_and_starting_after,
    products_take_only_iso_4217_currencies,
    quantity_errors_name_the_field_the_client_sent,
    patch_refuses_null_for_fields_that_cannot_be_empty,
    card_import_takes_text_and_refuses_json_and_multipart,
);

/// API.md's list convention on `GET /api/v1/products`: `limit` and a
/// `starting_after` cursor walk the whole list once, in order.
async fn the_product_list_pages_with_limit_and_starting_after(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(kami.product(&format!("Paged {i}"), json!({})).await);
    }
    let get = |q: String| {
        let kami = &kami;
        async move {
            kami.send(kami.http.get(kami.url(&format!("/api/v1/products{q}"))))
                .await
        }
    };
    // The catalog is cached for a second: wait until every product is listed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, all) = get(String::new()).await;
        if all["data"].as_array().unwrap().len() == 5 {
            assert_eq!(all["has_more"], json!(false));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{all}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (mut seen, mut cursor) = (Vec::new(), None::<i64>);
    loop {
        let q = match cursor {
            None => "?limit=2".to_string(),
            Some(c) => format!("?limit=2&starting_after={c}"),
        };
        let (s, page) = get(q).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let ids = ids_of(&page);
        assert!(ids.len() <= 2);
        seen.extend(ids);
        cursor = seen.last().copied();
        if page["has_more"] == json!(false) {
            break;
        }
    }
    assert_eq!(seen, made, "every product once, in order");
    for bad in ["?limit=x", "?limit=1.5", "?starting_after=999999"] {
        let (s, v) = get(bad.to_string()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
    }
    // Out of range is clamped, as on the admin order list.
    for (q, len) in [
        ("?limit=0", 1),
        ("?limit=-3", 1),
        ("?limit=1000", made.len()),
    ] {
        let (s, v) = get(q.to_string()).await;
        assert_eq!(s, StatusCode::OK, "{q}: {v}");
        assert_eq!(v["data"].as_array().unwrap().len(), len, "{q}: {v}");
    }
    // A cursor at a product hidden since its page was read goes on from
    // where that product stood.
    for hidden in [made[0], made[2]] {
        let (s, v) = kami
            .admin_patch(
                &format!("/api/v1/admin/products/{hidden}"),
                &json!({"visible": false}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    for (cursor, rest) in [
        (made[0], vec![made[1], made[3]]),
        (made[2], vec![made[3], made[4]]),
    ] {
        let (s, v) = get(format!("?limit=2&starting_after={cursor}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(ids_of(&v), rest, "after hidden {cursor}: {v}");
    }
}

async fn admin_api_authenticates_first_and_validates_products(backend: Backend) {
    let kami = spawn_kami(backend).await;
    // API keys need a name (the CLI and the panel share the rule).
    for name in ["   ", &"k".repeat(101)] {
        let out = kami.cli(&["api-key", "create", "--name", name]);
        assert!(!out.status.success(), "a key named {name:?} was created");
        assert!(String::from_utf8_lossy(&out.stderr).contains("1-100 characters"));
    }
    let h = &kami.http;
    let products = kami.url("/api/v1/admin/products");
    let good = json!({"name": "Auth", "price": 100, "currency": "CNY"});

    // 401 before anything else, whatever the body.
    let attempts: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("no key", h.post(&products).json(&good)),
        (
            "wrong key",
            h.post(&products).bearer_auth("kami_wrong_key").json(&good),
        ),
        (
            "not bearer",
            h.post(&products)
                .header("authorization", format!("Basic {}", kami.api_key))
                .json(&good),
        ),
        (
            "no key, garbage body",
            h.post(&products)
                .header("content-type", "application/json")
                .body("{{{ not json"),
        ),
        (
            "wrong key, garbage body",
            h.post(&products)
                .bearer_auth("nope")
                .header("content-type", "application/json")
                .body(vec![0xff, 0x00, 0x13]),
        ),
        (
            "wrong key, no content type",
            h.post(&products).bearer_auth("nope").body("name=x"),
        ),
        ("list without key", h.get(&products)),
        (
            "stock without key",
            h.get(kami.url("/api/v1/admin/products/1/stock")),
        ),
        (
            "orders without key",
            h.get(kami.url("/api/v1/admin/orders")),
        ),
        (
            "events without key",
            h.get(kami.url("/api/v1/admin/events?order_no=K1234567890")),
        ),
        (
            "import without key",
            h.post(kami.url("/api/v1/admin/products/1/cards"))
                .header("content-type", "text/plain")
                .body("a\nb\n"),
        ),
        (
            "patch with wrong key",
            h.patch(kami.url("/api/v1/admin/products/1"))
                .bearer_auth("nope")
                .json(&json!({"price": 1})),
        ),
        (
            "key with extra char",
            h.post(&products)
                .bearer_auth(format!("{}x", kami.api_key))
                .json(&good),
        ),
    ];
    for (what, req) in attempts {
        let (s, v) = kami.send(req).await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{what}: {v}"
        );
    }
    let (s, v) = kami.admin_get("/api/v1/admin/products").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["data"],
        json!([]),
        "nothing was created by unauthenticated requests: {v}"
    );

    // Defaults.
    let (s, p) = kami.admin_post("/api/v1/admin/products", &good).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert!(p["id"].is_i64(), "{p}");
    assert_eq!(p["name"], json!("Auth"));
    assert_eq!(p["price"], json!(100));
    assert_eq!(p["currency"], json!("CNY"));
    assert_eq!(p["min_quantity"], json!(1), "{p}");
    assert_eq!(p["max_quantity"], json!(10), "{p}");
    assert_eq!(p["visible"], json!(true), "{p}");
    assert_eq!(p["per_buyer_limit"], Value::Null, "{p}");
    assert_eq!(p["category"], Value::Null, "{p}");
    assert_eq!(p["sale_starts_at"], Value::Null, "{p}");
    assert_eq!(p["stock"], json!(0), "{p}");
    let id = p["id"].as_i64().unwrap();

    // Invalid bodies.
    let invalid = [
        ("empty object", json!({})),
        ("no name", json!({"price": 100, "currency": "CNY"})),
        (
            "empty name",
            json!({"name": "  ", "price": 100, "currency": "CNY"}),
        ),
        ("no price", json!({"name": "x", "currency": "CNY"})),
        (
            "negative price",
            json!({"name": "x", "price": -5, "currency": "CNY"}),
        ),
        (
            "price as string",
            json!({"name": "x", "price": "100", "currency": "CNY"}),
        ),
        (
            "fractional price",
            json!({"name": "x", "price": 9.9, "currency": "CNY"}),
        ),
        ("no currency", json!({"name": "x", "price": 100})),
        (
            "bad currency",
            json!({"name": "x", "price": 100, "currency": "yuan!"}),
        ),
        (
            "min 0",
            json!({"name": "x", "price": 100, "currency": "CNY", "min_quantity": 0}),
        ),
        (
            "min > max",
            json!({"name": "x", "price": 100, "currency": "CNY", "min_quantity": 5, "max_quantity": 2}),
        ),
        (
            "limit 0",
            json!({"name": "x", "price": 100, "currency": "CNY", "per_buyer_limit": 0}),
        ),
        (
            "bad sale time",
            json!({"name": "x", "price": 100, "currency": "CNY", "sale_starts_at": "tomorrow"}),
        ),
        (
            "a sale ending before it starts",
            json!({"name": "x", "price": 100, "currency": "CNY",
                   "sale_starts_at": "2030-01-02T00:00:00Z", "sale_ends_at": "2030-01-01T00:00:00Z"}),
        ),
        ("array", json!([1, 2, 3])),
    ];
    for (what, body) in invalid {
        let (s, v) = kami.admin_post("/api/v1/admin/products", &body).await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            "{what}: {v}"
        );
    }
    let (s, v) = kami
        .send(
            h.post(&products)
                .bearer_auth(&kami.api_key)
                .header("content-type", "application/json")
                .body("{\"name\": "),
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        "malformed JSON: {v}"
    );
    let (s, v) = kami.admin_get("/api/v1/admin/products").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["data"].as_array().unwrap().len(),
        1,
        "invalid bodies created nothing: {v}"
    );

    // PATCH.
    let (s, v) = kami
        .admin_patch(
            &format!("/api/v1/admin/products/{id}"),
            &json!({"price": 250, "max_quantity": 3, "description": "now with more", "per_buyer_limit": 5}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["price"].clone(),
            v["max_quantity"].clone(),
            v["per_buyer_limit"].clone()
        ),
        (json!(250), json!(3), json!(5)),
        "{v}"
    );
    assert_eq!(v["name"], json!("Auth"), "untouched fields stay: {v}");
    assert_eq!(v["description"], json!("now with more"));
    let (s, v) = kami
        .send(h.get(kami.url(&format!("/api/v1/products/{id}"))))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["price"], json!(250), "public view follows the patch: {v}");
    // Orders follow the new price and quantity bounds.
    kami.import_codes(id, &make_codes("PATCH", 5)).await;
    let o = kami.buy(id, 2, "patched@example.com").await;
    assert_eq!(o["amount"], json!(500), "{o}");
    let (s, v) = kami
        .order(json!({"product_id": id, "quantity": 4, "email": "patched@example.com", "channel": "sandbox"}))
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        "above the patched max: {v}"
    );

    // Clearing the limit with null, hiding the product.
    let (s, v) = kami
        .admin_patch(
            &format!("/api/v1/admin/products/{id}"),
            &json!({"per_buyer_limit": null, "visible": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["per_buyer_limit"], Value::Null, "{v}");
    assert_eq!(v["visible"], json!(false));
    let (s, v) = kami.send(h.get(kami.url("/api/v1/products"))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["id"] != json!(id)),
        "hidden product listed: {v}"
    );

    let (s, v) = kami
        .admin_patch(
            &format!("/api/v1/admin/products/{id}"),
            &json!({"min_quantity": 7}),
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        "min above max: {v}"
    );
    let (s, v) = kami
        .admin_patch(
            &format!("/api/v1/admin/products/{id}"),
            &json!({"price": -1}),
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        "{v}"
    );
    let (s, v) = kami
        .admin_patch("/api/v1/admin/products/999999", &json!({"price": 1}))
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{v}"
    );
    let (s, v) = kami.admin_get("/api/v1/admin/products/999999/stock").await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{v}"
    );

    // Order listing carries no codes and filters by status.
    let (s, v) = kami.admin_get("/api/v1/admin/orders?status=pending").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{v}");
    assert_eq!(data[0]["order_no"], o["order_no"]);
    let (s, v) = kami
        .admin_get("/api/v1/admin/orders?status=delivered")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], json!([]), "{v}");
}

async fn orders_are_validated_and_limited_per_buyer(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Validated", json!({"max_quantity": 5})).await;
    kami.import_codes(pid, &make_codes("VAL", 20)).await;
    let stock = kami.stock3(pid).await;

    let base = json!({"product_id": pid, "quantity": 1, "email": "valid@example.com", "channel": "sandbox"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let invalid = [
        ("quantity 0", with("quantity", json!(0))),
        ("quantity -1", with("quantity", json!(-1))),
        ("quantity above max", with("quantity", json!(6))),
        (
            "quantity huge",
            with("quantity", json!(1_000_000_000_000i64)),
        ),
        ("quantity string", with("quantity", json!("two"))),
        ("email without @", with("email", json!("not-an-email"))),
        ("email empty", with("email", json!(""))),
        ("email with spaces", with("email", json!("a b@example.com"))),
        ("email missing domain", with("email", json!("buyer@"))),
        ("unknown channel", with("channel", json!("bitcoin"))),
        ("unconfigured channel", with("channel", json!("epay"))),
        ("no email", {
            let mut b = base.clone();
            b.as_object_mut().unwrap().remove("email");
            b
        }),
    ];
    for (what, body) in invalid {
        let (s, v) = kami.order(body).await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            "{what}: {v}"
        );
    }
    let (s, v) = kami
        .send(
            kami.http
                .post(kami.url("/api/v1/orders"))
                .header("content-type", "application/json")
                .body("{\"product_id\":"),
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        "malformed JSON: {v}"
    );
    assert_eq!(
        kami.stock3(pid).await,
        stock,
        "no invalid order reserved anything"
    );

    // An id no product has, however it is spelled, is not found; only an
    // id of the wrong type, or none, is a malformed request.
    for unknown in [
        json!(999_999),
        json!("abc"),
        json!(0),
        json!(-1),
        json!(""),
        json!(1.5),
    ] {
        let (s, v) = kami.order(with("product_id", unknown.clone())).await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{unknown}: {v}"
        );
    }
    for malformed in [json!(null), json!(true), json!([1]), json!({"id": 1})] {
        let (s, v) = kami.order(with("product_id", malformed.clone())).await;
        assert_eq!(
            (s, error_code(&v), v["error"]["param"].as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                Some("product_id")
            ),
            "{malformed}: {v}"
        );
    }
    let (s, v) = kami.order(with("product_id", json!(pid.to_string()))).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "the id as a string names the product: {v}"
    );
    let (s, v) = kami.order(with("product_id", json!(pid as f64))).await;
    assert_eq!(s, StatusCode::CREATED, "a whole float names it too: {v}");

    // Too large a body.
    let big = json!({"product_id": pid, "quantity": 1, "email": "valid@example.com", "channel": "sandbox",
                     "coupon": "c".repeat(1_100_000)});
    let res = kami
        .http
        .post(kami.url("/api/v1/orders"))
        .json(&big)
        .send()
        .await;
    let res = res.expect("the 413 reaches the client");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A timed drop that has not started.
    let later = kami
        .product(
            "Timed drop",
            json!({"sale_starts_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    kami.import_codes(later, &make_codes("DROP", 3)).await;
    let (s, v) = kami
        .order(json!({"product_id": later, "quantity": 1, "email": "early@example.com", "channel": "sandbox"}))
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::CONFLICT, "sale_not_started"),
        "{v}"
    );
    assert_eq!(kami.stock3(later).await, (3, 0, 0));
    // Opened by moving the start into the past.
    let (s, v) = kami
        .admin_patch(
            &format!("/api/v1/admin/products/{later}"),
            &json!({"sale_starts_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    kami.buy(later, 1, "early@example.com").await;

    // insufficient_stock vs sold_out.
    let few = kami.product("Few", json!({})).await;
    kami.import_codes(few, &make_codes("FEW", 2)).await;
    let (s, v) = kami
        .order(json!({"product_id": few, "quantity": 3, "email": "many@example.com", "channel": "sandbox"}))
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::CONFLICT, "insufficient_stock"),
        "{v}"
    );
    assert_eq!(
        kami.stock3(few).await,
        (2, 0, 0),
        "a refused order reserves nothing"
    );

    // Per-buyer limit 2: the same buyer races ten orders of one.
    let limited = kami.product("Limited", json!({"per_buyer_limit": 2})).await;
    kami.import_codes(limited, &make_codes("LIM", 20)).await;
    let kami = std::sync::Arc::new(kami);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let k = kami.clone();
        tasks.push(tokio::spawn(async move {
            k.order(json!({"product_id": limited, "quantity": 1, "email": "scalper@example.com", "channel": "sandbox"}))
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (s, v) = t.await.unwrap();
        match s {
            StatusCode::CREATED => ok += 1,
            _ => assert_eq!(
                (s, error_code(&v)),
                (StatusCode::CONFLICT, "limit_exceeded"),
                "{v}"
            ),
        }
    }
    assert_eq!(ok, 2, "exactly the per-buyer limit succeeds");
    assert_eq!(kami.stock3(limited).await, (18, 2, 0));
    // The same address written differently is the same buyer.
    let (s, v) = kami
        .order(json!({"product_id": limited, "quantity": 1, "email": "Scalper@Example.COM", "channel": "sandbox"}))
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::CONFLICT, "limit_exceeded"),
        "{v}"
    );
    // So is the same mailbox under a plus-tag, a scalper's cheapest way
    // to be many buyers; the order still keeps the address as typed.
    for tagged in ["scalper+drop2@example.com", "Scalper+x+y@example.com"] {
        let (s, v) = kami
            .order(json!({"product_id": limited, "quantity": 1, "email": tagged, "channel": "sandbox"}))
            .await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::CONFLICT, "limit_exceeded"),
            "{tagged}: {v}"
        );
    }
    // At Gmail the dots do not count either, and googlemail.com is gmail.com.
    kami.buy(limited, 2, "s.c.alper+1@gmail.com").await;
    let (s, v) = kami
        .order(json!({"product_id": limited, "quantity": 1, "email": "scalper@googlemail.com", "channel": "sandbox"}))
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::CONFLICT, "limit_exceeded"),
        "{v}"
    );
    assert_eq!(kami.stock3(limited).await, (16, 4, 0));
    // One order of 3 is over the limit at once.
    let (s, v) = kami
        .order(json!({"product_id": limited, "quantity": 3, "email": "other@example.com", "channel": "sandbox"}))
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::CONFLICT, "limit_exceeded"),
        "{v}"
    );
    // Another buyer is unaffected.
    kami.buy(limited, 2, "other@example.com").await;
    assert_eq!(kami.stock3(limited).await, (14, 6, 0));
}

/// 422 `invalid_request` naming `param`.
#[track_caller]
fn assert_refused(s: StatusCode, v: &Value, param: &str, what: &str) {
    assert_eq!(
        (s, error_code(v), v["error"]["param"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some(param)
        ),
        "{what}: {v}"
    );
}

/// API.md: "an ISO currency". Three letters are not enough (`XYZ`, `BTC`),
/// nor are ISO's codes for what is no money (`XXX`); lower case is read as
/// the code it spells.
async fn products_take_only_iso_4217_currencies(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let id = kami.product("Priced", json!({})).await;
    let path = format!("/api/v1/admin/products/{id}");
    for code in ["XYZ", "ZZZ", "BTC", "XXX", "xyz"] {
        let body = json!({"name": "x", "price": 1, "currency": code});
        let (s, v) = kami.admin_post("/api/v1/admin/products", &body).await;
        assert_refused(s, &v, "currency", code);
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&code.to_ascii_uppercase()),
            "the message names the code: {v}"
        );
        let (s, v) = kami.admin_patch(&path, &json!({"currency": code})).await;
        assert_refused(s, &v, "currency", code);
    }
    let (s, v) = kami.admin_get("/api/v1/admin/products").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let products = v["data"].as_array().unwrap();
    assert_eq!(products.len(), 1, "nothing was created: {v}");
    assert_eq!(
        products[0]["currency"],
        json!("CNY"),
        "nothing changed: {v}"
    );

    let usd = kami
        .create_product(json!({"name": "Dollars", "price": 100, "currency": "usd"}))
        .await;
    let (_, v) = kami.admin_get("/api/v1/admin/products").await;
    let created = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == json!(usd))
        .cloned();
    assert_eq!(created.unwrap_or_default()["currency"], json!("USD"), "{v}");
    let (s, v) = kami.admin_patch(&path, &json!({"currency": "jpy"})).await;
    assert_eq!((s, &v["currency"]), (StatusCode::OK, &json!("JPY")), "{v}");
}

/// A quantity error names the field the client got wrong: the one it sent,
/// or the minimum when it sent both and they contradict each other.
async fn quantity_errors_name_the_field_the_client_sent(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let with = |extra: Value| {
        let mut body = json!({"name": "Q", "price": 100, "currency": "CNY"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (extra, param) in [
        (json!({"min_quantity": 0}), "min_quantity"),
        // Above the default maximum of 10.
        (json!({"min_quantity": 20}), "min_quantity"),
        // Below the default minimum of 1.
        (json!({"max_quantity": 0}), "max_quantity"),
        (json!({"max_quantity": 20_000}), "max_quantity"),
        (
            json!({"min_quantity": 5, "max_quantity": 2}),
            "min_quantity",
        ),
    ] {
        let (s, v) = kami
            .admin_post("/api/v1/admin/products", &with(extra.clone()))
            .await;
        assert_refused(s, &v, param, &extra.to_string());
    }
    let id = kami.product("Bounded", json!({"min_quantity": 3})).await;
    let path = format!("/api/v1/admin/products/{id}");
    for (patch, param) in [
        (json!({"min_quantity": 11}), "min_quantity"),
        (json!({"min_quantity": 0}), "min_quantity"),
        (json!({"max_quantity": 2}), "max_quantity"),
        (json!({"max_quantity": 10_001}), "max_quantity"),
        (
            json!({"min_quantity": 8, "max_quantity": 4}),
            "min_quantity",
        ),
    ] {
        let (s, v) = kami.admin_patch(&path, &patch).await;
        assert_refused(s, &v, param, &patch.to_string());
    }
}

/// `null` clears what a product may lack (category, limits, sale window,
/// low-stock threshold, stock display) and is refused, naming the field,
/// for the rest: a PATCH that meant to change something must not answer
/// 200 having changed nothing.
async fn patch_refuses_null_for_fields_that_cannot_be_empty(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let id = kami
        .product(
            "Full",
            json!({"description": "all set", "category": "Games", "per_buyer_limit": 3,
                   "per_ip_limit": 4, "low_stock_threshold": 5, "stock_display": "level",
                   "sale_starts_at": "2020-01-01T00:00:00Z",
                   "sale_ends_at": "2999-01-01T00:00:00Z",
                   "wholesale_tiers": [{"min_quantity": 5, "price": 900}]}),
        )
        .await;
    let path = format!("/api/v1/admin/products/{id}");
    let (s, before) = kami.admin_patch(&path, &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{before}");
    for field in [
        "name",
        "price",
        "currency",
        "description",
        "min_quantity",
        "max_quantity",
        "visible",
        "wholesale_tiers",
    ] {
        let mut body = json!({"price": 500});
        body[field] = Value::Null;
        let (s, v) = kami.admin_patch(&path, &body).await;
        assert_refused(s, &v, field, field);
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("{field} cannot be null")), "{v}");
    }
    let (_, after) = kami.admin_patch(&path, &json!({})).await;
    assert_eq!(after, before, "refused patches changed nothing");

    let (s, v) = kami
        .admin_patch(
            &path,
            &json!({"category": null, "per_buyer_limit": null, "per_ip_limit": null,
                    "low_stock_threshold": null, "stock_display": null,
                    "sale_starts_at": null, "sale_ends_at": null}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for field in [
        "category",
        "per_buyer_limit",
        "per_ip_limit",
        "stock_display",
        "sale_starts_at",
        "sale_ends_at",
    ] {
        assert_eq!(v[field], Value::Null, "{field} cleared: {v}");
    }
    assert_eq!(v["low_stock_threshold"], json!(0), "no threshold: {v}");
    for field in [
        "name",
        "price",
        "currency",
        "description",
        "wholesale_tiers",
    ] {
        assert_eq!(v[field], before[field], "absent {field} stays: {v}");
    }

    // A new product takes null as the default of a field that has one (a
    // client writing every field it knows); the required ones still need
    // a value.
    let (s, v) = kami
        .admin_post(
            "/api/v1/admin/products",
            &json!({"name": "Nulls", "price": 100, "currency": "CNY", "description": null,
                    "category": null, "min_quantity": null, "max_quantity": null,
                    "per_buyer_limit": null, "visible": null, "wholesale_tiers": null,
                    "low_stock_threshold": null}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (&v["min_quantity"], &v["max_quantity"], &v["visible"]),
        (&json!(1), &json!(10), &json!(true)),
        "{v}"
    );
    let (s, v) = kami
        .admin_post(
            "/api/v1/admin/products",
            &json!({"name": "No price", "price": null, "currency": "CNY"}),
        )
        .await;
    assert_refused(s, &v, "price", "price");
    // A patch is judged against what it leaves stored: an end before the
    // stored start is refused, a start moved past the stored end too.
    let timed = kami
        .product("Timed", json!({"sale_starts_at": "2030-01-02T00:00:00Z"}))
        .await;
    for patch in [
        json!({"sale_ends_at": "2030-01-01T00:00:00Z"}),
        json!({"sale_starts_at": "2030-01-03T00:00:00Z", "sale_ends_at": "2030-01-02T12:00:00Z"}),
    ] {
        let (s, v) = kami
            .admin_patch(&format!("/api/v1/admin/products/{timed}"), &patch)
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{patch}: {v}");
        assert_eq!(v["error"]["param"], json!("sale_ends_at"), "{v}");
    }
    let (s, v) = kami
        .admin_patch(
            &format!("/api/v1/admin/products/{timed}"),
            &json!({"sale_ends_at": "2030-01-03T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// API.md: the upload is text, one code per line. A JSON or multipart body
/// read that way would import its own syntax as codes, so it is refused
/// (415, after authentication); what curl and scripts send for a text file
/// is taken.
async fn card_import_takes_text_and_refuses_json_and_multipart(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let id = kami.product("Typed", json!({})).await;
    let url = kami.url(&format!("/api/v1/admin/products/{id}/cards"));
    let post = |content_type: Option<&str>, body: &str| {
        let req = kami
            .http
            .post(&url)
            .bearer_auth(&kami.api_key)
            .body(body.to_string());
        match content_type {
            Some(t) => req.header("content-type", t),
            None => req,
        }
    };

    let (s, v) = kami
        .send(
            kami.http
                .post(&url)
                .header("content-type", "application/json")
                .body(r#"{"codes":["J0"]}"#),
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "authentication first: {v}"
    );
    let refused = [
        ("application/json", r#"{"codes":["J1"]}"#),
        ("Application/JSON; charset=utf-8", r#"{"codes":["J2"]}"#),
        (
            "multipart/form-data; boundary=XB",
            "--XB\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nM1\r\n--XB--\r\n",
        ),
        (
            "multipart/mixed; boundary=XB",
            "--XB\r\n\r\nM2\r\n--XB--\r\n",
        ),
    ];
    for (content_type, body) in refused {
        for idempotent in [false, true] {
            let mut req = post(Some(content_type), body);
            if idempotent {
                req = req.header("idempotency-key", format!("typed-{content_type}"));
            }
            let (s, v) = kami.send(req).await;
            assert_eq!(
                (s, error_code(&v)),
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request"),
                "{content_type}: {v}"
            );
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("text/plain") && message.contains("one code per line"),
                "{v}"
            );
        }
    }
    assert_eq!(
        kami.stock(id).await["available"],
        json!(0),
        "nothing imported"
    );

    let taken = [
        (Some("text/plain"), "T1"),
        (Some("text/plain; charset=gbk"), "T2"),
        (Some("text/csv"), "C1"),
        (Some("application/octet-stream"), "O1"),
        // What `curl --data-binary @codes.txt` sends unless told otherwise.
        (Some("application/x-www-form-urlencoded"), "F1"),
        (None, "N1"),
    ];
    for (content_type, code) in taken {
        let (s, v) = kami.send(post(content_type, &format!("{code}\n"))).await;
        assert_eq!(s, StatusCode::OK, "{content_type:?}: {v}");
        assert_eq!(v["imported"], json!(1), "{content_type:?}: {v}");
    }
    assert_eq!(kami.stock(id).await["available"], json!(taken.len()));
}

/// The published document lists the errors these admin endpoints answer
/// with, and the cap on an import report's rejected lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_openapi_document_lists_the_admin_errors() {
    let kami = spawn_kami(Backend::Sqlite).await;
    let (s, doc) = kami
        .send(kami.http.get(kami.url("/api/v1/openapi.json")))
        .await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    let responses = |path: &str, method: &str| doc["paths"][path][method]["responses"].clone();
    let orders = responses("/api/v1/admin/orders", "get");
    assert!(
        orders["422"].is_object(),
        "bad status, limit or cursor: {orders}"
    );
    let import = responses("/api/v1/admin/products/{id}/cards", "post");
    for status in ["415", "422"] {
        assert!(
            import[status].is_object(),
            "import answers {status}: {import}"
        );
    }
    let report = &doc["components"]["schemas"]["ImportReport"];
    assert_eq!(
        report["properties"]["rejected"]["maxItems"],
        json!(1000),
        "{report}"
    );
    assert!(
        report["properties"]["rejected_total"].is_object(),
        "{report}"
    );
}

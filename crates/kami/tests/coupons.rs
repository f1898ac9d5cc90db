//! Coupons, wholesale tiers and per-IP limits through the public API, the
//! admin API and the storefront's forms, on both backends: a capped coupon
//! raced by 100 buyers is used 10 times, the discounted amount is what the
//! gateway must pay, and every refusal is a clear error that changes nothing.

#[macro_use]
mod common;

use common::forms::*;
use common::panel::{create_admin, Panel};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

both_backends!(
    a_coupon_capped_at_ten_is_used_ten_times_by_a_hundred_racing_buyers,
    coupons_price_orders_and_are_refused_clearly,
    wholesale_tiers_and_per_ip_limits_apply_to_orders,
    the_storefront_shows_the_discount_before_paying_and_buys_with_it,
    staff_manage_coupons_and_tiers_in_the_panel,
);

async fn coupon(kami: &Kami, body: Value) -> Value {
    let (s, v) = kami.admin_post("/api/v1/admin/coupons", &body).await;
    assert_eq!(s, StatusCode::CREATED, "create coupon {body}: {v}");
    v
}

fn order_body(pid: i64, email: &str, coupon: &str) -> Value {
    json!({"product_id": pid, "quantity": 1, "email": email, "channel": "sandbox", "coupon": coupon})
}

async fn a_coupon_capped_at_ten_is_used_ten_times_by_a_hundred_racing_buyers(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Racy", json!({"price": 1000})).await;
    kami.import_codes(pid, &make_codes("CPN", 150)).await;
    coupon(
        &kami,
        json!({"code": "first10", "kind": "percent", "value": 20, "max_uses": 10}),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (http, url) = (kami.http.clone(), kami.url("/api/v1/orders"));
        tasks.push(tokio::spawn(async move {
            let res = http
                .post(url)
                .json(&order_body(pid, &format!("r{i}@example.com"), "FIRST10"))
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }));
    }
    let (mut created, mut used_up) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            (StatusCode::CREATED, v) => {
                assert_eq!(v["amount"], json!(800), "20% off 1000: {v}");
                created.push(v);
            }
            (StatusCode::UNPROCESSABLE_ENTITY, v) => {
                assert_eq!(v["error"]["param"], json!("coupon"), "{v}");
                assert_eq!(
                    v["error"]["message"],
                    json!("this coupon has been used up"),
                    "{v}"
                );
                used_up += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((created.len(), used_up), (10, 90));
    assert_eq!(
        kami.stock3(pid).await,
        (140, 10, 0),
        "refusals reserved nothing"
    );
    let (_, list) = kami.admin_get("/api/v1/admin/coupons").await;
    assert_eq!(list["data"][0]["used"], json!(10), "{list}");

    // The gateway must pay the discounted amount: the full price is refused.
    let first = &created[0];
    let mut full = first.clone();
    full["amount"] = json!(1000);
    let (s, _) = kami.pay(&full).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "an amount other than the order's"
    );
    let (s, _) = kami.pay(first).await;
    assert_eq!(s, StatusCode::OK);
    let v = kami.view(first).await;
    assert_eq!(v["status"], json!("delivered"));
    assert_eq!(v["discount"], json!(200));
}

async fn coupons_price_orders_and_are_refused_clearly(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Priced", json!({"price": 990})).await;
    let other = kami.product("Other", json!({"price": 500})).await;
    let usd = kami
        .product("Dollar", json!({"price": 500, "currency": "USD"}))
        .await;
    for p in [pid, other, usd] {
        kami.import_codes(p, &make_codes(&format!("P{p}X"), 5))
            .await;
    }
    coupon(
        &kami,
        json!({"code": "FIVE", "kind": "fixed", "value": 500, "currency": "CNY"}),
    )
    .await;
    coupon(
        &kami,
        json!({"code": "ONLY-PRICED", "kind": "percent", "value": 50, "product_id": pid}),
    )
    .await;
    coupon(
        &kami,
        json!({"code": "OLD", "kind": "percent", "value": 50, "expires_at": "2020-01-01T00:00:00Z"}),
    )
    .await;
    let huge = coupon(
        &kami,
        json!({"code": "HUGE", "kind": "fixed", "value": 100000, "currency": "CNY"}),
    )
    .await;
    assert_eq!(huge["currency"], json!("CNY"));

    // The quote shows what the order will cost, any case of the code.
    let (s, q) = kami
        .send(kami.http.get(kami.url(&format!(
            "/api/v1/products/{pid}/quote?quantity=2&coupon=five"
        ))))
        .await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert_eq!(
        (&q["subtotal"], &q["discount"], &q["amount"], &q["coupon"]),
        (&json!(1980), &json!(500), &json!(1480), &json!("FIVE"))
    );
    let (s, v) = kami
        .order(
            json!({"product_id": pid, "quantity": 2, "email": "q@example.com",
                      "channel": "sandbox", "coupon": " five "}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["amount"], json!(1480));
    let admin = kami.admin_order(v["order_no"].as_str().unwrap()).await;
    assert_eq!(
        (&admin["discount"], &admin["unit_price"]),
        (&json!(500), &json!(990))
    );

    // A coupon worth more than the order leaves the smallest payable amount.
    let (s, v) = kami.order(order_body(other, "h@example.com", "HUGE")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["amount"], json!(1));

    let before = kami.stock3(pid).await;
    for (p, code, message) in [
        (
            other,
            "ONLY-PRICED",
            "this coupon does not apply to this product",
        ),
        (pid, "OLD", "this coupon has expired"),
        (usd, "FIVE", "this coupon is for another currency"),
        (pid, "NOPE", "unknown coupon"),
        (pid, "<script>alert(1)</script>", "unknown coupon"),
    ] {
        let (s, v) = kami.order(order_body(p, "x@example.com", code)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{code}: {v}");
        assert_eq!(v["error"]["code"], json!("invalid_request"));
        assert_eq!(v["error"]["param"], json!("coupon"));
        assert_eq!(v["error"]["message"], json!(message), "{code}");
    }
    assert_eq!(
        kami.stock3(pid).await,
        before,
        "refused orders reserved nothing"
    );

    // Disabled coupons are unknown; enabling brings them back.
    let (_, list) = kami.admin_get("/api/v1/admin/coupons").await;
    let five = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == json!("FIVE"))
        .unwrap()["id"]
        .clone();
    let (s, c) = kami
        .admin_patch(
            &format!("/api/v1/admin/coupons/{five}"),
            &json!({"disabled": true}),
        )
        .await;
    assert_eq!((s, &c["disabled"]), (StatusCode::OK, &json!(true)));
    let (s, _) = kami.order(order_body(pid, "d@example.com", "FIVE")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    kami.admin_patch(
        &format!("/api/v1/admin/coupons/{five}"),
        &json!({"disabled": false}),
    )
    .await;
    let (s, _) = kami.order(order_body(pid, "d@example.com", "FIVE")).await;
    assert_eq!(s, StatusCode::CREATED);

    // Bad coupon definitions are refused with the field named.
    for (body, param) in [
        (
            json!({"code": "A B", "kind": "percent", "value": 5}),
            "code",
        ),
        (
            json!({"code": "P0", "kind": "percent", "value": 0}),
            "value",
        ),
        (
            json!({"code": "P101", "kind": "percent", "value": 101}),
            "value",
        ),
        (
            json!({"code": "F", "kind": "fixed", "value": 5}),
            "currency",
        ),
        (json!({"code": "K", "kind": "gift", "value": 5}), "kind"),
        (
            json!({"code": "FIVE", "kind": "percent", "value": 5}),
            "code",
        ),
        (
            json!({"code": "M", "kind": "percent", "value": 5, "max_uses": 0}),
            "max_uses",
        ),
        (
            json!({"code": "PP", "kind": "percent", "value": 5, "product_id": 999999}),
            "product_id",
        ),
        (
            json!({"code": "CUR", "kind": "fixed", "value": 5, "currency": "USD", "product_id": pid}),
            "currency",
        ),
    ] {
        let (s, v) = kami.admin_post("/api/v1/admin/coupons", &body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["error"]["param"], json!(param), "{body}: {v}");
    }
    let (s, _) = kami
        .send(
            kami.http
                .post(kami.url("/api/v1/admin/coupons"))
                .json(&json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "coupons need an admin key");

    // Guessing codes runs into the lookup limit, not the order limit.
    let limited_kami = spawn_kami_with(
        backend,
        Options {
            env: vec![("KAMI_RATE_LIMITS".into(), "on".into())],
            ..Options::default()
        },
    )
    .await;
    let pid = limited_kami.product("Guessed", json!({})).await;
    limited_kami.import_codes(pid, &make_codes("G", 1)).await;
    let mut limited = false;
    for i in 0..60 {
        let (s, v) = limited_kami
            .order(order_body(pid, "g@example.com", &format!("GUESS{i}")))
            .await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(v["error"]["code"], json!("rate_limited"));
            limited = true;
            break;
        }
    }
    assert!(
        limited,
        "30 unknown coupons from one address were not limited"
    );
    // The storefront's price box guesses codes too: past the limit it
    // answers 429 with Retry-After (still showing the price without the
    // coupon), not a 200 a script would read as "not valid".
    let mut throttled = None;
    for i in 0..60 {
        let res = limited_kami
            .http
            .get(limited_kami.url(&format!("/products/{pid}/quote?quantity=1&coupon=PAGE{i}")))
            .send()
            .await
            .unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(res);
            break;
        }
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = throttled.expect("60 coupon guesses through the price box were not limited");
    assert!(
        res.headers().contains_key("retry-after"),
        "{:?}",
        res.headers()
    );
    let frag = res.text().await.unwrap();
    assert!(
        frag.contains("¥9.90"),
        "the price box is still shown: {frag}"
    );
}

async fn wholesale_tiers_and_per_ip_limits_apply_to_orders(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami
        .product(
            "Bulk",
            json!({"price": 1000, "max_quantity": 20,
                   "wholesale_tiers": [{"min_quantity": 5, "price": 900}, {"min_quantity": 10, "price": 800}],
                   "per_ip_limit": 12}),
        )
        .await;
    kami.import_codes(pid, &make_codes("BULK", 40)).await;
    let (_, p) = kami
        .send(kami.http.get(kami.url(&format!("/api/v1/products/{pid}"))))
        .await;
    assert_eq!(
        p["wholesale_tiers"][1],
        json!({"min_quantity": 10, "price": 800}),
        "{p}"
    );

    for (q, amount) in [(4, 4000), (5, 4500), (2, 2000)] {
        let (s, v) = kami
            .order(
                json!({"product_id": pid, "quantity": q, "email": format!("t{q}@example.com"),
                          "channel": "sandbox"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["amount"], json!(amount), "quantity {q}");
    }
    // 11 codes held from this address; one more is the limit, two are not.
    let (s, v) = kami
        .order(json!({"product_id": pid, "quantity": 2, "email": "new@example.com", "channel": "sandbox"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], json!("limit_exceeded"));
    let (s, _) = kami
        .order(json!({"product_id": pid, "quantity": 1, "email": "new@example.com", "channel": "sandbox"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(kami.stock3(pid).await, (28, 12, 0));

    // Tiers are validated against the price, on create and on update.
    for tiers in [
        json!([{"min_quantity": 1, "price": 900}]),
        json!([{"min_quantity": 5, "price": 1000}]),
        json!([{"min_quantity": 5, "price": 900}, {"min_quantity": 4, "price": 800}]),
        json!([{"min_quantity": 5, "price": 900}, {"min_quantity": 8, "price": 950}]),
    ] {
        let (s, v) = kami
            .admin_patch(
                &format!("/api/v1/admin/products/{pid}"),
                &json!({"wholesale_tiers": tiers}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{tiers}: {v}");
        assert_eq!(v["error"]["param"], json!("wholesale_tiers"));
    }
    let (s, v) = kami
        .admin_patch(
            &format!("/api/v1/admin/products/{pid}"),
            &json!({"price": 850}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a price below a tier: {v}"
    );
    let (s, v) = kami
        .admin_patch(
            &format!("/api/v1/admin/products/{pid}"),
            &json!({"per_ip_limit": 0}),
        )
        .await;
    assert_eq!(
        (s, &v["error"]["param"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("per_ip_limit"))
    );
}

async fn the_storefront_shows_the_discount_before_paying_and_buys_with_it(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let c = no_redirects();
    let mut jar = Jar::default();
    let pid = kami
        .product(
            "Shop card",
            json!({"price": 1000, "wholesale_tiers": [{"min_quantity": 3, "price": 900}]}),
        )
        .await;
    kami.import_codes(pid, &make_codes("SHOP", 5)).await;
    coupon(
        &kami,
        json!({"code": "TENOFF", "kind": "percent", "value": 10}),
    )
    .await;

    let (s, html, _) = get(&c, &mut jar, &kami.url(&format!("/products/{pid}?lang=en"))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("3 or more: ¥9.00 each"), "tiers shown");
    assert!(html.contains("¥10.00"), "the total for one");

    // A shared link with a coupon prices with it; the fragment follows input.
    let (_, html, _) = get(
        &c,
        &mut jar,
        &kami.url(&format!("/products/{pid}?coupon=tenoff&quantity=3")),
    )
    .await;
    assert!(
        html.contains("−¥2.70") && html.contains("¥24.30"),
        "discount and total shown"
    );
    let (s, frag, _) = get(
        &c,
        &mut jar,
        &kami.url(&format!(
            "/products/{pid}/quote?quantity=1&coupon=%3Cimg%20src=x%3E"
        )),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(frag.contains("This coupon code is not valid."), "{frag}");
    assert!(!frag.contains("<img"), "nothing typed is echoed unescaped");
    let (_, frag, _) = get(
        &c,
        &mut jar,
        &kami.url(&format!("/products/{pid}/quote?quantity=2&coupon=TENOFF")),
    )
    .await;
    assert!(frag.contains("¥18.00"), "{frag}");

    let (_, html, _) = get(&c, &mut jar, &kami.url(&format!("/products/{pid}"))).await;
    let csrf = csrf_of(&html);
    let (s, html, _) = post(
        &c,
        &mut jar,
        &kami.url(&format!("/products/{pid}/buy")),
        &[
            ("csrf", csrf.as_str()),
            ("quantity", "1"),
            ("email", "f@example.com"),
            ("channel", "sandbox"),
            ("coupon", "WRONG"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("This coupon code is not valid."),
        "friendly refusal in the page's language"
    );
    assert!(
        html.contains("value=\"WRONG\""),
        "the coupon stays in the form"
    );
    assert_eq!(kami.stock3(pid).await, (5, 0, 0));

    let (s, _, loc) = post(
        &c,
        &mut jar,
        &kami.url(&format!("/products/{pid}/buy")),
        &[
            ("csrf", csrf.as_str()),
            ("quantity", "3"),
            ("email", "f@example.com"),
            ("channel", "sandbox"),
            ("coupon", "tenoff"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let pay = loc.unwrap();
    let (_, html, _) = get(&c, &mut jar, &kami.url(&pay)).await;
    assert!(
        html.contains("¥24.30"),
        "the pay page asks for the discounted amount"
    );
    let no = pay.rsplit('/').next().unwrap();
    assert_eq!(kami.admin_order(no).await["amount"], json!(2430));
}

async fn staff_manage_coupons_and_tiers_in_the_panel(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami
        .product("Panel <i>card</i>", json!({"price": 1000}))
        .await;
    kami.import_codes(pid, &make_codes("PNL", 5)).await;
    let password = create_admin(&kami, "staff@example.com", "staff");
    let panel = Panel::new(&kami);
    panel.login("staff@example.com", &password).await;
    let page = panel.get("/admin/coupons").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("Panel &lt;i&gt;card") && !page.body.contains("<i>card"),
        "product names escaped"
    );
    let csrf = page.csrf();

    let form = |csrf: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("code", "panel5".to_string()),
            ("kind", "fixed".to_string()),
            ("value", "5.00".to_string()),
            ("currency", "CNY".to_string()),
            ("product_id", pid.to_string()),
            ("max_uses", "3".to_string()),
            ("expires_at", "".to_string()),
        ]
    };
    let without = form("not-the-token");
    let without: Vec<(&str, &str)> = without.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = panel.post("/admin/coupons", &without).await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "a forged form is refused"
    );
    let (_, list) = kami.admin_get("/api/v1/admin/coupons").await;
    assert_eq!(list["data"], json!([]), "and changed nothing");

    let good = form(&csrf);
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let created = panel.post("/admin/coupons", &good).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let again = panel.post("/admin/coupons", &good).await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(again.body.contains("已存在相同的优惠码"), "{}", again.body);

    let (_, list) = kami.admin_get("/api/v1/admin/coupons").await;
    let c = &list["data"][0];
    assert_eq!(
        (&c["code"], &c["value"], &c["max_uses"], &c["product_id"]),
        (&json!("PANEL5"), &json!(500), &json!(3), &json!(pid))
    );
    let (s, v) = kami.order(order_body(pid, "p@example.com", "panel5")).await;
    assert_eq!((s, &v["amount"]), (StatusCode::CREATED, &json!(500)), "{v}");
    let page = panel.get("/admin/coupons").await;
    assert!(page.body.contains("1 / 3"), "use count shown");

    let id = c["id"].as_i64().unwrap();
    let off = panel
        .post(&format!("/admin/coupons/{id}/disable"), &[("csrf", &csrf)])
        .await;
    assert_eq!(off.status, StatusCode::SEE_OTHER);
    let (s, _) = kami
        .order(order_body(pid, "p2@example.com", "PANEL5"))
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a disabled coupon is refused"
    );

    // Tiers and the per-IP limit through the product form.
    let saved = panel
        .post(
            &format!("/admin/products/{pid}"),
            &[
                ("csrf", &csrf),
                ("name", "Panel card"),
                ("price", "10.00"),
                ("currency", "CNY"),
                ("min_quantity", "1"),
                ("max_quantity", "10"),
                ("visible", "1"),
                ("per_ip_limit", "4"),
                ("wholesale_tiers", "3 = 9.00\n5 = 8.00\n"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let (_, p) = kami
        .send(kami.http.get(kami.url(&format!("/api/v1/products/{pid}"))))
        .await;
    assert_eq!(
        (&p["wholesale_tiers"], &p["per_ip_limit"]),
        (
            &json!([{"min_quantity": 3, "price": 900}, {"min_quantity": 5, "price": 800}]),
            &json!(4)
        )
    );
    let bad = panel
        .post(
            &format!("/admin/products/{pid}"),
            &[
                ("csrf", &csrf),
                ("name", "Panel card"),
                ("price", "10.00"),
                ("currency", "CNY"),
                ("min_quantity", "1"),
                ("max_quantity", "10"),
                ("wholesale_tiers", "3 = 12.00"),
            ],
        )
        .await;
    assert_eq!(
        bad.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a tier above the price"
    );

    // The owner sees the staff member's actions in the audit log.
    let owner_pw = create_admin(&kami, "owner@example.com", "owner");
    let owner = Panel::new(&kami);
    owner.login("owner@example.com", &owner_pw).await;
    let audit = owner.get("/admin/audit").await;
    for action in ["coupon_created", "coupon_disabled", "product_updated"] {
        assert!(audit.body.contains(action), "{action} audited");
    }
}

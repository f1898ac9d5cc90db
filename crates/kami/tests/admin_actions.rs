//! The admin panel's actions over plain HTTP, on the real binary and both
//! backends: products, imports, code reveal/export/void, API keys, refunds
//! and the dashboard's alerts, each leaving its audit entry.

#[macro_use]
mod common;

use common::panel::{attr_after, create_admin, text_after, Panel};
use common::{spawn_kami, Backend, Kami};
use reqwest::StatusCode;
use serde_json::json;

async fn signed_in_owner(kami: &Kami) -> Panel {
    let password = create_admin(kami, "owner@example.com", "owner");
    let panel = Panel::new(kami);
    panel.login("owner@example.com", &password).await;
    panel
}

/// The stock the panel's product list shows for a product.
async fn listed_stock(panel: &Panel, id: i64) -> String {
    let list = panel.get("/admin/products").await.body;
    let row = &list[list
        .find(&format!("id=\"product-{id}\""))
        .expect("the product is listed")..];
    text_after(row, "class=\"stock\">").expect("its stock")
}

both_backends!(
    every_action_is_audited,
    unfulfilled_orders_raise_an_alert_and_can_be_refunded,
    form_errors_and_the_timeline_speak_the_operators_language,
);

async fn every_action_is_audited(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let a = signed_in_owner(&kami).await;
    let csrf = a.csrf().await;
    let created = a
        .post(
            "/admin/products",
            &[
                ("csrf", &csrf),
                ("name", "Audited"),
                ("price", "12.5"),
                ("currency", "CNY"),
                ("category", "Cat"),
                ("min_quantity", "1"),
                ("max_quantity", "3"),
                ("visible", "1"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let id: i64 = created
        .location
        .unwrap()
        .trim_start_matches("/admin/products/")
        .split('?')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (_, v) = kami.admin_get(&format!("/api/v1/products/{id}")).await;
    assert_eq!(v["price"], json!(1250));
    assert_eq!(v["category"], json!("Cat"));

    let secret_codes = common::make_codes("AUDIT", 3);
    let file = secret_codes.join("\n");
    let report = a
        .post_multipart(
            &format!("/admin/products/{id}/codes/import"),
            &[
                ("csrf", None, csrf.as_bytes()),
                ("codes", None, b""),
                ("file", Some("codes.txt"), file.as_bytes()),
            ],
        )
        .await;
    // The report is shown by the GET the import redirects to, so that a
    // refresh does not post the codes again; its URL is signed for this
    // operator.
    assert_eq!(report.status, StatusCode::SEE_OTHER, "{}", report.body);
    let shown = report.location.expect("the codes page");
    assert!(
        shown.starts_with(&format!("/admin/products/{id}/codes?report=3.0.0&sig=")),
        "{shown}"
    );
    let report = a.get(&shown).await;
    assert!(
        report.body.contains("id=\"report-imported\">3<"),
        "{}",
        report.body
    );
    let forged = shown.replace("report=3.0.0", "report=300.0.0");
    let forged = a.get(&forged).await;
    assert_eq!(forged.status, StatusCode::OK);
    assert!(!forged.body.contains("report-imported"), "{}", forged.body);
    // Another operator's session is not shown it.
    let other = Panel::new(&kami);
    let other_password = create_admin(&kami, "second@example.com", "owner");
    other.login("second@example.com", &other_password).await;
    let elsewhere = other.get(&shown).await;
    assert_eq!(elsewhere.status, StatusCode::OK);
    assert!(!elsewhere.body.contains("report-imported"));
    let list = a.get(&format!("/admin/products/{id}/codes")).await.body;
    for c in &secret_codes {
        assert!(!list.contains(c.as_str()), "codes are masked by default");
    }
    let card = attr_after(&list, "id=\"card-").unwrap();
    let revealed = a
        .post(
            &format!("/admin/products/{id}/codes/{card}/reveal"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(revealed.status, StatusCode::OK);
    assert_eq!(
        secret_codes
            .iter()
            .filter(|c| revealed.body.contains(c.as_str()))
            .count(),
        1,
        "one code at a time"
    );
    let export = a
        .post(
            &format!("/admin/products/{id}/codes/export"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(export.status, StatusCode::OK);
    for c in &secret_codes {
        assert!(export.body.contains(c.as_str()));
    }
    let void = a
        .post(
            &format!("/admin/products/{id}/codes/{card}/void"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(void.status, StatusCode::SEE_OTHER);
    assert_eq!(kami.stock3(id).await, (2, 0, 0));
    // The panel's list and the storefront show the stock gate's count, which
    // the void reached at once.
    assert_eq!(listed_stock(&a, id).await, "2");
    let (_, v) = kami.admin_get(&format!("/api/v1/products/{id}")).await;
    assert_eq!(v["stock"], json!(2));
    let keys = a
        .post("/admin/keys", &[("csrf", &csrf), ("name", "panel key")])
        .await;
    let new_key = &text_after(&keys.body, "id=\"new-key\">").expect("the key is shown once");
    let (status, _) = kami
        .send(
            kami.http
                .get(kami.url("/api/v1/admin/products"))
                .bearer_auth(new_key),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the key made in the panel works");
    let key_id = attr_after(&a.get("/admin/keys").await.body, "action=\"/admin/keys/").unwrap();
    let key_id = key_id.trim_end_matches("/revoke");
    assert_eq!(
        a.post(&format!("/admin/keys/{key_id}/revoke"), &[("csrf", &csrf)])
            .await
            .status,
        StatusCode::SEE_OTHER
    );

    // A delivered order, then marked refunded.
    let order = kami.buy(id, 1, "buyer@example.com").await;
    assert_eq!(
        listed_stock(&a, id).await,
        "1",
        "a reserved code is not in stock"
    );
    kami.pay_ok(&order).await;
    let no = order["order_no"].as_str().unwrap();
    let detail = a.get(&format!("/admin/orders/{no}")).await.body;
    assert!(
        detail.contains("event-kind\">下单") && detail.contains("event-kind\">已发货"),
        "{detail}"
    );
    assert_eq!(
        a.post(
            &format!("/admin/orders/{no}/refund"),
            &[("csrf", &csrf), ("status", "delivered")]
        )
        .await
        .status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(kami.view(&order).await["status"], json!("refunded"));

    let audit = a.get("/admin/audit").await.body;
    for action in [
        "login",
        "product_created",
        "codes_imported",
        "code_revealed",
        "codes_exported",
        "code_voided",
        "api_key_created",
        "api_key_revoked",
        "order_refunded",
    ] {
        assert!(
            audit.contains(&format!(">{action}<")),
            "no {action} in the audit log:\n{audit}"
        );
    }
    let logs = kami.logs();
    for c in &secret_codes {
        assert!(
            !audit.contains(c.as_str()),
            "the audit log never holds a code"
        );
        assert!(!logs.contains(c.as_str()), "logs never hold a code");
    }
    assert!(!logs.contains(new_key));
}

/// A late payment after a sell-out: the dashboard raises the alert, the
/// sales totals count it, the order can be marked refunded, and fulfilling an
/// order that is not waiting is refused.
async fn unfulfilled_orders_raise_an_alert_and_can_be_refunded(backend: Backend) {
    let kami = common::spawn_kami_with(
        backend,
        common::Options {
            order_ttl: Some(1),
            ..Default::default()
        },
    )
    .await;
    let a = signed_in_owner(&kami).await;
    let id = kami
        .product(
            "Scarce",
            json!({"low_stock_threshold": 3, "per_buyer_limit": 1}),
        )
        .await;
    kami.import_codes(id, &common::make_codes("SCARCE", 1))
        .await;
    let slow = kami.buy(id, 1, "slow@example.com").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while kami.stock3(id).await.0 != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired order never released its code"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The stock gate follows the expiry a moment after the database: it
    // may answer sold_out until then (DESIGN.md, invariant 6), never later.
    let quick = loop {
        let (status, v) = kami
            .order(json!({"product_id": id, "quantity": 1,
                          "email": "quick@example.com", "channel": "sandbox"}))
            .await;
        if status == StatusCode::CREATED {
            break v;
        }
        assert_eq!(v["error"]["code"], json!("sold_out"), "{v}");
        assert!(
            std::time::Instant::now() < deadline,
            "the gate never saw the released code"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    kami.pay_ok(&quick).await;
    kami.pay_ok(&slow).await;
    assert_eq!(kami.view(&slow).await["status"], json!("paid_unfulfilled"));

    let dashboard = a.get("/admin").await.body;
    assert!(
        dashboard.contains("<strong>1</strong> 笔已支付订单等待补货发货"),
        "{dashboard}"
    );
    assert!(
        dashboard.contains("¥19.80"),
        "two paid orders of ¥9.90 today: {dashboard}"
    );
    assert!(dashboard.contains("Scarce</a>"), "low stock is listed");
    let waiting = a.get("/admin/orders?status=paid_unfulfilled").await.body;
    let no = slow["order_no"].as_str().unwrap();
    assert!(waiting.contains(no) && !waiting.contains(quick["order_no"].as_str().unwrap()));

    let csrf = a.csrf().await;
    let quick_no = quick["order_no"].as_str().unwrap();
    let refused = a
        .post(
            &format!("/admin/orders/{quick_no}/fulfil"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    // The error page says it in both languages, Chinese first.
    assert!(
        refused
            .body
            .contains("只有已支付、等待补货的订单才能发货。")
            && refused
                .body
                .contains("Only a paid order waiting for stock can be fulfilled."),
        "{}",
        refused.body
    );
    let detail = a.get(&format!("/admin/orders/{no}")).await.body;
    assert!(
        detail.contains("event-kind\">已支付，等待补货</strong> <span class=\"key-name\">paid_unfulfilled</span>"),
        "{detail}"
    );
    assert!(
        !detail.contains("/fulfil\""),
        "no fulfil button without stock"
    );
    // The refund form carries the state the operator saw: an order that
    // changed since (here one delivered, refunded as if still waiting) is
    // refused with what it is now, and left as it is.
    let stale = a
        .post(
            &format!("/admin/orders/{quick_no}/refund"),
            &[("csrf", &csrf), ("status", "paid_unfulfilled")],
        )
        .await;
    assert_eq!(stale.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(stale.body.contains("现为：已发货"), "{}", stale.body);
    assert_eq!(kami.view(&quick).await["status"], json!("delivered"));
    // A form from before the status was sent asks for a second look too.
    let unsent = a
        .post(
            &format!("/admin/orders/{quick_no}/refund"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(unsent.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(unsent.body.contains("现为：已发货"), "{}", unsent.body);
    assert_eq!(kami.view(&quick).await["status"], json!("delivered"));
    let refund = a
        .post(
            &format!("/admin/orders/{no}/refund"),
            &[("csrf", &csrf), ("status", "paid_unfulfilled")],
        )
        .await;
    assert_eq!(refund.status, StatusCode::SEE_OTHER);
    assert_eq!(kami.view(&slow).await["status"], json!("refunded"));
    assert_eq!(kami.count_events(no, "refunded").await, 1);
    // Refunded before delivery, the order no longer counts against the
    // buyer's one allowed purchase (its late payment had taken it back).
    kami.import_codes(id, &common::make_codes("AGAIN", 2)).await;
    let (s, v) = kami
        .order(json!({"product_id": id, "quantity": 1,
                      "email": "slow@example.com", "channel": "sandbox"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let again = a
        .post(
            &format!("/admin/orders/{no}/refund"),
            &[("csrf", &csrf), ("status", "paid_unfulfilled")],
        )
        .await;
    assert_eq!(
        again.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "refunded once only"
    );
    assert!(
        !a.get("/admin").await.body.contains("等待补货发货"),
        "the alert is gone"
    );
}

/// The product form with `tiers` typed into the wholesale tiers box.
async fn product_with_tiers(p: &Panel, tiers: &str) -> common::panel::Page {
    let csrf = p.csrf().await;
    p.post(
        "/admin/products",
        &[
            ("csrf", &csrf),
            ("name", "Tiered"),
            ("price", "10.00"),
            ("currency", "CNY"),
            ("min_quantity", "1"),
            ("max_quantity", "50"),
            ("wholesale_tiers", tiers),
        ],
    )
    .await
}

/// What the panel's own code says (form errors, the order timeline, the
/// audit log's actions) is in the operator's language, with the values the
/// operator typed kept as typed, and escaped.
async fn form_errors_and_the_timeline_speak_the_operators_language(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let zh = signed_in_owner(&kami).await;

    // A bad wholesale tier line: its number in the box and its text stay.
    let tiers = "5 = 9.00\n\n10 - 8.50\n";
    let refused = product_with_tiers(&zh, tiers).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused
            .body
            .contains("批发价第 3 行“10 - 8.50”格式不对，请写成 数量 = 单价"),
        "{}",
        refused.body
    );
    assert!(!refused.body.contains("write it as"), "{}", refused.body);
    // What was typed goes back into the form.
    assert!(
        refused.body.contains(">5 = 9.00\n\n10 - 8.50\n</textarea>"),
        "{}",
        refused.body
    );
    // The line is data: escaped, never markup.
    let markup = product_with_tiers(&zh, "<b>5</b> = 9.00").await;
    assert!(
        markup.body.contains("批发价第 1 行“&lt;b&gt;5&lt;"),
        "{}",
        markup.body
    );
    assert!(!markup.body.contains("<b>5</b>"), "{}", markup.body);
    // A tier the API's rules refuse, in Chinese too.
    let rising = product_with_tiers(&zh, "5 = 9.00\n10 = 9.50").await;
    assert!(
        rising.body.contains("批发价的单价须大于 0"),
        "{}",
        rising.body
    );

    // The form's other checks, and the API's behind them.
    let csrf = zh.csrf().await;
    for (field, value, said) in [
        ("min_quantity", "abc", "“每单最少”必须是整数。"),
        ("max_quantity", "0", "1 ≤ 每单最少 ≤ 每单最多 ≤ 10000"),
        ("currency", "XYZ", "XYZ 不是 ISO 4217 币种"),
        ("price", "-1", "价格不能为负数。"),
    ] {
        let mut form = vec![
            ("csrf", csrf.as_str()),
            ("name", "Checked"),
            ("price", "10.00"),
            ("currency", "CNY"),
            ("min_quantity", "1"),
            ("max_quantity", "10"),
        ];
        form.retain(|(f, _)| *f != field);
        form.push((field, value));
        let page = zh.post("/admin/products", &form).await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert!(page.body.contains(said), "{field}: {}", page.body);
    }

    // Coupons, settings and staff forms.
    let coupon = zh
        .post(
            "/admin/coupons",
            &[
                ("csrf", &csrf),
                ("code", "HALF"),
                ("kind", "percent"),
                ("value", "150"),
            ],
        )
        .await;
    assert_eq!(coupon.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        coupon.body.contains("按比例优惠须在 1 至 100 之间。"),
        "{}",
        coupon.body
    );
    let settings = zh
        .post(
            "/admin/settings",
            &[
                ("csrf", &csrf),
                ("shop_name", "Kami"),
                ("notice", ""),
                ("order_ttl", "0"),
                ("stock_display", "exact"),
            ],
        )
        .await;
    assert_eq!(settings.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        settings
            .body
            .contains("订单有效期须为 1 至 604800 之间的整数秒。"),
        "{}",
        settings.body
    );
    let staff = zh
        .post("/admin/staff", &[("csrf", &csrf), ("email", "no-at-sign")])
        .await;
    assert!(staff.body.contains("邮箱必须包含 @。"), "{}", staff.body);

    // The same in English: the browser's language, or `?lang=en`.
    let password = create_admin(&kami, "second@example.com", "owner");
    let en = Panel::new(&kami);
    en.set_accept_language("en-US,en;q=0.9");
    en.login("second@example.com", &password).await;
    let refused = product_with_tiers(&en, tiers).await;
    assert!(
        refused
            .body
            .contains("Wholesale tier line 3 (“10 - 8.50”): write it as quantity = price"),
        "{}",
        refused.body
    );
    assert!(!refused.body.contains("批发价第"), "{}", refused.body);
    assert_eq!(
        zh.get("/admin/products/new?lang=en").await.status,
        StatusCode::OK
    );
    let quantity = product_with_tiers(&zh, "five = 9.00").await;
    assert!(
        quantity.body.contains(
            "Wholesale tier line 1 (“five = 9.00”): the quantity must be a whole number."
        ),
        "{}",
        quantity.body
    );
    zh.get("/admin?lang=zh").await;

    // The order timeline: labels in the operator's language, the stored
    // kind beside them; the stored detail as it was written.
    let id = kami.product("Timeline", json!({})).await;
    kami.import_codes(id, &common::make_codes("TL", 1)).await;
    let order = kami.buy(id, 1, "buyer@example.com").await;
    kami.pay_ok(&order).await;
    let no = order["order_no"].as_str().unwrap();
    let page = zh.get(&format!("/admin/orders/{no}")).await.body;
    for (label, kind) in [
        ("下单", "created"),
        ("支付成功", "paid"),
        ("已发货", "delivered"),
    ] {
        assert!(
            page.contains(&format!(
                "event-kind\">{label}</strong> <span class=\"key-name\">{kind}</span>"
            )),
            "{kind}: {page}"
        );
    }
    let page = en.get(&format!("/admin/orders/{no}")).await.body;
    for label in ["Order placed", "Paid", "Delivered"] {
        assert!(
            page.contains(&format!("event-kind\">{label}</strong>")),
            "{label}: {page}"
        );
    }
    assert!(!page.contains("event-kind\">下单"));

    // The audit log: the action's label beside its stored name; the
    // detail (a product's name) exactly as stored.
    let audit = zh.get("/admin/audit").await.body;
    assert!(
        audit.contains("登录 <span class=\"key-name\">login</span>"),
        "{audit}"
    );
    let audit = en.get("/admin/audit").await.body;
    assert!(
        audit.contains("Signed in <span class=\"key-name\">login</span>"),
        "{audit}"
    );
}

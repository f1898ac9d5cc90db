//! Issue 3 over real HTTP on both backends: the owner's settings page
//! changes the storefront's name and notice and the next order's TTL live,
//! the stored values survive a restart and win over the environment, staff
//! cannot read or post them, a post without the CSRF token changes nothing,
//! and the stock display modes render as chosen. A setting configuration
//! gives (`KAMI_ORDER_TTL`) is fixed by it: read-only in the panel, never
//! stored, and in force after any save and restart.

#[macro_use]
mod common;

use common::panel::{create_admin, Panel};
use common::{spawn_kami, spawn_kami_with, Backend, Kami, Options, Stop};
use reqwest::StatusCode;
use serde_json::json;

both_backends!(
    saved_settings_apply_live_and_survive_a_restart,
    a_configured_order_ttl_is_fixed_and_never_stored,
    a_setting_left_as_it_was_is_not_stored,
    staff_and_forged_posts_cannot_change_settings,
    stock_display_modes_render_as_chosen
);

async fn owner_panel(kami: &Kami) -> Panel {
    let password = create_admin(kami, "owner@example.com", "owner");
    let p = Panel::new(kami);
    p.login("owner@example.com", &password).await;
    p
}

async fn shop_page(kami: &Kami, path: &str) -> String {
    let res = kami
        .http
        .get(kami.url(path))
        .header("accept-language", "en")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    res.text().await.unwrap()
}

async fn save_settings(p: &Panel, name: &str, notice: &str, ttl: &str, display: &str) -> u16 {
    let csrf = p.get("/admin/settings").await.csrf();
    let page = p
        .post(
            "/admin/settings",
            &[
                ("csrf", &csrf),
                ("shop_name", name),
                ("notice", notice),
                ("order_ttl", ttl),
                ("stock_display", display),
            ],
        )
        .await;
    page.status.as_u16()
}

/// Seconds between an order's creation and its `expires_at`.
async fn ttl_of_next_order(kami: &Kami, product: i64) -> i64 {
    let before = common::now_secs();
    let created = kami.buy(product, 1, "ttl@example.com").await;
    let expires = time::OffsetDateTime::parse(
        created["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    expires - before
}

async fn saved_settings_apply_live_and_survive_a_restart(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let product = kami.product("TTL probe", json!({})).await;
    kami.import_codes(product, &common::make_codes("TTL", 5))
        .await;
    let ttl = ttl_of_next_order(&kami, product).await;
    assert!(
        (899..=901).contains(&ttl),
        "the configured TTL first: {ttl}"
    );

    let p = owner_panel(&kami).await;
    let status = save_settings(
        &p,
        "Moonlight <Cards>",
        "Closed on <b>Sunday</b>",
        "120",
        "exact",
    )
    .await;
    assert_eq!(status, 303, "the settings form saves and redirects");
    let saved = p.get("/admin/settings?ok=1").await;
    assert!(
        saved.body.contains("Moonlight &lt;Cards&gt;"),
        "{}",
        saved.body
    );

    // Live, without a restart, escaped.
    let home = shop_page(&kami, "/").await;
    assert!(home.contains("Moonlight &lt;Cards&gt;"), "{home}");
    assert!(home.contains("Closed on &lt;b&gt;Sunday&lt;"), "{home}");
    assert!(!home.contains("<b>Sunday</b>"));
    let ttl = ttl_of_next_order(&kami, product).await;
    assert!((119..=121).contains(&ttl), "the saved TTL: {ttl}");

    let audit = p.get("/admin/audit").await.body;
    assert!(audit.contains("settings_updated"), "{audit}");

    // The stored values win over the defaults at the next start.
    kami.restart(Stop::Term).await;
    let home = shop_page(&kami, "/").await;
    assert!(home.contains("Moonlight &lt;Cards&gt;"), "{home}");
    let ttl = ttl_of_next_order(&kami, product).await;
    assert!(
        (119..=121).contains(&ttl),
        "the saved TTL after a restart: {ttl}"
    );

    // An invalid value is refused and changes nothing.
    let p = owner_panel_again(&kami).await;
    assert_eq!(save_settings(&p, "X", "", "0", "exact").await, 422);
    assert_eq!(save_settings(&p, "", "", "60", "exact").await, 422);
    assert_eq!(save_settings(&p, "X", "", "60", "loud").await, 422);
    let ttl = ttl_of_next_order(&kami, product).await;
    assert!((119..=121).contains(&ttl), "unchanged: {ttl}");
    // Clearing the notice removes the banner.
    assert_eq!(
        save_settings(&p, "Moonlight", "", "120", "exact").await,
        303
    );
    assert!(!shop_page(&kami, "/").await.contains("Sunday"));
}

async fn owner_panel_again(kami: &Kami) -> Panel {
    let password = create_admin(kami, "owner2@example.com", "owner");
    let p = Panel::new(kami);
    p.login("owner2@example.com", &password).await;
    p
}

async fn staff_and_forged_posts_cannot_change_settings(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let owner = owner_panel(&kami).await;
    let staff_pw = create_admin(&kami, "staff@example.com", "staff");
    let staff = Panel::new(&kami);
    staff.login("staff@example.com", &staff_pw).await;

    let read = staff.get("/admin/settings").await;
    assert_eq!(read.status, StatusCode::FORBIDDEN, "{}", read.body);
    assert!(!read.body.contains("order_ttl"));
    let csrf = staff.csrf().await;
    let post = staff
        .post(
            "/admin/settings",
            &[
                ("csrf", &csrf),
                ("shop_name", "Staff shop"),
                ("notice", ""),
                ("order_ttl", "60"),
                ("stock_display", "exact"),
            ],
        )
        .await;
    assert_eq!(post.status, StatusCode::FORBIDDEN);
    assert_eq!(
        staff.get("/admin/channels").await.status,
        StatusCode::FORBIDDEN
    );
    let nav = staff.get("/admin").await.body;
    assert!(
        !nav.contains("/admin/settings"),
        "staff are not shown the link"
    );

    // The owner without the token: refused, nothing changes.
    let forged = owner
        .post(
            "/admin/settings",
            &[
                ("shop_name", "Forged"),
                ("notice", "forged"),
                ("order_ttl", "5"),
                ("stock_display", "hidden"),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let wrong = owner
        .post(
            "/admin/settings",
            &[
                ("csrf", "not-the-token"),
                ("shop_name", "Forged"),
                ("notice", ""),
                ("order_ttl", "5"),
                ("stock_display", "hidden"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let home = shop_page(&kami, "/").await;
    assert!(
        !home.contains("Forged") && !home.contains("Staff shop"),
        "{home}"
    );
    let page = owner.get("/admin/settings").await;
    assert!(
        page.body.contains("value=\"900\""),
        "TTL unchanged: {}",
        page.body
    );
}

async fn stock_display_modes_render_as_chosen(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let exact = kami
        .product("Exact item", json!({"stock_display": "exact"}))
        .await;
    let level = kami
        .product(
            "Level item",
            json!({"stock_display": "level", "low_stock_threshold": 3}),
        )
        .await;
    let hidden = kami
        .product("Hidden item", json!({"stock_display": "hidden"}))
        .await;
    let inherit = kami.product("Inherit item", json!({})).await;
    kami.import_codes(exact, &common::make_codes("EXA", 17))
        .await;
    kami.import_codes(level, &common::make_codes("LEV", 13))
        .await;
    kami.import_codes(hidden, &common::make_codes("HID", 19))
        .await;
    kami.import_codes(inherit, &common::make_codes("INH", 23))
        .await;

    // The API keeps the number whatever the page shows (API.md).
    let (_, v) = kami.admin_get(&format!("/api/v1/products/{hidden}")).await;
    assert_eq!(v["stock"], 19, "{v}");
    assert_eq!(v["stock_display"], "hidden", "{v}");

    let page = |id: i64| {
        let kami = &kami;
        async move { shop_page(kami, &format!("/products/{id}")).await }
    };
    let exact_page = page(exact).await;
    assert!(exact_page.contains("<strong>17</strong>"), "{exact_page}");
    let level_page = page(level).await;
    assert!(level_page.contains("Plenty in stock"), "{level_page}");
    assert!(!level_page.contains("<strong>13</strong>"));
    let hidden_page = page(hidden).await;
    assert!(!hidden_page.contains("<strong>19</strong>"));
    assert!(!hidden_page.contains("In stock") && !hidden_page.contains("Plenty"));

    // 13 → 3 left: at the threshold, "few".
    kami.buy(level, 10, "few@example.com").await;
    let level_page = page(level).await;
    assert!(level_page.contains("Only a few left"), "{level_page}");

    // The shop default follows the settings: inherit turns to level.
    let home = shop_page(&kami, "/").await;
    assert!(home.contains("<strong>23</strong>"), "{home}");
    let p = owner_panel(&kami).await;
    assert_eq!(save_settings(&p, "Kami", "", "900", "level").await, 303);
    let home = shop_page(&kami, "/").await;
    assert!(!home.contains("<strong>23</strong>"), "{home}");
    assert!(
        home.contains("<strong>17</strong>"),
        "a product's own choice wins: {home}"
    );
    assert!(home.contains("Plenty in stock") && home.contains("Only a few left"));
    assert!(!home.contains("<strong>19</strong>"));

    // Chinese by default.
    let zh = kami
        .http
        .get(kami.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(zh.contains("库存充足") && zh.contains("仅剩少量"), "{zh}");

    // The panel's product form sets it too.
    let form = p.get(&format!("/admin/products/{inherit}")).await;
    assert!(
        form.body.contains("name=\"stock_display\""),
        "{}",
        form.body
    );
    let csrf = form.csrf();
    let saved = p
        .post(
            &format!("/admin/products/{inherit}"),
            &[
                ("csrf", &csrf),
                ("name", "Inherit item"),
                ("price", "1.00"),
                ("currency", "CNY"),
                ("min_quantity", "1"),
                ("max_quantity", "10"),
                ("visible", "1"),
                ("low_stock_threshold", "0"),
                ("stock_display", "hidden"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let (_, v) = kami.admin_get(&format!("/api/v1/products/{inherit}")).await;
    assert_eq!(v["stock_display"], "hidden", "{v}");
    let inherit_page = page(inherit).await;
    assert!(!inherit_page.contains("<strong>23</strong>") && !inherit_page.contains("Plenty"));
}

/// The keys the `settings` table holds.
async fn stored_keys(kami: &Kami) -> Vec<String> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&kami.database_url)
        .await
        .unwrap();
    let rows: Vec<(String,)> = sqlx::query_as("SELECT key FROM settings ORDER BY key")
        .fetch_all(&mut c)
        .await
        .unwrap();
    c.close().await.ok();
    rows.into_iter().map(|(k,)| k).collect()
}

async fn a_configured_order_ttl_is_fixed_and_never_stored(backend: Backend) {
    let kami = spawn_kami_with(
        backend,
        Options {
            order_ttl: Some(300),
            ..Options::default()
        },
    )
    .await;
    let product = kami.product("Fixed TTL", json!({})).await;
    kami.import_codes(product, &common::make_codes("FIX", 5))
        .await;
    let p = owner_panel(&kami).await;
    let page = p.get("/admin/settings").await.body;
    let field = page
        .split("id=\"order_ttl\"")
        .nth(1)
        .and_then(|rest| rest.split('>').next())
        .unwrap_or_default();
    assert!(field.contains("readonly"), "{page}");
    assert!(page.contains("<code>KAMI_ORDER_TTL</code>"), "{page}");

    // A post naming another TTL (a forged one, or a page from before)
    // changes the name and leaves the TTL to the configuration.
    assert_eq!(save_settings(&p, "Renamed", "", "60", "exact").await, 303);
    assert!(shop_page(&kami, "/").await.contains("Renamed"));
    let ttl = ttl_of_next_order(&kami, product).await;
    assert!((299..=301).contains(&ttl), "the configured TTL: {ttl}");
    assert!(
        !stored_keys(&kami).await.contains(&"order_ttl".to_string()),
        "a TTL configuration fixes was stored"
    );
    kami.restart(Stop::Term).await;
    let ttl = ttl_of_next_order(&kami, product).await;
    assert!((299..=301).contains(&ttl), "after a restart: {ttl}");
}

/// Saving the form for the shop name alone stores no TTL: a stored copy
/// of the value shown would outlive the default it was.
async fn a_setting_left_as_it_was_is_not_stored(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let p = owner_panel(&kami).await;
    assert_eq!(
        save_settings(&p, "Only the name", "", "900", "exact").await,
        303
    );
    let shop_keys: Vec<String> = stored_keys(&kami)
        .await
        .into_iter()
        .filter(|k| ["shop_name", "notice", "order_ttl", "stock_display"].contains(&k.as_str()))
        .collect();
    assert_eq!(shop_keys, vec!["shop_name".to_string()]);
    assert!(!p.get("/admin/settings").await.body.contains("readonly"));
}

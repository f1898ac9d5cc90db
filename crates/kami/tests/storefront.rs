//! A buyer's journey through the storefront's HTML forms, with cookies and
//! CSRF tokens handled as a browser would: product page, buy form, sandbox
//! pay button, order page with the codes, .txt download, lookup form.

#[macro_use]
mod common;

use common::forms::*;
use common::*;
use reqwest::StatusCode;
use serde_json::json;

both_backends!(
    buyer_pays_with_the_sandbox_button_and_sees_the_codes,
    forms_without_their_csrf_token_change_nothing,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_https_the_form_cookie_is_bound_to_the_host() {
    let kami = spawn_kami_with(
        Backend::Sqlite,
        Options {
            env: vec![("KAMI_PUBLIC_URL".into(), "https://shop.example".into())],
            ..Options::default()
        },
    )
    .await;
    let c = no_redirects();
    let pid = kami.product("Host-bound", json!({})).await;
    kami.import_codes(pid, &make_codes("HOST", 2)).await;

    let res = c
        .get(kami.url(&format!("/products/{pid}")))
        .send()
        .await
        .unwrap();
    let set: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    // Served over https (behind a proxy), browsers are told to keep to it.
    assert_eq!(
        res.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=31536000")
    );
    let csrf_cookie = set
        .iter()
        .find(|c| c.starts_with("__Host-kami_csrf="))
        .unwrap_or_else(|| panic!("no __Host- form cookie among {set:?}"));
    // What browsers require of the prefix: Secure, Path=/ and no Domain.
    assert!(csrf_cookie.contains("; Secure"), "{csrf_cookie}");
    assert!(csrf_cookie.contains("; Path=/;"), "{csrf_cookie}");
    assert!(
        !csrf_cookie.to_ascii_lowercase().contains("domain="),
        "{csrf_cookie}"
    );
    let token = csrf_of(&res.text().await.unwrap());

    let buy = |cookie: String| {
        c.post(kami.url(&format!("/products/{pid}/buy")))
            .header("cookie", cookie)
            .form(&[
                ("csrf", token.as_str()),
                ("quantity", "1"),
                ("email", "host@example.com"),
                ("channel", "sandbox"),
            ])
            .send()
    };
    // The plain name is what a sibling subdomain or a plain-HTTP page can
    // plant; over HTTPS it is not the form's cookie.
    let s = buy(format!("kami_csrf={token}")).await.unwrap().status();
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(kami.stock3(pid).await, (2, 0, 0), "no order was placed");
    let s = buy(format!("__Host-kami_csrf={token}"))
        .await
        .unwrap()
        .status();
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(kami.stock3(pid).await, (1, 1, 0));
}

async fn buyer_pays_with_the_sandbox_button_and_sees_the_codes(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let c = no_redirects();
    let mut jar = Jar::default();
    let pid = kami.product("Gift card <b>", json!({"price": 1234})).await;
    let codes = make_codes("WEB", 3);
    kami.import_codes(pid, &codes).await;

    let (s, html, _) = get(&c, &mut jar, &kami.url(&format!("/products/{pid}?lang=en"))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("Gift card &lt;b&gt;"), "name is escaped");
    let csrf = csrf_of(&html);

    let form = [
        ("csrf", csrf.as_str()),
        ("quantity", "2"),
        ("email", "web@example.com"),
        ("query_password", "pw123"),
        ("channel", "sandbox"),
    ];
    let (s, _, loc) = post(
        &c,
        &mut jar,
        &kami.url(&format!("/products/{pid}/buy")),
        &form,
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let pay_path = loc.expect("redirect to the pay page");
    assert!(pay_path.starts_with("/pay/sandbox/"), "{pay_path}");
    let order_no = pay_path.rsplit('/').next().unwrap().to_string();
    assert_eq!(
        kami.stock3(pid).await,
        (1, 2, 0),
        "the form reserved two codes"
    );

    let (s, html, _) = get(&c, &mut jar, &kami.url(&pay_path)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains(&format!("action=\"/pay/sandbox/{order_no}\"")),
        "pay button posts back"
    );
    // API.md's "Pay (sandbox)" button is named so in every language: here
    // on an API order's `pay_url`, to a client that asks for no language
    // (the page is Chinese).
    let api_order = kami.buy(pid, 1, "api@example.com").await;
    let pay_url = api_order["payment"]["pay_url"].as_str().unwrap();
    let plain = kami.http.get(pay_url).send().await.unwrap();
    let plain = plain.text().await.unwrap();
    assert!(plain.contains("支付"), "the page is in Chinese: {plain}");
    let button = plain
        .split("<button")
        .find(|b| b.contains("type=\"submit\""))
        .unwrap_or_else(|| panic!("no submit button: {plain}"));
    assert!(button.contains("Pay (sandbox)"), "{button}");
    let (s, _, loc) = post(
        &c,
        &mut jar,
        &kami.url(&pay_path),
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(loc.as_deref(), Some(format!("/orders/{order_no}").as_str()));

    // The button went through the real notification path.
    assert_eq!(kami.count_events(&order_no, "paid").await, 1);
    // A second press (a double click, a page left open) on the paid order
    // pays nothing again: no extra payment to refund.
    let before = kami.events(&order_no).await.len();
    let (s, _, loc) = post(
        &c,
        &mut jar,
        &kami.url(&pay_path),
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(loc.as_deref(), Some(format!("/orders/{order_no}").as_str()));
    assert_eq!(
        kami.events(&order_no).await.len(),
        before,
        "nothing recorded"
    );
    let (s, html, _) = get(&c, &mut jar, &kami.url(&format!("/orders/{order_no}"))).await;
    assert_eq!(s, StatusCode::OK);
    let shown: Vec<&String> = codes.iter().filter(|c| html.contains(c.as_str())).collect();
    assert_eq!(
        shown.len(),
        2,
        "the order page shows exactly the two delivered codes"
    );

    let (s, txt, _) = get(
        &c,
        &mut jar,
        &kami.url(&format!("/orders/{order_no}/codes.txt")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(txt.lines().count(), 2);

    // Another browser without the order's cookie sees nothing.
    let mut stranger = Jar::default();
    let (s, html, _) = get(&c, &mut stranger, &kami.url(&format!("/orders/{order_no}"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!codes.iter().any(|code| html.contains(code.as_str())));

    // ...until it looks the order up with the email and query password.
    let (_, html, _) = get(&c, &mut stranger, &kami.url("/lookup")).await;
    let csrf2 = csrf_of(&html);
    let form = [
        ("csrf", csrf2.as_str()),
        ("email", "WEB@example.com"),
        ("query_password", "pw123"),
    ];
    let (s, html, _) = post(&c, &mut stranger, &kami.url("/lookup"), &form).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains(&order_no));
    assert_eq!(
        codes.iter().filter(|c| html.contains(c.as_str())).count(),
        2
    );
    let form = [
        ("csrf", csrf2.as_str()),
        ("email", "web@example.com"),
        ("query_password", "wrong"),
    ];
    let (_, html, _) = post(&c, &mut stranger, &kami.url("/lookup"), &form).await;
    assert!(!html.contains(&order_no), "a wrong password finds nothing");

    // The order page shows the order's own link, which opens it in any
    // browser (an order placed without a query password has no other way
    // back once this browser's cookie is gone).
    let (_, html, _) = get(&c, &mut jar, &kami.url(&format!("/orders/{order_no}"))).await;
    let html = html.replace("&#x2f;", "/");
    let start = html
        .find(&format!("/orders/{order_no}?token="))
        .expect("the order page shows its link");
    let link = &html[start..];
    let link = &link[..link.find('<').unwrap()];
    let mut elsewhere = Jar::default();
    let (s, html, _) = get(&c, &mut elsewhere, &kami.url(link)).await;
    assert_eq!(s, StatusCode::OK, "{link}");
    assert_eq!(
        codes.iter().filter(|c| html.contains(c.as_str())).count(),
        2,
        "the link opens the order with its codes"
    );
    // And leaves the token in that browser's cookie: the address without
    // it opens the order there too.
    let (s, html, _) = get(
        &c,
        &mut elsewhere,
        &kami.url(&format!("/orders/{order_no}")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        codes.iter().filter(|c| html.contains(c.as_str())).count(),
        2
    );

    // An error answered to the buy form switches language to the product
    // page, not to the form's POST-only route.
    let (_, html, _) = get(&c, &mut jar, &kami.url(&format!("/products/{pid}?lang=en"))).await;
    let csrf3 = csrf_of(&html);
    let form = [
        ("csrf", csrf3.as_str()),
        ("quantity", "1"),
        ("email", "not-an-email"),
        ("channel", "sandbox"),
    ];
    let (s, html, _) = post(
        &c,
        &mut jar,
        &kami.url(&format!("/products/{pid}/buy")),
        &form,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("Please enter a valid email address") && !html.contains("(email"),
        "the field is named in the page's language, without the API's rule"
    );
    assert!(
        html.replace("&#x2f;", "/")
            .contains(&format!("href=\"/products/{pid}?lang=zh\"")),
        "the language link of an error page"
    );
}

async fn forms_without_their_csrf_token_change_nothing(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let c = no_redirects();
    let mut jar = Jar::default();
    let pid = kami.product("Guarded", json!({})).await;
    kami.import_codes(pid, &make_codes("CSRF", 2)).await;
    let (_, html, _) = get(&c, &mut jar, &kami.url(&format!("/products/{pid}"))).await;
    let good = csrf_of(&html);

    for token in ["", "forged-token-value-123456"] {
        let form = [
            ("csrf", token),
            ("quantity", "1"),
            ("email", "x@example.com"),
            ("channel", "sandbox"),
        ];
        let (s, _, _) = post(
            &c,
            &mut jar,
            &kami.url(&format!("/products/{pid}/buy")),
            &form,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "token {token:?}");
    }
    // The right token from a page, but without the cookie (a cross-site post).
    let mut other = Jar::default();
    let form = [
        ("csrf", good.as_str()),
        ("quantity", "1"),
        ("email", "x@example.com"),
        ("channel", "sandbox"),
    ];
    let (s, _, _) = post(
        &c,
        &mut other,
        &kami.url(&format!("/products/{pid}/buy")),
        &form,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A cookie planted to match the form (over plain HTTP, or by a sibling
    // domain): an empty or short one is not a token this server made, and
    // a browser saying the post came from another site is refused whatever
    // the tokens.
    let planted = [
        ("kami_csrf=".to_string(), "", None),
        ("kami_csrf=abc".to_string(), "abc", None),
        (
            format!("kami_csrf={good}"),
            good.as_str(),
            Some("cross-site"),
        ),
    ];
    for (cookie, token, site) in planted {
        let form = [
            ("csrf", token),
            ("quantity", "1"),
            ("email", "x@example.com"),
            ("channel", "sandbox"),
        ];
        let mut req = c
            .post(kami.url(&format!("/products/{pid}/buy")))
            .header("cookie", cookie.as_str())
            .form(&form);
        if let Some(site) = site {
            req = req.header("sec-fetch-site", site);
        }
        let s = req.send().await.unwrap().status();
        assert_eq!(s, StatusCode::FORBIDDEN, "{cookie} {site:?}");
    }
    assert_eq!(kami.stock3(pid).await, (2, 0, 0), "no order was placed");

    // A sold-out product says so in the page, in the buyer's language.
    let form = [
        ("csrf", good.as_str()),
        ("quantity", "3"),
        ("email", "x@example.com"),
        ("channel", "sandbox"),
    ];
    let (s, html, _) = post(
        &c,
        &mut jar,
        &kami.url(&format!("/products/{pid}/buy")),
        &form,
    )
    .await;
    assert!(
        s == StatusCode::CONFLICT || s == StatusCode::UNPROCESSABLE_ENTITY,
        "{s}"
    );
    assert!(
        html.contains("class=\"alert"),
        "the error is shown on the page"
    );
}

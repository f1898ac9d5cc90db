//! The buyer's side: Idempotency-Key, access tokens, lookup by email and password.

#[macro_use]
mod common;

use std::collections::HashSet;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

both_backends!(
    idempotency_key_replays_the_same_order_and_refuses_another_body,
    every_order_sent_twice_at_once_is_made_once_without_a_deadlock,
    orders_are_hidden_without_their_access_token,
    lookup_returns_only_orders_placed_with_that_email_and_password,
    an_idempotency_key_replays_only_to_the_client_that_made_it,
);

async fn idempotency_key_replays_the_same_order_and_refuses_another_body(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Idempotent", json!({})).await;
    kami.import_codes(pid, &make_codes("IDEM", 10)).await;

    let body = json!({"product_id": pid, "quantity": 1, "email": "retry@example.com", "channel": "sandbox"});
    let key = format!("idem-{}", random_token(16));
    let (s1, v1) = kami.order_idem(&body, &key).await;
    assert_eq!(s1, StatusCode::CREATED, "{v1}");
    let (s2, v2) = kami.order_idem(&body, &key).await;
    assert_eq!(s2, StatusCode::CREATED, "replay: {v2}");
    assert_eq!(
        v2["order_no"], v1["order_no"],
        "the same key and body must give the same order"
    );
    assert_eq!(v2, v1, "the replay is the first response");
    assert_eq!(kami.stock3(pid).await, (9, 1, 0), "only one order reserved");
    // The replayed token works.
    assert_eq!(kami.view(&v2).await["order_no"], v1["order_no"]);

    // Same key, another body.
    let other = json!({"product_id": pid, "quantity": 2, "email": "retry@example.com", "channel": "sandbox"});
    let (s3, v3) = kami.order_idem(&other, &key).await;
    assert_eq!(
        (s3, error_code(&v3)),
        (StatusCode::CONFLICT, "idempotency_conflict"),
        "{v3}"
    );
    assert_eq!(kami.stock3(pid).await, (9, 1, 0));

    // Without a key, the same body is a new order.
    let (s4, v4) = kami.order(body.clone()).await;
    assert_eq!(s4, StatusCode::CREATED, "{v4}");
    assert_ne!(v4["order_no"], v1["order_no"]);
    assert_eq!(kami.stock3(pid).await, (8, 2, 0));

    // Five retries of one request in flight at once: one order.
    let key = format!("idem-{}", random_token(16));
    let body = json!({"product_id": pid, "quantity": 2, "email": "burst@example.com", "channel": "sandbox"});
    let kami = std::sync::Arc::new(kami);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (k, body, key) = (kami.clone(), body.clone(), key.clone());
        tasks.push(tokio::spawn(async move { k.order_idem(&body, &key).await }));
    }
    let mut numbers = HashSet::new();
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, StatusCode::CREATED, "concurrent retry: {v}");
        numbers.insert(v["order_no"].as_str().unwrap().to_string());
    }
    assert_eq!(
        numbers.len(),
        1,
        "concurrent retries with one key made {numbers:?}"
    );
    assert_eq!(kami.stock3(pid).await, (6, 4, 0));
}

async fn orders_are_hidden_without_their_access_token(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Tokens", json!({})).await;
    kami.import_codes(pid, &make_codes("TOK", 4)).await;
    let o = kami.buy(pid, 1, "owner@example.com").await;
    let no = o["order_no"].as_str().unwrap();
    let token = o["access_token"].as_str().unwrap();
    assert!(
        token.len() >= 16,
        "access token too short to be unguessable: {token}"
    );
    kami.pay_ok(&o).await;

    let (s, owner) = kami.get_order(no, Some(token)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(owner["status"], json!("delivered"));
    assert_eq!(cards_of(&owner).len(), 1);

    let (s_none, v_none) = kami.get_order(no, None).await;
    let (s_wrong, v_wrong) = kami.get_order(no, Some("wrong-token-0000000000")).await;
    let other = kami.buy(pid, 1, "someone@example.com").await;
    let (s_other, v_other) = kami
        .get_order(no, Some(other["access_token"].as_str().unwrap()))
        .await;
    let ghost = format!("K20990101000000{}", random_token(8).to_uppercase());
    let (s_ghost, v_ghost) = kami.get_order(&ghost, Some(token)).await;
    for (what, s, v) in [
        ("no token", s_none, &v_none),
        ("wrong token", s_wrong, &v_wrong),
        ("another order's token", s_other, &v_other),
        ("no such order", s_ghost, &v_ghost),
    ] {
        assert_eq!(
            (s, error_code(v)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{what}: {v}"
        );
        assert!(
            !v.to_string().contains(&cards_of(&owner)[0]),
            "{what}: code leaked"
        );
    }
    assert_eq!(
        v_none, v_ghost,
        "an order without its token must look like no order at all"
    );
    assert_eq!(v_wrong, v_ghost);
}

async fn lookup_returns_only_orders_placed_with_that_email_and_password(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Lookup", json!({})).await;
    let codes = make_codes("LOOK", 10);
    kami.import_codes(pid, &codes).await;
    let email = format!("lookup-{}@example.com", random_token(6).to_lowercase());
    let order = |pw: Option<&str>| {
        let mut b = json!({"product_id": pid, "quantity": 1, "email": email, "channel": "sandbox"});
        if let Some(pw) = pw {
            b["query_password"] = json!(pw);
        }
        b
    };
    let (s, with_pw) = kami.order(order(Some("hunter2"))).await;
    assert_eq!(s, StatusCode::CREATED, "{with_pw}");
    let (s, no_pw) = kami.order(order(None)).await;
    assert_eq!(s, StatusCode::CREATED, "{no_pw}");
    let (s, other_pw) = kami.order(order(Some("correct horse"))).await;
    assert_eq!(s, StatusCode::CREATED, "{other_pw}");

    let found = kami.lookup(&email, "hunter2").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["order_no"], with_pw["order_no"]);
    assert_eq!(found[0]["status"], json!("pending"));
    assert!(
        found[0].get("cards").is_none() || found[0]["cards"].is_null(),
        "no codes before payment: {found:?}"
    );

    kami.pay_ok(&with_pw).await;
    let found = kami.lookup(&email, "hunter2").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["status"], json!("delivered"));
    let cards = cards_of(&found[0]);
    assert_eq!(
        cards,
        kami.codes(&with_pw).await,
        "lookup shows the delivered codes"
    );
    assert_distinct_from(&cards, &codes);

    assert!(
        kami.lookup(&email, "hunter3").await.is_empty(),
        "wrong password"
    );
    assert!(
        kami.lookup(&email, "").await.is_empty(),
        "an empty password finds nothing"
    );
    assert!(
        kami.lookup("nobody@example.com", "hunter2")
            .await
            .is_empty(),
        "wrong email"
    );
    let found = kami.lookup(&email, "correct horse").await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["order_no"], other_pw["order_no"]);
    for pw in ["hunter2", "correct horse", "", " "] {
        let found = kami.lookup(&email, pw).await;
        assert!(
            found.iter().all(|o| o["order_no"] != no_pw["order_no"]),
            "an order placed without a password was returned for {pw:?}"
        );
    }
}

/// Clients that send every order twice at once under its key (a retry on
/// a timeout during a drop): one order per key, every answer that order
/// or "still being processed", and no batch of the writers deadlocked on
/// another's twin key (PostgreSQL then fails one after a second and the
/// batch is replayed order by order: an audit measured 2.3 s per order).
async fn every_order_sent_twice_at_once_is_made_once_without_a_deadlock(backend: Backend) {
    let kami = std::sync::Arc::new(spawn_kami(backend).await);
    let pid = kami.product("Twice", json!({})).await;
    kami.import_codes(pid, &make_codes("TWIN", 150)).await;
    let tag = random_token(8);
    let mut tasks = Vec::new();
    for i in 0..240 {
        let k = kami.clone();
        let key = format!("twin-{tag}-{}", i / 2);
        let body = json!({"product_id": pid, "quantity": 1,
                          "email": format!("twin{}@example.com", i / 2), "channel": "sandbox"});
        tasks.push(tokio::spawn(async move {
            let res = k
                .http
                .post(k.url("/api/v1/orders"))
                .header("idempotency-key", key.as_str())
                .json(&body)
                .send()
                .await
                .unwrap();
            let retry_after = res.headers().contains_key("retry-after");
            let status = res.status();
            let v: Value = res.json().await.unwrap_or(Value::Null);
            (key, (status, v), retry_after)
        }));
    }
    let mut orders: std::collections::HashMap<String, String> = Default::default();
    for t in tasks {
        let (key, (status, v), retry_after) = t.await.unwrap();
        match status {
            // The twin still running: retry and get its answer.
            StatusCode::CONFLICT => {
                assert_eq!(error_code(&v), "idempotency_conflict", "{key}: {v}");
                assert!(retry_after, "{key}: no Retry-After on {v}");
            }
            StatusCode::CREATED => {
                let no = v["order_no"].as_str().unwrap().to_string();
                assert_eq!(
                    orders.entry(key.clone()).or_insert_with(|| no.clone()),
                    &no,
                    "{key}"
                );
            }
            _ => assert_eq!(
                error_code(&v),
                "idempotency_conflict",
                "{key}: {status} {v}"
            ),
        }
    }
    assert_eq!(orders.len(), 120, "every key made its order");
    assert_eq!(kami.stock3(pid).await, (30, 120, 0));
    let logs = kami.logs();
    assert!(
        !logs.contains("deadlock"),
        "a batch deadlocked: {}",
        logs.lines()
            .filter(|l| l.contains("deadlock"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A server behind a proxy on 127.0.0.1, so each test request names its
/// client in `X-Forwarded-For`; rate limits as `limits` says.
async fn behind_a_proxy(backend: Backend, limits: &str) -> Kami {
    spawn_kami_with(
        backend,
        Options {
            env: vec![
                ("KAMI_TRUSTED_PROXIES".into(), "127.0.0.1".into()),
                ("KAMI_RATE_LIMITS".into(), limits.into()),
            ],
            ..Options::default()
        },
    )
    .await
}

/// POSTs `body` to `path` as the client at `client`, with an Idempotency-Key.
async fn post_as(
    kami: &Kami,
    client: &str,
    path: &str,
    key: &str,
    body: &Value,
) -> (StatusCode, Value) {
    kami.send(
        kami.http
            .post(kami.url(path))
            .header("x-forwarded-for", client)
            .header("idempotency-key", key)
            .json(body),
    )
    .await
}

/// Public endpoints have no API key to scope their idempotency keys by: an
/// answer is bound to the client that got it. Another client sending the
/// same key and body (an audit did) hears a conflict, never the first
/// order's access token or a lookup's codes; the first client (an IPv6
/// client by its /64, as the rate limiter sees it) still hears its replay.
async fn an_idempotency_key_replays_only_to_the_client_that_made_it(backend: Backend) {
    let kami = behind_a_proxy(backend, "off").await;
    let pid = kami.product("Bound", json!({})).await;
    kami.import_codes(pid, &make_codes("BOUND", 5)).await;
    let body = json!({"product_id": pid, "quantity": 1, "email": "bound@example.com",
                      "query_password": "sesame", "channel": "sandbox"});
    let key = format!("bound-{}", random_token(16));
    let (victim, other) = ("2001:db8:1:2::1", "203.0.113.9");
    let (s, first) = post_as(&kami, victim, "/api/v1/orders", &key, &body).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let token = first["access_token"].as_str().unwrap().to_string();

    let (s, stolen) = post_as(&kami, other, "/api/v1/orders", &key, &body).await;
    assert_eq!(
        (s, error_code(&stolen)),
        (StatusCode::CONFLICT, "idempotency_conflict"),
        "{stolen}"
    );
    assert!(!stolen.to_string().contains(&token), "{stolen}");
    assert!(!stolen
        .to_string()
        .contains(first["order_no"].as_str().unwrap()));

    let (s, again) = post_as(&kami, "2001:db8:1:2::99", "/api/v1/orders", &key, &body).await;
    assert_eq!(s, StatusCode::CREATED, "the same /64 replays: {again}");
    assert_eq!(again, first);
    assert_eq!(kami.stock3(pid).await, (4, 1, 0), "one order");

    // A lookup's answer holds codes: bound the same way.
    kami.pay_ok(&first).await;
    let codes = kami.codes(&first).await;
    let lookup = json!({"email": "bound@example.com", "query_password": "sesame"});
    let key = format!("bound-lookup-{}", random_token(16));
    let (s, found) = post_as(&kami, victim, "/api/v1/orders/lookup", &key, &lookup).await;
    assert_eq!(s, StatusCode::OK, "{found}");
    assert_eq!(cards_of(&found["data"][0]), codes);
    let (s, stolen) = post_as(&kami, other, "/api/v1/orders/lookup", &key, &lookup).await;
    assert_eq!(
        (s, error_code(&stolen)),
        (StatusCode::CONFLICT, "idempotency_conflict"),
        "{stolen}"
    );
    assert!(codes
        .iter()
        .all(|c| !stolen.to_string().contains(c.as_str())));
    let (s, again) = post_as(&kami, victim, "/api/v1/orders/lookup", &key, &lookup).await;
    assert_eq!(
        (s, &again),
        (StatusCode::OK, &found),
        "the same client replays"
    );
}

/// A lookup's limits come before its Idempotency-Key: guesses at the query
/// password sent with the victim's key from many addresses stop at the
/// per-email limit (5) like any others. They used to be answered by the
/// stored key first (409 for each wrong password, the codes for the right
/// one), past the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stored_lookup_key_is_no_oracle_past_the_per_email_limit() {
    let kami = behind_a_proxy(Backend::Sqlite, "on").await;
    let pid = kami.product("Oracle", json!({})).await;
    kami.import_codes(pid, &make_codes("ORACLE", 2)).await;
    let email = "oracle@example.com";
    let created = kami
        .order(json!({"product_id": pid, "quantity": 1, "email": email,
                      "query_password": "right", "channel": "sandbox"}))
        .await
        .1;
    kami.pay_ok(&created).await;
    let codes = kami.codes(&created).await;
    let key = format!("oracle-{}", random_token(16));
    let (s, v) = post_as(
        &kami,
        "10.0.0.1",
        "/api/v1/orders/lookup",
        &key,
        &json!({"email": email, "query_password": "right"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let mut statuses = Vec::new();
    for i in 0..15 {
        // The right password last.
        let guess = if i == 14 {
            "right".to_string()
        } else {
            format!("guess{i}")
        };
        let res = kami
            .http
            .post(kami.url("/api/v1/orders/lookup"))
            .header("x-forwarded-for", format!("10.1.0.{i}"))
            .header("idempotency-key", key.as_str())
            .json(&json!({"email": email, "query_password": guess}))
            .send()
            .await
            .unwrap();
        let status = res.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(res.headers().contains_key("retry-after"));
        }
        let text = res.text().await.unwrap();
        assert!(
            codes.iter().all(|c| !text.contains(c.as_str())),
            "guess {i} read the codes: {text}"
        );
        statuses.push(status);
    }
    assert!(!statuses.contains(&StatusCode::OK), "{statuses:?}");
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    // The victim's lookup took one of the email's five.
    assert_eq!(limited, 11, "{statuses:?}");
    assert_eq!(statuses[14], StatusCode::TOO_MANY_REQUESTS);
}

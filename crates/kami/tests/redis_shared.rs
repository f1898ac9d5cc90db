//! Issue 5, scale-out: the stock gate and the rate limits shared through a
//! real Redis (`KAMI_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`) by
//! real instances on one PostgreSQL database — and what happens when Redis
//! is not there. Each test namespaces its keys with its own
//! `KAMI_REDIS_PREFIX`, and removes them when it ends.

#[macro_use]
mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::panel::{attr_after, create_admin, Panel};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

both_backends!(gate_in_redis_agrees_with_the_database_through_expiries_restocks_and_a_restart);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_turns_buyers_away_once_another_sold_the_drop() {
    two_instances_share_the_gate().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buyers_racing_over_two_instances_get_exactly_the_stock() {
    nothing_oversold_across_instances().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_orders_in_flight_do_not_turn_other_buyers_away() {
    failed_orders_hold_nothing().await
}

/// `kami cards import` beside a running server, with the gate in Redis:
/// the codes sell the moment the command returns. The command used to
/// leave the shared count to the servers' re-sync, up to a second later:
/// the first buyers of a restocked drop were told `sold_out`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn codes_the_cli_imports_sell_at_once_through_the_shared_gate() {
    let prefix = Prefix::new();
    let kami = sqlite_with_redis(&prefix).await;
    for round in 0..3 {
        let pid = kami.product(&format!("Restocked {round}"), json!({})).await;
        let (status, v) = order_on(&kami, pid, "early@example.com").await;
        assert_eq!((status, error_code(&v)), (StatusCode::CONFLICT, "sold_out"));
        let file = kami.data_dir().join(format!("restock-{round}.txt"));
        std::fs::write(&file, format!("CLI-{round}-A\nCLI-{round}-B\n")).unwrap();
        let out = kami.cli_import(pid, &file);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(prefix.gate(pid), Some(2), "round {round}: the shared count");
        let (status, v) = order_on(&kami, pid, "first@example.com").await;
        assert_eq!(status, StatusCode::CREATED, "round {round}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_hold_across_two_instances() {
    shared_rate_limits().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_an_instance_sells_and_limits_on_its_own() {
    unreachable_redis_falls_back().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_is_survived_and_the_gate_reloads() {
    redis_restart().await
}

/// `flash_gate.rs`'s `an_import_into_a_big_stock_is_counted_whole` with the
/// gate in Redis: the shared count was re-read only while under 10,000, the
/// same way, on every path (the admin API's import and `kami cards import`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_import_into_a_big_stock_is_counted_whole_in_redis() {
    let prefix = Prefix::new();
    let kami = sqlite_with_redis(&prefix).await;
    let pid = kami.product("Big shared stock", json!({})).await;
    kami.import_codes(pid, &make_codes("RBIG1", 12_000)).await;
    kami.import_codes(pid, &make_codes("RBIG2", 12_000)).await;
    assert_eq!(kami.shown_stock(pid).await, json!(24_000));
    let file = kami.data_dir().join("more.txt");
    std::fs::write(&file, make_codes("RBIG3", 12_000).join("\n")).unwrap();
    let out = kami.cli_import(pid, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(prefix.gate(pid), Some(36_000));
    assert_eq!(kami.stock3(pid).await, (36_000, 0, 0));
}

/// Two instances on one PostgreSQL database, no Redis: B never counted the
/// product A creates and stocks, so B's catalog (which reads the product
/// list without counting codes when its gate knows every product) must
/// count them, in the list and on the product's page.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_shows_the_stock_of_a_product_another_created() {
    let a = spawn_kami(Backend::Postgres).await;
    let key_file = a.data_dir().join("master.key").display().to_string();
    let b = spawn_kami_with(
        Backend::Postgres,
        Options {
            env: env(&[
                ("KAMI_DATABASE_URL", &a.database_url),
                ("KAMI_MASTER_KEY_FILE", &key_file),
            ]),
            ..Options::default()
        },
    )
    .await;
    // B has a product list (and a gate) before the new product exists.
    let (status, _) = b.send(b.http.get(b.url("/api/v1/products"))).await;
    assert_eq!(status, StatusCode::OK);
    let pid = a.product("made on A", json!({})).await;
    a.import_codes(pid, &make_codes("ELSEWHERE", 7)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = b.send(b.http.get(b.url("/api/v1/products"))).await;
        let listed = list["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["id"].as_i64() == Some(pid))
            .map(|p| p["stock"].as_i64());
        let (_, page) = b
            .send(b.http.get(b.url(&format!("/api/v1/products/{pid}"))))
            .await;
        if listed == Some(Some(7)) && page["stock"].as_i64() == Some(7) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "B shows {listed:?} in its list and {} on the page, not 7",
            page["stock"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn redis_url() -> String {
    std::env::var("KAMI_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A prefix of this test's own; its keys are deleted when it is dropped.
struct Prefix(String);

impl Prefix {
    fn new() -> Self {
        Self(format!("kami_t_{}:", random_token(12).to_lowercase()))
    }

    fn conn(&self) -> redis::Connection {
        redis::Client::open(redis_url().as_str())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("Redis at {} is needed: {e}", redis_url()))
    }

    /// Waits until no order of `pid` is in flight as far as the shared
    /// gate knows (the database has answered them all and the instances
    /// have told Redis): until then it lets buyers it is short for through
    /// to the database, whose codes an order in flight may give back.
    async fn settled(&self, pid: i64) {
        // Well under the held count's 5 s expiry: answered orders leave it
        // by the instances' own runs.
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let held: Option<i64> = redis::cmd("GET")
                .arg(format!("{}gate:{pid}:held", self.0))
                .query(&mut self.conn())
                .unwrap();
            if held.is_none() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{held:?} codes of {pid} still in flight"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The shared gate's count of a product, if Redis keeps one.
    fn gate(&self, pid: i64) -> Option<i64> {
        redis::cmd("GET")
            .arg(format!("{}gate:{pid}", self.0))
            .query(&mut self.conn())
            .unwrap()
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        if let Ok(client) = redis::Client::open(redis_url().as_str()) {
            if let Ok(mut c) = client.get_connection() {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}*", self.0))
                    .query(&mut c)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut c);
                }
            }
        }
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A SQLite shop with the gate in the test Redis, under `prefix`.
async fn sqlite_with_redis(prefix: &Prefix) -> Kami {
    spawn_kami_with(
        Backend::Sqlite,
        Options {
            env: with_redis(&redis_url(), prefix, &[]),
            ..Options::default()
        },
    )
    .await
}

fn with_redis(url: &str, prefix: &Prefix, more: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut e = env(&[("KAMI_REDIS_URL", url), ("KAMI_REDIS_PREFIX", &prefix.0)]);
    e.extend(env(more));
    e
}

/// Instance A on a fresh PostgreSQL database, and B on the same database
/// (and master key), both with this Redis prefix.
async fn pair(prefix: &Prefix, order_ttl: u64, more: &[(&str, &str)]) -> (Arc<Kami>, Arc<Kami>) {
    let a = spawn_kami_with(
        Backend::Postgres,
        Options {
            order_ttl: Some(order_ttl),
            env: with_redis(&redis_url(), prefix, more),
            ..Options::default()
        },
    )
    .await;
    let key_file = a.data_dir().join("master.key").display().to_string();
    let mut b_env = with_redis(&redis_url(), prefix, more);
    b_env.extend(env(&[
        ("KAMI_DATABASE_URL", &a.database_url),
        ("KAMI_MASTER_KEY_FILE", &key_file),
    ]));
    let b = spawn_kami_with(
        Backend::Postgres,
        Options {
            order_ttl: Some(order_ttl),
            env: b_env,
            ..Options::default()
        },
    )
    .await;
    (Arc::new(a), Arc::new(b))
}

async fn order_on(kami: &Kami, pid: i64, email: &str) -> (StatusCode, Value) {
    kami.order(json!({"product_id": pid, "quantity": 1, "email": email, "channel": "sandbox"}))
        .await
}

/// Buyers `0..n` of `tag`, alternately on each instance, all at once.
async fn race(instances: &[Arc<Kami>], pid: i64, n: usize, tag: &str) -> (Vec<Value>, usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let k = instances[i % instances.len()].clone();
        let email = format!("{tag}{i}@example.com");
        tasks.push(tokio::spawn(async move { order_on(&k, pid, &email).await }));
    }
    let (mut won, mut sold_out) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            (StatusCode::CREATED, v) => won.push(v),
            (StatusCode::CONFLICT, v) if error_code(&v) == "sold_out" => sold_out += 1,
            (s, v) => panic!("unexpected answer {s}: {v}"),
        }
    }
    (won, sold_out)
}

/// Waits until the database, the shared count in Redis and what each
/// instance shows buyers all say `want` (the display may lag a second).
async fn wait_agree(instances: &[&Kami], prefix: &Prefix, pid: i64, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let db = instances[0].stock3(pid).await.0;
        let shared = prefix.gate(pid);
        let mut shown = Vec::new();
        for k in instances {
            let (_, p) = k
                .send(k.http.get(k.url(&format!("/api/v1/products/{pid}"))))
                .await;
            shown.push(p["stock"].as_i64().unwrap());
        }
        if db == want && shared == Some(want) && shown.iter().all(|s| *s == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "database {db}, Redis {shared:?} and instances {shown:?} never agreed on {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn gate_in_redis_agrees_with_the_database_through_expiries_restocks_and_a_restart(
    backend: Backend,
) {
    let prefix = Prefix::new();
    let kami = Arc::new(
        spawn_kami_with(
            backend,
            Options {
                order_ttl: Some(2),
                env: with_redis(&redis_url(), &prefix, &[]),
                ..Options::default()
            },
        )
        .await,
    );
    let one = [kami.clone()];
    let pid = kami.product("Gate in Redis", json!({})).await;
    kami.import_codes(pid, &make_codes("RGATE", 20)).await;
    assert_eq!(
        prefix.gate(pid),
        Some(20),
        "an import sets the shared count"
    );

    let (won, sold_out) = race(&one, pid, 40, "a").await;
    assert_eq!((won.len(), sold_out), (20, 20));
    assert_eq!(prefix.gate(pid), Some(0));
    // Once the drop's orders are answered the gate alone turns buyers away.
    prefix.settled(pid).await;
    let (status, v) = order_on(&kami, pid, "late@example.com").await;
    assert_eq!((status, error_code(&v)), (StatusCode::CONFLICT, "sold_out"));
    let rejected = kami.counter("kami_gate_rejections_total", "sold_out").await;
    assert!(rejected >= 1.0, "the gate turned nobody away");
    // Paying half keeps those codes; the other half expire back into stock.
    for created in &won[..10] {
        kami.pay_ok(created).await;
    }
    wait_agree(&[&kami], &prefix, pid, 10).await;

    kami.import_codes(pid, &make_codes("RGATE2", 5)).await;
    assert_eq!(
        prefix.gate(pid),
        Some(15),
        "a restock reaches the gate at once"
    );
    // An operator voids a code: the shared count drops with it.
    let panel = Panel::new(&kami);
    panel
        .login(
            "owner@example.com",
            &create_admin(&kami, "owner@example.com", "owner"),
        )
        .await;
    let codes = panel
        .get(&format!("/admin/products/{pid}/codes?status=available"))
        .await
        .body;
    let card = attr_after(&codes, "id=\"card-").expect("an available code is listed");
    let csrf = panel.csrf().await;
    let void = panel
        .post(
            &format!("/admin/products/{pid}/codes/{card}/void"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(void.status, StatusCode::SEE_OTHER, "{}", void.body);
    assert_eq!(
        prefix.gate(pid),
        Some(14),
        "a void reaches the gate at once"
    );

    let (won, _) = race(&one, pid, 5, "b").await;
    assert_eq!(won.len(), 5);
    kami.restart(Stop::Kill).await;
    // The unpaid orders of before the restart expire after it.
    wait_agree(&[&kami], &prefix, pid, 14).await;

    let (won, sold_out) = race(&one, pid, 30, "c").await;
    assert_eq!((won.len(), sold_out), (14, 16));
    for created in &won {
        kami.pay_ok(created).await;
    }
    wait_agree(&[&kami], &prefix, pid, 0).await;
    assert_eq!(kami.stock3(pid).await, (0, 0, 24));
}

async fn two_instances_share_the_gate() {
    let prefix = Prefix::new();
    let (a, b) = pair(&prefix, 2, &[]).await;
    let pid = a.product("Shared drop", json!({})).await;
    a.import_codes(pid, &make_codes("SHARED", 10)).await;

    let (won, sold_out) = race(std::slice::from_ref(&a), pid, 12, "a").await;
    assert_eq!((won.len(), sold_out), (10, 2));

    // B never asked the database about this product: only the shared gate
    // can answer its very first buyer without it (once A's orders are
    // answered, which A tells Redis within milliseconds, and the count
    // agrees: a buyer let through while codes were in flight, then
    // granted, leaves it high until the next re-sync, a second at most).
    prefix.settled(pid).await;
    wait_agree(&[&a, &b], &prefix, pid, 0).await;
    let before = b.counter("kami_gate_rejections_total", "sold_out").await;
    let (status, v) = order_on(&b, pid, "late@example.com").await;
    assert_eq!((status, error_code(&v)), (StatusCode::CONFLICT, "sold_out"));
    let after = b.counter("kami_gate_rejections_total", "sold_out").await;
    assert_eq!(
        after - before,
        1.0,
        "B's sold_out did not come from the gate"
    );

    // A restock through B is sold through A: A's sold-out mark goes with
    // the raise B's script publishes, a message's flight after B answered.
    b.import_codes(pid, &make_codes("SHARED2", 3)).await;
    let mut restocked = Vec::new();
    // Well inside the second after which a mark would lapse on its own.
    let deadline = Instant::now() + Duration::from_millis(400);
    while restocked.len() < 3 {
        match order_on(&a, pid, &format!("r{}@example.com", restocked.len())).await {
            (StatusCode::CREATED, v) => restocked.push(v),
            (StatusCode::CONFLICT, v) if error_code(&v) == "sold_out" => {
                assert!(
                    Instant::now() < deadline,
                    "A did not sell B's restock within 0.4 s"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (s, v) => panic!("unexpected answer {s}: {v}"),
        }
    }

    // Pay four of A's first orders; the other six expire on whichever
    // instance sweeps first, and both instances sell them again.
    for created in &won[..4] {
        a.pay_ok(created).await;
    }
    for created in &restocked {
        b.pay_ok(created).await;
    }
    wait_agree(&[&a, &b], &prefix, pid, 6).await;
    let (again, sold_out) = race(&[a.clone(), b.clone()], pid, 10, "x").await;
    assert_eq!((again.len(), sold_out), (6, 4));

    // A dies mid-sale and comes back; nothing is lost or oversold.
    b.import_codes(pid, &make_codes("SHARED3", 20)).await;
    let buyers = {
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move {
            let mut won = 0;
            for i in 0..30 {
                let k = if i % 3 == 0 { &a } else { &b };
                let res = k
                    .http
                    .post(k.url("/api/v1/orders"))
                    .json(&json!({"product_id": pid, "quantity": 1,
                                  "email": format!("m{i}@example.com"), "channel": "sandbox"}))
                    .send()
                    .await;
                if res.is_ok_and(|r| r.status() == StatusCode::CREATED) {
                    won += 1;
                }
            }
            won
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.restart(Stop::Kill).await;
    let won_mid = buyers.await.unwrap();
    // 20 new codes, and the 6 of `again` once they expired.
    assert!(won_mid <= 26, "{won_mid} orders for at most 26 codes");
    // Every unpaid order expires (TTL 2 s): all 26 unpaid codes come back,
    // whatever A's death did to the orders it had in flight.
    wait_agree(&[&a, &b], &prefix, pid, 26).await;
    assert_eq!(a.stock3(pid).await, (26, 0, 7));
}

async fn nothing_oversold_across_instances() {
    let prefix = Prefix::new();
    let (a, b) = pair(&prefix, 900, &[]).await;
    let pid = a.product("Few codes", json!({})).await;
    let codes = make_codes("FEW", 7);
    a.import_codes(pid, &codes).await;
    let (won, sold_out) = race(&[a.clone(), b.clone()], pid, 200, "o").await;
    assert_eq!((won.len(), sold_out), (7, 193));
    assert_eq!(a.stock3(pid).await, (0, 7, 0));
    assert_eq!(prefix.gate(pid), Some(0));
    let mut delivered = Vec::new();
    for (i, created) in won.iter().enumerate() {
        let k = if i % 2 == 0 { &a } else { &b };
        a.pay_ok(created).await;
        delivered.extend(k.codes(created).await);
    }
    assert_eq!(delivered.len(), 7);
    assert_distinct_from(&delivered, &codes);
}

/// Orders the database refuses while they are in flight hold the shared
/// count only until it answers, and turn nobody away meanwhile (invariant
/// 6: the gate refuses only what the database would). Two bursts over two
/// instances: a scalper's 150 orders against a limit of one per buyer,
/// mixed with 20 other buyers; and 20 buyers whose clients send each order
/// twice at once under one `Idempotency-Key`. Every buyer gets a code while
/// codes are left; the gate in Redis used to count every request in
/// flight as sold, so most of them were told `sold_out` (and a retry with
/// the same key replayed that answer for good).
async fn failed_orders_hold_nothing() {
    let prefix = Prefix::new();
    let (a, b) = pair(&prefix, 900, &[]).await;
    let limited = a
        .product("One each", json!({"per_buyer_limit": 1, "max_quantity": 1}))
        .await;
    a.import_codes(limited, &make_codes("ONE", 30)).await;
    let mut tasks = Vec::new();
    for i in 0..170 {
        let k = if i % 2 == 0 { a.clone() } else { b.clone() };
        let email = if i % 17 == 5 {
            format!("buyer{i}@example.com")
        } else {
            "scalper@example.com".to_string()
        };
        tasks.push(tokio::spawn(async move {
            let answer = order_on(&k, limited, &email).await;
            (email, answer)
        }));
    }
    let (mut buyers, mut scalper) = (0, 0);
    for t in tasks {
        let (email, (status, v)) = t.await.unwrap();
        match (email.starts_with("buyer"), status) {
            (true, StatusCode::CREATED) => buyers += 1,
            (true, _) => panic!("{email} was refused with codes left: {status} {v}"),
            (false, StatusCode::CREATED) => scalper += 1,
            (false, _) => assert_eq!(error_code(&v), "limit_exceeded", "{v}"),
        }
    }
    assert_eq!((buyers, scalper), (10, 1));
    assert_eq!(a.stock3(limited).await, (19, 11, 0));
    // Every order answered: nothing is left in flight, and the shared count
    // agrees with the database (the buyers let through without a hold are
    // counted by the next re-sync: a count too high lets the database
    // answer, never turns a buyer away).
    prefix.settled(limited).await;
    wait_agree(&[&a, &b], &prefix, limited, 19).await;

    let doubled = a.product("Retried", json!({})).await;
    a.import_codes(doubled, &make_codes("TWICE", 25)).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let k = if i % 2 == 0 { a.clone() } else { b.clone() };
        let key = format!("retry-{prefix}-{}", i / 2, prefix = prefix.0);
        let body = json!({"product_id": doubled, "quantity": 1,
                          "email": format!("twice{}@example.com", i / 2), "channel": "sandbox"});
        tasks.push(tokio::spawn(async move {
            let req = k
                .http
                .post(k.url("/api/v1/orders"))
                .header("idempotency-key", key.clone())
                .json(&body);
            (key, k.send(req).await)
        }));
    }
    let mut orders = std::collections::HashMap::new();
    for t in tasks {
        let (key, (status, v)) = t.await.unwrap();
        // The twin still in flight may be told so (409, retry); never sold out.
        if status == StatusCode::CREATED {
            let no = v["order_no"].as_str().unwrap().to_string();
            let first = orders.entry(key.clone()).or_insert_with(|| no.clone());
            assert_eq!(*first, no, "{key} made two orders");
        } else {
            assert_eq!(
                error_code(&v),
                "idempotency_conflict",
                "{key}: {status} {v}"
            );
        }
    }
    for i in 0..20 {
        let key = format!("retry-{prefix}-{i}", prefix = prefix.0);
        if !orders.contains_key(&key) {
            let req = a
                .http
                .post(a.url("/api/v1/orders"))
                .header("idempotency-key", key.clone())
                .json(&json!({"product_id": doubled, "quantity": 1,
                              "email": format!("twice{i}@example.com"), "channel": "sandbox"}));
            let (status, v) = a.send(req).await;
            assert_eq!(status, StatusCode::CREATED, "{key} retried: {v}");
        }
    }
    assert_eq!(a.stock3(doubled).await, (5, 20, 0));
}

async fn lookup(kami: &Kami, email: &str, xff: Option<String>) -> StatusCode {
    let mut req = kami
        .http
        .post(kami.url("/api/v1/orders/lookup"))
        .json(&json!({"email": email, "query_password": "x"}));
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    req.send().await.unwrap().status()
}

async fn shared_rate_limits() {
    let prefix = Prefix::new();
    let (a, b) = pair(
        &prefix,
        900,
        &[
            ("KAMI_RATE_LIMITS", "on"),
            ("KAMI_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    // Lookups per IP: a burst of 10, then one a second — between them, not
    // each. Alone, each instance would grant its own 10.
    let started = Instant::now();
    let (mut ok, mut limited_on) = (0, [0, 0]);
    for i in 0..30 {
        let k = if i % 2 == 0 { &a } else { &b };
        match lookup(
            k,
            &format!("ip{i}@example.com"),
            Some("198.51.100.9".into()),
        )
        .await
        {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited_on[i % 2] += 1,
            s => panic!("lookup answered {s}"),
        }
    }
    let refill = started.elapsed().as_secs() + 1;
    assert!(
        (10..=10 + refill).contains(&ok),
        "{ok} of 30 lookups from one IP passed over two instances (allowance 10 + {refill})"
    );
    assert!(limited_on[0] > 0 && limited_on[1] > 0, "{limited_on:?}");

    // Lookups per email: 5, then one a minute, whatever the IP and instance.
    let mut ok = 0;
    for i in 0..12 {
        let k = if i % 2 == 0 { &a } else { &b };
        let ip = Some(format!("203.0.113.{}", i + 1));
        if lookup(k, "one@example.com", ip).await == StatusCode::OK {
            ok += 1;
        }
    }
    assert!((5..=6).contains(&ok), "{ok} lookups for one email passed");

    // Admin sign-ins per IP: 10, then one every six seconds, between the
    // instances (an unknown email, so no account's lockout plays a part).
    let panels = [Panel::new(&a), Panel::new(&b)];
    let started = Instant::now();
    let (mut refused, mut limited_on) = (0, [0, 0]);
    for i in 0..14 {
        match panels[i % 2]
            .try_login("nobody@example.com", "guess", "")
            .await
            .status
        {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::TOO_MANY_REQUESTS => limited_on[i % 2] += 1,
            s => panic!("login answered {s}"),
        }
    }
    let refill = started.elapsed().as_secs() / 6 + 1;
    assert!(
        (10..=10 + refill).contains(&refused),
        "{refused} of 14 sign-ins from one IP were tried over two instances (allowance 10 + {refill})"
    );
    assert!(limited_on[0] > 0 && limited_on[1] > 0, "{limited_on:?}");
    assert_eq!(a.counter("kami_redis_fallbacks_total", "").await, 0.0);
}

/// Waits (up to 10 s) until `/metrics` says the instance is (or is not)
/// subscribed to the gate's raises.
async fn raises_heard(kami: &Kami, subscribed: bool) {
    let line = format!("kami_gate_raises_subscribed {}", u8::from(subscribed));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kami.metrics().await.lines().any(|l| l == line) {
        assert!(Instant::now() < deadline, "never saw `{line}` in /metrics");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn unreachable_redis_falls_back() {
    let prefix = Prefix::new();
    let url = format!("redis://:hunter2pw@127.0.0.1:{}", closed_port());
    let kami = spawn_kami_with(
        Backend::Sqlite,
        Options {
            env: with_redis(&url, &prefix, &[("KAMI_RATE_LIMITS", "on")]),
            ..Options::default()
        },
    )
    .await;
    let pid = kami.product("No Redis", json!({})).await;
    let codes = make_codes("NOREDIS", 3);
    kami.import_codes(pid, &codes).await;
    // The database decides alone: exactly the stock is sold.
    for i in 0..3 {
        kami.buy(pid, 1, &format!("n{i}@example.com")).await;
    }
    let (status, v) = order_on(&kami, pid, "n9@example.com").await;
    assert_eq!((status, error_code(&v)), (StatusCode::CONFLICT, "sold_out"));
    assert_eq!(kami.stock3(pid).await, (0, 3, 0));
    // The per-IP limits still hold, in process: a burst of 10 lookups,
    // then one a second.
    let started = Instant::now();
    let mut limited = 0;
    for i in 0..20 {
        if lookup(&kami, &format!("f{i}@example.com"), None).await == StatusCode::TOO_MANY_REQUESTS
        {
            limited += 1;
        }
    }
    let allowance = 10 + started.elapsed().as_secs() + 1;
    assert!(
        limited >= 20u64.saturating_sub(allowance),
        "local limits did not take over: {limited} of 20 limited"
    );
    assert!(limited > 0, "local limits did not take over");
    assert!(
        kami.counter("kami_redis_fallbacks_total", "what=\"gate\"")
            .await
            >= 1.0
    );
    assert!(
        kami.counter("kami_redis_fallbacks_total", "what=\"rate_limit\"")
            .await
            >= 10.0
    );
    assert!(kami.counter("kami_redis_errors_total", "").await >= 1.0);
    let logs = kami.logs();
    assert!(logs.contains("Redis unreachable"), "no log line says so");
    assert!(!logs.contains("hunter2pw"), "the Redis password was logged");
}

/// A private `redis-server` on a port of its own, so it can be stopped.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian: apt-get install redis-server)");
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            port,
            child: Some(child),
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let sent = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn redis_restart() {
    let mut server = OwnRedis::start(closed_port());
    let url = format!("redis://127.0.0.1:{}", server.port);
    let prefix = Prefix::new();
    let kami = Arc::new(
        spawn_kami_with(
            Backend::Sqlite,
            Options {
                env: with_redis(&url, &prefix, &[]),
                ..Options::default()
            },
        )
        .await,
    );
    let pid = kami.product("Redis restart", json!({})).await;
    kami.import_codes(pid, &make_codes("RESTART", 30)).await;
    raises_heard(&kami, true).await;
    // A Redis that stops answering but keeps its connections open (frozen
    // here; a host gone behind a NAT looks the same): only the ping can
    // tell the subscription is dead.
    server.signal("STOP");
    raises_heard(&kami, false).await;
    server.signal("CONT");
    raises_heard(&kami, true).await;
    let (won, _) = race(std::slice::from_ref(&kami), pid, 10, "before").await;
    assert_eq!(won.len(), 10);

    server.stop();
    // The subscription to raises is noticed lost, so no sold-out mark
    // outlives the Redis that made it.
    raises_heard(&kami, false).await;
    let (won, _) = race(std::slice::from_ref(&kami), pid, 10, "during").await;
    assert_eq!(won.len(), 10, "orders failed while Redis was down");
    // The stock shown follows the database while Redis is away. It came
    // from a mirror of the shared counts that stopped moving with Redis:
    // 20 (the count when Redis went) for as long as it was away.
    let shown = || kami.shown_stock(pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while shown().await != json!(10) {
        assert!(Instant::now() < deadline, "the stock shown never became 10");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And stays so, between the breaker's openings too.
    for _ in 0..30 {
        assert_eq!(shown().await, json!(10), "the stock shown went back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        kami.counter("kami_redis_fallbacks_total", "what=\"gate\"")
            .await
            >= 1.0
    );

    // Back, empty (no persistence): the re-sync loads the count again.
    let server = OwnRedis::start(server.port);
    let gate = || -> Option<i64> {
        redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| {
                redis::cmd("GET")
                    .arg(format!("{}gate:{pid}", prefix.0))
                    .query(&mut c)
            })
            .ok()
            .flatten()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while gate() != Some(10) {
        assert!(
            Instant::now() < deadline,
            "the gate was not reloaded: {:?}",
            gate()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    raises_heard(&kami, true).await;
    let (won, sold_out) = race(std::slice::from_ref(&kami), pid, 15, "after").await;
    assert_eq!((won.len(), sold_out), (10, 5));
    assert_eq!(gate(), Some(0));
    assert_eq!(kami.stock3(pid).await, (0, 30, 0));
    assert!(kami.logs().contains("Redis answers again"));
    drop(server);
}

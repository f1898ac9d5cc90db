//! Black-box harness: runs the real `kami` binary on a free port, against a
//! fresh SQLite file or a fresh PostgreSQL database, and talks to it over HTTP.
//!
//! `KAMI_TEST_POSTGRES_URL` names the PostgreSQL server (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test gets its own
//! database `kami_t_<random>`, dropped when the test ends.
//! `KAMI_TEST_VERBOSE=1` echoes the server's output to stderr as it comes.
#![allow(dead_code)]

pub mod forms;
pub mod gateways;

use std::collections::HashSet;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

pub const KAMI: &str = env!("CARGO_BIN_EXE_kami");
pub mod panel;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Runs one async test body once per backend: `<name>_sqlite`, `<name>_postgres`.
// Not every test file races both backends (backup/restore is SQLite's).
#[allow(unused_macros)]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            paste::paste! {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn [<$name _sqlite>]() {
                    $name(crate::common::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn [<$name _postgres>]() {
                    $name(crate::common::Backend::Postgres).await
                }
            }
        )+
    };
}

/// `<test>_<rail>` for every rail (sandbox, EPay and Stripe against the
/// fake gateway: `gateways::Rail`), each on both backends.
#[allow(unused_macros)]
macro_rules! on_every_rail {
    ($($name:ident),+ $(,)?) => {
        $(
            paste::paste! {
                async fn [<$name _sandbox>](backend: Backend) { $name(backend, "sandbox").await }
                async fn [<$name _epay>](backend: Backend) { $name(backend, "epay").await }
                async fn [<$name _stripe>](backend: Backend) { $name(backend, "stripe").await }
                both_backends!([<$name _sandbox>], [<$name _epay>], [<$name _stripe>]);
            }
        )+
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How to stop the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Kill,
    Term,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `KAMI_ORDER_TTL` in seconds; unset by default (the shop's 900, which
    /// the admin panel may change: a configured one fixes it).
    pub order_ttl: Option<u64>,
    /// Written to `<data dir>/kami.toml` and passed as `KAMI_CONFIG`
    /// (e.g. `[channels.*]` sections pointing at a fake gateway).
    pub config_toml: Option<String>,
    /// More `KAMI_*` settings, applied after (over) the defaults above.
    pub env: Vec<(String, String)>,
}

pub struct Kami {
    pub backend: Backend,
    pub port: u16,
    pub base: String,
    pub database_url: String,
    pub secret: String,
    pub api_key: String,
    pub http: reqwest::Client,
    pub options: Options,
    pg: Option<PgDb>,
    child: Mutex<Option<Child>>,
    logs: Arc<Mutex<Vec<u8>>>,
    // Last, so the directory goes after the child and the database.
    data_dir: tempfile::TempDir,
}

struct PgDb {
    admin_url: String,
    name: String,
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn random_token(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

pub fn sign_with(secret: &str, t: i64, body: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    format!("t={t},v1={}", hex::encode(m.finalize().into_bytes()))
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

pub fn pg_admin_url() -> String {
    std::env::var("KAMI_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.to_string())
}

/// The same server URL with another database name.
fn with_database(url: &str, db: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (url, None),
    };
    let scheme_end = main.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match main[scheme_end..].find('/') {
        Some(i) => &main[..scheme_end + i],
        None => main,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

async fn create_pg_database() -> PgDb {
    use sqlx::Connection;
    let admin_url = pg_admin_url();
    let name = format!("kami_t_{}", random_token(12).to_lowercase());
    let mut conn = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {admin_url}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    conn.close().await.ok();
    PgDb { admin_url, name }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.admin_url)
            .arg("-q")
            .arg("-c")
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn pump(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>, echo: bool) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if echo {
                        eprint!("{}", String::from_utf8_lossy(&buf[..n]));
                    }
                    into.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }
        }
    });
}

pub async fn spawn_kami(backend: Backend) -> Kami {
    spawn_kami_with(backend, Options::default()).await
}

pub async fn spawn_kami_with(backend: Backend, options: Options) -> Kami {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let (pg, database_url) = match backend {
        Backend::Sqlite => (
            None,
            format!("sqlite://{}/kami.db", data_dir.path().display()),
        ),
        Backend::Postgres => {
            let db = create_pg_database().await;
            let url = with_database(&db.admin_url, &db.name);
            (Some(db), url)
        }
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let mut kami = Kami {
        backend,
        port: 0,
        base: String::new(),
        database_url,
        secret: format!("sbx_{}", random_token(32)),
        api_key: String::new(),
        http,
        options,
        pg,
        child: Mutex::new(None),
        logs: Arc::new(Mutex::new(Vec::new())),
        data_dir,
    };
    if let Some(toml) = &kami.options.config_toml {
        std::fs::write(kami.config_path(), toml).expect("write kami.toml");
    }
    // A port picked free can be taken before the server binds it: try again.
    let mut last = String::new();
    for _ in 0..3 {
        kami.port = free_port();
        kami.base = format!("http://127.0.0.1:{}", kami.port);
        match kami.start().await {
            Ok(()) => {
                kami.api_key = kami.create_api_key("test");
                return kami;
            }
            Err(e) => last = e,
        }
    }
    panic!(
        "kami did not start: {last}\n--- server output ---\n{}",
        kami.logs_tail(200)
    );
}

impl Kami {
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.data_dir().join("kami.toml")
    }

    pub fn pg_database(&self) -> Option<&str> {
        self.pg.as_ref().map(|p| p.name.as_str())
    }

    pub fn envs(&self) -> Vec<(String, String)> {
        let config = self.options.config_toml.as_ref().map(|_| {
            (
                "KAMI_CONFIG".to_string(),
                self.config_path().display().to_string(),
            )
        });
        let mut env = vec![
            ("KAMI_BIND".into(), format!("127.0.0.1:{}", self.port)),
            (
                "KAMI_DATA_DIR".into(),
                self.data_dir().display().to_string(),
            ),
            ("KAMI_DATABASE_URL".into(), self.database_url.clone()),
            ("KAMI_SANDBOX_SECRET".into(), self.secret.clone()),
            ("KAMI_PUBLIC_URL".into(), self.base.clone()),
            ("KAMI_RATE_LIMITS".into(), "off".into()),
            // Kami's own per-order lines are `debug`: the tests that look for
            // secrets in the log read those too.
            (
                "KAMI_LOG".into(),
                "info,kami=debug,kami_web=debug,kami_store=debug,kami_pay=debug".into(),
            ),
        ];
        env.extend(config);
        if let Some(ttl) = self.options.order_ttl {
            env.push(("KAMI_ORDER_TTL".into(), ttl.to_string()));
        }
        env.extend(self.options.env.iter().cloned());
        env
    }

    /// A `kami` command with this server's environment (and none inherited).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(KAMI);
        for (k, _) in std::env::vars() {
            if k.starts_with("KAMI_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.envs());
        cmd.current_dir(self.data_dir());
        cmd
    }

    /// `kami cards import --product ID FILE`, run to its end (`cli`).
    pub fn cli_import(&self, product_id: i64, file: &std::path::Path) -> std::process::Output {
        let product = product_id.to_string();
        self.cli(&[
            "cards",
            "import",
            "--product",
            &product,
            file.to_str().unwrap(),
        ])
    }

    /// `kami cards import --product ID FILE` started in the background, its
    /// output discarded (to be killed part-way).
    pub fn spawn_cli_import(&self, product_id: i64, file: &std::path::Path) -> std::process::Child {
        self.command()
            .args(["cards", "import", "--product", &product_id.to_string()])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run kami cards import")
    }

    /// Runs a CLI subcommand to completion; its output is also appended to the logs.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run kami");
        let mut logs = self.logs.lock().unwrap();
        logs.extend_from_slice(&out.stdout);
        logs.extend_from_slice(&out.stderr);
        out
    }

    fn create_api_key(&self, name: &str) -> String {
        let out = self.cli(&["api-key", "create", "--name", name]);
        assert!(
            out.status.success(),
            "kami api-key create failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let key = stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .expect("kami api-key create printed nothing")
            .to_string();
        key
    }

    /// The running server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    /// Starts `kami serve` and waits for `/readyz`.
    pub async fn start(&self) -> Result<(), String> {
        let echo = std::env::var("KAMI_TEST_VERBOSE").is_ok_and(|v| !v.is_empty() && v != "0");
        let mut child = self
            .command()
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {KAMI}: {e}"))?;
        pump(child.stdout.take().unwrap(), self.logs.clone(), echo);
        pump(child.stderr.take().unwrap(), self.logs.clone(), echo);
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        loop {
            if let Some(status) = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("kami serve exited early with {status}"));
            }
            if let Ok(r) = probe.get(self.url("/readyz")).send().await {
                if r.status() == StatusCode::OK {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.stop_child(Stop::Kill);
                return Err("/readyz did not answer 200 within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop_child(&self, how: Stop) {
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return;
        };
        if how == Stop::Term {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL (or SIGTERM) the server, without starting it again.
    pub fn stop(&self, how: Stop) {
        self.stop_child(how)
    }

    /// Stops the server and starts it again on the same port, data dir and database.
    pub async fn restart(&self, how: Stop) {
        self.stop_child(how);
        if let Err(e) = self.start().await {
            panic!(
                "kami did not restart: {e}\n--- server output ---\n{}",
                self.logs_tail(200)
            );
        }
    }

    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().unwrap()).into_owned()
    }

    pub fn logs_bytes(&self) -> Vec<u8> {
        self.logs.lock().unwrap().clone()
    }

    pub fn logs_tail(&self, lines: usize) -> String {
        let all = self.logs();
        let v: Vec<&str> = all.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let res = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        res.text().await.expect("metrics body")
    }

    /// The sum of a Prometheus counter's samples whose labels contain `labels`.
    pub async fn counter(&self, name: &str, labels: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn sign(&self, t: i64, body: &[u8]) -> String {
        sign_with(&self.secret, t, body)
    }

    // ---- raw HTTP -------------------------------------------------------

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let res = req.send().await.expect("HTTP request");
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(path)).bearer_auth(&self.api_key))
            .await
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(&self.api_key)
                .json(body),
        )
        .await
    }

    pub async fn admin_patch(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .patch(self.url(path))
                .bearer_auth(&self.api_key)
                .json(body),
        )
        .await
    }

    // ---- catalogue and stock --------------------------------------------

    /// Creates a product; only `name`, `price`, `currency` are needed.
    pub async fn create_product(&self, body: Value) -> i64 {
        let (status, v) = self.admin_post("/api/v1/admin/products", &body).await;
        assert_eq!(status, StatusCode::CREATED, "create product {body}: {v}");
        v["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("product id is not an integer: {v}"))
    }

    /// A visible CNY product priced 990 with the given extra fields.
    pub async fn product(&self, name: &str, extra: Value) -> i64 {
        let mut body = json!({"name": name, "price": 990, "currency": "CNY"});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        self.create_product(body).await
    }

    pub async fn import_raw(
        &self,
        product_id: i64,
        body: impl Into<Vec<u8>>,
    ) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(self.url(&format!("/api/v1/admin/products/{product_id}/cards")))
                .bearer_auth(&self.api_key)
                .header("content-type", "text/plain")
                .body(body.into()),
        )
        .await
    }

    /// Imports codes; asserts 200 and returns the report.
    pub async fn import(&self, product_id: i64, body: impl Into<Vec<u8>>) -> Value {
        let (status, v) = self.import_raw(product_id, body).await;
        assert_eq!(status, StatusCode::OK, "import: {v}");
        v
    }

    /// Imports these codes, asserting every one was taken.
    pub async fn import_codes(&self, product_id: i64, codes: &[String]) {
        let v = self.import(product_id, codes.join("\n")).await;
        assert_eq!(v["imported"], json!(codes.len()), "import report: {v}");
    }

    /// The `stock` the public API shows for a product (the gate's count).
    pub async fn shown_stock(&self, product_id: i64) -> Value {
        let v: Value = self
            .http
            .get(self.url(&format!("/api/v1/products/{product_id}")))
            .send()
            .await
            .expect("product request")
            .json()
            .await
            .expect("product JSON");
        v["stock"].clone()
    }

    /// `{"available", "reserved", "sold"}`
    pub async fn stock(&self, product_id: i64) -> Value {
        let (status, v) = self
            .admin_get(&format!("/api/v1/admin/products/{product_id}/stock"))
            .await;
        assert_eq!(status, StatusCode::OK, "stock: {v}");
        v
    }

    /// (available, reserved, sold)
    pub async fn stock3(&self, product_id: i64) -> (i64, i64, i64) {
        let v = self.stock(product_id).await;
        (
            v["available"]
                .as_i64()
                .unwrap_or_else(|| panic!("stock: {v}")),
            v["reserved"]
                .as_i64()
                .unwrap_or_else(|| panic!("stock: {v}")),
            v["sold"].as_i64().unwrap_or_else(|| panic!("stock: {v}")),
        )
    }

    // ---- orders -----------------------------------------------------------

    pub async fn order(&self, body: Value) -> (StatusCode, Value) {
        self.send(self.http.post(self.url("/api/v1/orders")).json(&body))
            .await
    }

    pub async fn order_idem(&self, body: &Value, key: &str) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(self.url("/api/v1/orders"))
                .header("Idempotency-Key", key)
                .json(body),
        )
        .await
    }

    /// Places a sandbox order; asserts 201 and returns the answer.
    pub async fn buy(&self, product_id: i64, quantity: i64, email: &str) -> Value {
        self.buy_on("sandbox", product_id, quantity, email).await
    }

    /// Places an order to be paid through `channel`; asserts 201.
    pub async fn buy_on(
        &self,
        channel: &str,
        product_id: i64,
        quantity: i64,
        email: &str,
    ) -> Value {
        let (status, v) = self
            .order(json!({"product_id": product_id, "quantity": quantity,
                          "email": email, "channel": channel}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "order on {channel}: {v}");
        v
    }

    /// `POST /api/v1/orders/lookup`; asserts 200 and returns the orders found.
    pub async fn lookup(&self, email: &str, password: &str) -> Vec<Value> {
        let (s, v) = self
            .send(
                self.http
                    .post(self.url("/api/v1/orders/lookup"))
                    .json(&json!({"email": email, "query_password": password})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "lookup: {v}");
        assert!(v["has_more"].is_boolean(), "{v}");
        v["data"]
            .as_array()
            .unwrap_or_else(|| panic!("lookup: {v}"))
            .clone()
    }

    pub async fn get_order(&self, order_no: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .get(self.url(&format!("/api/v1/orders/{order_no}")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    /// The buyer's view of an order created by `buy` / `order`.
    pub async fn view(&self, created: &Value) -> Value {
        let no = created["order_no"].as_str().expect("order_no");
        let token = created["access_token"].as_str().expect("access_token");
        let (status, v) = self.get_order(no, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "GET order {no}: {v}");
        v
    }

    /// Polls the buyer's view until `status` (or panics after `timeout`).
    pub async fn wait_status(&self, created: &Value, status: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.view(created).await;
            if v["status"] == json!(status) {
                return v;
            }
            if Instant::now() > deadline {
                panic!("order never reached {status} within {timeout:?}; last seen: {v}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn admin_order(&self, order_no: &str) -> Value {
        let (status, v) = self
            .admin_get(&format!("/api/v1/admin/orders/{order_no}"))
            .await;
        assert_eq!(status, StatusCode::OK, "admin order {order_no}: {v}");
        v
    }

    /// Events recorded under this order number (it need not exist).
    pub async fn events(&self, order_no: &str) -> Vec<Value> {
        let (status, v) = self
            .admin_get(&format!("/api/v1/admin/events?order_no={order_no}"))
            .await;
        assert_eq!(status, StatusCode::OK, "events {order_no}: {v}");
        v["data"]
            .as_array()
            .unwrap_or_else(|| panic!("events: {v}"))
            .clone()
    }

    pub async fn count_events(&self, order_no: &str, kind: &str) -> usize {
        self.events(order_no)
            .await
            .iter()
            .filter(|e| e["kind"] == json!(kind))
            .count()
    }

    // ---- payment notifications -----------------------------------------

    pub async fn try_notify(
        &self,
        body: Vec<u8>,
        header: Option<String>,
    ) -> Result<(StatusCode, String), reqwest::Error> {
        let mut req = self
            .http
            .post(self.url("/pay/sandbox/notify"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(h) = header {
            req = req.header("Kami-Signature", h);
        }
        let res = req.send().await?;
        let status = res.status();
        Ok((status, res.text().await?))
    }

    pub async fn notify(&self, body: Vec<u8>, header: Option<String>) -> (StatusCode, String) {
        self.try_notify(body, header).await.expect("notify request")
    }

    /// The body of a paid notification for an order as `POST /api/v1/orders` answered it.
    pub fn paid_body(created: &Value, trade_no: &str) -> Vec<u8> {
        json!({
            "order_no": created["order_no"],
            "trade_no": trade_no,
            "amount": created["amount"],
            "currency": created["currency"],
            "status": "paid",
        })
        .to_string()
        .into_bytes()
    }

    /// Sends a correctly signed, paid notification for the order.
    pub async fn pay(&self, created: &Value) -> (StatusCode, String) {
        let body = Self::paid_body(created, &format!("T{}", random_token(16)));
        let sig = self.sign(now_secs(), &body);
        self.notify(body, Some(sig)).await
    }

    /// Pays and asserts the gateway got `200 {"received": true}`.
    pub async fn pay_ok(&self, created: &Value) {
        let (status, body) = self.pay(created).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "notify for {}: {body}",
            created["order_no"]
        );
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(v, json!({"received": true}), "notify answer");
    }

    /// Codes of a delivered order (buyer's view).
    pub async fn codes(&self, created: &Value) -> Vec<String> {
        let v = self.view(created).await;
        assert_eq!(v["status"], json!("delivered"), "order not delivered: {v}");
        cards_of(&v)
    }
}

/// The `cards` array of an order view, as strings.
pub fn cards_of(v: &Value) -> Vec<String> {
    v["cards"]
        .as_array()
        .unwrap_or_else(|| panic!("no cards in {v}"))
        .iter()
        .map(|c| {
            c.as_str()
                .unwrap_or_else(|| panic!("card is not a string: {c}"))
                .to_string()
        })
        .collect()
}

/// The `id`s of a list's `data` (`{"data": [...], "has_more": …}`), in order.
pub fn ids_of(list: &Value) -> Vec<i64> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {list}"))
        .iter()
        .map(|item| {
            item["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("no id in {item}"))
        })
        .collect()
}

/// `count` distinct codes with a recognisable prefix.
pub fn make_codes(prefix: &str, count: usize) -> Vec<String> {
    let run = random_token(8);
    (0..count)
        .map(|i| format!("{prefix}-{run}-{i:05}"))
        .collect()
}

pub fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// Asserts every code is distinct and comes from `imported`.
pub fn assert_distinct_from(delivered: &[String], imported: &[String]) {
    let set: HashSet<&String> = imported.iter().collect();
    let mut seen = HashSet::new();
    for c in delivered {
        assert!(set.contains(c), "delivered code {c:?} was never imported");
        assert!(seen.insert(c), "code {c:?} delivered twice");
    }
}

impl Drop for Kami {
    fn drop(&mut self) {
        self.stop_child(Stop::Kill);
        if std::thread::panicking() {
            eprintln!(
                "--- kami output (last 150 lines, {:?}) ---\n{}\n--- end of kami output ---",
                self.backend,
                self.logs_tail(150)
            );
        }
    }
}

/// All files under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

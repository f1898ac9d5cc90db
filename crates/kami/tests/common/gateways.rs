//! The fake EPay / epusdt / Stripe gateway (tests/gateways/fake_gateway.py,
//! built on the gateways' own Python libraries) and the buyer's and the
//! gateway's side of a real-channel payment against Kami.
//!
//! `KAMI_TEST_PYTHON` names a Python with the gateway libraries installed;
//! without it `target/pyenv` is made and used (`python()`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{now_secs, random_token, spawn_kami_with, Backend, Kami, Options};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The Python that runs the fake gateways: `KAMI_TEST_PYTHON`, or
/// `target/pyenv`, created and filled from the pinned requirement files on
/// first use (and refilled when they change), so `cargo test --workspace`
/// needs nothing but python3. A lock file serialises test processes.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("KAMI_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    static READY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    READY.get_or_init(provision_pyenv).clone()
}

const REQUIREMENTS: [&str; 2] = [
    "tests/gateways/requirements.txt",
    "tests/gateways_rsa/requirements.txt",
];

fn provision_pyenv() -> PathBuf {
    let root = PathBuf::from(ROOT);
    let venv = root.join("target/pyenv");
    let python = venv.join("bin/python");
    let wanted: String = REQUIREMENTS
        .iter()
        .map(|r| std::fs::read_to_string(root.join(r)).expect("requirements file"))
        .collect();
    let marker = venv.join(".kami-requirements");
    std::fs::create_dir_all(root.join("target")).unwrap();
    let lock = std::fs::File::create(root.join("target/pyenv.lock")).unwrap();
    lock.lock().expect("lock target/pyenv.lock");
    if python.exists() && std::fs::read_to_string(&marker).ok().as_deref() == Some(&wanted) {
        return python;
    }
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed; the payment channel tests need python3 with venv \
             (Debian: apt-get install python3-venv) and access to PyPI.\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if !python.exists() {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv target/pyenv",
        );
    }
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "-q", "--disable-pip-version-check"]);
    for r in REQUIREMENTS {
        pip.arg("-r").arg(root.join(r));
    }
    run(&mut pip, "pip install of the gateway libraries");
    std::fs::write(&marker, wanted).unwrap();
    python
}

/// A running fake gateway, with the credentials Kami is configured with.
pub struct FakeGateway {
    pub base: String,
    pub epay_pid: String,
    pub epay_key: String,
    pub epusdt_token: String,
    pub stripe_secret_key: String,
    pub stripe_webhook_secret: String,
    http: reqwest::Client,
    child: Child,
}

/// A notification as a gateway would deliver it to Kami.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// The sandbox: a JSON body, signed afresh at every delivery.
    Sandbox(Vec<u8>),
    /// EPay: the signed parameters appended to the notify URL.
    Query(String),
    /// epusdt: a signed JSON body.
    Json(String),
    /// Stripe: the event and its `Stripe-Signature` header.
    Stripe { payload: String, header: String },
}

impl FakeGateway {
    pub fn start() -> Self {
        let (epay_pid, epay_key) = ("1001".to_string(), random_token(32));
        let epusdt_token = random_token(24);
        let stripe_secret_key = format!("sk_test_{}", random_token(24));
        let stripe_webhook_secret = format!("whsec_{}", random_token(32));
        let python = python();
        let mut child = Command::new(&python)
            .arg(PathBuf::from(ROOT).join("tests/gateways/fake_gateway.py"))
            .args(["--epay-pid", &epay_pid, "--epay-key", &epay_key])
            .args(["--epusdt-token", &epusdt_token])
            .args(["--stripe-secret-key", &stripe_secret_key])
            .args(["--stripe-webhook-secret", &stripe_webhook_secret])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the fake gateway's READY line");
        let port: u16 = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "the fake gateway did not start (said {line:?}); are the packages of \
                     tests/gateways/requirements.txt installed for {}?",
                    python.display()
                )
            });
        Self {
            base: format!("http://127.0.0.1:{port}"),
            epay_pid,
            epay_key,
            epusdt_token,
            stripe_secret_key,
            stripe_webhook_secret,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            child,
        }
    }

    /// The kami.toml that points every channel at this gateway.
    pub fn kami_toml(&self) -> String {
        format!(
            "reconcile_interval = 1\nchannel_cooldown = 3\n\
             [channels.epay]\ngateway = \"{b}/epay/\"\npid = \"{}\"\nkey = \"{}\"\n\
             [channels.epusdt]\ngateway = \"{b}/epusdt/\"\ntoken = \"{}\"\n\
             [channels.stripe]\ngateway = \"{b}/stripe\"\nsecret_key = \"{}\"\nwebhook_secret = \"{}\"\n",
            self.epay_pid,
            self.epay_key,
            self.epusdt_token,
            self.stripe_secret_key,
            self.stripe_webhook_secret,
            b = self.base,
        )
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("fake gateway request");
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Makes the channel's outbound endpoints answer 500 (or stop doing so).
    pub async fn set_failing(&self, channel: &str, fail: bool) {
        let (s, v) = self
            .post("/_control/fail", json!({"channel": channel, "fail": fail}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    /// The buyer paid at the gateway (no notification is sent).
    pub async fn mark_paid(&self, channel: &str, order_no: &str) {
        let (s, v) = self
            .post(
                "/_control/paid",
                json!({"channel": channel, "order_no": order_no}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    /// What Kami asked the gateway for this order (verified on arrival).
    pub async fn recorded(&self, channel: &str, order_no: &str) -> Value {
        let (s, v) = self
            .post(
                "/_control/order",
                json!({"channel": channel, "order_no": order_no}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "gateway never saw {order_no}: {v}");
        v
    }

    /// A notification for an order Kami started here, signed by the
    /// gateway's library. `extra` overrides fields (`override`) or the
    /// signing secret (`key`, `token`, `secret`, `age_offset`).
    pub async fn notification(&self, channel: &str, order_no: &str, extra: Value) -> Delivery {
        let mut body = json!({"order_no": order_no});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        let (s, v) = self.post(&format!("/_notify/{channel}"), body).await;
        assert_eq!(s, StatusCode::OK, "fake gateway could not sign: {v}");
        match channel {
            "epay" => Delivery::Query(v["query"].as_str().unwrap().to_string()),
            "epusdt" => Delivery::Json(v["body"].as_str().unwrap().to_string()),
            _ => Delivery::Stripe {
                payload: v["payload"].as_str().unwrap().to_string(),
                header: v["header"].as_str().unwrap().to_string(),
            },
        }
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The success reply each gateway expects.
pub fn success_reply(channel: &str) -> &'static str {
    match channel {
        "epay" => "success",
        "epusdt" => "ok",
        _ => r#"{"received":true}"#,
    }
}

/// Kami with every real channel pointed at a fresh fake gateway.
pub async fn spawn_with_gateways(backend: Backend) -> (Kami, FakeGateway) {
    spawn_with_gateways_and(backend, Options::default()).await
}

async fn spawn_with_gateways_and(backend: Backend, options: Options) -> (Kami, FakeGateway) {
    let gw = FakeGateway::start();
    let kami = spawn_kami_with(
        backend,
        Options {
            config_toml: Some(gw.kami_toml()),
            ..options
        },
    )
    .await;
    (kami, gw)
}

/// How an invariant test pays: through the sandbox, or through a real
/// channel and its fake gateway. The same test runs on every rail.
pub struct Rail {
    pub channel: &'static str,
    gateway: Option<FakeGateway>,
}

impl Rail {
    pub async fn spawn(backend: Backend, channel: &'static str) -> (Kami, Rail) {
        Self::spawn_with(backend, channel, Options::default()).await
    }

    pub async fn spawn_with(
        backend: Backend,
        channel: &'static str,
        options: Options,
    ) -> (Kami, Rail) {
        if channel == "sandbox" {
            return (
                spawn_kami_with(backend, options).await,
                Rail {
                    channel,
                    gateway: None,
                },
            );
        }
        let (kami, gw) = spawn_with_gateways_and(backend, options).await;
        (
            kami,
            Rail {
                channel,
                gateway: Some(gw),
            },
        )
    }

    /// A genuine notification that the order was paid, with a fresh trade
    /// number; on a real channel the buyer first goes through the pay page.
    pub async fn paid_notification(&self, kami: &Kami, created: &Value) -> Delivery {
        let Some(gw) = &self.gateway else {
            return Delivery::Sandbox(Kami::paid_body(created, &format!("T{}", random_token(16))));
        };
        kami.start_payment(gw, self.channel, created).await;
        let no = created["order_no"].as_str().expect("order_no");
        gw.notification(self.channel, no, json!({})).await
    }

    /// Delivers a paid notification and asserts the gateway's success reply.
    pub async fn pay_ok(&self, kami: &Kami, created: &Value) {
        let d = self.paid_notification(kami, created).await;
        self.deliver_ok(kami, &d).await;
    }

    pub async fn deliver_ok(&self, kami: &Kami, d: &Delivery) {
        let (status, text) = kami.deliver(self.channel, d).await;
        assert_eq!(status, StatusCode::OK, "notify on {}: {text}", self.channel);
        assert_eq!(text, success_reply(self.channel), "notify answer");
    }
}

impl Kami {
    /// Delivers a notification to `/pay/{channel}/notify` as the gateway does.
    pub async fn deliver(&self, channel: &str, d: &Delivery) -> (StatusCode, String) {
        self.try_deliver(channel, d).await.expect("notify request")
    }

    /// As `deliver`, for a server that may be down (killed mid-flight).
    pub async fn try_deliver(
        &self,
        channel: &str,
        d: &Delivery,
    ) -> Result<(StatusCode, String), reqwest::Error> {
        let url = self.url(&format!("/pay/{channel}/notify"));
        let req = match d {
            Delivery::Sandbox(body) => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .header("Kami-Signature", self.sign(now_secs(), body))
                .body(body.clone()),
            Delivery::Query(q) => self.http.get(format!("{url}?{q}")),
            Delivery::Json(b) => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(b.clone()),
            Delivery::Stripe { payload, header } => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .header("Stripe-Signature", header)
                .body(payload.clone()),
        };
        let res = req.send().await?;
        let status = res.status();
        Ok((status, res.text().await?))
    }

    /// The buyer opens the order's pay URL and follows Kami's redirects up
    /// to the gateway: `Ok(gateway URL)`, or the page Kami showed instead.
    pub async fn open_pay_page(&self, created: &Value) -> Result<String, (StatusCode, String)> {
        let no_redirects = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let pay_url = created["payment"]["pay_url"].as_str().expect("pay_url");
        let res = no_redirects.get(pay_url).send().await.expect("pay page");
        if res.status().is_redirection() {
            assert!(
                res.headers().contains_key("set-cookie"),
                "the token is kept in a cookie for the order's pages"
            );
            return Ok(res.headers()["location"].to_str().unwrap().to_string());
        }
        let status = res.status();
        Err((status, res.text().await.unwrap_or_default()))
    }

    /// Opens the pay page and, for EPay, lets the buyer's browser land on
    /// the gateway's submit.php, which checks Kami's signature.
    pub async fn start_payment(&self, gw: &FakeGateway, channel: &str, created: &Value) -> String {
        let url = self
            .open_pay_page(created)
            .await
            .unwrap_or_else(|(s, b)| panic!("pay page refused ({s}): {b}"));
        assert!(url.starts_with(&gw.base), "sent to the fake gateway: {url}");
        if channel == "epay" {
            let res = self.http.get(&url).send().await.expect("submit.php");
            let status = res.status();
            let v: Value = res.json().await.unwrap_or(Value::Null);
            assert_eq!(
                status,
                StatusCode::OK,
                "submit.php refused Kami's request: {v}"
            );
            assert_eq!(v["verified"], json!(true), "{v}");
        }
        url
    }
}

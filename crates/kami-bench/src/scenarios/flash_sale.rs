//! `kami-bench flash-sale`: a drop, phase by phase, with one client.
//!
//! 1. the ceiling: closed-loop `GET /healthz`;
//! 2. product reads (`GET /api/v1/products/{id}` and the list);
//! 3. the sale: C connections post orders until every code is reserved, then
//!    `--sold-out-seconds` of buyers arriving after the drop is gone;
//! 4. the notification storm: every order paid, each notification sent twice
//!    (adjacent requests, so the twins race);
//! 5. the ceiling again; ratios are to the faster of the two readings;
//!
//! then checks through the API that nothing was oversold, duplicated or left
//! undelivered (exit 1 if not), and prints the server's peak RSS.
//!
//! The drop and the storm run closed-loop: a connection sends its next request
//! when it has the last answer, so their latency is the queue the connections
//! make. `--order-rate` and `--notify-rate` pace them instead (open loop): the
//! requests fall due at a fixed rate whatever the answers, and each latency
//! counts from when its request was due, as buyers and gateways see it.
//!
//! `--redis URL` runs Kami with `KAMI_REDIS_URL` (the shared stock gate);
//! `--url URL --api-key KEY --sandbox-secret SECRET` loads a Kami that is
//! already running (several instances behind a balancer, say) instead of
//! starting one: it creates its own product, and needs rate limits off.

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use clap::Args;
use rand::Rng;
use serde_json::{json, Value};

use super::core::{is_our_code, make_code, parse_order, sign, Order, PRICE};
use crate::admin::{id_text, Admin};
use crate::load::{self, error_label, Latency, LoadResult, LoadSpec, Outcome, Req, Stop};
use crate::report::{self, bytes, int, print_rows, rate, us, CpuMeter, Machine};
use crate::server::{Server, ServerOpts};
use crate::CommonArgs;

#[derive(Args, Clone, Debug)]
pub struct FlashArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Codes in the drop.
    #[arg(long, default_value_t = 100_000)]
    pub codes: u64,

    /// Measured seconds of the healthz ceiling and of the product reads.
    #[arg(long, default_value_t = 5.0)]
    pub read_seconds: f64,

    /// Seconds of order traffic after the drop sold out.
    #[arg(long, default_value_t = 10.0)]
    pub sold_out_seconds: f64,

    /// Uncounted warm-up before each timed load.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_seconds: f64,

    /// Orders in the sale [default: --codes, i.e. until sold out]. Fewer leave stock behind
    /// (to measure with a big stock, e.g. RSS and p99 with a million codes) and skip the
    /// sold-out phase.
    #[arg(long)]
    pub sale_orders: Option<u64>,

    /// After the import, refresh PostgreSQL's statistics (`ANALYZE`), as autovacuum does on a
    /// server after a big import, so the sale runs on plans made with the stock in view.
    #[arg(long)]
    pub analyze: bool,

    /// Run Kami with this `KAMI_REDIS_URL` (stock gate in Redis, under a prefix of the run's own).
    #[arg(long, value_name = "URL", conflicts_with = "url")]
    pub redis: Option<String>,

    /// Load an already-running Kami at this base URL (`http://host:port`) instead of starting
    /// one; needs `--api-key` and `--sandbox-secret`, and the server's rate limits off.
    #[arg(long, value_name = "URL", requires_all = ["api_key", "sandbox_secret"])]
    pub url: Option<String>,

    /// An admin API key of the running Kami (`--url`).
    #[arg(long, env = "KAMI_BENCH_API_KEY")]
    pub api_key: Option<String>,

    /// The running Kami's `KAMI_SANDBOX_SECRET` (`--url`), to sign the notifications.
    #[arg(long, env = "KAMI_BENCH_SANDBOX_SECRET")]
    pub sandbox_secret: Option<String>,

    /// Pace the drop: orders sent on a schedule at this rate whatever the answers (open
    /// loop, on the same connections; each latency counts from when the order was due),
    /// instead of each connection sending its next order when it has the last answer.
    /// Per second (`12000`), or a multiple of the run's first ceiling reading (`0.14x`).
    #[arg(long, value_name = "RATE")]
    pub order_rate: Option<Pace>,

    /// Pace the notification storm the same way: paid orders per second, two
    /// notifications each (`10000`, or `0.116x` of the first ceiling reading).
    #[arg(long, value_name = "RATE")]
    pub notify_rate: Option<Pace>,
}

/// An open-loop rate: per second, or a multiple of the ceiling measured in the same run
/// (the machine is shared; a target written as a ratio holds on a slow day and a fast one).
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    PerSecond(f64),
    OfCeiling(f64),
}

impl std::str::FromStr for Pace {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (number, of_ceiling) = match s.strip_suffix('x') {
            Some(n) => (n, true),
            None => (s, false),
        };
        match number.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(if of_ceiling {
                Pace::OfCeiling(v)
            } else {
                Pace::PerSecond(v)
            }),
            _ => Err(format!(
                "{s:?}: want a rate per second (12000) or a multiple of the ceiling (0.14x)"
            )),
        }
    }
}

impl Pace {
    /// Per second, given the ceiling's rate.
    fn per_second(self, ceiling: f64) -> f64 {
        match self {
            Pace::PerSecond(r) => r,
            Pace::OfCeiling(x) => x * ceiling,
        }
    }
}

/// A phase's name, with its pace when it has one.
fn paced(name: &str, rate: Option<f64>) -> String {
    match rate {
        Some(r) => format!("{name} (paced at {}/s)", int(r.round() as u64)),
        None => name.to_string(),
    }
}

/// What a run loads: a server it started, or one given by `--url`.
struct Target {
    label: String,
    addr: SocketAddr,
    base_url: String,
    sandbox_secret: String,
    api_key: Option<String>,
    server: Option<Server>,
}

impl Target {
    fn started(server: Server) -> Self {
        Self {
            label: server.backend.to_string(),
            addr: server.addr,
            base_url: server.base_url.clone(),
            sandbox_secret: server.sandbox_secret.clone(),
            api_key: None,
            server: Some(server),
        }
    }

    fn running(args: &FlashArgs, url: &str) -> Result<Self> {
        let base_url = url.trim_end_matches('/').to_string();
        let authority = base_url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--url must be http://host:port, got {url}"))?;
        let addr = authority
            .to_socket_addrs()
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .ok_or_else(|| anyhow!("{authority} resolves to nothing"))?;
        Ok(Self {
            label: base_url.clone(),
            addr,
            base_url,
            sandbox_secret: args.sandbox_secret.clone().unwrap_or_default(),
            api_key: args.api_key.clone(),
            server: None,
        })
    }

    /// CPU use from now on, of the server when this program started it.
    fn meter(&self) -> CpuMeter {
        let meter = CpuMeter::start(self.server.as_ref().and_then(Server::pid));
        match &self.server {
            Some(s) if s.backend == crate::server::Backend::Postgres => meter.with_postgres(),
            _ => meter,
        }
    }

    async fn api_key(&self) -> Result<String> {
        match (&self.api_key, &self.server) {
            (Some(k), _) => Ok(k.clone()),
            (None, Some(server)) => server.create_api_key("flash").await,
            (None, None) => Err(anyhow!("--api-key is needed with --url")),
        }
    }
}

const PREFIX: &str = "FLASH";
const IMPORT_CHUNK: u64 = 200_000;

/// One phase's figures.
struct Phase {
    name: String,
    ok: u64,
    secs: f64,
    latency: Latency,
    errors: BTreeMap<String, u64>,
    /// CPU µs per request sent (warm-up included) of the server and of the
    /// load generator: steadier than a rate on a shared machine, since
    /// another process's load slows a request without making it cost more.
    cpu_us: (Option<f64>, Option<f64>),
    /// The same of PostgreSQL's processes, when the server runs on one here.
    database_us: Option<f64>,
    /// The server's bytes read from storage during the phase.
    disk_read: Option<u64>,
    /// PostgreSQL's, when the server runs on one here.
    database_read: Option<u64>,
}

impl Phase {
    fn of<T>(name: impl Into<String>, r: &LoadResult<T>, meter: &CpuMeter) -> Self {
        let (server, client) = meter.used();
        let per_request =
            |secs: Option<f64>| secs.filter(|_| r.sent > 0).map(|s| s * 1e6 / r.sent as f64);
        Phase {
            name: name.into(),
            ok: r.ok,
            secs: r.elapsed.as_secs_f64(),
            latency: Latency::of(&r.latency),
            errors: r.errors.clone(),
            cpu_us: (per_request(server), per_request(client)),
            database_us: per_request(meter.database_used()),
            disk_read: meter.disk_read(),
            database_read: meter.database_read(),
        }
    }

    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ok as f64 / self.secs
        } else {
            0.0
        }
    }

    /// The phase's figures, its rate as a ratio to the ceiling's, and its
    /// p99 as a multiple of the ceiling's p99: in a closed loop even
    /// `/healthz` queues behind every other connection, so the ceiling's
    /// p99 is the least any phase can show on this machine at this moment.
    fn line(&self, ceiling: Option<&Phase>) -> String {
        let ratio = match ceiling.map(Phase::rate) {
            Some(c) if c > 0.0 => format!("{:.3}× ceiling", self.rate() / c),
            _ => "-".into(),
        };
        let tail = match ceiling.map(|c| c.latency.p99) {
            Some(c) if c > 0 => format!(
                "; p99 {:.2}× the ceiling's",
                self.latency.p99 as f64 / c as f64
            ),
            _ => String::new(),
        };
        let errors = if self.errors.is_empty() {
            "no errors".to_string()
        } else {
            format!("{:?}", self.errors)
        };
        let cpu = match self.cpu_us {
            (Some(server), Some(client)) => {
                format!("\nCPU per request: server {server:.1} µs, load generator {client:.1} µs")
            }
            (None, Some(client)) => format!("\nCPU per request: load generator {client:.1} µs"),
            _ => String::new(),
        };
        let cpu = match self.database_us {
            Some(db) if !cpu.is_empty() => format!("{cpu}, PostgreSQL {db:.1} µs"),
            _ => cpu,
        };
        // Reads from storage stall whoever waits on them; a warm phase has none.
        let cpu = match (self.disk_read, self.database_read) {
            (Some(b), Some(db)) if !cpu.is_empty() => format!(
                "{cpu}; read from disk: server {}, PostgreSQL {}",
                bytes(b),
                bytes(db)
            ),
            (Some(b), None) if !cpu.is_empty() => {
                format!("{cpu}; server read {} from disk", bytes(b))
            }
            _ => cpu,
        };
        format!(
            "{}/s  {ratio}  p50 {}  p99 {}  p99.9 {}\n({} ok in {:.2} s; {errors}{tail}){cpu}",
            rate(self.rate()),
            us(self.latency.p50),
            us(self.latency.p99),
            us(self.latency.p999),
            int(self.ok),
            self.secs,
        )
    }
}

pub async fn run(args: FlashArgs) -> Result<bool> {
    let machine = Machine::detect();
    let kami = args.common.kami_path();
    let mut extra_env = Vec::new();
    if let Some(redis) = &args.redis {
        let tag: u32 = rand::thread_rng().gen();
        extra_env.push(("KAMI_REDIS_URL".to_owned(), redis.clone()));
        extra_env.push((
            "KAMI_REDIS_PREFIX".to_owned(),
            format!("kami-bench-{tag:08x}:"),
        ));
    }
    let opts = ServerOpts {
        kami: kami.clone(),
        postgres_url: args.common.postgres_url.clone(),
        keep: args.common.keep,
        extra_env,
    };
    println!("kami-bench flash-sale: {}", machine.describe());
    println!("command: {}", report::command_line());
    let mut all_ok = true;
    let runs: Vec<Option<crate::server::Backend>> = match &args.url {
        Some(_) => vec![None],
        None => args
            .common
            .backend
            .backends()
            .into_iter()
            .map(Some)
            .collect(),
    };
    for backend in runs {
        let load_start = report::loadavg();
        let target = match (backend, &args.url) {
            (Some(backend), _) => Target::started(Server::start(backend, &opts).await?),
            (None, Some(url)) => Target::running(&args, url)?,
            (None, None) => unreachable!("a run has a backend or a URL"),
        };
        let outcome = sale(&args, &target).await;
        let rss = target.server.as_ref().and_then(|s| s.peak_rss().ok());
        let redis = if args.redis.is_some() {
            " with Redis"
        } else {
            ""
        };
        println!("\n== flash-sale on {}{redis} ==", target.label);
        println!(
            "  load average at start {:?}, at end {:?}",
            load_start,
            report::loadavg()
        );
        match outcome {
            Ok((import, phases, failures)) => {
                let ceiling = best_ceiling(&phases);
                let mut rows = vec![(
                    "import (admin API)".to_string(),
                    format!(
                        "{} codes in {:.1} s, {}/s",
                        int(args.codes),
                        import.as_secs_f64(),
                        int((args.codes as f64 / import.as_secs_f64().max(1e-9)) as u64)
                    ),
                )];
                rows.extend(phases.iter().map(|p| (p.name.to_string(), p.line(ceiling))));
                rows.push(("peak RSS".into(), rss.map_or("-".into(), bytes)));
                rows.push((
                    "verification".into(),
                    if failures.is_empty() {
                        "no oversell, no duplicate, every order delivered once".into()
                    } else {
                        failures.join("\n")
                    },
                ));
                print_rows(&rows);
                all_ok &= failures.is_empty();
            }
            Err(e) => {
                let tail = target
                    .server
                    .as_ref()
                    .map(|s| s.log_tail(20))
                    .unwrap_or_default();
                println!("  failed: {e:#}\n{tail}");
                all_ok = false;
            }
        }
        if let Some(server) = target.server {
            server.shutdown().await?;
        }
    }
    Ok(all_ok)
}

fn spec(server: &Target, connections: usize, stop: Stop) -> LoadSpec {
    LoadSpec {
        addr: server.addr,
        connections: connections.max(1),
        stop,
        rate: None,
    }
}

fn timed(args: &FlashArgs, secs: f64) -> Stop {
    Stop::Duration {
        warmup: Duration::from_secs_f64(args.warmup_seconds),
        measure: Duration::from_secs_f64(secs),
    }
}

fn ok_if(want: u16) -> impl Fn(u16, &Bytes) -> Outcome<()> {
    move |status, body| {
        if status == want {
            Outcome::Ok(None)
        } else {
            Outcome::Err(error_label(status, body))
        }
    }
}

async fn sale(args: &FlashArgs, server: &Target) -> Result<(Duration, Vec<Phase>, Vec<String>)> {
    let b = &server.label;
    let conns = args.common.connections;
    let key = server.api_key().await?;
    let admin = Admin::new(&server.base_url, &key)?;
    let product = admin
        .create_product(
            &json!({"name": "drop", "price": PRICE, "currency": "CNY", "max_quantity": 1}),
        )
        .await?;
    let salt: u64 = rand::thread_rng().gen();
    eprintln!("[{b}] importing {} codes", int(args.codes));
    let import_started = Instant::now();
    let mut i = 0;
    while i < args.codes {
        let end = (i + IMPORT_CHUNK).min(args.codes);
        let body: String = (i..end)
            .map(|n| make_code(PREFIX, salt, n) + "\n")
            .collect();
        admin.import(&product, body).await?;
        i = end;
    }
    let import = import_started.elapsed();
    if args.analyze {
        match &server.server {
            Some(s) if s.backend == crate::server::Backend::Postgres => {
                eprintln!("[{b}] ANALYZE");
                crate::server::psql(&s.database_url, "ANALYZE")?;
            }
            _ => eprintln!("[{b}] --analyze applies to a PostgreSQL Kami started here; skipped"),
        }
    }
    let mut phases = Vec::new();

    eprintln!("[{b}] ceiling: GET /healthz");
    phases.push(ceiling(args, server, CEILING).await?);

    eprintln!("[{b}] product reads");
    let path = format!("/api/v1/products/{}", id_text(&product));
    let meter = server.meter();
    let r = load::run(
        &spec(server, conns, timed(args, args.read_seconds)),
        move |n| {
            if n % 2 == 0 {
                Req::get(path.clone())
            } else {
                Req::get("/api/v1/products")
            }
        },
        ok_if(200),
    )
    .await?;
    phases.push(Phase::of("product reads", &r, &meter));

    eprintln!(
        "[{b}] the drop: {} codes, {conns} connections",
        int(args.codes)
    );
    let prefix = format!(
        r#"{{"product_id":{},"quantity":1,"email":"b"#,
        serde_json::to_string(&product)?
    );
    let order_body = move |n: u64| {
        Req::post_json(
            "/api/v1/orders",
            format!(r#"{prefix}{n}@flash.test","channel":"sandbox"}}"#),
        )
    };
    let keep_order = |status: u16, body: &Bytes| match status {
        201 => match parse_order(body) {
            Some(o) => Outcome::Ok(Some(o)),
            None => Outcome::Err("201 without an order".into()),
        },
        _ => Outcome::Err(error_label(status, body)),
    };
    let sale_orders = args.sale_orders.unwrap_or(args.codes).min(args.codes);
    let ceiling_rate = phases[0].rate();
    let order_rate = args.order_rate.map(|p| p.per_second(ceiling_rate));
    let meter = server.meter();
    let r = load::run(
        &LoadSpec {
            rate: order_rate,
            ..spec(server, conns, Stop::Count(sale_orders))
        },
        order_body.clone(),
        keep_order,
    )
    .await?;
    // The drop sends no more orders than there are codes, one code each:
    // a `sold_out` in it turned a buyer away while codes were left, which
    // the stock gate must never do (DESIGN.md, invariant 6).
    let turned_away = r.errors.get("409 sold_out").copied().unwrap_or(0);
    phases.push(Phase::of(
        paced("orders while stock lasts", order_rate),
        &r,
        &meter,
    ));
    let mut orders: Vec<Order> = r.kept;

    if sale_orders == args.codes {
        sold_out_phase(args, server, order_body, &mut phases, &mut orders).await?;
    }

    eprintln!(
        "[{b}] notification storm: {} orders, each notified twice",
        int(orders.len() as u64)
    );
    let orders = Arc::new(orders);
    let meter = server.meter();
    let notify_rate = args.notify_rate.map(|p| p.per_second(ceiling_rate));
    let storm = notify_twice(server, orders.clone(), salt, notify_rate).await?;
    let mut pay = Phase::of(
        paced("notification → delivered", notify_rate),
        &storm,
        &meter,
    );
    // Figures per order paid: each order took two notifications.
    pay.ok /= 2;
    phases.push(pay);

    eprintln!("[{b}] ceiling again: GET /healthz");
    phases.push(ceiling(args, server, CEILING_AGAIN).await?);

    eprintln!("[{b}] verifying");
    let mut failures = verify(server, &admin, &product, orders, salt, args.codes).await?;
    if turned_away > 0 {
        failures.push(format!(
            "{turned_away} buyers of the drop were told sold_out while codes were left"
        ));
    }
    Ok((import, phases, failures))
}

const CEILING: &str = "GET /healthz (ceiling)";
const CEILING_AGAIN: &str = "GET /healthz (again, at the end)";

/// Closed-loop `GET /healthz`: what the machine gives a handler that does
/// nothing, at this moment. Measured at the start and again at the end; on
/// a shared machine one reading was once a third of the other.
async fn ceiling(args: &FlashArgs, server: &Target, name: &str) -> Result<Phase> {
    let meter = server.meter();
    let r = load::run(
        &spec(
            server,
            args.common.connections,
            timed(args, args.read_seconds),
        ),
        |_| Req::get("/healthz"),
        ok_if(200),
    )
    .await?;
    Ok(Phase::of(name, &r, &meter))
}

/// The faster of the two ceiling readings: ratios to it are the
/// conservative ones.
fn best_ceiling(phases: &[Phase]) -> Option<&Phase> {
    phases
        .iter()
        .filter(|p| p.name == CEILING || p.name == CEILING_AGAIN)
        .max_by(|a, b| a.rate().total_cmp(&b.rate()))
}

async fn sold_out_phase(
    args: &FlashArgs,
    server: &Target,
    order_body: impl Fn(u64) -> Req + Send + Sync + 'static,
    phases: &mut Vec<Phase>,
    orders: &mut Vec<Order>,
) -> Result<()> {
    let b = &server.label;
    let conns = args.common.connections;
    eprintln!("[{b}] sold-out traffic for {} s", args.sold_out_seconds);
    let late_start = args.codes * 2;
    let meter = server.meter();
    let r = load::run(
        &spec(server, conns, timed(args, args.sold_out_seconds)),
        move |n| order_body(late_start + n),
        |status: u16, body: &Bytes| match status {
            // Codes freed by shed requests of the drop are still sold here.
            201 => Outcome::Ok(parse_order(body)),
            409 if error_label(status, body) == "409 sold_out" => Outcome::Ok(None),
            _ => Outcome::Err(error_label(status, body)),
        },
    )
    .await?;
    phases.push(Phase::of("sold-out answers", &r, &meter));
    orders.extend(r.kept);
    Ok(())
}

async fn notify_twice(
    server: &Target,
    orders: Arc<Vec<Order>>,
    salt: u64,
    paid_per_second: Option<f64>,
) -> Result<LoadResult<()>> {
    let secret = server.sandbox_secret.clone();
    let header = http::HeaderName::from_static("kami-signature");
    let count = orders.len() as u64 * 2;
    load::run(
        &LoadSpec {
            rate: paid_per_second.map(|r| r * 2.0),
            ..spec(server, 256.min(count.max(1) as usize), Stop::Count(count))
        },
        move |n| {
            let o = &orders[(n / 2) as usize];
            let body =
                json!({"order_no": o.order_no, "trade_no": format!("flash-{salt:016x}-{}", n / 2),
                "amount": o.amount, "currency": "CNY", "status": "paid"})
                .to_string();
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let sig = sign(&secret, t, &body);
            Req::post_json("/pay/sandbox/notify", body).header(header.clone(), &sig)
        },
        ok_if(200),
    )
    .await
}

/// Every order delivered with exactly one of this run's codes, no code twice,
/// and the stock adding up: reserved none, sold = orders, nothing oversold.
async fn verify(
    server: &Target,
    admin: &Admin,
    product: &Value,
    orders: Arc<Vec<Order>>,
    salt: u64,
    codes: u64,
) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    let n = orders.len() as u64;
    let r = load::run(
        &spec(server, 64, Stop::Count(n)),
        {
            let orders = orders.clone();
            move |i| {
                let o = &orders[i as usize];
                Req::get(format!("/api/v1/orders/{}", o.order_no)).header(
                    http::header::AUTHORIZATION,
                    &format!("Bearer {}", o.access_token),
                )
            }
        },
        |status, body: &Bytes| {
            let v: Value = match (status, serde_json::from_slice(body)) {
                (200, Ok(v)) => v,
                _ => return Outcome::Err(error_label(status, body)),
            };
            let cards: Vec<String> = v["cards"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            Outcome::Ok(Some((v["status"].as_str().unwrap_or("").to_owned(), cards)))
        },
    )
    .await
    .context("reading the orders back")?;
    if !r.errors.is_empty() {
        failures.push(format!("reading orders back failed: {:?}", r.errors));
    }
    let mut seen = HashSet::new();
    let mut bad = 0u64;
    for (status, cards) in &r.kept {
        if status != "delivered" || cards.len() != 1 || !is_our_code(PREFIX, salt, &cards[0]) {
            bad += 1;
        }
        for c in cards {
            if !seen.insert(c.clone()) {
                failures.push(format!("code {c} delivered twice"));
            }
        }
    }
    if bad > 0 {
        failures.push(format!(
            "{bad} of {n} orders not delivered with exactly one valid code"
        ));
    }
    let stock = admin.stock(product).await?;
    if stock.reserved != 0 || stock.sold != n || stock.available + stock.sold != codes {
        failures.push(format!(
            "stock: available {}, reserved {}, sold {} for {n} orders of {codes} codes",
            stock.available, stock.reserved, stock.sold
        ));
    }
    if n > codes {
        failures.push(format!("oversold: {n} orders for {codes} codes"));
    }
    Ok(failures)
}

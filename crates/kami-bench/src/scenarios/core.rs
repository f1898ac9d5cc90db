//! `kami-bench core`: the core figures of one Kami server per backend.
//!
//! 1. import N codes over HTTP (chunks of ≤ 500,000 lines / < 16 MiB) and 100,000 via the CLI;
//! 2. the ceiling: closed-loop `GET /healthz`;
//! 3. closed-loop `POST /api/v1/orders`;
//! 4. sandbox payment notifications for a sample of those orders, then a check through
//!    `GET /api/v1/orders/{order_no}` that each is delivered with one valid code, all distinct,
//!    and that the stock figures add up;
//! 5. the server's peak RSS after the import and at the end.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::admin::{id_text, import_counts, Admin, Stock};
use crate::load::{self, error_label, Latency, LoadSpec, Outcome, Req, Stop};
use crate::report::{self, int, print_rows, rate, us, CpuMeter, CpuUse, Machine};
use crate::server::{last_line, Backend, Server, ServerOpts};
use crate::CommonArgs;

#[derive(Args, Clone, Debug)]
pub struct CoreArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Codes to import over HTTP (into the product the orders are placed for).
    #[arg(long, default_value_t = 1_000_000)]
    pub codes: u64,

    /// Measured seconds of the order-creation load.
    #[arg(long, default_value_t = 10.0)]
    pub orders_seconds: f64,

    /// Measured seconds of the healthz load [default: --orders-seconds].
    #[arg(long)]
    pub healthz_seconds: Option<f64>,

    /// Uncounted warm-up before each timed load.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_seconds: f64,

    /// Orders to pay through the sandbox channel and verify.
    #[arg(long, default_value_t = 1_000)]
    pub pay_sample: u64,

    /// Codes in the separate file imported with `kami cards import`.
    #[arg(long, default_value_t = 100_000)]
    pub cli_codes: u64,

    /// Most lines per HTTP import request (each request is also kept under 15 MiB).
    #[arg(long, default_value_t = 500_000)]
    pub import_chunk: u64,
}

const MAX_IMPORT_BODY: usize = 15 * 1024 * 1024;
pub(crate) const PRICE: u64 = 100;

// ---------------------------------------------------------------------------------------------
// Figures

#[derive(Clone, Debug, Default)]
struct ImportFig {
    codes: u64,
    requests: u64,
    secs: f64,
    imported: u64,
    duplicates: u64,
    rejected: u64,
    cpu: Option<CpuUse>,
}

impl ImportFig {
    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.imported as f64 / self.secs
        } else {
            0.0
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "codes": self.codes, "requests": self.requests, "seconds": round3(self.secs),
            "imported": self.imported, "duplicates": self.duplicates, "rejected": self.rejected,
            "codes_per_sec": self.rate().round(),
            "cpu": self.cpu.map(CpuUse::to_json),
        })
    }
}

#[derive(Clone, Debug, Default)]
struct LoadFig {
    connections: usize,
    secs: f64,
    ok: u64,
    sent: u64,
    errors: BTreeMap<String, u64>,
    latency: Latency,
    cpu: Option<CpuUse>,
}

impl LoadFig {
    fn from<T>(r: &load::LoadResult<T>, connections: usize) -> Self {
        LoadFig {
            connections,
            secs: r.elapsed.as_secs_f64(),
            ok: r.ok,
            sent: r.sent,
            errors: r.errors.clone(),
            latency: Latency::of(&r.latency),
            cpu: None,
        }
    }

    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ok as f64 / self.secs
        } else {
            0.0
        }
    }

    fn line(&self, unit: &str) -> String {
        let mut text = format!(
            "{} {unit}/s  p50 {}  p99 {}  p99.9 {}  max {}\n({} ok in {:.2} s, {} connections{})",
            rate(self.rate()),
            us(self.latency.p50),
            us(self.latency.p99),
            us(self.latency.p999),
            us(self.latency.max),
            int(self.ok),
            self.secs,
            self.connections,
            self.errors_text(),
        );
        if let Some(c) = &self.cpu {
            text.push('\n');
            text.push_str(&c.text());
        }
        text
    }

    fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            ", no errors".to_owned()
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {}", int(*v)))
                .collect();
            format!(", errors: {}", list.join(", "))
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "connections": self.connections, "seconds": round3(self.secs), "ok": self.ok,
            "sent": self.sent, "per_sec": round1(self.rate()), "latency": self.latency.to_json(),
            "errors": self.errors, "cpu": self.cpu.map(CpuUse::to_json),
        })
    }
}

#[derive(Clone, Debug, Default)]
struct VerifyFig {
    checked: u64,
    delivered: u64,
    one_code: u64,
    distinct_codes: u64,
    valid_codes: u64,
    lookups: Option<LoadFig>,
    stock_after_import: Option<Stock>,
    stock_at_end: Option<Stock>,
    orders_created: u64,
    paid: u64,
}

#[derive(Default)]
struct CoreRun {
    backend: String,
    database_url: String,
    loadavg_at_start: Option<f64>,
    import_http: Option<ImportFig>,
    import_cli: Option<ImportFig>,
    rss_after_import: Option<u64>,
    healthz: Option<LoadFig>,
    orders: Option<LoadFig>,
    pay: Option<LoadFig>,
    verify: Option<VerifyFig>,
    rss_end: Option<u64>,
    /// Phases that did not work and checks that did not hold.
    failures: Vec<String>,
}

impl CoreRun {
    fn fail(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        eprintln!("[{}] FAILED: {msg}", self.backend);
        self.failures.push(msg);
    }

    fn ratio(&self) -> Option<f64> {
        let h = self.healthz.as_ref()?.rate();
        let o = self.orders.as_ref()?.rate();
        (h > 0.0).then(|| o / h)
    }

    fn to_json(&self) -> Value {
        let stock = |s: &Option<Stock>| {
            s.as_ref()
                .map(|s| json!({"available": s.available, "reserved": s.reserved, "sold": s.sold}))
        };
        json!({
            "backend": self.backend,
            "database_url": self.database_url,
            "loadavg_at_start": self.loadavg_at_start,
            "import_http": self.import_http.as_ref().map(ImportFig::to_json),
            "import_cli": self.import_cli.as_ref().map(ImportFig::to_json),
            "healthz": self.healthz.as_ref().map(LoadFig::to_json),
            "orders": self.orders.as_ref().map(LoadFig::to_json),
            "orders_to_healthz_ratio": self.ratio().map(|r| (r * 10_000.0).round() / 10_000.0),
            "pay": self.pay.as_ref().map(LoadFig::to_json),
            "verify": self.verify.as_ref().map(|v| json!({
                "checked": v.checked, "delivered": v.delivered, "one_code": v.one_code,
                "distinct_codes": v.distinct_codes, "valid_codes": v.valid_codes,
                "orders_created": v.orders_created, "paid": v.paid,
                "lookups": v.lookups.as_ref().map(LoadFig::to_json),
                "stock_after_import": stock(&v.stock_after_import),
                "stock_at_end": stock(&v.stock_at_end),
            })),
            "peak_rss_bytes_after_import": self.rss_after_import,
            "peak_rss_bytes_at_end": self.rss_end,
            "failures": self.failures,
            "ok": self.failures.is_empty(),
        })
    }

    fn print(&self, machine: &Machine, command: &str, kami: &str) {
        println!();
        println!("== Kami core benchmark: {} ==", self.backend);
        let mut rows: Vec<(String, String)> = vec![
            (
                "machine".into(),
                match self.loadavg_at_start {
                    Some(l) => format!("{}; load average {l:.2} at start", machine.describe()),
                    None => machine.describe(),
                },
            ),
            ("command".into(), command.to_owned()),
            (
                "server".into(),
                if self.database_url.is_empty() {
                    format!("{kami} serve (did not start)")
                } else {
                    format!("{kami} serve, {}", self.database_url)
                },
            ),
        ];
        if let Some(i) = &self.import_http {
            rows.push((
                "import (HTTP)".into(),
                format!(
                    "{} codes/s  ({} codes in {:.2} s, {} request{}; imported {}, duplicates {}, rejected {}){}",
                    rate(i.rate()),
                    int(i.codes),
                    i.secs,
                    i.requests,
                    if i.requests == 1 { "" } else { "s" },
                    int(i.imported),
                    int(i.duplicates),
                    int(i.rejected),
                    i.cpu.map(|c| format!("\n{}", c.text())).unwrap_or_default()
                ),
            ));
        }
        if let Some(i) = &self.import_cli {
            rows.push((
                "import (CLI)".into(),
                format!(
                    "{} codes/s  ({} codes in {:.2} s, `kami cards import` incl. process start; imported {}, duplicates {}, rejected {})",
                    rate(i.rate()),
                    int(i.codes),
                    i.secs,
                    int(i.imported),
                    int(i.duplicates),
                    int(i.rejected)
                ),
            ));
        }
        if let Some(h) = &self.healthz {
            rows.push(("healthz ceiling".into(), h.line("req")));
        }
        if let Some(o) = &self.orders {
            rows.push(("orders".into(), o.line("orders")));
        }
        if let Some(r) = self.ratio() {
            rows.push(("orders ÷ healthz".into(), format!("{r:.3}")));
        }
        if let Some(p) = &self.pay {
            rows.push(("pay (sandbox notify)".into(), p.line("notifications")));
        }
        if let Some(v) = &self.verify {
            let mut text = format!(
                "{} of {} sampled orders delivered, {} with exactly 1 code; {} distinct codes, {} valid",
                int(v.delivered),
                int(v.checked),
                int(v.one_code),
                int(v.distinct_codes),
                int(v.valid_codes)
            );
            if let Some(l) = &v.lookups {
                text.push_str(&format!(
                    "\norder lookups: {} req/s  p50 {}  p99 {}",
                    rate(l.rate()),
                    us(l.latency.p50),
                    us(l.latency.p99)
                ));
            }
            if let Some(s) = &v.stock_at_end {
                text.push_str(&format!(
                    "\nstock at end: available {}, reserved {}, sold {} (orders created {}, paid {})",
                    int(s.available),
                    int(s.reserved),
                    int(s.sold),
                    int(v.orders_created),
                    int(v.paid)
                ));
            }
            rows.push(("verify".into(), text));
        }
        let rss = |v: Option<u64>| v.map(report::bytes).unwrap_or_else(|| "n/a".into());
        if self.rss_after_import.is_some() || self.rss_end.is_some() {
            rows.push((
                "peak RSS (VmHWM)".into(),
                format!(
                    "{} after import, {} at end",
                    rss(self.rss_after_import),
                    rss(self.rss_end)
                ),
            ));
        }
        rows.push((
            "result".into(),
            if self.failures.is_empty() {
                "all phases ran, all checks held".to_owned()
            } else {
                format!("FAILED:\n{}", self.failures.join("\n"))
            },
        ));
        print_rows(&rows);
    }

    fn summary(&self) -> String {
        let mut parts = vec![format!("{:<8}", self.backend)];
        if let Some(i) = &self.import_http {
            let mut s = format!("import {} codes/s", rate(i.rate()));
            if let Some(c) = &self.import_cli {
                s.push_str(&format!(" (CLI {}/s)", rate(c.rate())));
            }
            parts.push(s);
        }
        if let Some(h) = &self.healthz {
            parts.push(format!(
                "healthz {} req/s (p99 {})",
                rate(h.rate()),
                us(h.latency.p99)
            ));
        }
        if let Some(o) = &self.orders {
            let mut s = format!(
                "orders {} /s (p50 {}, p99 {}",
                rate(o.rate()),
                us(o.latency.p50),
                us(o.latency.p99)
            );
            if let Some(r) = self.ratio() {
                s.push_str(&format!(", {r:.3}× healthz"));
            }
            s.push(')');
            if !o.errors.is_empty() {
                s.push_str(&format!(", {} errors", int(o.errors.values().sum())));
            }
            parts.push(s);
        }
        if let Some(p) = &self.pay {
            parts.push(format!("pay {} /s", rate(p.rate())));
        }
        if let Some(r) = self.rss_end {
            parts.push(format!("peak RSS {}", report::bytes(r)));
        }
        parts.push(if self.failures.is_empty() {
            "checks OK".to_owned()
        } else {
            format!("{} FAILURE(S)", self.failures.len())
        });
        parts.join(" | ")
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------------------------------------
// Codes: distinct, and recognisable as this run's, without keeping a million of them around.

fn mix(mut z: u64) -> u64 {
    // splitmix64
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn make_code(prefix: &str, salt: u64, i: u64) -> String {
    format!("{prefix}-{i:07}-{:016x}", mix(salt ^ i))
}

pub(crate) fn is_our_code(prefix: &str, salt: u64, code: &str) -> bool {
    let Some(rest) = code.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let Some((i, _)) = rest.split_once('-') else {
        return false;
    };
    match i.parse::<u64>() {
        Ok(i) => make_code(prefix, salt, i) == code,
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario

struct Ctx<'a> {
    args: &'a CoreArgs,
    server: &'a Server,
    admin: Admin,
    spec: LoadSpec,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Runs the scenario; `Ok(false)` when some phase failed or some check did not hold.
pub async fn run(args: CoreArgs) -> Result<bool> {
    let machine = Machine::detect();
    let command = report::command_line();
    let kami = args.common.kami_path();
    let opts = ServerOpts {
        kami: kami.clone(),
        postgres_url: args.common.postgres_url.clone(),
        keep: args.common.keep,
        extra_env: Vec::new(),
    };
    eprintln!("kami-bench core: {}", machine.describe());

    let mut runs = Vec::new();
    for backend in args.common.backend.backends() {
        let mut run = CoreRun {
            backend: backend.to_string(),
            loadavg_at_start: report::loadavg(),
            ..CoreRun::default()
        };
        run_backend(&args, &opts, backend, &mut run).await;
        run.print(&machine, &command, &kami.display().to_string());
        runs.push(run);
    }

    println!();
    println!("== Summary ==");
    for r in &runs {
        println!("{}", r.summary());
    }

    if let Some(path) = &args.common.json {
        let doc = json!({
            "scenario": "core",
            "command": command,
            "machine": machine.to_json(),
            "kami": kami.display().to_string(),
            "parameters": {
                "codes": args.codes, "cli_codes": args.cli_codes,
                "connections": args.common.connections,
                "orders_seconds": args.orders_seconds,
                "healthz_seconds": args.healthz_seconds.unwrap_or(args.orders_seconds),
                "warmup_seconds": args.warmup_seconds, "pay_sample": args.pay_sample,
                "import_chunk": args.import_chunk, "client_threads": args.common.client_threads,
            },
            "runs": runs.iter().map(CoreRun::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(runs.iter().all(|r| r.failures.is_empty()))
}

async fn run_backend(args: &CoreArgs, opts: &ServerOpts, backend: Backend, run: &mut CoreRun) {
    eprintln!("[{backend}] starting {} serve", opts.kami.display());
    let server = match Server::start(backend, opts).await {
        Ok(s) => s,
        Err(e) => {
            run.fail(format!("starting the server: {e:#}"));
            return;
        }
    };
    run.database_url = server.database_url.clone();
    if let Err(e) = phases(args, &server, run).await {
        run.fail(format!("{e:#}"));
        eprintln!(
            "[{backend}] last lines of the server log:\n{}",
            server.log_tail(20)
        );
    }
    // Whatever happened, the peak RSS so far is worth having.
    if run.rss_end.is_none() {
        run.rss_end = server.peak_rss().ok();
    }
    if let Some(pid) = server.pid() {
        eprintln!("[{backend}] stopping the server (pid {pid})");
    }
    if let Err(e) = server.shutdown().await {
        run.fail(format!("cleaning up: {e:#}"));
    }
}

async fn phases(args: &CoreArgs, server: &Server, run: &mut CoreRun) -> Result<()> {
    let b = server.backend;
    let key = server
        .create_api_key("bench")
        .await
        .context("creating an API key")?;
    let ctx = Ctx {
        args,
        server,
        admin: Admin::new(&server.base_url, &key)?,
        spec: LoadSpec {
            addr: server.addr,
            connections: args.common.connections.max(1),
            stop: Stop::Count(0),
            rate: None,
        },
    };
    let product = ctx
        .admin
        .create_product(
            &json!({"name": "bench", "price": PRICE, "currency": "CNY", "max_quantity": 10}),
        )
        .await
        .context("creating the product")?;
    let salt: u64 = rand::thread_rng().gen();
    let mut verify = VerifyFig::default();

    // 1. Import over HTTP.
    eprintln!("[{b}] importing {} codes over HTTP", int(args.codes));
    let fig = import_http(&ctx, &product, salt).await?;
    if fig.imported != args.codes || fig.duplicates != 0 || fig.rejected != 0 {
        run.fail(format!(
            "HTTP import of {} codes: imported {}, duplicates {}, rejected {}",
            fig.codes, fig.imported, fig.duplicates, fig.rejected
        ));
    }
    run.import_http = Some(fig);
    run.rss_after_import = server.peak_rss().ok();
    let stock = ctx.admin.stock(&product).await?;
    if stock.available != args.codes || stock.reserved != 0 || stock.sold != 0 {
        run.fail(format!(
            "stock after import: available {}, reserved {}, sold {}; expected {} available",
            stock.available, stock.reserved, stock.sold, args.codes
        ));
    }
    verify.stock_after_import = Some(stock);

    // 1b. Import with the CLI into a second product.
    if args.cli_codes > 0 {
        eprintln!(
            "[{b}] importing {} codes with `kami cards import`",
            int(args.cli_codes)
        );
        let fig = import_cli(&ctx, salt).await?;
        if fig.imported != args.cli_codes || fig.duplicates != 0 || fig.rejected != 0 {
            run.fail(format!(
                "CLI import of {} codes: imported {}, duplicates {}, rejected {}",
                fig.codes, fig.imported, fig.duplicates, fig.rejected
            ));
        }
        run.import_cli = Some(fig);
    }

    // 2. Ceiling.
    let healthz_secs = args.healthz_seconds.unwrap_or(args.orders_seconds);
    eprintln!(
        "[{b}] GET /healthz for {healthz_secs} s, {} connections",
        ctx.spec.connections
    );
    let spec = LoadSpec {
        stop: Stop::Duration {
            warmup: secs(args.warmup_seconds),
            measure: secs(healthz_secs),
        },
        ..ctx.spec.clone()
    };
    let meter = CpuMeter::start(server.pid());
    let r = load::run(
        &spec,
        |_| Req::get("/healthz"),
        |status, body: &Bytes| -> Outcome<()> {
            if status == 200 {
                Outcome::Ok(None)
            } else {
                Outcome::Err(error_label(status, body))
            }
        },
    )
    .await?;
    let mut fig = LoadFig::from(&r, spec.connections);
    fig.cpu = Some(meter.stop());
    run.healthz = Some(fig);

    // 3. Orders.
    eprintln!(
        "[{b}] POST /api/v1/orders for {} s, {} connections",
        args.orders_seconds, ctx.spec.connections
    );
    let meter = CpuMeter::start(server.pid());
    let (mut orders_fig, orders, created) = create_orders(&ctx, &product).await?;
    orders_fig.cpu = Some(meter.stop());
    verify.orders_created = created;
    if orders_fig.ok == 0 {
        run.orders = Some(orders_fig);
        bail!(
            "no order was created in the timed phase ({created} in all, warm-up included): \
             with fast order creation the warm-up can sell every code; raise --codes"
        );
    }
    run.orders = Some(orders_fig);

    // 4. Pay a sample and verify.
    let sample: Vec<Order> = orders.into_iter().take(args.pay_sample as usize).collect();
    eprintln!(
        "[{b}] paying {} orders through /pay/sandbox/notify",
        int(sample.len() as u64)
    );
    let sample = Arc::new(sample);
    let meter = CpuMeter::start(server.pid());
    let mut pay = pay_orders(&ctx, sample.clone(), salt).await?;
    pay.cpu = Some(meter.stop());
    verify.paid = pay.ok;
    if pay.ok != sample.len() as u64 {
        run.fail(format!(
            "{} of {} payment notifications were not accepted{}",
            int(sample.len() as u64 - pay.ok),
            int(sample.len() as u64),
            pay.errors_text()
        ));
    }
    run.pay = Some(pay);

    eprintln!("[{b}] verifying the paid orders");
    verify_orders(&ctx, sample, salt, &mut verify, run).await?;
    let stock = ctx.admin.stock(&product).await?;
    let total = stock.available + stock.reserved + stock.sold;
    if total != args.codes {
        run.fail(format!(
            "stock at end adds up to {total}, not {}: available {}, reserved {}, sold {}",
            args.codes, stock.available, stock.reserved, stock.sold
        ));
    } else if stock.sold != verify.paid || stock.reserved + stock.sold != created {
        run.fail(format!(
            "stock at end: reserved {} + sold {} for {} orders created and {} paid",
            stock.reserved, stock.sold, created, verify.paid
        ));
    }
    verify.stock_at_end = Some(stock);
    run.verify = Some(verify);

    run.rss_end = Some(server.peak_rss()?);
    Ok(())
}

async fn import_http(ctx: &Ctx<'_>, product: &Value, salt: u64) -> Result<ImportFig> {
    let n = ctx.args.codes;
    let chunk_lines = ctx.args.import_chunk.max(1);
    // Build every body first: the clock measures the server, not this program.
    let mut bodies: Vec<String> = Vec::new();
    let mut body = String::new();
    let mut lines = 0u64;
    for i in 0..n {
        let code = make_code("BENCH", salt, i);
        if lines > 0 && (lines >= chunk_lines || body.len() + code.len() + 1 > MAX_IMPORT_BODY) {
            bodies.push(std::mem::take(&mut body));
            lines = 0;
        }
        body.push_str(&code);
        body.push('\n');
        lines += 1;
    }
    if lines > 0 {
        bodies.push(body);
    }
    let mut fig = ImportFig {
        codes: n,
        requests: bodies.len() as u64,
        ..ImportFig::default()
    };
    let meter = CpuMeter::start(ctx.server.pid());
    let start = Instant::now();
    for body in bodies {
        let (imported, duplicates, rejected) = ctx.admin.import(product, body).await?;
        fig.imported += imported;
        fig.duplicates += duplicates;
        fig.rejected += rejected;
    }
    fig.secs = start.elapsed().as_secs_f64();
    fig.cpu = Some(meter.stop());
    Ok(fig)
}

async fn import_cli(ctx: &Ctx<'_>, salt: u64) -> Result<ImportFig> {
    let n = ctx.args.cli_codes;
    let product = ctx
        .admin
        .create_product(
            &json!({"name": "bench-cli", "price": PRICE, "currency": "CNY", "max_quantity": 10}),
        )
        .await
        .context("creating the CLI import product")?;
    let path = ctx.server.path_in_dir("cli-codes.txt");
    let mut text = String::with_capacity(n as usize * 34);
    for i in 0..n {
        text.push_str(&make_code("BENCHCLI", salt, i));
        text.push('\n');
    }
    std::fs::write(&path, text)?;
    let id = id_text(&product);
    let path_text = path.display().to_string();
    let start = Instant::now();
    let out = ctx
        .server
        .cli(&["cards", "import", "--product", &id, &path_text])
        .await?;
    let secs = start.elapsed().as_secs_f64();
    let line = last_line(&out.stdout)
        .ok_or_else(|| anyhow!("`kami cards import` printed nothing on stdout"))?;
    let v: Value = serde_json::from_str(line)
        .with_context(|| format!("last line of `kami cards import` is not JSON: {line}"))?;
    let (imported, duplicates, rejected) = import_counts(&v)?;
    let _ = std::fs::remove_file(&path);
    Ok(ImportFig {
        codes: n,
        requests: 1,
        secs,
        imported,
        duplicates,
        rejected,
        cpu: None,
    })
}

#[derive(Clone, Debug)]
pub(crate) struct Order {
    pub order_no: String,
    pub access_token: String,
    pub amount: u64,
}

pub(crate) fn parse_order(body: &Bytes) -> Option<Order> {
    let v: Value = serde_json::from_slice(body).ok()?;
    Some(Order {
        order_no: v.get("order_no")?.as_str()?.to_owned(),
        access_token: v.get("access_token")?.as_str()?.to_owned(),
        amount: v.get("amount").and_then(Value::as_u64).unwrap_or(PRICE),
    })
}

/// Closed-loop order creation. Returns the figures, up to `--pay-sample` created orders and the
/// number of orders created in all (warm-up included).
async fn create_orders(ctx: &Ctx<'_>, product: &Value) -> Result<(LoadFig, Vec<Order>, u64)> {
    let spec = LoadSpec {
        stop: Stop::Duration {
            warmup: secs(ctx.args.warmup_seconds),
            measure: secs(ctx.args.orders_seconds),
        },
        ..ctx.spec.clone()
    };
    let prefix = format!(
        r#"{{"product_id":{},"quantity":1,"email":"b"#,
        serde_json::to_string(product)?
    );
    let created = Arc::new(AtomicU64::new(0));
    let kept_max = ctx.args.pay_sample;
    let created2 = created.clone();
    let r = load::run(
        &spec,
        move |n| {
            Req::post_json(
                "/api/v1/orders",
                format!(r#"{prefix}{n}@bench.test","channel":"sandbox"}}"#),
            )
        },
        move |status, body: &Bytes| {
            if status == 201 {
                // Parse only as many answers as the payment sample needs.
                let nth = created2.fetch_add(1, Ordering::Relaxed);
                if nth < kept_max {
                    match parse_order(body) {
                        Some(o) => Outcome::Ok(Some(o)),
                        None => Outcome::Err("201 without order_no/access_token".to_owned()),
                    }
                } else {
                    Outcome::Ok(None)
                }
            } else {
                Outcome::Err(error_label(status, body))
            }
        },
    )
    .await?;
    let fig = LoadFig::from(&r, spec.connections);
    Ok((fig, r.kept, created.load(Ordering::Relaxed)))
}

pub(crate) fn sign(secret: &str, t: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn pay_orders(ctx: &Ctx<'_>, orders: Arc<Vec<Order>>, salt: u64) -> Result<LoadFig> {
    let count = orders.len() as u64;
    let spec = LoadSpec {
        stop: Stop::Count(count),
        connections: ctx.spec.connections.min(count.max(1) as usize),
        ..ctx.spec.clone()
    };
    let secret = ctx.server.sandbox_secret.clone();
    let signature = http::HeaderName::from_static("kami-signature");
    let r = load::run(
        &spec,
        move |n| {
            let o = &orders[n as usize];
            let body = json!({
                "order_no": o.order_no,
                "trade_no": format!("bench-{salt:016x}-{n}"),
                "amount": o.amount,
                "currency": "CNY",
                "status": "paid",
            })
            .to_string();
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let sig = sign(&secret, t, &body);
            Req::post_json("/pay/sandbox/notify", body).header(signature.clone(), &sig)
        },
        |status, body: &Bytes| -> Outcome<()> {
            if status == 200 {
                Outcome::Ok(None)
            } else {
                Outcome::Err(error_label(status, body))
            }
        },
    )
    .await?;
    Ok(LoadFig::from(&r, spec.connections))
}

async fn verify_orders(
    ctx: &Ctx<'_>,
    orders: Arc<Vec<Order>>,
    salt: u64,
    verify: &mut VerifyFig,
    run: &mut CoreRun,
) -> Result<()> {
    let count = orders.len() as u64;
    let spec = LoadSpec {
        stop: Stop::Count(count),
        connections: ctx.spec.connections.min(count.max(1) as usize),
        ..ctx.spec.clone()
    };
    let r = load::run(
        &spec,
        move |n| {
            let o = &orders[n as usize];
            Req::get(format!("/api/v1/orders/{}", o.order_no)).header(
                http::header::AUTHORIZATION,
                &format!("Bearer {}", o.access_token),
            )
        },
        |status, body: &Bytes| {
            if status != 200 {
                return Outcome::Err(error_label(status, body));
            }
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return Outcome::Err("200 not JSON".to_owned());
            };
            let st = v
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let cards: Vec<String> = v
                .get("cards")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            Outcome::Ok(Some((st, cards)))
        },
    )
    .await?;
    verify.checked = count;
    let mut codes = HashSet::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut total_codes = 0u64;
    for (status, cards) in &r.kept {
        *statuses.entry(status.clone()).or_default() += 1;
        if status == "delivered" {
            verify.delivered += 1;
            if cards.len() == 1 {
                verify.one_code += 1;
            }
        }
        for c in cards {
            total_codes += 1;
            if is_our_code("BENCH", salt, c) {
                verify.valid_codes += 1;
            }
            codes.insert(c.clone());
        }
    }
    verify.distinct_codes = codes.len() as u64;
    verify.lookups = Some(LoadFig::from(&r, spec.connections));
    if !r.errors.is_empty() {
        run.fail(format!(
            "GET /api/v1/orders/{{order_no}} failed for {} orders: {:?}",
            r.error_count(),
            r.errors
        ));
    }
    if verify.delivered != count || verify.one_code != count {
        run.fail(format!(
            "of {count} paid orders, {} delivered and {} with exactly one code (statuses {statuses:?})",
            verify.delivered, verify.one_code
        ));
    }
    if verify.distinct_codes != total_codes {
        run.fail(format!(
            "{} codes delivered but only {} distinct",
            total_codes, verify.distinct_codes
        ));
    }
    if verify.valid_codes != total_codes {
        run.fail(format!(
            "{} of {} delivered codes are not codes this run imported into the product",
            total_codes - verify.valid_codes,
            total_codes
        ));
    }
    Ok(())
}

//! HTTP/1.1 load generator.
//!
//! `connections` tasks each own one keep-alive connection (`Conn`: requests written as bytes,
//! answers parsed with httparse). Closed loop by default: each sends its next request as soon
//! as the previous answer has been read in full, so the latency is what the load queued up
//! (at C connections the mean is C / throughput). Open loop with `LoadSpec::rate`: request
//! `n` is due at `n / rate` and its latency counts from then, so a server that stalls is
//! charged for every request that fell due meanwhile, as it is by buyers and gateways that do
//! not wait for one another. Latencies go into an HDR histogram in microseconds.
//!
//! Two ways to stop: after a duration (with an uncounted warm-up before it), or after a fixed
//! number of requests shared out among the connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request to send.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Req {
    pub fn get(path: impl Into<String>) -> Self {
        Req {
            method: Method::GET,
            path: path.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn post_json(path: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Req {
            method: Method::POST,
            path: path.into(),
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: body.into(),
        }
    }

    pub fn header(mut self, name: HeaderName, value: &str) -> Self {
        self.headers.push((
            name,
            HeaderValue::from_str(value).expect("valid header value"),
        ));
        self
    }
}

/// What the response handler made of an answer.
pub enum Outcome<T> {
    /// A success; optionally something to keep (e.g. the order that was created).
    Ok(Option<T>),
    /// A failure, counted under this label (e.g. `409 sold_out`).
    Err(String),
}

#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// Run for this long after the warm-up.
    Duration { warmup: Duration, measure: Duration },
    /// Send exactly this many requests (sequence numbers 0..n).
    Count(u64),
}

#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub connections: usize,
    pub stop: Stop,
    /// Open loop: request `n` is due `n / rate` seconds after the start, whatever the
    /// answers, and its latency runs from when it was due if no connection was free
    /// then (what the server's slowness cost it, coordinated omission included), or
    /// from when it was sent. `None`: closed loop, each connection sends its next
    /// request as soon as it has the answer to the last.
    pub rate: Option<f64>,
}

pub struct LoadResult<T> {
    /// Successful answers within the measured window.
    pub ok: u64,
    /// Failed answers within the measured window, by label.
    pub errors: BTreeMap<String, u64>,
    /// Latency of the successful answers, µs.
    pub latency: Histogram<u64>,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Everything the handler kept, warm-up included, in no particular order.
    pub kept: Vec<T>,
    /// Requests sent in total, warm-up included.
    pub sent: u64,
}

impl<T> LoadResult<T> {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

struct TaskOut<T> {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    kept: Vec<T>,
    last_done: Option<Instant>,
    /// (µs since the start, latency µs, succeeded, connection) of every answer, when a
    /// timeline is asked for.
    timeline: Option<Vec<(u64, u64, bool, usize)>>,
}

/// Where `KAMI_BENCH_TIMELINE` asks each load run's per-request timeline to be written
/// (`<dir>/<n>.csv`, one line per answer: µs since the run started, latency µs, ok, connection),
/// to tell a stall (slow answers bunched in time) from queueing (slow answers spread out), and
/// an unfair server (some connections always slower) from a fair one.
fn timeline_dir() -> Option<std::path::PathBuf> {
    // Empty is unset: an empty path would write the files into the working
    // directory (a checkout, where they were once committed by mistake).
    std::env::var_os("KAMI_BENCH_TIMELINE")
        .filter(|dir| !dir.is_empty())
        .map(Into::into)
}

static TIMELINE_RUNS: AtomicU64 = AtomicU64::new(0);

/// Runs the load. `make(seq)` builds request number `seq` (unique across connections, starting
/// at 0); `handle(status, body)` judges the answer.
pub async fn run<T, M, H>(spec: &LoadSpec, make: M, handle: H) -> Result<LoadResult<T>>
where
    T: Send + 'static,
    M: Fn(u64) -> Req + Send + Sync + 'static,
    H: Fn(u16, &Bytes) -> Outcome<T> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let handle = Arc::new(handle);
    let seq = Arc::new(AtomicU64::new(0));
    // Every connection is open before the clock starts, as a buyer's is
    // when the drop opens (the product page was loaded over it): without
    // this a run's first answers waited behind 256 connects and handshakes,
    // which set the p99 of a half-second sale.
    let ready = Arc::new(tokio::sync::Barrier::new(spec.connections + 1));
    let stop = spec.stop;
    let rate = spec.rate.filter(|r| *r > 0.0);
    // One start for every connection: a paced run's schedule counts from it.
    let started = Arc::new(std::sync::OnceLock::new());

    let mut tasks = Vec::with_capacity(spec.connections);
    for conn_no in 0..spec.connections {
        let make = make.clone();
        let handle = handle.clone();
        let seq = seq.clone();
        let addr = spec.addr;
        let ready = ready.clone();
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            // A failed connect is retried by the first request.
            let mut conn: Option<Conn> = connect(addr).await.ok();
            // Allocated before the clock starts too: 256 histograms are 48
            // MB to zero, which one of the generator's threads did for the
            // first 15 ms of every run while the others' first answers
            // waited to be read (perf, stop 47): the first wave of a drop's
            // answers, a 10,000-order sale's p99, measured the generator.
            let mut out = TaskOut {
                ok: 0,
                errors: BTreeMap::new(),
                latency: new_histogram(),
                kept: Vec::new(),
                last_done: None,
                timeline: timeline_dir().map(|_| Vec::new()),
            };
            ready.wait().await;
            let (start, measure_from, measure_until, count) =
                window(stop, *started.get_or_init(Instant::now));
            let host = addr.to_string();
            loop {
                if let Some(until) = measure_until {
                    if Instant::now() >= until {
                        break;
                    }
                }
                let n = seq.fetch_add(1, Ordering::Relaxed);
                if let Some(count) = count {
                    if n >= count {
                        break;
                    }
                }
                let req = make(n);
                let mut clock_from = Instant::now();
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(n as f64 / rate);
                    if due > clock_from {
                        // Tokio's timer ticks every millisecond, so requests
                        // leave in small bursts; a late wake-up is the
                        // generator's, so the clock starts when it sends.
                        tokio::time::sleep_until(due.into()).await;
                        clock_from = Instant::now();
                    } else {
                        clock_from = due;
                    }
                }
                let answer = send(&mut conn, addr, &host, req).await;
                let done = Instant::now();
                let counted = done >= measure_from && measure_until.is_none_or(|u| done <= u);
                let mut answer_ok = None;
                match answer {
                    Ok((status, body)) => match handle(status, &body) {
                        Outcome::Ok(keep) => {
                            answer_ok = Some(true);
                            if let Some(k) = keep {
                                out.kept.push(k);
                            }
                            if counted {
                                out.ok += 1;
                                let us = (done - clock_from).as_micros().max(1) as u64;
                                out.latency.saturating_record(us);
                            }
                        }
                        Outcome::Err(label) => {
                            if counted {
                                *out.errors.entry(label).or_default() += 1;
                            }
                        }
                    },
                    Err(e) => {
                        conn = None;
                        if counted {
                            *out.errors.entry(format!("transport: {e}")).or_default() += 1;
                        }
                        // Don't spin on a refused connection.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                if let Some(t) = out.timeline.as_mut() {
                    let ok = matches!(answer_ok, Some(true));
                    t.push((
                        (done - start).as_micros() as u64,
                        (done - clock_from).as_micros() as u64,
                        ok,
                        conn_no,
                    ));
                }
                out.last_done = Some(done);
            }
            out
        }));
    }

    ready.wait().await;
    let (start, _, _, count) = window(stop, *started.get_or_init(Instant::now));

    let mut result = LoadResult {
        ok: 0,
        errors: BTreeMap::new(),
        latency: new_histogram(),
        elapsed: Duration::ZERO,
        kept: Vec::new(),
        sent: 0,
    };
    let mut last_done = start;
    let mut timeline = Vec::new();
    for t in tasks {
        let mut out = t.await.context("load task panicked")?;
        timeline.extend(out.timeline.take().unwrap_or_default());
        result.ok += out.ok;
        for (k, v) in out.errors {
            *result.errors.entry(k).or_default() += v;
        }
        result.latency.add(&out.latency).expect("histogram add");
        result.kept.extend(out.kept);
        if let Some(d) = out.last_done {
            last_done = last_done.max(d);
        }
    }
    if let Some(dir) = timeline_dir() {
        write_timeline(&dir, timeline)?;
    }
    result.sent = match count {
        Some(c) => c.min(seq.load(Ordering::Relaxed)),
        None => seq.load(Ordering::Relaxed),
    };
    result.elapsed = match spec.stop {
        Stop::Duration { measure, .. } => measure,
        Stop::Count(_) => last_done - start,
    };
    Ok(result)
}

/// From `start`: the start, when answers start to count, when the run ends
/// (timed runs), and how many requests it sends (counted runs).
fn window(stop: Stop, start: Instant) -> (Instant, Instant, Option<Instant>, Option<u64>) {
    match stop {
        Stop::Duration { warmup, measure } => {
            (start, start + warmup, Some(start + warmup + measure), None)
        }
        Stop::Count(n) => (start, start, None, Some(n)),
    }
}

fn write_timeline(dir: &std::path::Path, mut timeline: Vec<(u64, u64, bool, usize)>) -> Result<()> {
    use std::io::Write;
    timeline.sort_unstable();
    std::fs::create_dir_all(dir)?;
    let n = TIMELINE_RUNS.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{n}.csv"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for (at, latency, ok, conn) in timeline {
        writeln!(f, "{at},{latency},{},{conn}", u8::from(ok))?;
    }
    f.flush()?;
    Ok(())
}

/// One keep-alive HTTP/1.1 connection, written and read by the task that
/// owns it. Written by hand on `httparse` (hyper's own parser) rather than
/// with hyper's client: that one hands every request to a second task over
/// a channel and back, and this generator shares two cores with the server
/// it measures; per request the hand-written one costs 35–45% less CPU
/// (`CPU per request: … load generator`, docs/PERFORMANCE.md, stop 14).
struct Conn {
    stream: TcpStream,
    /// What was read and not yet consumed.
    buf: BytesMut,
    /// The request being written, reused.
    out: Vec<u8>,
}

/// Longest answer head (status line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;

async fn connect(addr: SocketAddr) -> Result<Conn> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(Conn {
        stream,
        buf: BytesMut::with_capacity(16 * 1024),
        out: Vec::with_capacity(1024),
    })
}

async fn send(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    host: &str,
    req: Req,
) -> Result<(u16, Bytes)> {
    if conn.is_none() {
        *conn = Some(connect(addr).await?);
    }
    let c = conn.as_mut().expect("connected");
    c.out.clear();
    encode(&mut c.out, host, &req);
    let answer = exchange(c).await;
    // A failed exchange or an answer that closes the connection leaves it
    // unusable: the next request opens a new one.
    match answer {
        Ok((status, body, keep_alive)) => {
            if !keep_alive {
                *conn = None;
            }
            Ok((status, body))
        }
        Err(e) => {
            *conn = None;
            Err(e)
        }
    }
}

fn encode(out: &mut Vec<u8>, host: &str, req: &Req) {
    use std::io::Write;
    let _ = write!(
        out,
        "{} {} HTTP/1.1\r\nhost: {host}\r\n",
        req.method, req.path
    );
    for (k, v) in &req.headers {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !req.body.is_empty() || req.method == Method::POST {
        let _ = write!(out, "content-length: {}\r\n", req.body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&req.body);
}

/// Writes the request, reads one answer: (status, body, whether the
/// connection may carry another request).
async fn exchange(c: &mut Conn) -> Result<(u16, Bytes, bool)> {
    c.stream.write_all(&c.out).await?;
    let (head, status, length, keep_alive) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&c.buf)? {
            httparse::Status::Complete(head) => {
                let status = response.code.context("answer without a status")?;
                let mut length = None;
                let mut keep_alive = response.version == Some(1);
                for h in response.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let v = std::str::from_utf8(h.value)?.trim();
                        length = Some(v.parse::<usize>().context("bad content-length")?);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        anyhow::bail!("chunked answers are not read by the load generator");
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        keep_alive = !h.value.eq_ignore_ascii_case(b"close");
                    }
                }
                break (head, status, length, keep_alive);
            }
            httparse::Status::Partial => {
                anyhow::ensure!(c.buf.len() < MAX_HEAD, "answer head over {MAX_HEAD} bytes");
                read_more(c).await?;
            }
        }
    };
    let length = match (status, length) {
        (100..=199 | 204 | 304, _) => 0,
        (_, Some(n)) => n,
        // No length: the body runs to the end of the connection.
        (_, None) => {
            while read_more(c).await.is_ok() {}
            let body = c.buf.split().freeze().slice(head..);
            return Ok((status, body, false));
        }
    };
    while c.buf.len() < head + length {
        read_more(c).await?;
    }
    let mut answer = c.buf.split_to(head + length);
    let body = answer.split_off(head).freeze();
    Ok((status, body, keep_alive))
}

/// Reads what the socket has; the end of the connection is an error here.
async fn read_more(c: &mut Conn) -> Result<()> {
    if c.buf.capacity() - c.buf.len() < 4096 {
        c.buf.reserve(16 * 1024);
    }
    let n = c.stream.read_buf(&mut c.buf).await?;
    anyhow::ensure!(n > 0, "connection closed by the server");
    Ok(())
}

/// `"<status> <error.code>"` for a Kami error answer, e.g. `409 sold_out`.
pub fn error_label(status: u16, body: &Bytes) -> String {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| e.get("code"))
                .and_then(|c| c.as_str())
                .map(str::to_owned)
        });
    match code {
        Some(code) => format!("{status} {code}"),
        None => format!("{status}"),
    }
}

/// Latency summary of a histogram, µs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }

    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "p50_us": self.p50, "p99_us": self.p99, "p999_us": self.p999,
            "max_us": self.max, "mean_us": (self.mean * 10.0).round() / 10.0,
        })
    }
}

/// 1 µs to 1 h at 3 significant figures; longer values are clamped (and then visible as max).
fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A keep-alive server answering every request (no body) with 200 after `delay`.
    async fn server(delay: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            tokio::time::sleep(delay).await;
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        addr
    }

    fn ok(status: u16, _: &Bytes) -> Outcome<()> {
        if status == 200 {
            Outcome::Ok(None)
        } else {
            Outcome::Err(status.to_string())
        }
    }

    #[tokio::test]
    async fn a_paced_run_keeps_to_its_schedule() {
        let addr = server(Duration::ZERO).await;
        let spec = LoadSpec {
            addr,
            connections: 8,
            stop: Stop::Count(100),
            rate: Some(500.0),
        };
        let started = Instant::now();
        let r = run(&spec, |_| Req::get("/"), ok).await.unwrap();
        // Request 99 is due 198 ms after the start, and none leaves early.
        assert!(started.elapsed() >= Duration::from_millis(198));
        assert!(r.elapsed >= Duration::from_millis(198), "{:?}", r.elapsed);
        assert_eq!((r.ok, r.sent, r.error_count()), (100, 100, 0));
    }

    #[tokio::test]
    async fn a_paced_run_charges_the_server_for_requests_that_fell_due_while_it_was_slow() {
        // One connection, a server taking 40 ms, requests due every 5 ms: request n
        // leaves at about n × 40 ms, and its latency counts from n × 5 ms.
        let addr = server(Duration::from_millis(40)).await;
        let paced = LoadSpec {
            addr,
            connections: 1,
            stop: Stop::Count(10),
            rate: Some(200.0),
        };
        let r = run(&paced, |_| Req::get("/"), ok).await.unwrap();
        assert_eq!(r.ok, 10);
        // The last: sent after nine answers (≥ 360 ms), due at 45 ms, answered 40 ms on.
        assert!(r.latency.max() >= 355_000, "max {} µs", r.latency.max());
        // Closed, the same load sees only each request's own 40 ms.
        let closed = LoadSpec {
            rate: None,
            ..paced
        };
        let r = run(&closed, |_| Req::get("/"), ok).await.unwrap();
        assert_eq!(r.ok, 10);
        assert!(r.latency.min() >= 40_000, "min {} µs", r.latency.min());
        assert!(r.latency.max() < 355_000, "max {} µs", r.latency.max());
    }
}

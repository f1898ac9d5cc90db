//! Prometheus metrics: HTTP by matched route and status, orders by outcome,
//! notifications by verdict, stock per product, jobs and orders by state.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use kami_store::BatchStats;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::state::Shared;

const WRITER_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
];

/// The process-wide recorder (metrics has one global recorder).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ])
            .expect("static buckets are valid")
            .set_buckets_for_metric(
                // The writers' and the Redis gate's batches.
                metrics_exporter_prometheus::Matcher::Suffix("_batch_size".into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            )
            .expect("static buckets are valid")
            // A batch's commit and its oldest request's wait: a drop's are a
            // few milliseconds, their tail what a buyer's p99 is. Named in
            // full: a prefix matcher also caught `kami_writer_batch_size`,
            // whose sizes then fell in buckets of seconds (up to `le="1"`).
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("kami_writer_wait_seconds".into()),
                WRITER_SECONDS,
            )
            .expect("static buckets are valid")
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("kami_writer_commit_seconds".into()),
                WRITER_SECONDS,
            )
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // `build_recorder` leaves the upkeep to us: until it runs, every
        // histogram sample is kept in memory (a server 3.7 million requests
        // had reached held 100 MB more, docs/PERFORMANCE.md stop 22), for as
        // long as nothing scrapes `/metrics`. One thread for the process.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            });
        // Fails only if another recorder is installed, in which case ours
        // simply renders nothing new; serving must not depend on it.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Counters an operator alerts on, at zero from the start: a counter the
/// recorder has not yet seen is absent from `/metrics`, and an alert or a
/// dashboard written against it found no series until the first refusal
/// (a conformance audit). Per channel where the channel is a label.
pub fn announce_counters(channels: &[&'static str], redis: bool) {
    for class in crate::rate_limit::CLASS_LABELS {
        metrics::counter!("kami_rate_limited_total", "class" => class).absolute(0);
    }
    for writer in ["orders", "payments"] {
        metrics::counter!("kami_shed_total", "writer" => writer).absolute(0);
    }
    metrics::counter!("kami_body_budget_refusals_total").absolute(0);
    metrics::counter!("kami_connections_refused_total", "reason" => "per_address").absolute(0);
    for &channel in channels {
        metrics::counter!("kami_reconciled_payments_total", "channel" => channel).absolute(0);
        metrics::counter!("kami_notifications_unrecorded_total", "channel" => channel).absolute(0);
    }
    if redis {
        for what in ["gate", "rate_limit"] {
            metrics::counter!("kami_redis_fallbacks_total", "what" => what).absolute(0);
        }
    }
}

/// A group-commit transaction: its requests, its oldest request's wait for
/// a writer, and its commit.
pub fn batch(writer: &'static str, b: BatchStats) {
    metrics::histogram!("kami_writer_batch_size", "writer" => writer).record(b.size as f64);
    metrics::histogram!("kami_writer_wait_seconds", "writer" => writer)
        .record(b.waited.as_secs_f64());
    metrics::histogram!("kami_writer_commit_seconds", "writer" => writer)
        .record(b.took.as_secs_f64());
}

/// Records every request's route, method, status and duration
/// (`kami_http_*`). A layer of its own rather than
/// `axum::middleware::from_fn`, which for every request cloned the route's
/// service, boxed it again as the `Next` and boxed the middleware's future:
/// 3,100 of a `/healthz`'s 39,000 instructions went to this middleware
/// (callgrind), most of them to that machinery.
#[derive(Clone, Copy, Default)]
pub struct TrackHttpLayer;

impl<S> tower::Layer<S> for TrackHttpLayer {
    type Service = TrackHttp<S>;

    fn layer(&self, inner: S) -> TrackHttp<S> {
        TrackHttp { inner }
    }
}

#[derive(Clone)]
pub struct TrackHttp<S> {
    inner: S,
}

impl<S> tower::Service<Request> for TrackHttp<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = method_label(req.method());
        Tracked {
            started: Instant::now(),
            route,
            method,
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer on its way, and what to record of it.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
        method: &'static str,
        started: Instant,
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Ok(res) = &out {
            let route = this.route.as_ref().map_or("unmatched", |p| p.as_str());
            let status = res.status().as_u16();
            let seconds = this.started.elapsed().as_secs_f64();
            let method = *this.method;
            ROUTES.with_borrow_mut(|routes| match routes.get_mut(route) {
                Some(m) => m.record(route, method, status, seconds),
                None => {
                    let mut m = RouteMetrics::new(route);
                    m.record(route, method, status, seconds);
                    routes.insert(route.to_owned(), m);
                }
            });
        }
        Poll::Ready(out)
    }
}

const UPKEEP_EVERY: Duration = Duration::from_secs(5);

thread_local! {
    /// Each HTTP worker's handles of the per-route series: building a
    /// label set and looking it up in the registry on every request
    /// (three strings allocated, hashed and compared) was 3–4% of the
    /// server's CPU in a drop (perf). The handles point at the same
    /// series whichever thread holds them.
    static ROUTES: RefCell<HashMap<String, RouteMetrics>> = RefCell::new(HashMap::new());
}

thread_local! {
    /// Each worker's handles of the counters an order the gate turns away
    /// bumps (as `ROUTES`): after a drop that is every order, and looking
    /// them up per order was 2% of a sold-out answer's instructions.
    static GATE_REJECTIONS: RefCell<Vec<(&'static str, Counter, Counter)>> =
        const { RefCell::new(Vec::new()) };
}

/// Counts an order the stock gate answered without the database.
pub fn gate_rejection(outcome: &'static str) {
    GATE_REJECTIONS.with_borrow_mut(|seen| {
        let at = match seen.iter().position(|(o, ..)| *o == outcome) {
            Some(at) => at,
            None => {
                seen.push((
                    outcome,
                    metrics::counter!("kami_gate_rejections_total", "outcome" => outcome),
                    metrics::counter!("kami_orders_total", "outcome" => outcome),
                ));
                seen.len() - 1
            }
        };
        seen[at].1.increment(1);
        seen[at].2.increment(1);
    });
}

struct RouteMetrics {
    duration: Histogram,
    by_answer: Vec<(&'static str, u16, Counter)>,
}

impl RouteMetrics {
    fn new(route: &str) -> Self {
        RouteMetrics {
            duration: metrics::histogram!("kami_http_request_duration_seconds", "route" => route.to_owned()),
            by_answer: Vec::new(),
        }
    }

    fn record(&mut self, route: &str, method: &'static str, status: u16, seconds: f64) {
        self.duration.record(seconds);
        let at = match self
            .by_answer
            .iter()
            .position(|(m, s, _)| *m == method && *s == status)
        {
            Some(at) => at,
            None => {
                let counter = metrics::counter!("kami_http_requests_total", "route" => route.to_owned(), "method" => method, "status" => status.to_string());
                self.by_answer.push((method, status, counter));
                self.by_answer.len() - 1
            }
        };
        self.by_answer[at].2.increment(1);
    }
}

/// The method as a label: the standard ones by name, any other as `other`,
/// so a stranger's invented methods cannot mint series without end.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `/metrics`: gauges that live in the database are read at scrape time.
pub async fn render(State(state): State<Shared>) -> Response {
    // Stock from the gate: counting a million codes per scrape would load
    // the database during exactly the drop one wants to watch.
    if let Ok(products) = state
        .catalog
        .products(state.store.as_ref(), &state.gate)
        .await
    {
        for p in products {
            metrics::gauge!("kami_stock_available", "product_id" => p.id.to_string())
                .set(p.stock as f64);
        }
    }
    metrics::gauge!("kami_writer_queue_depth", "writer" => "orders")
        .set(state.order_writer.depth() as f64);
    metrics::gauge!("kami_writer_queue_depth", "writer" => "payments")
        .set(state.pay_writers.iter().map(|w| w.depth()).sum::<usize>() as f64);
    let paths = state.store.order_batch_paths();
    for (path, n) in [
        ("one_trip", paths.one_trip),
        ("writer_thread", paths.writer_thread),
        ("counted", paths.counted),
        ("one_by_one", paths.one_by_one),
    ] {
        metrics::counter!("kami_order_batches_total", "path" => path).absolute(n);
    }
    metrics::gauge!("kami_body_budget_held_bytes").set(state.body_budget.held() as f64);
    metrics::gauge!("kami_body_budget_bytes").set(state.body_budget.limit() as f64);
    if let Ok(counts) = state.store.count_orders_by_status().await {
        for (status, n) in counts {
            metrics::gauge!("kami_orders_by_status", "status" => status).set(n as f64);
        }
    }
    if let Ok(jobs) = state.store.job_counts().await {
        metrics::gauge!("kami_jobs", "state" => "queued").set(jobs.queued as f64);
        metrics::gauge!("kami_jobs", "state" => "dead").set(jobs.dead as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
    )
        .into_response()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The recorder's upkeep has a thread: without it every request's
    /// duration stays in memory until a scrape.
    #[test]
    fn the_upkeep_runs_in_a_thread_of_its_own() {
        super::handle();
        let names = || -> Vec<String> {
            std::fs::read_dir("/proc/self/task")
                .expect("the process's threads")
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|n| n.trim().to_string())
                .collect()
        };
        // A new thread names itself once it runs: give it a moment.
        for _ in 0..200 {
            if names().iter().any(|n| n == "metrics-upkeep") {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("no metrics-upkeep thread: {:?}", names());
    }
}

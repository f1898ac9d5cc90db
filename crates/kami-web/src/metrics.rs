//! Prometheus metrics: HTTP by matched route and status, orders by outcome,
//! notifications by verdict, stock per product, jobs and orders by state.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::state::Shared;

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
                metrics_exporter_prometheus::Matcher::Full("kami_writer_batch_size".into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            )
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed, in which case ours
        // simply renders nothing new; serving must not depend on it.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Requests per group-commit transaction.
pub fn batch_size(writer: &'static str, n: usize) {
    metrics::histogram!("kami_writer_batch_size", "writer" => writer).record(n as f64);
}

pub async fn track_http(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("kami_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("kami_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    res
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

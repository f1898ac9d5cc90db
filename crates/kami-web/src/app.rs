//! Building the application apart from serving it, so tests and the binary
//! wire the same router (zero2prod's `startup.rs`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::Router;
use kami_core::secrets::Keys;
use kami_pay::sandbox::Sandbox;
use kami_pay::Channel;
use kami_store::{Backend, GroupCommit, Store, WriterConfig};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tower::{Service, ServiceBuilder};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::api::{self, admin, public};
use crate::body_budget::{BodyBudget, RefuseOverBudgetLayer};
use crate::breaker::Breakers;
use crate::error::ApiError;
use crate::peer_cap::ConnectionCap;
use crate::rate_limit::RateLimits;
use crate::redis_conn::Redis;
use crate::services::catalog::Catalog;
use crate::services::channels::{ChannelSet, LiveChannel, Source};
use crate::services::gate::StockGate;
use crate::services::settings::ShopSettings;
use crate::state::{AppState, OrderWriter, PayWriter, Settings, Shared};
use crate::{metrics, pay, shop, workers};

const BODY_LIMIT: usize = 1024 * 1024;

/// `gateways` are the real payment channels built from kami.toml (kami-pay's
/// registry), each with whether it is enabled (`enabled = false` keeps a
/// channel that could be built for the notifications of orders made on it),
/// and `config_managed` the names of every `[channels.*]` section; the
/// sandbox is added here when its secret is set. Channels saved in the admin panel are added by
/// `services::channels::load_stored`. Fails only on a Redis URL that does
/// not parse (Redis itself need not be up).
pub fn build_state(
    store: Arc<dyn Store>,
    keys: Keys,
    settings: Settings,
    gateways: Vec<(Arc<dyn Channel>, bool)>,
    mut config_managed: Vec<String>,
) -> Result<Shared, ::redis::RedisError> {
    let mut channels: Vec<(Arc<dyn Channel>, bool)> = gateways;
    let sandbox = settings
        .sandbox_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|secret| {
            Arc::new(Sandbox::new(
                secret,
                format!("{}/pay/sandbox", settings.public_url),
            ))
        });
    if let Some(sb) = &sandbox {
        channels.push((sb.clone(), true));
        config_managed.push(kami_pay::sandbox::NAME.into());
    }
    metrics::handle();
    let names: Vec<&'static str> = channels.iter().map(|(c, _)| c.name()).collect();
    metrics::announce_counters(&names, settings.redis.is_some());
    let breakers = Breakers::new(
        &names,
        settings.breaker_threshold,
        settings.breaker_cooldown_ms,
    );
    let (order_writer, pay_writers) = writers(&store, &settings);
    let channels = ChannelSet {
        entries: channels
            .into_iter()
            .map(|(channel, enabled)| LiveChannel {
                channel,
                enabled,
                source: Source::Config,
            })
            .collect(),
        config_managed,
        sandbox,
    };
    let redis = match &settings.redis {
        Some(r) => Some(Arc::new(Redis::open(r)?)),
        None => None,
    };
    let (limits, gate) = match redis {
        Some(redis) => (
            RateLimits::shared(settings.rate_limits, redis.clone()),
            StockGate::shared(redis),
        ),
        None => (RateLimits::new(settings.rate_limits), StockGate::default()),
    };
    let body_budget_bytes = settings.body_budget;
    Ok(Arc::new(AppState {
        store,
        keys,
        limits,
        breakers,
        admin: crate::admin::AdminState::start(),
        shop: ArcSwap::from_pointee(ShopSettings::from_config(&settings)),
        settings,
        channels: ArcSwap::from_pointee(channels),
        wake_worker: Notify::new(),
        templates: shop::templates(),
        gate,
        catalog: Catalog::default(),
        order_writer,
        pay_writers,
        recent_orders: Default::default(),
        expiring: Default::default(),
        body_budget: Arc::new(BodyBudget::new(body_budget_bytes)),
        readiness: Default::default(),
    }))
}

/// Order writers, and payment writers' shards (each of
/// `parallel / shards` writers).
fn writer_counts(backend: Backend) -> (usize, usize) {
    match backend {
        Backend::Sqlite => (3, 1),
        // Two since a plain batch is one round trip (stop 44): four
        // overlapped the five round trips of a counted batch, but with one
        // round trip per batch four cost PostgreSQL a fifth more CPU per
        // order in contention (alternated full runs: 46.8-49.3 us against
        // 59.8-64.2, orders a second 17,672-18,364 against 15,071-16,657,
        // docs/PERFORMANCE.md).
        Backend::Postgres => (2, 2),
    }
}

/// How many write transactions the writers run side by side at most: the
/// database connections a drop and its payments need at once.
pub fn writer_transactions(backend: Backend) -> u32 {
    let (parallel, shards) = writer_counts(backend);
    (parallel + shards * (parallel / shards)) as u32
}

/// The group-commit writers. SQLite has one writer thread: three tasks feed
/// it, so the next batch is already waiting there when one commits (with one
/// task, the thread sat idle until that task was scheduled again among the
/// HTTP tasks to collect the next batch) and another while a committed
/// payment batch waits for the WAL's sync before it is answered
/// (`wal_sync.rs`; with two, notifications a second fell by a fifth with
/// that wait, by an eighth with three: docs/PERFORMANCE.md, stop 40).
/// PostgreSQL runs two
/// transactions side by side (their claims skip each other's rows), so one
/// is written while the other commits.
fn writers(store: &Arc<dyn Store>, settings: &Settings) -> (OrderWriter, Vec<PayWriter>) {
    let (parallel, shards) = writer_counts(store.backend());
    let cfg = WriterConfig {
        queue: settings.writer_queue,
        max_batch: settings.writer_batch,
        writers: parallel,
        even_shares: store.backend() == Backend::Postgres,
    };
    let s = store.clone();
    let orders = GroupCommit::spawn(
        cfg,
        move |batch| {
            let s = s.clone();
            async move { s.create_orders(&batch).await }
        },
        |b| metrics::batch("orders", b),
    );
    // PostgreSQL: a writer per shard of order ids, so one order's twins
    // meet in the same batch or queue. SQLite: one queue, two feeding tasks.
    let payments = (0..shards)
        .map(|_| {
            let s = store.clone();
            GroupCommit::spawn(
                WriterConfig {
                    writers: parallel / shards,
                    ..cfg
                },
                move |batch| {
                    let s = s.clone();
                    async move { s.pay_orders(&batch).await }
                },
                |b| metrics::batch("payments", b),
            )
        })
        .collect();
    (orders, payments)
}

/// tower-http's own line for a 5xx answer. A 503 is Kami turning work away
/// on purpose (load shedding, a database busy or gone), already logged and
/// counted where it was decided: at `debug` here, or a storm's shedding
/// would write an error per request. Anything else stays an error.
fn log_server_error(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: std::time::Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass::StatusCode as Status;
    match class {
        Status(code) if code == StatusCode::SERVICE_UNAVAILABLE => {
            tracing::debug!(classification = %class, ?latency, "response refused for now")
        }
        _ => tracing::error!(classification = %class, ?latency, "response failed"),
    }
}

/// The application as one service: the routes inside the layers every
/// answer passes through (request id, trace span, security headers, error
/// pages). The layers wrap the router once, outside it. Added with
/// `Router::layer` they wrapped every route's boxed service instead, and
/// axum clones a route's whole stack of boxes for each request and boxes
/// each layer's future (`CloneService::clone_box` alone was 3.5% of the
/// server's samples in a drop); outside, a `/healthz` costs 22% fewer
/// instructions (callgrind, docs/PERFORMANCE.md stop 23).
pub fn app(
    state: Shared,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static
{
    let request_id = HeaderName::from_static("x-request-id");
    ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        .map_request(crate::drain::drain_unread)
        .map_request(drop_unfit_request_id)
        .layer(SetRequestIdLayer::new(
            request_id.clone(),
            RequestIds::new(),
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let rid = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    // The query string is left out: order pages carry access tokens.
                    // Strings, not `%` (Display) values: recorded as `&str`, the
                    // JSON log writes them without `fmt` (the same JSON; a span's
                    // fields were a twelfth of a `/healthz`'s instructions).
                    tracing::info_span!(
                        "request",
                        request_id = rid,
                        method = req.method().as_str(),
                        path = req.uri().path(),
                        order_no = tracing::field::Empty
                    )
                })
                .on_failure(log_server_error),
        )
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(crate::html_errors::FriendlyErrorsLayer::new(state.clone()))
        .layer(RefuseOverBudgetLayer)
        .service(router(state))
}

/// The routes, each with its body limit and its request metrics.
pub fn router(state: Shared) -> Router {
    let routes = Router::new()
        // Its own limit (16 MiB), enforced by the handler once the key is
        // checked: API.md's 401 comes before anything about the body.
        .route("/api/v1/admin/products/{id}/cards", post(admin::import))
        .route("/api/v1/products", get(public::list_products))
        .route("/api/v1/products/{id}", get(public::get_product))
        .route("/api/v1/orders", post(public::create_order))
        .route("/api/v1/orders/lookup", post(public::lookup_orders))
        .route("/api/v1/orders/{order_no}", get(public::get_order))
        .route(
            "/api/v1/admin/products",
            post(admin::create_product).get(admin::list_products),
        )
        .route("/api/v1/admin/products/{id}", patch(admin::update_product))
        .route("/api/v1/admin/products/{id}/stock", get(admin::stock))
        .route("/api/v1/admin/orders", get(admin::list_orders))
        .route("/api/v1/admin/orders/{order_no}", get(admin::get_order))
        .route("/api/v1/admin/events", get(admin::events))
        .route(
            "/api/v1/admin/coupons",
            post(api::coupons::create).get(api::coupons::list),
        )
        .route("/api/v1/admin/coupons/{id}", patch(api::coupons::update))
        .route(
            "/api/v1/products/{id}/quote",
            get(api::coupons::public_quote),
        )
        .route("/api/v1/openapi.json", get(api::openapi::document))
        .route(
            "/pay/sandbox/notify",
            get(sandbox_notify).post(sandbox_notify),
        )
        // Before `/pay/sandbox/{order_no}`, which would read "return" as
        // an order number.
        .route("/pay/sandbox/return", get(sandbox_return))
        .route(
            "/pay/sandbox/{order_no}",
            get(shop::sandbox_page).post(shop::sandbox_pay),
        )
        .route("/pay/{channel}/notify", get(pay::notify).post(pay::notify))
        .route("/pay/{channel}/return", get(pay::return_page))
        .route("/pay/{channel}/{order_no}", get(shop::gateway_page))
        .route("/api/v1/channels", get(public::list_channels))
        .route("/", get(shop::index))
        .route("/products/{id}", get(shop::product))
        .route("/products/{id}/buy", post(shop::buy))
        .route("/products/{id}/quote", get(shop::quote_fragment))
        .route("/orders/{order_no}", get(shop::order_page))
        .route("/orders/{order_no}/codes.txt", get(shop::codes_txt))
        .route("/lookup", get(shop::lookup_page).post(shop::lookup_submit))
        .route("/static/kami.css", get(shop::css))
        .route("/static/kami.js", get(shop::js))
        .route("/healthz", get(healthz))
        .route("/readyz", get(crate::readiness::readyz))
        .route("/metrics", get(metrics::render))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    routes
        .merge(crate::admin::router())
        .fallback(fallback)
        .route_layer(metrics::TrackHttpLayer)
        .with_state(state)
}

/// Longest `x-request-id` a client may choose; a longer one, or one with
/// spaces or bytes outside printable ASCII, is replaced by one of ours.
const MAX_CLIENT_REQUEST_ID: usize = 128;

/// A client's `x-request-id` is echoed on the answer and written into every
/// log line of the request: kept only if it is short and plain, so a
/// stranger cannot make each line of the log carry kilobytes of theirs.
fn drop_unfit_request_id(mut req: Request) -> Request {
    let unfit = req.headers().get("x-request-id").is_some_and(|v| {
        v.len() > MAX_CLIENT_REQUEST_ID || !v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b))
    });
    if unfit {
        req.headers_mut().remove("x-request-id");
    }
    req
}

/// `x-request-id` for a request that comes without one: a random prefix
/// drawn once per router and a counter. tower-http's `MakeRequestUuid` asks
/// the kernel for 16 random bytes per request (a `getrandom` system call, 6%
/// of an HTTP worker's samples in a drop); an id need only be unique in the
/// logs, not unguessable.
/// Also the ids of the answers the accept loop writes itself (`listen.rs`).
#[derive(Clone)]
pub(crate) struct RequestIds {
    prefix: u32,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        Self {
            prefix: rand::random(),
            next: Arc::default(),
        }
    }

    pub(crate) fn next(&self) -> String {
        String::from_utf8(self.next_bytes().to_vec()).expect("hex digits and a dash")
    }

    /// `{prefix:08x}-{n:012x}`, written by `hex` into a buffer: through
    /// `format!` it was 1,600 instructions of every request (callgrind).
    fn next_bytes(&self) -> [u8; 21] {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut id = [b'-'; 21];
        hex::encode_to_slice(self.prefix.to_be_bytes(), &mut id[..8]).expect("8 digits");
        // The low 48 bits, as `{:012x}` writes any count below 2^48.
        hex::encode_to_slice(&n.to_be_bytes()[2..], &mut id[9..]).expect("12 digits");
        id
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_bytes(&self.next_bytes())
            .ok()
            .map(RequestId::new)
    }
}

async fn sandbox_notify(
    state: State<Shared>,
    client: crate::extract::ClientIp,
    query: axum::extract::RawQuery,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    pay::notify(
        state,
        client,
        Ok(axum::extract::Path(kami_pay::sandbox::NAME.to_string())),
        query,
        headers,
        body,
    )
    .await
}

async fn sandbox_return(
    state: State<Shared>,
    limited: crate::extract::ReadLimited,
    headers: axum::http::HeaderMap,
    query: axum::extract::Query<pay::ReturnQuery>,
) -> Response {
    pay::return_page(
        state,
        limited,
        headers,
        axum::extract::Path(kami_pay::sandbox::NAME.to_string()),
        query,
    )
    .await
}

async fn fallback() -> Response {
    ApiError::not_found("route").into_response()
}

async fn healthz() -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
        .into_response()
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish, and stops the background worker.
pub async fn serve(
    listener: TcpListener,
    state: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Err(e) = state.gate.load(state.store.as_ref()).await {
        // Without counts the gate lets everything through to the database,
        // which is slower but never wrong.
        tracing::warn!(error = %e, "could not load the stock gate");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = workers::spawn(state.clone(), stop_rx.clone());
    let gate_sync = workers::spawn_gate_sync(state.clone(), stop_rx);
    let guards = crate::listen::Guards {
        body_budget: state.body_budget.clone(),
        per_address: (state.settings.rate_limits && state.settings.connections_per_address > 0)
            .then(|| {
                ConnectionCap::new(
                    state.settings.connections_per_address,
                    state.settings.trusted_proxies.clone(),
                )
            }),
    };
    crate::listen::serve(listener, app(state), guards, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = worker.await;
    let _ = gate_sync.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::RequestIds;

    #[test]
    fn request_ids_read_as_format_writes_them() {
        let ids = RequestIds::new();
        for n in [
            0u64,
            1,
            0xabc,
            0xffff_ffff,
            0x0123_4567_89ab,
            0xffff_ffff_ffff,
        ] {
            ids.next.store(n, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(ids.next(), format!("{:08x}-{n:012x}", ids.prefix));
        }
        assert_ne!(ids.next(), ids.next(), "each request its own id");
    }
}

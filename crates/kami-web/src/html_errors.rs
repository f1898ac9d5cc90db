//! Friendly error pages for the HTML routes. Handlers of the storefront and
//! the panel render their own errors; what reaches a browser past them —
//! the router's 404 and 405, a form body over the size limit (413), a form
//! the extractor could not read (400/422) — comes out of axum as plain text,
//! JSON or an empty body. This layer turns any such error response on a
//! page route into the storefront's or the panel's error page, translated,
//! with a way back. The JSON API, payment notifications, health checks,
//! metrics and static files keep their own answers, made API.md's JSON
//! error where the router or an extractor answered; so does a page route
//! for a program whose `Accept` asks for JSON and not HTML.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::state::Shared;

/// Paths whose errors are the client's business to parse, not a person's.
fn is_page(path: &str) -> bool {
    !(path.starts_with("/api/")
        || path.starts_with("/static/")
        || path.ends_with("/notify")
        || matches!(path, "/healthz" | "/readyz" | "/metrics"))
}

/// A machine route, as far as its errors go (`is_page` false).
#[derive(Clone, Copy)]
struct Machine {
    /// `/api/…`: the JSON API.
    api: bool,
    /// `/healthz`, `/readyz`, `/metrics`.
    health: bool,
    /// A gateway's `…/notify`.
    notify: bool,
}

impl Machine {
    fn of(path: &str) -> Self {
        Self {
            api: path.starts_with("/api/"),
            health: matches!(path, "/healthz" | "/readyz" | "/metrics"),
            notify: path.ends_with("/notify"),
        }
    }
}

/// Whether an error answer on a machine route must be rewritten as API.md's
/// JSON error: the router's and the extractors' own answers (a 405, a body
/// over the limit, a query string that does not parse) are plain text or
/// empty. A gateway's failure reply is in its own format and is kept: on a
/// notify route only the statuses no channel answers with are rewritten.
fn needs_json_error(route: Machine, res: &Response) -> bool {
    error_without_json(res)
        && (route.api
            || route.health
            || (route.notify
                && matches!(
                    res.status(),
                    StatusCode::METHOD_NOT_ALLOWED | StatusCode::PAYLOAD_TOO_LARGE
                )))
}

/// An error status whose body is not API.md's JSON.
fn error_without_json(res: &Response) -> bool {
    let status = res.status();
    (status.is_client_error() || status.is_server_error()) && !has_type(res, "application/json")
}

fn has_type(res: &Response, media_type: &str) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(media_type.as_bytes()))
}

/// A program asking for JSON (and not for a page) on a page route — a
/// client probing a path or calling with the wrong method — gets the JSON
/// error rather than an HTML page it cannot read.
fn wants_json(headers: &axum::http::HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    accept.contains("application/json") && !accept.contains("text/html")
}

/// The same answer with `{"error": {"code", "message", "param"}}` as its
/// body; its status and headers (`Allow`, `Retry-After`) unchanged.
async fn json_error(res: Response) -> Response {
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| {
            parts
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
        });
    let mut err = crate::error::ApiError::new(parts.status, status_code_name(parts.status), text);
    // A query string the extractor could not read (a parameter given twice,
    // `?limit=2&limit=3`): said in our words, naming the parameter.
    if let Some(rest) = err
        .message
        .strip_prefix("Failed to deserialize query string: ")
    {
        err.param = crate::extract::field_in_message(rest);
        err.message = format!("invalid query string: {rest}");
    }
    let body = serde_json::to_vec(&err.body()).expect("an error body serializes");
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Answers that may carry an order's codes or its access token (the order
/// pages and the pay pages, the order API, the lookups): never stored by a
/// browser's or a proxy's cache.
fn is_private(path: &str) -> bool {
    path.starts_with("/orders/")
        || path.starts_with("/api/v1/orders")
        || path.starts_with("/pay/")
        || path == "/lookup"
}

/// A path or query that decodes to a NUL character. No name, number or
/// token of Kami's holds one and PostgreSQL's text cannot: looked up, it
/// failed as a database error (500 for an order number, a cursor or an
/// e-mail filter). A payment notification is left to its channel, which
/// refuses and records it (`services::notify`).
fn spells_nul(uri: &axum::http::Uri) -> bool {
    let path = uri.path();
    let nul = |s: &str| s.as_bytes().windows(3).any(|w| w == b"%00");
    (nul(path) || uri.query().is_some_and(nul))
        && !(path.starts_with("/pay/") && path.ends_with("/notify"))
}

/// Gives every answer its final form: an error on a machine route as
/// API.md's JSON, an error on a page route as the storefront's or the
/// panel's page, an answer that may carry codes or tokens `no-store`, and a
/// 429 its `Retry-After`. A layer of its own rather than
/// `axum::middleware::from_fn_with_state`, which for every request cloned
/// and boxed the inner service and boxed the middleware's future (1,750 of
/// a `/healthz`'s instructions went to this middleware, callgrind); here
/// only an error answer whose body must be read is boxed.
#[derive(Clone)]
pub struct FriendlyErrorsLayer {
    state: Shared,
    /// Served over https: every answer carries HSTS (`security_headers`).
    hsts: bool,
}

impl FriendlyErrorsLayer {
    pub fn new(state: Shared) -> Self {
        let hsts = state.settings.served_over_https();
        Self { state, hsts }
    }
}

/// The policy every page runs under: nothing from elsewhere, no inline
/// script or style, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The security headers of every answer whose handler did not choose its
/// own. Set here, with the other headers every answer gets, rather than by
/// a `SetResponseHeaderLayer` each: five layers, five futures around every
/// answer (callgrind). `hsts`: a shop whose public address is https sits
/// behind a TLS proxy, and browsers are told to use nothing else for a year
/// (over plain http the header means nothing, and would pin a test shop to
/// https).
fn security_headers(res: &mut Response, hsts: bool) {
    let headers = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers
            .entry(name)
            .or_insert(header::HeaderValue::from_static(value));
    }
    if hsts {
        headers
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert(header::HeaderValue::from_static("max-age=31536000"));
    }
}

impl<S> Layer<S> for FriendlyErrorsLayer {
    type Service = FriendlyErrors<S>;

    fn layer(&self, inner: S) -> FriendlyErrors<S> {
        FriendlyErrors {
            state: self.state.clone(),
            hsts: self.hsts,
            inner,
        }
    }
}

#[derive(Clone)]
pub struct FriendlyErrors<S> {
    state: Shared,
    hsts: bool,
    inner: S,
}

impl<S> Service<Request> for FriendlyErrors<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Friendly<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Friendly<S::Future> {
        if spells_nul(req.uri()) {
            let refused = crate::error::ApiError::invalid(
                "the address may not contain the NUL character (%00)",
            )
            .into_response();
            return Friendly::Answered {
                res: Some(final_headers(refused, false, self.hsts)),
            };
        }
        let path = req.uri().path();
        let route = if is_page(path) {
            Route::Page {
                state: self.state.clone(),
                headers: req.headers().clone(),
                admin: path == "/admin" || path.starts_with("/admin/"),
            }
        } else {
            Route::Machine(Machine::of(path))
        };
        let after = After {
            private: is_private(path),
            hsts: self.hsts,
            route,
        };
        Friendly::Waiting {
            inner: self.inner.call(req),
            after: Some(after),
        }
    }
}

enum Route {
    Machine(Machine),
    /// A page: what its error page is made from.
    Page {
        state: Shared,
        headers: axum::http::HeaderMap,
        admin: bool,
    },
}

/// What becomes of a request's answer, decided from the request.
struct After {
    private: bool,
    hsts: bool,
    route: Route,
}

enum Finished {
    Now(Response),
    /// The answer's body must be read first (`json_error`).
    Later(BoxFuture<'static, Response>),
}

impl After {
    fn finish(self, res: Response) -> Finished {
        let (private, hsts) = (self.private, self.hsts);
        let later = move |res: Response| -> Finished {
            Finished::Later(Box::pin(async move {
                final_headers(json_error(res).await, private, hsts)
            }))
        };
        let (state, headers, admin) = match self.route {
            Route::Machine(route) => {
                if !needs_json_error(route, &res) {
                    return Finished::Now(final_headers(res, private, hsts));
                }
                // API.md's `invalid_request` is 422; axum's extractors answer
                // a query string or a path segment they cannot read with 400.
                let mut res = res;
                if res.status() == StatusCode::BAD_REQUEST && route.api {
                    *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                }
                return later(res);
            }
            Route::Page {
                state,
                headers,
                admin,
            } => (state, headers, admin),
        };
        let status = res.status();
        if wants_json(&headers) {
            return if error_without_json(&res) && !has_type(&res, "text/html") {
                later(res)
            } else {
                Finished::Now(final_headers(res, private, hsts))
            };
        }
        if has_type(&res, "text/html") || !(status.is_client_error() || status.is_server_error()) {
            return Finished::Now(final_headers(res, private, hsts));
        }
        let mut page = if admin {
            crate::admin::error_page(status)
        } else {
            crate::shop::error_page(&state, &headers, status)
        };
        // What the original answer told the client beyond its body still holds.
        for name in [header::RETRY_AFTER, header::ALLOW] {
            if let Some(v) = res.headers().get(&name) {
                page.headers_mut().insert(name, v.clone());
            }
        }
        Finished::Now(final_headers(page, private, hsts))
    }
}

/// The headers every answer gets here, whatever made it.
fn final_headers(mut res: Response, private: bool, hsts: bool) -> Response {
    security_headers(&mut res, hsts);
    if private && !res.headers().contains_key(header::CACHE_CONTROL) {
        res.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
    }
    // API.md: a limited request gets 429 with `Retry-After`, whatever said it.
    if res.status() == StatusCode::TOO_MANY_REQUESTS
        && !res.headers().contains_key(header::RETRY_AFTER)
    {
        res.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    res
}

pin_project_lite::pin_project! {
    /// `FriendlyErrors`' answer on its way.
    #[project = FriendlyProj]
    pub enum Friendly<F> {
        Waiting { #[pin] inner: F, after: Option<After> },
        Rewriting { rewrite: BoxFuture<'static, Response> },
        Answered { res: Option<Response> },
    }
}

impl<F> Future for Friendly<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                FriendlyProj::Answered { res } => {
                    return Poll::Ready(Ok(res.take().expect("polled after it answered")));
                }
                FriendlyProj::Rewriting { rewrite } => return rewrite.as_mut().poll(cx).map(Ok),
                FriendlyProj::Waiting { inner, after } => {
                    let res = match std::task::ready!(inner.poll(cx)) {
                        Ok(res) => res,
                        Err(never) => match never {},
                    };
                    let after = after.take().expect("polled after it answered");
                    match after.finish(res) {
                        Finished::Now(res) => return Poll::Ready(Ok(res)),
                        Finished::Later(rewrite) => self.set(Friendly::Rewriting { rewrite }),
                    }
                }
            }
        }
    }
}

/// The error behind a bare status, for the pages' wording.
pub fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "invalid_request",
        _ => "internal_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_routes_keep_their_answers() {
        for p in [
            "/api/v1/orders",
            "/pay/epay/notify",
            "/pay/sandbox/notify",
            "/healthz",
            "/metrics",
            "/static/kami.css",
        ] {
            assert!(!is_page(p), "{p}");
        }
        for p in [
            "/",
            "/products/1/buy",
            "/nope",
            "/admin/nope",
            "/pay/sandbox/K1",
        ] {
            assert!(is_page(p), "{p}");
        }
    }
}

//! `Idempotency-Key` on the JSON API's POSTs (API.md, "Conventions"): the
//! first response is stored, sealed, and replayed for the same key and
//! body; the same key with another body is `idempotency_conflict`.
//!
//! Orders keep the key inside their own write transaction
//! (`api/public.rs`), so an order and its key are stored together. The
//! other POSTs (creating a product or a coupon, importing codes, looking up
//! orders) go through [`respond`]: the key is taken before the request runs,
//! so a retry that arrives while the first is still running is told so
//! (`409 idempotency_conflict`) instead of running it a second time, and the
//! response is stored when it ends, by a task a client hanging up does not
//! cancel. A server that dies (or a request that panics) between the two
//! leaves the key taken; it is handed to a retry after [`STALE_AFTER`],
//! and the request then runs again, which is the one case a retry can
//! repeat it.
//!
//! The admin API's answers are scoped by API key. The public endpoints
//! (orders, lookups) have no key to scope by: their request is bound to the
//! client that sent it ([`bound_to_client`]), so the same key and body from
//! another address is `idempotency_conflict` and never hears the first
//! client's answer (an order's access token, a lookup's codes).

use std::future::Future;
use std::net::IpAddr;

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kami_core::now_millis;
use kami_core::secrets::{ct_eq, Sealed};
use kami_store::{IdempotencyRecord, IDEMPOTENCY_IN_FLIGHT};

use crate::error::{ApiError, ApiResult};
use crate::services::orders::idem_context;
use crate::state::{AppState, Shared};

/// How long a key taken by a request that never ended stays taken: longer
/// than any request runs (a 16 MiB import included).
pub const STALE_AFTER: i64 = 10 * 60 * 1000;

/// The request's `Idempotency-Key`, if it sent one: 1–255 visible characters.
pub fn header_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(|k| Some(k.to_string()))
        .ok_or_else(|| {
            ApiError::invalid_param(
                "Idempotency-Key",
                "Idempotency-Key must be 1-255 visible characters",
            )
        })
}

/// A public endpoint's request as its idempotency key remembers it: the
/// body (and whatever else the handler counts as the request) followed by
/// the client's address as the rate limiter sees it (after trusted proxies,
/// an IPv6 client by its /64), so only that client can replay the answer.
pub fn bound_to_client(request: &[u8], ip: IpAddr) -> Vec<u8> {
    let client = crate::rate_limit::client_key(ip).to_string();
    let mut bound = Vec::with_capacity(request.len() + client.len() + 9);
    bound.extend_from_slice(request);
    bound.extend_from_slice(b"\nclient=");
    bound.extend_from_slice(client.as_bytes());
    bound
}

/// What a key remembers of its request: keyed by the master key, since a
/// body may hold a query password.
pub fn request_hash(state: &AppState, request: &[u8]) -> Vec<u8> {
    state.keys.request_fingerprint(request)
}

/// What a stored key says about a request: its response, or a conflict when
/// the key was first used with another request. `None` when the key's
/// request is still running. Keys stored by releases before the keyed hash
/// held a plain SHA-256 of the body; they still match, as wrapped by any
/// rotation since (`Keys::legacy_request_fingerprint`).
pub fn replay(
    state: &AppState,
    rec: IdempotencyRecord,
    hash: &[u8],
    request: &[u8],
) -> ApiResult<Option<Response>> {
    if !ct_eq(&rec.request_hash, hash)
        && !ct_eq(
            &rec.request_hash,
            &state.keys.legacy_request_fingerprint(request),
        )
    {
        return Err(ApiError::idempotency_conflict(
            "this Idempotency-Key was already used with a different request body",
        ));
    }
    if rec.status_code == IDEMPOTENCY_IN_FLIGHT {
        return Ok(None);
    }
    let body = state
        .keys
        .open(
            &idem_context(&rec.scope, &rec.key),
            &Sealed {
                ciphertext: rec.response,
                nonce: rec.response_nonce,
                key_id: state.keys.key_id(),
            },
        )
        .map_err(ApiError::internal)?;
    let status = StatusCode::from_u16(rec.status_code as u16).map_err(ApiError::internal)?;
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(Some(res))
}

/// Runs `run` once per key and request within `scope` (the route and, for
/// the admin API, the key's id, so one API key never sees another's
/// answers), or answers with what the first run answered. Without an
/// `Idempotency-Key` it just runs. Called after authentication and rate
/// limits, so a stranger can neither take keys nor read stored answers.
///
/// The run and the storing of its answer go on in a task of their own: a
/// client that hangs up mid-request does not cancel them, so its retry
/// hears the answer instead of running the request again.
pub async fn respond<Fut>(
    state: &Shared,
    headers: &HeaderMap,
    scope: String,
    request: &[u8],
    run: impl FnOnce() -> Fut + Send + 'static,
) -> Response
where
    Fut: Future<Output = Response> + Send + 'static,
{
    let key = match header_key(headers) {
        Ok(Some(key)) => key,
        Ok(None) => return run().await,
        Err(e) => return e.into_response(),
    };
    let hash = request_hash(state, request);
    let owner = kami_core::secrets::random_token("").into_bytes();
    match take(state, &scope, &key, &hash, request, &owner).await {
        Ok(Taken::Ours) => {}
        Ok(Taken::Answered(res)) => return res,
        Err(e) => return e.into_response(),
    }
    let state = state.clone();
    let task = tokio::spawn(async move {
        let res = run().await;
        let (parts, res_body) = res.into_parts();
        let bytes = match to_bytes(res_body, usize::MAX).await {
            Ok(b) => b,
            Err(e) => {
                release(&state, &scope, &key, &owner).await;
                return ApiError::internal(e).into_response();
            }
        };
        if kept(parts.status) {
            settle(&state, &scope, &key, hash, &owner, parts.status, &bytes).await;
        } else {
            release(&state, &scope, &key, &owner).await;
        }
        Response::from_parts(parts, Body::from(bytes))
    });
    // A panic in the request leaves the key taken (it may have done its
    // work): retries are told it is running until it is stale.
    task.await
        .unwrap_or_else(|e| ApiError::internal(e).into_response())
}

/// Stores the answer. A failure to store it after the request did its work
/// must not free the key (a retry would do the work again): it is tried
/// again, and if the database still fails the key stays taken, so retries
/// are refused until it is stale.
async fn settle(
    state: &Shared,
    scope: &str,
    key: &str,
    hash: Vec<u8>,
    owner: &[u8],
    status: StatusCode,
    body: &[u8],
) {
    let sealed = state.keys.seal(&idem_context(scope, key), body);
    let rec = IdempotencyRecord {
        scope: scope.to_string(),
        key: key.to_string(),
        request_hash: hash,
        status_code: i64::from(status.as_u16()),
        response: sealed.ciphertext,
        response_nonce: sealed.nonce,
        created_at: now_millis(),
    };
    for attempt in 1..=3u64 {
        match state.store.settle_idempotency(&rec, owner).await {
            // Stale and taken over meanwhile: that run's answer is the one.
            Ok(_) => return,
            Err(e) if attempt == 3 => {
                tracing::error!(error = %e, scope, "could not store an idempotent response; the key stays taken until it is stale");
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await,
        }
    }
}

enum Taken {
    /// This request holds the key: run it.
    Ours,
    /// The key's first request answered (or is still running, or had
    /// another body): this is the answer.
    Answered(Response),
}

async fn take(
    state: &Shared,
    scope: &str,
    key: &str,
    hash: &[u8],
    request: &[u8],
    owner: &[u8],
) -> ApiResult<Taken> {
    let running = || {
        ApiError::idempotency_in_progress(
            "a request with this Idempotency-Key is still being processed; retry shortly",
        )
    };
    // Twice at most: once more if the key was freed between our insert and
    // our read.
    for _ in 0..2 {
        let placeholder = IdempotencyRecord {
            scope: scope.to_string(),
            key: key.to_string(),
            request_hash: hash.to_vec(),
            status_code: IDEMPOTENCY_IN_FLIGHT,
            response: Vec::new(),
            response_nonce: owner.to_vec(),
            created_at: now_millis(),
        };
        if state.store.put_idempotency(&placeholder).await? {
            return Ok(Taken::Ours);
        }
        let Some(rec) = state.store.get_idempotency(scope, key).await? else {
            continue;
        };
        let now = now_millis();
        let stale = now - rec.created_at > STALE_AFTER;
        let seen = rec.response_nonce.clone();
        return match replay(state, rec, hash, request)? {
            Some(res) => Ok(Taken::Answered(res)),
            // One statement hands a stale key over: of two retries that
            // found it stale, one runs.
            None if stale => match state
                .store
                .retake_idempotency(scope, key, &seen, owner, now)
                .await?
            {
                true => Ok(Taken::Ours),
                false => Err(running()),
            },
            None => Err(running()),
        };
    }
    Err(running())
}

async fn release(state: &Shared, scope: &str, key: &str, owner: &[u8]) {
    if let Err(e) = state.store.release_idempotency(scope, key, owner).await {
        tracing::warn!(error = %e, scope, "could not free an idempotency key");
    }
}

/// Answers stored for a key: successes and the client's own errors, which a
/// retry of the same request would meet again. Not a failure on our side, a
/// rate limit, an authentication failure or a conflict, which a retry may
/// get past.
fn kept(status: StatusCode) -> bool {
    status.is_success()
        || (status.is_client_error()
            && !matches!(
                status,
                StatusCode::UNAUTHORIZED
                    | StatusCode::FORBIDDEN
                    | StatusCode::CONFLICT
                    | StatusCode::REQUEST_TIMEOUT
                    | StatusCode::TOO_MANY_REQUESTS
            ))
}

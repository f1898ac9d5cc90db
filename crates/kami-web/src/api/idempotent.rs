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
//! response is stored when it ends. A server that dies between the two
//! leaves the key taken; it is freed after [`STALE_AFTER`], and the request
//! then runs again, which is the one case a retry can repeat.

use std::future::Future;

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kami_core::now_millis;
use kami_core::secrets::{ct_eq, Sealed, CURRENT_KEY_ID};
use kami_store::{IdempotencyRecord, IDEMPOTENCY_IN_FLIGHT};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::services::orders::idem_context;
use crate::state::Shared;

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

pub fn request_hash(body: &[u8]) -> Vec<u8> {
    Sha256::digest(body).to_vec()
}

/// What a stored key says about a request with this body: its response, or
/// a conflict when the key was first used with another body. `None` when
/// the key's request is still running.
pub fn replay(
    state: &Shared,
    rec: IdempotencyRecord,
    request_hash: &[u8],
) -> ApiResult<Option<Response>> {
    if !ct_eq(&rec.request_hash, request_hash) {
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
                key_id: CURRENT_KEY_ID,
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

/// Runs `run` once per key and body within `scope` (the route and, for the
/// admin API, the key's id, so one API key never sees another's answers),
/// or answers with what the first run answered. Without an
/// `Idempotency-Key` it just runs. Called after authentication and rate
/// limits, so a stranger can neither take keys nor read stored answers.
pub async fn respond<Fut>(
    state: &Shared,
    headers: &HeaderMap,
    scope: String,
    body: &[u8],
    run: impl FnOnce() -> Fut,
) -> Response
where
    Fut: Future<Output = Response>,
{
    let key = match header_key(headers) {
        Ok(Some(key)) => key,
        Ok(None) => return run().await,
        Err(e) => return e.into_response(),
    };
    let hash = request_hash(body);
    match take(state, &scope, &key, &hash).await {
        Ok(Taken::Ours) => {}
        Ok(Taken::Answered(res)) => return res,
        Err(e) => return e.into_response(),
    }
    let res = run().await;
    let (parts, res_body) = res.into_parts();
    let bytes = match to_bytes(res_body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            release(state, &scope, &key).await;
            return ApiError::internal(e).into_response();
        }
    };
    if kept(parts.status) {
        let sealed = state.keys.seal(&idem_context(&scope, &key), &bytes);
        let rec = IdempotencyRecord {
            scope: scope.clone(),
            key: key.clone(),
            request_hash: hash,
            status_code: i64::from(parts.status.as_u16()),
            response: sealed.ciphertext,
            response_nonce: sealed.nonce,
            created_at: now_millis(),
        };
        match state.store.settle_idempotency(&rec).await {
            Ok(true) => {}
            // Freed as stale meanwhile and maybe taken again: that run's
            // answer is the one kept.
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, scope, "could not store an idempotent response");
                release(state, &scope, &key).await;
            }
        }
    } else {
        release(state, &scope, &key).await;
    }
    Response::from_parts(parts, Body::from(bytes))
}

enum Taken {
    /// This request holds the key: run it.
    Ours,
    /// The key's first request answered (or is still running, or had
    /// another body): this is the answer.
    Answered(Response),
}

async fn take(state: &Shared, scope: &str, key: &str, hash: &[u8]) -> ApiResult<Taken> {
    // Twice at most: once more after freeing a stale key, or after the key
    // was freed between our insert and our read.
    for _ in 0..2 {
        let placeholder = IdempotencyRecord {
            scope: scope.to_string(),
            key: key.to_string(),
            request_hash: hash.to_vec(),
            status_code: IDEMPOTENCY_IN_FLIGHT,
            response: Vec::new(),
            response_nonce: Vec::new(),
            created_at: now_millis(),
        };
        if state.store.put_idempotency(&placeholder).await? {
            return Ok(Taken::Ours);
        }
        let Some(rec) = state.store.get_idempotency(scope, key).await? else {
            continue;
        };
        let stale = now_millis() - rec.created_at > STALE_AFTER;
        match replay(state, rec, hash)? {
            Some(res) => return Ok(Taken::Answered(res)),
            None if stale => state.store.release_idempotency(scope, key).await?,
            None => {
                return Err(ApiError::idempotency_conflict(
                    "a request with this Idempotency-Key is still being processed; retry shortly",
                ))
            }
        }
    }
    Err(ApiError::idempotency_conflict(
        "a request with this Idempotency-Key is still being processed; retry shortly",
    ))
}

async fn release(state: &Shared, scope: &str, key: &str) {
    if let Err(e) = state.store.release_idempotency(scope, key).await {
        tracing::warn!(error = %e, scope, "could not free an idempotency key");
    }
}

/// Answers stored for a key: successes and the client's own errors, which a
/// retry of the same body would meet again. Not a failure on our side, a
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

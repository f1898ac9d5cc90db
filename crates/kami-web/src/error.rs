//! The one error type of the HTTP layer and its mapping to API.md's shape:
//! `{"error": {"code", "message", "param"}}` with the matching status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    pub fn invalid_param(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param),
            ..Self::invalid(message)
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key>)",
        )
    }

    /// An authenticated API key without the scope the endpoint needs.
    pub fn forbidden(scope: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this API key lacks the scope {scope}"),
        )
    }

    pub fn sold_out() -> Self {
        Self::new(StatusCode::CONFLICT, "sold_out", "this product is sold out")
    }

    pub fn insufficient_stock(available: i64) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "insufficient_stock",
            format!("only {available} left; lower the quantity"),
        )
    }

    pub fn limit_exceeded(limit: i64) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "limit_exceeded",
            format!("at most {limit} per buyer for this product"),
        )
    }

    pub fn limit_exceeded_per_ip(limit: i64) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "limit_exceeded",
            format!("at most {limit} per network address for this product"),
        )
    }

    pub fn sale_not_started(starts: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "sale_not_started",
            format!("the sale starts at {starts}"),
        )
    }

    pub fn sale_ended() -> Self {
        Self::new(StatusCode::CONFLICT, "sale_ended", "the sale has ended")
    }

    pub fn idempotency_conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "idempotency_conflict", message)
    }

    /// The key's first request is still running: the same code, with a
    /// `Retry-After`, so a client can tell "retry, you will get its answer"
    /// from a key reused with another body (which no retry mends).
    pub fn idempotency_in_progress(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::idempotency_conflict(message)
        }
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; slow down",
            )
        }
    }

    /// Load shedding: the order writer's queue is full. Nothing was written;
    /// the client may retry after a second.
    pub fn overloaded() -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many orders at this moment; retry in a second",
            )
        }
    }

    pub fn payload_too_large(limit: &str) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit}"),
        )
    }

    /// A body trickled in slower than the server waits for (`listen.rs`).
    pub fn body_too_slow() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            crate::listen::BodyTooSlow.to_string(),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// An internal failure: logged in full, shown to the client only as an
    /// opaque message (no SQL, no paths, never a code).
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; try again",
        )
    }

    /// The body API.md gives every error. A struct, not a `json!` value: a
    /// fifth of a sold-out answer's instructions went into building one and
    /// tearing it down. The fields are in the order the value's sorted map
    /// wrote them, so the bytes are the same.
    pub fn body(&self) -> Body<'_> {
        Body {
            error: Detail {
                code: self.code,
                message: &self.message,
                param: self.param,
            },
        }
    }
}

#[derive(Serialize)]
pub struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
pub struct Detail<'a> {
    code: &'a str,
    message: &'a str,
    param: Option<&'a str>,
}

impl From<kami_store::StoreError> for ApiError {
    fn from(e: kami_store::StoreError) -> Self {
        if e.is_unreachable() {
            tracing::warn!(error = %e, "database unreachable");
            return Self::unavailable("database unreachable; try again");
        }
        if e.is_transient() {
            tracing::warn!(error = %e, "database busy or out of space");
            return Self::unavailable("database busy; try again");
        }
        Self::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110, 11.6.1: a 401 names the scheme that would do.
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kami\""),
            );
        }
        res
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod body_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_401_names_the_bearer_scheme() {
        let res = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "no key").into_response();
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"kami\""
        );
        let res = ApiError::sold_out().into_response();
        assert!(!res.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    /// The struct writes the bytes the `json!` value wrote before it (a
    /// stored idempotent replay and the live answer must not differ).
    #[test]
    fn the_body_is_the_bytes_of_api_md_shape() {
        for e in [
            ApiError::sold_out(),
            ApiError::invalid_param("quantity", "quantity must be \"1\"…\n"),
        ] {
            let value = json!({"error": {"code": e.code, "message": e.message, "param": e.param}});
            assert_eq!(
                serde_json::to_vec(&e.body()).unwrap(),
                value.to_string().into_bytes()
            );
        }
    }
}

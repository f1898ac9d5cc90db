//! `GET /readyz`: whether the database answers. Monitoring polls it, often
//! from one address, and must never be told `429`, so it is not
//! rate-limited; instead the database's answer is shared by every caller
//! for up to [`FRESH_FOR`]. A stranger polling it in a loop costs one ping
//! a second, not one per request, and a database that stopped answering
//! shows within a second.

use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::state::Shared;

/// How long one answer of the database stands for every `/readyz`.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// The last answer of the database and when it came.
#[derive(Debug)]
pub struct Readiness {
    fresh_for: Duration,
    last: Mutex<Option<(Instant, bool)>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new(FRESH_FOR)
    }
}

impl Readiness {
    pub fn new(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            last: Mutex::new(None),
        }
    }

    /// The database's answer: the last one while fresh, else `ping`'s. The
    /// lock is held across the ping, so callers that find the answer stale
    /// together wait for one ping rather than each sending their own.
    pub async fn database_ok<F>(&self, ping: impl FnOnce() -> F) -> bool
    where
        F: Future<Output = bool>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, ok)) = *last {
            if at.elapsed() < self.fresh_for {
                return ok;
            }
        }
        let ok = ping().await;
        *last = Some((Instant::now(), ok));
        ok
    }
}

pub async fn readyz(State(state): State<Shared>) -> Response {
    let ok = state
        .readiness
        .database_ok(|| async {
            match state.store.ping().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "readiness check failed");
                    false
                }
            }
        })
        .await;
    if !ok {
        return ApiError::unavailable("database unreachable").into_response();
    }
    (
        StatusCode::OK,
        axum::Json(
            serde_json::json!({"status": "ready", "database": state.store.backend().as_str()}),
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn one_ping_answers_every_caller_while_fresh() {
        let readiness = Readiness::new(Duration::from_millis(200));
        let pings = AtomicUsize::new(0);
        let ping = || async {
            pings.fetch_add(1, Ordering::SeqCst);
            true
        };
        for _ in 0..50 {
            assert!(readiness.database_ok(ping).await);
        }
        assert_eq!(pings.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(readiness.database_ok(ping).await);
        assert_eq!(pings.load(Ordering::SeqCst), 2, "stale: asked again");
    }

    #[tokio::test]
    async fn a_failed_ping_is_shared_too_and_then_asked_again() {
        let readiness = Readiness::new(Duration::from_millis(100));
        assert!(!readiness.database_ok(|| async { false }).await);
        assert!(!readiness.database_ok(|| async { true }).await, "fresh");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(readiness.database_ok(|| async { true }).await);
    }
}

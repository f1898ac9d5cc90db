//! One budget, for the whole process, of the bytes request bodies may hold
//! while they are still arriving.
//!
//! Each body's own limits (1 MiB, 16 MiB for an import; `listen.rs`'s pace)
//! bound what one request holds, but not what a crowd of them holds: 800
//! connections each sending most of a 1 MiB body and then waiting held 1.5 GB.
//! So a body with a length reserves it (up to the largest any route takes)
//! when its head arrives, and a body without one (chunked) reserves what it
//! has received as it arrives. A body that would take the reserved total over
//! the budget is refused at once with `503 overloaded` and `Retry-After`
//! (`RefuseOverBudget`), before a byte of it is read; the bodies already
//! reserved are never cut for it. A reservation ends when its body has been
//! read to its end, or is dropped.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use tower::{Layer, Service};

use crate::error::ApiError;
use crate::rarely::Rarely;

/// The default budget: 64 MiB, four whole imports at once or sixty-four
/// 1 MiB bodies, and a few thousand times any order's.
pub const DEFAULT_BODY_BUDGET: u64 = 64 * 1024 * 1024;

/// The most any route reads of a body (an import's 16 MiB): a body that
/// says it is longer is refused for its size (413) once this much is read,
/// so it never holds more.
const LARGEST_BODY: u64 = crate::api::admin::IMPORT_BODY_LIMIT as u64;

pub struct BodyBudget {
    limit: u64,
    held: AtomicU64,
    warning: Rarely,
}

impl BodyBudget {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            held: AtomicU64::new(0),
            warning: Rarely::new(),
        }
    }

    /// Bytes reserved now by bodies still arriving.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Reserves room for a body that says it has `declared` bytes (or, for a
    /// chunked one, none yet); `None`, counted and logged, when that would
    /// take the budget over.
    pub fn reserve(self: &Arc<Self>, declared: u64) -> Option<Reservation> {
        let bytes = declared.min(LARGEST_BODY);
        if !self.take(bytes) {
            self.refused(bytes);
            return None;
        }
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    fn take(&self, bytes: u64) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn refused(&self, bytes: u64) {
        metrics::counter!("kami_body_budget_refusals_total").increment(1);
        if self.warning.due() {
            tracing::warn!(
                body_bytes = bytes,
                held = self.held(),
                budget = self.limit,
                "request bodies refused with 503: the bodies still arriving hold the whole \
                 body budget (body_budget); counted in kami_body_budget_refusals_total"
            );
        }
    }
}

/// Room held in the budget for one body; given back when dropped.
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: u64,
}

impl Reservation {
    /// Makes the reservation cover `received` bytes, for a body that did not
    /// say its length; false (counted and logged) when the budget has no
    /// room left for them.
    pub fn cover(&mut self, received: u64) -> bool {
        if received <= self.bytes {
            return true;
        }
        let more = received - self.bytes;
        if !self.budget.take(more) {
            self.budget.refused(more);
            return false;
        }
        self.bytes = received;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Put on a request whose body found no room in the budget (`listen.rs`);
/// `RefuseOverBudget` answers it.
#[derive(Debug, Clone, Copy)]
pub struct OverBudget;

/// The error a chunked body ends with when it outgrows the room left.
#[derive(Debug, thiserror::Error)]
#[error("the server is receiving too many request bodies at this moment; retry in a second")]
pub struct BodyOverBudget;

impl BodyOverBudget {
    pub fn answer() -> ApiError {
        ApiError {
            message: BodyOverBudget.to_string(),
            ..ApiError::overloaded()
        }
    }
}

/// Answers a request marked `OverBudget` with `503 overloaded` (the code
/// load shedding answers with) without calling the routes; the body is
/// dropped unread.
#[derive(Debug, Clone, Copy, Default)]
pub struct RefuseOverBudgetLayer;

impl<S> Layer<S> for RefuseOverBudgetLayer {
    type Service = RefuseOverBudget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefuseOverBudget { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RefuseOverBudget<S> {
    inner: S,
}

impl<S> Service<Request> for RefuseOverBudget<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.extensions().get::<OverBudget>().is_some() {
            return Either::Left(ready(Ok(BodyOverBudget::answer().into_response())));
        }
        Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_past_the_budget_is_refused_and_room_comes_back_when_one_ends() {
        let budget = Arc::new(BodyBudget::new(100));
        let first = budget.reserve(60).expect("room for the first");
        assert!(budget.reserve(50).is_none(), "past the budget");
        let second = budget.reserve(40).expect("exactly the rest");
        assert_eq!(budget.held(), 100);
        drop(first);
        assert_eq!(budget.held(), 40);
        assert!(budget.reserve(60).is_some());
        drop(second);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_chunked_body_grows_its_reservation_until_there_is_no_room() {
        let budget = Arc::new(BodyBudget::new(100));
        let mut chunked = budget.reserve(0).unwrap();
        assert!(chunked.cover(30));
        assert!(chunked.cover(20), "already covered");
        assert!(chunked.cover(90));
        assert_eq!(budget.held(), 90);
        assert!(!chunked.cover(101));
        assert_eq!(budget.held(), 90, "a refused growth takes nothing");
        drop(chunked);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_body_longer_than_any_route_takes_reserves_only_what_can_be_read() {
        let budget = Arc::new(BodyBudget::new(DEFAULT_BODY_BUDGET));
        let huge = budget.reserve(u64::MAX).expect("reserves the largest body");
        assert_eq!(budget.held(), LARGEST_BODY);
        drop(huge);
    }
}

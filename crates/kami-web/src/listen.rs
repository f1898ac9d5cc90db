//! Accepting connections, with the time limits `axum::serve` leaves out.
//!
//! `axum::serve` gives hyper no timer, so hyper's header timeout never runs:
//! a client that sends its request line a byte a minute (slowloris) holds a
//! connection and its task for as long as it likes, and a few thousand such
//! clients hold every file descriptor the process may open. So Kami runs the
//! accept loop itself, on hyper's HTTP/1 connection (what axum runs inside
//! `serve`; Kami never served HTTP/2), with two limits in the spirit of
//! Apache's `mod_reqtimeout`:
//!
//! - the head of every request must arrive within `HEAD_TIME` of the
//!   connection's asking for it: from the connection's opening for the first
//!   request, so one that sends nothing is closed too, and for a kept-alive
//!   connection that is also how long it may sit idle between requests;
//! - a body must arrive at `BODY_MIN_RATE` bytes a second on average, after a
//!   first `BODY_GRACE`, counted from when the handler first reads it, and
//!   must keep arriving: `BODY_IDLE` without a byte while the handler waits
//!   for one ends it too, so an early burst does not buy a long silence. A
//!   trickled or stalled body is cut off with 408, and an honest 16 MiB
//!   import over any real link is not.
//!
//! And three limits on what a crowd of clients can hold, each alone within
//! the limits above: a request head may fill at most `HEAD_MAX` of buffer
//! (hyper's default, ~400 KB, let 4,000 unfinished heads hold 2.3 GB; a head
//! past it is answered `431` and the connection closed); the bodies still
//! arriving share one budget of bytes (`body_budget.rs`); and one client
//! address holds a capped number of connections (`peer_cap.rs`).
//!
//! Everything else is as `axum::serve` did it: `ConnectInfo<SocketAddr>` for
//! the extractors, and a graceful shutdown that lets answers in progress
//! finish.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tower::{Service, ServiceExt};

use crate::app::RequestIds;
use crate::body_budget::{BodyBudget, BodyOverBudget, OverBudget, Reservation};
use crate::peer_cap::{self, Admission, ConnectionCap};

/// How long a client has to send a request's line and headers, counted from
/// when the connection is ready for them (just opened, or the last answer
/// written). Apache's default is 20 s, growing to 40 s with data; nginx's
/// `client_header_timeout` is 60 s. A browser sends its whole head at once.
pub const HEAD_TIME: Duration = Duration::from_secs(20);

/// How long a body may take before the minimum rate applies.
pub const BODY_GRACE: Duration = Duration::from_secs(20);

/// The slowest average a body may arrive at after `BODY_GRACE`, in bytes a
/// second (Apache's `MinRate=500`): each 500 bytes received buy a second.
pub const BODY_MIN_RATE: u64 = 500;

/// The longest a body may send nothing while the handler waits for it. The
/// average rate alone let 1,000 KiB sent at once buy half an hour of
/// silence, with the memory held all along.
pub const BODY_IDLE: Duration = Duration::from_secs(20);

/// The most a connection buffers while reading a request (its head, and
/// body bytes read ahead). A browser's head is a few KB; 100 headers (hyper's
/// cap, also answered `431`) of a few hundred bytes each fit.
pub const HEAD_MAX: usize = 64 * 1024;

/// What `serve` holds connections and bodies to besides time.
pub struct Guards {
    /// Shared by every body still arriving.
    pub body_budget: Arc<BodyBudget>,
    /// `None`: no cap (`KAMI_RATE_LIMITS=off`, or a cap of 0).
    pub per_address: Option<Arc<ConnectionCap>>,
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the
/// connections' answers in progress to finish.
pub async fn serve<S>(
    mut listener: TcpListener,
    app: S,
    guards: Guards,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIME)
        .max_buf_size(HEAD_MAX)
        // The head's own limit, checked on the head as parsed: the buffer's
        // is checked only before a read, and one read may take it up to
        // twice past (a 100 KB head sent at once was served).
        .max_header_size(HEAD_MAX);
    let request_ids = RequestIds::new();
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            // `axum::serve::Listener::accept` retries what a busy server
            // meets: a connection reset before it was taken, or no file
            // descriptor left (it waits a second, logging why).
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => break,
        };
        let slot = match guards.per_address.as_ref().map(|cap| cap.admit(peer.ip())) {
            Some(Admission::Refused) => {
                tokio::spawn(peer_cap::refuse(stream, request_ids.next()));
                continue;
            }
            admitted => admitted,
        };
        let app = app.clone();
        let budget = guards.body_budget.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let (parts, body) = req.into_parts();
            let (body, over_budget) = paced(body, &budget);
            let mut req = Request::from_parts(parts, body);
            req.extensions_mut().insert(ConnectInfo(peer));
            if over_budget {
                req.extensions_mut().insert(OverBudget);
            }
            app.clone().oneshot(req)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            // The address's place is given back when its connection ends.
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A request body held to `BODY_GRACE`, `BODY_MIN_RATE` and `BODY_IDLE`,
/// with its room in the budget; true when the budget has none for it (the
/// body is then left unread). A body that is already whole (no body) is not
/// wrapped.
fn paced(body: Incoming, budget: &Arc<BodyBudget>) -> (Body, bool) {
    if body.is_end_stream() {
        return (Body::new(body), false);
    }
    // A chunked body says no length: it reserves what it receives.
    let declared = body.size_hint().exact().unwrap_or(0);
    let reservation = budget.reserve(declared);
    let over_budget = reservation.is_none();
    let body = Body::new(Paced {
        inner: body,
        started: None,
        received: 0,
        waiting_since: None,
        timer: None,
        reservation,
    });
    (body, over_budget)
}

struct Paced {
    inner: Incoming,
    /// When the handler first asked for the body: a handler that reads it
    /// only after a slow step of its own (a database call) must not find its
    /// client's time already spent.
    started: Option<Instant>,
    received: u64,
    /// When the handler began waiting for the next bytes: a handler that
    /// works between reads (an import's batches) keeps its client's silence
    /// from counting, as the client cannot send while it is not read.
    waiting_since: Option<Instant>,
    // Made the first time the body has to wait: most bodies never do.
    timer: Option<Pin<Box<Sleep>>>,
    /// Room in the body budget, given back at the body's end; `None` once
    /// ended, or for a body refused for the budget (never read).
    reservation: Option<Reservation>,
}

impl Paced {
    fn deadline(&self, started: Instant, waiting_since: Instant) -> Instant {
        let average = started + BODY_GRACE + Duration::from_secs(self.received / BODY_MIN_RATE);
        average.min(waiting_since + BODY_IDLE)
    }
}

/// The error a body too slow to arrive ends with; `too_slow` finds it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body arrived too slowly: it must start within {} s, never pause for {} s, and average at least {} bytes a second",
    BODY_GRACE.as_secs(),
    BODY_IDLE.as_secs(),
    BODY_MIN_RATE
)]
pub struct BodyTooSlow;

/// Whether `e`, or an error it wraps, is a body cut off for its pace.
pub fn too_slow(e: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<BodyTooSlow>(e)
}

/// Whether `e`, or an error it wraps, is a chunked body that outgrew the
/// room left in the body budget.
pub fn over_budget(e: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<BodyOverBudget>(e)
}

fn caused_by<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<E>() {
            return true;
        }
        next = e.source();
    }
    false
}

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // `Incoming` is `Unpin`, and so is everything else here.
        let this = self.get_mut();
        let started = *this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting_since = None;
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    // Without a reservation the body was refused unread, and
                    // what it sends now is only being thrown away (drain.rs).
                    if let Some(r) = this.reservation.as_mut() {
                        if !r.cover(this.received) {
                            this.reservation = None;
                            return Poll::Ready(Some(Err(Box::new(BodyOverBudget))));
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.reservation = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                // Whole: what it holds now is its handler's, not a body's
                // still arriving.
                this.reservation = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let waiting_since = *this.waiting_since.get_or_insert_with(Instant::now);
                let deadline = this.deadline(started, waiting_since);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.reservation = None;
                        Poll::Ready(Some(Err(Box::new(BodyTooSlow))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

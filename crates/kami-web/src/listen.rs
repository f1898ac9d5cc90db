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
//!   first `BODY_GRACE`, counted from when the handler first reads it: a
//!   trickled body is cut off with 408, and an honest 16 MiB import over any
//!   real link is not.
//!
//! Everything else is as `axum::serve` did it: `ConnectInfo<SocketAddr>` for
//! the extractors, and a graceful shutdown that lets answers in progress
//! finish.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
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

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the
/// connections' answers in progress to finish.
pub async fn serve<S>(
    mut listener: TcpListener,
    app: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEAD_TIME);
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
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(paced);
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A request body held to `BODY_GRACE` and `BODY_MIN_RATE`. A body that is
/// already whole (no body, or one that came with the head) is not wrapped.
fn paced(body: Incoming) -> Body {
    if body.is_end_stream() {
        return Body::new(body);
    }
    Body::new(Paced {
        inner: body,
        started: None,
        received: 0,
        timer: None,
    })
}

struct Paced {
    inner: Incoming,
    /// When the handler first asked for the body: a handler that reads it
    /// only after a slow step of its own (a database call) must not find its
    /// client's time already spent.
    started: Option<Instant>,
    received: u64,
    // Made the first time the body has to wait: most bodies never do.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Paced {
    fn deadline(&self, started: Instant) -> Instant {
        started + BODY_GRACE + Duration::from_secs(self.received / BODY_MIN_RATE)
    }
}

/// The error a body too slow to arrive ends with; `too_slow` finds it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body arrived too slowly: it must start within {} s and then average at least {} bytes a second",
    BODY_GRACE.as_secs(),
    BODY_MIN_RATE
)]
pub struct BodyTooSlow;

/// Whether `e`, or an error it wraps, is a body cut off for its pace.
pub fn too_slow(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<BodyTooSlow>() {
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
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.deadline(started);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTooSlow)))),
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

//! Reads to its end a request body that was answered without being read.
//!
//! A body over its route's limit is refused with 413 on its `Content-Length`
//! alone, and an import without a key with 401, before a byte of it is read.
//! hyper then closes the connection with the rest of the upload unread, the
//! kernel answers the client's next segments with a reset, and a client still
//! writing (Python's `urllib`, curl without `Expect`) sees a broken pipe
//! instead of the answer. So a body that may be refused unread is wrapped:
//! dropped before its end, it is read out and thrown away in a task of its
//! own, up to `DRAIN_MAX` bytes and `DRAIN_TIME`, while hyper writes the
//! answer; the connection then stays open. Past either bound it is closed as
//! before. Small bodies, every hot path's, are not wrapped.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

/// Bodies up to this size are never refused for their size: not wrapped.
const SMALL: u64 = 1024 * 1024;
/// At most this much of a refused body is read and thrown away.
const DRAIN_MAX: usize = 64 * 1024 * 1024;
/// And for at most this long.
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// Wraps the body of a request that declares more than `SMALL` bytes, or
/// does not say how many (chunked).
pub fn drain_unread(req: Request) -> Request {
    let big = match req.headers().get(CONTENT_LENGTH) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_none_or(|n| n > SMALL),
        None => req.headers().contains_key(TRANSFER_ENCODING),
    };
    if !big {
        return req;
    }
    req.map(|body| {
        Body::new(DrainOnDrop {
            inner: Some(body),
            ended: false,
        })
    })
}

struct DrainOnDrop {
    inner: Option<Body>,
    ended: bool,
}

impl http_body::Body for DrainOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Some(body) = self.inner.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tokio::time::timeout(DRAIN_TIME, read_out(body)).await;
            });
        }
    }
}

async fn read_out(mut body: Body) {
    let mut read = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            read += data.len();
            if read > DRAIN_MAX {
                return;
            }
        }
    }
}

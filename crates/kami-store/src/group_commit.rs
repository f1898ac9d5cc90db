//! The group-commit writer: requests go into a bounded queue, writer tasks
//! take whatever is queued (up to a batch size) and hand it to one store call
//! that commits it as one transaction, and each request gets its own outcome
//! back through a oneshot.
//!
//! The queue is bounded so a flash sale cannot pile up work without limit:
//! when it is full, `submit` refuses at once (`Overloaded`) and the caller
//! answers 503 — before anything was written, so a refused request leaves no
//! trace. A request the queue accepted is always executed by a writer, even if
//! its caller goes away meanwhile; nothing accepted is dropped.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the writer queue is full")]
    Overloaded,
    #[error("the writer has stopped")]
    Stopped,
}

/// A request, where its outcome goes, and when it was queued.
type Item<Req, Out> = (Req, oneshot::Sender<Out>, Instant);

/// What one batch was, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct BatchStats {
    /// Requests in it.
    pub size: usize,
    /// How long its oldest request waited in the queue for a writer.
    pub waited: Duration,
    /// How long the store took to commit it.
    pub took: Duration,
}

pub struct GroupCommit<Req, Out> {
    queue: mpsc::Sender<Item<Req, Out>>,
    capacity: usize,
    /// Requests submitted and not yet answered: queued or being committed.
    in_flight: Arc<AtomicUsize>,
}

/// Sizes of a group-commit writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Requests waiting at most; beyond it `submit` answers `Overloaded`.
    pub queue: usize,
    /// Requests per transaction at most.
    pub max_batch: usize,
    /// Writer tasks: 3 for SQLite (one collects the next batch while
    /// another's commits on the writer thread and a third's waits for the
    /// WAL's sync), a few for PostgreSQL, whose
    /// concurrent transactions skip each other's rows.
    pub writers: usize,
    /// Each batch takes at most its writer's share of the requests in
    /// flight (queued or being committed, divided by `writers`), so the
    /// transactions side by side carry about as many each. Without it, the
    /// writer that came free took everything queued: in a closed-loop drop on
    /// PostgreSQL the batches ran from 1 to 250 orders, the big ones took
    /// twice as long as the median, and every buyer in them waited that
    /// long (docs/PERFORMANCE.md, stop 19). Off for SQLite, whose one writer
    /// thread commits the batches in turn anyway.
    pub even_shares: bool,
}

impl<Req: Send + 'static, Out: Send + 'static> GroupCommit<Req, Out> {
    /// Spawns the writers. `commit(batch)` must return one outcome per
    /// request, in order; `on_batch` observes every batch once it is
    /// committed (metrics).
    pub fn spawn<F, Fut, B>(cfg: WriterConfig, commit: F, on_batch: B) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Out>> + Send,
        B: Fn(BatchStats) + Send + Sync + 'static,
    {
        let capacity = cfg.queue.max(1);
        let (queue, rx) = mpsc::channel::<Item<Req, Out>>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        let commit = Arc::new(commit);
        let on_batch = Arc::new(on_batch);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let writers = cfg.writers.max(1);
        for _ in 0..writers {
            let in_flight = in_flight.clone();
            let rx = rx.clone();
            let commit = commit.clone();
            let on_batch = on_batch.clone();
            let max_batch = cfg.max_batch.max(1);
            tokio::spawn(async move {
                loop {
                    // One writer at a time collects a batch; the others wait
                    // their turn here while it commits, so batches grow with
                    // the load instead of splitting it into tiny pieces.
                    let batch = {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else {
                            break;
                        };
                        let cap = if cfg.even_shares {
                            let n = in_flight.load(Ordering::Relaxed);
                            n.div_ceil(writers).clamp(1, max_batch)
                        } else {
                            max_batch
                        };
                        let mut batch = Vec::with_capacity(cap);
                        batch.push(first);
                        while batch.len() < cap {
                            match rx.try_recv() {
                                Ok(item) => batch.push(item),
                                Err(_) => break,
                            }
                        }
                        batch
                    };
                    let started = Instant::now();
                    let size = batch.len();
                    let waited = started.saturating_duration_since(batch[0].2);
                    let (reqs, replies): (Vec<Req>, Vec<oneshot::Sender<Out>>) = batch
                        .into_iter()
                        .map(|(req, reply, _)| (req, reply))
                        .unzip();
                    let outs = commit(reqs).await;
                    let took = started.elapsed();
                    debug_assert_eq!(outs.len(), replies.len());
                    for (reply, out) in replies.into_iter().zip(outs) {
                        // A caller that went away still had its request
                        // committed; only the answer is lost with it.
                        let _ = reply.send(out);
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                    }
                    on_batch(BatchStats { size, waited, took });
                }
            });
        }
        Self {
            queue,
            capacity,
            in_flight,
        }
    }

    /// Queues the request and waits for its outcome; `Overloaded` at once
    /// when the queue is full (nothing was queued then).
    pub async fn submit(&self, req: Req) -> Result<Out, SubmitError> {
        let (tx, rx) = oneshot::channel();
        // Counted before it is queued, so a writer never sees it queued but
        // not in flight.
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.queue.try_send((req, tx, Instant::now())) {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => SubmitError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => SubmitError::Stopped,
            });
        }
        rx.await.map_err(|_| SubmitError::Stopped)
    }

    /// Requests waiting for a writer.
    pub fn depth(&self) -> usize {
        self.capacity - self.queue.capacity()
    }
}

//! The optional Redis connection (`KAMI_REDIS_URL`) that several instances
//! share their stock gate and rate limits through (DESIGN.md, "Scale-out").
//!
//! Redis is never needed to sell: every caller has an answer for "Redis did
//! not answer" (the gate lets the order through to the database, the rate
//! limits fall back to this process's buckets). So a failed call opens a
//! short breaker instead of making every request wait for a dead server,
//! the change of state is logged once each way, and
//! `kami_redis_errors_total{op}` counts the failures.
//!
//! Client: redis-rs (see the workspace Cargo.toml for why). One multiplexed
//! connection, reconnected in the background; every call has a deadline.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use kami_core::now_millis;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisError;

/// A call that takes longer fails (and opens the breaker): a healthy Redis
/// on the same network answers in well under a millisecond.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failure, calls skip Redis for this long before trying again.
const BREAKER_MS: i64 = 1000;

/// Where Redis is and how this shop's keys are named.
#[derive(Clone)]
pub struct RedisSettings {
    pub url: String,
    /// Put before every key, so shops (and tests) can share one Redis.
    pub prefix: String,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &kami_store::redact_url(&self.url))
            .field("prefix", &self.prefix)
            .finish()
    }
}

pub struct Redis {
    conn: ConnectionManager,
    /// For the connections a subscription needs (`subscribe`).
    client: redis::Client,
    prefix: String,
    /// The URL with any password replaced, for log lines.
    redacted_url: String,
    healthy: AtomicBool,
    /// Unix millis before which calls are not attempted.
    down_until: AtomicI64,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.redacted_url)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Redis {
    /// Parses the URL and prepares the connection without connecting: a
    /// shop must start (and sell, gated by its database) while Redis is down.
    pub fn open(settings: &RedisSettings) -> Result<Self, RedisError> {
        let client = redis::Client::open(settings.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self {
            conn,
            client,
            prefix: settings.prefix.clone(),
            redacted_url: kami_store::redact_url(&settings.url),
            healthy: AtomicBool::new(true),
            down_until: AtomicI64::new(0),
        })
    }

    /// `<prefix><name>`.
    pub fn key(&self, name: impl std::fmt::Display) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A connection of its own subscribed to `channel`: the half that can
    /// still send (a `PING`) and its messages, until the connection is lost
    /// (the stream ends).
    pub async fn subscribe(
        &self,
        channel: &str,
    ) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), RedisError> {
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok(pubsub.split())
        };
        tokio::time::timeout(CALL_TIMEOUT, connect)
            .await
            .unwrap_or_else(|_| {
                Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer to SUBSCRIBE in time",
                )))
            })
    }

    /// False while the breaker is open after a failure.
    pub fn available(&self) -> bool {
        now_millis() >= self.down_until.load(Ordering::Relaxed)
    }

    /// Runs one Redis call. `None` when the breaker is open or the call
    /// failed (counted and, on the change from healthy, logged): the caller
    /// then does without Redis.
    pub async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        if !self.available() {
            return None;
        }
        let result = match tokio::time::timeout(CALL_TIMEOUT, f(self.conn.clone())).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
        };
        match result {
            Ok(v) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(redis = %self.redacted_url, "Redis answers again; the shared stock gate and rate limits are back");
                }
                Some(v)
            }
            Err(error) => {
                metrics::counter!("kami_redis_errors_total", "op" => op).increment(1);
                self.down_until
                    .store(now_millis() + BREAKER_MS, Ordering::Relaxed);
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(redis = %self.redacted_url, op, %error,
                        "Redis unreachable: the stock gate lets orders through to the database and rate limits fall back to this process until it answers");
                }
                None
            }
        }
    }
}

/// Counts a request served without Redis (`what`: `gate`, `rate_limit`).
pub fn fallback(what: &'static str) {
    metrics::counter!("kami_redis_fallbacks_total", "what" => what).increment(1);
}

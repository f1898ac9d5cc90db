//! The rate limits' token buckets in Redis, so that N instances behind a
//! load balancer grant one bucket's allowance between them, not N.
//!
//! Keys: `<prefix>rl:<class>:<ip>` per client IP and class,
//! `<prefix>rl:lookup_email:<sha-256>` per email (hashed: Redis need not
//! hold buyers' addresses). One Lua script
//! (`lua/rate_limit.lua`, GCRA on Redis's clock) per check. `None` means
//! Redis did not answer; the caller then uses this process's buckets.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;

use crate::redis_conn::Redis;

static BUCKET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/rate_limit.lua")));

pub struct SharedLimits {
    redis: Arc<Redis>,
}

impl SharedLimits {
    pub fn new(redis: Arc<Redis>) -> Self {
        Self { redis }
    }

    /// One request against the bucket `name` that refills one token every
    /// `per_token` up to `burst`: `Some(None)` allowed, `Some(Some(wait))`
    /// refused, `None` Redis did not answer.
    pub async fn check(
        &self,
        name: &str,
        per_token: Duration,
        burst: u32,
    ) -> Option<Option<Duration>> {
        let key = self.redis.key(format_args!("rl:{name}"));
        let interval = per_token.as_micros().max(1) as u64;
        let wait = self
            .redis
            .call("rate_limit", |mut c| async move {
                BUCKET
                    .key(key)
                    .arg(interval)
                    .arg(burst)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await?;
        Some((wait > 0).then(|| Duration::from_micros(wait as u64)))
    }
}

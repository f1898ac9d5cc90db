//! Background work over the durable `jobs` table. Periodic jobs (the expiry
//! sweep, reaping abandoned imports, payment reconciliation) are rows with a dedupe key that each run
//! reschedules, so with several instances exactly one runs each tick, and a
//! dead instance's lease simply runs out.

use std::collections::BTreeMap;
use std::time::Duration;

use kami_core::now_millis;
use kami_store::{Job, NewJob};
use tokio::sync::watch;

use crate::services::import::STALE_IMPORT_MS;
use crate::state::Shared;

pub const EXPIRE_ORDERS: &str = "expire_orders";
pub const REAP_IMPORTS: &str = "reap_imports";
pub const RECONCILE_PAYMENTS: &str = "reconcile_payments";
const LEASE_MS: i64 = 30_000;
/// Orders expired per sweep transaction; the sweep runs again at once if
/// full. On PostgreSQL each order's limits and coupon are up to three
/// advisory locks (`lock_holds`), all held to the commit in the server's
/// shared lock table (64 per connection by default), so a sweep stays well
/// under a few hundred.
const SWEEP_BATCH: i64 = 100;

pub async fn ensure_periodic_jobs(state: &Shared) -> Result<(), kami_store::StoreError> {
    for kind in [EXPIRE_ORDERS, REAP_IMPORTS, RECONCILE_PAYMENTS] {
        state
            .store
            .enqueue_job(&NewJob {
                kind: kind.into(),
                payload: "{}".into(),
                run_at: now_millis(),
                dedupe_key: Some(kind.into()),
                max_attempts: i64::MAX,
            })
            .await?;
    }
    Ok(())
}

pub fn spawn(state: Shared, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let worker_id = format!(
        "{}-{}",
        std::process::id(),
        kami_core::secrets::random_token("")
    );
    tokio::spawn(async move {
        if let Err(e) = ensure_periodic_jobs(&state).await {
            tracing::error!(error = %e, "could not schedule periodic jobs");
        }
        let poll =
            Duration::from_millis((state.settings.expiry_interval_ms / 4).clamp(50, 1000) as u64);
        let mut last_prune = now_millis();
        let mut last_key_prune = 0;
        loop {
            let worked = match state
                .store
                .claim_jobs(&worker_id, now_millis(), LEASE_MS, 10)
                .await
            {
                Ok(jobs) => {
                    let n = jobs.len();
                    for job in jobs {
                        run_job(&state, job).await;
                    }
                    n > 0
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming jobs failed");
                    false
                }
            };
            if now_millis() - last_prune > 60_000 {
                state.limits.prune();
                last_prune = now_millis();
            }
            if now_millis() - last_key_prune > KEY_PRUNE_EVERY_MS {
                prune_keys(&state).await;
                last_key_prune = now_millis();
            }
            if worked {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = state.wake_worker.notified() => {}
                _ = shutdown.changed() => break,
            }
        }
        tracing::info!("job worker stopped");
    })
}

/// How often the stock gate re-reads the counts it could reject on.
const GATE_SYNC: Duration = Duration::from_secs(1);

/// Loads the stock gate from the database, then keeps re-syncing it so that
/// stock changed by another instance or `kami cards import` cannot make this
/// one turn buyers away for longer than `GATE_SYNC`.
pub fn spawn_gate_sync(
    state: Shared,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(GATE_SYNC) => {}
                _ = shutdown.changed() => break,
            }
            if let Err(e) = resync_gate(&state).await {
                tracing::warn!(error = %e, "stock gate re-sync failed");
            }
        }
    })
}

async fn resync_gate(state: &Shared) -> Result<(), kami_store::StoreError> {
    // The shared gate checks every product's count in Redis (the product
    // list comes from the catalog's cache); the in-process one knows its own.
    let ids: Vec<i64> = if state.gate.is_shared() {
        let products = state
            .catalog
            .products(state.store.as_ref(), &state.gate)
            .await?;
        products.iter().map(|p| p.id).collect()
    } else {
        Vec::new()
    };
    state.gate.resync(state.store.as_ref(), &ids).await
}

async fn run_job(state: &Shared, job: Job) {
    let now = now_millis();
    let result = match job.kind.as_str() {
        EXPIRE_ORDERS => expire(state).await.map(|more| {
            Some(if more {
                now
            } else {
                now + state.settings.expiry_interval_ms
            })
        }),
        REAP_IMPORTS => match state.store.reap_stale_imports(now - STALE_IMPORT_MS).await {
            Ok(reaped) => {
                crate::services::import::log_reaped(&reaped);
                for product_id in reaped.finished {
                    state.stock_imported(product_id).await;
                }
                Ok(Some(now + 60_000))
            }
            Err(e) => Err(e),
        },
        RECONCILE_PAYMENTS => crate::services::payments::reconcile(state)
            .await
            .map(|paid| {
                if paid > 0 {
                    tracing::info!(
                        orders = paid,
                        "reconciliation completed orders whose notification was lost"
                    );
                }
                Some(now + state.settings.reconcile_interval_ms)
            }),
        other => {
            tracing::error!(
                job = job.id,
                kind = other,
                "unknown job kind; parking it as dead"
            );
            let _ = state.store.fail_job(job.id, "unknown job kind", None).await;
            return;
        }
    };
    let done = match result {
        Ok(Some(next)) => state.store.reschedule_job(job.id, next).await,
        Ok(None) => state.store.finish_job(job.id).await,
        Err(e) => {
            let retry = (job.attempts < job.max_attempts)
                .then_some(now + retry_delay(&job.kind, job.attempts));
            tracing::warn!(job = job.id, kind = %job.kind, attempts = job.attempts, error = %e, "job failed");
            state.store.fail_job(job.id, &e.to_string(), retry).await
        }
    };
    if let Err(e) = done {
        tracing::warn!(job = job.id, error = %e, "could not record a job's outcome; its lease will run out");
    }
}

/// How long a failed job waits before its next run: doubling from a second
/// with each failure in a row. These jobs are the shop's periodic work, so
/// the wait is capped short: the sweep comes back within 5 s (API.md: an
/// expired order's codes are on sale again within 5 s), the others within a
/// minute. Capped at an hour, a run of failures (a database restart, a
/// deadlock) once stopped the sweep for many minutes after its cause had
/// gone (a review).
fn retry_delay(kind: &str, attempts: i64) -> i64 {
    let cap = if kind == EXPIRE_ORDERS { 5_000 } else { 60_000 };
    1000i64.saturating_mul(1 << attempts.clamp(0, 12)).min(cap)
}

/// How long an `Idempotency-Key` answers for its first request: a day, as
/// payment APIs keep theirs. A retry later than that is a new request.
pub const IDEMPOTENCY_KEY_TTL_MS: i64 = 24 * 3_600_000;
/// How often each instance forgets older keys.
const KEY_PRUNE_EVERY_MS: i64 = 3_600_000;

/// Forgets keys past their day, a thousand per statement batch, until none
/// are left (the lookup, which anyone may call, can take one per request).
async fn prune_keys(state: &Shared) {
    let before = now_millis() - IDEMPOTENCY_KEY_TTL_MS;
    loop {
        match state.store.prune_idempotency(before, 1000).await {
            Ok(n) if n >= 1000 => continue,
            Ok(n) => {
                if n > 0 {
                    tracing::info!(keys = n, "forgot idempotency keys older than a day");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not forget old idempotency keys");
                return;
            }
        }
    }
}

/// One sweep: expires the orders past their deadline and releases their codes (one
/// batch); true when there may be more. Run every second by the sweep, and
/// by a listing by status so that it agrees with the status it shows.
pub(crate) async fn expire(state: &Shared) -> Result<bool, kami_store::StoreError> {
    let _one_at_a_time = state.expiring.lock().await;
    let expired = state
        .store
        .expire_due_orders(now_millis(), SWEEP_BATCH)
        .await?;
    for o in &expired {
        tracing::debug!(order_no = %o.order_no, quantity = o.quantity, "order expired; codes released");
    }
    let mut released: BTreeMap<i64, i64> = BTreeMap::new();
    for o in &expired {
        *released.entry(o.product_id).or_default() += o.quantity;
    }
    for (product_id, quantity) in released {
        state.codes_released(product_id, quantity).await;
    }
    if !expired.is_empty() {
        metrics::counter!("kami_orders_total", "outcome" => "expired")
            .increment(expired.len() as u64);
    }
    Ok(expired.len() as i64 == SWEEP_BATCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_periodic_work_comes_back_soon() {
        assert_eq!(retry_delay(EXPIRE_ORDERS, 0), 1_000);
        assert_eq!(retry_delay(EXPIRE_ORDERS, 2), 4_000);
        assert_eq!(retry_delay(EXPIRE_ORDERS, 3), 5_000);
        assert_eq!(retry_delay(EXPIRE_ORDERS, 40), 5_000);
        assert_eq!(retry_delay(RECONCILE_PAYMENTS, 5), 32_000);
        assert_eq!(retry_delay(RECONCILE_PAYMENTS, 40), 60_000);
        assert_eq!(retry_delay(REAP_IMPORTS, i64::MAX), 60_000);
    }
}

//! The durable work queue (DESIGN.md, "Background work"). A job is claimed by
//! taking a lease (`locked_until`); a worker that dies simply lets the lease
//! run out and another process picks the job up.

use kami_core::{now_millis, Millis};
use sqlx::Row;

use super::SqlStore;
use crate::types::*;
use crate::Result;

pub async fn enqueue(s: &SqlStore, job: &NewJob) -> Result<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "INSERT INTO jobs (kind, payload, dedupe_key, run_at, max_attempts, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(&job.kind)
    .bind(&job.payload)
    .bind(job.dedupe_key.as_deref())
    .bind(job.run_at)
    .bind(job.max_attempts)
    .bind(now_millis())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn claim(
    s: &SqlStore,
    worker: &str,
    now: Millis,
    lease_ms: i64,
    max: i64,
) -> Result<Vec<Job>> {
    // Most polls find nothing due (`any_due`).
    let due = "SELECT 1 FROM jobs WHERE status = 'queued' AND run_at <= $1 \
               AND (locked_until IS NULL OR locked_until < $1) LIMIT 1";
    if !s.any_due(due, now).await? {
        return Ok(Vec::new());
    }
    let sql = format!(
        "UPDATE jobs SET locked_until = $1, locked_by = $2, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' AND run_at <= $3 \
           AND (locked_until IS NULL OR locked_until < $3) ORDER BY run_at, id LIMIT $4 {}) \
         RETURNING id, kind, payload, attempts, max_attempts",
        s.backend.skip_locked()
    );
    let mut tx = s.begin().await?;
    let rows = sqlx::query(&sql)
        .bind(now + lease_ms)
        .bind(worker)
        .bind(now)
        .bind(max)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(Job {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                payload: r.try_get("payload")?,
                attempts: r.try_get("attempts")?,
                max_attempts: r.try_get("max_attempts")?,
            })
        })
        .collect()
}

pub async fn finish(s: &SqlStore, id: i64) -> Result<()> {
    let mut tx = s.begin().await?;
    sqlx::query("DELETE FROM jobs WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn reschedule(s: &SqlStore, id: i64, run_at: Millis) -> Result<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "UPDATE jobs SET run_at = $2, attempts = 0, locked_until = NULL, locked_by = NULL, \
         last_error = NULL WHERE id = $1",
    )
    .bind(id)
    .bind(run_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn fail(s: &SqlStore, id: i64, error: &str, retry_at: Option<Millis>) -> Result<()> {
    let mut tx = s.begin().await?;
    match retry_at {
        Some(at) => sqlx::query(
            "UPDATE jobs SET run_at = $2, locked_until = NULL, locked_by = NULL, \
                 last_error = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(at)
        .bind(error),
        None => sqlx::query(
            "UPDATE jobs SET status = 'dead', locked_until = NULL, locked_by = NULL, \
             last_error = $3, run_at = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(now_millis())
        .bind(error),
    }
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn counts(s: &SqlStore) -> Result<JobCounts> {
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        .fetch_all(&s.read)
        .await?;
    let mut c = JobCounts::default();
    for r in rows {
        let n: i64 = r.try_get("n")?;
        match r.try_get::<String, _>("status")?.as_str() {
            "dead" => c.dead = n,
            _ => c.queued += n,
        }
    }
    Ok(c)
}

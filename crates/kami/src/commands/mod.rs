pub mod admin;
pub mod backup;
pub mod cards;
pub mod keys;
mod log_fields;
pub mod serve;

use std::sync::Arc;

use anyhow::Context;
use kami_store::{SqlStore, Store};

use crate::config::Config;

/// Connects to the configured database and applies migrations, as every
/// subcommand does before anything else. On SQLite only a process that has
/// the database to itself applies them: a process of an earlier version
/// still serving would go on writing that version's way (after SQLite's
/// migration 0012, orders without the deadline rows that make them expire).
pub async fn open_store(cfg: &Config) -> anyhow::Result<Arc<SqlStore>> {
    let url = cfg.database_url()?;
    let held = backup::hold_lock(&url)?;
    let store = SqlStore::connect(&url, cfg.db_pool_size)
        .await
        .with_context(|| format!("cannot connect to {}", kami_store::redact_url(&url)))?;
    // PostgreSQL: no `kami keys rotate` while this process has it open.
    store
        .hold_instance_lock()
        .await
        .context("cannot mark the database in use")?;
    if held == backup::Held::Shared && store.migrations_pending().await? {
        anyhow::bail!(
            "another Kami process has the database open, and this version must update its \
             schema first: stop it (an earlier version's `kami serve`?) and start this again"
        );
    }
    store.migrate().await.context("migrations failed")?;
    if held == backup::Held::Shared {
        // A shop is serving from this database: an import here leaves it
        // the write lock between its transactions.
        store.share_writes_with_other_processes();
    }
    if held == backup::Held::Alone {
        // No other process has the database open, so an import still
        // marked running was cut off (a crash, a kill): its staged codes
        // are let go now, not after the reaper's wait, in which a
        // re-import would count them as duplicates and leave them out.
        let reaped = store.reap_stale_imports(i64::MAX).await?;
        kami_web::services::import::log_reaped(&reaped);
        backup::share_lock(&url)?;
    }
    tracing::info!(backend = %store.backend(), "database ready");
    Ok(Arc::new(store))
}

/// A one-shot command's work on the store, which is closed after it
/// whatever the outcome: the last connection's close folds SQLite's WAL
/// into the database file and removes it, so the command's writes are in
/// `kami.db` itself (a copy of that file alone is whole), as after `serve`.
pub async fn closing<T>(
    store: &SqlStore,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let result = work.await;
    store.close().await;
    result
}

/// Logs as JSON lines: on stdout for `serve`, on stderr (warnings only by
/// default) for the one-shot commands, whose stdout is their answer.
pub fn init_logging(filter: &str, to_stdout: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .fmt_fields(log_fields::JsonSpanFields)
        .with_env_filter(filter);
    let _ = if to_stdout {
        builder.with_writer(std::io::stdout).try_init()
    } else {
        builder.with_writer(std::io::stderr).try_init()
    };
}

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use sqlx::{Connection, Executor};

use super::wal_prefetch::WalPrefetch;
use super::SqlStore;
use crate::{Backend, Result, StoreError};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Per-connection SQLite settings: WAL lets readers run beside the writer,
/// NORMAL sync is durable across process crashes in WAL mode, and the busy
/// timeout covers other processes (a second instance, `kami cards import`).
/// Page caches are sized so the whole process stays within ~150 MB with a
/// million codes in stock: 8 MiB for this writer (the cold writes: imports,
/// expiry, the panel; the hot batches have their own, `direct.rs`), 2 MiB
/// per reader. A
/// reader's cache is thrown away whenever the writer committed since its
/// last read (perf: `pcache1TruncateUnsafe`), which during a drop is every
/// read, so a big one only costs; product reads come from memory anyway.
///
/// The writers checkpoint the WAL themselves only as a backstop
/// (`direct::BACKSTOP_FRAMES`): checkpointing copies pages and fsyncs, and
/// inside a writer's commit it stalls every order behind it (perf: a tenth
/// of the writer's time in `walCheckpoint` during a notification storm). A
/// background task checkpoints passively instead (`checkpoint_loop`), and
/// the SQLite writer thread finishes its work when the WAL has grown past
/// `direct::RESTART_FRAMES` (`direct.rs`).
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON; PRAGMA cache_size = -8192; PRAGMA temp_store = MEMORY;";

/// Every PostgreSQL session: no JIT compilation. Kami's statements are
/// short and run by the thousand a second; JIT pays off only for long
/// ones, and a statement whose cost was misjudged paid it every time. With
/// ten million codes and no statistics yet, reading a paid order's codes
/// planned at 276,000 (past `jit_above_cost`) and compiled itself on every
/// delivery: 30-120 ms each, the first ones also loading LLVM from disk
/// (docs/PERFORMANCE.md, stop 21). Named `kami` in `pg_stat_activity`, for
/// the operator.
const POSTGRES_SESSION: &str = "SET jit = off; SET application_name = 'kami'";

/// A pooled PostgreSQL connection idle this long is pinged before it is
/// used (a restarted server, a dropped socket), one used more recently not.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// How often the background checkpoint runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

impl SqlStore {
    /// Connects to `url` (`sqlite://path` or `postgres://…`). A SQLite file
    /// and its directory are created when missing.
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = Backend::from_url(url).ok_or(StoreError::UnsupportedUrl)?;
        match backend {
            Backend::Sqlite => connect_sqlite(url, pool_size).await,
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(pool_size.max(2))
                    .acquire_timeout(Duration::from_secs(10))
                    // sqlx pings a connection when it goes back to the pool
                    // (always) and, by default, again when it is taken: two
                    // round trips around each batch's one in a drop, each a
                    // wake-up of a PostgreSQL backend and of a task on two
                    // busy cores. One taken back within `PING_IDLE_AFTER`
                    // answered its release ping just now.
                    .test_before_acquire(false)
                    // Connections stay open while idle, ready for a drop
                    // (`warm_up`); still replaced after sqlx's lifetime.
                    .idle_timeout(None)
                    .before_acquire(|conn, meta| {
                        Box::pin(async move {
                            if meta.idle_for >= PING_IDLE_AFTER {
                                conn.ping().await?;
                            }
                            Ok(true)
                        })
                    })
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(POSTGRES_SESSION).await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?;
                Ok(Self {
                    backend,
                    write: pool.clone(),
                    read: pool,
                    direct: None,
                    checkpointer: None,
                    checkpoint_task: None,
                    tidy_from: Default::default(),
                    beside_others: Default::default(),
                    stock_floors: Default::default(),
                    batch_paths: Default::default(),
                    wal_sync: None,
                    instance_lock: Default::default(),
                })
            }
        }
    }

    /// Applies the embedded migrations of this backend.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.write).await?;
        Ok(())
    }

    /// Whether `migrate` has anything to apply: a migration of this build
    /// not recorded as applied (all of them on a new database).
    pub async fn migrations_pending(&self) -> Result<bool> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        // No table yet: nothing was ever applied. Asked first, so that any
        // other failure to read it is reported as itself, not as "pending"
        // (which would tell the operator to stop another process).
        let table_sql = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master \
                 WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM pg_class \
                 WHERE oid = to_regclass('_sqlx_migrations')"
            }
        };
        let tables: i64 = sqlx::query_scalar(table_sql).fetch_one(&self.write).await?;
        if tables == 0 {
            return Ok(true);
        }
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.write)
                .await?;
        Ok(migrator
            .iter()
            .any(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version)))
    }
}

async fn connect_sqlite(url: &str, pool_size: u32) -> Result<SqlStore> {
    let query = url.split_once('?').map(|(_, q)| q);
    let path = Backend::sqlite_file(url).ok_or(StoreError::UnsupportedUrl)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Corrupt(format!("cannot create {}: {e}", dir.display())))?;
    }
    create_private(&path)?;
    let file = path.display();
    let with_mode = |mode: &str| match query {
        Some(q) => format!("sqlite://{file}?{q}&mode={mode}"),
        None => format!("sqlite://{file}?mode={mode}"),
    };
    let write = AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(SQLITE_PRAGMAS).await?;
                conn.execute(super::direct::BACKSTOP_PRAGMA.as_str())
                    .await?;
                Ok(())
            })
        })
        .after_release(|conn, _| {
            Box::pin(async move {
                // sqlx counts a transaction that SQLite ended by itself as
                // still open: a COMMIT refused for a full disk or an I/O
                // error rolls back, the ROLLBACK sqlx sends on drop then
                // fails, the count never comes down, and every later BEGIN
                // on this, the one write connection, is refused ("begin_with
                // at non-zero transaction depth") until it is replaced. So
                // let a dropped transaction's queued ROLLBACK run, and close
                // the connection if it still counts one open; the pool opens
                // a new one.
                if conn.is_in_transaction() {
                    conn.ping().await?;
                }
                Ok(!conn.is_in_transaction())
            })
        })
        .connect(&with_mode("rwc"))
        .await?;
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&write)
        .await?;
    let read: AnyPool = AnyPoolOptions::new()
        .max_connections(pool_size.clamp(1, 8))
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA busy_timeout = 10000; PRAGMA cache_size = -2048;")
                    .await?;
                Ok(())
            })
        })
        .connect_lazy(&with_mode("ro"))?;
    let checkpointer: AnyPool = AnyPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA busy_timeout = 10000;").await?;
                Ok(())
            })
        })
        .connect_lazy(&with_mode("rw"))?;
    let wal_frames = Arc::new(AtomicI64::new(0));
    let checkpoint_task = tokio::spawn(checkpoint_loop(
        checkpointer.clone(),
        wal_frames.clone(),
        path.clone(),
    ));
    let direct = super::direct::Direct::open(&path, wal_frames)?;
    Ok(SqlStore {
        backend: Backend::Sqlite,
        write,
        read,
        direct: Some(std::sync::Arc::new(direct)),
        checkpointer: Some(checkpointer),
        checkpoint_task: Some(Arc::new(std::sync::Mutex::new(Some(checkpoint_task)))),
        tidy_from: Default::default(),
        beside_others: Default::default(),
        stock_floors: Default::default(),
        batch_paths: Default::default(),
        wal_sync: Some(Arc::new(super::wal_sync::WalSync::start(&path)?)),
        instance_lock: Default::default(),
    })
}

/// Creates the database file readable by its owner only, if it is not there
/// yet. SQLite gives its `-wal` and `-shm` files the database file's mode,
/// so the order history, buyers' emails and sealed codes stay private to
/// the account that runs Kami whatever its umask (sealed codes need the
/// master key too; the rest is readable in the file itself). An existing
/// file keeps the mode its operator gave it.
fn create_private(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Corrupt(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// Failed background passes in a row after which the writer is asked to
/// restart the WAL anyway (about a second of them): its restarts wait for
/// this task's reports, and without them the WAL would only grow.
const FAILURES_BEFORE_RESTART: u32 = 10;

/// One passive checkpoint: the WAL's length in frames when it started (all
/// of which it copied back), or `None` if another checkpoint was running.
///
/// All of the WAL it saw is not all of the WAL: commits go on while it
/// copies, so under a steady stream of them no pass ever finds the WAL fully
/// copied, and SQLite never starts it over by itself. Reporting "all copied"
/// as a WAL to forget (as this did until stop 15) left the WAL to grow to the
/// writers' backstop, whose checkpoint inside a commit copied some 6,000
/// frames and stalled every payment for 60–80 ms, every four seconds of a
/// notification storm.
async fn passive_checkpoint(
    checkpointer: &AnyPool,
) -> std::result::Result<Option<i64>, sqlx::Error> {
    // (busy, frames in the WAL, frames copied back)
    let (busy, frames, _copied) =
        sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(checkpointer)
            .await?;
    Ok((busy == 0).then_some(frames))
}

/// Passes at most run back to back before a restart (`checkpoint_loop`).
/// Each one, with its sync of the database, took about two thirds as long
/// as the one before in a storm on this machine (probed: 34, 18, 11, 7 ms;
/// or 45, 26, 19, 14, 10, 8 ms), so up to eight shrink what the restart is
/// left even when the first is slow.
const CATCH_UP_PASSES: u32 = 8;
/// A pass this short leaves little for the restart to copy and sync.
const CAUGHT_UP: Duration = Duration::from_millis(10);

/// Syncs the database file (`fdatasync`) from a blocking thread.
///
/// A passive checkpoint syncs the database only when it found nothing
/// committed behind it, which in a storm is never: until stop 16 every
/// page the background passes copied stayed dirty in the page cache until
/// the writer thread's restart synced them, all of two or three seconds of
/// them, while every payment waited (40–90 ms; the restart's copy and
/// everything else took 4–6 ms once the database had been synced just
/// before). Syncing more often than SQLite does is always safe.
async fn sync_database(db: &Arc<File>) {
    let db = db.clone();
    let synced = tokio::task::spawn_blocking(move || db.sync_data())
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
    if let Err(e) = synced {
        tracing::debug!(error = %e, "syncing the database failed; the restart syncs it");
    }
}

/// One pass (`passive_checkpoint`), then a sync of the database if the WAL
/// is longer than at the last pass (`last_seen`): an unchanged one copied
/// nothing new.
async fn pass_and_sync(
    checkpointer: &AnyPool,
    db: Option<&Arc<File>>,
    last_seen: &mut i64,
) -> std::result::Result<Option<i64>, sqlx::Error> {
    let report = passive_checkpoint(checkpointer).await;
    if let (Ok(Some(frames)), Some(db)) = (&report, db) {
        if *frames > 0 && std::mem::replace(last_seen, *frames) != *frames {
            sync_database(db).await;
        }
    }
    report
}

/// Asks for the WAL's next pages (`wal_prefetch.rs`) once a pass has told
/// its length. The advice returns without waiting for the reads.
fn prefetch_after(
    prefetch: &mut WalPrefetch,
    report: &std::result::Result<Option<i64>, sqlx::Error>,
) {
    if let Ok(Some(frames)) = report {
        if let Some(request) = prefetch.advance(*frames, super::direct::RESTART_FRAMES) {
            drop(tokio::task::spawn_blocking(move || request.send()));
        }
    }
}

/// Passive checkpoints off the writers' path, until the store is closed. A
/// passive checkpoint never waits for readers or writers: it copies what it
/// can of the WAL back into the database, with the fsyncs on this task's
/// connection. SQLite only starts the WAL over after a checkpoint that found
/// nothing new behind it, which a steady stream of commits never allows, so
/// the SQLite writer thread finishes the job between two of its batches
/// (`direct.rs`, `restart_wal`) once this task reports in `wal_frames` a WAL
/// past `direct::RESTART_FRAMES`. Whatever was committed since this task's
/// last pass, the writer copies while every payment waits. So before it
/// reports a long WAL, this task runs passes back to back, each copying what
/// was committed during the one before, until one takes under `CAUGHT_UP`:
/// the writer is then left 200–300 frames, not the 6,000 of 100 ms of a
/// storm. Every pass that copied something is followed by a sync of the
/// database (`sync_database`), so the restart's sync only writes what it
/// copied itself: it stops the writer for 3–18 ms in a storm, every two or
/// three seconds (40–90 ms before stop 16).
async fn checkpoint_loop(checkpointer: AnyPool, wal_frames: Arc<AtomicI64>, db: PathBuf) {
    let page_size = sqlx::query_as::<_, (i64,)>("PRAGMA page_size")
        .fetch_one(&checkpointer)
        .await
        .map_or(4_096, |(p,)| p as u64);
    let mut prefetch = WalPrefetch::new(&db, page_size);
    // Opened for syncing only; without it the passes go on as before and
    // the restart syncs what they copied.
    let db = File::open(&db).map(Arc::new).ok();
    let mut last_seen = 0;
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if checkpointer.is_closed() {
            break;
        }
        let mut report = pass_and_sync(&checkpointer, db.as_ref(), &mut last_seen).await;
        prefetch_after(&mut prefetch, &report);
        let mut passes = 1;
        while matches!(report, Ok(Some(frames)) if frames >= super::direct::RESTART_FRAMES)
            && passes < CATCH_UP_PASSES
        {
            let started = Instant::now();
            report = pass_and_sync(&checkpointer, db.as_ref(), &mut last_seen).await;
            prefetch_after(&mut prefetch, &report);
            passes += 1;
            if started.elapsed() < CAUGHT_UP {
                break;
            }
        }
        match report {
            Ok(frames) => {
                failures = 0;
                if let Some(frames) = frames {
                    wal_frames.store(frames, Ordering::Relaxed);
                }
            }
            Err(e) => {
                failures += 1;
                if failures.is_multiple_of(FAILURES_BEFORE_RESTART) {
                    tracing::warn!(error = %e, failures,
                        "background WAL checkpoints keep failing; the writer restarts the WAL itself");
                    wal_frames.store(super::direct::RESTART_FRAMES, Ordering::Relaxed);
                } else {
                    tracing::debug!(error = %e, "background WAL checkpoint failed; retrying");
                }
            }
        }
    }
    checkpointer.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection of a PostgreSQL store runs without JIT, the ones
    /// opened later as well as the first.
    #[tokio::test]
    async fn postgres_sessions_run_without_jit() {
        let url = std::env::var("KAMI_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let store = SqlStore::connect(&url, 3).await.unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = store.write.acquire().await.unwrap();
            let jit: String = sqlx::query_scalar("SELECT current_setting('jit')")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(jit, "off");
            held.push(conn);
        }
        drop(held);
        store.close().await;
    }

    /// A pass that copied all it saw still reports the WAL's length: the
    /// writer thread decides from it whether to start the WAL over, and a
    /// storm's passes always copy all they saw (until stop 15 they reported
    /// 0 then, and the WAL grew to the writers' backstop every time).
    #[tokio::test]
    async fn a_finished_pass_reports_the_wal_length() {
        sqlx::any::install_default_drivers();
        let dir = std::env::temp_dir().join(format!("kami-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/t.db?mode=rwc", dir.display());
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        pool.execute("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
            .await
            .unwrap();
        pool.execute("CREATE TABLE t (v TEXT)").await.unwrap();
        for _ in 0..20 {
            pool.execute("INSERT INTO t VALUES (hex(randomblob(2000)))")
                .await
                .unwrap();
        }
        let first = passive_checkpoint(&pool).await.unwrap();
        assert!(
            matches!(first, Some(frames) if frames >= 20),
            "a WAL of 20 commits reported as {first:?}"
        );
        // Copied back in full, it still has that length until a write
        // starts it over.
        assert_eq!(passive_checkpoint(&pool).await.unwrap(), first);
        pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! `kami backup FILE` and `kami restore FILE` for SQLite (PostgreSQL uses
//! pg_dump / pg_restore, docs/operations.md).
//!
//! Every process that opens a SQLite database holds a shared lock on
//! `<database>.lock` for its lifetime; restore takes it exclusively, so a
//! database is never swapped under a running shop. A process that finds no
//! other holding it starts with it exclusive, so its migrations are never
//! applied under another process (`open_store`), and shares it after.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context};
use kami_core::secrets::MasterKey;
use kami_store::{Backend, SqlStore, Store};

use super::{closing, init_logging, open_store};
use crate::config::Config;
use crate::master_key;

/// The shared lock of this process, kept until it exits.
static IN_USE: OnceLock<File> = OnceLock::new();

fn lock_file(db: &Path) -> anyhow::Result<File> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .with_context(|| format!("cannot open {}", PathBuf::from(name).display()))
}

/// How this process holds a SQLite database's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Exclusively: no other Kami process has the database open.
    Alone,
    /// Shared with other Kami processes.
    Shared,
    /// Not a SQLite database: nothing to lock.
    NotSqlite,
}

/// Marks the SQLite database of `url` as in use by this process:
/// exclusively if no other Kami process has it open, shared otherwise
/// (`share_lock` lets the others in once it has migrated the database).
/// Waits only while a restore runs, or while another process that found
/// itself alone starts.
pub fn hold_lock(url: &str) -> anyhow::Result<Held> {
    let Some(db) = Backend::sqlite_file(url) else {
        return Ok(Held::NotSqlite);
    };
    if IN_USE.get().is_some() {
        return Ok(Held::Shared);
    }
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let f = lock_file(&db)?;
    let held = match f.try_lock() {
        Ok(()) => Held::Alone,
        Err(TryLockError::WouldBlock) => {
            f.lock_shared()
                .with_context(|| format!("cannot lock {}", db.display()))?;
            Held::Shared
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", db.display()))
        }
    };
    let _ = IN_USE.set(f);
    Ok(held)
}

/// Turns this process's exclusive lock (`Held::Alone`) into a shared one,
/// so other Kami processes can open the database beside it. The kernel may
/// let a waiting restore in between the two (`flock` converts a lock by
/// dropping it first), so the database is checked to be the same file
/// after.
pub fn share_lock(url: &str) -> anyhow::Result<()> {
    let (Some(db), Some(f)) = (Backend::sqlite_file(url), IN_USE.get()) else {
        return Ok(());
    };
    let before = file_id(&db)?;
    f.lock_shared()
        .with_context(|| format!("cannot lock {}", db.display()))?;
    if file_id(&db)? != before {
        bail!(
            "{} was restored while this process started; start it again",
            db.display()
        );
    }
    Ok(())
}

fn file_id(db: &Path) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(db).with_context(|| format!("cannot read {}", db.display()))?;
    Ok((m.dev(), m.ino()))
}

pub async fn backup(cfg: Config, file: &Path) -> anyhow::Result<()> {
    init_logging("warn", false);
    let store = open_store(&cfg).await?;
    closing(&store, write_backup(&cfg, &store, file)).await?;
    println!("backup written to {}", file.display());
    Ok(())
}

async fn write_backup(cfg: &Config, store: &SqlStore, file: &Path) -> anyhow::Result<()> {
    if store.backend() != Backend::Sqlite {
        bail!("kami backup is for SQLite; for PostgreSQL use pg_dump (see docs/operations.md)");
    }
    crate::master_key::check_given(cfg, store).await?;
    // An empty file is taken (what `mktemp` makes), as SQLite's `VACUUM
    // INTO` takes it; anything else is never overwritten.
    if std::fs::metadata(file).is_ok_and(|m| !m.is_file() || m.len() > 0) {
        bail!("{} already exists and is not an empty file", file.display());
    }
    // Written to a file of our own, owner-only, then renamed over the
    // target: a backup holds what the database holds, and an empty file
    // someone else made there (another account, mode 0666) would keep its
    // owner and mode if `VACUUM INTO` filled it.
    let staging = with_suffix(file, &format!(".partial-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    if let Err(e) = store.backup_sqlite(&staging.to_string_lossy()).await {
        let _ = std::fs::remove_file(&staging);
        return Err(e.into());
    }
    std::fs::rename(&staging, file)
        .with_context(|| format!("cannot move the backup to {}", file.display()))
}

/// Replaces the SQLite database with a backup, after checking that the
/// backup is intact and sealed with this installation's master key. The
/// replaced database is kept beside it, never deleted.
pub async fn restore(cfg: Config, file: &Path) -> anyhow::Result<()> {
    init_logging("warn", false);
    let url = cfg.database_url()?;
    let Some(db) = Backend::sqlite_file(&url) else {
        bail!("kami restore is for SQLite; for PostgreSQL use pg_restore (see docs/operations.md)");
    };
    if !file.is_file() {
        bail!("{} is not a file", file.display());
    }
    check_sqlite_header(file)?;
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let lock = lock_file(&db)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => bail!(
            "a Kami process is using {}; stop it before restoring",
            db.display()
        ),
        Err(TryLockError::Error(e)) => return Err(e).context("cannot lock the database"),
    }
    // Restoring must not create a master key: codes sealed under the old
    // one would become unreadable. The key has to be the one in use
    // already; none is fine only for a backup that sealed nothing.
    let keys = master_key::load_given(&cfg)?;

    let staging = with_suffix(&db, ".restoring");
    remove_sqlite_files(&staging)?;
    std::fs::copy(file, &staging)
        .with_context(|| format!("cannot copy {} to {}", file.display(), staging.display()))?;
    // `copy` gave it the backup file's mode; the database keeps the one it
    // had (owner-only for a new one).
    let mode = std::fs::metadata(&db).map_or(0o600, |m| m.permissions().mode() & 0o777);
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode))?;
    if let Err(e) = check_backup(&staging, keys.as_ref(), &cfg).await {
        remove_sqlite_files(&staging)?;
        return Err(e.context(format!("{} was not restored", file.display())));
    }

    let kept = with_suffix(&db, &format!(".before-restore-{}", kami_core::now_millis()));
    if db.exists() {
        for ext in ["", "-wal", "-shm"] {
            let from = with_suffix(&db, ext);
            if from.exists() {
                std::fs::rename(&from, with_suffix(&kept, ext))?;
            }
        }
    }
    std::fs::rename(&staging, &db)?;
    // The check's connections are closed, and the last close folds the WAL
    // into the file and removes it. Should one be left, it goes with the
    // file it belongs to (it may hold the check's migrations); the shared
    // memory index is rebuilt by the next open.
    let staged_wal = with_suffix(&staging, "-wal");
    if staged_wal.exists() {
        std::fs::rename(&staged_wal, with_suffix(&db, "-wal"))?;
    }
    remove_sqlite_files(&staging)?;
    println!("restored {} into {}", file.display(), db.display());
    if kept.exists() {
        println!("the previous database is kept at {}", kept.display());
    }
    Ok(())
}

/// Every SQLite database file begins with these 16 bytes. Checked first, so
/// that a file that is no database is refused at once, not after SQLite has
/// waited out its busy timeout on it.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

fn check_sqlite_header(file: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let read = File::open(file)
        .and_then(|mut f| f.read_exact(&mut head))
        .map(|()| head == *SQLITE_MAGIC);
    match read {
        Ok(true) => Ok(()),
        Ok(false) => bail!(
            "{} is not a SQLite database; nothing was restored",
            file.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            bail!(
                "{} is not a SQLite database; nothing was restored",
                file.display()
            )
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

async fn check_backup(path: &Path, keys: Option<&MasterKey>, cfg: &Config) -> anyhow::Result<()> {
    let url = format!("sqlite://{}", path.display());
    let store = SqlStore::connect(&url, 1)
        .await
        .context("not a SQLite database")?;
    let result = async {
        let integrity = store
            .integrity_check()
            .await
            .context("not a SQLite database")?;
        if integrity != "ok" {
            bail!("the backup is damaged: {integrity}");
        }
        // An older backup is brought up to this version's schema.
        store.migrate().await.context("migrations failed")?;
        // A backup of a shop that never sealed a code (`kami backup` on a
        // fresh data directory) has no key to match, and needs none.
        match (store.get_setting("master_key_check").await?, keys) {
            (None, _) => Ok(()),
            (Some(_), None) => bail!(
                "no master key: put the master.key that sealed this backup at {} \
                 (or set KAMI_MASTER_KEY) and run restore again",
                cfg.data_dir.join("master.key").display()
            ),
            (Some(check), Some(master))
                if master_key::keys_of(master, &check, &store).await?.is_none() =>
            {
                bail!(
                "the backup's codes were sealed with another master key; restore with that key \
                 (a backup from before `kami keys rotate` opens with the key it retired, \
                 master.key.retired-…)"
                )
            }
            (Some(_), Some(_)) => Ok(()),
        }
    }
    .await;
    store.close().await;
    result
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

fn remove_sqlite_files(db: &Path) -> anyhow::Result<()> {
    for ext in ["", "-wal", "-shm"] {
        let p = with_suffix(db, ext);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    Ok(())
}

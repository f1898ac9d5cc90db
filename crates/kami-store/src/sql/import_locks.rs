//! Which SQLite imports are alive, told by file locks.
//!
//! A running import (of the server, or of `kami cards import` beside it)
//! holds an exclusive lock (`File::try_lock`, flock on Linux, as `kami
//! backup`'s database lock) on `<database>-import-<batch>.lock` until it
//! ends. The kernel lets the lock go when the process dies, however it dies,
//! so a reaper that can take it knows at once that the import was cut off,
//! and its staged codes stop counting as duplicates in the operator's
//! re-upload. (The heartbeat stays the rule for a batch without a file: one
//! begun by an older build.) PostgreSQL's imports hold an advisory lock for
//! the same purpose (`catalog::begin_import`). Files rather than SQLite: the
//! database has no lock that outlives a statement and dies with a process.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{Result, StoreError};

fn lock_path(database: &Path, batch: i64) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(format!("-import-{batch}.lock"));
    PathBuf::from(name)
}

/// A running import's lock; dropped, the file goes and the lock with it.
pub struct Held {
    path: PathBuf,
    _file: File,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Opens (creating it, owner-only) the lock file at `path` and locks it:
/// `wait`, until no other process holds it; else at once or not at all.
fn lock_file(path: &Path, wait: bool) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::Corrupt(format!("cannot create {}: {e}", path.display())))?;
    let locked = if wait {
        file.lock()
    } else {
        file.try_lock().map_err(std::io::Error::from)
    };
    locked.map_err(|e| StoreError::Corrupt(format!("cannot lock {}: {e}", path.display())))?;
    Ok(file)
}

/// Takes the lock of `batch`'s import.
pub fn hold(database: &Path, batch: i64) -> Result<Held> {
    let path = lock_path(database, batch);
    let file = lock_file(&path, false)?;
    Ok(Held { path, _file: file })
}

/// Waits for, and takes, the lock of imports into `product_id`: one import
/// into a product at a time. The file stays (one per product ever
/// imported into): removing a lock file others may wait on would let two
/// processes each hold a lock, one on the removed file.
pub async fn hold_product(database: &Path, product_id: i64) -> Result<File> {
    let mut name = database.as_os_str().to_owned();
    name.push(format!("-import-product-{product_id}.lock"));
    let path = PathBuf::from(name);
    tokio::task::spawn_blocking(move || lock_file(&path, true))
        .await
        .map_err(|e| StoreError::Corrupt(format!("waiting for an import lock failed: {e}")))?
}

/// Whether `batch`'s import is known dead: its lock file is there and no
/// process holds it. `None` when there is no file to tell.
pub fn is_dead(database: &Path, batch: i64) -> Option<bool> {
    let path = lock_path(database, batch);
    let file = File::open(&path).ok()?;
    Some(file.try_lock().is_ok())
}

/// Removes a dead import's lock file.
pub fn forget(database: &Path, batch: i64) {
    let _ = std::fs::remove_file(lock_path(database, batch));
}

//! SQLite: a payment acknowledged is on the disk.
//!
//! The write connections run `synchronous = NORMAL` (DESIGN.md): a commit
//! writes its WAL frames and does not wait for the disk, and survives the
//! process crashing but not the machine losing power. A payment's `success`
//! to the gateway is a promise (invariant 3: once a notification is
//! acknowledged the payment is durably recorded; the gateway never sends it
//! again). So before one is given, the WAL is synced here, on a thread of
//! its own: the writer thread goes on with the next batch meanwhile, and
//! every acknowledgement waiting when a sync starts shares it (a group
//! commit of syncs). `fdatasync` of this VM's disk took 0.1 ms at the median
//! and 0.7 ms at the p99. Orders do not wait (`SqlStore::create_orders`).
//!
//! The WAL is opened by its path at every pass, never kept open: a frame
//! committed before the pass is either still in that file (synced here) or
//! was copied into the database by a checkpoint, which syncs the database
//! before the WAL starts over, is truncated or is removed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use crate::{Result, StoreError};

type Waiter = tokio::sync::oneshot::Sender<std::io::Result<()>>;

pub(crate) struct WalSync {
    requests: Mutex<Option<mpsc::Sender<Waiter>>>,
    /// Sync passes done so far (tests, `SqlStore::wal_syncs`).
    passes: Arc<AtomicU64>,
}

impl WalSync {
    /// Starts the syncing thread for the database at `db`.
    pub(crate) fn start(db: &Path) -> Result<WalSync> {
        let wal = wal_path(db);
        let (tx, rx) = mpsc::channel::<Waiter>();
        let passes = Arc::new(AtomicU64::new(0));
        let done = passes.clone();
        std::thread::Builder::new()
            .name("kami-sqlite-sync".into())
            .spawn(move || {
                // Ends when the store is closed or dropped (every sender gone).
                while let Ok(first) = rx.recv() {
                    let mut waiters = vec![first];
                    waiters.extend(rx.try_iter());
                    let synced = sync_wal(&wal);
                    done.fetch_add(1, Ordering::Release);
                    if let Err(e) = &synced {
                        tracing::error!(error = %e, wal = %wal.display(),
                            "syncing the SQLite WAL failed: the writes waiting for it are not acknowledged");
                    }
                    for w in waiters {
                        let _ = w.send(match &synced {
                            Ok(()) => Ok(()),
                            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                        });
                    }
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the SQLite sync: {e}")))?;
        Ok(WalSync {
            requests: Mutex::new(Some(tx)),
            passes,
        })
    }

    /// Returns once everything committed before the call is on the disk.
    pub(crate) async fn synced(&self) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stopped = || StoreError::Corrupt("the SQLite sync has stopped".into());
        self.requests
            .lock()
            .map_err(|_| stopped())?
            .as_ref()
            .ok_or_else(stopped)?
            .send(tx)
            .map_err(|_| stopped())?;
        rx.await
            .map_err(|_| stopped())?
            .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))
    }

    pub(crate) fn passes(&self) -> u64 {
        self.passes.load(Ordering::Acquire)
    }

    /// Stops the thread once the syncs asked for are done.
    pub(crate) fn close(&self) {
        if let Ok(mut requests) = self.requests.lock() {
            requests.take();
        }
    }
}

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn sync_wal(wal: &Path) -> std::io::Result<()> {
    match std::fs::File::open(wal) {
        Ok(f) => f.sync_data(),
        // No WAL: every frame was checkpointed into the database (synced)
        // and the file removed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_is_the_database_path_with_a_suffix() {
        assert_eq!(
            wal_path(Path::new("/var/lib/kami/kami.db")),
            PathBuf::from("/var/lib/kami/kami.db-wal")
        );
    }

    #[tokio::test]
    async fn a_missing_wal_is_synced_and_an_unreadable_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("kami-walsync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("kami.db");
        let s = WalSync::start(&db).unwrap();
        s.synced().await.expect("no WAL, nothing to sync");
        std::fs::write(wal_path(&db), b"frames").unwrap();
        s.synced().await.expect("a WAL synced");
        assert!(s.passes() >= 2);
        // A WAL that cannot be opened (its path goes through a file): the
        // sync fails, and so does every acknowledgement waiting for it.
        let bad = WalSync::start(&wal_path(&db).join("x")).unwrap();
        assert!(
            bad.synced().await.is_err(),
            "a WAL that cannot be opened is an error"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! `kami keys rotate`: a new master key, and every code, payment channel
//! key, TOTP key, stored answer and keyed hash of the database moved under
//! it in one transaction (`SqlStore::rotate_keys`).
//!
//! The new key is written to a file of its own (`master_key::rotation_file`)
//! before the database takes it, so no moment exists where the database
//! is sealed under a key kept nowhere. A rotation cut off is finished by
//! running it again: the file is reused, and once the database is found
//! under it only the files are swapped.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use kami_core::secrets::{Keys, MasterKey};
use kami_store::{SqlStore, Store};

use super::backup::{hold_lock, Held};
use super::init_logging;
use crate::config::Config;
use crate::master_key;

pub async fn rotate(cfg: Config) -> anyhow::Result<()> {
    init_logging("warn", false);
    let url = cfg.database_url()?;
    // SQLite: held exclusively to the end, as by a restore; a shop started
    // meanwhile waits, then finds the new key's check and refuses the old.
    if hold_lock(&url)? == Held::Shared {
        bail!(
            "a Kami process is using the database; stop the shop (and any `kami` command on \
             it) before rotating the master key"
        );
    }
    let store = SqlStore::connect(&url, 2)
        .await
        .with_context(|| format!("cannot connect to {}", kami_store::redact_url(&url)))?;
    let result = async {
        store
            .refuse_rotation_while_in_use(std::time::Duration::from_secs(5))
            .await?;
        store.migrate().await.context("migrations failed")?;
        rotate_in(&cfg, &store).await
    }
    .await;
    store.close().await;
    result
}

async fn rotate_in(cfg: &Config, store: &SqlStore) -> anyhow::Result<()> {
    let Some(check) = store.get_setting("master_key_check").await? else {
        bail!("this database has sealed nothing yet: there is no key to rotate");
    };
    let old_master = master_key::load_given(cfg)?;
    let next_file = master_key::rotation_file(cfg);
    let mut resumed = None;
    if next_file.exists() {
        let text = std::fs::read_to_string(&next_file)
            .with_context(|| format!("cannot read {}", next_file.display()))?;
        let next = MasterKey::from_base64(&text)
            .with_context(|| format!("{} is not a master key", next_file.display()))?;
        let is_given = old_master.as_ref().is_some_and(|m| {
            kami_core::secrets::ct_eq(m.to_base64().as_bytes(), next.to_base64().as_bytes())
        });
        if is_given {
            // The key given is this file's: a rotation finished with
            // KAMI_MASTER_KEY whose file was left behind. A copy of the key
            // in use, not a rotation to go on with.
            std::fs::remove_file(&next_file)
                .with_context(|| format!("cannot remove {}", next_file.display()))?;
        } else if Keys::new(&next).same_master(&check) {
            // The rotation committed and was cut off before the files.
            return finish(cfg, &next_file);
        } else {
            resumed = Some(next);
        }
    }
    let Some(old_master) = old_master else {
        bail!("this shop has no master key to rotate (no KAMI_MASTER_KEY, no key file)");
    };
    let Some(old) = master_key::keys_of(&old_master, &check, store).await? else {
        bail!(
            "the master key given is not this database's; nothing was changed{}",
            if resumed.is_some() {
                format!(
                    " ({} is kept for a rotation with the right key)",
                    next_file.display()
                )
            } else {
                String::new()
            }
        );
    };
    let new_master = match resumed {
        Some(next) => {
            eprintln!(
                "kami: a rotation was cut off before the database took its key; going on with {}",
                next_file.display()
            );
            next
        }
        None => {
            let next = MasterKey::generate();
            write_key_file(&next_file, &next)?;
            next
        }
    };
    let rotation = old.rotated(&new_master);
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} sealing codes again: {pos} ({per_sec})")
            .expect("static template"),
    );
    let done = store.rotate_keys(&rotation, &|n| bar.set_position(n)).await;
    bar.finish_and_clear();
    let done = done.with_context(|| {
        format!(
            "the rotation did not complete; keep {} and run `kami keys rotate` again: it \
             goes on with that key, or only finishes if the database took it",
            next_file.display()
        )
    })?;
    println!("rotated to key id {}: {done}", rotation.new.key_id());
    finish(cfg, &next_file)?;
    // The rotation stands whatever this does: it only clears the old
    // values' leftovers from the files (it needs room for a copy of them).
    eprintln!("kami: compacting the database, so the old key's values leave its files");
    if let Err(e) = store.compact_after_rotation().await {
        eprintln!(
            "kami: compacting failed ({e}); the rotation is done. Run VACUUM (SQLite) or \
             VACUUM FULL (PostgreSQL) when there is room"
        );
    }
    Ok(())
}

/// The database is under the new key in `next_file`: it takes the old
/// key's place (the old kept beside it, renamed), or, for a key given in
/// `KAMI_MASTER_KEY`, the operator is told to move it there.
fn finish(cfg: &Config, next_file: &Path) -> anyhow::Result<()> {
    let Some(key_file) = master_key::key_file(cfg) else {
        println!(
            "the new master key is in {}: set KAMI_MASTER_KEY to its contents, then delete \
             the file; the old key no longer starts this shop",
            next_file.display()
        );
        warn_about_backups("the old KAMI_MASTER_KEY");
        return Ok(());
    };
    // The old key is linked under its new name first, and the new one then
    // renamed over it: at every moment a key file is there, and a name
    // already taken is never overwritten.
    let mut retired = key_file.clone().into_os_string();
    retired.push(format!(".retired-{}", kami_core::now_millis()));
    let retired = std::path::PathBuf::from(retired);
    let kept = key_file.exists();
    if kept {
        std::fs::hard_link(&key_file, &retired)
            .with_context(|| format!("cannot keep the old key as {}", retired.display()))?;
    }
    std::fs::rename(next_file, &key_file)
        .with_context(|| format!("cannot move the new key to {}", key_file.display()))?;
    sync_dir(&key_file)?;
    if kept {
        println!(
            "new master key in {}; the old one kept as {}",
            key_file.display(),
            retired.display()
        );
        warn_about_backups(&retired.display().to_string());
    } else {
        println!("new master key in {}", key_file.display());
        warn_about_backups("the old key");
    }
    Ok(())
}

fn warn_about_backups(old: &str) {
    eprintln!(
        "kami: BACK UP THE NEW KEY NOW. Backups taken before this rotation open only with \
         {old}: keep it with them, offline, or destroy both. Operators' remembered browsers \
         are forgotten."
    );
}

fn write_key_file(path: &Path, key: &MasterKey) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(f, "{}", key.to_base64())?;
    f.sync_all()?;
    sync_dir(path)
}

/// A rename or a new file survives a power cut once its directory is synced.
fn sync_dir(path: &Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

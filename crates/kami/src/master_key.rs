//! Finding the master key: `KAMI_MASTER_KEY`, a key file, or a new key file
//! in the data directory created on first run (mode 0600).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use anyhow::{bail, Context};
use kami_core::secrets::{Keys, MasterKey};
use kami_store::Store;

use crate::config::Config;

/// The configuration holds at most one of the key's forms: a later layer's
/// replaces an earlier one's (`config::replace_secret`).
pub fn load(cfg: &Config) -> anyhow::Result<MasterKey> {
    if let Some(b64) = &cfg.master_key {
        return MasterKey::from_base64(b64).context("KAMI_MASTER_KEY is invalid");
    }
    if let Some(path) = &cfg.master_key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read master key file {}", path.display()))?;
        return MasterKey::from_base64(&text)
            .with_context(|| format!("master key file {} is invalid", path.display()));
    }
    let path = cfg.data_dir.join("master.key");
    if path.exists() {
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "master key file is readable by others; chmod 600 it");
        }
        let text = std::fs::read_to_string(&path)?;
        return MasterKey::from_base64(&text)
            .with_context(|| format!("master key file {} is invalid", path.display()));
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
    let key = MasterKey::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(f, "{}", key.to_base64())?;
    f.sync_all()?;
    tracing::warn!(
        path = %path.display(),
        "CREATED A NEW MASTER KEY. Back this file up now: without it the codes in the database cannot be decrypted."
    );
    eprintln!(
        "kami: created a new master key at {}. BACK IT UP: without it your codes cannot be decrypted.",
        path.display()
    );
    Ok(key)
}

/// Derives the keys and makes sure they are the ones the database's codes
/// were sealed with (fail closed: a wrong key must not seal new codes).
pub async fn keys_for(cfg: &Config, store: &dyn Store) -> anyhow::Result<Keys> {
    // A database set up with a key, and no key given: a new key file would
    // read none of its codes and sit where the operator must put the real
    // one back, so none is made.
    let default_file = cfg.data_dir.join("master.key");
    if !key_given(cfg) && store.get_setting("master_key_check").await?.is_some() {
        bail!(
            "this database was set up with a master key and none was given \
             (no KAMI_MASTER_KEY, no key file, no {}); put the original key back there \
             or set KAMI_MASTER_KEY. No new key was created: it could not read the codes",
            default_file.display()
        );
    }
    let master = load(cfg)?;
    let stored = store
        .init_setting("master_key_check", Keys::new(&master).check_value())
        .await?;
    keys_of(&master, &stored, store)
        .await?
        .ok_or_else(|| not_this_databases(cfg))
}

/// The keys of a database whose stored check value is `stored`, made from
/// `master` and, once rotated, the database's key history (its key id and
/// hash chains, `kami keys rotate`); `None` when `master` is another key.
pub async fn keys_of(
    master: &MasterKey,
    stored: &str,
    store: &dyn Store,
) -> anyhow::Result<Option<Keys>> {
    if !Keys::new(master).same_master(stored) {
        return Ok(None);
    }
    let history = store.get_setting("key_history").await?;
    let keys = Keys::with_history(master, history.as_deref())
        .context("the database's key history does not open with its master key")?;
    if keys.check_value() != stored {
        bail!(
            "the database's master key check names key id {} but its key history says {}: \
             the settings row `key_history` is missing or from another rotation; nothing \
             is sealed until it is put back",
            stored.split_once(':').map_or("1", |(_, id)| id),
            keys.key_id()
        );
    }
    Ok(Some(keys))
}

fn not_this_databases(cfg: &Config) -> anyhow::Error {
    let rotated = rotation_file(cfg);
    let hint = if rotated.exists() {
        format!(
            " (a `kami keys rotate` left its new key in {}: set KAMI_MASTER_KEY to it, \
             or run `kami keys rotate` again to finish)",
            rotated.display()
        )
    } else {
        String::new()
    };
    anyhow::anyhow!(
        "the master key does not match the one this database was set up with; \
         start with the original key (KAMI_MASTER_KEY or {}/master.key){hint}",
        cfg.data_dir.display()
    )
}

/// Whether a master key is given: `KAMI_MASTER_KEY`, a key file configured,
/// or one in the data directory. `load` makes one when none is.
fn key_given(cfg: &Config) -> bool {
    cfg.master_key.is_some()
        || cfg.master_key_file.is_some()
        || cfg.data_dir.join("master.key").exists()
}

/// The master key given, never a new one (`None` when none is given): for
/// the commands that must not make a key no codes were sealed with.
pub fn load_given(cfg: &Config) -> anyhow::Result<Option<MasterKey>> {
    key_given(cfg).then(|| load(cfg)).transpose()
}

/// Where the master key is kept: `None` when it is given in
/// `KAMI_MASTER_KEY`, which no command can rewrite.
pub fn key_file(cfg: &Config) -> Option<std::path::PathBuf> {
    if cfg.master_key.is_some() {
        return None;
    }
    Some(
        cfg.master_key_file
            .clone()
            .unwrap_or_else(|| cfg.data_dir.join("master.key")),
    )
}

/// Where `kami keys rotate` writes the new key before the database takes
/// it: beside the key file, or in the data directory for a key given in
/// `KAMI_MASTER_KEY`.
pub fn rotation_file(cfg: &Config) -> std::path::PathBuf {
    match key_file(cfg) {
        Some(file) => {
            let mut name = file.into_os_string();
            name.push(".new");
            name.into()
        }
        None => cfg.data_dir.join("master.key.new"),
    }
}

/// For the commands that read no codes (`migrate`, `api-key create`,
/// `admin create`, `backup`): a key that is given must still be readable
/// and this database's, so that a mistyped `KAMI_MASTER_KEY` or key file
/// shows when the operator sets up, not at the shop's first start. No key
/// given: nothing to check, and none is made.
pub async fn check_given(cfg: &Config, store: &dyn Store) -> anyhow::Result<()> {
    let Some(master) = load_given(cfg)? else {
        return Ok(());
    };
    match store.get_setting("master_key_check").await? {
        Some(stored) if keys_of(&master, &stored, store).await?.is_none() => {
            Err(not_this_databases(cfg))
        }
        _ => Ok(()),
    }
}

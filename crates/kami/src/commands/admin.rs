use anyhow::bail;
use kami_core::secrets::{random_token, token_hash};
use kami_store::Store;

use super::{init_logging, open_store};
use crate::config::Config;

pub async fn migrate(cfg: Config) -> anyhow::Result<()> {
    init_logging("warn", false);
    let store = open_store(&cfg).await?;
    println!("migrations applied ({})", store.backend());
    Ok(())
}

pub async fn create_api_key(cfg: Config, name: &str) -> anyhow::Result<()> {
    init_logging("warn", false);
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        bail!("--name must be 1-100 characters");
    }
    let store = open_store(&cfg).await?;
    let key = random_token("kami_");
    let id = store
        .create_api_key(name, &token_hash(&key), &key[..9])
        .await?;
    eprintln!("API key {id} ({name}) created. It is shown once; store it now:");
    println!("{key}");
    Ok(())
}

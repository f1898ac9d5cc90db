use kami_store::{Role, Store};

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
    let store = open_store(&cfg).await?;
    let (id, key) = kami_web::services::admins::create_api_key(store.as_ref(), name)
        .await
        .map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let name = name.trim();
    eprintln!("API key {id} ({name}) created. It is shown once; store it now:");
    println!("{key}");
    Ok(())
}

pub async fn create_admin(cfg: Config, email: &str, role: &str) -> anyhow::Result<()> {
    init_logging("warn", false);
    let role = Role::parse(role).ok_or_else(|| anyhow::anyhow!("--role must be owner or staff"))?;
    let store = open_store(&cfg).await?;
    let (id, password) =
        kami_web::services::admins::create_admin(store.as_ref(), email, role).await?;
    eprintln!(
        "Admin {id} ({}, {}) created. Log in at {}/admin/login with this password; it is shown once:",
        email.trim().to_lowercase(),
        role.as_str(),
        cfg.public_url()
    );
    println!("{password}");
    Ok(())
}

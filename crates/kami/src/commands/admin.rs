use kami_store::{Role, Store};
use kami_web::scopes::Scopes;

use super::{closing, init_logging, open_store};
use crate::config::Config;

pub async fn migrate(cfg: Config) -> anyhow::Result<()> {
    init_logging("warn", false);
    let store = open_store(&cfg).await?;
    closing(&store, async {
        crate::master_key::check_given(&cfg, store.as_ref()).await?;
        println!("migrations applied ({})", store.backend());
        Ok(())
    })
    .await
}

/// Without `--scope` the key is an `admin` key, as API.md's command makes.
pub async fn create_api_key(cfg: Config, name: &str, scopes: &[String]) -> anyhow::Result<()> {
    init_logging("warn", false);
    let scopes = if scopes.is_empty() {
        Scopes::parse(["admin"])
    } else {
        Scopes::parse(scopes.iter().map(String::as_str))
    }
    .map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
    let store = open_store(&cfg).await?;
    closing(&store, async {
        crate::master_key::check_given(&cfg, store.as_ref()).await?;
        let (id, key) = kami_web::services::admins::create_api_key(store.as_ref(), name, &scopes)
            .await
            .map_err(|e| anyhow::anyhow!("--name: {e}"))?;
        let name = name.trim();
        eprintln!(
            "API key {id} ({name}, scopes: {scopes}) created. It is shown once; store it now:"
        );
        println!("{key}");
        Ok(())
    })
    .await
}

pub async fn create_admin(cfg: Config, email: &str, role: &str) -> anyhow::Result<()> {
    init_logging("warn", false);
    let role = Role::parse(role).ok_or_else(|| anyhow::anyhow!("--role must be owner or staff"))?;
    let store = open_store(&cfg).await?;
    closing(&store, async {
        crate::master_key::check_given(&cfg, store.as_ref()).await?;
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
    })
    .await
}

/// The way back in for an operator who lost their password, or whose
/// account someone keeps locking: a new generated password, the lock gone,
/// every session of theirs ended.
pub async fn reset_admin_password(cfg: Config, email: &str) -> anyhow::Result<()> {
    init_logging("warn", false);
    let store = open_store(&cfg).await?;
    closing(&store, async {
        crate::master_key::check_given(&cfg, store.as_ref()).await?;
        let (id, password) =
            kami_web::services::admins::reset_admin_password(store.as_ref(), email).await?;
        eprintln!(
            "Admin {id} ({}) has a new password, is unlocked and signed out everywhere. \
             Log in at {}/admin/login with this password; it is shown once:",
            email.trim().to_lowercase(),
            cfg.public_url()
        );
        println!("{password}");
        Ok(())
    })
    .await
}

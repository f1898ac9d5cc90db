//! Operator accounts, shared by `kami admin create` and the panel's staff page.

use kami_core::password::{hash_password, PasswordError};
use kami_core::secrets::random_token;
use kami_core::Email;
use kami_store::{NewAdmin, Role, Store, StoreError};

use crate::scopes::Scopes;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    // Transparent: with "{0}" the email's error was also this one's
    // source, and the CLI's error chain said it twice.
    #[error(transparent)]
    Email(#[from] kami_core::email::EmailError),
    #[error("an admin with this email already exists")]
    EmailTaken,
    #[error("no admin has this email")]
    NoSuchAdmin,
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("password hashing was interrupted")]
    Join,
    #[error("the name must be 1-100 characters")]
    KeyName,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Argon2id on a blocking thread: it is slow on purpose, and must not stall
/// the async workers serving buyers.
pub async fn hash_off_thread(password: String) -> Result<String, AdminError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|_| AdminError::Join)?
        .map_err(AdminError::from)
}

pub async fn verify_off_thread(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || kami_core::password::verify_password(&password, &phc))
        .await
        .unwrap_or(false)
}

/// Costs what `verify_off_thread` costs, for an account that does not exist,
/// so a login's answer time does not tell which emails have accounts.
pub async fn verify_dummy_off_thread(password: String) {
    let _ = tokio::task::spawn_blocking(move || {
        kami_core::password::verify_password(&password, kami_core::password::dummy_hash())
    })
    .await;
}

/// A new random password, to be shown once, and its Argon2id hash.
async fn generated_password() -> Result<(String, String), AdminError> {
    let password = random_token("");
    let password_hash = hash_off_thread(password.clone()).await?;
    Ok((password, password_hash))
}

/// Creates an operator with a generated password, returned once for the
/// caller to show; only its hash is stored.
pub async fn create_admin(
    store: &dyn Store,
    email: &str,
    role: Role,
) -> Result<(i64, String), AdminError> {
    let email = Email::parse(email)?;
    let (password, password_hash) = generated_password().await?;
    let id = store
        .create_admin(&NewAdmin {
            email: email.as_str().to_string(),
            password_hash,
            role,
        })
        .await?
        .ok_or(AdminError::EmailTaken)?;
    Ok((id, password))
}

/// A new generated password for the admin of `email`, who is unlocked and
/// signed out everywhere; the admin's id and the password, shown once.
pub async fn reset_admin_password(
    store: &dyn Store,
    email: &str,
) -> Result<(i64, String), AdminError> {
    let email = Email::parse(email)?;
    let (password, password_hash) = generated_password().await?;
    let id = store
        .reset_admin_password(email.as_str(), &password_hash)
        .await?
        .ok_or(AdminError::NoSuchAdmin)?;
    Ok((id, password))
}

/// Creates an admin API key named `name` (trimmed, 1-100 characters) with
/// `scopes`; the key is returned once, only its SHA-256 kept.
pub async fn create_api_key(
    store: &dyn Store,
    name: &str,
    scopes: &Scopes,
) -> Result<(i64, String), AdminError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AdminError::KeyName);
    }
    let key = random_token("kami_");
    let id = store
        .create_api_key(
            name,
            &kami_core::secrets::token_hash(&key),
            &key[..9],
            &scopes.to_string(),
        )
        .await?;
    Ok((id, key))
}

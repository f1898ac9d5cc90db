//! Builds the configured channels from their `[channels.<name>]` sections
//! (API.md, "Channel names and configuration").

use std::path::PathBuf;
use std::sync::Arc;

use crate::{alipay, epay, epusdt, stripe, wechatpay, Channel, PayError};

/// The channel names API.md fixes, sandbox aside (it has its own setting).
pub const CHANNEL_NAMES: [&str; 5] = ["epay", "alipay", "wechatpay", "stripe", "epusdt"];

/// What every channel needs besides its own section.
#[derive(Debug, Clone)]
pub struct ChannelContext {
    /// `KAMI_PUBLIC_URL` without a trailing slash; the notify URL is exactly
    /// `{public_url}/pay/{channel}/notify`.
    pub public_url: String,
    /// Relative key-file paths resolve against this (the directory of kami.toml).
    pub base_dir: PathBuf,
}

impl ChannelContext {
    pub fn notify_url(&self, channel: &str) -> String {
        format!("{}/pay/{channel}/notify", self.public_url)
    }

    pub fn return_url(&self, channel: &str) -> String {
        format!("{}/pay/{channel}/return", self.public_url)
    }

    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }
}

/// `Ok(None)` when the section says `enabled = false`.
pub fn build_channel(
    name: &str,
    section: &toml::Table,
    ctx: &ChannelContext,
) -> Result<Option<Arc<dyn Channel>>, PayError> {
    if section.get("enabled").and_then(toml::Value::as_bool) == Some(false) {
        return Ok(None);
    }
    let mut section = section.clone();
    section.remove("enabled");
    // Each gateway module parses its own section (`parse_section`, with
    // deny_unknown_fields) and refuses empty credentials, so a channel
    // without a key fails closed. One arm per gateway.
    let channel: Arc<dyn Channel> = match name {
        epay::NAME => Arc::new(epay::Epay::new(parse_section(name, section)?, ctx)?),
        epusdt::NAME => Arc::new(epusdt::Epusdt::new(parse_section(name, section)?, ctx)?),
        stripe::NAME => Arc::new(stripe::Stripe::new(parse_section(name, section)?, ctx)?),
        "alipay" => Arc::new(alipay::Alipay::new(parse_section(name, section)?, ctx)?),
        "wechatpay" => Arc::new(wechatpay::Wechatpay::new(
            parse_section(name, section)?,
            ctx,
        )?),
        _ if CHANNEL_NAMES.contains(&name) => {
            return Err(PayError::Config(format!(
                "payment channel {name} is not available in this version"
            )))
        }
        _ => {
            return Err(PayError::Config(format!(
                "unknown payment channel {name}; known: {}",
                CHANNEL_NAMES.join(", ")
            )))
        }
    };
    Ok(Some(channel))
}

/// Parses a section into a channel's typed configuration.
pub fn parse_section<T: serde::de::DeserializeOwned>(
    name: &str,
    section: toml::Table,
) -> Result<T, PayError> {
    section
        .try_into()
        .map_err(|e| PayError::Config(format!("[channels.{name}]: {e}")))
}

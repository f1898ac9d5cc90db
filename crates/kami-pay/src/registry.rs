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

/// Whether a `[channels.X]` section turns its channel on: unless it says
/// `enabled = false`.
pub fn section_enabled(section: &toml::Table) -> bool {
    section.get("enabled").and_then(toml::Value::as_bool) != Some(false)
}

/// `Ok(None)` when the section says `enabled = false`.
pub fn build_channel(
    name: &str,
    section: &toml::Table,
    ctx: &ChannelContext,
) -> Result<Option<Arc<dyn Channel>>, PayError> {
    if !section_enabled(section) {
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

/// One credential field as the admin panel edits it: the keys of API.md's
/// `[channels.<name>]` section, with PEM keys pasted instead of `*_file`
/// paths.
#[derive(Debug, Clone, Copy)]
pub struct PanelField {
    pub name: &'static str,
    /// Never shown again once saved ("set — leave blank to keep").
    pub secret: bool,
    /// A PEM key: a textarea.
    pub multiline: bool,
    pub optional: bool,
}

const fn field(name: &'static str) -> PanelField {
    PanelField {
        name,
        secret: false,
        multiline: false,
        optional: false,
    }
}

const fn secret(name: &'static str) -> PanelField {
    PanelField {
        secret: true,
        ..field(name)
    }
}

const fn pem(name: &'static str, secret: bool) -> PanelField {
    PanelField {
        secret,
        multiline: true,
        ..field(name)
    }
}

/// Every channel the panel can configure, sandbox first, in API.md's order.
pub const PANEL_CHANNELS: [&str; 6] =
    ["sandbox", "epay", "alipay", "wechatpay", "stripe", "epusdt"];

/// The panel's form for a channel; empty for an unknown name.
pub fn panel_fields(channel: &str) -> &'static [PanelField] {
    match channel {
        "sandbox" => const { &[secret("secret")] },
        epay::NAME => const { &[field("gateway"), field("pid"), secret("key")] },
        "alipay" => {
            const {
                &[
                    field("gateway"),
                    field("app_id"),
                    PanelField {
                        optional: true,
                        ..field("seller_id")
                    },
                    pem("app_private_key", true),
                    pem("alipay_public_key", false),
                ]
            }
        }
        "wechatpay" => {
            const {
                &[
                    field("gateway"),
                    field("mchid"),
                    field("appid"),
                    secret("apiv3_key"),
                    field("merchant_serial"),
                    pem("merchant_private_key", true),
                    field("platform_serial"),
                    pem("platform_public_key", false),
                ]
            }
        }
        stripe::NAME => {
            const {
                &[
                    field("gateway"),
                    secret("secret_key"),
                    secret("webhook_secret"),
                ]
            }
        }
        epusdt::NAME => const { &[field("gateway"), secret("token")] },
        _ => &[],
    }
}

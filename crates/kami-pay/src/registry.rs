//! Builds the configured channels from their `[channels.<name>]` sections
//! (API.md, "Channel names and configuration").

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    alipay, epay, epusdt, stripe, wechatpay, Channel, Notice, Notification, PayError,
    PaymentRequest, PaymentStart, Rejection, Reply,
};

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

/// The fields of each channel's section that hold a key (or a key file):
/// one given as an empty string makes the channel keyless.
const KEY_FIELDS: [(&str, &[&str]); 5] = [
    ("epay", &["key"]),
    ("epusdt", &["token"]),
    ("stripe", &["secret_key", "webhook_secret"]),
    (
        "alipay",
        &[
            "app_private_key_file",
            "app_private_key",
            "alipay_public_key_file",
            "alipay_public_key",
        ],
    ),
    (
        "wechatpay",
        &[
            "apiv3_key",
            "merchant_private_key_file",
            "merchant_private_key",
            "platform_public_key_file",
            "platform_public_key",
        ],
    ),
];

/// The first key field of a `[channels.X]` section that is there but empty
/// (blank), if any.
pub fn empty_key_field(name: &str, section: &toml::Table) -> Option<&'static str> {
    let (_, fields) = KEY_FIELDS.iter().find(|(n, _)| *n == name)?;
    fields.iter().copied().find(|field| {
        section
            .get(*field)
            .and_then(toml::Value::as_str)
            .is_some_and(|v| v.trim().is_empty())
    })
}

/// A channel configured with an empty key (DESIGN.md: "a channel with an
/// empty key rejects everything"). It is never offered, starts no payment,
/// and answers every notification with its gateway's failure reply: without
/// a key nothing can be verified, so nothing is trusted.
pub struct Keyless {
    name: &'static str,
    field: &'static str,
}

impl Keyless {
    /// `None` for a name that is not one of API.md's real channels.
    pub fn new(name: &str, field: &'static str) -> Option<Self> {
        let name = CHANNEL_NAMES.iter().copied().find(|n| *n == name)?;
        Some(Self { name, field })
    }

    fn reason(&self) -> String {
        format!(
            "[channels.{}] {} is empty: every notification is refused",
            self.name, self.field
        )
    }
}

#[async_trait]
impl Channel for Keyless {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn create_payment(&self, _req: &PaymentRequest) -> Result<PaymentStart, PayError> {
        Err(PayError::Config(self.reason()))
    }

    fn verify_notification(&self, _n: &Notification, _now_secs: i64) -> Result<Notice, Rejection> {
        Err(Rejection::new(None, self.reason()))
    }

    fn success_reply(&self) -> Reply {
        match self.name {
            "epay" => epay::success_reply(),
            "epusdt" => epusdt::success_reply(),
            "stripe" => stripe::success_reply(),
            "alipay" => alipay::success_reply(),
            _ => wechatpay::success_reply(),
        }
    }

    fn failure_reply(&self, reason: &str) -> Reply {
        match self.name {
            "epay" => epay::failure_reply(reason),
            "epusdt" => epusdt::failure_reply(reason),
            "stripe" => stripe::failure_reply(reason),
            "alipay" => alipay::failure_reply(reason),
            _ => wechatpay::failure_reply(reason),
        }
    }
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

#[cfg(test)]
mod keyless_tests {
    use super::*;

    fn section(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn a_blank_key_field_makes_the_channel_keyless() {
        assert_eq!(
            empty_key_field("epay", &section("pid = \"1\"\nkey = \" \"")),
            Some("key")
        );
        assert_eq!(
            empty_key_field(
                "stripe",
                &section("secret_key = \"sk\"\nwebhook_secret = \"\"")
            ),
            Some("webhook_secret")
        );
        assert_eq!(
            empty_key_field("alipay", &section("app_private_key_file = \"\"")),
            Some("app_private_key_file")
        );
        // A key that is there, or one left out (the parser's error), is not "empty".
        assert_eq!(
            empty_key_field("epay", &section("pid = \"1\"\nkey = \"k\"")),
            None
        );
        assert_eq!(empty_key_field("epusdt", &section("gateway = \"x\"")), None);
        assert_eq!(empty_key_field("nope", &section("key = \"\"")), None);
    }

    #[test]
    fn a_keyless_channel_refuses_everything_in_its_gateways_words() {
        let epay = Keyless::new("epay", "key").unwrap();
        let n = Notification {
            query: "out_trade_no=K1&trade_status=TRADE_SUCCESS&sign=x".into(),
            ..Notification::default()
        };
        let rejection = epay.verify_notification(&n, 0).unwrap_err();
        assert!(rejection.reason.contains("key is empty"), "{rejection:?}");
        assert_eq!(epay.failure_reply("x").body, "fail");
        let stripe = Keyless::new("stripe", "webhook_secret").unwrap();
        assert_eq!(stripe.failure_reply("x").status, 400);
        assert!(Keyless::new("sandbox", "key").is_none());
    }
}

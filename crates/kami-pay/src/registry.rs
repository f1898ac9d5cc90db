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
/// `enabled = false`. Anything but a boolean is refused: `enabled = "false"`
/// read as "not false" would turn on a channel its operator meant off.
pub fn section_enabled(name: &str, section: &toml::Table) -> Result<bool, PayError> {
    match section.get("enabled") {
        None => Ok(true),
        Some(v) => v.as_bool().ok_or_else(|| {
            PayError::Config(format!(
                "[channels.{name}] enabled must be true or false, got {v}"
            ))
        }),
    }
}

/// What a channel that cannot verify anything still needs of its gateway:
/// the fields of its section that hold a key (or a key file), and its
/// replies.
struct GatewayWords {
    name: &'static str,
    key_fields: &'static [&'static str],
    success: fn() -> Reply,
    failure: fn(&str) -> Reply,
}

const GATEWAY_WORDS: [GatewayWords; 5] = [
    GatewayWords {
        name: "epay",
        key_fields: &["key"],
        success: epay::success_reply,
        failure: epay::failure_reply,
    },
    GatewayWords {
        name: "epusdt",
        key_fields: &["token"],
        success: epusdt::success_reply,
        failure: epusdt::failure_reply,
    },
    GatewayWords {
        name: "stripe",
        key_fields: &["secret_key", "webhook_secret"],
        success: stripe::success_reply,
        failure: stripe::failure_reply,
    },
    GatewayWords {
        name: "alipay",
        key_fields: &[
            "app_private_key_file",
            "app_private_key",
            "alipay_public_key_file",
            "alipay_public_key",
        ],
        success: alipay::success_reply,
        failure: alipay::failure_reply,
    },
    GatewayWords {
        name: "wechatpay",
        key_fields: &[
            "apiv3_key",
            "merchant_private_key_file",
            "merchant_private_key",
            "platform_public_key_file",
            "platform_public_key",
        ],
        success: wechatpay::success_reply,
        failure: wechatpay::failure_reply,
    },
];

/// The channel a `[channels.X]` section makes when one of its key fields is
/// there but empty (blank): `None` when every key given has a value, or
/// `name` is not a real channel.
pub fn keyless(name: &str, section: &toml::Table) -> Option<Keyless> {
    let words = GATEWAY_WORDS.iter().find(|w| w.name == name)?;
    let field = words.key_fields.iter().copied().find(|field| {
        section
            .get(*field)
            .and_then(toml::Value::as_str)
            .is_some_and(|v| v.trim().is_empty())
    })?;
    Some(Keyless { words, field })
}

/// A channel configured with an empty key (DESIGN.md: "a channel with an
/// empty key rejects everything"). It is never offered, starts no payment,
/// and answers every notification with its gateway's failure reply: without
/// a key nothing can be verified, so nothing is trusted.
pub struct Keyless {
    words: &'static GatewayWords,
    field: &'static str,
}

impl Keyless {
    /// The empty key field.
    pub fn field(&self) -> &'static str {
        self.field
    }

    fn reason(&self) -> String {
        format!(
            "[channels.{}] {} is empty: every notification is refused",
            self.words.name, self.field
        )
    }
}

#[async_trait]
impl Channel for Keyless {
    fn name(&self) -> &'static str {
        self.words.name
    }

    async fn create_payment(&self, _req: &PaymentRequest) -> Result<PaymentStart, PayError> {
        Err(PayError::Config(self.reason()))
    }

    fn verify_notification(&self, _n: &Notification, _now_secs: i64) -> Result<Notice, Rejection> {
        Err(Rejection::new(None, self.reason()))
    }

    fn success_reply(&self) -> Reply {
        (self.words.success)()
    }

    fn failure_reply(&self, reason: &str) -> Reply {
        (self.words.failure)(reason)
    }
}

/// `Ok(None)` when the section says `enabled = false`.
pub fn build_channel(
    name: &str,
    section: &toml::Table,
    ctx: &ChannelContext,
) -> Result<Option<Arc<dyn Channel>>, PayError> {
    if !section_enabled(name, section)? {
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
        let field = |name: &str, text: &str| keyless(name, &section(text)).map(|k| k.field());
        assert_eq!(field("epay", "pid = \"1\"\nkey = \" \""), Some("key"));
        assert_eq!(
            field("stripe", "secret_key = \"sk\"\nwebhook_secret = \"\""),
            Some("webhook_secret")
        );
        assert_eq!(
            field("alipay", "app_private_key_file = \"\""),
            Some("app_private_key_file")
        );
        // A key that is there, or one left out (the parser's error), is not "empty".
        assert_eq!(field("epay", "pid = \"1\"\nkey = \"k\""), None);
        assert_eq!(field("epusdt", "gateway = \"x\""), None);
        assert_eq!(field("nope", "key = \"\""), None);
        assert_eq!(field("sandbox", "key = \"\""), None);
    }

    #[test]
    fn enabled_must_be_a_boolean() {
        assert!(section_enabled("epay", &section("")).unwrap());
        assert!(section_enabled("epay", &section("enabled = true")).unwrap());
        assert!(!section_enabled("epay", &section("enabled = false")).unwrap());
        for bad in ["enabled = \"false\"", "enabled = 0", "enabled = \"no\""] {
            let e = section_enabled("epay", &section(bad)).unwrap_err();
            assert!(e.to_string().contains("[channels.epay] enabled"), "{e}");
            let ctx = ChannelContext {
                public_url: "http://x.test".into(),
                base_dir: Default::default(),
            };
            assert!(build_channel("epay", &section(bad), &ctx).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_keyless_channel_refuses_everything_in_its_gateways_words() {
        let epay = keyless("epay", &section("key = \"\"")).unwrap();
        let n = Notification {
            query: "out_trade_no=K1&trade_status=TRADE_SUCCESS&sign=x".into(),
            ..Notification::default()
        };
        let rejection = epay.verify_notification(&n, 0).unwrap_err();
        assert!(rejection.reason.contains("key is empty"), "{rejection:?}");
        assert_eq!(epay.failure_reply("x").body, "fail");
        let stripe = keyless("stripe", &section("webhook_secret = \"\"")).unwrap();
        assert_eq!(stripe.name(), "stripe");
        assert_eq!(stripe.failure_reply("x").status, 400);
    }
}

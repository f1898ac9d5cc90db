//! The live set of payment channels (issue 4). Channels come from two
//! places: the configuration (`[channels.*]` in kami.toml, the sandbox
//! secret), applied at start and read-only in the panel, and the admin
//! panel, whose credentials are stored sealed in `channel_configs`.
//!
//! The set is swapped whole (`ArcSwap`), so a request reads one consistent
//! snapshot for the price of an atomic load, and a save in the panel takes
//! effect for the next request without a restart.
//!
//! A disabled channel stays in the set: new orders cannot use it and it is
//! not offered, but notifications (and reconciliation) for orders already
//! created on it are still verified and accepted, so money a buyer already
//! paid is never turned away.

use std::collections::BTreeMap;
use std::sync::Arc;

use kami_core::now_millis;
use kami_core::secrets::{Keys, Sealed};
use kami_pay::registry::{panel_fields, PANEL_CHANNELS};
use kami_pay::sandbox::{self, Sandbox};
use kami_pay::{Channel, ChannelContext, PayError};
use kami_store::ChannelConfigRow;

use crate::state::AppState;

/// Where a channel's configuration lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// kami.toml or the environment: read-only in the panel.
    Config,
    /// The admin panel (`channel_configs`).
    Panel,
}

pub struct LiveChannel {
    pub channel: Arc<dyn Channel>,
    pub enabled: bool,
    pub source: Source,
}

/// One snapshot of the channels.
#[derive(Default)]
pub struct ChannelSet {
    pub entries: Vec<LiveChannel>,
    /// Sections in kami.toml (even `enabled = false` ones) and the sandbox
    /// when its secret comes from the configuration: the panel leaves them be.
    pub config_managed: Vec<String>,
    pub sandbox: Option<Arc<Sandbox>>,
}

impl ChannelSet {
    pub fn get(&self, name: &str) -> Option<&LiveChannel> {
        self.entries.iter().find(|e| e.channel.name() == name)
    }

    pub fn is_config_managed(&self, name: &str) -> bool {
        self.config_managed.iter().any(|n| n == name)
    }

    /// A copy with `name`'s entry replaced.
    fn with(&self, name: &str, entry: Option<LiveChannel>, sandbox: Option<Arc<Sandbox>>) -> Self {
        let mut entries: Vec<LiveChannel> = self
            .entries
            .iter()
            .filter(|e| e.channel.name() != name)
            .map(|e| LiveChannel {
                channel: e.channel.clone(),
                enabled: e.enabled,
                source: e.source,
            })
            .collect();
        entries.extend(entry);
        Self {
            entries,
            config_managed: self.config_managed.clone(),
            sandbox: if name == sandbox::NAME {
                sandbox
            } else {
                self.sandbox.clone()
            },
        }
    }
}

/// The values of a channel's panel form, by field name. Secret values are
/// in here too, so it never derives `Debug`.
pub type Fields = BTreeMap<String, String>;

/// The associated data that binds a sealed credential set to its channel:
/// a row copied onto another channel's does not open.
pub fn seal_context(name: &str) -> String {
    kami_core::secrets::context::channel(name)
}

/// Refusals are shown on the form (in the operator's language: the panel
/// maps each variant); the English here is for the audit log and logs.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("secret is empty")]
    EmptySecret,
    /// The named channel's configuration builds no channel.
    #[error("{0} is disabled")]
    Disabled(String),
    /// The gateway library's own words on what is wrong (a missing key,
    /// a bad PEM): what the operator should fix.
    #[error("{0}")]
    Config(String),
    /// The named channel is set in kami.toml, which wins.
    #[error("{0} is managed by kami.toml; change it there")]
    Managed(String),
    #[error("the stored credentials of {0} do not open with this master key")]
    Sealed(String),
    #[error(transparent)]
    Store(#[from] kami_store::StoreError),
}

/// A built channel, and the same channel as a `Sandbox` when it is one (the
/// pay button signs with it).
type Built = (Arc<dyn Channel>, Option<Arc<Sandbox>>);

/// Builds a channel from panel fields, with kami-pay's registry: the same
/// parsing and the same refusals (an empty key, a bad PEM) as kami.toml.
pub fn build(name: &str, fields: &Fields, ctx: &ChannelContext) -> Result<Built, ChannelError> {
    if name == sandbox::NAME {
        let secret = fields.get("secret").map(|s| s.trim()).unwrap_or_default();
        if secret.is_empty() {
            return Err(ChannelError::EmptySecret);
        }
        let sb = Arc::new(Sandbox::new(
            secret,
            format!("{}/pay/sandbox", ctx.public_url),
        ));
        return Ok((sb.clone(), Some(sb)));
    }
    let mut section = toml::Table::new();
    for f in panel_fields(name) {
        let value = fields.get(f.name).map(|v| v.trim()).unwrap_or_default();
        if value.is_empty() && f.optional {
            continue;
        }
        section.insert(f.name.into(), toml::Value::String(value.into()));
    }
    match kami_pay::build_channel(name, &section, ctx) {
        Ok(Some(ch)) => Ok((ch, None)),
        Ok(None) => Err(ChannelError::Disabled(name.into())),
        Err(PayError::Config(m)) => Err(ChannelError::Config(m)),
        Err(e) => Err(ChannelError::Config(e.to_string())),
    }
}

pub fn seal(keys: &Keys, name: &str, fields: &Fields) -> Sealed {
    let json = serde_json::to_vec(fields).expect("a map of strings serialises");
    keys.seal(&seal_context(name), &json)
}

pub fn open(keys: &Keys, row: &ChannelConfigRow) -> Result<Fields, ChannelError> {
    let plain = keys
        .open(
            &seal_context(&row.name),
            &Sealed {
                ciphertext: row.ciphertext.clone(),
                nonce: row.nonce.clone(),
                key_id: row.key_id,
            },
        )
        .map_err(|_| ChannelError::Sealed(row.name.clone()))?;
    serde_json::from_slice(&plain).map_err(|_| ChannelError::Sealed(row.name.clone()))
}

pub fn context(state: &AppState) -> ChannelContext {
    ChannelContext {
        public_url: state.settings.public_url.clone(),
        base_dir: Default::default(),
    }
}

/// At start: adds the channels saved in the panel to the configured ones.
/// A stored channel the configuration also names is skipped (kami.toml
/// wins); one that no longer builds is logged and left out, never guessed at.
pub async fn load_stored(state: &AppState) -> Result<(), kami_store::StoreError> {
    let ctx = context(state);
    for row in state.store.channel_configs().await? {
        if !PANEL_CHANNELS.contains(&row.name.as_str()) {
            continue;
        }
        if state.channels.load().is_config_managed(&row.name) {
            tracing::warn!(channel = %row.name, "channel is configured in kami.toml, which wins over the panel's stored credentials");
            continue;
        }
        let built = open(&state.keys, &row).and_then(|f| build(&row.name, &f, &ctx));
        match built {
            Ok((channel, sb)) => {
                swap_in(state, &row.name, channel, sb, row.enabled);
                tracing::info!(channel = %row.name, enabled = row.enabled, "payment channel loaded from the admin panel's settings");
            }
            Err(e) => {
                tracing::error!(channel = %row.name, error = %e, "stored payment channel could not be built; it stays off")
            }
        }
    }
    Ok(())
}

fn swap_in(
    state: &AppState,
    name: &str,
    channel: Arc<dyn Channel>,
    sb: Option<Arc<Sandbox>>,
    enabled: bool,
) {
    state.channels.rcu(|set| {
        let entry = LiveChannel {
            channel: channel.clone(),
            enabled,
            source: Source::Panel,
        };
        set.with(name, Some(entry), sb.clone())
    });
}

/// The stored fields of a panel channel (secrets included: never render them).
pub async fn stored_fields(
    state: &AppState,
    name: &str,
) -> Result<Option<(Fields, bool)>, ChannelError> {
    let rows = state.store.channel_configs().await?;
    match rows.iter().find(|r| r.name == name) {
        Some(row) => Ok(Some((open(&state.keys, row)?, row.enabled))),
        None => Ok(None),
    }
}

/// Saves a channel from the panel: blank secret fields keep their stored
/// values; the channel is built first, so nothing changes when it does not
/// build. Returns the names of the fields whose value changed.
pub async fn save(
    state: &AppState,
    name: &str,
    submitted: &Fields,
    enabled: bool,
) -> Result<Vec<&'static str>, ChannelError> {
    if state.channels.load().is_config_managed(name) {
        return Err(ChannelError::Managed(name.into()));
    }
    let previous = stored_fields(state, name).await?.map(|(f, _)| f);
    let mut fields = Fields::new();
    let mut changed = Vec::new();
    for f in panel_fields(name) {
        let given = submitted.get(f.name).map(|v| v.trim()).unwrap_or_default();
        let before = previous.as_ref().and_then(|p| p.get(f.name)).cloned();
        let value = if given.is_empty() && f.secret {
            before.clone().unwrap_or_default()
        } else {
            given.to_string()
        };
        if before.as_deref().unwrap_or_default() != value {
            changed.push(f.name);
        }
        fields.insert(f.name.to_string(), value);
    }
    let (channel, sb) = build(name, &fields, &context(state))?;
    let sealed = seal(&state.keys, name, &fields);
    state
        .store
        .put_channel_config(&ChannelConfigRow {
            name: name.to_string(),
            enabled,
            ciphertext: sealed.ciphertext,
            nonce: sealed.nonce,
            key_id: sealed.key_id,
            updated_at: now_millis(),
        })
        .await?;
    swap_in(state, name, channel, sb, enabled);
    Ok(changed)
}

/// Turns a panel channel on or off for new orders; false when it has no
/// stored credentials yet.
pub async fn set_enabled(
    state: &AppState,
    name: &str,
    enabled: bool,
) -> Result<bool, ChannelError> {
    if state.channels.load().is_config_managed(name) {
        return Err(ChannelError::Managed(name.into()));
    }
    let Some((fields, _)) = stored_fields(state, name).await? else {
        return Ok(false);
    };
    save(state, name, &fields, enabled).await.map(|_| true)
}

/// What the "Test" button found. The English is for the audit log; the
/// panel shows each in the operator's language.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tested {
    #[error("reachable, credentials accepted")]
    Accepted,
    #[error("built in: nothing to reach; its secret signs the pay button's notifications")]
    BuiltIn,
    #[error("{0} is not configured")]
    NotConfigured(String),
    #[error("{0} has no call that can check credentials without a payment; they are checked by the first real one")]
    CannotCheck(String),
    /// The gateway's or the network's words, kept as they are.
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl Tested {
    pub fn ok(&self) -> bool {
        matches!(self, Self::Accepted | Self::BuiltIn)
    }
}

/// The "Test" button: builds the channel from its current configuration
/// and makes one signed round trip to its gateway.
pub async fn test(state: &AppState, name: &str) -> Tested {
    let Some(channel) = state.channels.load().get(name).map(|e| e.channel.clone()) else {
        return Tested::NotConfigured(name.into());
    };
    match channel.check_credentials().await {
        Ok(true) => Tested::Accepted,
        Ok(false) if name == sandbox::NAME => Tested::BuiltIn,
        Ok(false) => Tested::CannotCheck(name.into()),
        Err(PayError::Unreachable(m)) => Tested::Unreachable(m),
        Err(PayError::Gateway(m)) => Tested::Refused(m),
        Err(e) => Tested::Failed(e.to_string()),
    }
}

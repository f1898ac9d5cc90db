//! Owner-only payment channels (issue 4): credentials typed into the panel
//! are stored sealed and applied live (services/channels.rs). Secret fields
//! are never sent back to the page; a blank secret keeps the stored one.

use std::collections::BTreeMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use kami_pay::registry::{panel_fields, PANEL_CHANNELS};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{CsrfForm, Operator, Owner};
use super::msg::Msg;
use super::page::{PanelError, PanelResult};
use super::products::SavedQuery;
use crate::services::channels::{self, ChannelError, Fields, Source, Tested};
use crate::state::Shared;

/// A message for one channel's card, after a save, test or refusal; none
/// reads "Saved." on the page.
struct Note {
    channel: String,
    ok: bool,
    message: Option<Msg>,
}

async fn page(
    state: &Shared,
    op: &Operator,
    status: StatusCode,
    note: Option<Note>,
) -> PanelResult {
    let stored: BTreeMap<String, (Fields, bool)> = {
        let mut m = BTreeMap::new();
        for row in state.store.channel_configs().await? {
            match channels::open(&state.keys, &row) {
                Ok(f) => {
                    m.insert(row.name.clone(), (f, row.enabled));
                }
                Err(e) => {
                    tracing::error!(channel = %row.name, error = %e, "stored channel does not open")
                }
            }
        }
        m
    };
    let set = state.channels.load();
    let cards: Vec<Value> = PANEL_CHANNELS
        .iter()
        .map(|&name| {
            let live = set.get(name);
            let saved = stored.get(name);
            let fields: Vec<Value> = panel_fields(name)
                .iter()
                .map(|f| {
                    let value = saved
                        .and_then(|(s, _)| s.get(f.name))
                        .cloned()
                        .unwrap_or_default();
                    json!({"name": f.name, "secret": f.secret, "multiline": f.multiline,
                           "optional": f.optional, "is_set": !value.is_empty(),
                           // Secrets never go back to the browser.
                           "value": if f.secret { String::new() } else { value }})
                })
                .collect();
            let note = note.as_ref().filter(|n| n.channel == name);
            json!({"name": name,
                   "managed": set.is_config_managed(name),
                   "configured": live.is_some(),
                   "from_panel": live.is_some_and(|l| l.source == Source::Panel),
                   "enabled": live.is_some_and(|l| l.enabled),
                   "stored_enabled": saved.is_none_or(|(_, e)| *e),
                   "fields": fields,
                   "note": note.map(|n| json!({"ok": n.ok,
                                               "message": n.message.as_ref().map(|m| m.text(op.lang))}))})
        })
        .collect();
    Ok(op.render_status(
        status,
        "admin/channels.html",
        json!({"nav": "channels", "channels": cards}),
    ))
}

fn known(name: &str) -> PanelResult<&'static str> {
    PANEL_CHANNELS
        .iter()
        .copied()
        .find(|c| *c == name)
        .ok_or(PanelError::NotFound)
}

pub async fn list(
    State(state): State<Shared>,
    Owner(op): Owner,
    Query(q): Query<SavedQuery>,
) -> PanelResult {
    let note = q.ok.map(|name| Note {
        channel: name,
        ok: true,
        message: None,
    });
    page(&state, &op, StatusCode::OK, note).await
}

/// The form: `csrf`, `enabled`, and the channel's fields.
pub async fn save(
    State(state): State<Shared>,
    Owner(op): Owner,
    Path(name): Path<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> PanelResult {
    op.check_csrf(form.get("csrf").map(String::as_str).unwrap_or_default())?;
    let name = known(&name)?;
    let enabled = form.contains_key("enabled");
    match channels::save(&state, name, &form, enabled).await {
        Ok(changed) => {
            // Field names only, never values.
            let detail = format!("enabled={enabled} changed=[{}]", changed.join(", "));
            op.audit(&state, "channel_saved", &format!("channel:{name}"), &detail)
                .await?;
            Ok(Redirect::to(&format!("/admin/channels?ok={name}#channel-{name}")).into_response())
        }
        Err(e) => refused(&state, &op, name, "channel_save_refused", e).await,
    }
}

async fn refused(
    state: &Shared,
    op: &Operator,
    name: &str,
    action: &str,
    e: ChannelError,
) -> PanelResult {
    let shown = match &e {
        ChannelError::Store(_) => {
            tracing::error!(error = %e, "could not read or write a payment channel");
            return Err(PanelError::Internal);
        }
        ChannelError::EmptySecret => Msg::new("err_channel_secret_empty"),
        ChannelError::Disabled(c) => Msg::new("err_channel_disabled").label("channel", label(c)),
        ChannelError::Config(m) => Msg::new("err_channel_config").with("detail", m),
        ChannelError::Managed(c) => Msg::new("err_channel_managed").label("channel", label(c)),
        ChannelError::Sealed(c) => Msg::new("err_channel_sealed").label("channel", label(c)),
    };
    // The log keeps the English, as every audit detail.
    op.audit(state, action, &format!("channel:{name}"), &e.to_string())
        .await?;
    page(
        state,
        op,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some(Note {
            channel: name.into(),
            ok: false,
            message: Some(shown),
        }),
    )
    .await
}

/// The table key of a channel's name ("易支付").
fn label(channel: &str) -> String {
    format!("channel_{channel}")
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EnabledForm {
    csrf: String,
    enabled: String,
}

pub async fn set_enabled(
    State(state): State<Shared>,
    Owner(op): Owner,
    Path(name): Path<String>,
    Form(form): Form<EnabledForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    let name = known(&name)?;
    let enabled = form.enabled == "1";
    match channels::set_enabled(&state, name, enabled).await {
        Ok(true) => {
            let action = if enabled {
                "channel_enabled"
            } else {
                "channel_disabled"
            };
            op.audit(&state, action, &format!("channel:{name}"), "")
                .await?;
            Ok(Redirect::to(&format!("/admin/channels?ok={name}#channel-{name}")).into_response())
        }
        Ok(false) => Err(PanelError::Invalid(
            Msg::new("err_channel_no_credentials").label("channel", label(name)),
        )),
        Err(e) => refused(&state, &op, name, "channel_toggle_refused", e).await,
    }
}

/// A real round trip to the gateway with the live credentials.
pub async fn test(
    State(state): State<Shared>,
    Owner(op): Owner,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PanelResult<Response> {
    op.check_csrf(&form.csrf)?;
    let name = known(&name)?;
    let tested = channels::test(&state, name).await;
    let ok = tested.ok();
    op.audit(
        &state,
        "channel_tested",
        &format!("channel:{name}"),
        &format!("{}: {tested}", if ok { "ok" } else { "failed" }),
    )
    .await?;
    let message = match tested {
        Tested::Accepted => Msg::new("channel_test_accepted"),
        Tested::BuiltIn => Msg::new("channel_test_built_in"),
        Tested::NotConfigured(c) => {
            Msg::new("channel_test_not_configured").label("channel", label(&c))
        }
        Tested::CannotCheck(c) => Msg::new("channel_test_cannot_check").label("channel", label(&c)),
        Tested::Unreachable(m) => Msg::new("channel_test_unreachable").with("detail", m),
        Tested::Refused(m) => Msg::new("channel_test_refused").with("detail", m),
        Tested::Failed(m) => Msg::new("channel_test_failed").with("detail", m),
    };
    page(
        &state,
        &op,
        StatusCode::OK,
        Some(Note {
            channel: name.into(),
            ok,
            message: Some(message),
        }),
    )
    .await
}

//! Starting a payment on a real gateway, and reconciliation: asking the
//! gateway about unpaid orders it has seen, so a notification that never
//! arrived does not leave a paid order undelivered.

use kami_core::{now_millis, Millis};
use kami_pay::{Channel, PaymentRequest};
use kami_store::{NewPaymentAttempt, Order, PaymentAttempt};

use crate::error::ApiError;
use crate::services::notify::{apply_notice, Verdict};
use crate::state::AppState;

/// Attempts checked per reconciliation run.
const RECONCILE_BATCH: i64 = 50;
/// Longest wait between two checks of one attempt.
const MAX_BACKOFF_MS: i64 = 30 * 60_000;
/// After this long a gateway will not report a payment any more.
const GIVE_UP_AFTER_MS: i64 = 48 * 3_600_000;

/// What Kami asks the gateway for: exactly the order's amount.
fn payment_request(
    state: &AppState,
    order: &Order,
    subject: &str,
    reference: Option<String>,
) -> PaymentRequest {
    let public = &state.settings.public_url;
    PaymentRequest {
        order_no: order.order_no.clone(),
        amount: order.amount,
        currency: order.currency.clone(),
        subject: subject.to_string(),
        notify_url: format!("{public}/pay/{}/notify", order.channel),
        return_url: format!("{public}/pay/{}/return", order.channel),
        reference,
    }
}

/// The gateway URL to send the buyer to for a pending order: the one
/// already handed out, or a new payment (recorded, with a
/// `payment_started` event, so reconciliation will ask about it).
pub async fn start_payment(
    state: &AppState,
    channel: &dyn Channel,
    order: &Order,
    subject: &str,
) -> Result<String, ApiError> {
    if let Some(attempt) = state.store.payment_attempt(order.id).await? {
        return Ok(attempt.pay_url);
    }
    let name = channel.name();
    // Orders placed before their channel said what it collects: refused
    // here without asking the gateway, and without a mark on its breaker.
    if !channel.collects(&order.currency) {
        return Err(crate::services::orders::cannot_collect(
            name,
            &order.currency,
        ));
    }
    if !state.breakers.allows(name) {
        return Err(channel_unavailable(name));
    }
    let req = payment_request(state, order, subject, None);
    let start = match channel.create_payment(&req).await {
        Ok(s) => {
            state.breakers.record_success(name);
            s
        }
        Err(e) => {
            state.breakers.record_failure(name);
            tracing::warn!(order_no = %order.order_no, channel = name, error = %e, "gateway refused to start a payment");
            return Err(channel_unavailable(name));
        }
    };
    let now = now_millis();
    let attempt = state
        .store
        .start_payment_attempt(&NewPaymentAttempt {
            order_id: order.id,
            order_no: order.order_no.clone(),
            channel: name.to_string(),
            reference: start.reference,
            pay_url: start.pay_url,
            created_at: now,
            first_check_at: now + state.settings.reconcile_interval_ms,
        })
        .await?;
    tracing::debug!(order_no = %order.order_no, channel = name, "payment started");
    Ok(attempt.pay_url)
}

pub fn channel_unavailable(name: &str) -> ApiError {
    ApiError::unavailable(format!(
        "payment channel {name} is temporarily unavailable; please choose another"
    ))
}

/// One reconciliation run over the attempts due; returns how many orders
/// the gateways' answers paid.
pub async fn reconcile(state: &AppState) -> Result<usize, kami_store::StoreError> {
    let now = now_millis();
    let mut paid = 0;
    for attempt in state.store.due_payment_checks(now, RECONCILE_BATCH).await? {
        let next = match check(state, &attempt).await {
            Ok(Answer::Paid) => {
                paid += 1;
                None
            }
            Ok(Answer::NotYet) => next_check(state, &attempt, now),
            // The gateway's answer contradicts the order (amount, channel):
            // it is recorded as a rejection for the operator, and asking
            // again would only repeat it.
            Ok(Answer::Refused) => None,
            Err(e) => {
                tracing::warn!(order_no = %attempt.order_no, channel = %attempt.channel, error = %e, "reconciliation query failed");
                next_check(state, &attempt, now)
            }
        };
        state.store.payment_checked(attempt.id, next).await?;
    }
    Ok(paid)
}

/// Exponential backoff from the reconciliation interval, capped; none once
/// the attempt is too old for the gateway to report anything new.
fn next_check(state: &AppState, a: &PaymentAttempt, now: Millis) -> Option<Millis> {
    if now - a.created_at > GIVE_UP_AFTER_MS {
        return None;
    }
    let base = state.settings.reconcile_interval_ms.max(1);
    let wait = base
        .saturating_mul(1 << a.checks.clamp(0, 16))
        .min(MAX_BACKOFF_MS.max(base));
    Some(now + wait)
}

enum Answer {
    /// The gateway reports the payment; the order is paid now.
    Paid,
    /// No payment yet, or the gateway does not know the order.
    NotYet,
    /// The answer was refused and recorded.
    Refused,
}

/// Asks the gateway and applies its answer like a notification.
async fn check(state: &AppState, a: &PaymentAttempt) -> Result<Answer, String> {
    let Some(channel) = state.channel(&a.channel) else {
        return Err(format!("channel {} is no longer configured", a.channel));
    };
    let order = state
        .store
        .get_order(&a.order_no)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("order vanished")?;
    let req = payment_request(state, &order, "", a.reference.clone());
    let Some(notice) = channel
        .query_payment(&req)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(Answer::NotYet);
    };
    match apply_notice(state, channel.as_ref(), notice).await {
        Verdict::Paid(outcome) => {
            tracing::info!(order_no = %a.order_no, channel = %a.channel, ?outcome, "reconciliation found a payment");
            metrics::counter!("kami_reconciled_payments_total", "channel" => channel.name())
                .increment(1);
            Ok(Answer::Paid)
        }
        Verdict::Acknowledged => Ok(Answer::NotYet),
        Verdict::Rejected(_) => Ok(Answer::Refused),
        Verdict::Unavailable { .. } => Err("database unavailable or busy".into()),
    }
}

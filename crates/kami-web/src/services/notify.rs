//! Payment notifications, for every channel: verify, compare with the order,
//! then record the payment and deliver in one transaction (DESIGN.md, "Pay").
//! The gateway hears success only once the outcome is committed.
//! Reconciliation feeds what a gateway answers to a query through the same
//! checks (`apply_notice`), so a lost notification and a found one end alike.

use std::net::IpAddr;

use kami_core::{now_millis, OrderStatus};
use kami_pay::{Channel, Notice, Notification, Reply};
use kami_store::{NewEvent, NewPayment, PayOutcome};

use crate::rarely::Rarely;
use crate::services::recent::PayFacts;
use crate::state::AppState;

/// Longest reason or raw notification we keep for one rejection.
const MAX_DETAIL: usize = 2000;

/// What became of a verified notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A completed payment, committed (or a duplicate of one).
    Paid(PayOutcome),
    /// Genuine, but not a completed payment: only the timeline changed.
    Acknowledged,
    /// Refused and recorded with this reason; nothing else changed.
    Rejected(String),
    /// Our side could not take it now: the gateway must retry. `shed`: the
    /// payment writer's queue was full (load shedding), not a failure.
    Unavailable { shed: bool },
}

/// Verifies and applies one notification that `client` sent (`None`: this
/// server itself, the sandbox's pay button).
pub async fn handle_notification(
    state: &AppState,
    channel: &dyn Channel,
    n: Notification,
    client: Option<IpAddr>,
) -> Reply {
    let verdict = match channel.verify_notification(&n, now_millis() / 1000) {
        Ok(notice) => apply_notice(state, channel, notice).await,
        Err(rej) if client.is_some_and(|ip| !state.limits.record_unverified_notification(ip)) => {
            unrecorded(channel, client, &rej.reason)
        }
        Err(rej) => reject(state, channel, rej.order_no, None, &rej.reason).await,
    };
    reply_for(channel, &verdict)
}

/// The warning that rejections went unrecorded.
static UNRECORDED_WARNING: Rarely = Rarely::new();

/// A notification that failed verification from a client past its
/// recording budget (`RateLimits::record_unverified_notification`): refused
/// like any other and counted, but not written to the database, and logged
/// once every ten seconds at most (the log is a record too).
fn unrecorded(channel: &dyn Channel, client: Option<IpAddr>, reason: &str) -> Verdict {
    let name = channel.name();
    metrics::counter!("kami_notifications_total", "channel" => name, "verdict" => "rejected")
        .increment(1);
    metrics::counter!("kami_notifications_unrecorded_total", "channel" => name).increment(1);
    if UNRECORDED_WARNING.due() {
        tracing::warn!(
            channel = name,
            client = ?client,
            reason,
            "payment notifications failing verification arrive faster than they are recorded; \
             the rest are refused and counted in kami_notifications_unrecorded_total"
        );
    } else {
        tracing::debug!(channel = name, client = ?client, reason, "payment notification rejected, not recorded");
    }
    Verdict::Rejected(reason.to_string())
}

/// The gateway's answer for a verdict.
pub fn reply_for(channel: &dyn Channel, verdict: &Verdict) -> Reply {
    match verdict {
        Verdict::Paid(_) | Verdict::Acknowledged => channel.success_reply(),
        Verdict::Rejected(reason) => channel.failure_reply(reason),
        Verdict::Unavailable { shed: true } => {
            channel.busy_reply("overloaded", "too many payments at this moment; retry")
        }
        Verdict::Unavailable { shed: false } => {
            channel.busy_reply("unavailable", "temporarily unavailable; retry")
        }
    }
}

/// Everything after the signature: the order, channel binding, amount and
/// currency, then the payment. For verified notices only.
pub async fn apply_notice(state: &AppState, channel: &dyn Channel, notice: Notice) -> Verdict {
    let name = channel.name();
    // No order number, trade number or currency of ours holds a NUL, and
    // PostgreSQL's text cannot: looked up or stored, it failed as a database
    // error, and the gateway was told to retry forever.
    let fields = [
        &notice.order_no,
        &notice.trade_no,
        &notice.currency,
        &notice.status,
    ];
    if fields.iter().any(|f| f.contains('\0')) {
        let reason = "the notification's order number, trade number, currency or status holds a NUL character";
        return reject(state, channel, Some(notice.order_no), None, reason).await;
    }
    if notice.order_no.is_empty() && !notice.paid {
        // A genuine event about no order (Stripe sends many kinds): answered
        // so the gateway stops retrying, and kept for the operator.
        let ev = event(
            None,
            None,
            "notify_ignored",
            format!("{name} reported {}", notice.status),
        );
        if let Err(e) = state.store.record_event(&ev).await {
            return retry_later(channel, None, &e.to_string());
        }
        metrics::counter!("kami_notifications_total", "channel" => name, "verdict" => "ignored")
            .increment(1);
        return Verdict::Acknowledged;
    }
    let order = match state.recent_orders.payable(&notice.order_no, now_millis()) {
        Some(facts) => facts,
        None => match state.store.get_order(&notice.order_no).await {
            Ok(Some(o)) => PayFacts::of(&o),
            Ok(None) => {
                return reject(state, channel, Some(notice.order_no), None, "unknown order").await
            }
            Err(e) => return retry_later(channel, Some(&notice.order_no), &e.to_string()),
        },
    };
    let order_no = order.order_no.clone();
    if order.channel != name {
        let reason = format!(
            "order was created for channel {}, not {name}",
            order.channel
        );
        return reject(state, channel, Some(order_no), Some(order.id), &reason).await;
    }
    if !notice.paid {
        // Genuine but not a completed payment: acknowledge so the gateway
        // stops retrying, and only note it on the timeline, once: retried
        // deliveries and repeated reconciliation answers say the same thing.
        let detail = truncate(&format!("{name} reported status {}", notice.status));
        let ev = event(Some(order.id), Some(&order_no), "notify_unpaid", detail);
        if let Err(e) = state.store.record_event_once(&ev).await {
            return retry_later(channel, Some(&order_no), &e.to_string());
        }
        metrics::counter!("kami_notifications_total", "channel" => name, "verdict" => "unpaid")
            .increment(1);
        tracing::debug!(order_no = %order_no, channel = name, status = %notice.status, "unpaid notification acknowledged");
        return Verdict::Acknowledged;
    }
    // The amount is a payment's: a notice that pays nothing changes nothing
    // whatever it says (a refund carries no currency).
    if notice.amount != order.amount || notice.currency != order.currency {
        let reason = format!(
            "amount mismatch: notified {} {}, order is {} {}",
            notice.amount, notice.currency, order.amount, order.currency
        );
        return reject(state, channel, Some(order_no), Some(order.id), &reason).await;
    }
    // The trade number is what makes a payment one payment (a duplicate is
    // the same number again); a paid notice without one is malformed.
    if notice.trade_no.trim().is_empty() || notice.trade_no.len() > 255 {
        let reason = "the payment's trade number is empty or longer than 255 characters";
        return reject(state, channel, Some(order_no), Some(order.id), reason).await;
    }
    let payment = NewPayment {
        order_id: order.id,
        channel: name.to_string(),
        trade_no: notice.trade_no.clone(),
        amount: notice.amount,
        currency: notice.currency.clone(),
        raw: truncate(&notice.raw),
        received_at: now_millis(),
    };
    let outcome = match state.pay_writer(order.id).submit(payment.clone()).await {
        Ok(outcome) => outcome,
        Err(e) => {
            metrics::counter!("kami_shed_total", "writer" => "payments").increment(1);
            // The gateway retries a 503: a payment is never dropped, only
            // answered later (invariant 3). Shedding is the server working
            // as meant under a storm, counted above: a warning, not an error
            // per request.
            tracing::warn!(order_no = %order_no, channel = name, error = %e, "payment notification shed; the gateway will retry");
            return Verdict::Unavailable { shed: true };
        }
    };
    if order.status == OrderStatus::Expired {
        // A late payment took codes again (or waits for them): the gate
        // follows the stock it changed.
        state.stock_changed(order.product_id).await;
    }
    match outcome {
        Ok(PayOutcome::TradeNoTaken) => {
            // A trade number names one payment: the same one for another
            // order is not this order's payment, and must not be answered
            // as if it paid it.
            let reason = format!(
                "trade number {} is already recorded for another order",
                notice.trade_no
            );
            reject(
                state,
                channel,
                Some(order_no),
                Some(order.id),
                &truncate(&reason),
            )
            .await
        }
        Ok(outcome) => {
            let verdict = match outcome {
                PayOutcome::Delivered => "delivered",
                PayOutcome::PaidUnfulfilled => "paid_unfulfilled",
                PayOutcome::Duplicate => "duplicate",
                PayOutcome::AlreadyPaid => "already_paid",
                PayOutcome::TradeNoTaken => unreachable!("answered above"),
            };
            metrics::counter!("kami_notifications_total", "channel" => name, "verdict" => verdict)
                .increment(1);
            if outcome != PayOutcome::Duplicate {
                metrics::counter!("kami_orders_total", "outcome" => verdict).increment(1);
                if outcome == PayOutcome::Delivered {
                    let latency = (payment.received_at - order.created_at).max(0) as f64 / 1000.0;
                    metrics::histogram!("kami_order_paid_after_seconds").record(latency);
                }
            }
            // `debug` as the order's own lines (services/orders.rs): the payment
            // row keeps the verified notification, the timeline its outcome.
            tracing::debug!(order_no = %order_no, channel = name, trade_no = %notice.trade_no, outcome = verdict, "payment notification processed");
            Verdict::Paid(outcome)
        }
        Err(e) => retry_later(channel, Some(&order_no), &e.to_string()),
    }
}

fn event(order_id: Option<i64>, order_no: Option<&str>, kind: &str, detail: String) -> NewEvent {
    NewEvent {
        order_id,
        // A forged notification's claimed number is kept as claimed, but
        // without a NUL, which PostgreSQL's text cannot hold (the rejection
        // went unrecorded).
        order_no: order_no.map(|n| n.replace('\0', "\u{FFFD}")),
        kind: kind.to_string(),
        detail: truncate(&detail),
        at: now_millis(),
    }
}

/// At most `MAX_DETAIL` bytes, and no NUL: PostgreSQL's text cannot hold
/// one, so a payment whose raw notification had one could never be stored
/// and its gateway would be told to retry forever.
fn truncate(s: &str) -> String {
    let cleaned;
    let s = if s.contains('\0') {
        cleaned = s.replace('\0', "\u{FFFD}");
        cleaned.as_str()
    } else {
        s
    };
    if s.len() <= MAX_DETAIL {
        return s.to_string();
    }
    let mut end = MAX_DETAIL;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Records the rejection where an operator will look (the order's timeline,
/// or by the claimed order number when no such order exists) and answers
/// with the gateway's failure reply. Nothing else changes.
async fn reject(
    state: &AppState,
    channel: &dyn Channel,
    order_no: Option<String>,
    order_id: Option<i64>,
    reason: &str,
) -> Verdict {
    let name = channel.name();
    metrics::counter!("kami_notifications_total", "channel" => name, "verdict" => "rejected")
        .increment(1);
    tracing::warn!(
        order_no = order_no.as_deref().unwrap_or("-"),
        channel = name,
        reason,
        "payment notification rejected"
    );
    let order_id = match (order_id, &order_no) {
        (Some(id), _) => Some(id),
        (None, Some(no)) if no.contains('\0') => None,
        (None, Some(no)) => state.store.get_order(no).await.ok().flatten().map(|o| o.id),
        (None, None) => None,
    };
    let detail = format!("{name}: {reason}");
    if let Err(e) = state
        .store
        .record_event(&event(
            order_id,
            order_no.as_deref(),
            "notify_rejected",
            detail,
        ))
        .await
    {
        tracing::error!(error = %e, "could not record a rejected notification");
    }
    Verdict::Rejected(reason.to_string())
}

/// A failure on our side (database down): the gateway must retry later.
fn retry_later(channel: &dyn Channel, order_no: Option<&str>, err: &str) -> Verdict {
    tracing::error!(
        order_no,
        channel = channel.name(),
        error = err,
        "notification not processed; the gateway will retry"
    );
    Verdict::Unavailable { shed: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_text_has_no_nul_and_a_bounded_length() {
        assert_eq!(truncate("a\0b"), "a\u{FFFD}b");
        assert_eq!(truncate("plain"), "plain");
        let long = "雪".repeat(MAX_DETAIL);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_DETAIL + "…".len());
        assert!(cut.ends_with('…'));
    }
}

//! Stripe Checkout. Kami creates a Checkout Session and sends the buyer to
//! its URL; Stripe POSTs events signed with the endpoint's webhook secret:
//! `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! possibly several `v1` while a secret is being rolled.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use crate::{
    http_client, http_error, timestamped_hmac, Channel, ChannelContext, Notice, Notification,
    PayError, PaymentRequest, PaymentStart, Rejection, Reply,
};

pub const NAME: &str = "stripe";
pub const SIGNATURE_HEADER: &str = "Stripe-Signature";
/// Stripe's own libraries accept a signature for five minutes.
pub const TOLERANCE_SECS: i64 = 300;
const PAID_EVENTS: [&str; 2] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
];

/// `[channels.stripe]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    #[serde(default = "default_gateway")]
    pub gateway: String,
    pub secret_key: String,
    pub webhook_secret: String,
}

impl std::fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeConfig")
            .field("gateway", &self.gateway)
            .field("secret_key", &"<redacted>")
            .field("webhook_secret", &"<redacted>")
            .finish()
    }
}

fn default_gateway() -> String {
    "https://api.stripe.com".into()
}

pub struct Stripe {
    cfg: StripeConfig,
    http: reqwest::Client,
}

impl Stripe {
    pub fn new(mut cfg: StripeConfig, _ctx: &ChannelContext) -> Result<Self, PayError> {
        // Fail closed: without a webhook secret no event can be verified, and
        // a shop that cannot hear of payments must not take orders for them.
        if cfg.webhook_secret.trim().is_empty() || cfg.secret_key.trim().is_empty() {
            return Err(PayError::Config(
                "[channels.stripe] needs a non-empty secret_key and webhook_secret".into(),
            ));
        }
        while cfg.gateway.ends_with('/') {
            cfg.gateway.pop();
        }
        Ok(Self {
            cfg,
            http: http_client(),
        })
    }
}

/// The order a Checkout Session belongs to: `client_reference_id`, or the
/// metadata Kami also sets.
fn session_order_no(session: &Value) -> Option<String> {
    session["client_reference_id"]
        .as_str()
        .or_else(|| session["metadata"]["order_no"].as_str())
        .filter(|o| !o.is_empty() && o.len() <= 64)
        .map(str::to_string)
}

/// A Checkout Session as a notice; `paid` is decided by the caller.
fn session_notice(session: &Value, paid: bool, status: String, raw: String) -> Option<Notice> {
    Some(Notice {
        order_no: session_order_no(session)?,
        trade_no: session["id"].as_str()?.to_string(),
        amount: session["amount_total"].as_i64()?,
        // Stripe writes currencies lowercase; orders keep ISO uppercase.
        currency: session["currency"].as_str()?.to_ascii_uppercase(),
        paid,
        status,
        raw,
    })
}

#[async_trait]
impl Channel for Stripe {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create_payment(&self, req: &PaymentRequest) -> Result<PaymentStart, PayError> {
        let back = format!("{}?order_no={}", req.return_url, req.order_no);
        let amount = req.amount.to_string();
        let currency = req.currency.to_ascii_lowercase();
        let form = [
            ("mode", "payment"),
            ("client_reference_id", req.order_no.as_str()),
            ("metadata[order_no]", req.order_no.as_str()),
            (
                "payment_intent_data[metadata][order_no]",
                req.order_no.as_str(),
            ),
            ("line_items[0][quantity]", "1"),
            ("line_items[0][price_data][currency]", currency.as_str()),
            ("line_items[0][price_data][unit_amount]", amount.as_str()),
            (
                "line_items[0][price_data][product_data][name]",
                req.subject.as_str(),
            ),
            ("success_url", back.as_str()),
            ("cancel_url", back.as_str()),
        ];
        let res = self
            .http
            .post(format!("{}/v1/checkout/sessions", self.cfg.gateway))
            .bearer_auth(&self.cfg.secret_key)
            // A retried create (reloaded page, timeout) returns the same
            // session instead of opening a second one for the same order.
            .header("Idempotency-Key", &req.order_no)
            .form(&form)
            .send()
            .await
            .map_err(http_error)?;
        let status = res.status();
        let session: Value = res.json().await.map_err(http_error)?;
        if !status.is_success() {
            return Err(PayError::Gateway(format!(
                "checkout session refused ({status}): {}",
                session["error"]["message"].as_str().unwrap_or("no message")
            )));
        }
        match (session["url"].as_str(), session["id"].as_str()) {
            (Some(url), Some(id)) => Ok(PaymentStart {
                pay_url: url.to_string(),
                reference: Some(id.to_string()),
            }),
            _ => Err(PayError::Gateway(
                "checkout session without url or id".into(),
            )),
        }
    }

    fn verify_notification(&self, n: &Notification, now_secs: i64) -> Result<Notice, Rejection> {
        let claimed = serde_json::from_slice::<Value>(&n.body)
            .ok()
            .and_then(|v| session_order_no(&v["data"]["object"]));
        let reject = |reason: &str| Rejection::new(claimed.clone(), reason);
        if self.cfg.webhook_secret.is_empty() {
            return Err(reject("stripe webhook secret is not configured"));
        }
        let header = n
            .header(SIGNATURE_HEADER)
            .ok_or_else(|| reject("missing Stripe-Signature header"))?;
        timestamped_hmac::verify(
            self.cfg.webhook_secret.as_bytes(),
            header,
            &n.body,
            now_secs,
            TOLERANCE_SECS,
        )
        .map_err(|reason| reject(&reason))?;
        let event: Value = serde_json::from_slice(&n.body)
            .map_err(|e| reject(&format!("malformed event: {e}")))?;
        let kind = event["type"].as_str().unwrap_or_default();
        let event_id = event["id"].as_str().unwrap_or_default();
        let raw = String::from_utf8_lossy(&n.body).into_owned();
        // The event id goes into the status, so the timeline shows which
        // event it was and a redelivered one is recognised.
        let status = format!("{kind} (event {event_id})");
        let session = &event["data"]["object"];
        // Genuine, but about no order of Kami's: acknowledged (or Stripe
        // would retry it for days and may turn off the endpoint that also
        // carries Kami's payments), and it pays nothing.
        let no_order = |status: String| Notice {
            order_no: String::new(),
            trade_no: event_id.to_string(),
            amount: 0,
            currency: String::new(),
            paid: false,
            status,
            raw: raw.clone(),
        };
        if !kind.starts_with("checkout.session.") {
            // Not about a Checkout Session.
            return Ok(no_order(status));
        }
        if session_order_no(session).is_none() {
            // A session Kami did not create (a Payment Link, another app on
            // the same account).
            return Ok(no_order(format!(
                "{status} for a session without a Kami order"
            )));
        }
        let paid = match kind {
            "checkout.session.completed" => session["payment_status"] == "paid",
            k => PAID_EVENTS.contains(&k),
        };
        session_notice(session, paid, status, raw)
            .ok_or_else(|| reject("checkout session without id, amount or currency"))
    }

    /// The session Kami created (its id is the attempt's reference).
    /// Looks up a checkout session that cannot exist: 404 means Stripe took
    /// the secret key, 401 that it did not. The webhook secret never leaves
    /// Kami, so only a signed event can prove it.
    async fn check_credentials(&self) -> Result<bool, PayError> {
        let res = self
            .http
            .get(format!(
                "{}/v1/checkout/sessions/cs_{}",
                self.cfg.gateway,
                crate::CHECK_ORDER_NO.replace('-', "_")
            ))
            .bearer_auth(&self.cfg.secret_key)
            .send()
            .await
            .map_err(http_error)?;
        match res.status() {
            s if s == reqwest::StatusCode::NOT_FOUND || s.is_success() => Ok(true),
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => Err(
                PayError::Gateway(format!("Stripe refused the secret key ({})", res.status())),
            ),
            s => Err(PayError::Gateway(format!(
                "checkout session lookup answered {s}"
            ))),
        }
    }

    async fn query_payment(&self, order: &PaymentRequest) -> Result<Option<Notice>, PayError> {
        let Some(session_id) = order.reference.as_deref() else {
            return Ok(None);
        };
        let res = self
            .http
            .get(format!(
                "{}/v1/checkout/sessions/{session_id}",
                self.cfg.gateway
            ))
            .bearer_auth(&self.cfg.secret_key)
            .send()
            .await
            .map_err(http_error)?;
        if res.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !res.status().is_success() {
            return Err(PayError::Gateway(format!(
                "checkout session lookup answered {}",
                res.status()
            )));
        }
        let text = res.text().await.map_err(http_error)?;
        let session: Value = serde_json::from_str(&text)
            .map_err(|e| PayError::Gateway(format!("malformed checkout session: {e}")))?;
        let paid = session["payment_status"] == "paid";
        let status = format!(
            "session {} payment_status {}",
            session["status"].as_str().unwrap_or("?"),
            session["payment_status"].as_str().unwrap_or("?")
        );
        let notice = session_notice(&session, paid, status, text)
            .ok_or_else(|| PayError::Gateway("checkout session lacks order or amount".into()))?;
        if notice.order_no != order.order_no {
            return Err(PayError::Gateway(
                "checkout session belongs to another order".into(),
            ));
        }
        Ok(Some(notice))
    }

    fn success_reply(&self) -> Reply {
        success_reply()
    }

    fn failure_reply(&self, reason: &str) -> Reply {
        failure_reply(reason)
    }
}

pub(crate) fn success_reply() -> Reply {
    Reply::json(200, serde_json::json!({"received": true}))
}

pub(crate) fn failure_reply(reason: &str) -> Reply {
    Reply::json(400, serde_json::json!({"error": {"message": reason}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripe(secret: &str) -> Stripe {
        Stripe {
            cfg: StripeConfig {
                gateway: default_gateway(),
                secret_key: "sk_test_x".into(),
                webhook_secret: secret.into(),
            },
            http: http_client(),
        }
    }

    fn signed(secret: &str, t: i64, body: &str) -> Notification {
        let sig = timestamped_hmac::sign(secret.as_bytes(), t, body.as_bytes());
        Notification {
            headers: vec![(SIGNATURE_HEADER.into(), format!("{sig},v0=ignored"))],
            body: body.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn event(kind: &str, payment_status: &str) -> String {
        serde_json::json!({"id": "evt_1", "type": kind, "data": {"object": {
            "id": "cs_test_1", "client_reference_id": "K1", "amount_total": 990,
            "currency": "cny", "payment_status": payment_status}}})
        .to_string()
    }

    #[test]
    fn completed_and_paid_sessions_pay() {
        let ch = stripe("whsec_1");
        let n = signed(
            "whsec_1",
            1000,
            &event("checkout.session.completed", "paid"),
        );
        let notice = ch.verify_notification(&n, 1000).unwrap();
        assert!(notice.paid);
        assert_eq!(
            (
                notice.trade_no.as_str(),
                notice.amount,
                notice.currency.as_str()
            ),
            ("cs_test_1", 990, "CNY")
        );
        let unpaid = signed(
            "whsec_1",
            1000,
            &event("checkout.session.completed", "unpaid"),
        );
        assert!(!ch.verify_notification(&unpaid, 1000).unwrap().paid);
        let later = signed(
            "whsec_1",
            1000,
            &event("checkout.session.async_payment_succeeded", "paid"),
        );
        assert!(ch.verify_notification(&later, 1000).unwrap().paid);
    }

    #[test]
    fn stale_forged_and_unsigned_events_are_rejected() {
        let ch = stripe("whsec_1");
        let body = event("checkout.session.completed", "paid");
        let stale = ch
            .verify_notification(&signed("whsec_1", 1000, &body), 1301)
            .unwrap_err();
        assert!(stale.reason.contains("tolerance"), "{}", stale.reason);
        assert_eq!(stale.order_no.as_deref(), Some("K1"));
        assert!(ch
            .verify_notification(&signed("whsec_2", 1000, &body), 1000)
            .is_err());
        let unsigned = Notification {
            body: body.into_bytes(),
            ..Default::default()
        };
        assert!(ch.verify_notification(&unsigned, 1000).is_err());
        // Empty secrets fail closed, both at start and at verification.
        let empty = stripe("");
        let n = signed("", 1000, &event("checkout.session.completed", "paid"));
        assert!(empty.verify_notification(&n, 1000).is_err());
        let ctx = ChannelContext {
            public_url: String::new(),
            base_dir: Default::default(),
        };
        assert!(Stripe::new(empty.cfg.clone(), &ctx).is_err());
    }

    #[test]
    fn other_events_belong_to_no_order() {
        let ch = stripe("whsec_1");
        let body = r#"{"id":"evt_2","type":"customer.created","data":{"object":{}}}"#;
        let notice = ch
            .verify_notification(&signed("whsec_1", 5, body), 5)
            .unwrap();
        assert!(!notice.paid);
        assert!(notice.order_no.is_empty());
    }

    /// A paid session from a Payment Link (no `client_reference_id`, no
    /// `metadata.order_no`) is acknowledged and pays nothing; a session
    /// naming an order but missing its amount is still refused.
    #[test]
    fn sessions_kami_did_not_create_belong_to_no_order() {
        let ch = stripe("whsec_1");
        let body = serde_json::json!({"id": "evt_3", "type": "checkout.session.completed",
            "data": {"object": {"id": "cs_link", "amount_total": 500, "currency": "usd",
            "payment_status": "paid", "metadata": {}}}})
        .to_string();
        let notice = ch
            .verify_notification(&signed("whsec_1", 5, &body), 5)
            .unwrap();
        assert!(!notice.paid, "{notice:?}");
        assert!(notice.order_no.is_empty());
        assert!(
            notice.status.contains("without a Kami order"),
            "{}",
            notice.status
        );
        let body = serde_json::json!({"id": "evt_4", "type": "checkout.session.completed",
            "data": {"object": {"id": "cs_x", "client_reference_id": "K1",
            "currency": "cny", "payment_status": "paid"}}})
        .to_string();
        assert!(ch
            .verify_notification(&signed("whsec_1", 5, &body), 5)
            .is_err());
    }
}

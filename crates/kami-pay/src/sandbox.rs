//! The built-in sandbox gateway (API.md, "The sandbox channel"): the same
//! path as a real gateway, signed like Stripe's webhooks.
//!
//! `Kami-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`

use async_trait::async_trait;
use serde::Deserialize;

use crate::{
    timestamped_hmac, Channel, Notice, Notification, PayError, PaymentRequest, PaymentStart,
    Rejection, Reply,
};

pub const NAME: &str = "sandbox";
pub const SIGNATURE_HEADER: &str = "Kami-Signature";
/// Seconds a signature stays valid either side of now.
pub const TOLERANCE_SECS: i64 = 300;

pub struct Sandbox {
    secret: Vec<u8>,
    pay_base: String,
}

impl Sandbox {
    /// `pay_base` is where the pay page lives, e.g. `http://127.0.0.1:8080/pay/sandbox`.
    pub fn new(secret: &str, pay_base: impl Into<String>) -> Self {
        Self {
            secret: secret.as_bytes().to_vec(),
            pay_base: pay_base.into(),
        }
    }

    /// The header value for `body` signed at `t`, as the sandbox gateway
    /// (the pay button, tests, the benchmark) sends it.
    pub fn sign(&self, t: i64, body: &[u8]) -> String {
        sign(&self.secret, t, body)
    }
}

pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    timestamped_hmac::sign(secret, t, body)
}

#[derive(Deserialize)]
struct Body {
    order_no: String,
    trade_no: String,
    amount: i64,
    currency: String,
    status: String,
}

/// The order number a body claims, read only to file a rejection under it.
fn claimed_order_no(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Claim {
        order_no: String,
    }
    serde_json::from_slice::<Claim>(body)
        .ok()
        .map(|c| c.order_no)
        .filter(|o| o.len() <= 64)
}

#[async_trait]
impl Channel for Sandbox {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create_payment(&self, req: &PaymentRequest) -> Result<PaymentStart, PayError> {
        if self.secret.is_empty() {
            return Err(PayError::NotConfigured(NAME));
        }
        Ok(PaymentStart {
            pay_url: format!("{}/{}", self.pay_base, req.order_no),
            reference: None,
        })
    }

    fn verify_notification(&self, n: &Notification, now_secs: i64) -> Result<Notice, Rejection> {
        let reject = |reason: &str| Rejection::new(claimed_order_no(&n.body), reason);
        // Fail closed: without a secret nothing can be verified.
        if self.secret.is_empty() {
            return Err(reject("sandbox secret is not configured"));
        }
        let header = n
            .header(SIGNATURE_HEADER)
            .ok_or_else(|| reject("missing Kami-Signature header"))?;
        timestamped_hmac::verify(&self.secret, header, &n.body, now_secs, TOLERANCE_SECS)
            .map_err(|reason| reject(&reason))?;
        let body: Body = serde_json::from_slice(&n.body)
            .map_err(|e| reject(&format!("malformed notification body: {e}")))?;
        Ok(Notice {
            paid: body.status == "paid",
            raw: String::from_utf8_lossy(&n.body).into_owned(),
            order_no: body.order_no,
            trade_no: body.trade_no,
            amount: body.amount,
            currency: body.currency,
            status: body.status,
        })
    }

    fn success_reply(&self) -> Reply {
        Reply::json(200, serde_json::json!({"received": true}))
    }

    fn failure_reply(&self, reason: &str) -> Reply {
        Reply::json(
            400,
            serde_json::json!({"error": {"code": "invalid_notification", "message": reason, "param": null}}),
        )
    }

    /// Kami's own error body, with Kami's code for what happened.
    fn busy_reply(&self, code: &'static str, message: &str) -> Reply {
        Reply::json(
            503,
            serde_json::json!({"error": {"code": code, "message": message, "param": null}}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(header: Option<String>, body: &str) -> Notification {
        Notification {
            query: String::new(),
            headers: header
                .map(|h| vec![(SIGNATURE_HEADER.to_string(), h)])
                .unwrap_or_default(),
            body: body.as_bytes().to_vec(),
        }
    }

    const BODY: &str = r#"{"order_no":"K1234567890","trade_no":"T1","amount":990,"currency":"CNY","status":"paid"}"#;

    #[test]
    fn accepts_a_correct_signature() {
        let sb = Sandbox::new("s3cret", "");
        let n = notification(Some(sb.sign(1000, BODY.as_bytes())), BODY);
        let notice = sb.verify_notification(&n, 1100).unwrap();
        assert!(notice.paid);
        assert_eq!(notice.amount, 990);
    }

    #[test]
    fn rejects_wrong_secret_stale_time_and_missing_header() {
        let sb = Sandbox::new("s3cret", "");
        let forged = notification(
            Some(Sandbox::new("other", "").sign(1000, BODY.as_bytes())),
            BODY,
        );
        assert_eq!(
            sb.verify_notification(&forged, 1000).unwrap_err().reason,
            "signature does not match"
        );
        let stale = notification(Some(sb.sign(1000, BODY.as_bytes())), BODY);
        assert!(sb.verify_notification(&stale, 1301).is_err());
        assert!(sb.verify_notification(&stale, 699).is_err());
        let missing = sb
            .verify_notification(&notification(None, BODY), 1000)
            .unwrap_err();
        assert_eq!(missing.order_no.as_deref(), Some("K1234567890"));
    }

    #[test]
    fn an_empty_secret_rejects_everything() {
        let sb = Sandbox::new("", "");
        let n = notification(Some(sign(b"", 1000, BODY.as_bytes())), BODY);
        assert!(sb.verify_notification(&n, 1000).is_err());
    }
}

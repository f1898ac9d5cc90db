//! USDT through epusdt. Kami asks `api/v1/order/create-transaction` for a
//! checkout page; the gateway POSTs a signed JSON callback and expects `ok`.
//!
//! Signature: MD5 over the sorted, non-empty fields except `signature`,
//! `k=v` joined by `&`, the API token appended. Numbers are signed as the
//! gateway wrote them, so they are read as raw JSON text (`10` and `10.0`
//! are different strings to the signature).

use std::collections::BTreeMap;

use async_trait::async_trait;
use kami_core::Currency;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::md5_sign::{md5_matches, md5_sign};
use crate::{
    http_client, http_error, parse_yuan, Channel, ChannelContext, Notice, Notification, PayError,
    PaymentRequest, PaymentStart, Rejection, Reply,
};

pub const NAME: &str = "epusdt";
/// epusdt's order status: 1 waiting, 2 paid, 3 expired.
const PAID_STATUS: &str = "2";
const SIGN_FIELD: [&str; 1] = ["signature"];

/// `[channels.epusdt]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpusdtConfig {
    pub gateway: String,
    /// The API token set in epusdt's `.env` (`api_auth_token`).
    pub token: String,
}

impl std::fmt::Debug for EpusdtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpusdtConfig")
            .field("gateway", &self.gateway)
            .field("token", &"<redacted>")
            .finish()
    }
}

pub struct Epusdt {
    cfg: EpusdtConfig,
    http: reqwest::Client,
}

impl Epusdt {
    pub fn new(mut cfg: EpusdtConfig, _ctx: &ChannelContext) -> Result<Self, PayError> {
        if cfg.token.trim().is_empty() {
            return Err(PayError::Config(
                "[channels.epusdt] needs a non-empty token".into(),
            ));
        }
        if !cfg.gateway.ends_with('/') {
            cfg.gateway.push('/');
        }
        Ok(Self {
            cfg,
            http: http_client(),
        })
    }
}

/// `990` → `9.9`, `1000` → `10`: the shortest decimal, which is how epusdt
/// (Go, `%v` of a float64) prints the amount it checks the signature with.
fn shortest_yuan(req: &PaymentRequest) -> Result<String, PayError> {
    let cur = Currency::parse(&req.currency).map_err(|e| PayError::Gateway(e.to_string()))?;
    if cur.as_str() != "CNY" {
        return Err(PayError::Gateway(format!(
            "epusdt prices orders in CNY only, not {cur}"
        )));
    }
    let fixed = cur.format_decimal(req.amount);
    Ok(fixed
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string())
}

/// The callback's fields as the strings that were signed: JSON strings
/// decoded, numbers and booleans as their raw text, nulls left out.
fn signed_fields(body: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let raw: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(body).map_err(|e| format!("malformed callback body: {e}"))?;
    let mut fields = BTreeMap::new();
    for (k, v) in raw {
        let text = v.get();
        let value = match text.as_bytes().first() {
            Some(b'"') => serde_json::from_str::<String>(text).map_err(|e| e.to_string())?,
            Some(b'{' | b'[') => return Err(format!("field {k} is not a scalar")),
            _ if text == "null" => continue,
            _ => text.to_string(),
        };
        fields.insert(k, value);
    }
    Ok(fields)
}

#[async_trait]
impl Channel for Epusdt {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collects(&self, currency: &str) -> bool {
        crate::collects_cny(currency)
    }

    async fn create_payment(&self, req: &PaymentRequest) -> Result<PaymentStart, PayError> {
        let amount = shortest_yuan(req)?;
        let pairs = [
            ("order_id", req.order_no.as_str()),
            ("amount", amount.as_str()),
            ("notify_url", req.notify_url.as_str()),
            ("redirect_url", req.return_url.as_str()),
        ];
        let signature = md5_sign(&pairs, &SIGN_FIELD, &self.cfg.token);
        // The amount goes out as a JSON number with exactly the digits signed.
        let body = format!(
            r#"{{"order_id":{},"amount":{amount},"notify_url":{},"redirect_url":{},"signature":"{signature}"}}"#,
            serde_json::Value::from(req.order_no.as_str()),
            serde_json::Value::from(req.notify_url.as_str()),
            serde_json::Value::from(req.return_url.as_str()),
        );
        let res = self
            .http
            .post(format!(
                "{}api/v1/order/create-transaction",
                self.cfg.gateway
            ))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(http_error)?;
        if !res.status().is_success() {
            return Err(PayError::Gateway(format!(
                "create-transaction answered {}",
                res.status()
            )));
        }
        #[derive(Deserialize)]
        struct Created {
            status_code: i64,
            #[serde(default)]
            message: String,
            data: Option<CreatedData>,
        }
        #[derive(Deserialize)]
        struct CreatedData {
            trade_id: String,
            payment_url: String,
        }
        let created: Created = res.json().await.map_err(http_error)?;
        match created.data {
            Some(d) if created.status_code == 200 => Ok(PaymentStart {
                pay_url: d.payment_url,
                reference: Some(d.trade_id),
            }),
            _ => Err(PayError::Gateway(format!(
                "create-transaction refused: {} {}",
                created.status_code, created.message
            ))),
        }
    }

    fn verify_notification(&self, n: &Notification, _now_secs: i64) -> Result<Notice, Rejection> {
        let fields = signed_fields(&n.body).map_err(|e| Rejection::new(None, e))?;
        let claimed = fields.get("order_id").filter(|o| o.len() <= 64).cloned();
        let reject = |reason: &str| Rejection::new(claimed.clone(), reason);
        if self.cfg.token.is_empty() {
            return Err(reject("epusdt token is not configured"));
        }
        let received = fields
            .get("signature")
            .ok_or_else(|| reject("missing signature"))?;
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if !md5_matches(&md5_sign(&pairs, &SIGN_FIELD, &self.cfg.token), received) {
            return Err(reject("signature does not match"));
        }
        let order_no = claimed.clone().ok_or_else(|| reject("missing order_id"))?;
        let trade_no = fields
            .get("trade_id")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| reject("missing trade_id"))?;
        let money = fields.get("amount").map(String::as_str).unwrap_or_default();
        let amount =
            parse_yuan(money).ok_or_else(|| reject(&format!("malformed amount {money:?}")))?;
        let status = fields.get("status").cloned().unwrap_or_default();
        Ok(Notice {
            order_no,
            trade_no: trade_no.clone(),
            amount,
            currency: "CNY".into(),
            paid: status == PAID_STATUS,
            status: format!("status {status}"),
            // The callback holds the signature and the wallet address, never the API token.
            raw: String::from_utf8_lossy(&n.body).into_owned(),
        })
    }

    fn success_reply(&self) -> Reply {
        success_reply()
    }

    fn failure_reply(&self, reason: &str) -> Reply {
        failure_reply(reason)
    }
}

pub(crate) fn success_reply() -> Reply {
    Reply::text(200, "ok")
}

pub(crate) fn failure_reply(_reason: &str) -> Reply {
    Reply::text(400, "fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> Epusdt {
        Epusdt::new(
            EpusdtConfig {
                gateway: "https://usdt.example".into(),
                token: "t0ken".into(),
            },
            &ChannelContext {
                public_url: String::new(),
                base_dir: Default::default(),
            },
        )
        .unwrap()
    }

    /// Signs `fields` (raw JSON texts) the way the gateway does.
    fn callback(token: &str, fields: &[(&str, &str)]) -> Vec<u8> {
        let strings: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| {
                let s = serde_json::from_str::<String>(v).unwrap_or_else(|_| v.to_string());
                (k.to_string(), s)
            })
            .collect();
        let pairs: Vec<(&str, &str)> = strings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let sig = md5_sign(&pairs, &SIGN_FIELD, token);
        let mut body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        body.push(format!("\"signature\":\"{sig}\""));
        format!("{{{}}}", body.join(",")).into_bytes()
    }

    const PAID: [(&str, &str); 7] = [
        ("trade_id", "\"202401011234\""),
        ("order_id", "\"K1\""),
        ("amount", "10.0"),
        ("actual_amount", "1.4285"),
        ("token", "\"TWalletAddress\""),
        ("block_transaction_id", "\"0xabc\""),
        ("status", "2"),
    ];

    #[test]
    fn numbers_are_verified_as_the_gateway_wrote_them() {
        let ch = channel();
        let body = callback("t0ken", &PAID);
        let notice = ch
            .verify_notification(
                &Notification {
                    body: body.clone(),
                    ..Default::default()
                },
                0,
            )
            .unwrap();
        assert!(notice.paid);
        assert_eq!(notice.amount, 1000);
        // Rewriting 10.0 as 10 breaks what was signed.
        let rewritten = String::from_utf8(body).unwrap().replace("10.0", "10");
        let r = ch
            .verify_notification(
                &Notification {
                    body: rewritten.into_bytes(),
                    ..Default::default()
                },
                0,
            )
            .unwrap_err();
        assert_eq!(r.reason, "signature does not match");
        assert_eq!(r.order_no.as_deref(), Some("K1"));
    }

    #[test]
    fn wrong_token_and_waiting_status() {
        let ch = channel();
        let forged = callback("other", &PAID);
        assert!(ch
            .verify_notification(
                &Notification {
                    body: forged,
                    ..Default::default()
                },
                0
            )
            .is_err());
        let mut waiting = PAID;
        waiting[6] = ("status", "1");
        let n = Notification {
            body: callback("t0ken", &waiting),
            ..Default::default()
        };
        assert!(!ch.verify_notification(&n, 0).unwrap().paid);
    }

    #[test]
    fn amounts_go_out_in_their_shortest_form() {
        let req = |amount| PaymentRequest {
            order_no: "K1".into(),
            amount,
            currency: "CNY".into(),
            subject: String::new(),
            notify_url: String::new(),
            return_url: String::new(),
            reference: None,
        };
        assert_eq!(shortest_yuan(&req(990)).unwrap(), "9.9");
        assert_eq!(shortest_yuan(&req(1000)).unwrap(), "10");
        assert_eq!(shortest_yuan(&req(1)).unwrap(), "0.01");
    }
}

//! EPay (易支付: 彩虹易支付 and its many forks). The buyer is sent to
//! `{gateway}submit.php` with signed parameters (or, in API mode, Kami asks
//! `mapi.php` for a pay URL); the gateway then calls the notify URL with the
//! signed parameters appended as a query string and expects `success`.
//!
//! Signature: MD5 over the sorted, non-empty parameters except `sign` and
//! `sign_type`, `k=v` joined by `&`, the merchant key appended directly.

use async_trait::async_trait;
use kami_core::Currency;
use serde::Deserialize;

use crate::md5_sign::{md5_matches, md5_sign};
use crate::{
    http_client, http_error, parse_yuan, Channel, ChannelContext, Notice, Notification, PayError,
    PaymentRequest, PaymentStart, Rejection, Reply,
};

pub const NAME: &str = "epay";
/// The statuses that mean the buyer paid: `TRADE_FINISHED` is a paid trade
/// past its refund window (EPay gateways pass Alipay's status through, and
/// epay-sdk counts both as success).
const PAID_STATUSES: [&str; 2] = ["TRADE_SUCCESS", "TRADE_FINISHED"];
const SIGN_FIELDS: [&str; 2] = ["sign", "sign_type"];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The buyer's browser is sent to submit.php (works with every fork).
    #[default]
    Page,
    /// Kami asks mapi.php for the pay URL (needs `type`).
    Api,
}

/// `[channels.epay]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpayConfig {
    /// Base URL; submit.php, mapi.php and api.php live under it.
    pub gateway: String,
    pub pid: String,
    pub key: String,
    #[serde(default)]
    pub mode: Mode,
    /// The payment method (`alipay`, `wxpay`, …). Optional in page mode,
    /// where most gateways then let the buyer choose.
    #[serde(default, rename = "type")]
    pub pay_type: Option<String>,
}

/// Without the key: configurations end up in logs and panics.
impl std::fmt::Debug for EpayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpayConfig")
            .field("gateway", &self.gateway)
            .field("pid", &self.pid)
            .field("key", &"<redacted>")
            .field("mode", &self.mode)
            .field("type", &self.pay_type)
            .finish()
    }
}

pub struct Epay {
    cfg: EpayConfig,
    http: reqwest::Client,
}

impl Epay {
    pub fn new(mut cfg: EpayConfig, _ctx: &ChannelContext) -> Result<Self, PayError> {
        // Fail closed: a channel without credentials could verify nothing.
        if cfg.key.trim().is_empty() || cfg.pid.trim().is_empty() {
            return Err(PayError::Config(
                "[channels.epay] needs a non-empty pid and key".into(),
            ));
        }
        if cfg.mode == Mode::Api && cfg.pay_type.is_none() {
            return Err(PayError::Config(
                "[channels.epay] mode = \"api\" needs a type (alipay, wxpay, …)".into(),
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

    /// The signed parameters of a payment, in the order they are sent.
    fn payment_params(&self, req: &PaymentRequest) -> Result<Vec<(String, String)>, PayError> {
        let money = yuan(req)?;
        let mut params: Vec<(String, String)> = vec![
            ("pid".into(), self.cfg.pid.clone()),
            ("out_trade_no".into(), req.order_no.clone()),
            ("notify_url".into(), req.notify_url.clone()),
            ("return_url".into(), req.return_url.clone()),
            ("name".into(), req.subject.clone()),
            ("money".into(), money),
        ];
        if let Some(t) = &self.cfg.pay_type {
            params.push(("type".into(), t.clone()));
        }
        let sign = self.sign(&params);
        params.push(("sign".into(), sign));
        params.push(("sign_type".into(), "MD5".into()));
        Ok(params)
    }

    fn sign(&self, params: &[(String, String)]) -> String {
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        md5_sign(&pairs, &SIGN_FIELDS, &self.cfg.key)
    }

    async fn create_via_api(&self, params: &[(String, String)]) -> Result<PaymentStart, PayError> {
        #[derive(Deserialize)]
        struct Created {
            code: serde_json::Value,
            #[serde(default)]
            msg: Option<String>,
            #[serde(default)]
            trade_no: Option<String>,
            #[serde(default)]
            payurl: Option<String>,
            #[serde(default)]
            qrcode: Option<String>,
            #[serde(default)]
            urlscheme: Option<String>,
        }
        let res = self
            .http
            .post(format!("{}mapi.php", self.cfg.gateway))
            .form(params)
            .send()
            .await
            .map_err(http_error)?;
        if !res.status().is_success() {
            return Err(PayError::Gateway(format!(
                "mapi.php answered {}",
                res.status()
            )));
        }
        let created: Created = res.json().await.map_err(http_error)?;
        if !is_one(&created.code) {
            return Err(PayError::Gateway(format!(
                "mapi.php refused the payment: {}",
                created.msg.unwrap_or_default()
            )));
        }
        let pay_url = created
            .payurl
            .or(created.qrcode)
            .or(created.urlscheme)
            .ok_or_else(|| PayError::Gateway("mapi.php gave no pay URL".into()))?;
        Ok(PaymentStart {
            pay_url,
            reference: created.trade_no,
        })
    }
}

/// EPay collects yuan: the order's amount as a decimal, e.g. `"9.90"`.
fn yuan(req: &PaymentRequest) -> Result<String, PayError> {
    let cur = Currency::parse(&req.currency).map_err(|e| PayError::Gateway(e.to_string()))?;
    if cur.as_str() != "CNY" {
        return Err(PayError::Gateway(format!(
            "EPay collects CNY only, not {cur}"
        )));
    }
    Ok(cur.format_decimal(req.amount))
}

/// Gateways answer `"code": 1` or `"code": "1"`, depending on the fork.
fn is_one(v: &serde_json::Value) -> bool {
    v.as_i64() == Some(1) || v.as_str() == Some("1")
}

/// The notification's parameters, URL-decoded once and otherwise exactly as
/// received: the signature covers the raw values.
fn parameters(n: &Notification) -> Result<Vec<(String, String)>, &'static str> {
    let source = if n.query.is_empty() {
        // Some forks POST the same parameters as a form.
        n.body.as_slice()
    } else {
        n.query.as_bytes()
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(source).into_owned().collect();
    for (i, (k, _)) in params.iter().enumerate() {
        if params[..i].iter().any(|(seen, _)| seen == k) {
            return Err("a parameter appears twice");
        }
    }
    Ok(params)
}

fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[async_trait]
impl Channel for Epay {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collects(&self, currency: &str) -> bool {
        crate::collects_cny(currency)
    }

    async fn create_payment(&self, req: &PaymentRequest) -> Result<PaymentStart, PayError> {
        let params = self.payment_params(req)?;
        match self.cfg.mode {
            Mode::Api => self.create_via_api(&params).await,
            Mode::Page => {
                let query = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&params)
                    .finish();
                Ok(PaymentStart {
                    pay_url: format!("{}submit.php?{query}", self.cfg.gateway),
                    reference: None,
                })
            }
        }
    }

    fn verify_notification(&self, n: &Notification, _now_secs: i64) -> Result<Notice, Rejection> {
        let params = parameters(n).map_err(|r| Rejection::new(None, r))?;
        let claimed = get(&params, "out_trade_no")
            .filter(|o| o.len() <= 64)
            .map(str::to_string);
        let reject = |reason: &str| Rejection::new(claimed.clone(), reason);
        if self.cfg.key.is_empty() {
            return Err(reject("epay key is not configured"));
        }
        let received = get(&params, "sign").ok_or_else(|| reject("missing sign"))?;
        if !md5_matches(&self.sign(&params), received) {
            return Err(reject("signature does not match"));
        }
        // The signature leaves `sign_type` out, so it is checked on its own:
        // a notification that says it is signed some other way (EPay v2's
        // RSA) is not this rule's to accept. Absent, it is MD5.
        if let Some(kind) = get(&params, "sign_type").filter(|k| !k.eq_ignore_ascii_case("MD5")) {
            return Err(reject(&format!("sign_type {kind:?} is not MD5")));
        }
        if get(&params, "pid") != Some(self.cfg.pid.as_str()) {
            return Err(reject(&format!(
                "pid {:?} is not this shop's merchant id",
                get(&params, "pid").unwrap_or_default()
            )));
        }
        let order_no = claimed
            .clone()
            .ok_or_else(|| reject("missing out_trade_no"))?;
        let trade_no = get(&params, "trade_no")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| reject("missing trade_no"))?;
        let money = get(&params, "money").unwrap_or_default();
        let amount =
            parse_yuan(money).ok_or_else(|| reject(&format!("malformed money {money:?}")))?;
        let status = get(&params, "trade_status").unwrap_or_default();
        Ok(Notice {
            order_no,
            trade_no: trade_no.to_string(),
            amount,
            currency: "CNY".into(),
            paid: PAID_STATUSES.contains(&status),
            status: status.to_string(),
            // The parameters as received; they hold the sign, never the key.
            raw: if n.query.is_empty() {
                String::from_utf8_lossy(&n.body).into_owned()
            } else {
                n.query.clone()
            },
        })
    }

    /// `api.php?act=query`, the merchant-info call: answered `code: 1` only
    /// for this pid with this key. Its answer (which echoes the key) is read
    /// for `code` and `msg` alone.
    async fn check_credentials(&self) -> Result<bool, PayError> {
        let res = self
            .http
            .get(format!("{}api.php", self.cfg.gateway))
            .query(&[
                ("act", "query"),
                ("pid", self.cfg.pid.as_str()),
                ("key", self.cfg.key.as_str()),
            ])
            .send()
            .await
            .map_err(http_error)?;
        if !res.status().is_success() {
            return Err(PayError::Gateway(format!(
                "api.php answered {}",
                res.status()
            )));
        }
        let v: serde_json::Value = res
            .json()
            .await
            .map_err(|e| PayError::Gateway(format!("api.php answered malformed JSON: {e}")))?;
        if is_one(&v["code"]) {
            return Ok(true);
        }
        Err(PayError::Gateway(format!(
            "api.php refused pid {} with this key: {}",
            self.cfg.pid,
            v["msg"].as_str().unwrap_or("no message")
        )))
    }

    /// `api.php?act=order`: the gateway's record of the payment. The URL
    /// carries the merchant key, so it is never logged (errors drop it).
    async fn query_payment(&self, order: &PaymentRequest) -> Result<Option<Notice>, PayError> {
        let res = self
            .http
            .get(format!("{}api.php", self.cfg.gateway))
            .query(&[
                ("act", "order"),
                ("pid", self.cfg.pid.as_str()),
                ("key", self.cfg.key.as_str()),
                ("out_trade_no", order.order_no.as_str()),
            ])
            .send()
            .await
            .map_err(http_error)?;
        if !res.status().is_success() {
            return Err(PayError::Gateway(format!(
                "api.php answered {}",
                res.status()
            )));
        }
        let text = res.text().await.map_err(http_error)?;
        let mut v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| PayError::Gateway(format!("api.php answered malformed JSON: {e}")))?;
        if !is_one(&v["code"]) {
            // The gateway knows no such payment (yet).
            return Ok(None);
        }
        let field = |name: &str| match &v[name] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        if field("out_trade_no") != order.order_no {
            return Err(PayError::Gateway(
                "api.php answered about another order".into(),
            ));
        }
        if !field("pid").is_empty() && field("pid") != self.cfg.pid {
            return Err(PayError::Gateway(
                "api.php answered for another merchant".into(),
            ));
        }
        let money = field("money");
        let amount = parse_yuan(&money)
            .ok_or_else(|| PayError::Gateway(format!("api.php gave malformed money {money:?}")))?;
        let status = field("status");
        let trade_no = field("trade_no");
        if let Some(obj) = v.as_object_mut() {
            // Kept for audit: never with a key, should a fork echo it.
            obj.remove("key");
        }
        Ok(Some(Notice {
            order_no: order.order_no.clone(),
            trade_no,
            amount,
            currency: "CNY".into(),
            paid: status == "1",
            status: format!("api.php status {status}"),
            raw: v.to_string(),
        }))
    }

    fn success_reply(&self) -> Reply {
        success_reply()
    }

    fn failure_reply(&self, reason: &str) -> Reply {
        failure_reply(reason)
    }
}

pub(crate) fn success_reply() -> Reply {
    Reply::text(200, "success")
}

pub(crate) fn failure_reply(_reason: &str) -> Reply {
    Reply::text(400, "fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epay(key: &str) -> Epay {
        let ctx = ChannelContext {
            public_url: "https://shop.example".into(),
            base_dir: Default::default(),
        };
        Epay::new(
            EpayConfig {
                gateway: "https://pay.example.com".into(),
                pid: "1001".into(),
                key: key.into(),
                mode: Mode::Page,
                pay_type: None,
            },
            &ctx,
        )
        .unwrap()
    }

    fn signed_query(key: &str, params: &[(&str, &str)]) -> String {
        let sign = md5_sign(params, &SIGN_FIELDS, key);
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .append_pair("sign", &sign)
            .append_pair("sign_type", "MD5")
            .finish()
    }

    const PAID: [(&str, &str); 7] = [
        ("pid", "1001"),
        ("trade_no", "2024010112345"),
        ("out_trade_no", "K1"),
        ("type", "alipay"),
        ("name", "游戏 点卡"),
        ("money", "10"),
        ("trade_status", "TRADE_SUCCESS"),
    ];

    #[test]
    fn a_signed_notification_pays_and_money_compares_as_a_number() {
        let ch = epay("k3y");
        let n = Notification {
            query: signed_query("k3y", &PAID),
            ..Default::default()
        };
        let notice = ch.verify_notification(&n, 0).unwrap();
        assert!(notice.paid);
        assert_eq!((notice.amount, notice.currency.as_str()), (1000, "CNY"));
        assert_eq!(notice.trade_no, "2024010112345");
        assert!(!notice.raw.contains("k3y"));
        // The same parameters POSTed as a form.
        let posted = Notification {
            body: signed_query("k3y", &PAID).into_bytes(),
            ..Default::default()
        };
        assert!(ch.verify_notification(&posted, 0).unwrap().paid);
        // A trade past its refund window is paid too.
        let mut finished = PAID;
        finished[6] = ("trade_status", "TRADE_FINISHED");
        let n = Notification {
            query: signed_query("k3y", &finished),
            ..Default::default()
        };
        assert!(ch.verify_notification(&n, 0).unwrap().paid);
    }

    #[test]
    fn tampering_other_merchants_and_empty_keys_are_rejected() {
        let ch = epay("k3y");
        let tampered = signed_query("k3y", &PAID).replace("money=10", "money=1");
        let r = ch
            .verify_notification(
                &Notification {
                    query: tampered,
                    ..Default::default()
                },
                0,
            )
            .unwrap_err();
        assert_eq!(r.reason, "signature does not match");
        assert_eq!(r.order_no.as_deref(), Some("K1"));
        let mut other = PAID;
        other[0] = ("pid", "2002");
        let r = ch
            .verify_notification(
                &Notification {
                    query: signed_query("k3y", &other),
                    ..Default::default()
                },
                0,
            )
            .unwrap_err();
        assert!(r.reason.contains("merchant"), "{}", r.reason);
        let wrong_key = Notification {
            query: signed_query("other", &PAID),
            ..Default::default()
        };
        assert!(ch.verify_notification(&wrong_key, 0).is_err());
        let unpaid = {
            let mut p = PAID;
            p[6] = ("trade_status", "WAIT_BUYER_PAY");
            Notification {
                query: signed_query("k3y", &p),
                ..Default::default()
            }
        };
        assert!(!ch.verify_notification(&unpaid, 0).unwrap().paid);
        assert!(Epay::new(
            EpayConfig {
                key: " ".into(),
                ..epay("x").cfg.clone()
            },
            &ChannelContext {
                public_url: String::new(),
                base_dir: Default::default()
            }
        )
        .is_err());
    }

    #[tokio::test]
    async fn the_submit_url_carries_signed_decimal_yuan() {
        let ch = epay("k3y");
        let req = PaymentRequest {
            order_no: "K1".into(),
            amount: 990,
            currency: "CNY".into(),
            subject: "Card".into(),
            notify_url: "https://shop.example/pay/epay/notify".into(),
            return_url: "https://shop.example/pay/epay/return".into(),
            reference: None,
        };
        let start = ch.create_payment(&req).await.unwrap();
        let (base, query) = start.pay_url.split_once('?').unwrap();
        assert_eq!(base, "https://pay.example.com/submit.php");
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(get(&params, "money"), Some("9.90"));
        assert_eq!(get(&params, "sign_type"), Some("MD5"));
        assert!(md5_matches(
            &ch.sign(&params),
            get(&params, "sign").unwrap()
        ));
        let usd = PaymentRequest {
            currency: "USD".into(),
            ..req
        };
        assert!(ch.create_payment(&usd).await.is_err());
    }
}

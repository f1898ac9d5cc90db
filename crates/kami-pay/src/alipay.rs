//! Alipay open platform (支付宝开放平台), RSA2 = SHA256withRSA.
//!
//! - Requests: every common parameter but `sign`, sorted by key, non-empty,
//!   `k=v` joined by `&` with raw (unencoded) values, signed with the app's
//!   private key.
//! - Async notifications (POST form): the same string but without `sign`
//!   *and* `sign_type` (Alipay's own rule for notifications), verified with the
//!   Alipay public key.
//! - Server responses (`{"<method>_response": {...}, "sign": "..."}`): the
//!   signature covers the response object's JSON text exactly as sent, so it
//!   is cut out of the body, never re-serialised.

mod json_raw;

use std::collections::BTreeMap;

use async_trait::async_trait;
use rsa::pkcs1v15::{SigningKey, VerifyingKey};
use rsa::sha2::Sha256;
use serde::Deserialize;
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::registry::ChannelContext;
use crate::rsa_keys::{self, KeyError, KeySource};
use crate::{
    Channel, Notice, Notification, PayError, PaymentRequest, PaymentStart, Rejection, Reply,
};

pub const NAME: &str = "alipay";

/// How `create_payment` starts a payment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// alipay.trade.precreate: a server call answering a QR code (当面付).
    #[default]
    Precreate,
    /// alipay.trade.page.pay: a signed GET URL to the desktop cashier (电脑网站支付).
    Page,
    /// alipay.trade.wap.pay: a signed GET URL to the mobile cashier (手机网站支付).
    Wap,
}

/// `[channels.alipay]` (API.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlipayConfig {
    pub gateway: String,
    pub app_id: String,
    #[serde(default)]
    pub seller_id: Option<String>,
    #[serde(default)]
    pub app_private_key_file: Option<String>,
    /// The PEM itself (the admin panel), instead of the file.
    #[serde(default)]
    pub app_private_key: Option<String>,
    #[serde(default)]
    pub alipay_public_key_file: Option<String>,
    #[serde(default)]
    pub alipay_public_key: Option<String>,
    #[serde(default)]
    pub mode: Mode,
}

pub struct Alipay {
    gateway: String,
    app_id: String,
    seller_id: Option<String>,
    mode: Mode,
    app_key: SigningKey<Sha256>,
    alipay_key: VerifyingKey<Sha256>,
    notify_url: String,
    http: reqwest::Client,
}

impl Alipay {
    pub fn new(cfg: AlipayConfig, ctx: &ChannelContext) -> Result<Self, PayError> {
        let key_err = |e: KeyError| PayError::Config(format!("[channels.alipay] {e}"));
        for (field, value) in [("gateway", &cfg.gateway), ("app_id", &cfg.app_id)] {
            if value.trim().is_empty() {
                return Err(PayError::Config(format!(
                    "[channels.alipay] {field} is empty"
                )));
            }
        }
        let app_key = KeySource {
            what: "app_private_key",
            file: cfg.app_private_key_file.as_deref(),
            pem: cfg.app_private_key.as_deref(),
        }
        .private_key(ctx)
        .map_err(key_err)?;
        let alipay_key = KeySource {
            what: "alipay_public_key",
            file: cfg.alipay_public_key_file.as_deref(),
            pem: cfg.alipay_public_key.as_deref(),
        }
        .public_key(ctx)
        .map_err(key_err)?;
        Ok(Self {
            gateway: cfg.gateway,
            app_id: cfg.app_id,
            seller_id: cfg.seller_id.filter(|s| !s.trim().is_empty()),
            mode: cfg.mode,
            app_key,
            alipay_key,
            notify_url: ctx.notify_url(NAME),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .build()
                .map_err(|e| PayError::Config(format!("[channels.alipay] http client: {e}")))?,
        })
    }

    /// The signed common parameters of one API call.
    fn signed_params(
        &self,
        method: &str,
        biz_content: serde_json::Value,
        extra: &[(&str, &str)],
        now: OffsetDateTime,
    ) -> BTreeMap<String, String> {
        let mut p = BTreeMap::new();
        p.insert("app_id".into(), self.app_id.clone());
        p.insert("method".into(), method.into());
        p.insert("format".into(), "JSON".into());
        p.insert("charset".into(), "utf-8".into());
        p.insert("sign_type".into(), "RSA2".into());
        p.insert("timestamp".into(), timestamp(now));
        p.insert("version".into(), "1.0".into());
        p.insert("notify_url".into(), self.notify_url.clone());
        p.insert("biz_content".into(), biz_content.to_string());
        for (k, v) in extra {
            p.insert((*k).into(), (*v).into());
        }
        let sig = rsa_keys::sign(&self.app_key, signing_string(&p, &["sign"]).as_bytes());
        p.insert("sign".into(), sig);
        p
    }

    /// Calls a server API and returns its response object, signature verified.
    async fn call(
        &self,
        method: &str,
        biz_content: serde_json::Value,
    ) -> Result<serde_json::Value, PayError> {
        let params = self.signed_params(method, biz_content, &[], OffsetDateTime::now_utc());
        let body = self
            .http
            .post(&self.gateway)
            .form(&params)
            .send()
            .await
            .map_err(|e| PayError::Gateway(format!("alipay {method}: {e}")))?
            .text()
            .await
            .map_err(|e| PayError::Gateway(format!("alipay {method}: {e}")))?;
        let response_key = format!("{}_response", method.replace('.', "_"));
        verified_response(&self.alipay_key, &body, &response_key)
            .map_err(|e| PayError::Gateway(format!("alipay {method}: {e}")))
    }

    fn biz_content(req: &PaymentRequest, product_code: Option<&str>) -> serde_json::Value {
        let mut biz = serde_json::json!({
            "out_trade_no": req.order_no,
            "total_amount": yuan(req.amount),
            "subject": req.subject,
        });
        if let Some(code) = product_code {
            biz["product_code"] = code.into();
        }
        biz
    }
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time, which Alipay expects and checks
/// against its own clock. China has no daylight saving, so +08:00 is exact.
fn timestamp(now: OffsetDateTime) -> String {
    const FORMAT: &[FormatItem<'static>] =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let beijing = UtcOffset::from_hms(8, 0, 0).expect("+08:00 is a valid offset");
    now.to_offset(beijing)
        .format(FORMAT)
        .expect("formatting a date cannot fail")
}

/// The string Alipay signs: sorted keys, empty values and `skip` keys left
/// out, raw values.
pub fn signing_string(params: &BTreeMap<String, String>, skip: &[&str]) -> String {
    params
        .iter()
        .filter(|(k, v)| !v.is_empty() && !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The string of a notification's signature: every parameter but `sign` and
/// `sign_type`, sorted, empty values included.
fn notification_signing_string(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "sign" | "sign_type"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Minor units (fen) as Alipay's decimal yuan: 990 → "9.90".
pub fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// Alipay's decimal yuan as fen, exactly: "9.90", "9.9" and "9" are 990, 990
/// and 900; anything with more than two decimals, a sign or a blank is refused
/// rather than rounded.
pub fn parse_yuan(s: &str) -> Option<i64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || whole.len() > 12 || (s.contains('.') && !digits(frac)) || frac.len() > 2 {
        return None;
    }
    let frac_fen = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().ok()? * 10,
        _ => frac.parse::<i64>().ok()?,
    };
    Some(whole.parse::<i64>().ok()? * 100 + frac_fen)
}

/// The response object of a server call, after checking the signature over
/// its exact text. Errors are for the operator's log.
fn verified_response(
    key: &VerifyingKey<Sha256>,
    body: &str,
    response_key: &str,
) -> Result<serde_json::Value, String> {
    // Without the response object (e.g. an `error_response`) nothing can be
    // verified; the text is only shown to the operator.
    let raw = json_raw::top_level_value(body, response_key).ok_or_else(|| {
        let mut shown: String = body.chars().take(300).collect();
        if shown.len() < body.len() {
            shown.push('…');
        }
        format!("no {response_key} in the answer: {shown}")
    })?;
    let sign = json_raw::top_level_value(body, "sign")
        .and_then(|s| serde_json::from_str::<String>(s).ok())
        .ok_or("the answer is not signed")?;
    if !rsa_keys::verify(key, raw.as_bytes(), &sign) {
        return Err("the answer's signature does not match the Alipay public key".into());
    }
    serde_json::from_str(raw).map_err(|e| format!("malformed {response_key}: {e}"))
}

fn str_field<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v.get(k).and_then(|x| x.as_str()).unwrap_or("")
}

/// Notification parameters; a repeated key makes the form ambiguous, so it
/// is refused rather than resolved either way.
fn parse_form(body: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let mut params = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if params.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(format!("parameter {k} appears twice"));
        }
    }
    Ok(params)
}

#[async_trait]
impl Channel for Alipay {
    fn scan_to_pay(&self) -> bool {
        matches!(self.mode, Mode::Precreate)
    }

    fn collects(&self, currency: &str) -> bool {
        crate::collects_cny(currency)
    }

    fn name(&self) -> &'static str {
        NAME
    }

    async fn create_payment(&self, req: &PaymentRequest) -> Result<PaymentStart, PayError> {
        if req.currency != "CNY" || req.amount <= 0 {
            return Err(PayError::Gateway(format!(
                "alipay collects CNY only, not {} {}",
                req.amount, req.currency
            )));
        }
        let (method, product_code) = match self.mode {
            Mode::Precreate => {
                let resp = self
                    .call("alipay.trade.precreate", Self::biz_content(req, None))
                    .await?;
                let qr = str_field(&resp, "qr_code");
                if str_field(&resp, "code") != "10000"
                    || qr.is_empty()
                    || str_field(&resp, "out_trade_no") != req.order_no
                {
                    return Err(PayError::Gateway(format!(
                        "alipay precreate refused: {} {} {}",
                        str_field(&resp, "code"),
                        str_field(&resp, "sub_code"),
                        str_field(&resp, "sub_msg")
                    )));
                }
                return Ok(PaymentStart {
                    pay_url: qr.to_string(),
                    reference: None,
                });
            }
            Mode::Page => ("alipay.trade.page.pay", "FAST_INSTANT_TRADE_PAY"),
            Mode::Wap => ("alipay.trade.wap.pay", "QUICK_WAP_WAY"),
        };
        // page/wap pay: the buyer's browser carries the signed request to the
        // gateway, which shows the cashier.
        let params = self.signed_params(
            method,
            Self::biz_content(req, Some(product_code)),
            &[("return_url", &req.return_url)],
            OffsetDateTime::now_utc(),
        );
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        let sep = if self.gateway.contains('?') { '&' } else { '?' };
        Ok(PaymentStart {
            pay_url: format!("{}{sep}{query}", self.gateway),
            reference: None,
        })
    }

    fn verify_notification(&self, n: &Notification, _now_secs: i64) -> Result<Notice, Rejection> {
        // Alipay posts the form; a GET with the same parameters is accepted
        // too, since some proxies turn one into the other.
        let raw_form: &[u8] = if n.body.is_empty() {
            n.query.as_bytes()
        } else {
            &n.body
        };
        let params = parse_form(raw_form).map_err(|e| Rejection::new(None, e))?;
        let claimed = params
            .get("out_trade_no")
            .filter(|o| !o.is_empty() && o.len() <= 64)
            .cloned();
        let reject = |reason: &str| Rejection::new(claimed.clone(), reason);

        let sign = params
            .get("sign")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| reject("missing sign"))?;
        if params.get("sign_type").is_some_and(|t| t != "RSA2") {
            return Err(reject("sign_type is not RSA2"));
        }
        // A notification's signed string keeps every parameter but `sign`
        // and `sign_type`, empty ones too (Alipay's SDKs check it so); the
        // string without the empty ones, as requests are signed, is taken
        // as well. An empty parameter added to a genuine notification says
        // nothing, and a value emptied changes both strings.
        let full = notification_signing_string(&params);
        let content = signing_string(&params, &["sign", "sign_type"]);
        if !rsa_keys::verify(&self.alipay_key, full.as_bytes(), sign)
            && !rsa_keys::verify(&self.alipay_key, content.as_bytes(), sign)
        {
            return Err(reject("signature does not match the Alipay public key"));
        }

        let field = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
        if field("app_id") != self.app_id {
            return Err(reject(&format!(
                "app_id {} is not this shop's ({})",
                field("app_id"),
                self.app_id
            )));
        }
        if let Some(seller) = &self.seller_id {
            if field("seller_id") != seller {
                return Err(reject(&format!(
                    "seller_id {:?} is not this shop's",
                    field("seller_id")
                )));
            }
        }
        let order_no = claimed
            .clone()
            .ok_or_else(|| reject("missing out_trade_no"))?;
        let trade_no = field("trade_no");
        if trade_no.is_empty() {
            return Err(reject("missing trade_no"));
        }
        let amount = parse_yuan(field("total_amount")).ok_or_else(|| {
            reject(&format!(
                "total_amount {:?} is not a yuan amount",
                field("total_amount")
            ))
        })?;
        let trade_status = field("trade_status");
        // A refund is told with the trade's own status: a partial one keeps
        // TRADE_SUCCESS, so without this it read as the payment again and
        // went unrecorded (a payment audit). `refund_fee` (the total
        // refunded so far, in yuan) and `gmt_refund` come only with refunds.
        let refund_fee = field("refund_fee");
        let refunded =
            parse_yuan(refund_fee).is_some_and(|fen| fen > 0) || !field("gmt_refund").is_empty();
        let status = if refunded {
            format!("{trade_status}: refunded {refund_fee} yuan in total")
        } else {
            trade_status.to_string()
        };
        Ok(Notice {
            order_no,
            trade_no: trade_no.to_string(),
            amount,
            // Alipay settles in CNY; total_amount is always yuan.
            currency: "CNY".into(),
            paid: !refunded && matches!(trade_status, "TRADE_SUCCESS" | "TRADE_FINISHED"),
            status,
            // The form holds no secret (the signature is public proof), so it
            // is kept whole for audit.
            raw: String::from_utf8_lossy(raw_form).into_owned(),
        })
    }

    /// A signed trade query for an order that cannot exist: the gateway
    /// answers "no such trade" (signed, and verified) only when it accepted
    /// our signature.
    async fn check_credentials(&self) -> Result<bool, PayError> {
        self.query_payment(&crate::check_request())
            .await
            .map(|_| true)
    }

    async fn query_payment(&self, order: &PaymentRequest) -> Result<Option<Notice>, PayError> {
        let resp = self
            .call(
                "alipay.trade.query",
                serde_json::json!({"out_trade_no": order.order_no}),
            )
            .await?;
        match (str_field(&resp, "code"), str_field(&resp, "sub_code")) {
            ("10000", _) => {}
            (_, "ACQ.TRADE_NOT_EXIST") => return Ok(None),
            (code, sub) => {
                return Err(PayError::Gateway(format!(
                    "alipay trade.query: {code} {sub} {}",
                    str_field(&resp, "sub_msg")
                )))
            }
        }
        if str_field(&resp, "out_trade_no") != order.order_no {
            return Err(PayError::Gateway(
                "alipay trade.query answered for another order".into(),
            ));
        }
        let total = str_field(&resp, "total_amount");
        let amount = parse_yuan(total).ok_or_else(|| {
            PayError::Gateway(format!("alipay trade.query: total_amount {total:?}"))
        })?;
        let status = str_field(&resp, "trade_status").to_string();
        Ok(Some(Notice {
            order_no: order.order_no.clone(),
            trade_no: str_field(&resp, "trade_no").to_string(),
            amount,
            currency: "CNY".into(),
            paid: matches!(status.as_str(), "TRADE_SUCCESS" | "TRADE_FINISHED"),
            status,
            raw: resp.to_string(),
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
    Reply {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        body: "success".into(),
    }
}

/// Alipay retries anything but the exact word `success`; the 400 only
/// makes rejections stand out in access logs.
pub(crate) fn failure_reply(_reason: &str) -> Reply {
    Reply {
        status: 400,
        content_type: "text/plain; charset=utf-8",
        body: "fail".into(),
    }
}

#[cfg(test)]
mod tests;

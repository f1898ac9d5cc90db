//! WeChat Pay API v3 (微信支付 APIv3), Native payments (a `code_url` the
//! buyer scans). Signatures and the resource cipher live in `crypto`.

mod crypto;

use async_trait::async_trait;
use rsa::pkcs1v15::{SigningKey, VerifyingKey};
use rsa::sha2::Sha256;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::registry::ChannelContext;
use crate::rsa_keys::{KeyError, KeySource};
use crate::{
    Channel, Notice, Notification, PayError, PaymentRequest, PaymentStart, Rejection, Reply,
};
use crypto::{Authorizer, PlatformVerifier, Resource};

pub use crypto::{PROBE_PREFIX, TOLERANCE_SECS};

pub const NAME: &str = "wechatpay";
/// WeChat Pay caps `description` at 127 bytes.
const MAX_DESCRIPTION: usize = 127;

/// `[channels.wechatpay]` (API.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatpayConfig {
    pub gateway: String,
    pub mchid: String,
    pub appid: String,
    pub apiv3_key: String,
    pub merchant_serial: String,
    #[serde(default)]
    pub merchant_private_key_file: Option<String>,
    /// The PEM itself (the admin panel), instead of the file.
    #[serde(default)]
    pub merchant_private_key: Option<String>,
    pub platform_serial: String,
    #[serde(default)]
    pub platform_public_key_file: Option<String>,
    #[serde(default)]
    pub platform_public_key: Option<String>,
}

pub struct Wechatpay {
    gateway: String,
    mchid: String,
    appid: String,
    apiv3_key: [u8; 32],
    merchant_serial: String,
    merchant_key: SigningKey<Sha256>,
    platform_serial: String,
    platform_key: VerifyingKey<Sha256>,
    notify_url: String,
    http: reqwest::Client,
}

/// A transaction as WeChat Pay describes it, in a callback's decrypted
/// resource and in the query answer alike.
#[derive(Debug, Deserialize)]
struct Transaction {
    appid: String,
    mchid: String,
    out_trade_no: String,
    /// Absent until the buyer has paid.
    #[serde(default)]
    transaction_id: Option<String>,
    trade_state: String,
    amount: Option<Amount>,
}

#[derive(Debug, Deserialize)]
struct Amount {
    /// Fen, the order's own minor unit.
    total: i64,
    currency: String,
}

/// A refund's resource (`REFUND.SUCCESS`, `REFUND.ABNORMAL`,
/// `REFUND.CLOSED`): no appid, no trade state, and an amount without a
/// currency.
#[derive(Debug, Deserialize)]
struct Refund {
    mchid: String,
    out_trade_no: String,
    #[serde(default)]
    refund_id: String,
    refund_status: String,
    amount: RefundAmount,
}

#[derive(Debug, Deserialize)]
struct RefundAmount {
    /// The order's total, in fen.
    total: i64,
    /// What was refunded, in fen.
    refund: i64,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    id: String,
    #[serde(default)]
    event_type: String,
    resource: Resource,
}

impl Wechatpay {
    pub fn new(cfg: WechatpayConfig, ctx: &ChannelContext) -> Result<Self, PayError> {
        let config_err = |m: String| PayError::Config(format!("[channels.wechatpay] {m}"));
        for (field, value) in [
            ("gateway", &cfg.gateway),
            ("mchid", &cfg.mchid),
            ("appid", &cfg.appid),
            ("merchant_serial", &cfg.merchant_serial),
            ("platform_serial", &cfg.platform_serial),
        ] {
            if value.trim().is_empty() {
                return Err(config_err(format!("{field} is empty")));
            }
        }
        let apiv3_key: [u8; 32] = cfg
            .apiv3_key
            .as_bytes()
            .try_into()
            .map_err(|_| config_err("apiv3_key must be exactly 32 bytes".into()))?;
        let key_err = |e: KeyError| config_err(e.to_string());
        let merchant_key = KeySource {
            what: "merchant_private_key",
            file: cfg.merchant_private_key_file.as_deref(),
            pem: cfg.merchant_private_key.as_deref(),
        }
        .private_key(ctx)
        .map_err(key_err)?;
        let platform_key = KeySource {
            what: "platform_public_key",
            file: cfg.platform_public_key_file.as_deref(),
            pem: cfg.platform_public_key.as_deref(),
        }
        .public_key(ctx)
        .map_err(key_err)?;
        Ok(Self {
            gateway: cfg.gateway.trim_end_matches('/').to_string(),
            mchid: cfg.mchid,
            appid: cfg.appid,
            apiv3_key,
            merchant_serial: cfg.merchant_serial,
            merchant_key,
            platform_serial: cfg.platform_serial.trim().to_string(),
            platform_key,
            notify_url: ctx.notify_url(NAME),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .build()
                .map_err(|e| config_err(format!("http client: {e}")))?,
        })
    }

    fn verifier(&self) -> PlatformVerifier<'_> {
        PlatformVerifier {
            serial: &self.platform_serial,
            key: &self.platform_key,
        }
    }

    /// One signed API call; the answer's status and body are returned only
    /// once its platform signature has been verified.
    async fn call(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<String>,
    ) -> Result<(u16, String), PayError> {
        let gw = |e: String| PayError::Gateway(format!("wechatpay {path_and_query}: {e}"));
        let body_text = body.unwrap_or_default();
        let auth = Authorizer {
            mchid: &self.mchid,
            serial: &self.merchant_serial,
            key: &self.merchant_key,
        }
        .header(
            method.as_str(),
            path_and_query,
            &body_text,
            OffsetDateTime::now_utc().unix_timestamp(),
            &crypto::nonce(),
        );
        let mut req = self
            .http
            .request(method, format!("{}{path_and_query}", self.gateway))
            .header("Authorization", auth)
            .header("Accept", "application/json");
        if !body_text.is_empty() {
            req = req
                .header("Content-Type", "application/json")
                .body(body_text);
        }
        let res = req.send().await.map_err(|e| gw(e.to_string()))?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.map_err(|e| gw(e.to_string()))?;
        self.verifier()
            .verify(
                |name| headers.get(name).and_then(|v| v.to_str().ok()),
                text.as_bytes(),
                OffsetDateTime::now_utc().unix_timestamp(),
            )
            // The unverified body is only shown to the operator: gateway
            // front ends answer some errors (401, 5xx) without signing them.
            .map_err(|e| {
                gw(format!(
                    "answer ({status}) not trusted: {e}; it said: {}",
                    truncate_bytes(&text, 300)
                ))
            })?;
        Ok((status, text))
    }

    /// The order number a callback claims, read only to file a rejection
    /// under it: it sits inside the encrypted resource.
    fn claimed_order_no(&self, body: &[u8]) -> Option<String> {
        #[derive(Deserialize)]
        struct Named {
            out_trade_no: String,
        }
        let env: Envelope = serde_json::from_slice(body).ok()?;
        let plain = crypto::decrypt(&self.apiv3_key, &env.resource).ok()?;
        let named: Named = serde_json::from_str(&plain).ok()?;
        Some(named.out_trade_no).filter(|o| !o.is_empty() && o.len() <= 64)
    }

    /// A refund of this merchant's is no payment: a notice that changes
    /// nothing but the order's timeline, acknowledged so that WeChat Pay
    /// stops retrying (API.md). It was refused as a malformed transaction,
    /// and retried by the gateway for a day (a payment audit).
    fn refund_notice(&self, refund: Refund, raw: String) -> Result<Notice, String> {
        if refund.mchid != self.mchid {
            return Err(format!(
                "mchid {} is not this shop's ({})",
                refund.mchid, self.mchid
            ));
        }
        if refund.out_trade_no.is_empty() {
            return Err("missing out_trade_no".into());
        }
        Ok(Notice {
            order_no: refund.out_trade_no,
            trade_no: refund.refund_id,
            amount: refund.amount.total,
            currency: String::new(),
            paid: false,
            status: format!(
                "refund {} of {} fen",
                refund.refund_status, refund.amount.refund
            ),
            raw,
        })
    }

    /// Checks the transaction is this merchant's and turns it into a notice.
    fn notice(&self, tx: Transaction, raw: String) -> Result<Notice, String> {
        if tx.mchid != self.mchid {
            return Err(format!(
                "mchid {} is not this shop's ({})",
                tx.mchid, self.mchid
            ));
        }
        if tx.appid != self.appid {
            return Err(format!(
                "appid {} is not this shop's ({})",
                tx.appid, self.appid
            ));
        }
        if tx.out_trade_no.is_empty() {
            return Err("missing out_trade_no".into());
        }
        let paid = tx.trade_state == "SUCCESS";
        let (amount, currency) = match tx.amount {
            Some(a) => (a.total, a.currency),
            None => return Err("missing amount".into()),
        };
        let trade_no = tx.transaction_id.unwrap_or_default();
        if paid && trade_no.is_empty() {
            return Err("a SUCCESS transaction without transaction_id".into());
        }
        Ok(Notice {
            order_no: tx.out_trade_no,
            trade_no,
            amount,
            currency,
            paid,
            status: tx.trade_state,
            raw,
        })
    }
}

#[async_trait]
impl Channel for Wechatpay {
    /// Native orders answer with a `weixin://` code URL for the phone.
    fn scan_to_pay(&self) -> bool {
        true
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
                "wechatpay native collects CNY only, not {} {}",
                req.amount, req.currency
            )));
        }
        let body = serde_json::json!({
            "appid": self.appid,
            "mchid": self.mchid,
            "description": truncate_bytes(&req.subject, MAX_DESCRIPTION),
            "out_trade_no": req.order_no,
            "notify_url": self.notify_url,
            "amount": {"total": req.amount, "currency": "CNY"},
        });
        let path = "/v3/pay/transactions/native";
        let (status, text) = self
            .call(reqwest::Method::POST, path, Some(body.to_string()))
            .await?;
        #[derive(Deserialize)]
        struct Answer {
            code_url: String,
        }
        match serde_json::from_str::<Answer>(&text) {
            Ok(a) if status == 200 && !a.code_url.is_empty() => Ok(PaymentStart {
                pay_url: a.code_url,
                reference: None,
            }),
            _ => Err(PayError::Gateway(format!(
                "wechatpay native order refused ({status}): {}",
                truncate_bytes(&text, 300)
            ))),
        }
    }

    fn verify_notification(&self, n: &Notification, now_secs: i64) -> Result<Notice, Rejection> {
        let reject = |reason: String| Rejection::new(self.claimed_order_no(&n.body), reason);
        self.verifier()
            .verify(|name| n.header(name), &n.body, now_secs)
            .map_err(|e| reject(e.to_string()))?;
        let env: Envelope = serde_json::from_slice(&n.body)
            .map_err(|e| reject(format!("malformed callback body: {e}")))?;
        let plain =
            crypto::decrypt(&self.apiv3_key, &env.resource).map_err(|e| reject(e.to_string()))?;
        // Kept for audit: the callback's ids and the decrypted resource;
        // the APIv3 key and ciphertext are not.
        let raw = |key: &str| {
            serde_json::json!({
                "id": env.id,
                "event_type": env.event_type,
                key: serde_json::from_str::<serde_json::Value>(&plain).unwrap_or_default(),
            })
            .to_string()
        };
        if env.event_type.starts_with("REFUND.") {
            let refund: Refund = serde_json::from_str(&plain)
                .map_err(|e| reject(format!("malformed refund: {e}")))?;
            return self.refund_notice(refund, raw("refund")).map_err(reject);
        }
        let tx: Transaction = serde_json::from_str(&plain)
            .map_err(|e| reject(format!("malformed transaction: {e}")))?;
        self.notice(tx, raw("transaction")).map_err(reject)
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
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={}",
            form_urlencoded::byte_serialize(order.order_no.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(self.mchid.as_bytes()).collect::<String>(),
        );
        let (status, text) = self.call(reqwest::Method::GET, &path, None).await?;
        #[derive(Deserialize)]
        struct ErrorAnswer {
            code: String,
        }
        if status == 404
            && serde_json::from_str::<ErrorAnswer>(&text).is_ok_and(|e| e.code == "ORDER_NOT_EXIST")
        {
            return Ok(None);
        }
        if status != 200 {
            return Err(PayError::Gateway(format!(
                "wechatpay query ({status}): {}",
                truncate_bytes(&text, 300)
            )));
        }
        let tx: Transaction = serde_json::from_str(&text)
            .map_err(|e| PayError::Gateway(format!("wechatpay query: {e}")))?;
        if tx.out_trade_no != order.order_no {
            return Err(PayError::Gateway(
                "wechatpay query answered for another order".into(),
            ));
        }
        self.notice(tx, text.clone())
            .map(Some)
            .map_err(|e| PayError::Gateway(format!("wechatpay query: {e}")))
    }

    fn success_reply(&self) -> Reply {
        success_reply()
    }

    fn failure_reply(&self, reason: &str) -> Reply {
        failure_reply(reason)
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn truncate_bytes(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// WeChat Pay takes any 2xx without a body as "received".
pub(crate) fn success_reply() -> Reply {
    Reply {
        status: 204,
        content_type: "application/json",
        body: String::new(),
    }
}

/// WeChat Pay retries on 4xx/5xx and logs the `{"code":"FAIL"}` message.
pub(crate) fn failure_reply(reason: &str) -> Reply {
    Reply {
        status: 400,
        content_type: "application/json",
        body: serde_json::json!({"code": "FAIL", "message": reason}).to_string(),
    }
}

#[cfg(test)]
mod tests;

//! Payment channels. Each gateway is one module behind the `Channel` trait:
//! start a payment, verify a notification, and answer it the way the gateway
//! expects. Nothing here touches the database: the web layer compares a
//! verified notice with the order and records the outcome.

pub mod alipay;
pub mod epay;
pub mod epusdt;
mod md5_sign;
pub mod registry;
mod rsa_keys;
pub mod sandbox;
pub mod stripe;
pub mod timestamped_hmac;
pub mod wechatpay;

pub use registry::{build_channel, ChannelContext};

use async_trait::async_trait;

/// What Kami asks a gateway to collect.
#[derive(Debug, Clone)]
pub struct PaymentRequest {
    pub order_no: String,
    pub amount: i64,
    pub currency: String,
    pub subject: String,
    pub notify_url: String,
    /// `{public_url}/pay/{channel}/return`, without a query string.
    pub return_url: String,
    /// The gateway's own id for this payment, from `PaymentStart` (a Stripe
    /// Checkout Session id); what `query_payment` asks about when the
    /// gateway cannot be asked by order number.
    pub reference: Option<String>,
}

/// Where to send the buyer to pay.
#[derive(Debug, Clone)]
pub struct PaymentStart {
    pub pay_url: String,
    /// The gateway's id for the payment, when it gives one.
    pub reference: Option<String>,
}

/// A notification as it arrived, before anything is trusted.
#[derive(Debug, Clone, Default)]
pub struct Notification {
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Notification {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A verified notification's claim about a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub order_no: String,
    pub trade_no: String,
    pub amount: i64,
    pub currency: String,
    /// True only for a completed payment; anything else is recorded and
    /// acknowledged but changes nothing.
    pub paid: bool,
    /// The gateway's own status word, for the timeline.
    pub status: String,
    /// The notification with secrets removed, kept for audit.
    pub raw: String,
}

/// Why a notification was not accepted. The order number is whatever the
/// notification claimed, so the rejection can be recorded on that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub order_no: Option<String>,
    pub reason: String,
}

impl Rejection {
    pub fn new(order_no: Option<String>, reason: impl Into<String>) -> Self {
        Self {
            order_no,
            reason: reason.into(),
        }
    }
}

/// The gateway's own way of saying "got it" or "try again".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// The HTTP client every gateway uses: rustls, and timeouts short enough
/// that a hung gateway fails a buyer's page quickly (and counts against its
/// circuit breaker) instead of holding a connection open.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(15))
        .user_agent(concat!("kami/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client with only timeouts set always builds")
}

/// A transport error without its URL: some gateway URLs carry the merchant
/// key in the query string (EPay's api.php), and errors get logged.
pub fn http_error(e: reqwest::Error) -> PayError {
    PayError::Unreachable(e.without_url().to_string())
}

/// The made-up order number a credential check asks the gateway about: one
/// no real order can have (order numbers are digits), so the answer is
/// "no such payment" whenever the gateway accepted the credentials.
pub const CHECK_ORDER_NO: &str = "KAMI-CREDENTIAL-CHECK";

/// A request for `CHECK_ORDER_NO`, for `query_payment`-based checks.
pub fn check_request() -> PaymentRequest {
    PaymentRequest {
        order_no: CHECK_ORDER_NO.into(),
        amount: 1,
        currency: "CNY".into(),
        subject: "credential check".into(),
        notify_url: String::new(),
        return_url: String::new(),
        reference: None,
    }
}

impl Reply {
    /// A plain-text reply (`success`, `ok`, `fail`: the EPay-style gateways).
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
        }
    }

    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.to_string(),
        }
    }
}

/// A decimal yuan amount from a Chinese gateway (`"9.9"`, `"10.00"`) in fen.
pub fn parse_yuan(raw: &str) -> Option<i64> {
    kami_core::Currency::parse("CNY").ok()?.parse_decimal(raw)
}

#[derive(Debug, thiserror::Error)]
pub enum PayError {
    #[error("channel is not configured: {0}")]
    NotConfigured(&'static str),
    #[error("gateway error: {0}")]
    Gateway(String),
    /// The gateway could not be reached at all (connection, DNS, timeout).
    #[error("gateway unreachable: {0}")]
    Unreachable(String),
    #[error("payment channel configuration: {0}")]
    Config(String),
}

/// `Channel::collects` of the gateways that take yuan only (EPay,
/// Alipay, WeChat Pay Native, epusdt).
pub fn collects_cny(currency: &str) -> bool {
    currency.eq_ignore_ascii_case("CNY")
}

#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// The name used in `POST /api/v1/orders` and `/pay/{channel}/…`.
    fn name(&self) -> &'static str;
    async fn create_payment(&self, req: &PaymentRequest) -> Result<PaymentStart, PayError>;
    /// Verifies the signature before reading anything else, then parses.
    fn verify_notification(&self, n: &Notification, now_secs: i64) -> Result<Notice, Rejection>;
    /// Asks the gateway what became of the payment for `order_no`
    /// (reconciliation). `Ok(None)` when the gateway knows of no payment or
    /// the channel cannot be queried. The answer is trusted only as far as
    /// the gateway's own response signature allows.
    async fn query_payment(&self, _order: &PaymentRequest) -> Result<Option<Notice>, PayError> {
        Ok(None)
    }
    /// One real, signed round trip to the gateway that proves it accepts
    /// this channel's credentials (the admin panel's "Test" button): asks
    /// about `CHECK_ORDER_NO`, which cannot exist. `Ok(false)` when the
    /// gateway offers no call that could check them (nothing was sent).
    async fn check_credentials(&self) -> Result<bool, PayError> {
        Ok(false)
    }
    /// True when `create_payment`'s URL is meant to be scanned by the buyer's
    /// phone (WeChat Pay Native, Alipay precreate), not opened: the pay page
    /// then shows it as a QR code instead of redirecting to it.
    fn scan_to_pay(&self) -> bool {
        false
    }
    /// Whether this channel can take a payment in `currency` (an ISO code).
    /// Asked before an order is placed on it and before its payment is
    /// started: a price the gateway cannot collect is the buyer's choice
    /// to change (422), not a failure of the gateway, which would count
    /// against the channel's breaker and so let any buyer switch the
    /// channel off for everyone.
    fn collects(&self, _currency: &str) -> bool {
        true
    }
    fn success_reply(&self) -> Reply;
    fn failure_reply(&self, reason: &str) -> Reply;
    /// The answer when Kami cannot take a notification now (`code`:
    /// `overloaded` when it shed it, `unavailable` when its database
    /// failed): 503, so that the gateway retries, in the gateway's own
    /// failure format.
    fn busy_reply(&self, code: &'static str, message: &str) -> Reply {
        let _ = code;
        Reply {
            status: 503,
            ..self.failure_reply(message)
        }
    }
}

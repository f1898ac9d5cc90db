//! Payment channels. Each gateway is one module behind the `Channel` trait:
//! start a payment, verify a notification, and answer it the way the gateway
//! expects. Nothing here touches the database: the web layer compares a
//! verified notice with the order and records the outcome.

pub mod alipay;
pub mod registry;
mod rsa_keys;
pub mod sandbox;
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
    pub return_url: String,
}

/// Where to send the buyer to pay.
#[derive(Debug, Clone)]
pub struct PaymentStart {
    pub pay_url: String,
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

#[derive(Debug, thiserror::Error)]
pub enum PayError {
    #[error("channel is not configured: {0}")]
    NotConfigured(&'static str),
    #[error("gateway error: {0}")]
    Gateway(String),
    #[error("payment channel configuration: {0}")]
    Config(String),
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
    fn success_reply(&self) -> Reply;
    fn failure_reply(&self, reason: &str) -> Reply;
}

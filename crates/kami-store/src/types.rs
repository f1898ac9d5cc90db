use kami_core::pricing::{CouponKind, WholesaleTier};
use kami_core::{Millis, OrderStatus, StockDisplay};
use serde::{Deserialize, Serialize};

pub const DEFAULT_MERCHANT: i64 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Category {
    pub id: i64,
    pub name: String,
    pub sort_order: i64,
    pub visible: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Product {
    pub id: i64,
    pub category_id: Option<i64>,
    pub category: Option<String>,
    pub name: String,
    pub description: String,
    pub price: i64,
    pub currency: String,
    pub min_quantity: i64,
    pub max_quantity: i64,
    pub per_buyer_limit: Option<i64>,
    pub sale_starts_at: Option<Millis>,
    pub sale_ends_at: Option<Millis>,
    pub visible: bool,
    pub low_stock_threshold: i64,
    /// `None` follows the shop's default.
    pub stock_display: Option<StockDisplay>,
    pub sort_order: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Available codes (not reserved, not sold).
    pub stock: i64,
    /// Lower unit prices from a quantity on (validated on the way in).
    pub wholesale_tiers: Vec<WholesaleTier>,
    /// Most codes one client address may hold of the product.
    pub per_ip_limit: Option<i64>,
}

impl Product {
    /// What placing an order needs of this product.
    pub fn sale_terms(&self) -> SaleTerms {
        SaleTerms {
            id: self.id,
            price: self.price,
            currency: self.currency.clone(),
            min_quantity: self.min_quantity,
            max_quantity: self.max_quantity,
            per_buyer_limit: self.per_buyer_limit,
            sale_starts_at: self.sale_starts_at,
            sale_ends_at: self.sale_ends_at,
            visible: self.visible,
            wholesale_tiers: self.wholesale_tiers.clone(),
            per_ip_limit: self.per_ip_limit,
        }
    }
}

/// What placing an order needs to know about a product: no stock count,
/// since counting a million codes per order would cost more than the order.
#[derive(Debug, Clone)]
pub struct SaleTerms {
    pub id: i64,
    pub price: i64,
    pub currency: String,
    pub min_quantity: i64,
    pub max_quantity: i64,
    pub per_buyer_limit: Option<i64>,
    pub sale_starts_at: Option<Millis>,
    pub sale_ends_at: Option<Millis>,
    pub visible: bool,
    pub wholesale_tiers: Vec<WholesaleTier>,
    pub per_ip_limit: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct NewProduct {
    pub category_id: Option<i64>,
    pub name: String,
    pub description: String,
    pub price: i64,
    pub currency: String,
    pub min_quantity: i64,
    pub max_quantity: i64,
    pub per_buyer_limit: Option<i64>,
    pub sale_starts_at: Option<Millis>,
    pub sale_ends_at: Option<Millis>,
    pub visible: bool,
    pub low_stock_threshold: i64,
    pub wholesale_tiers: Vec<WholesaleTier>,
    pub per_ip_limit: Option<i64>,
    pub stock_display: Option<StockDisplay>,
}

/// A partial update: `None` leaves a field alone; `Some(None)` clears a
/// nullable one.
#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    pub category_id: Option<Option<i64>>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<i64>,
    pub currency: Option<String>,
    pub min_quantity: Option<i64>,
    pub max_quantity: Option<i64>,
    pub per_buyer_limit: Option<Option<i64>>,
    pub sale_starts_at: Option<Option<Millis>>,
    pub sale_ends_at: Option<Option<Millis>>,
    pub visible: Option<bool>,
    pub low_stock_threshold: Option<i64>,
    pub wholesale_tiers: Option<Vec<WholesaleTier>>,
    pub per_ip_limit: Option<Option<i64>>,
    pub stock_display: Option<Option<StockDisplay>>,
}

/// How the order batches since the start were written (`/metrics`): a
/// drop's should nearly all take the first path of their backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderBatchPaths {
    /// PostgreSQL: plain orders in one round trip (`kami_reserve_orders`).
    pub one_trip: u64,
    /// SQLite: on the writer thread.
    pub writer_thread: u64,
    /// Counted and claimed in one transaction of several statements.
    pub counted: u64,
    /// One transaction per order: a lone order the paths above did not
    /// take, or a batch they gave back (a short claim, an error).
    pub one_by_one: u64,
}

/// An import making codes sellable (`Store::restocks_since`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restock {
    /// Its batch (`card_batches.id`).
    pub batch_id: i64,
    pub product_id: i64,
    /// When its codes became sellable; `None` while it is still flipping
    /// them, a chunk at a time.
    pub finished_at: Option<Millis>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct StockCounts {
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
}

/// A code ready for storage: sealed, with its keyed fingerprint.
#[derive(Debug, Clone)]
pub struct NewCard {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub key_id: i64,
    pub fingerprint: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct SealedCard {
    pub id: i64,
    pub product_id: i64,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub key_id: i64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ImportCounts {
    pub imported: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

/// What `Store::reap_stale_imports` ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Imports cut off while staging: nothing of them was sellable, and
    /// their staged codes are gone.
    pub aborted: u64,
    /// The products of imports cut off while their codes were being made
    /// sellable, whose rest is now sellable too: their stock changed.
    pub finished: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order_no: String,
    pub product_id: i64,
    pub quantity: i64,
    pub unit_price: i64,
    /// Taken off `unit_price * quantity` by the coupon; `amount` is after it.
    pub discount: i64,
    pub amount: i64,
    pub currency: String,
    pub email: String,
    pub query_password_hash: Option<Vec<u8>>,
    pub access_token_hash: Vec<u8>,
    pub buyer_ip: Option<String>,
    pub channel: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// Enforced atomically with the reservation when set.
    pub per_buyer_limit: Option<i64>,
    /// Enforced on `buyer_ip` (by `ip_limit_key`) like `per_buyer_limit`.
    pub per_ip_limit: Option<i64>,
    /// The coupon to count a use of, atomically with the reservation: the
    /// order is refused (`CouponUsedUp`) when its cap is reached meanwhile.
    pub coupon_id: Option<i64>,
    /// Stored in the same transaction as the order, so a retried request
    /// can never create a second order.
    pub idempotency: Option<IdempotencyRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOrderError {
    SoldOut,
    InsufficientStock {
        available: i64,
    },
    LimitExceeded,
    /// The coupon reached its cap or expired between the quote and the write.
    CouponUsedUp,
    /// The idempotency key was stored by a concurrent request first.
    IdempotencyKeyTaken,
}

#[derive(Debug, Clone, Serialize)]
pub struct Order {
    pub id: i64,
    pub order_no: String,
    pub product_id: i64,
    pub quantity: i64,
    pub unit_price: i64,
    pub discount: i64,
    pub amount: i64,
    pub currency: String,
    pub email: String,
    #[serde(skip)]
    pub access_token_hash: Vec<u8>,
    #[serde(skip)]
    pub has_query_password: bool,
    pub buyer_ip: Option<String>,
    pub channel: String,
    pub status: OrderStatusField,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub paid_at: Option<Millis>,
    pub delivered_at: Option<Millis>,
    pub coupon_id: Option<i64>,
    /// Limits the quantity was counted against (`LIMIT_HOLD_*`).
    #[serde(skip)]
    pub limit_holds: i64,
}

/// `Order::limit_holds`: counted against the per-email limit.
pub const LIMIT_HOLD_EMAIL: i64 = 1;
/// `Order::limit_holds`: counted against the per-IP limit.
pub const LIMIT_HOLD_IP: i64 = 2;
/// `Order::limit_holds`: the per-email hold is keyed by the mailbox
/// (`kami_core::limits::email_limit_key`). Orders placed before that key
/// held under the address as stored, and give back to that row.
pub const LIMIT_HOLD_MAILBOX: i64 = 4;

impl NewOrder {
    /// The order alone asks for more than a per-email or per-IP limit allows.
    pub fn above_a_limit(&self) -> bool {
        let over = |limit: Option<i64>| limit.is_some_and(|l| self.quantity > l);
        over(self.per_buyer_limit) || over(self.per_ip_limit)
    }

    /// The limits `take_holds` counts this order against when it is granted.
    pub fn limit_holds(&self) -> i64 {
        let mut holds = 0;
        if self.per_buyer_limit.is_some() {
            holds |= LIMIT_HOLD_EMAIL | LIMIT_HOLD_MAILBOX;
        }
        if self.per_ip_limit.is_some() && self.buyer_ip.is_some() {
            holds |= LIMIT_HOLD_IP;
        }
        holds
    }
}

/// `OrderStatus` as stored; kept a newtype so `Order` serialises cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderStatusField(pub OrderStatus);

impl Serialize for OrderStatusField {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    pub email: Option<String>,
    pub product_id: Option<i64>,
    pub limit: i64,
    /// Orders with an id below this (newest first paging).
    pub before_id: Option<i64>,
    /// Created at or after this time.
    pub created_from: Option<Millis>,
    /// Created strictly before this time.
    pub created_before: Option<Millis>,
}

#[derive(Debug, Clone)]
pub struct NewPayment {
    pub order_id: i64,
    pub channel: String,
    pub trade_no: String,
    pub amount: i64,
    pub currency: String,
    /// The verified notification, secrets redacted, kept for audit.
    pub raw: String,
    pub received_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayOutcome {
    /// The order is delivered (now, or by a late payment re-reserving codes).
    Delivered,
    /// Paid, but no codes were left: waits for a restock or an operator.
    PaidUnfulfilled,
    /// This payment was processed before; nothing changed.
    Duplicate,
    /// The gateway's trade number is already recorded for another order
    /// (it names one payment): nothing changed; the notification is refused.
    TradeNoTaken,
    /// Another payment for an order already paid: recorded for the operator
    /// to refund; nothing else changed.
    AlreadyPaid,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub order_id: Option<i64>,
    pub order_no: Option<String>,
    pub kind: String,
    pub detail: String,
    pub at: Millis,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrderEvent {
    pub id: i64,
    pub order_no: Option<String>,
    pub kind: String,
    pub detail: String,
    pub created_at: Millis,
}

/// The `status_code` of a key whose request is still running: taken
/// first, so that a retry arriving meanwhile is told so instead of running
/// the request twice, and given its response when the request ends.
pub const IDEMPOTENCY_IN_FLIGHT: i64 = 0;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub scope: String,
    pub key: String,
    pub request_hash: Vec<u8>,
    pub status_code: i64,
    /// Sealed response body.
    pub response: Vec<u8>,
    pub response_nonce: Vec<u8>,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub payload: String,
    pub run_at: Millis,
    /// At most one queued job per key (periodic jobs, per-product work).
    pub dedupe_key: Option<String>,
    pub max_attempts: i64,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    pub attempts: i64,
    pub max_attempts: i64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct JobCounts {
    pub queued: i64,
    pub dead: i64,
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub scopes: String,
}

/// An order handed to a gateway (the buyer was sent to pay there).
#[derive(Debug, Clone)]
pub struct NewPaymentAttempt {
    pub order_id: i64,
    pub order_no: String,
    pub channel: String,
    pub reference: Option<String>,
    pub pay_url: String,
    pub created_at: Millis,
    /// When reconciliation first asks the gateway about it.
    pub first_check_at: Millis,
}

#[derive(Debug, Clone)]
pub struct PaymentAttempt {
    pub id: i64,
    pub order_id: i64,
    pub order_no: String,
    pub channel: String,
    pub reference: Option<String>,
    pub pay_url: String,
    pub created_at: Millis,
    /// How often reconciliation has asked the gateway so far.
    pub checks: i64,
}

/// A stored coupon: the domain type, which carries everything the table does.
pub type Coupon = kami_core::pricing::CouponTerms;

#[derive(Debug, Clone)]
pub struct NewCoupon {
    pub code: String,
    pub kind: CouponKind,
    pub value: i64,
    pub currency: Option<String>,
    pub product_id: Option<i64>,
    pub max_uses: Option<i64>,
    pub expires_at: Option<Millis>,
}

/// A payment channel configured in the admin panel: its credentials sealed
/// with the master key (context `channel_context(name)`), and whether new
/// orders may use it.
#[derive(Debug, Clone)]
pub struct ChannelConfigRow {
    pub name: String,
    pub enabled: bool,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub key_id: i64,
    pub updated_at: Millis,
}

//! What a buyer pays: the unit price for the quantity (wholesale tiers), then
//! a coupon's discount. Pure arithmetic on minor units; the store enforces a
//! coupon's cap and expiry again in the order's transaction.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Millis;

/// Most tiers a product may have; a price list, not a spreadsheet.
pub const MAX_TIERS: usize = 10;

/// From `min_quantity` codes on, each costs `price`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WholesaleTier {
    pub min_quantity: i64,
    pub price: i64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PricingError {
    #[error(
        "wholesale_tiers must be a list of at most {MAX_TIERS} {{min_quantity, price}} objects"
    )]
    TierShape,
    #[error("each tier's min_quantity must be at least 2 and larger than the previous tier's")]
    TierOrder,
    #[error(
        "each tier's price must be at least 1 and below the base price and the previous tier's"
    )]
    TierPrice,
}

/// Checks tiers against the base price: quantities strictly increasing from
/// 2, prices positive and strictly falling. Returns them sorted as given.
pub fn validate_tiers(base_price: i64, tiers: &[WholesaleTier]) -> Result<(), PricingError> {
    if tiers.len() > MAX_TIERS {
        return Err(PricingError::TierShape);
    }
    let (mut last_q, mut last_p) = (1, base_price);
    for t in tiers {
        if t.min_quantity <= last_q {
            return Err(PricingError::TierOrder);
        }
        if t.price < 1 || t.price >= last_p {
            return Err(PricingError::TierPrice);
        }
        (last_q, last_p) = (t.min_quantity, t.price);
    }
    Ok(())
}

/// Parses tiers as stored (a JSON list); anything unreadable counts as none,
/// since the base price is always a price the merchant agreed to.
pub fn parse_tiers(json: &str) -> Vec<WholesaleTier> {
    serde_json::from_str(json).unwrap_or_default()
}

/// The unit price for `quantity`: the tier with the largest `min_quantity`
/// not above it, else the base price.
pub fn unit_price(base_price: i64, tiers: &[WholesaleTier], quantity: i64) -> i64 {
    tiers
        .iter()
        .filter(|t| t.min_quantity <= quantity)
        .max_by_key(|t| t.min_quantity)
        .map_or(base_price, |t| t.price)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CouponKind {
    /// `value` minor units off the order, in the coupon's currency.
    Fixed,
    /// `value` percent off the order, 1..=100.
    Percent,
}

impl CouponKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CouponKind::Fixed => "fixed",
            CouponKind::Percent => "percent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fixed" => Some(CouponKind::Fixed),
            "percent" => Some(CouponKind::Percent),
            _ => None,
        }
    }
}

/// Longest coupon code accepted.
pub const MAX_COUPON_CODE: usize = 32;

/// Normalises a coupon code as typed by a buyer: trimmed, upper case, and
/// only letters, digits, `-` and `_` (so a code can never carry markup).
pub fn normalize_coupon_code(raw: &str) -> Option<String> {
    let code = raw.trim().to_ascii_uppercase();
    let ok = !code.is_empty()
        && code.len() <= MAX_COUPON_CODE
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(code)
}

/// A coupon as stored (`kami_store::Coupon`) and as the order path checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponTerms {
    pub id: i64,
    pub code: String,
    pub kind: CouponKind,
    pub value: i64,
    pub currency: Option<String>,
    pub product_id: Option<i64>,
    pub max_uses: Option<i64>,
    /// Orders holding the coupon now: pending or paid (an expired order
    /// gives its use back).
    pub used: i64,
    pub expires_at: Option<Millis>,
    pub disabled: bool,
    pub created_at: Millis,
}

/// Why a coupon does not apply, in words a buyer understands.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CouponRefusal {
    #[error("unknown coupon")]
    Unknown,
    #[error("this coupon has expired")]
    Expired,
    #[error("this coupon has been used up")]
    UsedUp,
    #[error("this coupon does not apply to this product")]
    OtherProduct,
    #[error("this coupon is for another currency")]
    OtherCurrency,
}

impl CouponRefusal {
    pub const ALL: [CouponRefusal; 5] = [
        CouponRefusal::Unknown,
        CouponRefusal::Expired,
        CouponRefusal::UsedUp,
        CouponRefusal::OtherProduct,
        CouponRefusal::OtherCurrency,
    ];

    /// A stable name for translations.
    pub fn key(self) -> &'static str {
        match self {
            CouponRefusal::Unknown => "unknown",
            CouponRefusal::Expired => "expired",
            CouponRefusal::UsedUp => "used_up",
            CouponRefusal::OtherProduct => "other_product",
            CouponRefusal::OtherCurrency => "other_currency",
        }
    }
}

impl CouponTerms {
    /// Whether the coupon applies to this product now (the cap is checked
    /// here for a friendly early answer, and again atomically by the store).
    pub fn check(&self, product_id: i64, currency: &str, now: Millis) -> Result<(), CouponRefusal> {
        if self.disabled {
            return Err(CouponRefusal::Unknown);
        }
        if self.expires_at.is_some_and(|e| now >= e) {
            return Err(CouponRefusal::Expired);
        }
        if self.max_uses.is_some_and(|m| self.used >= m) {
            return Err(CouponRefusal::UsedUp);
        }
        if self.product_id.is_some_and(|p| p != product_id) {
            return Err(CouponRefusal::OtherProduct);
        }
        if self.kind == CouponKind::Fixed && self.currency.as_deref() != Some(currency) {
            return Err(CouponRefusal::OtherCurrency);
        }
        Ok(())
    }

    /// The discount on `subtotal`. An order always costs at least one minor
    /// unit: no gateway takes a payment of zero, so a coupon worth more than
    /// the order (or 100 % off) leaves it at the smallest payable amount.
    pub fn discount(&self, subtotal: i64) -> i64 {
        let raw = match self.kind {
            CouponKind::Fixed => self.value,
            // Rounded down: the shop never gives more than it promised.
            CouponKind::Percent => {
                i64::try_from(i128::from(subtotal) * i128::from(self.value) / 100)
                    .unwrap_or(i64::MAX)
            }
        };
        raw.clamp(0, (subtotal - 1).max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(q: i64, p: i64) -> WholesaleTier {
        WholesaleTier {
            min_quantity: q,
            price: p,
        }
    }

    #[test]
    fn tiers_pick_the_largest_reached() {
        let t = [tier(5, 900), tier(10, 800)];
        assert_eq!(unit_price(1000, &t, 1), 1000);
        assert_eq!(unit_price(1000, &t, 4), 1000);
        assert_eq!(unit_price(1000, &t, 5), 900);
        assert_eq!(unit_price(1000, &t, 9), 900);
        assert_eq!(unit_price(1000, &t, 10), 800);
        assert_eq!(unit_price(1000, &t, 500), 800);
        assert_eq!(unit_price(1000, &[], 50), 1000);
    }

    #[test]
    fn tiers_are_validated() {
        assert!(validate_tiers(1000, &[tier(5, 900), tier(10, 800)]).is_ok());
        assert_eq!(
            validate_tiers(1000, &[tier(1, 900)]),
            Err(PricingError::TierOrder)
        );
        assert_eq!(
            validate_tiers(1000, &[tier(5, 900), tier(5, 800)]),
            Err(PricingError::TierOrder)
        );
        assert_eq!(
            validate_tiers(1000, &[tier(5, 1000)]),
            Err(PricingError::TierPrice)
        );
        assert_eq!(
            validate_tiers(1000, &[tier(5, 900), tier(10, 950)]),
            Err(PricingError::TierPrice)
        );
        assert_eq!(
            validate_tiers(1000, &[tier(5, 0)]),
            Err(PricingError::TierPrice)
        );
        let many: Vec<_> = (2..14).map(|q| tier(q, 1000 - q)).collect();
        assert_eq!(validate_tiers(1000, &many), Err(PricingError::TierShape));
        assert_eq!(parse_tiers("not json"), vec![]);
        assert_eq!(
            parse_tiers(r#"[{"min_quantity":3,"price":5}]"#),
            vec![tier(3, 5)]
        );
    }

    fn coupon(kind: CouponKind, value: i64) -> CouponTerms {
        CouponTerms {
            id: 1,
            code: "X".into(),
            kind,
            value,
            currency: Some("CNY".into()),
            product_id: None,
            max_uses: None,
            used: 0,
            expires_at: None,
            disabled: false,
            created_at: 0,
        }
    }

    #[test]
    fn discounts_never_make_an_order_free() {
        assert_eq!(coupon(CouponKind::Fixed, 300).discount(990), 300);
        assert_eq!(coupon(CouponKind::Fixed, 5000).discount(990), 989);
        assert_eq!(coupon(CouponKind::Percent, 10).discount(990), 99);
        assert_eq!(coupon(CouponKind::Percent, 15).discount(999), 149);
        assert_eq!(coupon(CouponKind::Percent, 100).discount(990), 989);
        assert_eq!(coupon(CouponKind::Percent, 100).discount(1), 0);
    }

    #[test]
    fn coupons_check_product_currency_expiry_and_cap() {
        let mut c = coupon(CouponKind::Fixed, 100);
        assert_eq!(c.check(7, "CNY", 0), Ok(()));
        assert_eq!(c.check(7, "USD", 0), Err(CouponRefusal::OtherCurrency));
        c.product_id = Some(8);
        assert_eq!(c.check(7, "CNY", 0), Err(CouponRefusal::OtherProduct));
        c.product_id = None;
        c.expires_at = Some(10);
        assert_eq!(c.check(7, "CNY", 10), Err(CouponRefusal::Expired));
        c.expires_at = None;
        c.max_uses = Some(2);
        c.used = 2;
        assert_eq!(c.check(7, "CNY", 0), Err(CouponRefusal::UsedUp));
        c.used = 0;
        c.disabled = true;
        assert_eq!(c.check(7, "CNY", 0), Err(CouponRefusal::Unknown));
        let p = coupon(CouponKind::Percent, 10);
        assert_eq!(p.check(7, "USD", 0), Ok(()));
    }

    #[test]
    fn coupon_codes_are_normalised() {
        assert_eq!(
            normalize_coupon_code("  spring-10 "),
            Some("SPRING-10".into())
        );
        assert_eq!(normalize_coupon_code("<script>"), None);
        assert_eq!(normalize_coupon_code(""), None);
        assert_eq!(normalize_coupon_code(&"A".repeat(33)), None);
    }
}

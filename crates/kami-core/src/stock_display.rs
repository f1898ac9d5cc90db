//! How the storefront shows a product's stock (issue 3). The JSON API always
//! gives the number; this only decides what buyers read on the pages.

/// A product's own choice, or the shop's default when it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StockDisplay {
    /// The number of available codes.
    #[default]
    Exact,
    /// "Plenty", "few" (at or below the low-stock threshold) or "sold out",
    /// so competitors and scalpers cannot read the count.
    Level,
    /// Nothing but "sold out" when there is none: the buy button says it.
    Hidden,
}

/// Few means at or below this when a product sets no low-stock threshold.
pub const DEFAULT_FEW: i64 = 10;

/// What the page says about the stock under `Level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockLevel {
    Plenty,
    Few,
    SoldOut,
}

impl StockDisplay {
    pub const ALL: [StockDisplay; 3] = [Self::Exact, Self::Level, Self::Hidden];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "exact" => Some(Self::Exact),
            "level" => Some(Self::Level),
            "hidden" => Some(Self::Hidden),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Level => "level",
            Self::Hidden => "hidden",
        }
    }
}

impl StockLevel {
    /// `low_stock_threshold` 0 means the product set none.
    pub fn of(stock: i64, low_stock_threshold: i64) -> Self {
        let few = if low_stock_threshold > 0 {
            low_stock_threshold
        } else {
            DEFAULT_FEW
        };
        match stock {
            s if s <= 0 => Self::SoldOut,
            s if s <= few => Self::Few,
            _ => Self::Plenty,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plenty => "plenty",
            Self::Few => "few",
            Self::SoldOut => "sold_out",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_its_own_names_only() {
        for d in StockDisplay::ALL {
            assert_eq!(StockDisplay::parse(d.as_str()), Some(d));
        }
        assert_eq!(StockDisplay::parse("Exact"), None);
        assert_eq!(StockDisplay::parse(""), None);
    }

    #[test]
    fn few_is_at_or_below_the_threshold_or_the_default() {
        assert_eq!(StockLevel::of(0, 5), StockLevel::SoldOut);
        assert_eq!(StockLevel::of(5, 5), StockLevel::Few);
        assert_eq!(StockLevel::of(6, 5), StockLevel::Plenty);
        assert_eq!(StockLevel::of(DEFAULT_FEW, 0), StockLevel::Few);
        assert_eq!(StockLevel::of(DEFAULT_FEW + 1, 0), StockLevel::Plenty);
    }
}

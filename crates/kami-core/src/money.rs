use std::fmt;

/// An ISO 4217 currency code. Amounts are always integers in the currency's
/// minor unit (fen for CNY, cents for USD); this type only knows how many
/// decimals that unit has, for display and for gateways that want decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CurrencyError {
    #[error("currency must be a three-letter ISO 4217 code")]
    Shape,
    /// Three letters, but no currency in ISO 4217's list (`XYZ`, `BTC`), or
    /// one of its units that is no money (`XXX`, `XAU`, `XTS`).
    #[error("currency {0} is not an ISO 4217 currency; use a code such as CNY or USD")]
    Unknown(String),
}

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, CurrencyError> {
        let raw = raw.trim();
        if raw.len() != 3 || !raw.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(CurrencyError::Shape);
        }
        let code = raw.to_ascii_uppercase();
        // Special units (precious metals, SDRs, the testing and "no
        // currency" codes) have no minor unit to count a price in.
        // Superseded currencies stay: ISO lists a successor as soon as one
        // is announced, while shops still price in the old one.
        match iso_currency::Currency::from_code(&code) {
            Some(c) if !c.is_special() && c.exponent().is_some() => Ok(Self(c)),
            _ => Err(CurrencyError::Unknown(code)),
        }
    }

    pub fn as_str(&self) -> &'static str {
        self.0.code()
    }

    /// Decimal places of the minor unit (ISO 4217 exponent).
    pub fn exponent(&self) -> u32 {
        // `parse` admits only currencies that have a minor unit.
        self.0.exponent().map_or(0, u32::from)
    }

    /// `990` CNY → `"9.90"`: the decimal form some gateways and pages use.
    pub fn format_decimal(&self, minor: i64) -> String {
        let exp = self.exponent();
        if exp == 0 {
            return minor.to_string();
        }
        let scale = 10i64.pow(exp);
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        format!(
            "{sign}{}.{:0width$}",
            abs / scale as u64,
            abs % scale as u64,
            width = exp as usize
        )
    }

    /// `"9.9"`, `"9.90"` → `990` CNY: a decimal amount (a gateway's, or a
    /// price typed in the panel) in minor units, compared as a number
    /// ("10" == "10.00"). `None` for anything
    /// that is not a plain non-negative decimal or has a fraction finer than
    /// the minor unit (a sub-fen amount never equals an order's).
    pub fn parse_decimal(&self, raw: &str) -> Option<i64> {
        let (whole, frac) = raw.split_once('.').unwrap_or((raw, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits(whole)
            || !digits(frac)
            || (raw.contains('.') && frac.is_empty())
        {
            return None;
        }
        let exp = self.exponent() as usize;
        let (kept, rest) = frac.split_at(frac.len().min(exp));
        if rest.bytes().any(|b| b != b'0') {
            return None;
        }
        let scale = 10i64.pow(exp as u32);
        let minor_frac = format!("{kept:0<exp$}");
        let w: i64 = whole.parse().ok()?;
        let f: i64 = if exp == 0 {
            0
        } else {
            minor_frac.parse().ok()?
        };
        w.checked_mul(scale)?.checked_add(f)
    }

    pub fn symbol(&self) -> &'static str {
        match self.as_str() {
            "CNY" => "¥",
            "USD" => "$",
            "EUR" => "€",
            "GBP" => "£",
            "JPY" => "¥",
            "HKD" => "HK$",
            _ => "",
        }
    }

    /// `990` CNY → `"¥9.90"`, `1234` CHF → `"12.34 CHF"`.
    pub fn display(&self, minor: i64) -> String {
        match self.symbol() {
            "" => format!("{} {}", self.format_decimal(minor), self.as_str()),
            sym => format!("{sym}{}", self.format_decimal(minor)),
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_typed_decimals() {
        let cny = Currency::parse("CNY").unwrap();
        assert_eq!(cny.parse_decimal("9.9"), Some(990));
        assert_eq!(cny.parse_decimal("12"), Some(1200));
        assert_eq!(cny.parse_decimal("0.05"), Some(5));
        assert_eq!(cny.parse_decimal("1.234"), None);
        assert_eq!(cny.parse_decimal("-1"), None);
        assert_eq!(cny.parse_decimal("1e3"), None);
        assert_eq!(
            Currency::parse("JPY").unwrap().parse_decimal("500"),
            Some(500)
        );
        assert_eq!(Currency::parse("JPY").unwrap().parse_decimal("5.5"), None);
    }

    #[test]
    fn parses_and_uppercases() {
        assert_eq!(Currency::parse("cny").unwrap().as_str(), "CNY");
        assert!(Currency::parse("CN").is_err());
        assert!(Currency::parse("C1Y").is_err());
        assert_eq!(Currency::parse(" usd ").unwrap().as_str(), "USD");
    }

    #[test]
    fn refuses_codes_iso_4217_does_not_list() {
        for raw in ["XYZ", "ZZZ", "BTC", "abc"] {
            let err = Currency::parse(raw).unwrap_err();
            assert_eq!(err, CurrencyError::Unknown(raw.to_ascii_uppercase()));
            assert!(err.to_string().contains(&raw.to_ascii_uppercase()), "{err}");
        }
        // ISO 4217 codes for things that are not money a buyer pays in.
        for raw in ["XXX", "XTS", "XAU", "XDR"] {
            assert!(Currency::parse(raw).is_err(), "{raw}");
        }
        assert_eq!(Currency::parse("CN"), Err(CurrencyError::Shape));
    }

    #[test]
    fn minor_units_follow_iso_4217() {
        for (code, exp) in [("CNY", 2), ("USD", 2), ("JPY", 0), ("KWD", 3), ("CLF", 4)] {
            assert_eq!(Currency::parse(code).unwrap().exponent(), exp, "{code}");
        }
    }

    #[test]
    fn parses_decimal_amounts_as_numbers() {
        let cny = Currency::parse("CNY").unwrap();
        for (raw, want) in [
            ("10", Some(1000)),
            ("10.00", Some(1000)),
            ("10.0", Some(1000)),
            ("9.9", Some(990)),
            ("0.01", Some(1)),
            ("10.000", Some(1000)),
        ] {
            assert_eq!(cny.parse_decimal(raw), want, "{raw}");
        }
        for raw in [
            "", ".5", "10.", "-1", "+1", "1e3", "10.001", " 10", "1,0", "0x10",
        ] {
            assert_eq!(cny.parse_decimal(raw), None, "{raw}");
        }
        assert_eq!(
            Currency::parse("JPY").unwrap().parse_decimal("500"),
            Some(500)
        );
        assert_eq!(Currency::parse("JPY").unwrap().parse_decimal("500.5"), None);
    }

    #[test]
    fn formats_minor_units() {
        let cny = Currency::parse("CNY").unwrap();
        assert_eq!(cny.format_decimal(990), "9.90");
        assert_eq!(cny.format_decimal(5), "0.05");
        assert_eq!(cny.display(1000), "¥10.00");
        assert_eq!(Currency::parse("JPY").unwrap().format_decimal(500), "500");
        assert_eq!(Currency::parse("CHF").unwrap().display(1234), "12.34 CHF");
    }
}

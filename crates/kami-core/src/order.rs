use std::fmt;

use rand::Rng;

/// Where an order is in its life (DESIGN.md, "Order lifecycle").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Codes reserved, waiting for payment until `expires_at`.
    Pending,
    /// Paid and its codes handed over. Final.
    Delivered,
    /// Not paid in time; its codes went back to stock.
    Expired,
    /// Paid, but no codes could be reserved (a late payment after a sell-out).
    /// An import into the product fulfils it; an operator can refund it.
    PaidUnfulfilled,
    /// Money returned by the operator.
    Refunded,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        Self::Pending,
        Self::Delivered,
        Self::Expired,
        Self::PaidUnfulfilled,
        Self::Refunded,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Expired => "expired",
            Self::PaidUnfulfilled => "paid_unfulfilled",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The status a reader should see: a pending order past its expiry reads
    /// as expired even before the sweep has released its codes.
    pub fn as_seen_at(self, expires_at: i64, now: i64) -> Self {
        if self == Self::Pending && now >= expires_at {
            Self::Expired
        } else {
            self
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The public order number: a UTC timestamp for humans plus 40 random bits so
/// that numbers cannot be enumerated (`K20261122073412A7F3K9QX`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderNo(String);

const ORDER_NO_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

impl OrderNo {
    pub fn generate(now_millis: i64) -> Self {
        let mut no = String::with_capacity(23);
        no.push('K');
        push_civil(&mut no, now_millis.div_euclid(1000), ["", "", "", "", ""]);
        let mut rng = rand::thread_rng();
        no.extend(
            (0..8).map(|_| ORDER_NO_ALPHABET[rng.gen_range(0..ORDER_NO_ALPHABET.len())] as char),
        );
        Self(no)
    }

    /// Accepts only strings that could be an order number, so that garbage in
    /// a URL or a notification never reaches a query.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = raw.len() >= 8
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Unix seconds → (year, month, day, hour, minute, second) in UTC, by Howard
/// Hinnant's days-from-civil inverse; written out here because pulling a date
/// crate into the dependency-free core for one format is not worth it.
pub fn civil_from_unix(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// Milliseconds since the epoch → RFC 3339 in UTC with millisecond precision.
pub fn rfc3339(millis: i64) -> String {
    let mut out = String::with_capacity(24);
    push_civil(&mut out, millis.div_euclid(1000), ["-", "-", "T", ":", ":"]);
    out.push('.');
    push_padded(&mut out, millis.rem_euclid(1000) as u32, 3);
    out.push('Z');
    out
}

/// Appends the UTC date and time of `secs` as `{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}`
/// with `between[i]` after the `i`-th field. Digit by digit rather than
/// through `format!`'s width machinery: `rfc3339` and `OrderNo::generate`
/// were 3,000–3,700 instructions each of every order, and a buyer's order
/// read writes three (callgrind). A year outside 0–9999 is written as
/// `format!` writes it.
fn push_civil(out: &mut String, secs: i64, between: [&str; 5]) {
    let (y, mo, d, h, mi, s) = civil_from_unix(secs);
    match u32::try_from(y) {
        Ok(y) if y <= 9999 => push_padded(out, y, 4),
        _ => out.push_str(&format!("{y:04}")),
    }
    for (n, sep) in [mo, d, h, mi, s].into_iter().zip(between) {
        out.push_str(sep);
        push_padded(out, n, 2);
    }
}

/// `n` in exactly `width` decimal digits, zero-padded, as `{n:0width$}`
/// writes any `n` below 10^`width`.
fn push_padded(out: &mut String, n: u32, width: u32) {
    for place in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(place) % 10) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for st in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(OrderStatus::parse("paid"), None);
    }

    #[test]
    fn pending_past_expiry_reads_as_expired() {
        assert_eq!(
            OrderStatus::Pending.as_seen_at(100, 100),
            OrderStatus::Expired
        );
        assert_eq!(
            OrderStatus::Pending.as_seen_at(100, 99),
            OrderStatus::Pending
        );
        assert_eq!(
            OrderStatus::Delivered.as_seen_at(100, 200),
            OrderStatus::Delivered
        );
    }

    #[test]
    fn dates_are_written_as_format_writes_them() {
        let written_by_format = |t: i64| {
            let (y, mo, d, h, mi, s) = civil_from_unix(t.div_euclid(1000));
            let ms = t.rem_euclid(1000);
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
        };
        // Every day of 1969-2101, each at another time of day.
        let mut t: i64 = -86_400_000;
        while t < 4_134_000_000_000 {
            assert_eq!(rfc3339(t), written_by_format(t));
            let (y, mo, d, h, mi, s) = civil_from_unix(t.div_euclid(1000));
            let no = OrderNo::generate(t);
            assert_eq!(
                &no.as_str()[..15],
                format!("K{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}")
            );
            assert_eq!(no.as_str().len(), 23);
            t += 86_400_000 + 3_723_457;
        }
        // Years at and past the four digits: 0, -1, 9999 and 10000.
        for t in [
            -62_167_219_200_000i64,
            -62_167_219_200_001,
            253_402_300_799_999,
            253_402_300_800_000,
        ] {
            assert_eq!(rfc3339(t), written_by_format(t));
        }
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_332_052_123), "2026-11-22T07:20:52.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn order_numbers_are_unique_and_parse() {
        let a = OrderNo::generate(1_795_332_052_123);
        let b = OrderNo::generate(1_795_332_052_123);
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("K20261122072052"));
        assert_eq!(OrderNo::parse(a.as_str()), Some(a));
        assert!(OrderNo::parse("x' OR 1=1 --").is_none());
    }
}

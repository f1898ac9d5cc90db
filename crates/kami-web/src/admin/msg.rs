//! Sentences the panel's Rust code puts on a page (form errors, a channel's
//! test result): a key of the string table (`i18n.rs`) and the values of its
//! `{name}` placeholders, turned into text in the operator's language only
//! when the page is rendered. The values (a line the operator typed, a
//! number, a gateway's reply) are kept exactly as they are; only the
//! sentence around them is translated. Everything goes through the
//! templates' autoescaping like any other value.

use kami_core::email::EmailError;
use kami_core::money::CurrencyError;
use kami_core::pricing::{PricingError, MAX_COUPON_CODE, MAX_TIERS};

use super::i18n::tr;
use crate::error::ApiError;

/// A placeholder's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// Data: shown as it is in every language.
    Text(String),
    /// A key of the table (a field's label): translated with the sentence.
    Label(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// A key of the table and its placeholders' values.
    Key(&'static str, Vec<(&'static str, Arg)>),
    /// Text that is not a sentence of the panel's (a multipart parser's
    /// complaint, an API message the table does not know): shown as it is.
    Raw(String),
}

impl Msg {
    pub fn new(key: &'static str) -> Self {
        Self::Key(key, Vec::new())
    }

    /// Fills `{name}` with `value`, unchanged in every language.
    pub fn with(mut self, name: &'static str, value: impl ToString) -> Self {
        if let Self::Key(_, args) = &mut self {
            args.push((name, Arg::Text(value.to_string())));
        }
        self
    }

    /// Fills `{name}` with the text of the key `label`, in the page's language.
    pub fn label(mut self, name: &'static str, label: impl Into<String>) -> Self {
        if let Self::Key(_, args) = &mut self {
            args.push((name, Arg::Label(label.into())));
        }
        self
    }

    pub fn text(&self, lang: &str) -> String {
        match self {
            Self::Key(key, args) => {
                let values: Vec<(&str, String)> = args
                    .iter()
                    .map(|(name, arg)| {
                        let value = match arg {
                            Arg::Text(t) => t.clone(),
                            Arg::Label(k) => tr(lang, k).to_string(),
                        };
                        (*name, value)
                    })
                    .collect();
                fill(tr(lang, key), &values)
            }
            Self::Raw(text) => text.clone(),
        }
    }
}

/// `template` with each `{name}` replaced by its value, in one pass: a
/// value that itself holds `{…}` (a line the operator typed) stays as it is.
/// A placeholder without a value is left in place, so a typo shows.
pub fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after
            .find('}')
            .and_then(|close| Some((close, values.iter().find(|(n, _)| *n == &after[..close])?)));
        match value {
            Some((close, (_, v))) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// "{field} must be a whole number", with the field's label.
pub fn whole_number(label: &'static str) -> Msg {
    Msg::new("err_whole_number").label("field", label)
}

pub fn currency(e: &CurrencyError) -> Msg {
    match e {
        CurrencyError::Shape => Msg::new("err_currency_shape"),
        CurrencyError::Unknown(code) => Msg::new("err_currency_unknown").with("code", code),
    }
}

pub fn tiers(e: &PricingError) -> Msg {
    match e {
        PricingError::TierShape => Msg::new("err_tiers_shape").with("max", MAX_TIERS),
        PricingError::TierOrder => Msg::new("err_tiers_order"),
        PricingError::TierPrice => Msg::new("err_tiers_price"),
    }
}

/// The addresses `Email::parse` refuses, by its (fixed) messages.
const EMAIL_MESSAGES: &[(&str, &str)] = &[
    ("email is required", "err_email_required"),
    ("email is not valid text", "err_email_text"),
    ("email is too long", "err_email_long"),
    ("email must contain @", "err_email_at"),
    ("email has an invalid local part", "err_email_local"),
    ("email has an invalid domain", "err_email_domain"),
];

pub fn email(e: &EmailError) -> Msg {
    let text = e.to_string();
    EMAIL_MESSAGES
        .iter()
        .find(|(m, _)| *m == text)
        .map_or(Msg::Raw(text), |(_, key)| Msg::new(key))
}

/// The messages of the admin API's validation (`api::admin`,
/// `api::coupons`) that a panel form can meet, and their keys. The API keeps
/// answering them in English; the panel shows them in the operator's
/// language. The test below checks each is still in the API's source.
const API_MESSAGES: &[(&str, &str)] = &[
    ("name must be 1-200 characters", "err_name_length"),
    (
        "price must be a positive integer in minor units",
        "err_price_range",
    ),
    (
        "need 1 <= min_quantity <= max_quantity <= 10000",
        "err_quantities",
    ),
    (
        "per_buyer_limit must be at least 1 or null",
        "err_per_buyer_limit",
    ),
    (
        "per_ip_limit must be at least 1 or null",
        "err_per_ip_limit",
    ),
    (
        "sale_ends_at must be after sale_starts_at",
        "err_sale_window",
    ),
    (
        "description is longer than 64 KiB",
        "err_description_length",
    ),
    (
        "category must be at most 100 characters",
        "err_category_length",
    ),
    (
        "stock_display must be exact, level, hidden or inherit",
        "err_stock_display",
    ),
    ("kind must be \"fixed\" or \"percent\"", "err_coupon_kind"),
    ("no such product", "err_coupon_no_product"),
    (
        "a percent coupon takes 1-100 percent off",
        "err_coupon_percent_range",
    ),
    (
        "a fixed coupon takes a positive amount in minor units off",
        "err_coupon_fixed_range",
    ),
    (
        "a fixed coupon needs a currency",
        "err_coupon_needs_currency",
    ),
    (
        "the coupon's currency differs from the product's",
        "err_coupon_currency_differs",
    ),
    ("max_uses must be at least 1 or null", "err_coupon_max_uses"),
    ("a coupon with this code exists", "err_coupon_code_taken"),
];

/// The fields whose times the API parses, and their labels.
const TIME_FIELDS: &[(&str, &str)] = &[
    ("sale_starts_at", "sale_starts_at"),
    ("sale_ends_at", "sale_ends_at"),
    ("expires_at", "coupon_expires"),
];

/// An admin API refusal as the panel shows it: translated when the table
/// knows it, else the API's own English.
pub fn api(e: &ApiError) -> Msg {
    let m = e.message.as_str();
    if let Some((_, key)) = API_MESSAGES.iter().find(|(known, _)| *known == m) {
        return Msg::new(key);
    }
    for err in [
        PricingError::TierShape,
        PricingError::TierOrder,
        PricingError::TierPrice,
    ] {
        if err.to_string() == m {
            return tiers(&err);
        }
    }
    if CurrencyError::Shape.to_string() == m {
        return currency(&CurrencyError::Shape);
    }
    if let Some((code, _)) = m.strip_prefix("currency ").and_then(|r| r.split_once(' ')) {
        let unknown = CurrencyError::Unknown(code.to_string());
        if unknown.to_string() == m {
            return currency(&unknown);
        }
    }
    if let Some((_, label)) = TIME_FIELDS
        .iter()
        .find(|(f, _)| e.param == Some(*f) && m == format!("{f} must be an RFC 3339 time"))
    {
        return Msg::new("err_time_format").label("field", *label);
    }
    if e.param == Some("code")
        && m == format!("code must be 1-{MAX_COUPON_CODE} letters, digits, '-' or '_'")
    {
        return Msg::new("err_coupon_code").with("max", MAX_COUPON_CODE);
    }
    Msg::Raw(e.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_once_and_values_stay_as_typed() {
        let v = |n: &'static str, s: &str| (n, s.to_string());
        assert_eq!(
            fill("第 {n} 行“{line}”", &[v("n", "3"), v("line", "{n} = <b>")]),
            "第 3 行“{n} = <b>”"
        );
        assert_eq!(fill("{missing} {", &[]), "{missing} {");
        assert_eq!(fill("{a}{a}", &[v("a", "x")]), "xx");
        let m = Msg::new("err_whole_number").label("field", "min_quantity");
        assert_eq!(m.text("zh"), "“每单最少”必须是整数。");
        assert_eq!(m.text("en"), "Min per order must be a whole number.");
        assert_eq!(Msg::Raw("as is".into()).text("zh"), "as is");
    }

    #[test]
    fn every_email_refusal_is_translated() {
        for bad in [
            "",
            "a\u{FFFD}@x.com",
            &"a".repeat(300),
            "no-at",
            ".a@x.com",
            "a@x",
        ] {
            let e = kami_core::Email::parse(bad).unwrap_err();
            assert!(matches!(email(&e), Msg::Key(..)), "{bad:?}: {e}");
        }
    }

    /// A message the API no longer sends would silently fall back to
    /// English: each must still be in the API's source.
    #[test]
    fn every_api_message_in_the_table_is_one_the_api_sends() {
        let sources = [
            include_str!("../api/admin.rs"),
            include_str!("../api/coupons.rs"),
        ];
        for (message, key) in API_MESSAGES {
            assert!(
                sources
                    .iter()
                    .any(|s| s.contains(&format!("\"{}\"", message.replace('"', "\\\"")))),
                "{message:?} is not in the API's source"
            );
            assert_ne!(tr("zh", key), "?", "{key}");
        }
    }

    #[test]
    fn api_refusals_with_values_are_translated() {
        let zh = |e: ApiError| api(&e).text("zh");
        assert_eq!(
            zh(ApiError::invalid_param(
                "currency",
                CurrencyError::Unknown("XYZ".into()).to_string()
            )),
            "XYZ 不是 ISO 4217 币种，请使用 CNY、USD 等代码。"
        );
        assert!(zh(ApiError::invalid_param(
            "sale_ends_at",
            "sale_ends_at must be an RFC 3339 time"
        ))
        .contains("停售时间"));
        assert!(zh(ApiError::invalid_param(
            "wholesale_tiers",
            PricingError::TierOrder.to_string()
        ))
        .contains("批发价"));
        assert!(zh(ApiError::invalid_param(
            "code",
            format!("code must be 1-{MAX_COUPON_CODE} letters, digits, '-' or '_'")
        ))
        .contains("优惠码"));
        assert_eq!(
            zh(ApiError::invalid_param(
                "kind",
                "kind must be \"fixed\" or \"percent\""
            )),
            tr("zh", "err_coupon_kind")
        );
        // Unknown: the API's words, untouched.
        assert_eq!(zh(ApiError::invalid("something new")), "something new");
    }
}

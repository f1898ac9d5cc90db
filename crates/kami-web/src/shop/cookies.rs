//! The storefront's few cookies: language, CSRF token (double submit), and
//! one per order holding its access token so the buyer can come back.
//! Parsed by hand: three cookie names do not justify a cookie-jar crate.

use axum::http::{header, HeaderMap};

pub const LANG: &str = "kami_lang";
pub const CSRF: &str = "kami_csrf";

pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub fn order_cookie(order_no: &str) -> String {
    format!("kt_{order_no}")
}

/// A `Set-Cookie` value; `secure` when the shop is served over HTTPS.
pub fn set(name: &str, value: &str, max_age_secs: i64, same_site: &str, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite={same_site}{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookies_among_several() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; kami_csrf=tok; kt_K1=xyz".parse().unwrap(),
        );
        assert_eq!(get(&h, CSRF), Some("tok"));
        assert_eq!(get(&h, &order_cookie("K1")), Some("xyz"));
        assert_eq!(get(&h, "missing"), None);
    }
}

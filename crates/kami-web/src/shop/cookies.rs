//! The storefront's few cookies: language, CSRF token (double submit), and
//! one per order holding its access token so the buyer can come back.
//! Parsed by hand: three cookie names do not justify a cookie-jar crate.

use axum::http::{header, HeaderMap};

pub const LANG: &str = "kami_lang";

/// The storefront's CSRF cookie. Over HTTPS it carries the `__Host-`
/// prefix, which browsers accept only from this very host over HTTPS with
/// `Path=/`: a sibling subdomain or a man in the middle of some plain-HTTP
/// page cannot plant one to match a form of theirs. Over plain HTTP (a shop
/// on localhost) browsers refuse the prefix, so the plain name is used.
pub fn csrf(secure: bool) -> &'static str {
    if secure {
        "__Host-kami_csrf"
    } else {
        "kami_csrf"
    }
}

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

/// The form token in `cookie` if it could be one this server hands out
/// (`random_token`, 20 characters or more); an empty or short one was
/// planted, and is neither reused on a page nor accepted from a form.
pub fn form_token<'a>(headers: &'a HeaderMap, cookie: &str) -> Option<&'a str> {
    get(headers, cookie).filter(|t| t.len() >= 20)
}

/// The double-submit check of a form: the cookie's token (`form_token`)
/// equals the form's, and the browser does not say the form came from
/// another site. A token planted over plain HTTP or by a sibling domain
/// still has to get past `Sec-Fetch-Site`, which browsers send on every
/// request and no page can set.
pub fn form_token_ok(headers: &HeaderMap, cookie: &str, submitted: &str) -> bool {
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    !cross_site
        && form_token(headers, cookie)
            .is_some_and(|c| kami_core::secrets::ct_eq(c.as_bytes(), submitted.as_bytes()))
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
        assert_eq!(get(&h, csrf(false)), Some("tok"));
        assert_eq!(get(&h, &order_cookie("K1")), Some("xyz"));
        assert_eq!(get(&h, "missing"), None);
    }
}

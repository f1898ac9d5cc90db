//! The MD5 signature EPay (易支付) and epusdt share: the parameters sorted by
//! name, empty values and the signature fields left out, `k=v` joined by `&`,
//! the merchant key appended directly, lowercase hex MD5.

use md5::{Digest, Md5};

/// `pairs` in any order; `skip` names the signature fields.
pub fn md5_sign(pairs: &[(&str, &str)], skip: &[&str], key: &str) -> String {
    let mut kept: Vec<&(&str, &str)> = pairs
        .iter()
        .filter(|(k, v)| !v.is_empty() && !skip.contains(k))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(b.0));
    let mut text = kept
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    text.push_str(key);
    hex::encode(Md5::digest(text.as_bytes()))
}

/// Constant-time comparison with a received signature (hex, either case).
pub fn md5_matches(expected_hex: &str, received: &str) -> bool {
    kami_core::secrets::ct_eq(
        expected_hex.as_bytes(),
        received.to_ascii_lowercase().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published examples of this exact rule (sorted non-empty `k=v` joined
    /// by `&`, key appended directly, lowercase MD5), reproduced byte for
    /// byte: the defupay merchant docs (hmoore.net/q86849180/defupay/921626)
    /// and an easydoc.net gateway doc (doc/45090039/BHm31QHg/YJbJQqOV).
    #[test]
    fn reproduces_published_signature_examples() {
        assert_eq!(
            md5_sign(
                &[("uid", "1000"), ("timestamp", "1548047628")],
                &["sign", "sign_type"],
                "58b31d465652be856d7ed80977aa4ce4"
            ),
            "15540d3398e5ed2a37533e3fc032e1a0"
        );
        assert_eq!(
            md5_sign(
                &[
                    ("apiKey", "testApiKey"),
                    ("customerNo", "test100000"),
                    ("channel", "bank"),
                    ("amount", "100.00"),
                    ("notifyUrl", "http://test.com/getNotify"),
                    ("ip", "127.0.0.1"),
                    ("sign", "ignored"),
                    ("empty", ""),
                ],
                &["sign", "sign_type"],
                "testSecretKey"
            ),
            "5d50a182db6fa8a347cc85f36ca492f2"
        );
    }
}

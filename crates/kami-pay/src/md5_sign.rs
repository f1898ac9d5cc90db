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

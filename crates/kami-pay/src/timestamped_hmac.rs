//! The webhook signature Stripe uses and the sandbox copies:
//! `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`, with
//! several `v1` allowed while a secret is being rolled, and `t` within a
//! tolerance of now (either way) so a captured request cannot be replayed
//! later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!(
        "t={t},v1={}",
        hex::encode(mac(secret, &t.to_string(), body))
    )
}

fn mac(secret: &[u8], t: &str, body: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(t.as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// Checks the header against the body; the reason on failure. The MAC is
/// checked before the timestamp is trusted, in constant time.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), String> {
    if secret.is_empty() {
        return Err("no signing secret is configured".into());
    }
    let mut t = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) if v.parse::<i64>().is_ok() => t = Some(v),
            Some(("v1", v)) => candidates.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let t = t.ok_or("malformed signature header: no valid t=")?;
    if candidates.is_empty() {
        return Err("malformed signature header: no valid v1=".into());
    }
    let expected = mac(secret, t, body);
    if !candidates
        .iter()
        .any(|c| kami_core::secrets::ct_eq(c, &expected))
    {
        return Err("signature does not match".into());
    }
    let t: i64 = t.parse().unwrap_or_default();
    if (now_secs - t).abs() > tolerance_secs {
        return Err(format!(
            "signature timestamp outside the {tolerance_secs} s tolerance"
        ));
    }
    Ok(())
}

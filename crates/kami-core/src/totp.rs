//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 6 digits, 30 s) for
//! admin logins. Codes come from the `totp-rs` crate; the step matching (for
//! replay protection) and the otpauth:// URI are here, so the crate's URL
//! feature and its dependencies are not needed.

use rand::RngCore;
use totp_rs::{Algorithm, TOTP};

/// 160-bit secrets, as RFC 4226 recommends.
pub const SECRET_LEN: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error("TOTP secret is invalid: {0}")]
    Secret(String),
}

pub fn generate_secret() -> Vec<u8> {
    let mut s = vec![0u8; SECRET_LEN];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

fn totp(secret: &[u8]) -> Result<TOTP, TotpError> {
    // Skew 1: the codes of the neighbouring 30 s steps are accepted too, for
    // phones whose clocks drift.
    TOTP::new(Algorithm::SHA1, 6, 1, 30, secret.to_vec())
        .map_err(|e| TotpError::Secret(e.to_string()))
}

/// The time step (30 s) whose code the user typed at `unix_secs`, allowing
/// one step of clock drift either way; `None` when the code is wrong. The
/// caller spends the step wherever it accepts the code (`Store::use_totp_step`)
/// and refuses one already spent (RFC 6238 section 5.2), so a code seen over
/// a shoulder cannot be used a second time. There is deliberately no
/// yes-or-no check: every acceptance must spend a step.
pub fn matching_step(secret: &[u8], code: &str, unix_secs: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let totp = totp(secret).ok()?;
    if code.len() != 6 {
        return None;
    }
    let now = unix_secs / 30;
    // Every candidate is compared, in constant time, whatever matches first.
    let mut found = None;
    for step in [now.saturating_sub(1), now, now + 1] {
        if crate::secrets::ct_eq(totp.generate(step * 30).as_bytes(), code.as_bytes()) {
            found = Some(step);
        }
    }
    found
}

/// The current code (tests and tools).
pub fn code_at(secret: &[u8], unix_secs: u64) -> Result<String, TotpError> {
    Ok(totp(secret)?.generate(unix_secs))
}

/// The secret in base32, without padding, as authenticator apps take it.
pub fn secret_base32(secret: &[u8]) -> Result<String, TotpError> {
    Ok(totp(secret)?.get_secret_base32())
}

/// Decodes a base32 secret (as shown to the user) back into bytes.
pub fn secret_from_base32(s: &str) -> Option<Vec<u8>> {
    totp_rs::Secret::Encoded(s.trim().to_uppercase())
        .to_bytes()
        .ok()
        .filter(|b| b.len() == SECRET_LEN)
}

/// `otpauth://totp/Issuer:account?secret=…&issuer=…` (Google's key-URI format).
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> Result<String, TotpError> {
    let b32 = secret_base32(secret)?;
    let issuer = percent_encode(issuer);
    Ok(format!(
        "otpauth://totp/{issuer}:{}?secret={b32}&issuer={issuer}&algorithm=SHA1&digits=6&period=30",
        percent_encode(account)
    ))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B, SHA1, T = 59 s: 94287082 (8 digits) ends in 287082.
        let secret = b"12345678901234567890";
        assert_eq!(code_at(secret, 59).unwrap(), "287082");
        assert_eq!(matching_step(secret, "287 082", 59), Some(1));
        assert_eq!(
            matching_step(secret, "287082", 59 + 30),
            Some(1),
            "one step of skew"
        );
        assert_eq!(matching_step(secret, "287082", 59 + 120), None);
        assert_eq!(matching_step(secret, "", 59), None);
        assert_eq!(matching_step(secret, "287082", 59), Some(1));
        assert_eq!(matching_step(secret, "287082", 89), Some(1));
    }

    #[test]
    fn base32_round_trip_and_uri() {
        let s = generate_secret();
        let b32 = secret_base32(&s).unwrap();
        assert_eq!(secret_from_base32(&b32).unwrap(), s);
        let uri = otpauth_uri(&s, "Kami Shop", "a@b.c").unwrap();
        assert!(uri.starts_with("otpauth://totp/Kami%20Shop:a@b.c?secret="));
    }
}

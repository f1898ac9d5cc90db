//! WeChat Pay API v3 signatures and the callback resource cipher.
//!
//! - Kami → WeChat: `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=…,nonce_str=…,
//!   signature=…,timestamp=…,serial_no=…`, the signature covering
//!   `METHOD\nPATH?QUERY\ntimestamp\nnonce\nbody\n` with the merchant key.
//! - WeChat → Kami (callbacks and API answers): `Wechatpay-Timestamp`,
//!   `-Nonce`, `-Signature`, `-Serial` headers, the signature covering
//!   `timestamp\nnonce\nbody\n` with the platform key named by the serial.
//! - Callback `resource`: AEAD_AES_256_GCM under the 32-byte APIv3 key, with
//!   the tag appended to the base64 ciphertext.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::distributions::Alphanumeric;
use rand::Rng;
use rsa::pkcs1v15::{SigningKey, VerifyingKey};
use rsa::sha2::Sha256;
use serde::Deserialize;

use crate::rsa_keys;

/// Seconds a WeChat Pay signature stays valid either side of now.
pub const TOLERANCE_SECS: i64 = 300;
/// WeChat Pay sends deliberately broken signatures starting with this to
/// check that merchants really verify; they must be refused.
pub const PROBE_PREFIX: &str = "WECHATPAY/SIGNTEST/";
/// The only signature scheme Kami speaks (RSA, not the SM2 variant).
pub const SIGNATURE_TYPE: &str = "WECHATPAY2-SHA256-RSA2048";

pub fn nonce() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(|c| char::from(c).to_ascii_uppercase())
        .collect()
}

/// The string a merchant request signature covers.
pub fn request_message(
    method: &str,
    path_and_query: &str,
    ts: i64,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{path_and_query}\n{ts}\n{nonce}\n{body}\n")
}

/// The string a platform signature (callbacks, API answers) covers.
pub fn platform_message(ts: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + 64);
    m.extend_from_slice(ts.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

pub struct Authorizer<'a> {
    pub mchid: &'a str,
    pub serial: &'a str,
    pub key: &'a SigningKey<Sha256>,
}

impl Authorizer<'_> {
    pub fn header(
        &self,
        method: &str,
        path_and_query: &str,
        body: &str,
        ts: i64,
        nonce: &str,
    ) -> String {
        let sig = rsa_keys::sign(
            self.key,
            request_message(method, path_and_query, ts, nonce, body).as_bytes(),
        );
        format!(
            "{SIGNATURE_TYPE} mchid=\"{}\",nonce_str=\"{nonce}\",signature=\"{sig}\",timestamp=\"{ts}\",serial_no=\"{}\"",
            self.mchid, self.serial
        )
    }
}

/// Why a platform signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("Wechatpay-Serial {0:?} is not the configured platform serial")]
    UnknownSerial(String),
    #[error("Wechatpay-Signature-Type {0:?} is not WECHATPAY2-SHA256-RSA2048")]
    UnsupportedType(String),
    #[error("probe signature (WECHATPAY/SIGNTEST/) refused")]
    Probe,
    #[error("signature does not match the platform public key")]
    Mismatch,
    #[error("malformed Wechatpay-Timestamp")]
    BadTimestamp,
    #[error("Wechatpay-Timestamp {0} is outside the 300 s window")]
    Stale(i64),
}

pub struct PlatformVerifier<'a> {
    pub serial: &'a str,
    pub key: &'a VerifyingKey<Sha256>,
}

impl PlatformVerifier<'_> {
    /// Checks a WeChat-signed message given a header lookup and the raw body.
    /// The signature is checked before the timestamp is believed.
    pub fn verify<'h>(
        &self,
        header: impl Fn(&'static str) -> Option<&'h str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), SignatureError> {
        let get = |name: &'static str| header(name).ok_or(SignatureError::MissingHeader(name));
        let serial = get("Wechatpay-Serial")?;
        let signature = get("Wechatpay-Signature")?;
        let ts = get("Wechatpay-Timestamp")?;
        let nonce = get("Wechatpay-Nonce")?;
        // Certificate serials are hex, sent upper-case but shown lower-case
        // in some consoles; PUB_KEY_ID_… is compared the same way.
        if !serial.trim().eq_ignore_ascii_case(self.serial) {
            return Err(SignatureError::UnknownSerial(
                serial.chars().take(64).collect(),
            ));
        }
        // Absent on older callbacks; when present it must name RSA (not SM2).
        if let Some(kind) = header("Wechatpay-Signature-Type") {
            if kind.trim() != SIGNATURE_TYPE {
                return Err(SignatureError::UnsupportedType(
                    kind.chars().take(64).collect(),
                ));
            }
        }
        if signature.starts_with(PROBE_PREFIX) {
            return Err(SignatureError::Probe);
        }
        if !rsa_keys::verify(self.key, &platform_message(ts, nonce, body), signature) {
            return Err(SignatureError::Mismatch);
        }
        let t: i64 = ts
            .trim()
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        if (now_secs - t).abs() > TOLERANCE_SECS {
            return Err(SignatureError::Stale(t));
        }
        Ok(())
    }
}

/// The encrypted `resource` of a callback.
#[derive(Debug, Deserialize)]
pub struct Resource {
    pub algorithm: String,
    pub ciphertext: String,
    #[serde(default)]
    pub associated_data: String,
    pub nonce: String,
}

/// Decrypts a callback resource with the APIv3 key. Errors name the step,
/// never the key.
pub fn decrypt(apiv3_key: &[u8; 32], r: &Resource) -> Result<String, &'static str> {
    if r.algorithm != "AEAD_AES_256_GCM" {
        return Err("resource algorithm is not AEAD_AES_256_GCM");
    }
    // WeChat Pay's nonce is a 12-character string used as the 12-byte IV.
    if r.nonce.len() != 12 {
        return Err("resource nonce is not 12 bytes");
    }
    let data = B64
        .decode(r.ciphertext.trim())
        .map_err(|_| "resource ciphertext is not base64")?;
    let cipher = Aes256Gcm::new(apiv3_key.into());
    let plain = cipher
        .decrypt(
            Nonce::from_slice(r.nonce.as_bytes()),
            Payload {
                msg: &data,
                aad: r.associated_data.as_bytes(),
            },
        )
        .map_err(|_| "resource does not decrypt with the APIv3 key")?;
    String::from_utf8(plain).map_err(|_| "resource is not UTF-8")
}

/// The inverse of [`decrypt`], for tests that play the platform.
#[cfg(test)]
pub fn encrypt(apiv3_key: &[u8; 32], nonce: &str, aad: &str, plain: &str) -> String {
    let cipher = Aes256Gcm::new(apiv3_key.into());
    let data = cipher
        .encrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: plain.as_bytes(),
                aad: aad.as_bytes(),
            },
        )
        .unwrap();
    B64.encode(data)
}

//! Keys and the operations that use them (DESIGN.md, "Secrets").
//!
//! One 32-byte master key; every purpose gets its own HKDF subkey, so a leak
//! of one derived key (say, the fingerprint key in a log) exposes nothing else.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The key id written beside every sealed code, for `kami keys rotate`.
pub const CURRENT_KEY_ID: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("master key must be 32 bytes of standard base64 (got {0} bytes)")]
    WrongLength(usize),
    #[error("master key is not valid base64")]
    NotBase64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("sealed value does not open with this key and context")]
    Open,
    #[error("sealed value is malformed")]
    Malformed,
}

/// The master key. Its `Debug` never prints the bytes.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Self(k)
    }

    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| KeyError::NotBase64)?;
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Ok(Self(arr))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    fn derive(&self, purpose: &str) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(Some(b"kami/v1"), &self.0);
        let mut out = [0u8; 32];
        hk.expand(purpose.as_bytes(), &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }
}

/// The derived keys the running shop needs.
#[derive(Clone)]
pub struct Keys {
    check: String,
    seal: Aes256Gcm,
    fingerprint: [u8; 32],
    query_password: [u8; 32],
    request: [u8; 32],
    device: [u8; 32],
    panel_report: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// A code sealed for storage: AES-256-GCM ciphertext (tag included) and nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub key_id: i64,
}

impl Keys {
    pub fn new(master: &MasterKey) -> Self {
        let seal_key = master.derive("card-seal");
        Self {
            check: hex::encode(&master.derive("key-check")[..16]),
            seal: Aes256Gcm::new_from_slice(&seal_key).expect("32-byte key"),
            fingerprint: master.derive("card-fingerprint"),
            query_password: master.derive("query-password"),
            request: master.derive("idempotent-request"),
            device: master.derive("admin-device"),
            panel_report: master.derive("panel-report"),
        }
    }

    /// A value derived from the master key that reveals nothing about it,
    /// stored once in the database: a process started with another key sees
    /// the mismatch and refuses to run instead of sealing codes no one can open.
    pub fn check_value(&self) -> &str {
        &self.check
    }

    /// Seals `plaintext` bound to `context` (associated data): a ciphertext
    /// moved to another product's row, or another purpose, does not open.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Sealed {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .seal
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        Sealed {
            ciphertext,
            nonce: nonce.to_vec(),
            key_id: CURRENT_KEY_ID,
        }
    }

    pub fn open(&self, context: &str, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        if sealed.nonce.len() != 12 || sealed.key_id != CURRENT_KEY_ID {
            return Err(SealError::Malformed);
        }
        self.seal
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)
    }

    /// Keyed fingerprint of a code within a product: equal codes give equal
    /// fingerprints, but without the key the fingerprints reveal nothing.
    pub fn card_fingerprint(&self, product_id: i64, code: &str) -> Vec<u8> {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.fingerprint).expect("any key length");
        mac.update(&product_id.to_be_bytes());
        mac.update(code.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// What an `Idempotency-Key` remembers of its request, to tell a retry
    /// from another request: keyed, since a body may hold a query password.
    pub fn request_fingerprint(&self, request: &[u8]) -> Vec<u8> {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.request).expect("any key length");
        mac.update(request);
        mac.finalize().into_bytes().to_vec()
    }

    /// The mark of a browser an operator has signed in from: a keyed HMAC
    /// of the operator and their password hash, so a new password makes
    /// every old mark worthless. Hex, for a cookie.
    pub fn admin_device_mark(&self, admin_id: i64, password_hash: &str) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.device).expect("any key length");
        mac.update(&admin_id.to_be_bytes());
        mac.update(password_hash.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The signature of a panel page's report carried in its URL (an
    /// import's, `admin/codes.rs`), for one session's secret: a key of its
    /// own, so no other keyed hash can be passed off as one.
    pub fn panel_report_sig(&self, session_secret: &str, report: &str) -> Vec<u8> {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.panel_report).expect("any key length");
        mac.update(session_secret.as_bytes());
        mac.update(&[0]);
        mac.update(report.as_bytes());
        mac.finalize().into_bytes()[..16].to_vec()
    }

    /// Buyers' query passwords: a keyed HMAC rather than Argon2, since Argon2
    /// at flash-sale rates is unaffordable; without the key the hashes are
    /// useless offline, and lookups are rate-limited online.
    pub fn query_password_hash(&self, email: &str, password: &str) -> Vec<u8> {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.query_password).expect("any key length");
        mac.update(email.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// A fresh random bearer secret (access tokens, API keys): 160 bits, base32-ish
/// lowercase hex is avoided to keep them short in URLs. From the thread's
/// CSPRNG (ChaCha, seeded and reseeded from the OS), as the nonces are:
/// every order takes one, and `OsRng` made it a `getrandom` system call
/// each (perf: 1% of an HTTP worker's samples in a drop).
pub fn random_token(prefix: &str) -> String {
    let mut b = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut b);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// Bearer secrets are stored as SHA-256: they are high-entropy, so a plain
/// hash is enough, and lookups by hash stay an index probe.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Constant-time equality for secrets and MACs.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(&MasterKey::generate())
    }

    #[test]
    fn seal_round_trips_and_binds_context() {
        let k = keys();
        let sealed = k.seal("card:7", b"CODE-123");
        assert_eq!(k.open("card:7", &sealed).unwrap(), b"CODE-123");
        assert_eq!(k.open("card:8", &sealed), Err(SealError::Open));
        assert!(!sealed.ciphertext.windows(8).any(|w| w == b"CODE-123"));
    }

    #[test]
    fn another_master_key_cannot_open() {
        let sealed = keys().seal("card:1", b"x");
        assert_eq!(keys().open("card:1", &sealed), Err(SealError::Open));
    }

    #[test]
    fn fingerprints_are_keyed_and_per_product() {
        let k = keys();
        assert_eq!(k.card_fingerprint(1, "A"), k.card_fingerprint(1, "A"));
        assert_ne!(k.card_fingerprint(1, "A"), k.card_fingerprint(2, "A"));
        assert_ne!(k.card_fingerprint(1, "A"), keys().card_fingerprint(1, "A"));
    }

    #[test]
    fn panel_report_signatures_are_keyed_per_session_and_their_own() {
        let k = keys();
        let sig = k.panel_report_sig("session-a", "import:1:3.0.0");
        assert_eq!(sig.len(), 16);
        assert_eq!(sig, k.panel_report_sig("session-a", "import:1:3.0.0"));
        assert_ne!(sig, k.panel_report_sig("session-b", "import:1:3.0.0"));
        assert_ne!(sig, k.panel_report_sig("session-a", "import:1:3.0.1"));
        assert_ne!(sig, keys().panel_report_sig("session-a", "import:1:3.0.0"));
        // Not the idempotency hash of the same bytes.
        assert_ne!(
            sig,
            k.request_fingerprint(b"session-a\0import:1:3.0.0")[..16].to_vec()
        );
    }

    #[test]
    fn master_key_base64_round_trip_and_length_check() {
        let m = MasterKey::generate();
        let again = MasterKey::from_base64(&m.to_base64()).unwrap();
        assert_eq!(again.0, m.0);
        assert!(matches!(
            MasterKey::from_base64("AAAA"),
            Err(KeyError::WrongLength(3))
        ));
        assert!(format!("{m:?}").contains("redacted"));
    }
}

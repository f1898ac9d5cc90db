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

/// The key id of a database never rotated: the one written beside every
/// sealed value until `kami keys rotate` first runs (`Keys::key_id`).
pub const FIRST_KEY_ID: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("master key must be 32 bytes of standard base64 (got {0} bytes)")]
    WrongLength(usize),
    #[error("master key is not valid base64")]
    NotBase64,
    #[error("the stored key history does not open with this master key")]
    History,
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
    key_id: i64,
    check: String,
    seal: Aes256Gcm,
    fingerprint: HashChain,
    query_password: HashChain,
    request: HashChain,
    device: [u8; 32],
    panel_report: [u8; 32],
}

/// The key of a keyed hash whose values are stored (fingerprints, query
/// passwords, idempotent requests), and what each rotation wrapped them in.
///
/// A stored value cannot be hashed again under a new key: the input (a
/// buyer's password) is gone. So `kami keys rotate` wraps every stored value
/// in an HMAC under a new random key, and new values are hashed through the
/// same chain: `HMAC(wₙ, … HMAC(w₂, HMAC(base, input)))`, equal to a wrapped
/// old value for the same input. The chain is kept in the database sealed
/// under the current master key (`Keys::history`), so an old master key,
/// leaked, opens nothing there and cannot test a guess against a hash.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct HashChain {
    #[serde(with = "hex_key")]
    base: [u8; 32],
    #[serde(with = "hex_keys")]
    wraps: Vec<[u8; 32]>,
}

impl HashChain {
    fn new(base: [u8; 32]) -> Self {
        Self {
            base,
            wraps: Vec::new(),
        }
    }

    fn hash(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.base).expect("any key length");
        for part in parts {
            mac.update(part);
        }
        self.wrapped(mac.finalize().into_bytes().to_vec())
    }

    /// A value as every rotation so far has wrapped it.
    fn wrapped(&self, mut value: Vec<u8>) -> Vec<u8> {
        for wrap in &self.wraps {
            value = hmac(wrap, &value);
        }
        value
    }

    /// The chain with one more wrap, under a new random key.
    fn extended(&self) -> Self {
        let mut wrap = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut wrap);
        let mut next = self.clone();
        next.wraps.push(wrap);
        next
    }

    /// A value stored under the chain before its last wrap, as it reads
    /// under the whole chain.
    fn rewrap(&self, stored: &[u8]) -> Vec<u8> {
        match self.wraps.last() {
            Some(wrap) => hmac(wrap, stored),
            None => stored.to_vec(),
        }
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("any key length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(k))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| serde::de::Error::custom("not a 32-byte hex key"))
    }

    pub fn parse(text: &str) -> Option<[u8; 32]> {
        hex::decode(text).ok()?.try_into().ok()
    }
}

mod hex_keys {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(keys: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(keys.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| super::hex_key::parse(t))
            .collect::<Option<_>>()
            .ok_or_else(|| serde::de::Error::custom("not a list of 32-byte hex keys"))
    }
}

/// What a rotated database keeps beside its codes, sealed under the current
/// master key: the key id of its sealed values and the hash chains.
#[derive(serde::Serialize, serde::Deserialize)]
struct History {
    key_id: i64,
    fingerprint: HashChain,
    query_password: HashChain,
    request: HashChain,
}

/// The associated data of the sealed history: no other sealed value opens
/// as one.
const HISTORY_CONTEXT: &str = "key-history";

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
    /// The keys of a database never rotated.
    pub fn new(master: &MasterKey) -> Self {
        let seal_key = master.derive("card-seal");
        Self {
            key_id: FIRST_KEY_ID,
            check: hex::encode(&master.derive("key-check")[..16]),
            seal: Aes256Gcm::new_from_slice(&seal_key).expect("32-byte key"),
            fingerprint: HashChain::new(master.derive("card-fingerprint")),
            query_password: HashChain::new(master.derive("query-password")),
            request: HashChain::new(master.derive("idempotent-request")),
            device: master.derive("admin-device"),
            panel_report: master.derive("panel-report"),
        }
    }

    /// The keys of a database: `history` is what its last rotation stored
    /// (`Keys::history`), `None` for one never rotated. A history that does
    /// not open with this master key is refused (fail closed).
    pub fn with_history(master: &MasterKey, history: Option<&str>) -> Result<Self, KeyError> {
        let mut keys = Self::new(master);
        let Some(stored) = history else {
            return Ok(keys);
        };
        let (nonce, ciphertext) = stored.split_once(':').ok_or(KeyError::History)?;
        let b64 = &base64::engine::general_purpose::STANDARD;
        let sealed = Sealed {
            nonce: b64.decode(nonce).map_err(|_| KeyError::History)?,
            ciphertext: b64.decode(ciphertext).map_err(|_| KeyError::History)?,
            key_id: keys.key_id,
        };
        let json = keys
            .open(HISTORY_CONTEXT, &sealed)
            .map_err(|_| KeyError::History)?;
        let h: History = serde_json::from_slice(&json).map_err(|_| KeyError::History)?;
        keys.check = format!("{}:{}", keys.check, h.key_id);
        keys.key_id = h.key_id;
        keys.fingerprint = h.fingerprint;
        keys.query_password = h.query_password;
        keys.request = h.request;
        Ok(keys)
    }

    /// The keys after a rotation to `master`: sealing under its key with the
    /// next key id, and every hash chain one wrap longer. `Rotation` turns
    /// the values stored under `self` into values under the new keys.
    pub fn rotated(&self, master: &MasterKey) -> Rotation {
        let mut next = Self::new(master);
        next.key_id = self.key_id + 1;
        next.check = format!("{}:{}", next.check, next.key_id);
        next.fingerprint = self.fingerprint.extended();
        next.query_password = self.query_password.extended();
        next.request = self.request.extended();
        Rotation {
            old: self.clone(),
            new: next,
        }
    }

    /// The history to store for these keys (`with_history` reads it back):
    /// sealed under their master key, so it opens with that key only.
    pub fn history(&self) -> String {
        let h = History {
            key_id: self.key_id,
            fingerprint: self.fingerprint.clone(),
            query_password: self.query_password.clone(),
            request: self.request.clone(),
        };
        let json = serde_json::to_vec(&h).expect("the history serialises");
        let sealed = self.seal(HISTORY_CONTEXT, &json);
        let b64 = &base64::engine::general_purpose::STANDARD;
        format!(
            "{}:{}",
            b64.encode(&sealed.nonce),
            b64.encode(&sealed.ciphertext)
        )
    }

    /// The id written beside every value these keys seal; `open` opens only
    /// values sealed under it.
    pub fn key_id(&self) -> i64 {
        self.key_id
    }

    /// A value derived from the master key that reveals nothing about it,
    /// stored once in the database: a process started with another key sees
    /// the mismatch and refuses to run instead of sealing codes no one can open.
    /// After a rotation it ends in `:<key id>`, so a process that did not
    /// read the history (a release before rotation, a history row gone)
    /// refuses too, instead of sealing under key id 1 and hashing outside
    /// the chains.
    pub fn check_value(&self) -> &str {
        &self.check
    }

    /// Whether the master key these keys come from is the one a stored
    /// check value (`check_value`, any key id) was made with.
    pub fn same_master(&self, stored_check: &str) -> bool {
        let mine = self.check.split(':').next();
        mine.is_some() && mine == stored_check.split(':').next()
    }

    /// A request hash of the form stored before request hashes were keyed
    /// (plain SHA-256), as it reads after this database's rotations.
    pub fn legacy_request_fingerprint(&self, request: &[u8]) -> Vec<u8> {
        self.request.wrapped(Sha256::digest(request).to_vec())
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
            key_id: self.key_id,
        }
    }

    pub fn open(&self, context: &str, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        if sealed.nonce.len() != 12 || sealed.key_id != self.key_id {
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
        self.fingerprint
            .hash(&[&product_id.to_be_bytes(), code.as_bytes()])
    }

    /// What an `Idempotency-Key` remembers of its request, to tell a retry
    /// from another request: keyed, since a body may hold a query password.
    pub fn request_fingerprint(&self, request: &[u8]) -> Vec<u8> {
        self.request.hash(&[request])
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
        self.query_password
            .hash(&[email.as_bytes(), &[0], password.as_bytes()])
    }
}

/// The old keys and the new of a `kami keys rotate`: what each stored
/// value becomes. The device marks and panel reports' signatures are not
/// carried over: they come from the master key, and a rotation voids them
/// (an operator confirms a remembered browser again).
pub struct Rotation {
    pub old: Keys,
    pub new: Keys,
}

impl Rotation {
    /// A value sealed under the old keys, sealed again under the new.
    pub fn reseal(&self, context: &str, sealed: &Sealed) -> Result<Sealed, SealError> {
        let plain = self.old.open(context, sealed)?;
        Ok(self.new.seal(context, &plain))
    }

    pub fn card_fingerprint(&self, stored: &[u8]) -> Vec<u8> {
        self.new.fingerprint.rewrap(stored)
    }

    pub fn query_password_hash(&self, stored: &[u8]) -> Vec<u8> {
        self.new.query_password.rewrap(stored)
    }

    pub fn request_fingerprint(&self, stored: &[u8]) -> Vec<u8> {
        self.new.request.rewrap(stored)
    }
}

/// The associated data each kind of sealed value is bound to: a ciphertext
/// moved to another row, or another kind of row, does not open.
pub mod context {
    pub fn card(product_id: i64) -> String {
        format!("card:{product_id}")
    }

    pub fn channel(name: &str) -> String {
        format!("channel:{name}")
    }

    pub fn totp(admin_id: i64) -> String {
        format!("totp:{admin_id}")
    }

    pub fn idempotent(scope: &str, key: &str) -> String {
        format!("idempotency:{scope}:{key}")
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
    fn a_rotation_reseals_and_rewraps_what_the_old_keys_stored() {
        let first = MasterKey::generate();
        let old = Keys::new(&first);
        let sealed = old.seal("card:3", b"CODE-9");
        let fingerprint = old.card_fingerprint(3, "CODE-9");
        let query = old.query_password_hash("a@example.com", "pw");
        let request = old.request_fingerprint(b"{}");

        let second = MasterKey::generate();
        let r = old.rotated(&second);
        assert_eq!(r.new.key_id(), FIRST_KEY_ID + 1);
        assert_ne!(r.new.check_value(), old.check_value());
        let resealed = r.reseal("card:3", &sealed).unwrap();
        assert_eq!(resealed.key_id, r.new.key_id());
        assert_eq!(r.new.open("card:3", &resealed).unwrap(), b"CODE-9");
        // Each key opens its own id's values only: the new never reads an
        // old value as if it were its own, the old nothing sealed since.
        assert_eq!(r.new.open("card:3", &sealed), Err(SealError::Malformed));
        assert!(old.open("card:3", &resealed).is_err());
        assert_eq!(r.reseal("card:4", &sealed), Err(SealError::Open));
        // A stored hash, wrapped, is what the new keys hash the same input to.
        assert_eq!(
            r.card_fingerprint(&fingerprint),
            r.new.card_fingerprint(3, "CODE-9")
        );
        assert_ne!(r.new.card_fingerprint(3, "CODE-9"), fingerprint);
        assert_eq!(
            r.query_password_hash(&query),
            r.new.query_password_hash("a@example.com", "pw")
        );
        assert_ne!(
            r.query_password_hash(&query),
            r.new.query_password_hash("a@example.com", "px")
        );
        assert_eq!(
            r.request_fingerprint(&request),
            r.new.request_fingerprint(b"{}")
        );

        // The history brings the same keys back with the new master key
        // only; a second rotation wraps again.
        let history = r.new.history();
        let again = Keys::with_history(&second, Some(&history)).unwrap();
        assert_eq!(again.key_id(), r.new.key_id());
        // The check names the key id: keys read without the history (key
        // id 1) do not pass for the rotated database's.
        assert_eq!(again.check_value(), r.new.check_value());
        assert!(r.new.check_value().ends_with(":2"));
        assert_ne!(Keys::new(&second).check_value(), r.new.check_value());
        assert!(Keys::new(&second).same_master(r.new.check_value()));
        assert!(!old.same_master(r.new.check_value()));
        assert_eq!(
            r.request_fingerprint(&Sha256::digest(b"{}")),
            r.new.legacy_request_fingerprint(b"{}")
        );
        assert_eq!(again.open("card:3", &resealed).unwrap(), b"CODE-9");
        assert_eq!(
            again.query_password_hash("a@example.com", "pw"),
            r.new.query_password_hash("a@example.com", "pw")
        );
        assert!(matches!(
            Keys::with_history(&first, Some(&history)),
            Err(KeyError::History)
        ));
        assert!(matches!(
            Keys::with_history(&second, Some("not:sealed")),
            Err(KeyError::History)
        ));
        let third = again.rotated(&MasterKey::generate());
        assert_eq!(third.new.key_id(), FIRST_KEY_ID + 2);
        assert_eq!(
            third.query_password_hash(&r.query_password_hash(&query)),
            third.new.query_password_hash("a@example.com", "pw")
        );
        assert!(!history.contains(&hex::encode(&fingerprint)));
    }

    #[test]
    fn keys_never_rotated_hash_as_before_the_chains() {
        // The values stored before hash chains existed: a plain HMAC
        // under each derived key.
        let m = MasterKey::generate();
        let k = Keys::new(&m);
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&m.derive("query-password")).unwrap();
        mac.update(b"a@example.com\0pw");
        assert_eq!(
            k.query_password_hash("a@example.com", "pw"),
            mac.finalize().into_bytes().to_vec()
        );
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&m.derive("card-fingerprint")).unwrap();
        mac.update(&5i64.to_be_bytes());
        mac.update(b"X");
        assert_eq!(
            k.card_fingerprint(5, "X"),
            mac.finalize().into_bytes().to_vec()
        );
        assert_eq!(k.key_id(), FIRST_KEY_ID);
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

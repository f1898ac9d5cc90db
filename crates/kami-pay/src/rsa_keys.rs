//! RSA keys and SHA256withRSA (PKCS#1 v1.5) signatures, shared by the Alipay
//! (RSA2) and WeChat Pay v3 channels. Keys come from files named in
//! `[channels.*]` or PEM pasted into the admin panel; a missing, empty or unreadable key stops the channel from
//! being built, so it can never run unable to verify (fail closed).

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};

use crate::ChannelContext;

/// Why a key could not be loaded. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{what} {path}: cannot read: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path}: the file is empty")]
    Empty { what: &'static str, path: String },
    #[error("give exactly one of {what}_file (a path) and {what} (the PEM itself)")]
    Source { what: &'static str },
    #[error("{what} {path}: not a PEM {expected} RSA key")]
    Parse {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
}

fn read_key_text(what: &'static str, path: &Path) -> Result<String, KeyError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        what,
        path: shown.clone(),
        source,
    })?;
    key_text(what, &shown, &text)
}

fn key_text(what: &'static str, shown: &str, text: &str) -> Result<String, KeyError> {
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(KeyError::Empty {
            what,
            path: shown.to_string(),
        });
    }
    Ok(text)
}

/// A key named by a `*_file` path in kami.toml, or pasted as PEM into the
/// admin panel (the field without `_file`); exactly one of the two.
pub struct KeySource<'a> {
    pub what: &'static str,
    pub file: Option<&'a str>,
    pub pem: Option<&'a str>,
}

impl KeySource<'_> {
    /// `(text, what the errors call it)`; never the key itself.
    fn text(&self, ctx: &ChannelContext) -> Result<(String, String), KeyError> {
        let present = |s: &Option<&str>| s.is_some_and(|s| !s.trim().is_empty());
        match (self.file, self.pem) {
            (Some(f), p) if !present(&p) => {
                let path = ctx.resolve(f);
                Ok((read_key_text(self.what, &path)?, path.display().to_string()))
            }
            (f, Some(p)) if f.is_none() => {
                Ok((key_text(self.what, "(pasted)", p)?, "(pasted)".into()))
            }
            _ => Err(KeyError::Source { what: self.what }),
        }
    }

    pub fn private_key(&self, ctx: &ChannelContext) -> Result<SigningKey<Sha256>, KeyError> {
        let (text, shown) = self.text(ctx)?;
        parse_private_key(self.what, &shown, &text)
    }

    pub fn public_key(&self, ctx: &ChannelContext) -> Result<VerifyingKey<Sha256>, KeyError> {
        let (text, shown) = self.text(ctx)?;
        parse_public_key(self.what, &shown, &text)
    }
}

/// The Alipay console shows keys as bare base64 without PEM armour; accept
/// that as DER too, since operators paste it as it is.
fn bare_der(text: &str) -> Option<Vec<u8>> {
    if text.starts_with("-----BEGIN") {
        return None;
    }
    let compact: String = text.split_whitespace().collect();
    B64.decode(compact).ok()
}

/// A private key in PEM, PKCS#8 or PKCS#1 (or bare base64 DER of either).
#[cfg(test)]
pub fn load_private_key(what: &'static str, path: &Path) -> Result<SigningKey<Sha256>, KeyError> {
    let text = read_key_text(what, path)?;
    parse_private_key(what, &path.display().to_string(), &text)
}

fn parse_private_key(
    what: &'static str,
    shown: &str,
    text: &str,
) -> Result<SigningKey<Sha256>, KeyError> {
    let key = match bare_der(text) {
        Some(der) => RsaPrivateKey::from_pkcs8_der(&der)
            .ok()
            .or_else(|| RsaPrivateKey::from_pkcs1_der(&der).ok()),
        None => RsaPrivateKey::from_pkcs8_pem(text)
            .ok()
            .or_else(|| RsaPrivateKey::from_pkcs1_pem(text).ok()),
    };
    key.map(SigningKey::<Sha256>::new).ok_or(KeyError::Parse {
        what,
        path: shown.to_string(),
        expected: "PKCS#8 or PKCS#1 private",
    })
}

/// A public key in PEM SubjectPublicKeyInfo (or PKCS#1, or bare base64 DER).
#[cfg(test)]
pub fn load_public_key(what: &'static str, path: &Path) -> Result<VerifyingKey<Sha256>, KeyError> {
    let text = read_key_text(what, path)?;
    parse_public_key(what, &path.display().to_string(), &text)
}

fn parse_public_key(
    what: &'static str,
    shown: &str,
    text: &str,
) -> Result<VerifyingKey<Sha256>, KeyError> {
    let key = match bare_der(text) {
        Some(der) => RsaPublicKey::from_public_key_der(&der)
            .ok()
            .or_else(|| RsaPublicKey::from_pkcs1_der(&der).ok()),
        None => RsaPublicKey::from_public_key_pem(text)
            .ok()
            .or_else(|| RsaPublicKey::from_pkcs1_pem(text).ok()),
    };
    key.map(VerifyingKey::<Sha256>::new).ok_or(KeyError::Parse {
        what,
        path: shown.to_string(),
        expected: "SubjectPublicKeyInfo public",
    })
}

/// Base64 SHA256withRSA signature of `message`.
pub fn sign(key: &SigningKey<Sha256>, message: &[u8]) -> String {
    B64.encode(key.sign(message).to_bytes())
}

/// True when `signature_b64` is a valid SHA256withRSA signature of `message`.
/// Everything here is public (message, signature, key), so no constant-time
/// comparison is involved.
pub fn verify(key: &VerifyingKey<Sha256>, message: &[u8], signature_b64: &str) -> bool {
    let Ok(raw) = B64.decode(signature_b64.trim()) else {
        return false;
    };
    let Ok(sig) = Signature::try_from(raw.as_slice()) else {
        return false;
    };
    key.verify(message, &sig).is_ok()
}

#[cfg(test)]
pub(crate) mod test_keys {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

    /// A throwaway key pair written as PKCS#8 private and SPKI public PEM.
    /// 1024 bits keeps unit tests fast; production keys are 2048+.
    pub fn pair(dir: &std::path::Path, stem: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let mut rng = rand::thread_rng();
        let key = rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let private = dir.join(format!("{stem}_private.pem"));
        let public = dir.join(format!("{stem}_public.pem"));
        std::fs::write(
            &private,
            key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        std::fs::write(
            &public,
            key.to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
        .unwrap();
        (private, public)
    }

    pub fn temp_dir(tag: &str) -> std::path::PathBuf {
        use rand::Rng;
        let dir = std::env::temp_dir().join(format!(
            "kami-pay-{tag}-{}",
            rand::thread_rng().gen::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_refuses_empty_or_garbage_keys() {
        let dir = test_keys::temp_dir("keys");
        let (private, public) = test_keys::pair(&dir, "a");
        let sk = load_private_key("test private key", &private).unwrap();
        let vk = load_public_key("test public key", &public).unwrap();
        let sig = sign(&sk, b"message");
        assert!(verify(&vk, b"message", &sig));
        assert!(!verify(&vk, b"messagE", &sig));
        assert!(!verify(&vk, b"message", "not base64!"));

        // The Alipay console's bare base64 (PEM without armour) loads too.
        let bare = dir.join("bare.txt");
        let pem = std::fs::read_to_string(&public).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        std::fs::write(&bare, body).unwrap();
        let bare_key = load_public_key("bare public key", &bare).unwrap();
        assert!(verify(&bare_key, b"message", &sig));

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "  \n").unwrap();
        assert!(matches!(
            load_private_key("k", &empty),
            Err(KeyError::Empty { .. })
        ));
        assert!(matches!(
            load_public_key("k", &dir.join("missing.pem")),
            Err(KeyError::Read { .. })
        ));
        // A private key is not a public key and vice versa.
        assert!(load_public_key("k", &private).is_err());
        assert!(load_private_key("k", &public).is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}

//! TOTP recovery codes: ten one-time codes an operator keeps on paper for
//! the day the phone is lost. 80 random bits each, written in an alphabet
//! without look-alikes (no I, L-vs-1, O-vs-0 confusion) as
//! `XXXX-XXXX-XXXX-XXXX`; stored only as the SHA-256 of the normalised code.

use rand::RngCore;

use crate::secrets::{ct_eq, token_hash};

/// How many codes an operator gets at a time.
pub const COUNT: usize = 10;

const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const LEN: usize = 16;

/// Fresh codes, formatted for display.
pub fn generate() -> Vec<String> {
    (0..COUNT)
        .map(|_| {
            let mut bytes = [0u8; LEN];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            // 256 is a multiple of 32: every symbol is equally likely.
            let symbols: Vec<char> = bytes
                .iter()
                .map(|b| ALPHABET[(b % 32) as usize] as char)
                .collect();
            symbols
                .chunks(4)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

/// What the operator typed, as stored: upper case, dashes and spaces
/// dropped. `None` when it cannot be a recovery code (a 6-digit TOTP code,
/// say), so the caller knows which kind of code it was given.
pub fn normalise(typed: &str) -> Option<String> {
    let s: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (s.len() == LEN && s.bytes().all(|b| ALPHABET.contains(&b))).then_some(s)
}

/// The hash kept for a code (formatted or not).
pub fn hash(code: &str) -> Option<Vec<u8>> {
    normalise(code).map(|s| token_hash(&s))
}

/// The index of the stored hash `typed` matches. Every hash is compared in
/// constant time, whatever matches first, so timing tells nothing.
pub fn find(stored: &[&[u8]], typed: &str) -> Option<usize> {
    let h = hash(typed)?;
    let mut found = None;
    for (i, s) in stored.iter().enumerate() {
        if ct_eq(s, &h) {
            found = Some(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_formatted_and_found_however_typed() {
        let codes = generate();
        assert_eq!(codes.len(), COUNT);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), COUNT);
        assert!(codes
            .iter()
            .all(|c| c.len() == 19 && c.matches('-').count() == 3));
        let hashes: Vec<Vec<u8>> = codes.iter().map(|c| hash(c).unwrap()).collect();
        let stored: Vec<&[u8]> = hashes.iter().map(Vec::as_slice).collect();
        let sloppy = codes[3].to_lowercase().replace('-', " ");
        assert_eq!(find(&stored, &sloppy), Some(3));
        assert_eq!(find(&stored, "123456"), None);
        assert_eq!(find(&stored, "AAAA-AAAA-AAAA-AAAA"), None);
    }
}

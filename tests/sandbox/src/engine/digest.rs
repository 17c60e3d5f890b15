//! Digests held as 32 bytes (MD5's 16 bytes zero-padded) instead of hex strings: a 50M-user audience is
//! 1.6 GB, not ~5 GB of `String`s. Hex comes back only on output, at the width of the digest's type.

use sha2::{Digest as _, Sha256};

/// A SHA-256 digest, or an MD5 digest followed by 16 zero bytes.
pub type Digest = [u8; 32];

/// Hex characters a digest of this `calculate_type` has: 64 for `*_SHA256`, 32 for `*_MD5`.
pub fn hex_width(calculate_type: &str) -> Option<usize> {
    if calculate_type.ends_with("_SHA256") {
        Some(64)
    } else if calculate_type.ends_with("_MD5") {
        Some(32)
    } else {
        None
    }
}

fn nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Exactly `width` (64 or 32) lowercase hex characters, decoded; anything else is `None`.
pub fn parse(line: &[u8], width: usize) -> Option<Digest> {
    if line.len() != width || width > 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(line.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// The digest as the lowercase hex it was parsed from.
pub fn encode(d: &Digest, width: usize) -> String {
    hex::encode(&d[..width / 2])
}

/// The match limit of a rate: a digest matches when its first 4 bytes (big-endian) are below it.
pub fn match_limit(match_rate: f64) -> f64 {
    match_rate * 4_294_967_296.0
}

/// Whether a digest "matches" a TikTok user (the same rule as `types::digest_matches` on its hex).
pub fn matches(d: &Digest, limit: f64) -> bool {
    (u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as f64) < limit
}

pub fn count_matched(ds: &[Digest], limit: f64) -> usize {
    ds.iter().filter(|d| matches(d, limit)).count()
}

/// Sorts and removes duplicates; O(n) when already strictly ascending (the engine's files are).
pub fn sort_dedup(v: &mut Vec<Digest>) {
    if !v.windows(2).all(|w| w[0] < w[1]) {
        v.sort_unstable();
        v.dedup();
    }
}

/// SHA-256 hex over the digests' hex, each followed by `\n`: for ascending digests this is
/// `ids_sha256` of their hex strings (lowercase hex sorts as its bytes do).
pub fn hex_lines_sha256(sorted: &[Digest], width: usize) -> String {
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut line = [0u8; 65];
    for d in sorted {
        // width is 32 or 64, so the slice fits
        if hex::encode_to_slice(&d[..width / 2], &mut line[..width]).is_err() {
            continue;
        }
        line[width] = b'\n';
        buf.extend_from_slice(&line[..=width]);
        if buf.len() >= 60 * 1024 {
            h.update(&buf);
            buf.clear();
        }
    }
    h.update(&buf);
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{digest_matches, ids_sha256};

    #[test]
    fn parse_and_encode_round_trip_at_both_widths() {
        let sha = "0a".repeat(32);
        let d = parse(sha.as_bytes(), 64).unwrap();
        assert_eq!(encode(&d, 64), sha);
        let md5 = "f1".repeat(16);
        let d = parse(md5.as_bytes(), 32).unwrap();
        assert_eq!(encode(&d, 32), md5);
        assert_eq!(&d[16..], &[0u8; 16]);
        assert!(parse("A".repeat(64).as_bytes(), 64).is_none());
        assert!(parse("a".repeat(63).as_bytes(), 64).is_none());
        assert!(parse(sha.as_bytes(), 32).is_none());
    }

    #[test]
    fn matching_agrees_with_the_hex_rule() {
        for hex in ["00", "7f", "b3", "ff", "4c"] {
            let s = hex.repeat(32);
            let d = parse(s.as_bytes(), 64).unwrap();
            for rate in [0.0, 0.3, 0.7, 1.0] {
                assert_eq!(matches(&d, match_limit(rate)), digest_matches(&s, rate));
            }
        }
    }

    #[test]
    fn hex_lines_hash_is_the_batch_identity() {
        let hexes: Vec<String> = ["0c", "a1", "5e"].iter().map(|h| h.repeat(32)).collect();
        let mut ds: Vec<Digest> = hexes
            .iter()
            .map(|h| parse(h.as_bytes(), 64).unwrap())
            .collect();
        sort_dedup(&mut ds);
        assert_eq!(hex_lines_sha256(&ds, 64), ids_sha256(&hexes));
    }
}

//! Identifier normalization and hashing, rule version 1 (`docs/identifier-normalization.md`).
//!
//! A raw value becomes either a 32-byte SHA-256 [`Digest`] or a [`SkipReason`]. The steps run in the order of
//! the rule; the first step that decides, decides.

mod device;
mod email;
mod phone;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digests::Digest;

/// The normalization rule version every snapshot records. Bump it with any change of output.
pub const RULE_VERSION: u16 = 1;

/// The longest value (in bytes) accepted from a file: longer ones are the sign of a broken quote.
pub const MAX_VALUE_BYTES: usize = 1024;

/// Which TikTok key the mapped Amplitude property holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum KeyKind {
    Email,
    Phone,
    Idfa,
    Gaid,
}

impl KeyKind {
    pub const ALL: [KeyKind; 4] = [KeyKind::Email, KeyKind::Phone, KeyKind::Idfa, KeyKind::Gaid];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Email => "EMAIL",
            KeyKind::Phone => "PHONE",
            KeyKind::Idfa => "IDFA",
            KeyKind::Gaid => "GAID",
        }
    }

    /// Stable one-byte code used in the snapshot format.
    pub fn code(self) -> u8 {
        match self {
            KeyKind::Email => 1,
            KeyKind::Phone => 2,
            KeyKind::Idfa => 3,
            KeyKind::Gaid => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<KeyKind> {
        KeyKind::ALL.into_iter().find(|k| k.code() == code)
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key kind {0:?}: expected one of email, phone, idfa, gaid")]
pub struct UnknownKeyKind(pub String);

impl FromStr for KeyKind {
    type Err = UnknownKeyKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        KeyKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| UnknownKeyKind(s.to_string()))
    }
}

/// Why a value was not turned into a digest. Every skip is counted with its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    Empty,
    InvalidEmail,
    InvalidPhone,
    InvalidDeviceId,
    OptedOutDeviceId,
    UnsupportedHash,
    MalformedRow,
}

impl SkipReason {
    pub const ALL: [SkipReason; 7] = [
        SkipReason::Empty,
        SkipReason::InvalidEmail,
        SkipReason::InvalidPhone,
        SkipReason::InvalidDeviceId,
        SkipReason::OptedOutDeviceId,
        SkipReason::UnsupportedHash,
        SkipReason::MalformedRow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Empty => "empty",
            SkipReason::InvalidEmail => "invalid_email",
            SkipReason::InvalidPhone => "invalid_phone",
            SkipReason::InvalidDeviceId => "invalid_device_id",
            SkipReason::OptedOutDeviceId => "opted_out_device_id",
            SkipReason::UnsupportedHash => "unsupported_hash",
            SkipReason::MalformedRow => "malformed_row",
        }
    }

    /// Index into `ALL`, for counters kept in a fixed array on the hot path.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SkipReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SkipReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown skip reason {s:?}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown phone region {0:?}: expected an ISO 3166-1 alpha-2 code such as US")]
pub struct UnknownRegion(pub String);

/// What normalization produced before hashing: handy for tests and explanations (never logged for real data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalized {
    /// The value was already a SHA-256 digest (64 hex digits) and passes through unhashed.
    PreHashed(Digest),
    /// The normalized text whose UTF-8 bytes get hashed.
    Text(String),
}

/// Normalizes and hashes values of one key kind. Cheap to clone; holds no per-value state.
#[derive(Debug, Clone)]
pub struct Normalizer {
    kind: KeyKind,
    region: Option<phonenumber::country::Id>,
}

impl Normalizer {
    /// `default_region` is only used for PHONE (numbers written without `+`).
    pub fn new(kind: KeyKind, default_region: Option<&str>) -> Result<Self, UnknownRegion> {
        let region = match default_region.map(str::trim).filter(|r| !r.is_empty()) {
            None => None,
            Some(r) => Some(
                r.to_ascii_uppercase()
                    .parse::<phonenumber::country::Id>()
                    .map_err(|_| UnknownRegion(r.to_string()))?,
            ),
        };
        Ok(Normalizer { kind, region })
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// A value read from a file: the byte-level checks (`malformed_row`) and then [`Normalizer::digest`].
    pub fn digest_field(&self, raw: &[u8]) -> Result<Digest, SkipReason> {
        if raw.len() > MAX_VALUE_BYTES {
            return Err(SkipReason::MalformedRow);
        }
        if self.kind == KeyKind::Email {
            // Hot path: most emails are short plain ASCII.
            if let Some(r) = email::digest_ascii::<true>(raw) {
                return r;
            }
        }
        if raw.iter().any(|&b| b == b'\n' || b == b'\r') {
            return Err(SkipReason::MalformedRow);
        }
        let s = std::str::from_utf8(raw).map_err(|_| SkipReason::MalformedRow)?;
        self.digest(s)
    }

    /// Normalizes and hashes one value.
    pub fn digest(&self, raw: &str) -> Result<Digest, SkipReason> {
        let v = trim_blanks(raw);
        if v.is_empty() {
            return Err(SkipReason::Empty);
        }
        if let Some(d) = parse_sha256_hex(v) {
            return Ok(d);
        }
        match self.kind {
            KeyKind::Email => email::digest(v),
            KeyKind::Phone => phone::normalize(v, self.region).map(|s| sha256(s.as_bytes())),
            KeyKind::Idfa | KeyKind::Gaid => {
                device::normalize(v, self.kind).map(|buf| sha256(&buf))
            }
        }
    }

    /// The normalized form (before hashing), for tests and the rule's examples.
    pub fn normalize(&self, raw: &str) -> Result<Normalized, SkipReason> {
        let v = trim_blanks(raw);
        if v.is_empty() {
            return Err(SkipReason::Empty);
        }
        if let Some(d) = parse_sha256_hex(v) {
            return Ok(Normalized::PreHashed(d));
        }
        let text = match self.kind {
            KeyKind::Email => email::normalize_unicode(v)?,
            KeyKind::Phone => phone::normalize(v, self.region)?,
            KeyKind::Idfa | KeyKind::Gaid => {
                let buf = device::normalize(v, self.kind)?;
                // device ids are ASCII by construction
                String::from_utf8_lossy(&buf).into_owned()
            }
        };
        Ok(Normalized::Text(text))
    }
}

/// The rule's blank set: Unicode White_Space plus BOM, zero-width space, word joiner and Mongolian vowel
/// separator. (`char::is_whitespace` is exactly the White_Space property.)
#[inline]
pub fn is_blank(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{FEFF}' | '\u{200B}' | '\u{2060}' | '\u{180E}')
}

/// ASCII members of the blank set (note: includes vertical tab, unlike `u8::is_ascii_whitespace`).
#[inline]
fn is_ascii_blank(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ')
}

#[inline]
pub fn trim_blanks(s: &str) -> &str {
    if s.is_ascii() {
        let b = s.as_bytes();
        let start = b
            .iter()
            .position(|&c| !is_ascii_blank(c))
            .unwrap_or(b.len());
        let end = b
            .iter()
            .rposition(|&c| !is_ascii_blank(c))
            .map_or(start, |i| i + 1);
        &s[start..end]
    } else {
        s.trim_matches(is_blank)
    }
}

#[inline]
pub(crate) fn is_hex_of_len(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Exactly 64 ASCII hex digits (anchored): an already computed SHA-256 digest.
fn parse_sha256_hex(s: &str) -> Option<Digest> {
    if !is_hex_of_len(s, 64) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(Digest(out))
}

/// SHA-256. Values up to 55 bytes (nearly every identifier) fit one block: padding it here and calling the
/// compression function directly skips the generic buffering. sha2 picks SHA-NI at run time when present.
#[inline]
pub(crate) fn sha256(bytes: &[u8]) -> Digest {
    if bytes.len() > 55 {
        return Digest(Sha256::digest(bytes).into());
    }
    let mut block = [0u8; 64];
    block[..bytes.len()].copy_from_slice(bytes);
    block[bytes.len()] = 0x80;
    block[56..].copy_from_slice(&((bytes.len() as u64) * 8).to_be_bytes());
    let mut state = SHA256_IV;
    sha2::block_api::compress256(&mut state, &[block]);
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    Digest(out)
}

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 of raw bytes, exposed for the benchmark's baseline only.
#[doc(hidden)]
pub fn sha256_for_bench(bytes: &[u8]) -> Digest {
    sha256(bytes)
}

#[cfg(test)]
mod tests;

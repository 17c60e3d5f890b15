//! EMAIL (TikTok EMAIL_SHA256). `v` is already trimmed, non-empty and not a 64-hex digest.

use super::{SkipReason, is_ascii_blank, is_blank, is_hex_of_len, sha256};
use crate::digests::Digest;

/// Values up to this many bytes are normalized in a stack buffer on the ASCII path.
const STACK_BUF: usize = 256;

pub(super) fn digest(v: &str) -> Result<Digest, SkipReason> {
    if is_hex_of_len(v, 32) {
        return Err(SkipReason::UnsupportedHash);
    }
    if v.is_ascii() && v.len() <= STACK_BUF {
        // Fast path: one pass over the bytes, no allocation. Must equal `normalize_unicode` on ASCII input
        // (a property test holds them together).
        let mut buf = [0u8; STACK_BUF];
        let n = normalize_ascii(v.as_bytes(), &mut buf)?;
        return Ok(sha256(&buf[..n]));
    }
    let s = normalize_unicode(v)?;
    Ok(sha256(s.as_bytes()))
}

/// Steps 2-5 for ASCII input, written into `out`; returns the length.
fn normalize_ascii(v: &[u8], out: &mut [u8; STACK_BUF]) -> Result<usize, SkipReason> {
    let mut n = 0;
    let mut ats = 0usize;
    let mut at_pos = 0usize;
    let mut in_local = true;
    let mut dropping_tag = false;
    for &b in v {
        if is_ascii_blank(b) {
            continue;
        }
        if b == b'@' {
            ats += 1;
            if in_local {
                in_local = false;
                at_pos = n;
            }
        } else if in_local {
            if dropping_tag {
                continue;
            }
            if b == b'+' {
                dropping_tag = true;
                continue;
            }
        }
        out[n] = b.to_ascii_lowercase();
        n += 1;
    }
    if ats != 1 || at_pos == 0 || !valid_domain(&out[at_pos + 1..n]) {
        return Err(SkipReason::InvalidEmail);
    }
    Ok(n)
}

/// Steps 2-5 on any input (the reference implementation of the rule).
pub(super) fn normalize_unicode(v: &str) -> Result<String, SkipReason> {
    if is_hex_of_len(v, 32) {
        return Err(SkipReason::UnsupportedHash);
    }
    let compact: String = v.chars().filter(|&c| !is_blank(c)).collect();
    // Full Unicode lowercase of the whole string (context-sensitive: final sigma).
    let lower = compact.to_lowercase();
    let Some((local, domain)) = lower.split_once('@') else {
        return Err(SkipReason::InvalidEmail);
    };
    let local = match local.find('+') {
        Some(i) => &local[..i],
        None => local,
    };
    if local.is_empty() || domain.contains('@') || !valid_domain(domain.as_bytes()) {
        return Err(SkipReason::InvalidEmail);
    }
    let mut out = String::with_capacity(local.len() + 1 + domain.len());
    out.push_str(local);
    out.push('@');
    out.push_str(domain);
    Ok(out)
}

/// The part after `@` contains a `.` and has no empty label.
fn valid_domain(d: &[u8]) -> bool {
    d.contains(&b'.') && d.split(|&b| b == b'.').all(|label| !label.is_empty())
}

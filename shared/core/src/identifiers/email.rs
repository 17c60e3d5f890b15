//! EMAIL (TikTok EMAIL_SHA256). `v` is already trimmed, non-empty and not a 64-hex digest.

use super::{SkipReason, is_blank, is_hex_of_len, sha256};
use crate::digests::Digest;

/// Values up to this many bytes are normalized in a stack buffer on the ASCII path.
const STACK_BUF: usize = 256;

pub(super) fn digest(v: &str) -> Result<Digest, SkipReason> {
    if let Some(r) = digest_ascii::<false>(v.as_bytes()) {
        return r;
    }
    if is_hex_of_len(v, 32) {
        return Err(SkipReason::UnsupportedHash);
    }
    let s = normalize_unicode(v)?;
    Ok(sha256(s.as_bytes()))
}

// Byte classes for the one-pass ASCII path.
const PLAIN: u8 = 0;
const UPPER: u8 = 1;
const BLANK: u8 = 2;
const AT: u8 = 3;
const PLUS: u8 = 4;
const BREAK: u8 = 5;
const OTHER: u8 = 6;

static CLASS: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut b = 0;
    while b < 128 {
        t[b] = PLAIN;
        b += 1;
    }
    let mut u = b'A';
    while u <= b'Z' {
        t[u as usize] = UPPER;
        u += 1;
    }
    t[b'\t' as usize] = BLANK;
    t[0x0B] = BLANK;
    t[0x0C] = BLANK;
    t[b' ' as usize] = BLANK;
    t[b'\n' as usize] = BREAK;
    t[b'\r' as usize] = BREAK;
    t[b'@' as usize] = AT;
    t[b'+' as usize] = PLUS;
    t
};

/// The whole EMAIL rule in one pass over ASCII bytes, without allocating. `None` means "not plain ASCII or
/// too long: use the Unicode path". With `FIELD`, a line break anywhere is `malformed_row` (a CSV value);
/// without it, `\n`/`\r` are blanks like the rule says. Must equal the reference path on every input
/// (property tests hold them together); `raw` is untrimmed.
pub(super) fn digest_ascii<const FIELD: bool>(raw: &[u8]) -> Option<Result<Digest, SkipReason>> {
    if raw.len() > STACK_BUF {
        return None;
    }
    let class = |b: u8| -> u8 {
        let c = CLASS[b as usize];
        if !FIELD && c == BREAK { BLANK } else { c }
    };
    let mut start = 0;
    let mut end = raw.len();
    while start < end && class(raw[start]) == BLANK {
        start += 1;
    }
    while end > start && class(raw[end - 1]) == BLANK {
        end -= 1;
    }
    let t = &raw[start..end];
    if t.is_empty() {
        return Some(Err(SkipReason::Empty));
    }
    if (t.len() == 64 || t.len() == 32) && t.iter().all(u8::is_ascii_hexdigit) {
        if t.len() == 32 {
            return Some(Err(SkipReason::UnsupportedHash));
        }
        let mut d = [0u8; 32];
        // all hex, even length: cannot fail
        hex::decode_to_slice(t, &mut d).ok()?;
        return Some(Ok(Digest(d)));
    }
    // One branch-free pass collects which byte classes occur; the common already-normalized email (lowercase,
    // no blanks, no tag) is validated and hashed in place, without copying.
    let mut seen = 0u32;
    for &b in t {
        seen |= 1 << class(b);
    }
    if seen & (1 << OTHER) != 0 {
        return None;
    }
    if FIELD && seen & (1 << BREAK) != 0 {
        return Some(Err(SkipReason::MalformedRow));
    }
    if seen & !((1 << PLAIN) | (1 << AT)) == 0 {
        let mut ats = t.iter().enumerate().filter(|(_, b)| **b == b'@');
        return match (ats.next(), ats.next()) {
            (Some((p, _)), None) if p > 0 && valid_domain(&t[p + 1..]) => Some(Ok(sha256(t))),
            _ => Some(Err(SkipReason::InvalidEmail)),
        };
    }
    let mut out = [0u8; STACK_BUF];
    let mut n = 0;
    let mut at: Option<usize> = None;
    let mut ats = 0u32;
    let mut i = 0;
    while i < t.len() {
        let b = t[i];
        i += 1;
        match class(b) {
            PLAIN => {
                out[n] = b;
                n += 1;
            }
            UPPER => {
                out[n] = b | 0x20;
                n += 1;
            }
            BLANK => {}
            AT => {
                ats += 1;
                if at.is_none() {
                    at = Some(n);
                }
                out[n] = b;
                n += 1;
            }
            PLUS if at.is_none() => {
                // Drop the tag up to the `@`, still checking the bytes skipped.
                while i < t.len() {
                    match class(t[i]) {
                        AT => break,
                        BREAK => return Some(Err(SkipReason::MalformedRow)),
                        OTHER => return None,
                        _ => i += 1,
                    }
                }
            }
            PLUS => {
                out[n] = b;
                n += 1;
            }
            BREAK => return Some(Err(SkipReason::MalformedRow)),
            _ => return None,
        }
    }
    match at {
        Some(p) if ats == 1 && p > 0 && valid_domain(&out[p + 1..n]) => Some(Ok(sha256(&out[..n]))),
        _ => Some(Err(SkipReason::InvalidEmail)),
    }
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

/// The part after `@` contains a `.` and has no empty label (no leading, trailing or doubled dot).
fn valid_domain(d: &[u8]) -> bool {
    // One branch-free pass (this runs for every email): a dot first, last or after a dot is an empty label.
    let mut prev_dot = true;
    let mut empty_label = false;
    let mut dots = 0u32;
    for &b in d {
        let dot = b == b'.';
        empty_label |= dot & prev_dot;
        prev_dot = dot;
        dots += u32::from(dot);
    }
    !empty_label && !prev_dot && dots > 0
}

#[cfg(test)]
mod tests {
    use super::valid_domain;

    /// The rule as written: no empty label (no leading, trailing or doubled dot) and at least one dot.
    fn as_written(d: &[u8]) -> bool {
        let (Some(&first), Some(&last)) = (d.first(), d.last()) else {
            return false;
        };
        first != b'.' && last != b'.' && d.contains(&b'.') && !d.windows(2).any(|w| w == b"..")
    }

    #[test]
    fn the_one_pass_domain_check_equals_the_rule_on_every_short_domain() {
        let alphabet = [b'a', b'.', b'-'];
        let mut checked = 0;
        for len in 0..=8u32 {
            for mut code in 0..3usize.pow(len) {
                let d: Vec<u8> = (0..len)
                    .map(|_| {
                        let b = alphabet[code % 3];
                        code /= 3;
                        b
                    })
                    .collect();
                assert_eq!(
                    valid_domain(&d),
                    as_written(&d),
                    "{:?}",
                    String::from_utf8_lossy(&d)
                );
                checked += 1;
            }
        }
        assert_eq!(checked, (0..=8).map(|l| 3usize.pow(l)).sum::<usize>());
    }
}

//! IDFA (IDFA_SHA256) and GAID (GAID_SHA256 / AAID_SHA256): UUID-shaped device ids.

use super::{KeyKind, SkipReason};

const HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// Steps 1-3; `v` is trimmed, non-empty and not a 64-hex digest. Returns the 36-byte canonical form.
pub(super) fn normalize(v: &str, kind: KeyKind) -> Result<[u8; 36], SkipReason> {
    let b = v.as_bytes();
    let mut hex = [0u8; 32];
    match b.len() {
        36 => {
            let mut j = 0;
            for (i, &c) in b.iter().enumerate() {
                if HYPHENS.contains(&i) {
                    if c != b'-' {
                        return Err(SkipReason::InvalidDeviceId);
                    }
                } else if c.is_ascii_hexdigit() {
                    hex[j] = c;
                    j += 1;
                } else {
                    return Err(SkipReason::InvalidDeviceId);
                }
            }
        }
        32 if b.iter().all(u8::is_ascii_hexdigit) => hex.copy_from_slice(b),
        _ => return Err(SkipReason::InvalidDeviceId),
    }
    if hex.iter().all(|&c| c == b'0') {
        return Err(SkipReason::OptedOutDeviceId);
    }
    let mut out = [b'-'; 36];
    let mut j = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        if HYPHENS.contains(&i) {
            continue;
        }
        *slot = match kind {
            KeyKind::Idfa => hex[j].to_ascii_uppercase(),
            _ => hex[j].to_ascii_lowercase(),
        };
        j += 1;
    }
    Ok(out)
}

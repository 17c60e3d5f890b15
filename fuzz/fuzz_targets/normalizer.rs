//! The normalizer on arbitrary values: never a panic; the one-pass ASCII fast path (`digest_field`) agrees with
//! the reference path (`normalize` then SHA-256); a normalized value normalizes to itself.
#![no_main]

use audience_core::identifiers::{MAX_VALUE_BYTES, Normalized, sha256_for_bench};
use audience_core::{KeyKind, Normalizer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, raw)) = data.split_first() else {
        return;
    };
    let kind = KeyKind::ALL[(ctl & 3) as usize];
    let region = match (ctl >> 2) & 3 {
        0 => None,
        1 => Some("US"),
        2 => Some("GB"),
        _ => Some("DE"),
    };
    let Ok(n) = Normalizer::new(kind, region) else {
        return;
    };
    let field = n.digest_field(raw);
    let Ok(s) = std::str::from_utf8(raw) else {
        return;
    };
    // digest_field adds only byte-level checks to digest: over-long values and line breaks.
    let byte_level_skip =
        raw.len() > MAX_VALUE_BYTES || raw.iter().any(|&b| b == b'\n' || b == b'\r');
    let digest = n.digest(s);
    if !byte_level_skip {
        assert_eq!(field, digest, "digest_field vs digest on {s:?}");
    }
    let reference = n.normalize(s).map(|v| match v {
        Normalized::PreHashed(d) => d,
        Normalized::Text(t) => sha256_for_bench(t.as_bytes()),
    });
    assert_eq!(digest, reference, "digest vs normalize+sha256 on {s:?}");
    if let Ok(Normalized::Text(t)) = n.normalize(s) {
        assert_eq!(
            n.normalize(&t),
            Ok(Normalized::Text(t.clone())),
            "normalizing {s:?} twice"
        );
    }
});

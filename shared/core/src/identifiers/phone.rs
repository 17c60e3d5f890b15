//! PHONE (TikTok PHONE_SHA256): E.164 with the leading `+`, via libphonenumber's rules (`phonenumber` crate,
//! pinned: its metadata decides validity).

use phonenumber::{Mode, country};

use super::{SkipReason, is_blank, is_hex_of_len};

/// Steps 1-5; `v` is trimmed, non-empty and not a 64-hex digest. Returns the E.164 string.
pub(super) fn normalize(v: &str, region: Option<country::Id>) -> Result<String, SkipReason> {
    if is_hex_of_len(v, 32) {
        return Err(SkipReason::UnsupportedHash);
    }
    let mut compact: String = v.chars().filter(|&c| !is_blank(c)).collect();
    // `00` is the international call prefix in most of the world; the crate does not rewrite it.
    if compact.starts_with("00") {
        compact.replace_range(0..2, "+");
    }
    let compact = drop_separators(&compact);
    let international = compact.starts_with('+');
    if !international && region.is_none() {
        return Err(SkipReason::InvalidPhone);
    }
    let parse_region = if international { None } else { region };
    // The crate can panic on some hostile inputs in older versions; it is a third-party parser fed with
    // data from outside, so a panic is contained and counted as an invalid phone rather than aborting a run.
    let parsed = std::panic::catch_unwind(|| phonenumber::parse(parse_region, &compact))
        .map_err(|_| SkipReason::InvalidPhone)?
        .map_err(|_| SkipReason::InvalidPhone)?;
    if !phonenumber::is_valid(&parsed) {
        return Err(SkipReason::InvalidPhone);
    }
    Ok(parsed.format().mode(Mode::E164).to_string())
}

/// libphonenumber strips its punctuation (dashes, dots, brackets, slashes, ...) before it reads the country
/// code; the `phonenumber` crate reads the first digit run as the country code and so fails on `+1415-555-2671`
/// once blanks are removed. Dropping the separators of the number part (not of an extension such as `ext.12`)
/// restores libphonenumber's behaviour.
fn drop_separators(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    for c in chars.by_ref() {
        if c.is_alphabetic() || matches!(c, '#' | ';' | ',' | '*') {
            // the crate only finds an extension marker after a separator
            out.push(' ');
            out.push(c);
            break;
        }
        if is_separator(c) {
            continue;
        }
        out.push(c);
    }
    out.extend(chars);
    out
}

/// libphonenumber's VALID_PUNCTUATION, less the blanks (already removed) and `x` (an extension marker).
fn is_separator(c: char) -> bool {
    matches!(
        c,
        '-' | '\u{2010}'..='\u{2015}'
            | '\u{2212}'
            | '\u{30FC}'
            | '\u{FF0D}'..='\u{FF0F}'
            | '\u{00AD}'
            | '(' | ')' | '\u{FF08}' | '\u{FF09}' | '\u{FF3B}' | '\u{FF3D}'
            | '.' | '[' | ']' | '/' | '~' | '\u{2053}' | '\u{223C}' | '\u{FF5E}'
    )
}

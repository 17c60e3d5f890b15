//! Reading an uploaded customer file, once and before the state lock is taken (the HTTP layer runs it on
//! a blocking thread): its MD5, its non-blank lines, the lines that fit the `calculate_type` as 32-byte
//! digests (ascending, distinct) and the log's batch identity over the lines.

use sha2::{Digest as _, Sha256};

use super::digest::{Digest, hex_lines_sha256, hex_width, parse, sort_dedup};

#[derive(Debug, Clone)]
pub struct ScannedFile {
    /// The `calculate_type` the lines were read as.
    pub calculate_type: String,
    pub md5_hex: String,
    /// Non-blank lines.
    pub lines: usize,
    /// 1-based numbers (among non-blank lines) of the lines that did not fit.
    pub failed_lines: Vec<usize>,
    /// The lines that fit, decoded, ascending and distinct.
    pub digests: Vec<Digest>,
    /// SHA-256 hex over the non-blank lines sorted, each followed by `\n` (the log's `ids_sha256`).
    pub lines_sha256: String,
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(bytes))
}

/// Non-blank lines (CRLF tolerated) of text read with U+FFFD for bytes that are not UTF-8.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
}

/// Reads a file's bytes as lines of `calculate_type` (lines that do not fit are counted, not rejected).
pub fn scan_file(bytes: &[u8], calculate_type: &str) -> ScannedFile {
    let text = String::from_utf8_lossy(bytes);
    let width = hex_width(calculate_type);
    let mut n = 0;
    let mut failed_lines = Vec::new();
    let mut digests = Vec::with_capacity(bytes.len() / 65 + 1);
    for l in lines(&text) {
        n += 1;
        match width.and_then(|w| parse(l.as_bytes(), w)) {
            Some(d) => digests.push(d),
            None => failed_lines.push(n),
        }
    }
    let lines_sha256 = match width {
        // Every line is a digest of one width: the sorted lines are the sorted digests, duplicates kept.
        Some(w) if failed_lines.is_empty() => {
            digests.sort_unstable();
            let sha = hex_lines_sha256(&digests, w);
            digests.dedup();
            sha
        }
        _ => {
            sort_dedup(&mut digests);
            sorted_lines_sha256(&text)
        }
    };
    ScannedFile {
        calculate_type: calculate_type.to_string(),
        md5_hex: md5_hex(bytes),
        lines: n,
        failed_lines,
        digests,
        lines_sha256,
    }
}

/// `ids_sha256` of the text's non-blank lines, without a `String` per line.
fn sorted_lines_sha256(text: &str) -> String {
    let mut all: Vec<&str> = lines(text).collect();
    all.sort_unstable();
    let mut h = Sha256::new();
    for l in all {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{file_lines, ids_sha256};

    #[test]
    fn scan_counts_lines_and_keeps_the_batch_identity() {
        let a = "b".repeat(64);
        let c = "0".repeat(64);
        let good = format!("{a}\r\n{c}\n\n{a}\n");
        let bad = format!("{a}\nnot-hex\n{}\n\u{e9}\n{c}", "A".repeat(64));
        for body in [good, bad] {
            let s = scan_file(body.as_bytes(), "EMAIL_SHA256");
            let lines = file_lines(body.as_bytes());
            assert_eq!(s.lines, lines.len());
            assert_eq!(s.lines_sha256, ids_sha256(&lines));
            assert_eq!(s.digests.len(), 2, "distinct digests of {body:?}");
            assert!(s.digests[0] < s.digests[1]);
        }
        let s = scan_file(format!("{a}\nx").as_bytes(), "EMAIL_SHA256");
        assert_eq!(s.failed_lines, vec![2]);
        let md5 = scan_file("f".repeat(32).as_bytes(), "IDFA_MD5");
        assert!(md5.failed_lines.is_empty());
        assert_eq!(md5.digests.len(), 1);
    }
}

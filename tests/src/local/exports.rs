//! Amplitude-style cohort exports for the demo and the end-to-end tests, with the usual dirt, and what TikTok's
//! audience must hold after syncing them. The expected digests are computed here independently of the
//! product's normalizer (SHA-256 of plain lowercase addresses), so a test that compares them is a real check.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// One export file and what syncing it must produce.
#[derive(Debug, Clone)]
pub struct Export {
    /// `<cohort>_<YYYY-MM-DDTHH:MM>_existing.csv[.gz]` (Amplitude's naming; no prefix).
    pub file_name: String,
    pub bytes: Vec<u8>,
    /// Data rows (header excluded).
    pub rows: u64,
    /// Rows with a valid identifier (duplicates included).
    pub valid: u64,
    /// Distinct digests: exactly what the audience must hold.
    pub expected: BTreeSet<String>,
    /// Skipped rows by reason.
    pub skipped: BTreeMap<String, u64>,
}

impl Export {
    pub fn duplicates(&self) -> u64 {
        self.valid - self.expected.len() as u64
    }
}

/// The SHA-256 hex of a normalized email.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// `user<i>@example.com` for each i: plain addresses whose normalized form is themselves.
pub fn users(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("user{i}@example.com")).collect()
}

/// How dirty an export is.
#[derive(Debug, Clone, Copy)]
pub struct Dirt {
    /// Rows with an empty or blank email.
    pub empty: u32,
    /// Rows that are not email addresses.
    pub invalid: u32,
    /// Rows repeating an earlier user in another case (the same digest).
    pub duplicates: u32,
    /// Rows already holding a SHA-256 digest (upper case: passed through lowercased, not hashed again).
    pub prehashed: u32,
    /// Rows holding an MD5 digest (`unsupported_hash`).
    pub md5: u32,
}

impl Dirt {
    pub const NONE: Dirt = Dirt {
        empty: 0,
        invalid: 0,
        duplicates: 0,
        prehashed: 0,
        md5: 0,
    };
    pub const USUAL: Dirt = Dirt {
        empty: 12,
        invalid: 9,
        duplicates: 150,
        prehashed: 20,
        md5: 3,
    };
}

/// An export of `users` (plain addresses), in Amplitude's CSV shape (BOM, `Amplitude ID,User ID,Email`, CRLF),
/// gzip-compressed when `gzip`.
pub fn amplitude_export(
    cohort_id: &str,
    exported_at: DateTime<Utc>,
    users: &[String],
    dirt: Dirt,
    gzip: bool,
) -> Export {
    let mut lines = vec!["\u{feff}Amplitude ID,User ID,Email".to_string()];
    let mut expected = BTreeSet::new();
    let mut skipped: BTreeMap<String, u64> = BTreeMap::new();
    let mut valid = 0u64;
    let mut id = 100_000u64;
    let mut row = |lines: &mut Vec<String>, email: &str| {
        id += 1;
        lines.push(format!("{id},u{id},\"{email}\""));
    };
    for u in users {
        row(&mut lines, u);
        expected.insert(sha256_hex(u));
        valid += 1;
    }
    for (i, u) in users.iter().take(dirt.duplicates as usize).enumerate() {
        // The same person, spelled differently: upper case and blanks around it.
        let spelled = if i % 2 == 0 {
            u.to_uppercase()
        } else {
            format!("  {u} ")
        };
        row(&mut lines, &spelled);
        valid += 1;
    }
    for i in 0..dirt.empty {
        row(&mut lines, if i % 2 == 0 { "" } else { "   " });
        *skipped.entry("empty".into()).or_default() += 1;
    }
    for i in 0..dirt.invalid {
        let bad = match i % 3 {
            0 => format!("not-an-email-{i}"),
            1 => format!("user{i}@localhost"),
            _ => format!("user{i}@@example.com"),
        };
        row(&mut lines, &bad);
        *skipped.entry("invalid_email".into()).or_default() += 1;
    }
    for i in 0..dirt.prehashed {
        let digest = sha256_hex(&format!("prehashed{i}-{cohort_id}@example.org"));
        row(&mut lines, &digest.to_uppercase());
        expected.insert(digest);
        valid += 1;
    }
    for i in 0..dirt.md5 {
        row(
            &mut lines,
            &format!(
                "{:032x}",
                0xd41d8cd98f00b204e9800998ecf8427eu128 + i as u128
            ),
        );
        *skipped.entry("unsupported_hash".into()).or_default() += 1;
    }
    let rows = (lines.len() - 1) as u64;
    let text = lines.join("\r\n") + "\r\n";
    let stamp = exported_at.format("%Y-%m-%dT%H:%M");
    let (file_name, bytes) = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        // Writing to a Vec cannot fail.
        let _ = enc.write_all(text.as_bytes());
        (
            format!("{cohort_id}_{stamp}_existing.csv.gz"),
            enc.finish().unwrap_or_default(),
        )
    } else {
        (
            format!("{cohort_id}_{stamp}_existing.csv"),
            text.into_bytes(),
        )
    };
    Export {
        file_name,
        bytes,
        rows,
        valid,
        expected,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn counts_add_up() {
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap();
        let e = amplitude_export("c1abc", t, &users(0..500), Dirt::USUAL, false);
        let skipped: u64 = e.skipped.values().sum();
        assert_eq!(e.rows, e.valid + skipped);
        assert_eq!(e.expected.len(), 500 + 20);
        assert_eq!(e.duplicates(), 150);
        assert_eq!(e.file_name, "c1abc_2026-11-25T10:00_existing.csv");
        assert_eq!(
            e.expected.iter().next().map(|d| d.len()),
            Some(64),
            "digests are 64 hex"
        );
    }
}

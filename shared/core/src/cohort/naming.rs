//! Amplitude's S3 cohort export naming: `<path>/<cohortID>_<timestamp>_<difftype>[_<routingkey>].csv[.gz]`.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffType {
    /// Users who entered since the last export.
    Entering,
    /// Users who left since the last export.
    Exiting,
    /// The complete membership at export time: the only file a sync reads.
    Existing,
}

impl DiffType {
    pub fn as_str(self) -> &'static str {
        match self {
            DiffType::Entering => "entering",
            DiffType::Exiting => "exiting",
            DiffType::Existing => "existing",
        }
    }
}

impl fmt::Display for DiffType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed export file name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExportName {
    pub cohort_id: String,
    /// When Amplitude ran the export (UTC).
    pub exported_at: DateTime<Utc>,
    pub difftype: DiffType,
    pub routing_key: Option<String>,
    /// The name ends in `.gz`.
    pub gzip: bool,
}

impl ExportName {
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn exported_at_rfc3339(&self) -> String {
        format_rfc3339(self.exported_at)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the one timestamp spelling this project writes.
pub fn format_rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error(
        "{name:?} does not follow Amplitude's cohort export naming \
         <cohortID>_<YYYY-MM-DDTHH:MM>_<entering|exiting|existing>[_<routingkey>].csv[.gz]: {why}"
    )]
    NotAnExport { name: String, why: &'static str },
    #[error("S3 event key {0:?} is not valid URL encoding of UTF-8")]
    BadEventKey(String),
}

fn not_export(name: &str, why: &'static str) -> NamingError {
    NamingError::NotAnExport {
        name: name.to_string(),
        why,
    }
}

/// Parses the file-name part (after the last `/`) of a raw object key or a file path. The key is used as
/// is: decode S3 event keys first with [`decode_s3_event_key`]; listed keys are never decoded.
pub fn parse_export_key(key: &str) -> Result<ExportName, NamingError> {
    let name = key.rsplit(['/', '\\']).next().unwrap_or(key);
    let lower = name.to_ascii_lowercase();
    let (stem_len, gzip) = if lower.ends_with(".csv.gz") {
        (name.len() - 7, true)
    } else if lower.ends_with(".csv") {
        (name.len() - 4, false)
    } else {
        return Err(not_export(name, "the name must end in .csv or .csv.gz"));
    };
    let stem = &name[..stem_len];
    let mut parts = stem.splitn(4, '_');
    let cohort_id = parts.next().unwrap_or_default();
    if cohort_id.is_empty() || !cohort_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(not_export(
            name,
            "the cohort id must be a non-empty alphanumeric string",
        ));
    }
    let ts = parts
        .next()
        .ok_or_else(|| not_export(name, "no timestamp after the cohort id"))?;
    let exported_at = parse_timestamp(ts).ok_or_else(|| {
        not_export(
            name,
            "the timestamp must be YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH-MM (optionally :SS)",
        )
    })?;
    let difftype = match parts.next() {
        Some("existing") => DiffType::Existing,
        Some("entering") => DiffType::Entering,
        Some("exiting") => DiffType::Exiting,
        Some(_) => {
            return Err(not_export(
                name,
                "the difftype must be entering, exiting or existing",
            ));
        }
        None => return Err(not_export(name, "no difftype after the timestamp")),
    };
    let routing_key = match parts.next() {
        None => None,
        Some("") => return Err(not_export(name, "empty routing key after '_'")),
        Some(r) => Some(r.to_string()),
    };
    Ok(ExportName {
        cohort_id: cohort_id.to_string(),
        exported_at,
        difftype,
        routing_key,
        gzip,
    })
}

/// `YYYY-MM-DDTHH:MM` or `YYYY-MM-DDTHH-MM`, optionally followed by `:SS` or `-SS`.
fn parse_timestamp(ts: &str) -> Option<DateTime<Utc>> {
    let b = ts.as_bytes();
    if !(b.len() == 16 || b.len() == 19) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = ts.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !matches!(b[13], b':' | b'-') {
        return None;
    }
    let sec = if b.len() == 19 {
        if !matches!(b[16], b':' | b'-') {
            return None;
        }
        num(17..19)?
    } else {
        0
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let dt = date.and_hms_opt(num(11..13)?, num(14..16)?, sec)?;
    Some(dt.and_utc())
}

/// Decodes a key as S3 event notifications carry it (`+` for a space, `%XX` escapes). Call it once, on
/// event keys only.
pub fn decode_s3_event_key(encoded: &str) -> Result<String, NamingError> {
    let plus_as_space = encoded.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| NamingError::BadEventKey(encoded.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_amplitude_names() {
        let n = parse_export_key("exports/amp/abc123x_2024-03-05T14:07_existing_prod.csv").unwrap();
        assert_eq!(n.cohort_id, "abc123x");
        assert_eq!(
            n.exported_at,
            Utc.with_ymd_and_hms(2024, 3, 5, 14, 7, 0).unwrap()
        );
        assert_eq!(n.difftype, DiffType::Existing);
        assert_eq!(n.routing_key.as_deref(), Some("prod"));
        assert!(!n.gzip);
        assert_eq!(n.exported_at_rfc3339(), "2024-03-05T14:07:00Z");

        let n = parse_export_key("x9_2024-03-05T14-07-33_entering.csv.gz").unwrap();
        assert_eq!(
            n.exported_at,
            Utc.with_ymd_and_hms(2024, 3, 5, 14, 7, 33).unwrap()
        );
        assert_eq!(n.difftype, DiffType::Entering);
        assert_eq!(n.routing_key, None);
        assert!(n.gzip);

        let n = parse_export_key("a/b c/Q1_2024-12-31T23:59:59_exiting_my key_x.CSV").unwrap();
        assert_eq!(n.routing_key.as_deref(), Some("my key_x"));
        assert_eq!(n.difftype, DiffType::Exiting);
    }

    #[test]
    fn rejects_other_names_with_a_reason() {
        for bad in [
            "cohort.csv",
            "abc_2024-03-05T14:07_existing.json",
            "abc_2024-03-05_existing.csv",
            "abc_2024-13-05T14:07_existing.csv",
            "abc_2024-03-05T25:07_existing.csv",
            "abc_2024-03-05T14:07_everyone.csv",
            "ab-c_2024-03-05T14:07_existing.csv",
            "_2024-03-05T14:07_existing.csv",
            "abc_2024-03-05T14:07.csv",
            "abc_2024-03-05T14:07_existing_.csv",
            "abc_2024-03-05T14%3A07_existing.csv",
        ] {
            let e = parse_export_key(bad).unwrap_err();
            assert!(e.to_string().contains("Amplitude"), "{bad}: {e}");
        }
    }

    #[test]
    fn event_keys_are_decoded_once() {
        assert_eq!(
            decode_s3_event_key("cohorts/my+dir/abc_2024-03-05T14%3A07_existing.csv").unwrap(),
            "cohorts/my dir/abc_2024-03-05T14:07_existing.csv"
        );
        // a literal plus arrives as %2B and stays a plus
        assert_eq!(decode_s3_event_key("a%2Bb").unwrap(), "a+b");
        // %25 decodes to a single % (not decoded twice)
        assert_eq!(decode_s3_event_key("a%253A").unwrap(), "a%3A");
        assert!(decode_s3_event_key("bad%FF").is_err());
    }

    #[test]
    fn ordering_by_time() {
        let a = parse_export_key("c_2024-03-05T14:07_existing.csv").unwrap();
        let b = parse_export_key("c_2024-03-05T14-08_existing.csv").unwrap();
        assert!(a.exported_at < b.exported_at);
    }
}

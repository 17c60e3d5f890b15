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
    /// The optional integer field Amplitude's destination writes before the cohort id
    /// (`integer_cohortID_...`), kept as written (leading zeros too). Never the cohort id.
    pub leading: Option<String>,
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

    /// The start of every file name of this cohort with the same leading field: `[<leading>_]<cohortID>_`.
    pub fn name_prefix(&self) -> String {
        match &self.leading {
            Some(l) => format!("{l}_{}_", self.cohort_id),
            None => format!("{}_", self.cohort_id),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the one timestamp spelling this project writes.
pub fn format_rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Why a key is not an export: the rule it breaks, as a stable code for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyMismatch {
    Extension,
    CohortId,
    NoTimestamp,
    Timestamp,
    NoDifftype,
    Difftype,
    EmptyRoutingKey,
    LeadingField,
}

impl KeyMismatch {
    /// Stable snake_case code (metric dimension, log field).
    pub fn code(self) -> &'static str {
        match self {
            KeyMismatch::Extension => "extension",
            KeyMismatch::CohortId => "cohort_id",
            KeyMismatch::NoTimestamp => "no_timestamp",
            KeyMismatch::Timestamp => "timestamp",
            KeyMismatch::NoDifftype => "no_difftype",
            KeyMismatch::Difftype => "difftype",
            KeyMismatch::EmptyRoutingKey => "empty_routing_key",
            KeyMismatch::LeadingField => "leading_field",
        }
    }

    fn why(self) -> &'static str {
        match self {
            KeyMismatch::Extension => "the name must end in .csv or .csv.gz",
            KeyMismatch::CohortId => "the cohort id must be a non-empty alphanumeric string",
            KeyMismatch::NoTimestamp => "no timestamp after the cohort id",
            KeyMismatch::Timestamp => {
                "the timestamp must be YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH-MM (optionally :SS)"
            }
            KeyMismatch::NoDifftype => "no difftype after the timestamp",
            KeyMismatch::Difftype => "the difftype must be entering, exiting or existing",
            KeyMismatch::EmptyRoutingKey => "empty routing key after '_'",
            KeyMismatch::LeadingField => "only one integer field may stand before the cohort id",
        }
    }
}

impl fmt::Display for KeyMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.why())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error(
        "{name:?} does not follow Amplitude's cohort export naming \
         [<integer>_]<cohortID>_<YYYY-MM-DDTHH:MM>_<entering|exiting|existing>[_<routingkey>].csv[.gz]: {reason}"
    )]
    NotAnExport { name: String, reason: KeyMismatch },
    #[error("S3 event key {0:?} is not valid URL encoding of UTF-8")]
    BadEventKey(String),
}

impl NamingError {
    /// The broken rule (`None` for a key that is not even valid URL encoding).
    pub fn mismatch(&self) -> Option<KeyMismatch> {
        match self {
            NamingError::NotAnExport { reason, .. } => Some(*reason),
            NamingError::BadEventKey(_) => None,
        }
    }

    /// Stable code of the reason (metric dimension).
    pub fn code(&self) -> &'static str {
        self.mismatch().map_or("bad_event_key", KeyMismatch::code)
    }
}

fn not_export(name: &str, reason: KeyMismatch) -> NamingError {
    NamingError::NotAnExport {
        name: name.to_string(),
        reason,
    }
}

fn parse_difftype(field: &str) -> Option<DiffType> {
    match field {
        "existing" => Some(DiffType::Existing),
        "entering" => Some(DiffType::Entering),
        "exiting" => Some(DiffType::Exiting),
        _ => None,
    }
}

fn is_cohort_id(f: &str) -> bool {
    !f.is_empty() && f.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Parses the file-name part (after the last `/`) of a raw object key or a file path. The key is used as
/// is: decode S3 event keys first with [`decode_s3_event_key`]; listed keys are never decoded.
///
/// Anchored on the timestamp and the difftype (Amplitude writes `integer_cohortID_timestamp_difftype_
/// routingkey`): the field before the first timestamp is the cohort id, at most one integer field may
/// stand before it, and everything after the difftype is the routing key (which may contain `_`).
pub fn parse_export_key(key: &str) -> Result<ExportName, NamingError> {
    use KeyMismatch as M;
    let name = key.rsplit(['/', '\\']).next().unwrap_or(key);
    let lower = name.to_ascii_lowercase();
    let (stem_len, gzip) = if lower.ends_with(".csv.gz") {
        (name.len() - 7, true)
    } else if lower.ends_with(".csv") {
        (name.len() - 4, false)
    } else {
        return Err(not_export(name, M::Extension));
    };
    let fields: Vec<&str> = name[..stem_len].split('_').collect();
    // The first field (after at least the cohort id) that is a timestamp anchors the name.
    let anchor = fields
        .iter()
        .enumerate()
        .skip(1)
        .find_map(|(i, f)| parse_timestamp(f).map(|t| (i, t)));
    let Some((at, exported_at)) = anchor else {
        return Err(not_export(
            name,
            match fields.len() {
                _ if !is_cohort_id(fields[0]) => M::CohortId,
                1 => M::NoTimestamp,
                _ => M::Timestamp,
            },
        ));
    };
    let cohort_id = fields[at - 1];
    if !is_cohort_id(cohort_id) {
        return Err(not_export(name, M::CohortId));
    }
    let leading = match &fields[..at - 1] {
        [] => None,
        [l] if l.bytes().all(|b| b.is_ascii_digit()) && !l.is_empty() => Some(l.to_string()),
        _ => return Err(not_export(name, M::LeadingField)),
    };
    let difftype = match fields.get(at + 1) {
        None => return Err(not_export(name, M::NoDifftype)),
        Some(f) => parse_difftype(f).ok_or_else(|| not_export(name, M::Difftype))?,
    };
    let routing_key = match fields.get(at + 2..) {
        None | Some([]) => None,
        Some(rest) => {
            let r = rest.join("_");
            if r.is_empty() {
                return Err(not_export(name, M::EmptyRoutingKey));
            }
            Some(r)
        }
    };
    Ok(ExportName {
        leading,
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

    /// Amplitude's documented key: `path/integer_cohortID_YYYY-MM-DDTHH:SS_difftype_routingkey.csv`.
    #[test]
    fn parses_the_leading_integer_form() {
        let n = parse_export_key(
            "amp/cohorts/187520_5f3kx9b_2026-11-20T10:00_existing_my_route_key.csv",
        )
        .unwrap();
        assert_eq!(n.leading.as_deref(), Some("187520"));
        assert_eq!(n.cohort_id, "5f3kx9b");
        assert_eq!(n.difftype, DiffType::Existing);
        assert_eq!(n.routing_key.as_deref(), Some("my_route_key"));
        assert_eq!(n.name_prefix(), "187520_5f3kx9b_");
        // A numeric cohort id with no leading field stays the cohort id.
        let n = parse_export_key("42_2026-11-20T10-00_entering.csv").unwrap();
        assert_eq!((n.leading, n.cohort_id.as_str()), (None, "42"));
        // Leading zeros are kept; a routing key that itself looks like a name does not move the anchor.
        let n =
            parse_export_key("007_c1_2026-11-20T10:00:05_exiting_c2_2026-11-21T10:00_existing.csv")
                .unwrap();
        assert_eq!(n.leading.as_deref(), Some("007"));
        assert_eq!(n.cohort_id, "c1");
        assert_eq!(n.difftype, DiffType::Exiting);
        assert_eq!(
            n.routing_key.as_deref(),
            Some("c2_2026-11-21T10:00_existing")
        );
        // The hand-written form keeps working and has the plain prefix.
        let n = parse_export_key("c9_2026-11-20T10:00_existing.csv").unwrap();
        assert_eq!((n.name_prefix(), n.leading), ("c9_".to_string(), None));
    }

    #[test]
    fn mismatches_have_a_typed_reason() {
        use KeyMismatch as M;
        for (key, want) in [
            ("a_b_c_2026-11-20T10:00_existing.csv", M::LeadingField),
            ("x1_c_2026-11-20T10:00_existing.csv", M::LeadingField),
            ("12_c-d_2026-11-20T10:00_existing.csv", M::CohortId),
            ("c_2026-11-20T10:00_existing_.csv", M::EmptyRoutingKey),
            ("c_2026-11-20T10:00_all.csv", M::Difftype),
            ("c_2026-11-20T10:00.csv", M::NoDifftype),
            ("c.csv", M::NoTimestamp),
            ("c_yesterday_existing.csv", M::Timestamp),
            ("c_2026-11-20T10:00_existing.txt", M::Extension),
        ] {
            let e = parse_export_key(key).unwrap_err();
            assert_eq!(e.mismatch(), Some(want), "{key}: {e}");
            assert_eq!(e.code(), want.code());
        }
        assert_eq!(
            decode_s3_event_key("%FF").unwrap_err().code(),
            "bad_event_key"
        );
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

//! Keys that match no export naming rule: counted per reason in the process and emitted as the CloudWatch
//! embedded metric `AudienceSync/UnmatchedKeys` (dimension `Reason`), so a misnamed Amplitude destination
//! shows as a number instead of silently starting nothing. An S3 event's key that starts nothing (misnamed, or
//! an `existing` export of a cohort no sync reads) is also kept as an [`UnmatchedExport`] (`GET
//! /v1/unmatched-exports`): its key, size and why, never its contents.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::warn;

use super::naming::{KeyMismatch, NamingError};

/// How long an unmatched export is kept (DynamoDB TTL; a repeat of the same key replaces it).
pub const UNMATCHED_RETENTION_DAYS: i64 = 30;
/// Reason code of an export whose cohort no sync reads.
pub const NO_SYNC: &str = "no_sync";

/// An object that reached the bucket and started nothing: metadata only, never the file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmatchedExport {
    pub key: String,
    /// From the S3 event (absent when the event had none).
    pub size: Option<u64>,
    pub seen_at: DateTime<Utc>,
    /// A stable code: a [`KeyMismatch`] code, `bad_event_key`, or [`NO_SYNC`].
    pub reason: String,
    pub message: String,
    /// When the name could be parsed.
    pub cohort_id: Option<String>,
}

impl UnmatchedExport {
    /// A key that follows no export naming rule.
    pub fn misnamed(
        key: &str,
        size: Option<u64>,
        error: &NamingError,
        now: DateTime<Utc>,
    ) -> UnmatchedExport {
        UnmatchedExport {
            key: key.to_string(),
            size,
            seen_at: now,
            reason: error.code().to_string(),
            message: error.to_string(),
            cohort_id: None,
        }
    }

    /// An `existing` export of a cohort that no sync reads (when it arrived).
    pub fn no_sync(
        key: &str,
        size: Option<u64>,
        cohort_id: &str,
        now: DateTime<Utc>,
    ) -> UnmatchedExport {
        UnmatchedExport {
            key: key.to_string(),
            size,
            seen_at: now,
            reason: NO_SYNC.to_string(),
            message: format!(
                "no sync reads cohort {cohort_id}: create one (POST /v1/projects/{{project_id}}/syncs) \
                 and the next export is synced"
            ),
            cohort_id: Some(cohort_id.to_string()),
        }
    }

    /// When the store forgets it.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.seen_at + chrono::Duration::days(UNMATCHED_RETENTION_DAYS)
    }
}

const REASONS: [Option<KeyMismatch>; 9] = [
    Some(KeyMismatch::Extension),
    Some(KeyMismatch::CohortId),
    Some(KeyMismatch::NoTimestamp),
    Some(KeyMismatch::Timestamp),
    Some(KeyMismatch::NoDifftype),
    Some(KeyMismatch::Difftype),
    Some(KeyMismatch::EmptyRoutingKey),
    Some(KeyMismatch::LeadingField),
    None, // not valid URL encoding
];

static COUNTS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];

fn slot(reason: Option<KeyMismatch>) -> usize {
    REASONS.iter().position(|r| *r == reason).unwrap_or(8)
}

/// Records one key that is not an export: counter, a warning with the reason code, one EMF line.
/// `source` says where it was seen (`s3_event`, `listing`).
pub fn record(error: &NamingError, source: &'static str) {
    COUNTS[slot(error.mismatch())].fetch_add(1, Ordering::Relaxed);
    warn!(reason = error.code(), source, error = %error, "key matches no export naming rule");
    let emf = json!({
        "_aws": {
            "Timestamp": chrono::Utc::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": "AudienceSync",
                "Dimensions": [["Reason"]],
                "Metrics": [{"Name": "UnmatchedKeys", "Unit": "Count"}]
            }]
        },
        "Reason": error.code(),
        "Source": source,
        "UnmatchedKeys": 1
    });
    // EMF is read from the function's stdout as one JSON document per line.
    println!("{emf}");
}

/// How many keys this process recorded for a reason (`None`: bad URL encoding).
pub fn count(reason: Option<KeyMismatch>) -> u64 {
    COUNTS[slot(reason)].load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cohort::naming::parse_export_key;

    #[test]
    fn counts_per_reason() {
        let before = count(Some(KeyMismatch::LeadingField));
        let e = parse_export_key("a_b_c_2026-11-20T10:00_existing.csv").unwrap_err();
        record(&e, "listing");
        record(&e, "s3_event");
        assert_eq!(count(Some(KeyMismatch::LeadingField)), before + 2);
    }
}

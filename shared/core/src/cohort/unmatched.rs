//! Keys that match no export naming rule: counted per reason in the process and emitted as the CloudWatch
//! embedded metric `AudienceSync/UnmatchedKeys` (dimension `Reason`), so a misnamed Amplitude destination
//! shows as a number instead of silently starting nothing. Listing them in the console is a later issue.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;
use tracing::warn;

use super::naming::{KeyMismatch, NamingError};

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

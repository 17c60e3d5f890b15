//! Finding a cohort's newest `existing` export without listing the whole cohort prefix (90 days of hourly
//! exports for 100 cohorts is ~650k keys). The newest export seen of each cohort is kept in the state table;
//! a run lists only the keys of that cohort from the seen export's hour on (usually one short page), and the
//! whole prefix only when nothing is known yet and `<prefix>/<cohortID>_` holds nothing (Amplitude's
//! `<integer>_<cohortID>_` form or a sub-path: its first export is found once, then remembered).

use crate::cohort::naming::{DiffType, parse_export_key};
use crate::model::ExportRef;
use crate::ports::{CohortStore, ExportObject, PortError, StateStore};

/// One ListObjectsV2 request: keys under `prefix`, lexicographically after `start_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListStep {
    pub prefix: String,
    pub start_after: Option<String>,
}

/// The cheap listing first, and the one to run when it finds nothing. With a seen export there is no
/// second step: when its hour holds nothing any more (lifecycle expired it) and nothing newer came, a whole
/// listing would find nothing either (new paths announce themselves by S3 event, which is remembered).
pub fn list_steps(
    cohort_prefix: &str,
    cohort_id: &str,
    seen: Option<&str>,
) -> (ListStep, Option<ListStep>) {
    let root = match cohort_prefix.trim_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    let whole = ListStep {
        prefix: root.clone(),
        start_after: None,
    };
    let hinted = seen.and_then(|key| {
        let name = parse_export_key(key).ok()?;
        let file_at = key.rfind(['/', '\\']).map_or(0, |i| i + 1);
        let prefix = format!("{}{}", &key[..file_at], name.name_prefix());
        // From the seen export's hour on (`YYYY-MM-DDTHH`): whatever the minute/second separators (`:` or
        // `-`) and whether seconds are written, every later export of the cohort sorts after this.
        let hour = key.get(prefix.len()..prefix.len() + 13)?;
        Some(ListStep {
            start_after: Some(format!("{prefix}{hour}")),
            prefix,
        })
    });
    match hinted {
        Some(h) => (h, None),
        None => (
            ListStep {
                prefix: format!("{root}{cohort_id}_"),
                start_after: None,
            },
            Some(whole),
        ),
    }
}

/// Whether `candidate` is a newer `existing` export of the cohort than `best` (ties: later LastModified).
pub fn is_newer(cohort_id: &str, candidate: &ExportObject, best: Option<&ExportObject>) -> bool {
    if candidate.name.cohort_id != cohort_id || candidate.name.difftype != DiffType::Existing {
        return false;
    }
    best.is_none_or(|b| {
        (candidate.name.exported_at, candidate.meta.last_modified)
            > (b.name.exported_at, b.meta.last_modified)
    })
}

/// The newest `existing` export of the cohort: the seen export from the state table narrows the listing,
/// and the result is remembered for the next run.
pub async fn newest_export(
    state: &dyn StateStore,
    cohorts: &dyn CohortStore,
    cohort_id: &str,
) -> Result<Option<ExportObject>, PortError> {
    let seen = state.latest_seen_export(cohort_id).await?;
    let found = cohorts
        .newest_existing_export(cohort_id, seen.as_ref().map(|s| s.s3_key.as_str()))
        .await?;
    if let Some(o) = &found {
        state
            .note_seen_export(cohort_id, &o.to_export_ref())
            .await?;
    }
    Ok(found)
}

/// An S3 event's export, remembered as seen (the key is authoritative; no listing).
pub fn seen_from_event(key: &str) -> Option<(String, ExportRef)> {
    let name = parse_export_key(key).ok()?;
    (name.difftype == DiffType::Existing).then(|| {
        (
            name.cohort_id.clone(),
            ExportRef {
                s3_key: key.to_string(),
                exported_at: name.exported_at,
                etag: None,
                last_modified: None,
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_without_and_with_a_seen_export() {
        let (first, whole) = list_steps("cohorts/", "c1", None);
        assert_eq!(first.prefix, "cohorts/c1_");
        assert_eq!(first.start_after, None);
        assert_eq!(whole.map(|w| w.prefix).as_deref(), Some("cohorts/"));
        let (first, whole) = list_steps("", "c1", None);
        assert_eq!(first.prefix, "c1_");
        assert_eq!(whole.map(|w| w.prefix).as_deref(), Some(""));
        let (first, whole) = list_steps(
            "cohorts",
            "c1",
            Some("cohorts/amp/187520_c1_2026-11-20T10:00_existing_r_k.csv"),
        );
        assert_eq!(first.prefix, "cohorts/amp/187520_c1_");
        assert_eq!(
            first.start_after.as_deref(),
            Some("cohorts/amp/187520_c1_2026-11-20T10")
        );
        assert_eq!(whole, None);
        // A later export in the same hour with `-` separators still sorts after the start.
        assert!(
            "cohorts/amp/187520_c1_2026-11-20T10-30_existing.csv"
                > "cohorts/amp/187520_c1_2026-11-20T10"
        );
    }
}

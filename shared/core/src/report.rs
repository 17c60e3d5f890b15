//! The pre-flight (preview) report: what a cohort file would give, before anything reaches TikTok.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cohort::{CohortDigests, ExportName};

/// TikTok's minimum audience size (it counts *matched* users, so more uploads are needed in practice).
pub const TIKTOK_MIN_AUDIENCE: u64 = 1000;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PreviewReport {
    pub rows: u64,
    pub valid: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub skipped: BTreeMap<String, u64>,
    pub meets_tiktok_minimum: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removes: Option<u64>,
    pub cohort_id: Option<String>,
    pub difftype: Option<String>,
    pub exported_at: Option<String>,
    pub routing_key: Option<String>,
    pub key: String,
    pub column: String,
    pub rule_version: u16,
}

impl PreviewReport {
    pub fn new(
        read: &CohortDigests,
        name: Option<&ExportName>,
        key: crate::KeyKind,
        column: &str,
    ) -> PreviewReport {
        let c = read.counts();
        PreviewReport {
            rows: c.rows,
            valid: c.valid,
            unique: c.unique,
            duplicates: c.duplicates,
            skipped: c.skipped,
            meets_tiktok_minimum: c.unique >= TIKTOK_MIN_AUDIENCE,
            adds: None,
            removes: None,
            cohort_id: name.map(|n| n.cohort_id.clone()),
            difftype: name.map(|n| n.difftype.as_str().to_string()),
            exported_at: name.map(|n| n.exported_at_rfc3339()),
            routing_key: name.and_then(|n| n.routing_key.clone()),
            key: key.as_str().to_string(),
            column: column.to_string(),
            rule_version: crate::RULE_VERSION,
        }
    }

    /// A short human-readable report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let name = match (&self.cohort_id, &self.exported_at, &self.difftype) {
            (Some(c), Some(t), Some(d)) => format!(
                "Amplitude cohort {c}, {d} export of {t}{}",
                self.routing_key
                    .as_ref()
                    .map(|r| format!(" (routing key {r})"))
                    .unwrap_or_default()
            ),
            _ => "file name does not follow Amplitude's export naming".to_string(),
        };
        s.push_str(&format!("{name}\n"));
        s.push_str(&format!(
            "key {} from column {:?} (normalization rule v{})\n",
            self.key, self.column, self.rule_version
        ));
        s.push_str(&format!("rows        {:>12}\n", self.rows));
        s.push_str(&format!("valid       {:>12}\n", self.valid));
        s.push_str(&format!("unique      {:>12}\n", self.unique));
        s.push_str(&format!("duplicates  {:>12}\n", self.duplicates));
        let skipped: u64 = self.skipped.values().sum();
        s.push_str(&format!("skipped     {:>12}\n", skipped));
        for (reason, n) in &self.skipped {
            s.push_str(&format!("  {reason:<22}{n:>10}\n"));
        }
        if let (Some(a), Some(r)) = (self.adds, self.removes) {
            s.push_str(&format!(
                "vs previous snapshot: +{a} to add, -{r} to remove\n"
            ));
        }
        if self.meets_tiktok_minimum {
            s.push_str(&format!(
                "{} unique identifiers: at least TikTok's minimum of {TIKTOK_MIN_AUDIENCE}. TikTok counts \
                 *matched* users (often 40-80% of uploads), so the audience may still be too small.\n",
                self.unique
            ));
        } else {
            s.push_str(&format!(
                "{} unique identifiers: below TikTok's minimum of {TIKTOK_MIN_AUDIENCE} matched users; \
                 a customer-file sync will wait until the cohort grows.\n",
                self.unique
            ));
        }
        s
    }
}

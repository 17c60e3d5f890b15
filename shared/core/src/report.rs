//! The pre-flight (preview) report: what a cohort file would give, before anything reaches TikTok.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cohort::{CohortDigests, ExportName};
use crate::model::{RunState, WriteMode};
use crate::sync::guards::{self, GuardInput, GuardSettings, Verdict};

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
    /// What a run would do with this file: the engine's own guards (`sync::guards`), so a preview and a run
    /// cannot disagree. Against the sync in `against` when there is one, else a first run of a new
    /// customer-file sync with the default guards.
    pub verdict: PreviewVerdict,
    /// The sync the preview was computed against (its committed snapshot, uncertain set and guards).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against: Option<PreviewBasis>,
}

/// What a sync-specific preview compared the file with.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PreviewBasis {
    pub sync_id: String,
    pub audience_exists: bool,
    /// Digests in the committed snapshot the adds and removes are counted from (0 before the first commit).
    pub committed_digests: u64,
    pub committed_export: Option<String>,
    pub committed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Writes that got no answer: re-sent in the cohort's direction, counted in `adds`/`removes`.
    pub uncertain_resent: u64,
    /// The removal guard's measure: users of the committed snapshot not in this file.
    pub cohort_removes: u64,
    pub guards: GuardSettings,
    /// Why the committed snapshot was not used (another rule version or key), if so.
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PreviewVerdict {
    /// `would_apply` or `would_refuse`.
    pub outcome: &'static str,
    /// The run state a refusal gives (`failed`, `held_for_review`, `waiting_for_minimum`).
    pub state: Option<RunState>,
    pub guard: Option<&'static str>,
    pub message: String,
}

impl PreviewVerdict {
    pub fn of(v: &Verdict) -> PreviewVerdict {
        match v {
            Verdict::Proceed => PreviewVerdict {
                outcome: "would_apply",
                state: None,
                guard: None,
                message: "every guard passes: a run would send this file's identifiers".into(),
            },
            Verdict::Refuse {
                guard,
                state,
                reason,
            } => PreviewVerdict {
                outcome: "would_refuse",
                state: Some(*state),
                guard: Some(guard),
                message: reason.clone(),
            },
        }
    }
}

impl PreviewReport {
    /// Against a first run of a new sync: no audience yet, nothing to remove, the default guards.
    pub fn new(
        read: &CohortDigests,
        name: Option<&ExportName>,
        key: crate::KeyKind,
        column: &str,
    ) -> PreviewReport {
        let verdict = guards::check(
            &GuardInput {
                stats: &read.stats,
                unique: read.counts().unique,
                base_len: 0,
                removes: 0,
                write_mode: WriteMode::CustomerFile,
                audience_exists: false,
            },
            &GuardSettings::default(),
        );
        Self::with_verdict(read, name, key, column, &verdict)
    }

    /// The counts of `read` with a verdict the caller reached (see `Engine::assess`).
    pub fn with_verdict(
        read: &CohortDigests,
        name: Option<&ExportName>,
        key: crate::KeyKind,
        column: &str,
        verdict: &Verdict,
    ) -> PreviewReport {
        let c = read.counts();
        PreviewReport {
            verdict: PreviewVerdict::of(verdict),
            against: None,
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

    /// The changes a run of `basis.sync_id` would send.
    pub fn against(mut self, basis: PreviewBasis, adds: u64, removes: u64) -> PreviewReport {
        if self.verdict.guard.is_none() {
            self.verdict.message = format!(
                "every guard of sync {} passes: a run would add {adds} and remove {removes} users",
                basis.sync_id
            );
        }
        self.adds = Some(adds);
        self.removes = Some(removes);
        self.against = Some(basis);
        self
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
        match self.verdict.guard {
            None => s.push_str(&format!(
                "{} unique identifiers. TikTok counts *matched* users (often 40-80% of uploads), so the \
                 audience may still be smaller than that.\nverdict: a first run would apply this file.\n",
                self.unique
            )),
            Some(g) => s.push_str(&format!(
                "verdict: a first run would refuse this file (guard {g}, run state {}): {}\n",
                self.verdict
                    .state
                    .and_then(|st| serde_json::to_value(st).ok())
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                self.verdict.message
            )),
        }
        s
    }
}

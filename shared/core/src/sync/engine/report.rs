//! What a run leaves to read: one structured log line, CloudWatch embedded-metric figures, and the JSON
//! report in S3. Counts and ids only: never a token or an identifier.

use std::time::Duration;

use serde_json::json;
use tracing::{info, warn};

use super::Engine;
use crate::model::{RunLedger, RunState};

impl Engine {
    pub(super) fn log_run(&self, l: &RunLedger, took: Duration) {
        let skipped: u64 = l.skipped.values().sum();
        info!(
            run_id = %l.run_id, sync_id = %l.sync_id, project_id = %l.project_id, trigger = ?l.trigger,
            state = ?l.state, reason = l.reason.as_deref().unwrap_or(""), rows = l.rows, valid = l.valid,
            unique = l.unique, skipped, adds_planned = l.adds.planned, adds_applied = l.adds.applied,
            adds_held = l.adds.held, adds_deferred = l.adds.deferred, removes_planned = l.removes.planned,
            removes_applied = l.removes.applied, removes_held = l.removes.held,
            removes_deferred = l.removes.deferred, tiktok_calls = l.tiktok_calls, duration_ms = took.as_millis() as u64,
            "sync run"
        );
        let state = serde_json::to_value(l.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let emf = json!({
            "_aws": {
                "Timestamp": self.now().timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": "AudienceSync",
                    "Dimensions": [["State"]],
                    "Metrics": [
                        {"Name": "Runs", "Unit": "Count"}, {"Name": "FailedRuns", "Unit": "Count"},
                        {"Name": "ReconnectRequired", "Unit": "Count"},
                        {"Name": "Rows", "Unit": "Count"}, {"Name": "Valid", "Unit": "Count"},
                        {"Name": "Skipped", "Unit": "Count"},
                        {"Name": "AddsPlanned", "Unit": "Count"}, {"Name": "AddsApplied", "Unit": "Count"},
                        {"Name": "AddsHeld", "Unit": "Count"}, {"Name": "AddsDeferred", "Unit": "Count"},
                        {"Name": "RemovesPlanned", "Unit": "Count"}, {"Name": "RemovesApplied", "Unit": "Count"},
                        {"Name": "RemovesHeld", "Unit": "Count"}, {"Name": "RemovesDeferred", "Unit": "Count"},
                        {"Name": "TikTokCalls", "Unit": "Count"}, {"Name": "DurationMs", "Unit": "Milliseconds"}
                    ]
                }]
            },
            "State": state,
            "SyncId": l.sync_id, "RunId": l.run_id,
            "Runs": 1,
            "FailedRuns": u64::from(l.state == RunState::Failed),
            "ReconnectRequired": u64::from(l.reason.as_deref().is_some_and(|r| r.contains("reconnect TikTok"))),
            "Rows": l.rows, "Valid": l.valid, "Skipped": skipped,
            "AddsPlanned": l.adds.planned, "AddsApplied": l.adds.applied, "AddsHeld": l.adds.held,
            "AddsDeferred": l.adds.deferred, "RemovesPlanned": l.removes.planned,
            "RemovesApplied": l.removes.applied, "RemovesHeld": l.removes.held,
            "RemovesDeferred": l.removes.deferred, "TikTokCalls": l.tiktok_calls,
            "DurationMs": took.as_millis() as u64
        });
        // EMF is read from the function's stdout as one JSON document per line.
        println!("{emf}");
    }

    pub(super) async fn write_report(&self, ledger: &RunLedger) {
        let report = match serde_json::to_value(ledger) {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "run report not serializable");
                return;
            }
        };
        // A report is an explanation, not state: a failed write is logged, never fails the run.
        if let Err(e) = self
            .deps
            .cohorts
            .put_run_report(&ledger.project_id, &ledger.sync_id, &ledger.run_id, &report)
            .await
        {
            warn!(error = %e, run_id = %ledger.run_id, "run report not written");
        }
    }

    /// Removes a report written for a run whose ledger was then refused (the sync was deleted).
    pub(super) async fn delete_report(&self, ledger: &RunLedger) {
        if let Err(e) = self
            .deps
            .cohorts
            .delete_run_report(&ledger.project_id, &ledger.sync_id, &ledger.run_id)
            .await
        {
            warn!(error = %e, run_id = %ledger.run_id, "run report not deleted");
        }
    }
}

//! Failure notifications: what the engine tells a webhook (Slack-compatible `{"text": ...}` plus structured
//! fields) after a run's outcome is committed, and when. Ids, states, reasons and counts only: never a token
//! or an identifier. The port is [`crate::ports::Notifier`]; delivery is best effort.

use serde::Serialize;
use serde_json::{Value, json};

use crate::model::{ChangeCounts, RunLedger, RunState};

/// Why a notice is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// A run failed (a repeat of the previous run's failure, same reason, is not told again).
    RunFailed,
    /// TikTok refused the project's token: the integration became `reconnect_required` (once per change).
    ReconnectRequired,
    /// A guard held the changes for review (once, until a run ends otherwise).
    HeldForReview,
    /// Runs in a row applied nothing (told when the count reaches the warning threshold).
    RepeatedHolds,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::RunFailed => "run_failed",
            NoticeKind::ReconnectRequired => "reconnect_required",
            NoticeKind::HeldForReview => "held_for_review",
            NoticeKind::RepeatedHolds => "repeated_holds",
        }
    }
}

/// One notice about one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub project_id: String,
    pub sync_id: String,
    pub cohort_id: String,
    pub run_id: String,
    pub state: RunState,
    pub reason: Option<String>,
    pub adds: ChangeCounts,
    pub removes: ChangeCounts,
    pub consecutive_holds: u32,
}

/// What the engine knows when it decides (after the commit).
pub struct NoticeInput<'a> {
    pub cohort_id: &'a str,
    /// The sync's previous run (before this one), if any.
    pub previous: Option<&'a RunLedger>,
    pub run: &'a RunLedger,
    pub consecutive_holds: u32,
    pub holds_before_warning: u32,
    /// This run moved the integration to `reconnect_required`.
    pub reconnect_marked: bool,
}

/// The notice a committed run calls for, if any.
pub fn notice_for(i: &NoticeInput<'_>) -> Option<Notice> {
    let run = i.run;
    let prev_state = i.previous.map(|p| p.state);
    let reason = run.reason.as_deref().unwrap_or("");
    let kind = if i.reconnect_marked {
        NoticeKind::ReconnectRequired
    } else {
        match run.state {
            // Reconnect failures were told when the integration changed; a lost lease is another run's work.
            RunState::Failed if reason.contains("reconnect TikTok") => return None,
            RunState::Failed if reason.contains("(lease lost)") => return None,
            RunState::Failed
                if prev_state == Some(RunState::Failed)
                    && i.previous.and_then(|p| p.reason.as_deref()) == run.reason.as_deref() =>
            {
                return None;
            }
            RunState::Failed => NoticeKind::RunFailed,
            RunState::HeldForReview if prev_state == Some(RunState::HeldForReview) => return None,
            RunState::HeldForReview => NoticeKind::HeldForReview,
            RunState::Held
                if i.holds_before_warning > 0 && i.consecutive_holds == i.holds_before_warning =>
            {
                NoticeKind::RepeatedHolds
            }
            _ => return None,
        }
    };
    Some(Notice {
        kind,
        project_id: run.project_id.clone(),
        sync_id: run.sync_id.clone(),
        cohort_id: i.cohort_id.to_string(),
        run_id: run.run_id.clone(),
        state: run.state,
        reason: run.reason.clone(),
        adds: run.adds,
        removes: run.removes,
        consecutive_holds: i.consecutive_holds,
    })
}

fn state_str(s: RunState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn counts_json(c: &ChangeCounts) -> Value {
    json!({"planned": c.planned, "applied": c.applied, "held": c.held, "deferred": c.deferred})
}

impl Notice {
    /// One line for people (Slack's `text`).
    pub fn text(&self) -> String {
        let head = match self.kind {
            NoticeKind::RunFailed => "run failed",
            NoticeKind::ReconnectRequired => {
                "TikTok refused the token: reconnect the project (POST .../connect); its schedules are off"
            }
            NoticeKind::HeldForReview => "changes held for review",
            NoticeKind::RepeatedHolds => "runs in a row applied nothing",
        };
        let mut t = format!(
            "audience-sync: {head}. project {}, sync {} (cohort {}), run {}: {}",
            self.project_id,
            self.sync_id,
            self.cohort_id,
            self.run_id,
            state_str(self.state)
        );
        if let Some(r) = &self.reason {
            t.push_str(&format!(" ({r})"));
        }
        t.push_str(&format!(
            "; adds {} planned, {} applied; removes {} planned, {} applied",
            self.adds.planned, self.adds.applied, self.removes.planned, self.removes.applied
        ));
        if self.kind == NoticeKind::RepeatedHolds {
            t.push_str(&format!("; {} runs in a row", self.consecutive_holds));
        }
        t
    }

    /// The webhook body: Slack's `text` plus the same facts as fields.
    pub fn to_json(&self) -> Value {
        json!({
            "text": self.text(),
            "event": self.kind.as_str(),
            "project_id": self.project_id,
            "sync_id": self.sync_id,
            "cohort_id": self.cohort_id,
            "run_id": self.run_id,
            "state": state_str(self.state),
            "reason": self.reason,
            "adds": counts_json(&self.adds),
            "removes": counts_json(&self.removes),
            "consecutive_holds": self.consecutive_holds,
        })
    }
}

//! Settle: a pure function from what a run planned and what TikTok did to the run's state, counts, the
//! sync's owed work and what happens next. No port is called here, so every outcome is unit-tested.

use chrono::{DateTime, Utc};

use super::lease::Next;
use crate::model::{ChangeCounts, RunState};

/// Why applying stopped before the plan was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The Lambda deadline is near: commit and continue in a new invocation.
    Deadline,
    /// The run failed; `retry` when the cause may pass by itself (TikTok unreachable, answers lost).
    Failed { reason: String, retry: bool },
    /// The token does not work: the integration needs a reconnect.
    Reconnect(String),
    /// The audience is gone or expired on TikTok's side (confirmed): a new one is created.
    Gone(String),
    /// The lease was lost (another run took the sync over): write nothing more.
    LeaseLost,
}

/// What apply did, in counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub planned_adds: u64,
    pub planned_removes: u64,
    pub applied_adds: u64,
    pub applied_removes: u64,
    /// TikTok refused the edit now (processing, under 1,000 matched users), or a processing window is open.
    pub held_adds: u64,
    pub held_removes: u64,
    /// Sent, but no answer came back: kept as uncertain and re-sent by later runs.
    pub unknown_adds: u64,
    pub unknown_removes: u64,
    /// Why changes were held (TikTok's side).
    pub hold_reason: Option<String>,
    /// Why changes not sent were put off (our side: budget, one edit per window, a new streaming audience).
    pub defer_reason: Option<String>,
    /// When the owed work can go (end of the processing window, budget reset, audience ready).
    pub retry_at: Option<DateTime<Utc>>,
    pub stop: Option<Stop>,
    /// A note that does not change the state (e.g. the previous snapshot was discarded).
    pub note: Option<String>,
}

/// The settle phase's knobs (from `EngineSettings`).
#[derive(Debug, Clone, Copy)]
pub struct SettleRules {
    pub now: DateTime<Utc>,
    pub retry_after_failure: chrono::Duration,
    pub holds_before_warning: u32,
    /// Holds in a row before this run.
    pub prior_holds: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub state: RunState,
    pub reason: Option<String>,
    pub adds: ChangeCounts,
    pub removes: ChangeCounts,
    pub next: Next,
    /// When the sweeper should resume the sync (owed work), or `None`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub consecutive_holds: u32,
    /// A warning for the sync (repeated holds, a recreated audience).
    pub notice: Option<String>,
    /// Whether nothing is owed any more (a one-time sync is then completed).
    pub complete: bool,
}

fn counts(planned: u64, applied: u64, held: u64) -> ChangeCounts {
    ChangeCounts {
        planned,
        applied,
        held,
        // Everything else is owed to a later run: put off, unsent after a stop, or sent without an answer.
        deferred: planned.saturating_sub(applied + held),
    }
}

pub fn settle(t: &Tally, r: &SettleRules) -> Settled {
    let adds = counts(t.planned_adds, t.applied_adds, t.held_adds);
    let removes = counts(t.planned_removes, t.applied_removes, t.held_removes);
    let applied = t.applied_adds + t.applied_removes;
    let held = adds.held + removes.held;
    let owed = held + adds.deferred + removes.deferred;
    let unknown = t.unknown_adds + t.unknown_removes;
    let failure_retry = Some(r.now + r.retry_after_failure);
    let mut out = Settled {
        state: RunState::Succeeded,
        reason: None,
        adds,
        removes,
        next: Next::Done,
        next_attempt_at: if owed > 0 {
            t.retry_at.or(failure_retry)
        } else {
            None
        },
        consecutive_holds: 0,
        notice: None,
        complete: owed == 0,
    };
    let owed_text = |what: &str| {
        format!(
            "{what}: {} adds and {} removes are owed to a later run",
            out.adds.planned - out.adds.applied,
            out.removes.planned - out.removes.applied
        )
    };
    if let Some(stop) = &t.stop {
        settle_stop(stop, unknown, r, &mut out);
        return out;
    }
    if owed == 0 {
        out.reason = t.note.clone();
        return out;
    }
    let why = t
        .hold_reason
        .clone()
        .or_else(|| t.defer_reason.clone())
        .unwrap_or_else(|| "changes were put off".into());
    if applied == 0 {
        // Honest: nothing reached the audience this run.
        out.state = RunState::Held;
        out.consecutive_holds = r.prior_holds + 1;
        if out.consecutive_holds >= r.holds_before_warning {
            out.notice = Some(format!(
                "{} runs in a row applied nothing ({why}); the audience lags the cohort",
                out.consecutive_holds
            ));
        }
    }
    out.reason = Some(owed_text(&why));
    out
}

/// A run that stopped early: its state and next step follow from why.
fn settle_stop(stop: &Stop, unknown: u64, r: &SettleRules, out: &mut Settled) {
    let failure_retry = Some(r.now + r.retry_after_failure);
    out.complete = false;
    match stop {
        Stop::LeaseLost => {
            out.state = RunState::Failed;
            out.reason =
                Some("another run took the sync over (lease lost); it finishes the work".into());
            out.next = Next::Fenced;
            out.next_attempt_at = None;
            out.complete = false;
        }
        Stop::Deadline => {
            out.state = RunState::Running;
            out.reason = Some("continuing in a new invocation (Lambda deadline)".into());
            out.next = Next::Continue;
            out.next_attempt_at = Some(r.now);
            out.complete = false;
        }
        Stop::Gone(why) => {
            out.state = RunState::Failed;
            out.reason = Some(format!(
                "{why}; a new audience is created with the whole cohort"
            ));
            out.notice = Some(why.clone());
            out.next = Next::Recreate;
            out.next_attempt_at = Some(r.now);
            out.complete = false;
        }
        Stop::Reconnect(why) => {
            out.state = RunState::Failed;
            out.reason = Some(why.clone());
            // Nothing goes until the user reconnects; the callback resumes the schedules.
            out.next_attempt_at = None;
            out.complete = false;
        }
        Stop::Failed { reason, retry } => {
            out.state = RunState::Failed;
            out.reason = Some(if unknown > 0 {
                format!(
                    "{reason} ({unknown} changes got no answer and are re-sent by the next run)"
                )
            } else {
                reason.clone()
            });
            out.next_attempt_at = if *retry || unknown > 0 {
                failure_retry
            } else {
                None
            };
            out.complete = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> SettleRules {
        SettleRules {
            now: DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            retry_after_failure: chrono::Duration::minutes(15),
            holds_before_warning: 3,
            prior_holds: 0,
        }
    }

    fn planned(a: u64, r: u64) -> Tally {
        Tally {
            planned_adds: a,
            planned_removes: r,
            ..Tally::default()
        }
    }

    #[test]
    fn everything_applied_succeeds_and_owes_nothing() {
        let mut t = planned(10, 5);
        t.applied_adds = 10;
        t.applied_removes = 5;
        let s = settle(&t, &rules());
        assert_eq!(s.state, RunState::Succeeded);
        assert!(s.complete && s.next_attempt_at.is_none() && s.next == Next::Done);
        assert_eq!(s.adds.deferred + s.removes.deferred, 0);
    }

    #[test]
    fn nothing_applied_because_held_is_held_not_succeeded() {
        let mut t = planned(10, 5);
        t.held_adds = 10;
        t.held_removes = 5;
        t.hold_reason = Some("TikTok is processing the audience".into());
        let when = rules().now + chrono::Duration::hours(6);
        t.retry_at = Some(when);
        let s = settle(&t, &rules());
        assert_eq!(s.state, RunState::Held);
        assert_eq!(s.next_attempt_at, Some(when));
        assert!(!s.complete);
        assert!(s.reason.unwrap_or_default().contains("processing"));
        assert_eq!(s.consecutive_holds, 1);
        assert!(s.notice.is_none());
    }

    #[test]
    fn repeated_holds_warn() {
        let mut t = planned(1, 0);
        t.held_adds = 1;
        let mut r = rules();
        r.prior_holds = 2;
        let s = settle(&t, &r);
        assert_eq!(s.consecutive_holds, 3);
        assert!(s.notice.is_some());
    }

    #[test]
    fn partly_applied_succeeds_with_the_rest_owed() {
        let mut t = planned(10, 5);
        t.applied_adds = 10;
        t.defer_reason = Some("one edit per processing window".into());
        let s = settle(&t, &rules());
        assert_eq!(s.state, RunState::Succeeded);
        assert_eq!(s.removes.deferred, 5);
        assert!(!s.complete && s.next_attempt_at.is_some());
        assert_eq!(s.consecutive_holds, 0);
    }

    #[test]
    fn lost_answers_fail_and_retry() {
        let mut t = planned(10, 0);
        t.unknown_adds = 10;
        t.stop = Some(Stop::Failed {
            reason: "TikTok did not answer".into(),
            retry: false,
        });
        let s = settle(&t, &rules());
        assert_eq!(s.state, RunState::Failed);
        assert_eq!(s.adds.deferred, 10, "planned = applied + held + deferred");
        assert!(s.next_attempt_at.is_some(), "unknown outcomes are re-sent");
    }

    #[test]
    fn stops() {
        let mut t = planned(3, 0);
        t.stop = Some(Stop::Deadline);
        let s = settle(&t, &rules());
        assert_eq!((s.state, s.next), (RunState::Running, Next::Continue));
        t.stop = Some(Stop::LeaseLost);
        assert_eq!(settle(&t, &rules()).next, Next::Fenced);
        t.stop = Some(Stop::Gone("expired".into()));
        let s = settle(&t, &rules());
        assert_eq!((s.state, s.next), (RunState::Failed, Next::Recreate));
        t.stop = Some(Stop::Reconnect("token refused".into()));
        assert!(settle(&t, &rules()).next_attempt_at.is_none());
    }

    #[test]
    fn counts_always_balance() {
        for (p, a, h, u) in [(10, 3, 2, 1), (5, 5, 0, 0), (7, 0, 7, 0), (4, 0, 0, 4)] {
            let t = Tally {
                planned_adds: p,
                applied_adds: a,
                held_adds: h,
                unknown_adds: u,
                ..Tally::default()
            };
            let s = settle(&t, &rules());
            assert!(crate::sync::ledger::balanced(&s.adds));
        }
    }
}

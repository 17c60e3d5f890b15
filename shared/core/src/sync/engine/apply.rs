//! Apply: the TikTok calls of one run, in the sync's write mode. What was acknowledged, what got no
//! answer and what was held are kept per sorted range, so commit knows exactly which digests moved.

use std::ops::Range;

use secrecy::SecretString;

use super::plan::Plan;
use super::prepare::{Ctx, Ready};
use super::settle::{Stop, Tally};
use super::{Engine, EngineError};
use crate::model::WriteMode;

/// The ranges of one sorted change list that TikTok acknowledged, or that got no answer.
#[derive(Debug, Default, Clone)]
pub(super) struct Sent {
    pub acked: Vec<Range<usize>>,
    pub unknown: Vec<Range<usize>>,
}

impl Sent {
    pub fn acked_count(&self) -> u64 {
        self.acked.iter().map(|r| r.len() as u64).sum()
    }

    pub fn unknown_count(&self) -> u64 {
        self.unknown.iter().map(|r| r.len() as u64).sum()
    }
}

#[derive(Debug, Default)]
pub(super) struct Applied {
    pub adds: Sent,
    pub removes: Sent,
    pub tally: Tally,
}

impl Applied {
    /// Holds every change not acknowledged yet, for `why`.
    pub fn hold_rest(&mut self, plan: &Plan, why: String) {
        self.tally.held_adds = plan.adds.len() as u64 - self.adds.acked_count();
        self.tally.held_removes = plan.removes.len() as u64 - self.removes.acked_count();
        self.tally.hold_reason = Some(why);
    }

    pub fn stop(&mut self, stop: Stop) {
        if self.tally.stop.is_none() {
            self.tally.stop = Some(stop);
        }
    }
}

/// The token a run calls TikTok with (re-read once when TikTok refuses it: a reconnect may have replaced it).
pub(super) struct Token(pub SecretString);

impl Engine {
    pub(super) async fn apply(
        &self,
        ctx: &mut Ctx<'_>,
        plan: &Plan,
        ready: &Ready,
    ) -> Result<Applied, EngineError> {
        let mut out = Applied::default();
        out.tally.planned_adds = plan.adds.len() as u64;
        out.tally.planned_removes = plan.removes.len() as u64;
        out.tally.note = plan.note.clone();
        let mut token = Token(ready.token.clone());
        let calls_before = self.deps.tiktok.counters().calls;
        match ctx.sync.write_mode {
            WriteMode::CustomerFile => {
                self.apply_files(ctx, &mut token, plan, ready, &mut out)
                    .await?
            }
            WriteMode::Streaming => {
                self.apply_stream(ctx, &mut token, plan, ready, &mut out)
                    .await?
            }
        }
        out.tally.applied_adds = out.adds.acked_count();
        out.tally.applied_removes = out.removes.acked_count();
        out.tally.unknown_adds = out.adds.unknown_count();
        out.tally.unknown_removes = out.removes.unknown_count();
        ctx.ledger.tiktok_calls += self
            .deps
            .tiktok
            .counters()
            .calls
            .saturating_sub(calls_before);
        Ok(out)
    }

    /// Checked before every TikTok call: the lease still ours (renewed here when a third of it has passed,
    /// so a run that another took over stops before its next write), and time for the call and the commit.
    pub(super) async fn before_call(&self, ctx: &Ctx<'_>) -> Option<Stop> {
        if !ctx.tenure.lost() && ctx.tenure.due(self.now(), self.settings.lease_ttl / 3) {
            let s = &ctx.sync;
            let renewed = self
                .deps
                .state
                .renew_lease(
                    &s.project_id,
                    &s.sync_id,
                    &ctx.tenure.fence,
                    self.settings.lease_ttl,
                    self.now(),
                )
                .await;
            match renewed {
                Ok(Some(_)) => ctx.tenure.renewed(self.now()),
                Ok(None) => ctx.tenure.lose(),
                // The store is unreachable: the run cannot know it still holds the sync.
                Err(_) => ctx.tenure.lose(),
            }
        }
        if ctx.tenure.lost() {
            Some(Stop::LeaseLost)
        } else if self.time_short(ctx.deadline) {
            Some(Stop::Deadline)
        } else {
            None
        }
    }
}

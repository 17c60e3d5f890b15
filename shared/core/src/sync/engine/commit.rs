//! Commit: the new base (what TikTok acknowledged) and the uncertain set go to S3 under unique names, the
//! pointer moves, the ledger and the sync's progress are written — each conditional on the run's fence and
//! on the sync still existing. A write refused there leaves nothing behind: the objects just written go.

use tracing::{info, warn};

use super::apply::Applied;
use super::lease::{Next, RunDone};
use super::plan::Plan;
use super::prepare::Ctx;
use super::settle::Settled;
use super::{Engine, EngineError, Outcome};
use crate::digests::DigestIter;
use crate::digests::merge;
use crate::digests::snapshot::SnapshotWriter;
use crate::identifiers::{KeyKind, RULE_VERSION};
use crate::model::{Cadence, KeyMapping, RunState, SnapshotPointer, SnapshotRef, UncertainSet};
use crate::ports::CommitOutcome;

/// At most this many engine notices are kept on a sync (newest last).
const MAX_NOTICES: usize = 5;

/// What a run that planned hands to commit.
pub(super) struct Work<'a> {
    pub plan: &'a Plan,
    pub applied: &'a Applied,
    pub mapping: &'a KeyMapping,
}

/// An uncertain set written for the run.
pub(super) struct Written {
    pub saved: bool,
}

impl Engine {
    /// A run that touched nothing on TikTok: its state and reason, the counts of a refused plan.
    /// `planned`: the run got as far as a plan (a guard refused it); otherwise what the sync owed before
    /// (held, deferred) stays owed.
    pub(super) async fn finish_quiet(
        &self,
        ctx: Ctx<'_>,
        state: RunState,
        reason: Option<String>,
        planned: bool,
    ) -> Result<RunDone, EngineError> {
        let mut adds = ctx.ledger.adds;
        let mut removes = ctx.ledger.removes;
        for c in [&mut adds, &mut removes] {
            let open = c.planned.saturating_sub(c.applied + c.held + c.deferred);
            if state == RunState::HeldForReview {
                c.held += open;
            } else {
                c.deferred += open;
            }
        }
        let complete = state == RunState::UpToDate;
        let keep = (!planned).then(|| {
            let p = &ctx.sync.progress;
            (p.held_adds, p.held_removals, p.deferred)
        });
        let settled = Settled {
            state,
            reason,
            adds,
            removes,
            next: Next::Done,
            next_attempt_at: None,
            consecutive_holds: ctx.sync.progress.consecutive_holds,
            notice: None,
            complete,
        };
        self.commit(ctx, None, settled, keep).await
    }

    pub(super) fn fenced(&self, ctx: &Ctx<'_>, why: &str) -> RunDone {
        info!(sync_id = %ctx.sync.sync_id, run_id = %ctx.ledger.run_id, fence = ctx.tenure.fence.fence, why, "run fenced out; nothing written");
        RunDone {
            outcome: Outcome::Run {
                sync_id: ctx.sync.sync_id.clone(),
                run_id: ctx.ledger.run_id.clone(),
                state: RunState::Failed,
                reason: Some(format!("fenced out: {why}")),
            },
            next: Next::Fenced,
        }
    }

    /// `keep`: the owed counts (held adds, held removals, deferred) to keep instead of this run's.
    pub(super) async fn commit(
        &self,
        mut ctx: Ctx<'_>,
        work: Option<Work<'_>>,
        s: Settled,
        keep: Option<(u64, u64, u64)>,
    ) -> Result<RunDone, EngineError> {
        if s.next == Next::Fenced {
            return Ok(self.fenced(&ctx, "another run took the sync over"));
        }
        let previous_run = ctx.sync.progress.last_run.clone();
        let old_base = ctx.sync.committed.as_ref().map(|c| c.snapshot.clone());
        let old_uncertain = ctx.sync.progress.uncertain.clone();
        let new_objects = match work {
            _ if s.next == Next::Recreate => {
                // The old base means nothing for a new audience: the next run sends the whole cohort.
                let p = &mut ctx.sync.progress;
                p.tiktok_audience_id = None;
                p.audience_create_intent = None;
                p.tiktok_status = None;
                p.last_edit = None;
                p.uncertain = None;
                Vec::new()
            }
            None => Vec::new(),
            Some(work) => match self.write_sets(&mut ctx, work).await? {
                Some(objects) => objects,
                None => return Ok(self.fenced(&ctx, "the lease moved on before the commit")),
            },
        };
        self.settle_progress(&mut ctx, &s);
        if let Some((held_adds, held_removals, deferred)) = keep {
            let p = &mut ctx.sync.progress;
            (p.held_adds, p.held_removals, p.deferred) = (held_adds, held_removals, deferred);
            // A late event (stale export) must not leave owed work without a run to pick it up.
            let owed = held_adds + held_removals + deferred > 0 || p.uncertain.is_some();
            if owed && s.state == RunState::Stale {
                p.next_attempt_at = Some(self.now());
            }
        }
        // The integration is marked before the failed run is visible: whoever reads the run (the API, the
        // console) then sees `reconnect_required` too, never a reconnect reason on a `connected` project.
        if let Some(RunState::Failed) = Some(s.state)
            && s.reason
                .as_deref()
                .is_some_and(|r| r.contains("reconnect TikTok"))
        {
            ctx.reconnect_marked |= self.require_reconnect(&ctx.sync.project_id).await?;
        }
        let done = self.write_records(&mut ctx, &s, &new_objects).await?;
        if done.next == Next::Fenced {
            return Ok(done);
        }
        // Superseded objects go once the new ones are in place (best effort: a failure leaves an orphan
        // object of hashed identifiers, removed with the sync).
        let mut stale = Vec::new();
        if let Some(old) = old_base
            && ctx
                .sync
                .committed
                .as_ref()
                .is_some_and(|c| c.snapshot.key != old.key)
        {
            stale.push(old);
        }
        if let Some(old) = old_uncertain
            && ctx
                .sync
                .progress
                .uncertain
                .as_ref()
                .is_none_or(|u| u.snapshot.key != old.snapshot.key)
        {
            stale.push(old.snapshot);
        }
        self.drop_objects(&stale).await;
        self.notify_committed(&ctx, previous_run.as_ref(), &s).await;
        Ok(done)
    }

    /// The new base and uncertain set, as S3 objects under unique names, and the pointer moved (fenced).
    /// `None`: fenced out (the objects just written are gone again).
    async fn write_sets(
        &self,
        ctx: &mut Ctx<'_>,
        work: Work<'_>,
    ) -> Result<Option<Vec<SnapshotRef>>, EngineError> {
        let Work {
            plan,
            applied,
            mapping,
        } = work;
        let mut new_objects: Vec<SnapshotRef> = Vec::new();
        // Streamed: base + acked adds - acked removes, and (uncertain + unanswered) - acknowledged.
        let (adds, removes) = (plan.adds.clone(), plan.removes.clone());
        let (acked_a, acked_r) = (applied.adds.acked.clone(), applied.removes.acked.clone());
        let base_src = plan.base.clone();
        let new_base = {
            let (adds, removes, acked_a, acked_r) = (
                adds.clone(),
                removes.clone(),
                acked_a.clone(),
                acked_r.clone(),
            );
            move || {
                merge::apply(
                    base_src.iter()?,
                    adds.iter_ranges(&acked_a)?,
                    removes.iter_ranges(&acked_r)?,
                )
            }
        };
        let (unknown_a, unknown_r) = (
            applied.adds.unknown.clone(),
            applied.removes.unknown.clone(),
        );
        let uncertain_src = plan.uncertain.clone();
        let new_uncertain = move || {
            merge::apply(
                uncertain_src.iter()?,
                merge::union(
                    adds.iter_ranges(&unknown_a)?,
                    removes.iter_ranges(&unknown_r)?,
                )?,
                merge::union(adds.iter_ranges(&acked_a)?, removes.iter_ranges(&acked_r)?)?,
            )
        };
        // Only whether anything is left: put_set counts it while writing.
        let none_left = is_empty(new_uncertain.clone()).await?;
        let name = format!("{}-{}", ctx.ledger.run_id, ctx.tenure.fence.fence);
        let (snapshot, digests) = self.put_set(ctx, new_base, mapping, &name).await?;
        new_objects.push(snapshot.clone());
        let pointer = SnapshotPointer {
            snapshot,
            export: plan.export.clone(),
            digests,
            key_kind: mapping.tiktok_key,
            rule_version: RULE_VERSION as u32,
            committed_at: self.now(),
        };
        let outcome = self
            .deps
            .state
            .commit_snapshot(
                &ctx.sync.project_id,
                &ctx.sync.sync_id,
                &ctx.tenure.fence,
                &pointer,
                self.now(),
            )
            .await?;
        match outcome {
            CommitOutcome::Committed => ctx.sync.committed = Some(pointer),
            CommitOutcome::Stale { .. } => {
                warn!(sync_id = %ctx.sync.sync_id, "commit refused: a newer export is committed");
                self.drop_objects(&new_objects).await;
                new_objects.clear();
            }
            CommitOutcome::LeaseLost => {
                self.drop_objects(&new_objects).await;
                return Ok(None);
            }
        }
        ctx.ledger.uncertain_left = 0;
        ctx.sync.progress.uncertain = if none_left {
            None
        } else {
            let name = format!("uncertain-{}-{}", ctx.ledger.run_id, ctx.tenure.fence.fence);
            let (r, digests) = self.put_set(ctx, new_uncertain, mapping, &name).await?;
            new_objects.push(r.clone());
            ctx.ledger.uncertain_left = digests;
            Some(UncertainSet {
                snapshot: r,
                digests,
            })
        };
        Ok(Some(new_objects))
    }

    /// The sync's owed work and notices after the run.
    fn settle_progress(&self, ctx: &mut Ctx<'_>, s: &Settled) {
        let p = &mut ctx.sync.progress;
        p.held_adds = s.adds.held;
        p.held_removals = s.removes.held;
        p.deferred = s.adds.deferred + s.removes.deferred;
        p.next_attempt_at = s.next_attempt_at;
        p.consecutive_holds = s.consecutive_holds;
        if let Some(n) = &s.notice {
            p.notices.push(n.clone());
            let extra = p.notices.len().saturating_sub(MAX_NOTICES);
            p.notices.drain(..extra);
        }
        if s.next != Next::Continue {
            p.active_run = None;
        }
        if s.complete
            && ctx.sync.cadence == Cadence::OneTime
            && matches!(s.state, RunState::Succeeded | RunState::UpToDate)
        {
            p.one_time_done = ctx.ledger.source_export.clone().or(Some(String::new()));
        }
        let l = &mut ctx.ledger;
        l.state = s.state;
        l.reason = s.reason.clone();
        l.adds = s.adds;
        l.removes = s.removes;
        l.fence = ctx.tenure.fence.fence;
        l.audience_size = ctx.sync.committed.as_ref().map(|c| c.digests);
        l.matched = p.tiktok_status.as_ref().and_then(|t| t.cover_num);
        if s.state != RunState::Running {
            l.finished_at = Some(self.now());
        }
        p.last_run = Some(l.clone());
    }

    /// Report, ledger, progress — fenced. The report goes first and is removed again if the ledger is
    /// refused, so a deleted sync keeps no report.
    async fn write_records(
        &self,
        ctx: &mut Ctx<'_>,
        s: &Settled,
        new_objects: &[SnapshotRef],
    ) -> Result<RunDone, EngineError> {
        let (st, f) = (&self.deps.state, &ctx.tenure.fence);
        let finished = s.state != RunState::Running;
        if finished {
            self.write_report(&ctx.ledger).await;
        }
        if !st.put_run(f, &ctx.ledger).await? {
            if finished {
                self.delete_report(&ctx.ledger).await;
            }
            self.drop_uncommitted(ctx, new_objects).await;
            return Ok(self.fenced(
                ctx,
                "the ledger was refused (lease moved on, or the sync was deleted)",
            ));
        }
        if !st
            .save_progress(
                &ctx.sync.project_id,
                &ctx.sync.sync_id,
                f,
                &ctx.sync.progress,
            )
            .await?
        {
            self.drop_uncommitted(ctx, new_objects).await;
            return Ok(self.fenced(
                ctx,
                "the progress was refused (lease moved on, or the sync was deleted)",
            ));
        }
        self.log_run(&ctx.ledger, ctx.started.elapsed());
        Ok(RunDone {
            outcome: Outcome::Run {
                sync_id: ctx.sync.sync_id.clone(),
                run_id: ctx.ledger.run_id.clone(),
                state: ctx.ledger.state,
                reason: ctx.ledger.reason.clone(),
            },
            next: s.next,
        })
    }

    /// After a refused write: the sync is gone, or another run owns it. Objects it does not point at go.
    async fn drop_uncommitted(&self, ctx: &Ctx<'_>, objects: &[SnapshotRef]) {
        let live = self
            .deps
            .state
            .get_sync(&ctx.sync.project_id, &ctx.sync.sync_id)
            .await
            .ok()
            .flatten();
        let keep = |r: &SnapshotRef| {
            live.as_ref().is_some_and(|s| {
                s.committed
                    .as_ref()
                    .is_some_and(|c| c.snapshot.key == r.key)
                    || s.progress
                        .uncertain
                        .as_ref()
                        .is_some_and(|u| u.snapshot.key == r.key)
            })
        };
        let gone: Vec<SnapshotRef> = objects.iter().filter(|r| !keep(r)).cloned().collect();
        self.drop_objects(&gone).await;
    }

    pub(super) async fn drop_objects(&self, objects: &[SnapshotRef]) {
        for r in objects {
            if let Err(e) = self.deps.cohorts.delete_snapshot(r).await {
                warn!(error = %e, key = %r.key, "snapshot object not deleted");
            }
        }
    }

    /// Writes the run's intent (every digest it may send, plus the earlier uncertain ones) as the sync's
    /// uncertain set before the first TikTok write.
    pub(super) async fn write_uncertain(
        &self,
        ctx: &mut Ctx<'_>,
        set: impl Fn() -> std::io::Result<DigestIter> + Send + 'static,
        mapping: &KeyMapping,
        label: &str,
    ) -> Result<Written, EngineError> {
        let name = format!("{label}-{}-{}", ctx.ledger.run_id, ctx.tenure.fence.fence);
        let (r, digests) = self.put_set(ctx, set, mapping, &name).await?;
        let previous = ctx.sync.progress.uncertain.replace(UncertainSet {
            snapshot: r.clone(),
            digests,
        });
        let saved = self
            .deps
            .state
            .save_progress(
                &ctx.sync.project_id,
                &ctx.sync.sync_id,
                &ctx.tenure.fence,
                &ctx.sync.progress,
            )
            .await?;
        if !saved {
            self.drop_objects(&[r]).await;
            return Ok(Written { saved });
        }
        if let Some(p) = previous {
            self.drop_objects(&[p.snapshot]).await;
        }
        Ok(Written { saved })
    }

    /// Writes a sorted stream as a snapshot object of the sync (through a temp file); its ref and count.
    async fn put_set(
        &self,
        ctx: &Ctx<'_>,
        set: impl Fn() -> std::io::Result<DigestIter> + Send + 'static,
        mapping: &KeyMapping,
        name: &str,
    ) -> Result<(SnapshotRef, u64), EngineError> {
        let dir = tempfile::Builder::new()
            .prefix("snapshot-")
            .tempdir_in(&self.settings.work_dir)
            .map_err(|e| EngineError::Internal(format!("work dir: {e}")))?;
        let path = dir.path().join("snapshot.bin");
        let count = write_set(path.clone(), set, mapping.tiktok_key).await?;
        let r = self
            .deps
            .cohorts
            .put_snapshot(&ctx.sync.project_id, &ctx.sync.sync_id, name, &path)
            .await?;
        Ok((r, count))
    }
}

/// Whether a stream yields nothing (its first item read on a blocking thread).
async fn is_empty(
    set: impl Fn() -> std::io::Result<DigestIter> + Send + 'static,
) -> Result<bool, EngineError> {
    tokio::task::spawn_blocking(move || {
        Ok::<_, std::io::Error>(set()?.next().transpose()?.is_none())
    })
    .await
    .map_err(|e| EngineError::Internal(format!("count task: {e}")))?
    .map_err(|e| EngineError::Internal(format!("digest list: {e}")))
}

/// The snapshot header needs the count first: the stream is read twice (it is a merge of files or
/// memory, never held whole).
async fn write_set(
    path: std::path::PathBuf,
    set: impl Fn() -> std::io::Result<DigestIter> + Send + 'static,
    key: KeyKind,
) -> Result<u64, EngineError> {
    tokio::task::spawn_blocking(move || -> Result<u64, String> {
        let count = merge::count(set().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        let mut w = SnapshotWriter::new(std::io::BufWriter::with_capacity(1 << 20, f), key, count)
            .map_err(|e| e.to_string())?;
        for d in set().map_err(|e| e.to_string())? {
            w.push(&d.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        w.finish().map_err(|e| e.to_string())?;
        Ok(count)
    })
    .await
    .map_err(|e| EngineError::Internal(format!("snapshot writer task: {e}")))?
    .map_err(|e| EngineError::Internal(format!("snapshot write: {e}")))
}

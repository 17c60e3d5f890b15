//! Prepare: which run (a new one, or the sync's unfinished one), the preconditions (connected, active,
//! mapped), which export, and whether anything is owed at all. No TikTok call, no change to the audience.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tracing::warn;

use super::lease::{Next, RunDone, Tenure};
use super::{Engine, EngineError, Outcome, new_id};
use crate::model::{
    ChangeCounts, ExportRef, IntegrationStatus, KeyMapping, RunLedger, RunState, RunTrigger,
    SyncConfig, SyncState,
};

/// One run in the making: the fresh sync record, its ledger, the lease it runs under.
pub(super) struct Ctx<'t> {
    pub tenure: &'t Tenure,
    pub sync: SyncConfig,
    pub ledger: RunLedger,
    pub deadline: Option<DateTime<Utc>>,
    /// The ledger continues an unfinished run (same export, counts accumulate).
    pub continuing: bool,
    pub started: std::time::Instant,
    /// This run moved the integration to `reconnect_required` (a notice is due after the commit).
    pub reconnect_marked: bool,
}

/// What a run needs to plan and apply.
pub(super) struct Ready {
    pub mapping: KeyMapping,
    pub export: ExportRef,
    pub token: SecretString,
}

pub(super) enum Prepared {
    Go(Box<Ready>),
    /// Finish without touching the audience.
    Quiet {
        state: RunState,
        reason: Option<String>,
    },
}

fn quiet(state: RunState, reason: impl Into<String>) -> Prepared {
    Prepared::Quiet {
        state,
        reason: Some(reason.into()),
    }
}

impl Engine {
    /// One run under the tenure: prepare → plan → apply → settle → commit.
    pub(super) async fn run_once(
        &self,
        tenure: &Tenure,
        project_id: &str,
        sync_id: &str,
        trigger: RunTrigger,
        key: Option<String>,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<RunDone, EngineError> {
        let st = &self.deps.state;
        let Some(sync) = st.get_sync(project_id, sync_id).await? else {
            return Ok(RunDone {
                outcome: Outcome::Ignored {
                    reason: format!("no sync {sync_id} in project {project_id}"),
                },
                next: Next::Fenced,
            });
        };
        let (ledger, continuing) = self.pick_run(&sync, trigger, tenure).await?;
        let mut key = key;
        if continuing {
            // The unfinished run goes first, on its own export; the requested one waits as pending.
            if let Some(k) = key.take()
                && Some(&k) != ledger.source_export.as_ref()
                && let Some(p) = self.export_ref(&k).await?
            {
                st.set_pending_export(project_id, sync_id, &p).await?;
            }
            key = ledger.source_export.clone();
        }
        let mut ctx = Ctx {
            tenure,
            sync,
            ledger,
            deadline,
            continuing,
            started: std::time::Instant::now(),
            reconnect_marked: false,
        };
        // Marked before anything else: if this invocation dies from here on, the sweeper resumes the run.
        ctx.sync.progress.active_run = Some(ctx.ledger.run_id.clone());
        ctx.sync.progress.next_attempt_at = Some(self.now());
        if !st
            .save_progress(project_id, sync_id, &tenure.fence, &ctx.sync.progress)
            .await?
        {
            return Ok(self.fenced(
                &ctx,
                "the sync was deleted or taken over before the run began",
            ));
        }
        match self.prepare(&mut ctx, key).await? {
            Prepared::Quiet { state, reason } => self.finish_quiet(ctx, state, reason, false).await,
            Prepared::Go(ready) => self.plan_and_apply(ctx, *ready).await,
        }
    }

    /// The sync's unfinished run if there is one (its ledger is still `running`), else a new ledger.
    async fn pick_run(
        &self,
        sync: &SyncConfig,
        trigger: RunTrigger,
        tenure: &Tenure,
    ) -> Result<(RunLedger, bool), EngineError> {
        if let Some(active) = &sync.progress.active_run
            && let Some(l) = self.deps.state.get_run(&sync.sync_id, active).await?
            && l.state == RunState::Running
        {
            if trigger != RunTrigger::Continue {
                warn!(sync_id = %sync.sync_id, run_id = %l.run_id, "finishing an interrupted run first");
            }
            return Ok((l, true));
        }
        Ok((
            self.new_ledger(sync, new_id(), trigger, tenure.fence.fence),
            false,
        ))
    }

    fn new_ledger(
        &self,
        sync: &SyncConfig,
        run_id: String,
        trigger: RunTrigger,
        fence: u64,
    ) -> RunLedger {
        RunLedger {
            run_id,
            sync_id: sync.sync_id.clone(),
            project_id: sync.project_id.clone(),
            trigger,
            source_export: None,
            state: RunState::Running,
            reason: None,
            started_at: self.now(),
            finished_at: None,
            rows: 0,
            valid: 0,
            unique: 0,
            duplicates: 0,
            skipped: Default::default(),
            adds: ChangeCounts::default(),
            removes: ChangeCounts::default(),
            tiktok_calls: 0,
            tiktok_request_ids: Vec::new(),
            uncertain_resent: 0,
            uncertain_left: 0,
            fence,
            audience_size: None,
            matched: None,
        }
    }

    /// Preconditions and the export. `key`: the export asked for (else the newest in the bucket).
    async fn prepare(
        &self,
        ctx: &mut Ctx<'_>,
        key: Option<String>,
    ) -> Result<Prepared, EngineError> {
        let st = &self.deps.state;
        let project_id = ctx.sync.project_id.clone();
        let integration = st.get_integration(&project_id).await?;
        let status = integration
            .as_ref()
            .map(|i| i.status)
            .unwrap_or(IntegrationStatus::NotConnected);
        if status != IntegrationStatus::Connected {
            let why = format!("the TikTok integration is {}", status.as_str());
            return Ok(quiet(RunState::Skipped, why));
        }
        match ctx.sync.effective_state() {
            SyncState::Paused => return Ok(quiet(RunState::Skipped, "the sync is paused")),
            SyncState::Completed => {
                return Ok(quiet(RunState::Skipped, "the one-time sync is completed"));
            }
            SyncState::Active => {}
        }
        let Some(mapping) = integration.and_then(|i| i.mapping) else {
            return Ok(quiet(
                RunState::Failed,
                "no key mapping is saved for the project",
            ));
        };
        let key = match key {
            Some(k) => k,
            None => match self.newest_export(&ctx.sync.cohort_id).await? {
                Some(o) => o.meta.key,
                None => {
                    let why = format!(
                        "no existing export of cohort {} in the bucket yet",
                        ctx.sync.cohort_id
                    );
                    return Ok(quiet(RunState::Skipped, why));
                }
            },
        };
        ctx.ledger.source_export = Some(key.clone());
        let Some(export) = self.export_ref(&key).await? else {
            let why = format!("export {key} does not exist or does not follow Amplitude's naming");
            return Ok(quiet(RunState::Failed, why));
        };
        if let Some(c) = &ctx.sync.committed {
            if export.exported_at < c.export.exported_at {
                let why = format!(
                    "export of {} is older than the committed export of {}",
                    export.exported_at, c.export.exported_at
                );
                return Ok(quiet(RunState::Stale, why));
            }
            let same = c.export.s3_key == export.s3_key && c.export.etag == export.etag;
            if same && nothing_owed(&ctx.sync) && !ctx.continuing {
                return Ok(Prepared::Quiet {
                    state: RunState::UpToDate,
                    reason: None,
                });
            }
        }
        let Some(conn) = self.deps.vault.get_connection(&project_id).await? else {
            ctx.reconnect_marked = self.require_reconnect(&project_id).await?;
            return Ok(quiet(
                RunState::Failed,
                "the integration is connected but its token is missing; reconnect TikTok",
            ));
        };
        Ok(Prepared::Go(Box::new(Ready {
            mapping,
            export,
            token: conn.access_token,
        })))
    }
}

/// The committed export is the newest and nothing of it is held, deferred, uncertain or waiting.
pub(super) fn nothing_owed(sync: &SyncConfig) -> bool {
    let p = &sync.progress;
    p.held_adds == 0
        && p.held_removals == 0
        && p.deferred == 0
        && p.waiting_for_minimum.is_none()
        && p.uncertain.is_none()
        && p.tiktok_audience_id.is_some()
}

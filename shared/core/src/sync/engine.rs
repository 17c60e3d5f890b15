//! One sync run over the ports: lease → export → digests → diff against the committed snapshot → guards →
//! TikTok batches with a checkpoint after every acknowledged call → commit → report → status read-back.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};

use super::api::{Ack, ApiError, ApiErrorKind, AudienceApi, FileAction, MappingAction};
use super::batches::{self, CallBatch};
use super::input::{RunnerInput, Trigger};
use super::plan::{self, GuardInput, GuardSettings, Verdict};
use crate::cohort::naming::{DiffType, parse_export_key};
use crate::cohort::reader::{CohortDigests, digest_reader};
use crate::digests::snapshot::{SnapshotReader, SnapshotWriter};
use crate::digests::{Digest, DigestSet, diff};
use crate::identifiers::{Normalizer, RULE_VERSION};
use crate::model::{
    AudienceCreateIntent, Cadence, ChangeCounts, ExportRef, IntegrationStatus, KeyMapping,
    PreviewRecord, PreviewState, RunLedger, RunState, RunTrigger, SnapshotPointer, SyncConfig,
    SyncState, TikTokAudienceStatus, WriteMode,
};
use crate::ports::{
    BudgetOutcome, CohortStore, CommitOutcome, ExportObject, Invoker, LeaseOutcome, PortError,
    Schedules, StateStore, TokenVault,
};
use crate::report::PreviewReport;

/// The ports an engine runs on, built once per process.
#[derive(Clone)]
pub struct Deps {
    pub state: Arc<dyn StateStore>,
    pub vault: Arc<dyn TokenVault>,
    pub cohorts: Arc<dyn CohortStore>,
    pub schedules: Arc<dyn Schedules>,
    pub invoker: Arc<dyn Invoker>,
    pub tiktok: Arc<dyn AudienceApi>,
}

/// One TikTok request's timeout: the TikTok client's default (`audience_tiktok::ClientConfig`) is this.
pub const TIKTOK_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// What a run needs after its last call: checkpoint, snapshot upload (hundreds of MB at 10M users), ledger.
pub const COMMIT_ALLOWANCE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Longer than one Lambda invocation (15 min) so a live run never loses it; a crashed run's lease expires.
    pub lease_ttl: Duration,
    /// Stop taking new TikTok calls when less than this remains before the Lambda deadline (checked before
    /// every call, the first included): at least one request timeout plus the commit.
    pub deadline_margin: Duration,
    pub max_malformed_ratio: f64,
    pub digests_per_file: usize,
    pub files_per_call: usize,
    pub mapping_batch: usize,
    /// TikTok's per-audience daily budget of customer-file create/update calls.
    pub daily_budget: u32,
    /// Where customer files and snapshots are written before upload (Lambda: /tmp).
    pub work_dir: PathBuf,
    /// At most this many TikTok request ids are kept per ledger (a DynamoDB item is at most 400 KB).
    pub max_request_ids: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            lease_ttl: Duration::from_secs(20 * 60),
            deadline_margin: TIKTOK_REQUEST_TIMEOUT + COMMIT_ALLOWANCE,
            max_malformed_ratio: 0.01,
            digests_per_file: batches::DEFAULT_DIGESTS_PER_FILE,
            files_per_call: batches::DEFAULT_FILES_PER_CALL,
            mapping_batch: batches::MAX_MAPPING_BATCH,
            daily_budget: 24,
            work_dir: std::env::temp_dir(),
            max_request_ids: 200,
        }
    }
}

/// Infrastructure failures (state store, S3, secrets unreachable): the invocation fails and Lambda's async
/// retry (then the dead-letter queue) takes over. Business outcomes are run states, not errors.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("internal: {0}")]
    Internal(String),
}

/// What one invocation did, for the handler's response and logs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Ignored {
        reason: String,
    },
    /// Another run held the lease: the export was recorded as the sync's pending export.
    Deferred {
        sync_id: String,
        pending_export: Option<String>,
    },
    Run {
        sync_id: String,
        run_id: String,
        state: RunState,
        reason: Option<String>,
    },
    Preview {
        preview_id: String,
        state: PreviewState,
    },
}

/// Resume state kept in the ledger after every acknowledged call.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Checkpoint {
    export_key: String,
    export_etag: Option<String>,
    audience_id: Option<String>,
    adds_done: u64,
    removes_done: u64,
}

/// What an apply step did: prefixes of the sorted adds and removes, and why it stopped early.
#[derive(Default)]
struct Applied {
    adds_done: usize,
    removes_done: usize,
    /// The APPENDs were held (TikTok would not edit); the REMOVEs were still tried.
    adds_held: bool,
    stop: Option<Stop>,
}

/// Why applying stopped early.
enum Stop {
    /// The rest of this action is held (TikTok would not edit the audience now).
    Held,
    /// The daily budget is spent: the rest is deferred.
    Budget,
    /// The Lambda deadline is near: commit and continue in a new invocation.
    Deadline,
    /// The audience is gone on TikTok's side.
    AudienceGone,
    /// The token does not work: the integration needs a reconnect.
    Reconnect(String),
    /// Anything else: the run fails with this reason.
    Failed(String),
}

pub struct Engine {
    deps: Deps,
    settings: EngineSettings,
}

struct Run<'a> {
    /// Who holds the sync's lease (the run id, or the run recovering an interrupted one).
    holder: String,
    sync: SyncConfig,
    ledger: RunLedger,
    token: SecretString,
    mapping: &'a KeyMapping,
    deadline: Option<Instant>,
    renewed_at: Instant,
}

fn new_id() -> String {
    ulid::Ulid::new().to_string()
}

/// The audience name carries the sync id so an unknown-outcome create is found by exact name; it fits
/// TikTok's 70 characters for streaming audiences (128 for customer files).
pub fn audience_name(sync: &SyncConfig) -> String {
    let suffix = format!(" [as:{}]", sync.sync_id);
    let base = sync
        .audience_name
        .clone()
        .unwrap_or_else(|| format!("Amplitude cohort {}", sync.cohort_id));
    let room = 70usize.saturating_sub(suffix.chars().count());
    let base: String = base.chars().take(room).collect();
    format!("{}{}", base.trim_end(), suffix)
}

impl Engine {
    pub fn new(deps: Deps, settings: EngineSettings) -> Engine {
        Engine { deps, settings }
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Entry point of the sync-runner: any input, any number of affected syncs.
    pub async fn handle(
        &self,
        input: RunnerInput,
        deadline: Option<Instant>,
    ) -> Result<Vec<Outcome>, EngineError> {
        match input {
            RunnerInput::S3TestEvent => Ok(vec![Outcome::Ignored {
                reason: "s3:TestEvent".into(),
            }]),
            RunnerInput::S3(objects) => {
                let mut out = Vec::new();
                for o in objects {
                    if !o.event_name.starts_with("ObjectCreated") {
                        out.push(Outcome::Ignored {
                            reason: format!("event {} is not ObjectCreated", o.event_name),
                        });
                        continue;
                    }
                    out.extend(self.on_upload(&o.key, deadline).await?);
                }
                Ok(out)
            }
            RunnerInput::Trigger(t) => {
                // (project, sync, run trigger, export key, run to continue)
                let (project_id, sync_id, trigger, key, cont) = match t {
                    Trigger::Schedule {
                        project_id,
                        sync_id,
                    } => (project_id, sync_id, RunTrigger::Schedule, None, None),
                    Trigger::Manual {
                        project_id,
                        sync_id,
                    } => (project_id, sync_id, RunTrigger::Manual, None, None),
                    Trigger::Pending {
                        project_id,
                        sync_id,
                        s3_key,
                    } => (project_id, sync_id, RunTrigger::Pending, Some(s3_key), None),
                    Trigger::Continue {
                        project_id,
                        sync_id,
                        run_id,
                    } => (
                        project_id,
                        sync_id,
                        RunTrigger::Continue,
                        None,
                        Some(run_id),
                    ),
                    Trigger::Preview {
                        project_id,
                        preview_id,
                        s3_key,
                    } => return Ok(vec![self.preview(&project_id, &preview_id, &s3_key).await?]),
                };
                let o = self
                    .run_sync(&project_id, &sync_id, trigger, key, cont, deadline)
                    .await?;
                Ok(vec![o])
            }
        }
    }

    async fn newest_export(&self, cohort_id: &str) -> Result<Option<ExportObject>, PortError> {
        crate::cohort::listing::newest_export(&*self.deps.state, &*self.deps.cohorts, cohort_id)
            .await
    }

    /// An uploaded object: only `existing` exports start runs, per the cadence rules.
    async fn on_upload(
        &self,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<Outcome>, EngineError> {
        let name = match parse_export_key(key) {
            Ok(n) => n,
            Err(e) => {
                crate::cohort::unmatched::record(&e, "s3_event");
                return Ok(vec![Outcome::Ignored {
                    reason: e.to_string(),
                }]);
            }
        };
        if name.difftype != DiffType::Existing {
            return Ok(vec![Outcome::Ignored {
                reason: format!("{} file: only the existing file is read", name.difftype),
            }]);
        }
        // Remembered so later runs of this cohort list only what comes after it.
        if let Some((cohort, seen)) = crate::cohort::listing::seen_from_event(key) {
            self.deps.state.note_seen_export(&cohort, &seen).await?;
        }
        let syncs = self.deps.state.syncs_for_cohort(&name.cohort_id).await?;
        if syncs.is_empty() {
            return Ok(vec![Outcome::Ignored {
                reason: format!("no sync for cohort {}", name.cohort_id),
            }]);
        }
        let mut out = Vec::new();
        for s in syncs {
            // The GSI is eventually consistent: decide on a fresh read.
            let Some(sync) = self.deps.state.get_sync(&s.project_id, &s.sync_id).await? else {
                continue;
            };
            let starts = match sync.cadence {
                Cadence::OneTime => sync.state != SyncState::Completed,
                Cadence::OnUpload => true,
                Cadence::Hourly | Cadence::Daily => !sync.used_export,
            };
            if !starts {
                out.push(Outcome::Ignored {
                    reason: format!(
                        "sync {}: cadence {:?} does not run on uploads now",
                        sync.sync_id, sync.cadence
                    ),
                });
                continue;
            }
            out.push(
                self.run_sync(
                    &sync.project_id,
                    &sync.sync_id,
                    RunTrigger::Upload,
                    Some(key.to_string()),
                    None,
                    deadline,
                )
                .await?,
            );
        }
        Ok(out)
    }

    fn time_short(&self, deadline: Option<Instant>) -> bool {
        deadline.is_some_and(|d| {
            d.saturating_duration_since(Instant::now()) < self.settings.deadline_margin
        })
    }

    /// Takes the lease, runs, commits, hands a pending export on.
    async fn run_sync(
        &self,
        project_id: &str,
        sync_id: &str,
        trigger: RunTrigger,
        export_key: Option<String>,
        continue_run: Option<String>,
        deadline: Option<Instant>,
    ) -> Result<Outcome, EngineError> {
        let st = &self.deps.state;
        let Some(sync) = st.get_sync(project_id, sync_id).await? else {
            warn!(project_id, sync_id, "run for an unknown sync ignored");
            return Ok(Outcome::Ignored {
                reason: format!("no sync {sync_id} in project {project_id}"),
            });
        };
        let run_id = continue_run.clone().unwrap_or_else(new_id);
        match st
            .acquire_lease(
                project_id,
                sync_id,
                &run_id,
                self.settings.lease_ttl,
                Utc::now(),
            )
            .await?
        {
            LeaseOutcome::Acquired(_) => {}
            LeaseOutcome::HeldBy(lease) => {
                // The holder hands the pending export on when it finishes: nothing is lost.
                let pending = match &export_key {
                    Some(k) => self.export_ref(k).await?,
                    None => self
                        .newest_export(&sync.cohort_id)
                        .await?
                        .map(|o| o.to_export_ref()),
                };
                if let Some(p) = &pending {
                    st.set_pending_export(project_id, sync_id, p).await?;
                }
                info!(sync_id, holder = %lease.holder, "lease held by another run; export recorded as pending");
                return Ok(Outcome::Deferred {
                    sync_id: sync_id.to_string(),
                    pending_export: pending.map(|p| p.s3_key),
                });
            }
        }
        let started = Instant::now();
        let result = self
            .run_locked(
                sync,
                run_id.clone(),
                &run_id,
                trigger,
                export_key,
                continue_run,
                deadline,
            )
            .await;
        let (ledger, continuing) = match result {
            Ok(x) => x,
            Err(e) => {
                // Infrastructure failure: free the lease for the retry, then fail the invocation.
                let _ = st.release_lease(project_id, sync_id, &run_id).await;
                return Err(e);
            }
        };
        self.log_run(&ledger, started.elapsed());
        if continuing {
            if ledger.run_id != run_id {
                // An interrupted run we were finishing continues under its own id: it takes the lease itself.
                st.release_lease(project_id, sync_id, &run_id).await?;
            }
            // Otherwise keep the lease: the continuation runs as the same holder.
            self.deps
                .invoker
                .invoke_async(&json!({"trigger": "continue", "project_id": project_id, "sync_id": sync_id, "run_id": ledger.run_id}))
                .await?;
        } else {
            // A lost lease (a very long run) is not an error here: the pending export stays recorded for the
            // lease's next holder.
            let pending = match st
                .take_pending_export(project_id, sync_id, &run_id, Utc::now())
                .await
            {
                Ok(p) => p,
                Err(PortError::Conflict(why)) => {
                    warn!(sync_id, %why, "pending export left for the next run");
                    None
                }
                Err(e) => return Err(e.into()),
            };
            st.release_lease(project_id, sync_id, &run_id).await?;
            if let Some(p) = pending {
                self.deps
                    .invoker
                    .invoke_async(&json!({"trigger": "pending", "project_id": project_id, "sync_id": sync_id, "s3_key": p.s3_key}))
                    .await?;
            }
        }
        Ok(Outcome::Run {
            sync_id: sync_id.to_string(),
            run_id,
            state: ledger.state,
            reason: ledger.reason.clone(),
        })
    }

    async fn export_ref(&self, key: &str) -> Result<Option<ExportRef>, EngineError> {
        let Ok(name) = parse_export_key(key) else {
            return Ok(None);
        };
        let Some(meta) = self.deps.cohorts.head(key).await? else {
            return Ok(None);
        };
        Ok(Some(ExportRef {
            s3_key: key.to_string(),
            exported_at: name.exported_at,
            etag: meta.etag,
            last_modified: meta.last_modified,
        }))
    }

    fn new_ledger(&self, sync: &SyncConfig, run_id: String, trigger: RunTrigger) -> RunLedger {
        RunLedger {
            run_id,
            sync_id: sync.sync_id.clone(),
            project_id: sync.project_id.clone(),
            trigger,
            source_export: None,
            state: RunState::Running,
            reason: None,
            started_at: Utc::now(),
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
            checkpoint: None,
        }
    }

    /// Finishes a ledger that made no TikTok change, stores it on the sync.
    async fn finish_quiet(
        &self,
        mut sync: SyncConfig,
        mut ledger: RunLedger,
        state: RunState,
        reason: Option<String>,
    ) -> Result<(RunLedger, bool), EngineError> {
        ledger.state = state;
        ledger.reason = reason;
        ledger.finished_at = Some(Utc::now());
        self.deps.state.put_run(&ledger).await?;
        self.write_report(&ledger).await;
        sync.last_run = Some(ledger.clone());
        if state == RunState::WaitingForMinimum {
            sync.waiting_for_minimum = Some(ledger.unique);
        }
        if state == RunState::UpToDate && sync.cadence == Cadence::OneTime {
            sync.state = SyncState::Completed;
        }
        self.save_sync(sync).await?;
        Ok((ledger, false))
    }

    /// `update_sync` with one re-read on a version conflict (the API may have patched the sync meanwhile):
    /// the run's fields win, the user's settings are kept.
    async fn save_sync(&self, sync: SyncConfig) -> Result<SyncConfig, EngineError> {
        match self.deps.state.update_sync(&sync).await {
            Ok(s) => Ok(s),
            Err(PortError::Conflict(_)) => {
                let Some(mut fresh) = self
                    .deps
                    .state
                    .get_sync(&sync.project_id, &sync.sync_id)
                    .await?
                else {
                    return Ok(sync);
                };
                fresh.tiktok_audience_id = sync.tiktok_audience_id;
                fresh.audience_create_intent = sync.audience_create_intent;
                fresh.last_run = sync.last_run;
                fresh.tiktok_status = sync.tiktok_status;
                fresh.waiting_for_minimum = sync.waiting_for_minimum;
                fresh.held_adds = sync.held_adds;
                fresh.held_removals = sync.held_removals;
                fresh.deferred = sync.deferred;
                fresh.used_export = sync.used_export || fresh.used_export;
                if sync.state == SyncState::Completed {
                    fresh.state = SyncState::Completed;
                }
                Ok(self.deps.state.update_sync(&fresh).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn write_report(&self, ledger: &RunLedger) {
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

    /// Everything under the lease. Returns the ledger and whether a continuation takes over.
    #[allow(clippy::too_many_arguments)]
    async fn run_locked(
        &self,
        sync: SyncConfig,
        run_id: String,
        holder: &str,
        trigger: RunTrigger,
        export_key: Option<String>,
        continue_run: Option<String>,
        deadline: Option<Instant>,
    ) -> Result<(RunLedger, bool), EngineError> {
        let st = &self.deps.state;
        // Fresh read under the lease.
        let sync = st
            .get_sync(&sync.project_id, &sync.sync_id)
            .await?
            .unwrap_or(sync);
        // A run cut off mid-apply (Lambda killed, lease expired) may have applied part of its plan: finish
        // its export first, so the base the new export is diffed against is exact again.
        let mut sync = sync;
        if continue_run.is_none()
            && let Some(last) = sync.last_run.clone()
            && last.state == RunState::Running
            && last.run_id != run_id
        {
            warn!(sync_id = %sync.sync_id, interrupted = %last.run_id, "finishing an interrupted run first");
            let started = Instant::now();
            let (recovered, continuing) = Box::pin(self.run_locked(
                sync.clone(),
                last.run_id.clone(),
                holder,
                RunTrigger::Continue,
                None,
                Some(last.run_id.clone()),
                deadline,
            ))
            .await?;
            self.log_run(&recovered, started.elapsed());
            if continuing {
                // Out of time: this request waits as the pending export; the interrupted run continues.
                if let Some(k) = &export_key
                    && let Some(p) = self.export_ref(k).await?
                {
                    st.set_pending_export(&sync.project_id, &sync.sync_id, &p)
                        .await?;
                }
                return Ok((recovered, true));
            }
            sync = st
                .get_sync(&sync.project_id, &sync.sync_id)
                .await?
                .unwrap_or(sync);
        }
        let mut ledger = match &continue_run {
            Some(id) => match st.get_run(&sync.sync_id, id).await? {
                Some(l) if l.state == RunState::Running => l,
                _ => {
                    let l = self.new_ledger(&sync, run_id.clone(), trigger);
                    return self
                        .finish_quiet(
                            sync,
                            l,
                            RunState::Skipped,
                            Some(format!("run {id} to continue is not running")),
                        )
                        .await;
                }
            },
            None => self.new_ledger(&sync, run_id.clone(), trigger),
        };
        let integration = st.get_integration(&sync.project_id).await?;
        let status = integration
            .as_ref()
            .map(|i| i.status)
            .unwrap_or(IntegrationStatus::NotConnected);
        if status != IntegrationStatus::Connected {
            let why = format!("the TikTok integration is {}", status.as_str());
            return self
                .finish_quiet(sync, ledger, RunState::Skipped, Some(why))
                .await;
        }
        match sync.state {
            SyncState::Paused => {
                return self
                    .finish_quiet(
                        sync,
                        ledger,
                        RunState::Skipped,
                        Some("the sync is paused".into()),
                    )
                    .await;
            }
            SyncState::Completed => {
                return self
                    .finish_quiet(
                        sync,
                        ledger,
                        RunState::Skipped,
                        Some("the one-time sync is completed".into()),
                    )
                    .await;
            }
            SyncState::Active => {}
        }
        let Some(mapping) = integration.as_ref().and_then(|i| i.mapping.clone()) else {
            return self
                .finish_quiet(
                    sync,
                    ledger,
                    RunState::Failed,
                    Some("no key mapping is saved for the project".into()),
                )
                .await;
        };

        // Which export.
        let key = match (export_key, &ledger.source_export) {
            (_, Some(k)) if continue_run.is_some() => k.clone(),
            (Some(k), _) => k,
            (None, _) => match self.newest_export(&sync.cohort_id).await? {
                Some(o) => o.meta.key,
                None => {
                    let why = format!(
                        "no existing export of cohort {} in the bucket yet",
                        sync.cohort_id
                    );
                    return self
                        .finish_quiet(sync, ledger, RunState::Skipped, Some(why))
                        .await;
                }
            },
        };
        ledger.source_export = Some(key.clone());
        let Some(export) = self.export_ref(&key).await? else {
            let why = format!("export {key} does not exist or does not follow Amplitude's naming");
            return self
                .finish_quiet(sync, ledger, RunState::Failed, Some(why))
                .await;
        };
        if let Some(c) = &sync.committed {
            if export.exported_at < c.export.exported_at {
                let why = format!(
                    "export of {} is older than the committed export of {}",
                    export.exported_at, c.export.exported_at
                );
                return self
                    .finish_quiet(sync, ledger, RunState::Stale, Some(why))
                    .await;
            }
            let same = c.export.s3_key == export.s3_key && c.export.etag == export.etag;
            let nothing_owed = sync.held_adds == 0
                && sync.held_removals == 0
                && sync.deferred == 0
                && sync.waiting_for_minimum.is_none()
                && sync.tiktok_audience_id.is_some();
            if same && nothing_owed && continue_run.is_none() {
                let mut sync = sync;
                self.read_back_status(&mut sync).await;
                return self
                    .finish_quiet(sync, ledger, RunState::UpToDate, None)
                    .await;
            }
        }

        // Read the export whole before anything else: a broken file never changes an audience.
        let read = match self.read_export(&key, &mapping).await? {
            Ok(r) => r,
            Err(why) => {
                let why = format!("the export could not be used: {why}");
                return self
                    .finish_quiet(sync, ledger, RunState::Failed, Some(why))
                    .await;
            }
        };
        let counts = read.counts();
        if continue_run.is_none() {
            ledger.rows = counts.rows;
            ledger.valid = counts.valid;
            ledger.unique = counts.unique;
            ledger.duplicates = counts.duplicates;
            ledger.skipped = counts.skipped.clone();
        }
        sync.used_export = true;

        // The base: what the audience holds as far as we know.
        let (base, base_note) = self.load_base(&sync, &mapping).await?;
        let d = diff(base.as_slice(), read.set.as_slice());
        let verdict = plan::check(
            &GuardInput {
                stats: &read.stats,
                unique: counts.unique,
                base_len: base.len() as u64,
                removes: d.removes.len() as u64,
                write_mode: sync.write_mode,
                audience_exists: sync.tiktok_audience_id.is_some(),
            },
            &GuardSettings {
                max_malformed_ratio: self.settings.max_malformed_ratio,
                max_removal_ratio: sync.max_removal_ratio,
                min_create_size: sync.min_create_size,
            },
        );
        if continue_run.is_none() {
            ledger.adds.planned = d.adds.len() as u64;
            ledger.removes.planned = d.removes.len() as u64;
        }
        if let Verdict::Refuse { state, reason } = verdict {
            // Nothing is applied: the whole plan is held for a later run.
            if state == RunState::HeldForReview {
                ledger.removes.held = ledger.removes.planned;
                ledger.adds.held = ledger.adds.planned;
            } else {
                ledger.adds.deferred = ledger.adds.planned;
                ledger.removes.deferred = ledger.removes.planned;
            }
            sync.held_adds = ledger.adds.held;
            sync.held_removals = ledger.removes.held;
            sync.deferred = 0;
            return self.finish_quiet(sync, ledger, state, Some(reason)).await;
        }
        sync.waiting_for_minimum = None;

        let Some(conn) = self.deps.vault.get_connection(&sync.project_id).await? else {
            let why = "the integration is connected but its token is missing; reconnect TikTok"
                .to_string();
            self.require_reconnect(&sync.project_id).await?;
            return self
                .finish_quiet(sync, ledger, RunState::Failed, Some(why))
                .await;
        };
        ledger.state = RunState::Running;
        ledger.checkpoint = Some(json!(Checkpoint {
            export_key: key.clone(),
            export_etag: export.etag.clone(),
            audience_id: sync.tiktok_audience_id.clone(),
            ..Default::default()
        }));
        st.put_run(&ledger).await?;
        // Visible on the sync while it runs: a later run that finds it still running knows it was cut off.
        sync.last_run = Some(ledger.clone());
        let sync = self.save_sync(sync).await?;

        let counters_before = self.deps.tiktok.counters();
        let mut run = Run {
            holder: holder.to_string(),
            sync,
            ledger,
            token: conn.access_token,
            mapping: &mapping,
            deadline,
            renewed_at: Instant::now(),
        };
        let applied = match run.sync.write_mode {
            WriteMode::CustomerFile => self.apply_files(&mut run, &d.adds, &d.removes).await?,
            WriteMode::Streaming => self.apply_stream(&mut run, &d.adds, &d.removes).await?,
        };
        let Applied {
            adds_done,
            removes_done,
            adds_held,
            stop,
        } = applied;
        let counters_after = self.deps.tiktok.counters();
        run.ledger.tiktok_calls += counters_after.calls.saturating_sub(counters_before.calls);

        // Commit what was applied, on success and on failure alike.
        let new_set = base.apply(&d.adds[..adds_done], &d.removes[..removes_done]);
        run.ledger.adds.applied += adds_done as u64;
        run.ledger.removes.applied += removes_done as u64;
        let mut rest_adds = (d.adds.len() - adds_done) as u64;
        let rest_removes = (d.removes.len() - removes_done) as u64;
        let mut held_note = None;
        if adds_held {
            run.ledger.adds.held += rest_adds;
            held_note = Some(format!(
                "TikTok would not edit the audience now (fewer than 1,000 matched users, or still processing): \
                 {rest_adds} adds are held for a later run"
            ));
            rest_adds = 0;
        }
        let mut continuing = false;
        let gone = matches!(stop, Some(Stop::AudienceGone));
        let reconnect = matches!(stop, Some(Stop::Reconnect(_)));
        let (state, reason) = match stop {
            None => (RunState::Succeeded, held_note.or(base_note)),
            Some(Stop::Held) => {
                run.ledger.adds.held += rest_adds;
                run.ledger.removes.held += rest_removes;
                // The totals held (adds may have been held earlier in the run, before the REMOVEs).
                (
                    RunState::Succeeded,
                    Some(format!(
                        "TikTok would not edit the audience now (fewer than 1,000 matched users, or still \
                         processing): {} adds and {} removes are held for a later run",
                        run.ledger.adds.held, run.ledger.removes.held
                    )),
                )
            }
            Some(Stop::Budget) => {
                run.ledger.adds.deferred += rest_adds;
                run.ledger.removes.deferred += rest_removes;
                (
                    RunState::Succeeded,
                    Some(format!(
                        "TikTok's budget of {} create/update calls per audience per UTC day is spent: {rest_adds} \
                         adds and {rest_removes} removes are deferred to a later run",
                        self.settings.daily_budget
                    )),
                )
            }
            Some(Stop::Deadline) => {
                continuing = true;
                (
                    RunState::Running,
                    Some("continuing in a new invocation (Lambda deadline)".to_string()),
                )
            }
            Some(Stop::AudienceGone) => {
                run.ledger.adds.deferred += rest_adds;
                run.ledger.removes.deferred += rest_removes;
                (
                    RunState::Failed,
                    Some(
                        "the TikTok audience no longer exists; it is recreated with a full upload"
                            .to_string(),
                    ),
                )
            }
            Some(Stop::Reconnect(why)) | Some(Stop::Failed(why)) => {
                // Unapplied changes are planned again by the next run.
                run.ledger.adds.deferred += rest_adds;
                run.ledger.removes.deferred += rest_removes;
                (RunState::Failed, Some(why))
            }
        };

        let committed = if gone {
            // The old base is discarded: the next run re-sends the whole cohort to a new audience.
            run.sync.tiktok_audience_id = None;
            run.sync.audience_create_intent = None;
            self.commit(&mut run, &DigestSet::default(), &export, &mapping)
                .await?
        } else {
            self.commit(&mut run, &new_set, &export, &mapping).await?
        };
        let (state, reason) = if committed {
            (state, reason)
        } else {
            (
                RunState::Failed,
                Some("the sync's lease was lost before commit; the next run re-plans".into()),
            )
        };
        run.ledger.state = state;
        run.ledger.reason = reason;
        if !continuing {
            run.ledger.finished_at = Some(Utc::now());
        }
        if reconnect {
            self.require_reconnect(&run.sync.project_id).await?;
        }
        if !gone && !reconnect && run.sync.tiktok_audience_id.is_some() {
            self.read_back_status(&mut run.sync).await;
        }
        let Run {
            mut sync, ledger, ..
        } = run;
        sync.held_adds = ledger.adds.held;
        sync.held_removals = ledger.removes.held;
        sync.deferred = ledger.adds.deferred + ledger.removes.deferred;
        if ledger.state == RunState::Succeeded
            && sync.cadence == Cadence::OneTime
            && sync.held_adds == 0
            && sync.deferred == 0
        {
            sync.state = SyncState::Completed;
        }
        sync.last_run = Some(ledger.clone());
        st.put_run(&ledger).await?;
        if !continuing {
            self.write_report(&ledger).await;
        }
        self.save_sync(sync).await?;
        if gone {
            // Recreate right away rather than waiting for the next export or schedule.
            self.deps
                .invoker
                .invoke_async(&json!({"trigger": "manual", "project_id": ledger.project_id, "sync_id": ledger.sync_id}))
                .await?;
        }
        Ok((ledger, continuing))
    }

    /// Streams an object through the pipeline on a blocking thread (any key: a preview may name a file
    /// outside Amplitude's naming; gzip by name or by magic bytes). `Ok(Err(reason))`: the file could not be
    /// used (a run state, not an infrastructure failure).
    async fn read_export(
        &self,
        key: &str,
        mapping: &KeyMapping,
    ) -> Result<Result<CohortDigests, String>, EngineError> {
        let gzip = key.to_ascii_lowercase().ends_with(".gz");
        let norm =
            match Normalizer::new(mapping.tiktok_key, mapping.default_phone_region.as_deref()) {
                Ok(n) => n,
                Err(e) => return Ok(Err(e.to_string())),
            };
        let object = match self.deps.cohorts.open(key).await {
            Ok(o) => o,
            Err(PortError::NotFound(_)) => return Ok(Err(format!("no object {key}"))),
            Err(e) => return Err(e.into()),
        };
        let column = mapping.amplitude_property.clone();
        let read =
            tokio::task::spawn_blocking(move || digest_reader(object.body, gzip, &column, &norm))
                .await
                .map_err(|e| EngineError::Internal(format!("reader task: {e}")))?;
        Ok(read.map_err(|e| e.to_string()))
    }

    /// The committed snapshot, unless there is no audience (nothing is held on TikTok) or it was made under
    /// another rule version or key kind (then the whole cohort is re-sent, and the reason says so).
    async fn load_base(
        &self,
        sync: &SyncConfig,
        mapping: &KeyMapping,
    ) -> Result<(DigestSet, Option<String>), EngineError> {
        let Some(pointer) = &sync.committed else {
            return Ok((DigestSet::default(), None));
        };
        if sync.tiktok_audience_id.is_none() {
            return Ok((DigestSet::default(), None));
        }
        let object = self.deps.cohorts.open_snapshot(&pointer.snapshot).await?;
        let key = mapping.tiktok_key;
        let read = tokio::task::spawn_blocking(move || {
            let r = SnapshotReader::open(std::io::BufReader::with_capacity(1 << 20, object.body))?;
            r.header().check_compatible(key)?;
            r.read_all().map(|(_, s)| s)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("snapshot task: {e}")))?;
        match read {
            Ok(set) => Ok((set, None)),
            Err(e) if e.is_incompatible() => Ok((
                DigestSet::default(),
                Some(format!(
                    "the previous snapshot was discarded ({e}); the whole cohort was re-sent"
                )),
            )),
            Err(e) => {
                Err(PortError::Corrupt(format!("snapshot {}: {e}", pointer.snapshot.key)).into())
            }
        }
    }

    /// Writes the new snapshot and moves the pointer under the lease. `false`: the lease was lost.
    async fn commit(
        &self,
        run: &mut Run<'_>,
        set: &DigestSet,
        export: &ExportRef,
        mapping: &KeyMapping,
    ) -> Result<bool, EngineError> {
        let dir = tempfile::Builder::new()
            .prefix("snapshot-")
            .tempdir_in(&self.settings.work_dir)
            .map_err(|e| EngineError::Internal(format!("work dir: {e}")))?;
        let path = dir.path().join("snapshot.bin");
        let key = mapping.tiktok_key;
        let digests = set.clone();
        let p = path.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let f = std::fs::File::create(&p).map_err(|e| e.to_string())?;
            let mut w = SnapshotWriter::new(
                std::io::BufWriter::with_capacity(1 << 20, f),
                key,
                digests.len() as u64,
            )
            .map_err(|e| e.to_string())?;
            for d in digests.as_slice() {
                w.push(d).map_err(|e| e.to_string())?;
            }
            w.finish().map_err(|e| e.to_string())?;
            Ok(())
        })
        .await
        .map_err(|e| EngineError::Internal(format!("snapshot writer task: {e}")))?
        .map_err(|e| EngineError::Internal(format!("snapshot write: {e}")))?;
        let snapshot = self
            .deps
            .cohorts
            .put_snapshot(
                &run.sync.project_id,
                &run.sync.sync_id,
                &format!("{}-{}", run.ledger.run_id, new_id()),
                &path,
            )
            .await?;
        let pointer = SnapshotPointer {
            snapshot,
            export: export.clone(),
            digests: set.len() as u64,
            key_kind: key,
            rule_version: RULE_VERSION as u32,
            committed_at: Utc::now(),
        };
        let outcome = self
            .deps
            .state
            .commit_snapshot(
                &run.sync.project_id,
                &run.sync.sync_id,
                &run.holder,
                &pointer,
                Utc::now(),
            )
            .await?;
        match outcome {
            CommitOutcome::Committed => {
                run.sync.committed = Some(pointer);
                Ok(true)
            }
            CommitOutcome::Stale {
                committed_exported_at,
            } => {
                warn!(sync_id = %run.sync.sync_id, %committed_exported_at, "commit refused: a newer export is committed");
                Ok(true)
            }
            CommitOutcome::LeaseLost => Ok(false),
        }
    }

    /// Saves the checkpoint after an acknowledged call.
    async fn checkpoint(
        &self,
        run: &mut Run<'_>,
        adds_done: usize,
        removes_done: usize,
    ) -> Result<Option<Stop>, EngineError> {
        if let Some(cp) = run.ledger.checkpoint.as_mut()
            && let Ok(mut c) = serde_json::from_value::<Checkpoint>(cp.clone())
        {
            c.adds_done = adds_done as u64;
            c.removes_done = removes_done as u64;
            c.audience_id = run.sync.tiktok_audience_id.clone();
            *cp = json!(c);
        }
        self.deps.state.put_run(&run.ledger).await?;
        // Long runs keep their lease fresh; a lost lease means another run may be working: stop.
        if run.renewed_at.elapsed() > self.settings.lease_ttl / 3 {
            let renewed = self
                .deps
                .state
                .renew_lease(
                    &run.sync.project_id,
                    &run.sync.sync_id,
                    &run.holder,
                    self.settings.lease_ttl,
                    Utc::now(),
                )
                .await?;
            if renewed.is_none() {
                return Ok(Some(Stop::Failed(
                    "the sync's lease was lost mid-run; the next run re-plans".into(),
                )));
            }
            run.renewed_at = Instant::now();
        }
        Ok(None)
    }

    fn note_request(&self, run: &mut Run<'_>, request_id: Option<String>) {
        if let Some(id) = request_id
            && run.ledger.tiktok_request_ids.len() < self.settings.max_request_ids
        {
            run.ledger.tiktok_request_ids.push(id);
        }
    }

    /// Calls TikTok; on a reconnect-class error re-reads the token once (it may have been replaced by a
    /// reconnect) before believing it.
    async fn call<T, F, Fut>(&self, run: &mut Run<'_>, f: F) -> Result<Ack<T>, ApiError>
    where
        F: Fn(SecretString) -> Fut,
        Fut: Future<Output = Result<Ack<T>, ApiError>>,
    {
        match f(run.token.clone()).await {
            Err(e) if e.kind == ApiErrorKind::ReconnectRequired => {
                self.deps.vault.invalidate(&run.sync.project_id);
                match self.deps.vault.get_connection(&run.sync.project_id).await {
                    Ok(Some(conn)) => {
                        run.token = conn.access_token;
                        f(run.token.clone()).await
                    }
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    fn stop_for(&self, e: &ApiError) -> Stop {
        match e.kind {
            ApiErrorKind::NotEditable => Stop::Held,
            ApiErrorKind::NotFound => Stop::AudienceGone,
            ApiErrorKind::ReconnectRequired => Stop::Reconnect(format!(
                "TikTok refused the token ({}); reconnect TikTok to resume",
                e.message
            )),
            _ => Stop::Failed(e.to_string()),
        }
    }

    /// Customer-file mode: upload files, create once, then APPEND and REMOVE, within the daily budget.
    async fn apply_files(
        &self,
        run: &mut Run<'_>,
        adds: &[Digest],
        removes: &[Digest],
    ) -> Result<Applied, EngineError> {
        let dir = tempfile::Builder::new()
            .prefix("batches-")
            .tempdir_in(&self.settings.work_dir)
            .map_err(|e| EngineError::Internal(format!("work dir: {e}")))?;
        let mut out = Applied::default();
        let s = &self.settings;
        'actions: for (is_add, list) in [(true, adds), (false, removes)] {
            let first = if is_add
                && run.sync.tiktok_audience_id.is_none()
                && run.sync.audience_create_intent.is_none()
            {
                batches::MAX_FILES_PER_CALL
            } else {
                s.files_per_call
            };
            let calls =
                batches::plan_file_calls(list.len(), s.digests_per_file, s.files_per_call, first);
            for (i, call) in calls.iter().enumerate() {
                // Before every call, the first too: a call that cannot finish before the deadline is not made
                // (a fresh invocation has 15 minutes, far more than the margin, so a continuation progresses).
                if self.time_short(run.deadline) {
                    out.stop = Some(Stop::Deadline);
                    return Ok(out);
                }
                // An audience is found again by name after an unknown-outcome create: never a duplicate.
                if run.sync.tiktok_audience_id.is_none()
                    && run.sync.audience_create_intent.is_some()
                {
                    match self.find_by_name(run).await {
                        Ok(found) => run.sync.tiktok_audience_id = found,
                        Err(stop) => {
                            out.stop = Some(stop);
                            return Ok(out);
                        }
                    }
                }
                if run.sync.tiktok_audience_id.is_none() && !is_add {
                    break; // nothing to remove from an audience that does not exist
                }
                let budget_key = format!("sync:{}", run.sync.sync_id);
                if let BudgetOutcome::Exhausted { .. } = self
                    .deps
                    .state
                    .try_consume_daily_call(&budget_key, Utc::now(), s.daily_budget)
                    .await?
                {
                    out.stop = Some(Stop::Budget);
                    return Ok(out);
                }
                let paths = match self
                    .upload_files(run, dir.path(), list, call, is_add, i)
                    .await
                {
                    Ok(p) => p,
                    Err(stop) => {
                        out.stop = Some(stop);
                        return Ok(out);
                    }
                };
                let result = match run.sync.tiktok_audience_id.clone() {
                    None => self.create_file_audience(run, &paths).await.map(|_| ()),
                    Some(aid) => {
                        let action = if is_add {
                            FileAction::Append
                        } else {
                            FileAction::Remove
                        };
                        let api = self.deps.tiktok.clone();
                        let adv = run.sync.advertiser_id.clone();
                        let r = self
                            .call(run, |t| {
                                let (api, adv, aid, paths) =
                                    (api.clone(), adv.clone(), aid.clone(), paths.clone());
                                async move {
                                    api.update_file_audience(&t, &adv, &aid, action, &paths)
                                        .await
                                }
                            })
                            .await;
                        match r {
                            Ok(ack) => {
                                self.note_request(run, ack.request_id);
                                Ok(())
                            }
                            Err(e) => {
                                self.note_request(run, e.request_id.clone());
                                Err(self.stop_for(&e))
                            }
                        }
                    }
                };
                match result {
                    Ok(()) => {
                        if is_add {
                            out.adds_done = call.range.end;
                        } else {
                            out.removes_done = call.range.end;
                        }
                        if let Some(stop) = self
                            .checkpoint(run, out.adds_done, out.removes_done)
                            .await?
                        {
                            out.stop = Some(stop);
                            return Ok(out);
                        }
                    }
                    // A held APPEND does not keep the REMOVEs from being tried.
                    Err(Stop::Held) if is_add => {
                        out.adds_held = true;
                        continue 'actions;
                    }
                    Err(stop) => {
                        out.stop = Some(stop);
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn upload_files(
        &self,
        run: &mut Run<'_>,
        dir: &std::path::Path,
        list: &[Digest],
        call: &CallBatch,
        is_add: bool,
        call_no: usize,
    ) -> Result<Vec<String>, Stop> {
        let mut paths = Vec::with_capacity(call.files.len());
        for (j, r) in call.files.iter().enumerate() {
            let name = format!(
                "{}-{}-{call_no}-{j}",
                if is_add { "add" } else { "remove" },
                run.ledger.run_id
            );
            let digests = list[r.clone()].to_vec();
            let d = dir.to_path_buf();
            let file = tokio::task::spawn_blocking(move || {
                batches::write_digest_file(&d, &name, &digests)
            })
            .await
            .map_err(|e| Stop::Failed(format!("file writer task: {e}")))?
            .map_err(|e| Stop::Failed(format!("cannot write a customer file: {e}")))?;
            let api = self.deps.tiktok.clone();
            let adv = run.sync.advertiser_id.clone();
            let key = run.mapping.tiktok_key;
            let r = self
                .call(run, |t| {
                    let (api, adv, file) = (api.clone(), adv.clone(), file.clone());
                    async move { api.upload_digest_file(&t, &adv, key, &file).await }
                })
                .await;
            let _ = std::fs::remove_file(&file);
            match r {
                Ok(ack) => {
                    self.note_request(run, ack.request_id);
                    paths.push(ack.value);
                }
                Err(e) => {
                    self.note_request(run, e.request_id.clone());
                    return Err(self.stop_for(&e));
                }
            }
        }
        Ok(paths)
    }

    /// Looks the sync's audience up by its exact name (after a create whose outcome is unknown).
    async fn find_by_name(&self, run: &mut Run<'_>) -> Result<Option<String>, Stop> {
        let name = audience_name(&run.sync);
        let api = self.deps.tiktok.clone();
        let adv = run.sync.advertiser_id.clone();
        let r = self
            .call(run, |t| {
                let (api, adv, name) = (api.clone(), adv.clone(), name.clone());
                async move { api.find_audiences_by_name(&t, &adv, &name).await }
            })
            .await;
        match r {
            Ok(ack) => {
                self.note_request(run, ack.request_id);
                Ok(ack.value.into_iter().next())
            }
            Err(e) => Err(self.stop_for(&e)),
        }
    }

    /// Records the intent, creates, and on an unknown outcome looks the name up instead of creating again.
    async fn create_file_audience(
        &self,
        run: &mut Run<'_>,
        paths: &[String],
    ) -> Result<String, Stop> {
        let name = audience_name(&run.sync);
        self.record_intent(run, &name).await?;
        let api = self.deps.tiktok.clone();
        let adv = run.sync.advertiser_id.clone();
        let key = run.mapping.tiktok_key;
        let paths = paths.to_vec();
        let r = self
            .call(run, |t| {
                let (api, adv, name, paths) =
                    (api.clone(), adv.clone(), name.clone(), paths.clone());
                async move { api.create_file_audience(&t, &adv, &name, key, &paths).await }
            })
            .await;
        self.after_create(run, r).await
    }

    async fn record_intent(&self, run: &mut Run<'_>, name: &str) -> Result<(), Stop> {
        run.sync.audience_create_intent = Some(AudienceCreateIntent {
            audience_name: name.to_string(),
            recorded_at: Utc::now(),
        });
        match self.save_sync(run.sync.clone()).await {
            Ok(s) => {
                run.sync.version = s.version;
                Ok(())
            }
            Err(e) => Err(Stop::Failed(format!(
                "cannot record the audience create intent: {e}"
            ))),
        }
    }

    async fn after_create(
        &self,
        run: &mut Run<'_>,
        r: Result<Ack<String>, ApiError>,
    ) -> Result<String, Stop> {
        match r {
            Ok(ack) => {
                self.note_request(run, ack.request_id);
                run.sync.tiktok_audience_id = Some(ack.value.clone());
                Ok(ack.value)
            }
            Err(e) if e.kind == ApiErrorKind::OutcomeUnknown => {
                self.note_request(run, e.request_id.clone());
                match self.find_by_name(run).await? {
                    Some(id) => {
                        run.sync.tiktok_audience_id = Some(id.clone());
                        Ok(id)
                    }
                    None => Err(Stop::Failed(format!(
                        "creating the audience had an unknown outcome and no audience of that name exists yet: {e}"
                    ))),
                }
            }
            Err(e) => {
                self.note_request(run, e.request_id.clone());
                Err(self.stop_for(&e))
            }
        }
    }

    /// Streaming mode: create the segment audience once, then add/delete in batches of at most 10,000.
    async fn apply_stream(
        &self,
        run: &mut Run<'_>,
        adds: &[Digest],
        removes: &[Digest],
    ) -> Result<Applied, EngineError> {
        let (applied, stop) = self.apply_stream_inner(run, adds, removes).await?;
        Ok(Applied {
            adds_done: applied.0,
            removes_done: applied.1,
            adds_held: false,
            stop,
        })
    }

    async fn apply_stream_inner(
        &self,
        run: &mut Run<'_>,
        adds: &[Digest],
        removes: &[Digest],
    ) -> Result<((usize, usize), Option<Stop>), EngineError> {
        let mut adds_done = 0usize;
        let mut removes_done = 0usize;
        if run.sync.tiktok_audience_id.is_none() && (!adds.is_empty() || !removes.is_empty()) {
            if run.sync.audience_create_intent.is_some() {
                match self.find_by_name(run).await {
                    Ok(found) => run.sync.tiktok_audience_id = found,
                    Err(stop) => return Ok(((0, 0), Some(stop))),
                }
            }
            if run.sync.tiktok_audience_id.is_none() {
                let name = audience_name(&run.sync);
                if let Err(stop) = self.record_intent(run, &name).await {
                    return Ok(((0, 0), Some(stop)));
                }
                let api = self.deps.tiktok.clone();
                let adv = run.sync.advertiser_id.clone();
                let r = self
                    .call(run, |t| {
                        let (api, adv, name) = (api.clone(), adv.clone(), name.clone());
                        async move { api.create_stream_audience(&t, &adv, &name).await }
                    })
                    .await;
                if let Err(stop) = self.after_create(run, r).await {
                    return Ok(((0, 0), Some(stop)));
                }
                if let Some(stop) = self.checkpoint(run, 0, 0).await? {
                    return Ok(((0, 0), Some(stop)));
                }
            }
        }
        let Some(aid) = run.sync.tiktok_audience_id.clone() else {
            return Ok(((0, 0), None));
        };
        for (action, list) in [(MappingAction::Add, adds), (MappingAction::Delete, removes)] {
            for call in batches::plan_mapping_calls(list.len(), self.settings.mapping_batch) {
                if self.time_short(run.deadline) {
                    return Ok(((adds_done, removes_done), Some(Stop::Deadline)));
                }
                let api = self.deps.tiktok.clone();
                let adv = run.sync.advertiser_id.clone();
                let key = run.mapping.tiktok_key;
                let chunk = list[call.range.clone()].to_vec();
                let aid2 = aid.clone();
                let r = self
                    .call(run, |t| {
                        let (api, adv, aid, chunk) =
                            (api.clone(), adv.clone(), aid2.clone(), chunk.clone());
                        async move {
                            api.stream_mapping(&t, &adv, &aid, key, action, &chunk)
                                .await
                        }
                    })
                    .await;
                match r {
                    Ok(ack) => {
                        self.note_request(run, ack.request_id);
                        match action {
                            MappingAction::Add => adds_done = call.range.end,
                            MappingAction::Delete => removes_done = call.range.end,
                        }
                        if let Some(stop) = self.checkpoint(run, adds_done, removes_done).await? {
                            return Ok(((adds_done, removes_done), Some(stop)));
                        }
                    }
                    Err(e) => {
                        self.note_request(run, e.request_id.clone());
                        return Ok(((adds_done, removes_done), Some(self.stop_for(&e))));
                    }
                }
            }
        }
        Ok(((adds_done, removes_done), None))
    }

    /// Marks the integration `reconnect_required` and disables the project's schedules: nothing more is
    /// sent until the user reconnects (the OAuth callback re-enables them).
    async fn require_reconnect(&self, project_id: &str) -> Result<(), EngineError> {
        self.deps
            .state
            .set_integration_status(project_id, IntegrationStatus::ReconnectRequired, Utc::now())
            .await?;
        for s in self.deps.state.list_syncs(project_id).await? {
            if s.cadence.is_recurring() {
                self.deps
                    .schedules
                    .set_schedule_enabled(&s.sync_id, false)
                    .await?;
            }
        }
        warn!(
            project_id,
            "TikTok token refused: integration marked reconnect_required, schedules disabled"
        );
        Ok(())
    }

    /// Reads TikTok's view of the audience onto the sync (best effort: a failure leaves the old status).
    async fn read_back_status(&self, sync: &mut SyncConfig) {
        let Some(aid) = sync.tiktok_audience_id.clone() else {
            return;
        };
        let Ok(Some(conn)) = self.deps.vault.get_connection(&sync.project_id).await else {
            return;
        };
        match self
            .deps
            .tiktok
            .audience_status(&conn.access_token, &sync.advertiser_id, &aid)
            .await
        {
            Ok(ack) => match ack.value {
                Some(v) => {
                    sync.tiktok_status = Some(TikTokAudienceStatus {
                        is_valid: v.is_valid,
                        cover_num: v.cover_num,
                        is_expiring: v.is_expiring,
                        msg: v.msg,
                        checked_at: Utc::now(),
                    });
                }
                None => {
                    // Deleted (or expired and removed) on TikTok's side: without an audience the committed
                    // base is ignored, so the next run recreates it with a full upload.
                    warn!(sync_id = %sync.sync_id, audience_id = %aid, "TikTok no longer knows the audience");
                    sync.tiktok_audience_id = None;
                    sync.audience_create_intent = None;
                    sync.tiktok_status = None;
                }
            },
            Err(e) => warn!(error = %e, sync_id = %sync.sync_id, "audience status not read back"),
        }
    }

    /// The pre-flight report for the API, computed here because large exports outlast API Gateway's 30 s.
    async fn preview(
        &self,
        project_id: &str,
        preview_id: &str,
        s3_key: &str,
    ) -> Result<Outcome, EngineError> {
        let st = &self.deps.state;
        let now = Utc::now();
        let mut record = st
            .get_preview(project_id, preview_id)
            .await?
            .unwrap_or(PreviewRecord {
                preview_id: preview_id.to_string(),
                project_id: project_id.to_string(),
                s3_key: s3_key.to_string(),
                state: PreviewState::Running,
                report: None,
                error: None,
                created_at: now,
                updated_at: now,
            });
        let mapping = st
            .get_integration(project_id)
            .await?
            .and_then(|i| i.mapping);
        let result = match &mapping {
            None => Err((
                "mapping_missing",
                "save the key mapping before previewing".to_string(),
            )),
            Some(m) => match self.read_export(s3_key, m).await? {
                Ok(read) => {
                    let name = parse_export_key(s3_key).ok();
                    let report = PreviewReport::new(
                        &read,
                        name.as_ref(),
                        m.tiktok_key,
                        &m.amplitude_property,
                    );
                    serde_json::to_value(&report).map_err(|e| ("internal", e.to_string()))
                }
                Err(e) => Err(("invalid_request", e)),
            },
        };
        match result {
            Ok(report) => {
                let _ = self
                    .deps
                    .cohorts
                    .put_preview_report(project_id, preview_id, &report)
                    .await;
                record.state = PreviewState::Done;
                record.report = Some(report);
            }
            Err((code, message)) => {
                record.state = PreviewState::Failed;
                record.error = Some(json!({"code": code, "message": message}));
            }
        }
        record.updated_at = Utc::now();
        st.put_preview(&record).await?;
        Ok(Outcome::Preview {
            preview_id: preview_id.to_string(),
            state: record.state,
        })
    }

    /// One structured line per run, plus CloudWatch embedded-metric figures. Counts and ids only.
    fn log_run(&self, l: &RunLedger, took: Duration) {
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
                "Timestamp": Utc::now().timestamp_millis(),
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
}

//! One sync run, in phases over the ports:
//! `lease` (grant or hand-over, fenced) → `prepare` (fresh read, preconditions, which export) → `plan` (read,
//! base and uncertain digests, diff, guards) → `apply` (TikTok: files or streaming) → `settle` (pure: what the
//! run's state, counts and next step are) → `commit` (snapshot, pointer, ledger, progress — all fenced).

mod apply;
mod commit;
mod files;
mod lease;
mod notify;
pub mod plan;
mod prepare;
mod preview;
mod report;
mod settings;
pub mod settle;
mod stream;
mod tiktok;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{info, warn};

use super::api::AudienceApi;
use super::input::{RunnerInput, Trigger};
use crate::cohort::naming::{DiffType, parse_export_key};
use crate::cohort::unmatched::UnmatchedExport;
use crate::model::{Cadence, ExportRef, RunState, RunTrigger, SyncConfig, SyncState};
use crate::ports::{
    Clock, CohortStore, ExportObject, Invoker, NoNotifier, Notifier, PortError, Schedules,
    StateStore, TokenVault,
};

pub use lease::Start;
pub use settings::{
    COMMIT_ALLOWANCE, DEFAULT_DAILY_BUDGET, DEFAULT_MAX_MALFORMED_RATIO, EngineSettings,
    TIKTOK_REQUEST_TIMEOUT,
};

/// The ports an engine runs on, built once per process.
#[derive(Clone)]
pub struct Deps {
    pub state: Arc<dyn StateStore>,
    pub vault: Arc<dyn TokenVault>,
    pub cohorts: Arc<dyn CohortStore>,
    pub schedules: Arc<dyn Schedules>,
    pub invoker: Arc<dyn Invoker>,
    pub tiktok: Arc<dyn AudienceApi>,
    /// Every "now" of the engine (leases, budgets, processing windows) comes from here.
    pub clock: Arc<dyn Clock>,
}

/// Infrastructure failures (state store, S3, secrets unreachable): the invocation fails and Lambda's async
/// retry (then the sweeper) takes over. Business outcomes are run states, not errors.
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
        state: crate::model::PreviewState,
    },
    /// The sweeper asked these syncs to resume.
    Swept {
        resumed: Vec<String>,
    },
}

pub struct Engine {
    deps: Deps,
    settings: EngineSettings,
    /// Told after a run's outcome is committed (off unless [`Engine::with_notifier`]).
    notifier: Arc<dyn Notifier>,
}

pub(crate) fn new_id() -> String {
    ulid::Ulid::new().to_string()
}

/// TikTok cuts streaming audience names at 70 characters (customer files allow 128): one limit for both.
pub const MAX_AUDIENCE_NAME_CHARS: usize = 70;

/// The audience name carries the sync id so an unknown-outcome create is found by exact name; it fits
/// TikTok's 70 characters for streaming audiences (128 for customer files).
pub fn audience_name(sync: &SyncConfig) -> String {
    let suffix = format!(" [as:{}]", sync.sync_id);
    let base = sync
        .audience_name
        .clone()
        .unwrap_or_else(|| format!("Amplitude cohort {}", sync.cohort_id));
    let room = MAX_AUDIENCE_NAME_CHARS.saturating_sub(suffix.chars().count());
    let base: String = base.chars().take(room).collect();
    format!("{}{}", base.trim_end(), suffix)
}

impl Engine {
    pub fn new(deps: Deps, settings: EngineSettings) -> Engine {
        Engine {
            deps,
            settings,
            notifier: Arc::new(NoNotifier),
        }
    }

    /// Failure notifications go to `notifier` (see `crate::notify`).
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> Engine {
        self.notifier = notifier;
        self
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Now, on the engine's clock (deadlines are measured on it).
    pub fn now(&self) -> DateTime<Utc> {
        self.deps.clock.now()
    }

    /// Entry point of the sync-runner: any input, any number of affected syncs. `deadline`: when the Lambda
    /// invocation ends, on the engine's clock.
    pub async fn handle(
        &self,
        input: RunnerInput,
        deadline: Option<DateTime<Utc>>,
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
                    out.extend(self.on_upload(&o.key, o.size, deadline).await?);
                }
                Ok(out)
            }
            RunnerInput::Trigger(t) => self.on_trigger(t, deadline).await,
        }
    }

    async fn on_trigger(
        &self,
        t: Trigger,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Vec<Outcome>, EngineError> {
        let (project_id, sync_id, start) = match t {
            Trigger::Sweep => return Ok(vec![self.sweep().await?]),
            Trigger::Preview {
                project_id,
                preview_id,
                s3_key,
                sync_id,
            } => {
                let p = self
                    .preview(&project_id, &preview_id, &s3_key, sync_id.as_deref())
                    .await?;
                return Ok(vec![p]);
            }
            Trigger::Schedule {
                project_id,
                sync_id,
            } => (
                project_id,
                sync_id,
                Start::fresh(RunTrigger::Schedule, None),
            ),
            Trigger::Manual {
                project_id,
                sync_id,
            } => (project_id, sync_id, Start::fresh(RunTrigger::Manual, None)),
            Trigger::Pending {
                project_id,
                sync_id,
                s3_key,
            } => (
                project_id,
                sync_id,
                Start::fresh(RunTrigger::Pending, Some(s3_key)),
            ),
            Trigger::Resume {
                project_id,
                sync_id,
            } => (project_id, sync_id, Start::Resume),
            Trigger::Continue {
                project_id,
                sync_id,
                holder,
                fence,
            } => (project_id, sync_id, Start::Continue { holder, fence }),
        };
        self.run_sync(&project_id, &sync_id, start, deadline).await
    }

    pub(crate) async fn newest_export(
        &self,
        cohort_id: &str,
    ) -> Result<Option<ExportObject>, PortError> {
        crate::cohort::listing::newest_export(&*self.deps.state, &*self.deps.cohorts, cohort_id)
            .await
    }

    /// An uploaded object: only `existing` exports start runs, per the cadence rules.
    async fn on_upload(
        &self,
        key: &str,
        size: Option<u64>,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Vec<Outcome>, EngineError> {
        let name = match parse_export_key(key) {
            Ok(n) => n,
            Err(e) => {
                crate::cohort::unmatched::record(&e, "s3_event");
                self.keep_unmatched(UnmatchedExport::misnamed(key, size, &e, self.now()))
                    .await;
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
            let u = UnmatchedExport::no_sync(key, size, &name.cohort_id, self.now());
            self.keep_unmatched(u).await;
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
            if !starts_on_upload(&sync) {
                out.push(Outcome::Ignored {
                    reason: format!(
                        "sync {}: cadence {:?} does not run on uploads now",
                        sync.sync_id, sync.cadence
                    ),
                });
                continue;
            }
            let start = Start::fresh(RunTrigger::Upload, Some(key.to_string()));
            out.extend(
                self.run_sync(&sync.project_id, &sync.sync_id, start, deadline)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Diagnostics only: a failed write is logged, never a reason to retry the event.
    async fn keep_unmatched(&self, export: UnmatchedExport) {
        if let Err(e) = self.deps.state.record_unmatched_export(&export).await {
            warn!(error = %e, reason = %export.reason, "unmatched export not recorded");
        }
    }

    /// The sweeper: every sync with work left (a cut-off run, held or deferred changes that can go now, a
    /// pending export) and no live lease gets a resume invocation of its own.
    async fn sweep(&self) -> Result<Outcome, EngineError> {
        let due = self
            .deps
            .state
            .syncs_due(self.now(), self.settings.sweep_batch)
            .await?;
        let mut resumed = Vec::with_capacity(due.len());
        for (project_id, sync_id) in due {
            let t = Trigger::Resume {
                project_id,
                sync_id: sync_id.clone(),
            };
            match self.deps.invoker.invoke_async(&t.to_json()).await {
                Ok(()) => resumed.push(sync_id),
                Err(e) => warn!(error = %e, %sync_id, "sweeper could not resume a sync"),
            }
        }
        if !resumed.is_empty() {
            info!(count = resumed.len(), "sweeper resumed syncs");
        }
        Ok(Outcome::Swept { resumed })
    }

    pub(crate) async fn export_ref(&self, key: &str) -> Result<Option<ExportRef>, EngineError> {
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
}

/// Which syncs an upload starts: one-time until completed, on-upload always, hourly/daily until their
/// first export (then their schedule runs them).
pub fn starts_on_upload(sync: &SyncConfig) -> bool {
    match sync.cadence {
        Cadence::OneTime => sync.effective_state() != SyncState::Completed,
        Cadence::OnUpload => true,
        Cadence::Hourly | Cadence::Daily => !sync.progress.used_export,
    }
}

#[cfg(test)]
mod tests;

//! The lease around runs: grant or hand-over (each with a new fence), a heartbeat that keeps it, the
//! continuation of a run cut off by the Lambda deadline, and the hand-off of a pending export.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::{Engine, EngineError, Outcome, new_id};
use crate::model::{Fence, RunTrigger};
use crate::ports::{FinishOutcome, LeaseOutcome, StateStore};
use crate::sync::input::Trigger;

/// How an invocation comes to a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// An upload, a schedule, "run now" or a pending export: a new run (after the sync's unfinished one).
    Fresh {
        trigger: RunTrigger,
        export_key: Option<String>,
    },
    /// The sweeper: resume the unfinished run or the held/deferred changes.
    Resume,
    /// A run cut off by the deadline, continued by the lease's holder at `fence`.
    Continue { holder: String, fence: u64 },
}

impl Start {
    pub fn fresh(trigger: RunTrigger, export_key: Option<String>) -> Start {
        Start::Fresh {
            trigger,
            export_key,
        }
    }
}

/// A held lease: its fence, and a heartbeat renewing it until dropped.
pub(super) struct Tenure {
    pub fence: Fence,
    lost: Arc<AtomicBool>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    renewed_at: std::sync::Mutex<DateTime<Utc>>,
}

impl Tenure {
    /// Whether a renewal is due (`every` since the last one, on the engine's clock).
    pub fn due(&self, now: DateTime<Utc>, every: std::time::Duration) -> bool {
        let last = *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner());
        now - last >= super::settings::chrono(every)
    }

    pub fn renewed(&self, now: DateTime<Utc>) {
        *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    pub fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    /// Whether the lease was lost (another run may be working): no further TikTok call may be made.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Tenure {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

/// What a run asks of the lease after it committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing more now: finish the tenure (or run the pending export).
    Done,
    /// Cut off by the deadline: a new invocation continues under this lease.
    Continue,
    /// The audience is gone or expired: a new run recreates it right away.
    Recreate,
    /// The run's writes were refused (fence moved, or the sync was deleted): stop, write nothing more.
    Fenced,
}

pub(super) enum Deferral {
    Recorded(Outcome),
    /// The lease came free: run this pending export under it.
    Granted(Fence, String),
}

/// What [`Engine::run_once`] reports to the lease loop.
pub(super) struct RunDone {
    pub outcome: Outcome,
    pub next: Next,
}

impl Engine {
    /// Takes the lease (or hands it over), runs, and hands a pending export on.
    pub(super) async fn run_sync(
        &self,
        project_id: &str,
        sync_id: &str,
        start: Start,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Vec<Outcome>, EngineError> {
        let st = &self.deps.state;
        let (tenure, mut trigger, mut key) = match self.begin(project_id, sync_id, start).await? {
            Ok(t) => t,
            Err(outcome) => return Ok(vec![outcome]),
        };
        let mut outcomes = Vec::new();
        loop {
            let done = match self
                .run_once(&tenure, project_id, sync_id, trigger, key.take(), deadline)
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    // Infrastructure failure: free the sync for Lambda's retry (or the sweeper), then fail.
                    let _ = st.release_lease(project_id, sync_id, &tenure.fence).await;
                    return Err(e);
                }
            };
            outcomes.push(done.outcome);
            match done.next {
                Next::Fenced => return Ok(outcomes),
                Next::Continue => {
                    let t = Trigger::Continue {
                        project_id: project_id.to_string(),
                        sync_id: sync_id.to_string(),
                        holder: tenure.fence.holder.clone(),
                        fence: tenure.fence.fence,
                    };
                    // Lost, this event is replaced by the sweeper once the lease expires.
                    self.deps.invoker.invoke_async(&t.to_json()).await?;
                    return Ok(outcomes);
                }
                Next::Done | Next::Recreate => {}
            }
            match self
                .finish(
                    &tenure,
                    project_id,
                    sync_id,
                    done.next == Next::Recreate,
                    deadline,
                )
                .await?
            {
                Some(k) => {
                    trigger = RunTrigger::Pending;
                    key = Some(k);
                }
                None => return Ok(outcomes),
            }
        }
    }

    /// Ends the tenure, or (an export is pending) keeps it and returns the export to run next. A pending
    /// export that is the one just committed is dropped: it would only be `up_to_date`.
    async fn finish(
        &self,
        tenure: &Tenure,
        project_id: &str,
        sync_id: &str,
        recreate: bool,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Option<String>, EngineError> {
        let st = &self.deps.state;
        loop {
            let p = match st.finish_lease(project_id, sync_id, &tenure.fence).await? {
                FinishOutcome::Fenced => return Ok(None),
                FinishOutcome::Released => {
                    if recreate {
                        // Freed: the recreating run takes the lease like any other.
                        let t = Trigger::Manual {
                            project_id: project_id.to_string(),
                            sync_id: sync_id.to_string(),
                        };
                        self.deps.invoker.invoke_async(&t.to_json()).await?;
                    }
                    return Ok(None);
                }
                FinishOutcome::Pending(p) => p,
            };
            let sync = st.get_sync(project_id, sync_id).await?;
            let committed = sync
                .as_ref()
                .and_then(|s| s.committed.as_ref())
                .is_some_and(|c| c.export.s3_key == p.s3_key && c.export.etag == p.etag);
            if committed && !recreate && sync.as_ref().is_some_and(super::prepare::nothing_owed) {
                continue;
            }
            if self.time_short(deadline) {
                // Put back, free the sync, and ask for a run of it: a lost request is swept.
                st.set_pending_export(project_id, sync_id, &p).await?;
                st.release_lease(project_id, sync_id, &tenure.fence).await?;
                let t = Trigger::Pending {
                    project_id: project_id.to_string(),
                    sync_id: sync_id.to_string(),
                    s3_key: p.s3_key,
                };
                self.deps.invoker.invoke_async(&t.to_json()).await?;
                return Ok(None);
            }
            info!(sync_id, export = %p.s3_key, "running the pending export under the same lease");
            return Ok(Some(p.s3_key));
        }
    }

    /// The lease for a start: a grant, a hand-over, or (lease held) the export recorded as pending.
    /// `Err(outcome)`: nothing to run here.
    #[allow(clippy::type_complexity)]
    async fn begin(
        &self,
        project_id: &str,
        sync_id: &str,
        start: Start,
    ) -> Result<Result<(Tenure, RunTrigger, Option<String>), Outcome>, EngineError> {
        let st = &self.deps.state;
        Ok(Ok(match start {
            Start::Continue { holder, fence } => {
                let f = Fence { holder, fence };
                let now = self.now();
                match st
                    .take_over_lease(project_id, sync_id, &f, self.settings.lease_ttl, now)
                    .await?
                {
                    Some(l) => (
                        self.tenure(project_id, sync_id, l.fence()),
                        RunTrigger::Continue,
                        None,
                    ),
                    None => {
                        info!(sync_id, holder = %f.holder, fence = f.fence, "stale continuation ignored");
                        return Ok(Err(Outcome::Ignored {
                            reason: format!(
                                "continuation of lease {} at fence {} is stale: the run finished or another \
                                 run took the sync over",
                                f.holder, f.fence
                            ),
                        }));
                    }
                }
            }
            Start::Resume => match self.grant(project_id, sync_id).await? {
                Some(f) => (
                    self.tenure(project_id, sync_id, f),
                    RunTrigger::Resume,
                    None,
                ),
                None => {
                    return Ok(Err(Outcome::Ignored {
                        reason: "resume: the sync's lease is live; its holder finishes the work"
                            .into(),
                    }));
                }
            },
            Start::Fresh {
                trigger,
                export_key,
            } => match self.grant(project_id, sync_id).await? {
                Some(f) => (self.tenure(project_id, sync_id, f), trigger, export_key),
                None => match self.defer(project_id, sync_id, export_key).await? {
                    Deferral::Recorded(outcome) => return Ok(Err(outcome)),
                    Deferral::Granted(f, key) => (
                        self.tenure(project_id, sync_id, f),
                        RunTrigger::Pending,
                        Some(key),
                    ),
                },
            },
        }))
    }

    /// A new grant with a fresh holder id. `None`: a live lease is held by another run.
    async fn grant(&self, project_id: &str, sync_id: &str) -> Result<Option<Fence>, EngineError> {
        let outcome = self
            .deps
            .state
            .acquire_lease(
                project_id,
                sync_id,
                &new_id(),
                self.settings.lease_ttl,
                self.now(),
            )
            .await;
        match outcome {
            Ok(LeaseOutcome::Acquired(l)) => Ok(Some(l.fence())),
            Ok(LeaseOutcome::HeldBy(_)) => Ok(None),
            Err(crate::ports::PortError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Another run holds the lease: record the export as pending. The holder takes it when it finishes
    /// (`finish_lease` is atomic with the pending slot); if it finished just before the record, the lease is
    /// free now and this invocation takes the pending export itself.
    async fn defer(
        &self,
        project_id: &str,
        sync_id: &str,
        export_key: Option<String>,
    ) -> Result<Deferral, EngineError> {
        let st = &self.deps.state;
        let Some(sync) = st.get_sync(project_id, sync_id).await? else {
            return Ok(Deferral::Recorded(Outcome::Ignored {
                reason: format!("no sync {sync_id} in project {project_id}"),
            }));
        };
        let pending = match &export_key {
            Some(k) => self.export_ref(k).await?,
            None => self
                .newest_export(&sync.cohort_id)
                .await?
                .map(|o| o.to_export_ref()),
        };
        if let Some(p) = &pending {
            st.set_pending_export(project_id, sync_id, p).await?;
            if let Some(f) = self.grant(project_id, sync_id).await? {
                return match st.finish_lease(project_id, sync_id, &f).await? {
                    FinishOutcome::Pending(p) => Ok(Deferral::Granted(f, p.s3_key)),
                    // The previous holder took the export just before it let go.
                    FinishOutcome::Released | FinishOutcome::Fenced => {
                        Ok(Deferral::Recorded(Outcome::Ignored {
                            reason: "the previous run took this export over before it finished"
                                .into(),
                        }))
                    }
                };
            }
        }
        info!(
            sync_id,
            "lease held by another run; export recorded as pending"
        );
        Ok(Deferral::Recorded(Outcome::Deferred {
            sync_id: sync_id.to_string(),
            pending_export: pending.map(|p| p.s3_key),
        }))
    }

    fn tenure(&self, project_id: &str, sync_id: &str, fence: Fence) -> Tenure {
        let lost = Arc::new(AtomicBool::new(false));
        // At least three beats per lease, whatever the two settings say.
        let heartbeat = self.settings.heartbeat.map(|every| {
            let every = every.min(self.settings.lease_ttl / 3);
            let (st, clock, ttl) = (
                self.deps.state.clone(),
                self.deps.clock.clone(),
                self.settings.lease_ttl,
            );
            let (p, s, f, lost) = (
                project_id.to_string(),
                sync_id.to_string(),
                fence.clone(),
                lost.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match renew(&*st, &p, &s, &f, ttl, clock.now()).await {
                        Some(true) => {}
                        Some(false) => {
                            warn!(sync_id = %s, "lease lost: the run stops before its next TikTok call");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        // Unreachable store: try again on the next beat (the lease has a margin).
                        None => {}
                    }
                }
            })
        });
        Tenure {
            fence,
            lost,
            heartbeat,
            renewed_at: std::sync::Mutex::new(self.now()),
        }
    }

    pub(super) fn time_short(&self, deadline: Option<DateTime<Utc>>) -> bool {
        deadline.is_some_and(|d| {
            let left = d - self.now();
            left < super::settings::chrono(self.settings.deadline_margin)
        })
    }
}

async fn renew(
    st: &dyn StateStore,
    project_id: &str,
    sync_id: &str,
    fence: &Fence,
    ttl: std::time::Duration,
    now: DateTime<Utc>,
) -> Option<bool> {
    match st.renew_lease(project_id, sync_id, fence, ttl, now).await {
        Ok(l) => Some(l.is_some()),
        Err(_) => None,
    }
}

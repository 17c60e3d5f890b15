//! In-memory fakes of the ports, for the engine's and the API's unit tests. They keep the same conditional
//! semantics as the AWS adapters (the `StateStore` contract tests in `tests/tests/aws/state.rs` run against
//! both [`MemoryStateStore`] and the DynamoDB adapter), and they are plain `Mutex`ed maps: no I/O, no clock.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use secrecy::SecretString;

use super::{
    AppCredentials, BudgetOutcome, CohortStore, CommitOutcome, ConsumedState, CreateSync,
    ExportObject, FinishOutcome, Invoker, LeaseOutcome, ObjectMeta, ObjectReader, PortError,
    RunPage, SaveMapping, ScheduleInfo, ScheduleRate, Schedules, StateStore, TikTokConnection,
    TokenVault, schedule_input, schedule_name,
};
use crate::cohort::listing::{ListStep, is_newer, list_steps};
use crate::cohort::naming::parse_export_key;
use crate::cohort::unmatched::UnmatchedExport;
use crate::model::{
    Advertiser, ExportRef, Fence, Integration, IntegrationStatus, KeyMapping, Lease, OAuthState,
    PreviewRecord, RetiredSync, RunLedger, SnapshotPointer, SnapshotRef, SyncConfig, SyncProgress,
    WriteMode,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn check_id(what: &str, id: &str) -> Result<(), PortError> {
    crate::model::ids::check(what, id)
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn lease_until(now: DateTime<Utc>, ttl: Duration) -> Result<DateTime<Utc>, PortError> {
    let d = chrono::Duration::from_std(ttl)
        .map_err(|_| PortError::Invalid("lease duration too long".into()))?;
    Ok(now + d)
}

#[derive(Clone)]
struct SyncEntry {
    sync: SyncConfig,
    lease: Option<Lease>,
    /// The last fence granted (kept after a release: fences only grow).
    fence: u64,
}

impl SyncEntry {
    /// The caller's grant is still the sync's newest and was not released (expired is fine: nobody else
    /// was granted it since).
    fn fenced_by(&self, f: &Fence) -> bool {
        self.fence == f.fence && self.lease.as_ref().is_some_and(|l| l.holder == f.holder)
    }
}

#[derive(Default)]
struct StateData {
    integrations: HashMap<String, Integration>,
    oauth: HashMap<String, OAuthState>,
    syncs: BTreeMap<(String, String), SyncEntry>,
    /// (project, cohort, advertiser, write mode) -> sync id.
    sync_keys: HashMap<(String, String, String, WriteMode), String>,
    runs: BTreeMap<(String, String), RunLedger>,
    budget: HashMap<(String, NaiveDate), u32>,
    previews: HashMap<(String, String), PreviewRecord>,
    /// cohort id -> newest export seen.
    seen_exports: HashMap<String, ExportRef>,
    /// key -> the last time it started nothing.
    unmatched: HashMap<String, UnmatchedExport>,
    /// (project, sync id) -> a sync a disconnect retired, its runs kept.
    retired: BTreeMap<(String, String), RetiredSync>,
}

/// `StateStore` in memory.
#[derive(Default)]
pub struct MemoryStateStore {
    data: Mutex<StateData>,
}

impl MemoryStateStore {
    pub fn new() -> MemoryStateStore {
        MemoryStateStore::default()
    }

    /// The current lease of a sync (for assertions).
    pub fn lease(&self, project_id: &str, sync_id: &str) -> Option<Lease> {
        lock(&self.data)
            .syncs
            .get(&(project_id.to_string(), sync_id.to_string()))
            .and_then(|e| e.lease.clone())
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStateStore {
    async fn get_integration(&self, project_id: &str) -> Result<Option<Integration>, PortError> {
        Ok(lock(&self.data).integrations.get(project_id).cloned())
    }

    async fn list_integrations(&self) -> Result<Vec<Integration>, PortError> {
        let mut all: Vec<Integration> = lock(&self.data).integrations.values().cloned().collect();
        all.sort_by(|a, b| a.project_id.cmp(&b.project_id));
        Ok(all)
    }

    async fn record_connection(
        &self,
        project_id: &str,
        advertisers: &[Advertiser],
        scope_ids: &[u32],
        now: DateTime<Utc>,
    ) -> Result<Integration, PortError> {
        check_id("project id", project_id)?;
        let mut d = lock(&self.data);
        let entry = d
            .integrations
            .entry(project_id.to_string())
            .or_insert_with(|| Integration {
                project_id: project_id.to_string(),
                status: IntegrationStatus::NotConnected,
                advertisers: vec![],
                scope_ids: vec![],
                mapping: None,
                connected_at: None,
                updated_at: now,
            });
        entry.status = IntegrationStatus::Connected;
        entry.advertisers = advertisers.to_vec();
        entry.scope_ids = scope_ids.to_vec();
        entry.connected_at = Some(now);
        entry.updated_at = now;
        Ok(entry.clone())
    }

    async fn set_integration_status(
        &self,
        project_id: &str,
        status: IntegrationStatus,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        let mut d = lock(&self.data);
        let entry = d
            .integrations
            .get_mut(project_id)
            .ok_or_else(|| PortError::NotFound(format!("integration of {project_id}")))?;
        entry.status = status;
        entry.updated_at = now;
        Ok(())
    }

    async fn save_mapping(
        &self,
        project_id: &str,
        mapping: &KeyMapping,
        now: DateTime<Utc>,
    ) -> Result<SaveMapping, PortError> {
        let mut d = lock(&self.data);
        let Some(entry) = d.integrations.get_mut(project_id) else {
            return Ok(SaveMapping::NotConnected);
        };
        match &entry.mapping {
            None => {
                entry.mapping = Some(mapping.canonical());
                entry.updated_at = now;
                Ok(SaveMapping::Created)
            }
            Some(existing) if existing.fingerprint() == mapping.fingerprint() => {
                Ok(SaveMapping::Unchanged)
            }
            Some(existing) => Ok(SaveMapping::Locked(existing.clone())),
        }
    }

    async fn delete_integration(&self, project_id: &str) -> Result<(), PortError> {
        lock(&self.data).integrations.remove(project_id);
        Ok(())
    }

    async fn put_oauth_state(&self, state: &OAuthState) -> Result<(), PortError> {
        check_id("OAuth state", &state.state)?;
        check_id("project id", &state.project_id)?;
        let mut d = lock(&self.data);
        if d.oauth.contains_key(&state.state) {
            return Err(PortError::Conflict("OAuth state exists".into()));
        }
        d.oauth.insert(state.state.clone(), state.clone());
        Ok(())
    }

    async fn consume_oauth_state(
        &self,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<ConsumedState, PortError> {
        let mut d = lock(&self.data);
        match d.oauth.remove(state) {
            None => Ok(ConsumedState::Unknown),
            Some(s) if ms(s.expires_at) > ms(now) => Ok(ConsumedState::Consumed(s)),
            Some(_) => Ok(ConsumedState::Expired),
        }
    }

    async fn create_sync(&self, sync: &SyncConfig) -> Result<CreateSync, PortError> {
        check_id("sync id", &sync.sync_id)?;
        check_id("project id", &sync.project_id)?;
        check_id("cohort id", &sync.cohort_id)?;
        check_id("advertiser id", &sync.advertiser_id)?;
        let mut d = lock(&self.data);
        let key = (
            sync.project_id.clone(),
            sync.cohort_id.clone(),
            sync.advertiser_id.clone(),
            sync.write_mode,
        );
        let id = (sync.project_id.clone(), sync.sync_id.clone());
        if d.syncs.contains_key(&id) {
            return Err(PortError::Conflict(format!("sync {} exists", sync.sync_id)));
        }
        if let Some(existing) = d.sync_keys.get(&key) {
            let found = d
                .syncs
                .get(&(sync.project_id.clone(), existing.clone()))
                .map(|e| e.sync.clone())
                .ok_or_else(|| PortError::Conflict(format!("sync {existing} is being deleted")))?;
            return Ok(CreateSync::Exists(found));
        }
        let mut stored = sync.clone();
        stored.version = 1;
        d.sync_keys.insert(key, sync.sync_id.clone());
        d.syncs.insert(
            id,
            SyncEntry {
                sync: stored.clone(),
                lease: None,
                fence: 0,
            },
        );
        Ok(CreateSync::Created(stored))
    }

    async fn get_sync(
        &self,
        project_id: &str,
        sync_id: &str,
    ) -> Result<Option<SyncConfig>, PortError> {
        Ok(lock(&self.data)
            .syncs
            .get(&(project_id.to_string(), sync_id.to_string()))
            .map(|e| e.sync.clone()))
    }

    async fn list_syncs(&self, project_id: &str) -> Result<Vec<SyncConfig>, PortError> {
        Ok(lock(&self.data)
            .syncs
            .iter()
            .filter(|((p, _), _)| p == project_id)
            .map(|(_, e)| e.sync.clone())
            .collect())
    }

    async fn syncs_for_cohort(&self, cohort_id: &str) -> Result<Vec<SyncConfig>, PortError> {
        Ok(lock(&self.data)
            .syncs
            .values()
            .filter(|e| e.sync.cohort_id == cohort_id)
            .map(|e| e.sync.clone())
            .collect())
    }

    async fn update_sync(&self, sync: &SyncConfig) -> Result<SyncConfig, PortError> {
        let mut d = lock(&self.data);
        let conflict = || {
            PortError::Conflict(format!(
                "sync {} changed since version {} (or is gone)",
                sync.sync_id, sync.version
            ))
        };
        let entry = d
            .syncs
            .get_mut(&(sync.project_id.clone(), sync.sync_id.clone()))
            .ok_or_else(conflict)?;
        if entry.sync.version != sync.version {
            return Err(conflict());
        }
        let mut next = sync.clone();
        // Owned by the engine's own conditional calls.
        next.committed = entry.sync.committed.clone();
        next.pending_export = entry.sync.pending_export.clone();
        next.progress = entry.sync.progress.clone();
        next.version = sync.version + 1;
        entry.sync = next.clone();
        Ok(next)
    }

    async fn delete_sync(&self, project_id: &str, sync_id: &str) -> Result<(), PortError> {
        let mut d = lock(&self.data);
        if let Some(e) = d
            .syncs
            .remove(&(project_id.to_string(), sync_id.to_string()))
        {
            let key = (
                e.sync.project_id.clone(),
                e.sync.cohort_id.clone(),
                e.sync.advertiser_id.clone(),
                e.sync.write_mode,
            );
            if d.sync_keys.get(&key).map(String::as_str) == Some(sync_id) {
                d.sync_keys.remove(&key);
            }
        }
        d.runs.retain(|(s, _), _| s != sync_id);
        Ok(())
    }

    async fn retire_sync(&self, retired: &RetiredSync) -> Result<(), PortError> {
        check_id("sync id", &retired.sync_id)?;
        let mut d = lock(&self.data);
        let id = (retired.project_id.clone(), retired.sync_id.clone());
        d.retired.insert(id.clone(), retired.clone());
        if let Some(e) = d.syncs.remove(&id) {
            let key = (
                e.sync.project_id.clone(),
                e.sync.cohort_id.clone(),
                e.sync.advertiser_id.clone(),
                e.sync.write_mode,
            );
            if d.sync_keys.get(&key) == Some(&retired.sync_id) {
                d.sync_keys.remove(&key);
            }
        }
        Ok(())
    }

    async fn get_retired_sync(
        &self,
        project_id: &str,
        sync_id: &str,
    ) -> Result<Option<RetiredSync>, PortError> {
        let id = (project_id.to_string(), sync_id.to_string());
        Ok(lock(&self.data).retired.get(&id).cloned())
    }

    async fn list_retired_syncs(&self, project_id: &str) -> Result<Vec<RetiredSync>, PortError> {
        let d = lock(&self.data);
        Ok(d.retired
            .iter()
            .filter(|((p, _), _)| p == project_id)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn delete_retired_sync(&self, project_id: &str, sync_id: &str) -> Result<(), PortError> {
        let mut d = lock(&self.data);
        d.runs.retain(|(s, _), _| s != sync_id);
        d.retired
            .remove(&(project_id.to_string(), sync_id.to_string()));
        Ok(())
    }

    async fn projects_with_history(&self) -> Result<Vec<String>, PortError> {
        let d = lock(&self.data);
        let mut out: Vec<String> = d.retired.keys().map(|(p, _)| p.clone()).collect();
        out.dedup();
        Ok(out)
    }

    async fn acquire_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<LeaseOutcome, PortError> {
        let until = lease_until(now, ttl)?;
        let mut d = lock(&self.data);
        let entry = d
            .syncs
            .get_mut(&(project_id.to_string(), sync_id.to_string()))
            .ok_or_else(|| PortError::NotFound(format!("sync {sync_id}")))?;
        if let Some(l) = &entry.lease
            && ms(l.expires_at) > ms(now)
        {
            return Ok(LeaseOutcome::HeldBy(l.clone()));
        }
        entry.fence += 1;
        let lease = Lease {
            holder: holder.to_string(),
            expires_at: until,
            fence: entry.fence,
        };
        entry.lease = Some(lease.clone());
        Ok(LeaseOutcome::Acquired(lease))
    }

    async fn take_over_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, PortError> {
        let until = lease_until(now, ttl)?;
        let mut d = lock(&self.data);
        let Some(entry) = d
            .syncs
            .get_mut(&(project_id.to_string(), sync_id.to_string()))
        else {
            return Ok(None);
        };
        if !entry.fenced_by(fence) {
            return Ok(None);
        }
        entry.fence += 1;
        let lease = Lease {
            holder: fence.holder.clone(),
            expires_at: until,
            fence: entry.fence,
        };
        entry.lease = Some(lease.clone());
        Ok(Some(lease))
    }

    async fn renew_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, PortError> {
        let until = lease_until(now, ttl)?;
        let mut d = lock(&self.data);
        let Some(entry) = d
            .syncs
            .get_mut(&(project_id.to_string(), sync_id.to_string()))
        else {
            return Ok(None);
        };
        if !entry.fenced_by(fence) {
            return Ok(None);
        }
        let lease = Lease {
            holder: fence.holder.clone(),
            expires_at: until,
            fence: fence.fence,
        };
        entry.lease = Some(lease.clone());
        Ok(Some(lease))
    }

    async fn release_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
    ) -> Result<bool, PortError> {
        let mut d = lock(&self.data);
        let Some(entry) = d
            .syncs
            .get_mut(&(project_id.to_string(), sync_id.to_string()))
        else {
            return Ok(false);
        };
        if entry.fenced_by(fence) {
            entry.lease = None;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn finish_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
    ) -> Result<FinishOutcome, PortError> {
        let mut d = lock(&self.data);
        let Some(entry) = d
            .syncs
            .get_mut(&(project_id.to_string(), sync_id.to_string()))
        else {
            return Ok(FinishOutcome::Fenced);
        };
        if !entry.fenced_by(fence) {
            return Ok(FinishOutcome::Fenced);
        }
        match entry.sync.pending_export.take() {
            Some(p) => Ok(FinishOutcome::Pending(p)),
            None => {
                entry.lease = None;
                Ok(FinishOutcome::Released)
            }
        }
    }

    async fn commit_snapshot(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
        pointer: &SnapshotPointer,
        _now: DateTime<Utc>,
    ) -> Result<CommitOutcome, PortError> {
        let mut d = lock(&self.data);
        let Some(entry) = d
            .syncs
            .get_mut(&(project_id.to_string(), sync_id.to_string()))
        else {
            return Ok(CommitOutcome::LeaseLost);
        };
        if !entry.fenced_by(fence) {
            return Ok(CommitOutcome::LeaseLost);
        }
        if let Some(c) = &entry.sync.committed
            && ms(c.export.exported_at) > ms(pointer.export.exported_at)
        {
            return Ok(CommitOutcome::Stale {
                committed_exported_at: c.export.exported_at,
            });
        }
        entry.sync.committed = Some(pointer.clone());
        Ok(CommitOutcome::Committed)
    }

    async fn save_progress(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
        progress: &SyncProgress,
    ) -> Result<bool, PortError> {
        let mut d = lock(&self.data);
        let Some(entry) = d
            .syncs
            .get_mut(&(project_id.to_string(), sync_id.to_string()))
        else {
            return Ok(false);
        };
        if !entry.fenced_by(fence) {
            return Ok(false);
        }
        entry.sync.progress = progress.clone();
        Ok(true)
    }

    async fn syncs_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, PortError> {
        let d = lock(&self.data);
        Ok(d.syncs
            .iter()
            .filter(|(_, e)| {
                let due = e.sync.pending_export.is_some()
                    || e.sync
                        .progress
                        .next_attempt_at
                        .is_some_and(|t| ms(t) <= ms(now));
                let free = e.lease.as_ref().is_none_or(|l| ms(l.expires_at) <= ms(now));
                due && free
            })
            .take(limit)
            .map(|((p, s), _)| (p.clone(), s.clone()))
            .collect())
    }

    async fn set_pending_export(
        &self,
        project_id: &str,
        sync_id: &str,
        export: &ExportRef,
    ) -> Result<bool, PortError> {
        let mut d = lock(&self.data);
        let entry = d
            .syncs
            .get_mut(&(project_id.to_string(), sync_id.to_string()))
            .ok_or_else(|| PortError::NotFound(format!("sync {sync_id}")))?;
        let at = ms(export.exported_at);
        let older_than_pending = entry
            .sync
            .pending_export
            .as_ref()
            .is_some_and(|p| ms(p.exported_at) > at);
        let older_than_committed = entry
            .sync
            .committed
            .as_ref()
            .is_some_and(|c| ms(c.export.exported_at) > at);
        if older_than_pending || older_than_committed {
            return Ok(false);
        }
        entry.sync.pending_export = Some(export.clone());
        Ok(true)
    }

    async fn latest_seen_export(&self, cohort_id: &str) -> Result<Option<ExportRef>, PortError> {
        Ok(lock(&self.data).seen_exports.get(cohort_id).cloned())
    }

    async fn note_seen_export(&self, cohort_id: &str, export: &ExportRef) -> Result<(), PortError> {
        let mut d = lock(&self.data);
        let older = d
            .seen_exports
            .get(cohort_id)
            .is_some_and(|s| ms(s.exported_at) > ms(export.exported_at));
        if !older {
            d.seen_exports.insert(cohort_id.to_string(), export.clone());
        }
        Ok(())
    }

    async fn put_run(&self, fence: &Fence, run: &RunLedger) -> Result<bool, PortError> {
        check_id("run id", &run.run_id)?;
        let mut d = lock(&self.data);
        let fenced = d
            .syncs
            .get(&(run.project_id.clone(), run.sync_id.clone()))
            .is_some_and(|e| e.fenced_by(fence));
        let key = (run.sync_id.clone(), run.run_id.clone());
        if !fenced || d.runs.get(&key).is_some_and(RunLedger::is_finished) {
            return Ok(false);
        }
        d.runs.insert(key, run.clone());
        Ok(true)
    }

    async fn get_run(&self, sync_id: &str, run_id: &str) -> Result<Option<RunLedger>, PortError> {
        Ok(lock(&self.data)
            .runs
            .get(&(sync_id.to_string(), run_id.to_string()))
            .cloned())
    }

    async fn list_runs(
        &self,
        sync_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<RunPage, PortError> {
        if let Some(c) = cursor {
            check_id("cursor", c)?;
        }
        let limit = limit.clamp(1, 1000) as usize;
        let d = lock(&self.data);
        let mut newest_first = d
            .runs
            .iter()
            .filter(|((s, r), _)| s == sync_id && cursor.is_none_or(|c| r.as_str() < c))
            .rev()
            .map(|(_, run)| run.clone());
        let runs: Vec<RunLedger> = newest_first.by_ref().take(limit).collect();
        let next_cursor = if newest_first.next().is_some() {
            runs.last().map(|r| r.run_id.clone())
        } else {
            None
        };
        Ok(RunPage { runs, next_cursor })
    }

    async fn try_consume_daily_call(
        &self,
        audience_key: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<BudgetOutcome, PortError> {
        let mut d = lock(&self.data);
        let used = d
            .budget
            .entry((audience_key.to_string(), now.date_naive()))
            .or_insert(0);
        if *used >= limit {
            return Ok(BudgetOutcome::Exhausted { used: *used });
        }
        *used += 1;
        Ok(BudgetOutcome::Granted { used: *used })
    }

    async fn daily_calls_used(&self, audience_key: &str, day: NaiveDate) -> Result<u32, PortError> {
        Ok(lock(&self.data)
            .budget
            .get(&(audience_key.to_string(), day))
            .copied()
            .unwrap_or(0))
    }

    async fn put_preview(&self, preview: &PreviewRecord) -> Result<(), PortError> {
        check_id("preview id", &preview.preview_id)?;
        lock(&self.data).previews.insert(
            (preview.project_id.clone(), preview.preview_id.clone()),
            preview.clone(),
        );
        Ok(())
    }

    async fn get_preview(
        &self,
        project_id: &str,
        preview_id: &str,
    ) -> Result<Option<PreviewRecord>, PortError> {
        Ok(lock(&self.data)
            .previews
            .get(&(project_id.to_string(), preview_id.to_string()))
            .cloned())
    }

    async fn record_unmatched_export(&self, export: &UnmatchedExport) -> Result<(), PortError> {
        lock(&self.data)
            .unmatched
            .insert(export.key.clone(), export.clone());
        Ok(())
    }

    async fn list_unmatched_exports(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<UnmatchedExport>, PortError> {
        let mut all: Vec<UnmatchedExport> = lock(&self.data)
            .unmatched
            .values()
            .filter(|u| u.expires_at() > now)
            .cloned()
            .collect();
        all.sort_by(|a, b| b.seen_at.cmp(&a.seen_at).then_with(|| a.key.cmp(&b.key)));
        all.truncate(limit);
        Ok(all)
    }
}

/// `TokenVault` in memory (no cache: `invalidate` is recorded for assertions).
#[derive(Default)]
pub struct MemoryVault {
    connections: Mutex<HashMap<String, TikTokConnection>>,
    invalidated: Mutex<Vec<String>>,
    app: Mutex<Option<AppCredentials>>,
    admin: Mutex<Option<SecretString>>,
}

impl MemoryVault {
    pub fn new() -> MemoryVault {
        MemoryVault::default()
    }

    pub fn set_app_credentials(&self, credentials: AppCredentials) {
        *lock(&self.app) = Some(credentials);
    }

    pub fn set_admin_token(&self, token: SecretString) {
        *lock(&self.admin) = Some(token);
    }

    /// Projects passed to `invalidate`, in order.
    pub fn invalidated(&self) -> Vec<String> {
        lock(&self.invalidated).clone()
    }
}

#[async_trait::async_trait]
impl TokenVault for MemoryVault {
    async fn put_connection(
        &self,
        project_id: &str,
        connection: &TikTokConnection,
    ) -> Result<(), PortError> {
        lock(&self.connections).insert(project_id.to_string(), connection.clone());
        Ok(())
    }

    async fn get_connection(
        &self,
        project_id: &str,
    ) -> Result<Option<TikTokConnection>, PortError> {
        Ok(lock(&self.connections).get(project_id).cloned())
    }

    async fn delete_connection(&self, project_id: &str) -> Result<(), PortError> {
        lock(&self.connections).remove(project_id);
        Ok(())
    }

    fn invalidate(&self, project_id: &str) {
        lock(&self.invalidated).push(project_id.to_string());
    }

    async fn app_credentials(&self) -> Result<AppCredentials, PortError> {
        lock(&self.app)
            .clone()
            .ok_or_else(|| PortError::Config("no app credentials".into()))
    }

    async fn admin_token(&self) -> Result<SecretString, PortError> {
        lock(&self.admin)
            .clone()
            .ok_or_else(|| PortError::Config("no admin token".into()))
    }
}

#[derive(Clone)]
struct StoredObject {
    bytes: Vec<u8>,
    meta: ObjectMeta,
}

/// `CohortStore` in memory, with the adapter's key layout under fixed prefixes `cohorts`, `snapshots`,
/// `reports`. Every put makes a new version; `last_modified` comes from a logical clock (one second per put).
pub struct MemoryCohortStore {
    cohort_prefix: String,
    objects: Mutex<BTreeMap<String, Vec<StoredObject>>>,
    puts: Mutex<i64>,
    /// Keys returned by listings so far (what ListObjectsV2 would bill and page through).
    listed: Mutex<u64>,
}

impl Default for MemoryCohortStore {
    fn default() -> Self {
        MemoryCohortStore::new("cohorts")
    }
}

impl MemoryCohortStore {
    pub fn new(cohort_prefix: &str) -> MemoryCohortStore {
        MemoryCohortStore {
            cohort_prefix: cohort_prefix.trim_matches('/').to_string(),
            objects: Mutex::new(BTreeMap::new()),
            puts: Mutex::new(0),
            listed: Mutex::new(0),
        }
    }

    /// Keys returned by listings so far.
    pub fn listed_keys(&self) -> u64 {
        *lock(&self.listed)
    }

    /// The newest export of the cohort among the keys one listing step returns (as S3 would: prefix,
    /// lexicographic start-after).
    fn newest_in(&self, cohort_id: &str, step: &ListStep) -> Option<ExportObject> {
        let objects = lock(&self.objects);
        let mut best: Option<ExportObject> = None;
        let mut listed = 0;
        for (key, versions) in objects.range(step.prefix.clone()..) {
            if !key.starts_with(&step.prefix) {
                break;
            }
            if step.start_after.as_ref().is_some_and(|a| key <= a) {
                continue;
            }
            listed += 1;
            let Some(latest) = versions.last() else {
                continue;
            };
            let name = match parse_export_key(key) {
                Ok(n) => n,
                Err(e) => {
                    crate::cohort::unmatched::record(&e, "listing");
                    continue;
                }
            };
            let candidate = ExportObject {
                meta: ObjectMeta {
                    version_id: None,
                    ..latest.meta.clone()
                },
                name,
            };
            if is_newer(cohort_id, &candidate, best.as_ref()) {
                best = Some(candidate);
            }
        }
        *lock(&self.listed) += listed;
        best
    }

    /// Stores an object (e.g. an export) as-is; returns its metadata.
    pub fn put_object(&self, key: &str, bytes: Vec<u8>) -> ObjectMeta {
        let n = {
            let mut p = lock(&self.puts);
            *p += 1;
            *p
        };
        let meta = ObjectMeta {
            key: key.to_string(),
            etag: Some(format!("\"{:016x}-{n}\"", fnv(&bytes))),
            size: bytes.len() as u64,
            last_modified: DateTime::from_timestamp(1_700_000_000 + n, 0),
            version_id: Some(format!("v{n}")),
        };
        lock(&self.objects)
            .entry(key.to_string())
            .or_default()
            .push(StoredObject {
                bytes,
                meta: meta.clone(),
            });
        meta
    }

    /// The keys currently stored.
    pub fn keys(&self) -> Vec<String> {
        lock(&self.objects).keys().cloned().collect()
    }

    fn get(&self, key: &str, version: Option<&str>) -> Result<StoredObject, PortError> {
        let objects = lock(&self.objects);
        let versions = objects
            .get(key)
            .ok_or_else(|| PortError::NotFound(key.to_string()))?;
        match version {
            None => versions.last().cloned(),
            Some(v) => versions
                .iter()
                .find(|o| o.meta.version_id.as_deref() == Some(v))
                .cloned(),
        }
        .ok_or_else(|| PortError::NotFound(key.to_string()))
    }

    fn reader(obj: StoredObject) -> ObjectReader {
        ObjectReader {
            meta: obj.meta,
            body: Box::new(Cursor::new(obj.bytes)),
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

#[async_trait::async_trait]
impl CohortStore for MemoryCohortStore {
    async fn newest_existing_export(
        &self,
        cohort_id: &str,
        seen: Option<&str>,
    ) -> Result<Option<ExportObject>, PortError> {
        let (first, then) = list_steps(&self.cohort_prefix, cohort_id, seen);
        match self.newest_in(cohort_id, &first) {
            Some(found) => Ok(Some(found)),
            None => Ok(then.and_then(|step| self.newest_in(cohort_id, &step))),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, PortError> {
        match self.get(key, None) {
            Ok(o) => Ok(Some(o.meta)),
            Err(PortError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn open(&self, key: &str) -> Result<ObjectReader, PortError> {
        self.get(key, None).map(Self::reader)
    }

    async fn put_snapshot(
        &self,
        project_id: &str,
        sync_id: &str,
        name: &str,
        file: &Path,
    ) -> Result<SnapshotRef, PortError> {
        crate::ports::check_snapshot_name(name)?;
        let bytes = std::fs::read(file)
            .map_err(|e| PortError::Invalid(format!("{}: {e}", file.display())))?;
        let key = format!("snapshots/{project_id}/{sync_id}/{name}.snapshot");
        let meta = self.put_object(&key, bytes);
        Ok(SnapshotRef {
            key,
            version_id: meta.version_id,
            etag: meta.etag,
            size: meta.size,
        })
    }

    async fn open_snapshot(&self, snapshot: &SnapshotRef) -> Result<ObjectReader, PortError> {
        let obj = self.get(&snapshot.key, snapshot.version_id.as_deref())?;
        if let (Some(want), Some(got)) = (&snapshot.etag, &obj.meta.etag)
            && want != got
        {
            return Err(PortError::Corrupt(format!(
                "snapshot {} changed",
                snapshot.key
            )));
        }
        Ok(Self::reader(obj))
    }

    async fn delete_snapshot(&self, snapshot: &SnapshotRef) -> Result<(), PortError> {
        if !snapshot.key.starts_with("snapshots/") || !snapshot.key.ends_with(".snapshot") {
            return Err(PortError::Invalid(format!(
                "{} is not a snapshot key under snapshots/",
                snapshot.key
            )));
        }
        // Every version of the key, as the S3 adapter does.
        lock(&self.objects).remove(&snapshot.key);
        Ok(())
    }

    async fn put_run_report(
        &self,
        project_id: &str,
        sync_id: &str,
        run_id: &str,
        report: &serde_json::Value,
    ) -> Result<String, PortError> {
        let key = format!("reports/{project_id}/{sync_id}/runs/{run_id}.json");
        self.put_object(&key, report.to_string().into_bytes());
        Ok(key)
    }

    async fn put_preview_report(
        &self,
        project_id: &str,
        preview_id: &str,
        report: &serde_json::Value,
    ) -> Result<String, PortError> {
        let key = format!("reports/{project_id}/previews/{preview_id}.json");
        self.put_object(&key, report.to_string().into_bytes());
        Ok(key)
    }

    async fn get_report(&self, key: &str) -> Result<Option<serde_json::Value>, PortError> {
        match self.get(key, None) {
            Ok(o) => serde_json::from_slice(&o.bytes)
                .map(Some)
                .map_err(|e| PortError::Corrupt(format!("report {key}: {e}"))),
            Err(PortError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn delete_run_report(
        &self,
        project_id: &str,
        sync_id: &str,
        run_id: &str,
    ) -> Result<(), PortError> {
        lock(&self.objects).remove(&format!(
            "reports/{project_id}/{sync_id}/runs/{run_id}.json"
        ));
        Ok(())
    }

    async fn delete_sync_objects(&self, project_id: &str, sync_id: &str) -> Result<(), PortError> {
        let prefixes = [
            format!("snapshots/{project_id}/{sync_id}/"),
            format!("reports/{project_id}/{sync_id}/"),
        ];
        lock(&self.objects).retain(|k, _| !prefixes.iter().any(|p| k.starts_with(p)));
        Ok(())
    }

    async fn delete_project_objects(&self, project_id: &str) -> Result<(), PortError> {
        let prefixes = [
            format!("snapshots/{project_id}/"),
            format!("reports/{project_id}/"),
        ];
        lock(&self.objects).retain(|k, _| !prefixes.iter().any(|p| k.starts_with(p)));
        Ok(())
    }
}

/// `Schedules` in memory, with the adapter's name and input.
#[derive(Default)]
pub struct MemorySchedules {
    schedules: Mutex<BTreeMap<String, ScheduleInfo>>,
}

impl MemorySchedules {
    pub fn new() -> MemorySchedules {
        MemorySchedules::default()
    }

    pub fn all(&self) -> Vec<ScheduleInfo> {
        lock(&self.schedules).values().cloned().collect()
    }
}

#[async_trait::async_trait]
impl Schedules for MemorySchedules {
    async fn upsert_schedule(
        &self,
        project_id: &str,
        sync_id: &str,
        rate: ScheduleRate,
        enabled: bool,
    ) -> Result<(), PortError> {
        let name = schedule_name(sync_id);
        let input = schedule_input(project_id, sync_id);
        lock(&self.schedules).insert(
            sync_id.to_string(),
            ScheduleInfo {
                name,
                expression: rate.expression().to_string(),
                enabled,
                input,
                target_arn: "memory:sync-runner".into(),
                role_arn: "memory:scheduler-role".into(),
                flexible_window_minutes: Some(match rate {
                    ScheduleRate::Hourly => 15,
                    ScheduleRate::Daily => 60,
                }),
            },
        );
        Ok(())
    }

    async fn set_schedule_enabled(&self, sync_id: &str, enabled: bool) -> Result<bool, PortError> {
        Ok(lock(&self.schedules)
            .get_mut(sync_id)
            .map(|s| s.enabled = enabled)
            .is_some())
    }

    async fn delete_schedule(&self, sync_id: &str) -> Result<(), PortError> {
        lock(&self.schedules).remove(sync_id);
        Ok(())
    }

    async fn get_schedule(&self, sync_id: &str) -> Result<Option<ScheduleInfo>, PortError> {
        Ok(lock(&self.schedules).get(sync_id).cloned())
    }
}

/// `Invoker` that records payloads.
#[derive(Default)]
pub struct RecordingInvoker {
    payloads: Mutex<Vec<serde_json::Value>>,
}

impl RecordingInvoker {
    pub fn new() -> RecordingInvoker {
        RecordingInvoker::default()
    }

    /// Payloads invoked so far, in order.
    pub fn payloads(&self) -> Vec<serde_json::Value> {
        lock(&self.payloads).clone()
    }

    /// Removes and returns the recorded payloads (a test driving the runner drains them).
    pub fn take(&self) -> Vec<serde_json::Value> {
        std::mem::take(&mut *lock(&self.payloads))
    }
}

#[async_trait::async_trait]
impl Invoker for RecordingInvoker {
    async fn invoke_async(&self, payload: &serde_json::Value) -> Result<(), PortError> {
        lock(&self.payloads).push(payload.clone());
        Ok(())
    }
}

/// Notifier that keeps every notice (for assertions).
#[derive(Default)]
pub struct RecordingNotifier {
    notices: Mutex<Vec<crate::notify::Notice>>,
}

impl RecordingNotifier {
    pub fn new() -> RecordingNotifier {
        RecordingNotifier::default()
    }

    pub fn notices(&self) -> Vec<crate::notify::Notice> {
        lock(&self.notices).clone()
    }
}

#[async_trait::async_trait]
impl super::Notifier for RecordingNotifier {
    async fn notify(&self, notice: &crate::notify::Notice) {
        lock(&self.notices).push(notice.clone());
    }
}

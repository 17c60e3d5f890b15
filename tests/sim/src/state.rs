//! The StateStore decorator: every call passes the gate and the seed's faults.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

use crate::faults::Faults;
use crate::port_call;
use audience_core::cohort::unmatched::UnmatchedExport;
use audience_core::model::{
    Advertiser, ExportRef, Fence, Integration, IntegrationStatus, KeyMapping, OAuthState,
    PreviewRecord, RetiredSync, RunLedger, SnapshotPointer, SyncConfig, SyncProgress,
};
use audience_core::ports::{
    BudgetOutcome, CommitOutcome, ConsumedState, CreateSync, FinishOutcome, LeaseOutcome,
    PortError, RunPage, SaveMapping, StateStore,
};

pub struct FaultyState {
    pub inner: Arc<dyn StateStore>,
    pub faults: Arc<Faults>,
}

type R<T> = Result<T, PortError>;

#[async_trait::async_trait]
impl StateStore for FaultyState {
    async fn get_integration(&self, p: &str) -> R<Option<Integration>> {
        port_call!(
            self.faults,
            "get_integration",
            false,
            self.inner.get_integration(p)
        )
    }
    async fn list_integrations(&self) -> R<Vec<Integration>> {
        port_call!(
            self.faults,
            "list_integrations",
            false,
            self.inner.list_integrations()
        )
    }
    async fn record_connection(
        &self,
        p: &str,
        a: &[Advertiser],
        s: &[u32],
        now: DateTime<Utc>,
    ) -> R<Integration> {
        port_call!(
            self.faults,
            "record_connection",
            true,
            self.inner.record_connection(p, a, s, now)
        )
    }
    async fn set_integration_status(
        &self,
        p: &str,
        s: IntegrationStatus,
        now: DateTime<Utc>,
    ) -> R<()> {
        port_call!(
            self.faults,
            "set_integration_status",
            true,
            self.inner.set_integration_status(p, s, now)
        )
    }
    async fn save_mapping(&self, p: &str, m: &KeyMapping, now: DateTime<Utc>) -> R<SaveMapping> {
        port_call!(
            self.faults,
            "save_mapping",
            true,
            self.inner.save_mapping(p, m, now)
        )
    }
    async fn delete_integration(&self, p: &str) -> R<()> {
        port_call!(
            self.faults,
            "delete_integration",
            true,
            self.inner.delete_integration(p)
        )
    }
    async fn put_oauth_state(&self, s: &OAuthState) -> R<()> {
        port_call!(
            self.faults,
            "put_oauth_state",
            true,
            self.inner.put_oauth_state(s)
        )
    }
    async fn consume_oauth_state(&self, s: &str, now: DateTime<Utc>) -> R<ConsumedState> {
        port_call!(
            self.faults,
            "consume_oauth_state",
            true,
            self.inner.consume_oauth_state(s, now)
        )
    }
    async fn create_sync(&self, s: &SyncConfig) -> R<CreateSync> {
        port_call!(self.faults, "create_sync", true, self.inner.create_sync(s))
    }
    async fn get_sync(&self, p: &str, s: &str) -> R<Option<SyncConfig>> {
        port_call!(self.faults, "get_sync", false, self.inner.get_sync(p, s))
    }
    async fn list_syncs(&self, p: &str) -> R<Vec<SyncConfig>> {
        port_call!(self.faults, "list_syncs", false, self.inner.list_syncs(p))
    }
    async fn syncs_for_cohort(&self, c: &str) -> R<Vec<SyncConfig>> {
        port_call!(
            self.faults,
            "syncs_for_cohort",
            false,
            self.inner.syncs_for_cohort(c)
        )
    }
    async fn update_sync(&self, s: &SyncConfig) -> R<SyncConfig> {
        port_call!(self.faults, "update_sync", true, self.inner.update_sync(s))
    }
    async fn delete_sync(&self, p: &str, s: &str) -> R<()> {
        port_call!(
            self.faults,
            "delete_sync",
            true,
            self.inner.delete_sync(p, s)
        )
    }
    async fn retire_sync(&self, r: &RetiredSync) -> R<()> {
        port_call!(self.faults, "retire_sync", true, self.inner.retire_sync(r))
    }
    async fn get_retired_sync(&self, p: &str, s: &str) -> R<Option<RetiredSync>> {
        port_call!(
            self.faults,
            "get_retired_sync",
            false,
            self.inner.get_retired_sync(p, s)
        )
    }
    async fn list_retired_syncs(&self, p: &str) -> R<Vec<RetiredSync>> {
        port_call!(
            self.faults,
            "list_retired_syncs",
            false,
            self.inner.list_retired_syncs(p)
        )
    }
    async fn delete_retired_sync(&self, p: &str, s: &str) -> R<()> {
        port_call!(
            self.faults,
            "delete_retired_sync",
            true,
            self.inner.delete_retired_sync(p, s)
        )
    }
    async fn projects_with_history(&self) -> R<Vec<String>> {
        port_call!(
            self.faults,
            "projects_with_history",
            false,
            self.inner.projects_with_history()
        )
    }
    async fn acquire_lease(
        &self,
        p: &str,
        s: &str,
        h: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> R<LeaseOutcome> {
        port_call!(
            self.faults,
            "acquire_lease",
            true,
            self.inner.acquire_lease(p, s, h, ttl, now)
        )
    }
    async fn take_over_lease(
        &self,
        p: &str,
        s: &str,
        f: &Fence,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> R<Option<audience_core::model::Lease>> {
        port_call!(
            self.faults,
            "take_over_lease",
            true,
            self.inner.take_over_lease(p, s, f, ttl, now)
        )
    }
    async fn renew_lease(
        &self,
        p: &str,
        s: &str,
        f: &Fence,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> R<Option<audience_core::model::Lease>> {
        port_call!(
            self.faults,
            "renew_lease",
            true,
            self.inner.renew_lease(p, s, f, ttl, now)
        )
    }
    async fn release_lease(&self, p: &str, s: &str, f: &Fence) -> R<bool> {
        port_call!(
            self.faults,
            "release_lease",
            true,
            self.inner.release_lease(p, s, f)
        )
    }
    async fn finish_lease(&self, p: &str, s: &str, f: &Fence) -> R<FinishOutcome> {
        port_call!(
            self.faults,
            "finish_lease",
            true,
            self.inner.finish_lease(p, s, f)
        )
    }
    async fn commit_snapshot(
        &self,
        p: &str,
        s: &str,
        f: &Fence,
        ptr: &SnapshotPointer,
        now: DateTime<Utc>,
    ) -> R<CommitOutcome> {
        port_call!(
            self.faults,
            "commit_snapshot",
            true,
            self.inner.commit_snapshot(p, s, f, ptr, now)
        )
    }
    async fn save_progress(&self, p: &str, s: &str, f: &Fence, pr: &SyncProgress) -> R<bool> {
        port_call!(
            self.faults,
            "save_progress",
            true,
            self.inner.save_progress(p, s, f, pr)
        )
    }
    async fn set_pending_export(&self, p: &str, s: &str, e: &ExportRef) -> R<bool> {
        port_call!(
            self.faults,
            "set_pending_export",
            true,
            self.inner.set_pending_export(p, s, e)
        )
    }
    async fn latest_seen_export(&self, c: &str) -> R<Option<ExportRef>> {
        port_call!(
            self.faults,
            "latest_seen_export",
            false,
            self.inner.latest_seen_export(c)
        )
    }
    async fn note_seen_export(&self, c: &str, e: &ExportRef) -> R<()> {
        port_call!(
            self.faults,
            "note_seen_export",
            true,
            self.inner.note_seen_export(c, e)
        )
    }
    async fn syncs_due(&self, now: DateTime<Utc>, limit: usize) -> R<Vec<(String, String)>> {
        port_call!(
            self.faults,
            "syncs_due",
            false,
            self.inner.syncs_due(now, limit)
        )
    }
    async fn put_run(&self, f: &Fence, run: &RunLedger) -> R<bool> {
        port_call!(self.faults, "put_run", true, self.inner.put_run(f, run))
    }
    async fn get_run(&self, s: &str, r: &str) -> R<Option<RunLedger>> {
        port_call!(self.faults, "get_run", false, self.inner.get_run(s, r))
    }
    async fn list_runs(&self, s: &str, limit: u32, cursor: Option<&str>) -> R<RunPage> {
        port_call!(
            self.faults,
            "list_runs",
            false,
            self.inner.list_runs(s, limit, cursor)
        )
    }
    async fn try_consume_daily_call(
        &self,
        k: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> R<BudgetOutcome> {
        port_call!(
            self.faults,
            "try_consume_daily_call",
            true,
            self.inner.try_consume_daily_call(k, now, limit)
        )
    }
    async fn daily_calls_used(&self, k: &str, day: NaiveDate) -> R<u32> {
        port_call!(
            self.faults,
            "daily_calls_used",
            false,
            self.inner.daily_calls_used(k, day)
        )
    }
    async fn put_preview(&self, p: &PreviewRecord) -> R<()> {
        port_call!(self.faults, "put_preview", true, self.inner.put_preview(p))
    }
    async fn get_preview(&self, p: &str, id: &str) -> R<Option<PreviewRecord>> {
        port_call!(
            self.faults,
            "get_preview",
            false,
            self.inner.get_preview(p, id)
        )
    }
    // Diagnostics only (never on a run's path): not faulted, so seeds replay as before.
    async fn record_unmatched_export(&self, e: &UnmatchedExport) -> R<()> {
        self.inner.record_unmatched_export(e).await
    }
    async fn list_unmatched_exports(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> R<Vec<UnmatchedExport>> {
        self.inner.list_unmatched_exports(now, limit).await
    }
}

//! Ports: the small traits behind which AWS and TikTok sit. Adapters live in `audience-aws` and
//! `audience-tiktok`; the domain and the engine only see these traits.

pub mod memory;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use secrecy::SecretString;

use crate::cohort::naming::ExportName;
use crate::cohort::unmatched::UnmatchedExport;
use crate::model::{
    Advertiser, ExportRef, Fence, Integration, IntegrationStatus, KeyMapping, Lease, OAuthState,
    PreviewRecord, RetiredSync, RunLedger, SnapshotPointer, SnapshotRef, SyncConfig, SyncProgress,
};

/// App-wide TikTok rate limit shared by every concurrent runner (TikTok counts requests per app, not per
/// process). The TikTok client calls `acquire` before each request, after its own in-process limiter.
#[async_trait::async_trait]
pub trait RateGate: Send + Sync {
    /// Waits until the caller may send one request. Errors are the adapter's (e.g. DynamoDB unreachable);
    /// the caller treats them as retryable.
    async fn acquire(&self) -> Result<(), RateGateError>;
}

#[derive(Debug, thiserror::Error)]
#[error("app-wide rate limiter unavailable: {message}")]
pub struct RateGateError {
    pub message: String,
    /// A hint to wait before asking again, when the adapter knows one.
    pub retry_after: Option<Duration>,
}

/// The error of every port but [`RateGate`]. Expected business outcomes (a lease held by another run, a stale
/// export, a locked mapping...) are *not* errors: they are the `Ok` enums of the calls below.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("{0} not found")]
    NotFound(String),
    /// A conditional write lost against a concurrent writer (e.g. a sync changed since it was read).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The service failed or could not be reached; retrying later may help.
    #[error("{service} call failed: {message}")]
    Unavailable {
        service: &'static str,
        message: String,
    },
    /// A stored item or object could not be understood.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("configuration: {0}")]
    Config(String),
}

impl PortError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, PortError::Unavailable { .. } | PortError::Conflict(_))
    }
}

/// Result of [`StateStore::save_mapping`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveMapping {
    /// First save (the API answers 201).
    Created,
    /// The identical mapping was already saved (200).
    Unchanged,
    /// A different mapping exists: it cannot change until the project disconnects.
    Locked(KeyMapping),
    /// No integration record (never connected, or disconnected).
    NotConnected,
}

/// Result of [`StateStore::create_sync`].
#[derive(Debug, Clone, PartialEq)]
pub enum CreateSync {
    /// Stored (with its first `version`).
    Created(SyncConfig),
    /// The project already has a sync for this (cohort id, advertiser id, write mode).
    Exists(SyncConfig),
}

/// Result of [`StateStore::consume_oauth_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumedState {
    Consumed(OAuthState),
    /// Never issued, or already consumed (a replay).
    Unknown,
    /// Issued but past its expiry: refused (and removed).
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    Acquired(Lease),
    /// Another holder has an unexpired lease.
    HeldBy(Lease),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishOutcome {
    /// The lease is released: nothing was pending.
    Released,
    /// An export was pending: it was taken, and the lease is still the caller's.
    Pending(ExportRef),
    /// The caller no longer holds the lease.
    Fenced,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed,
    /// The export is older (by its Amplitude timestamp) than the committed one: nothing changed.
    Stale {
        committed_exported_at: DateTime<Utc>,
    },
    /// The caller's fence is not the sync's (or the sync is gone): nothing changed.
    LeaseLost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetOutcome {
    /// One call granted; `used` counts it.
    Granted { used: u32 },
    /// The day's budget is spent: defer until the next UTC day.
    Exhausted { used: u32 },
}

/// A page of runs, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    pub runs: Vec<RunLedger>,
    pub next_cursor: Option<String>,
}

/// Persistent state (DynamoDB in production). Every method is one round trip or a short conditional loop;
/// times are passed in so callers (and tests) decide what "now" is.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    // --- integration ---
    async fn get_integration(&self, project_id: &str) -> Result<Option<Integration>, PortError>;
    /// Every project's integration, ordered by project id (the console's project list; a deployment has few).
    async fn list_integrations(&self) -> Result<Vec<Integration>, PortError>;
    /// Records a (re)connection: status `connected`, advertisers, scopes, connection time. Keeps the mapping.
    async fn record_connection(
        &self,
        project_id: &str,
        advertisers: &[Advertiser],
        scope_ids: &[u32],
        now: DateTime<Utc>,
    ) -> Result<Integration, PortError>;
    /// `NotFound` when the project has no integration record.
    async fn set_integration_status(
        &self,
        project_id: &str,
        status: IntegrationStatus,
        now: DateTime<Utc>,
    ) -> Result<(), PortError>;
    /// Saves the mapping (canonicalized) unless a different one exists.
    async fn save_mapping(
        &self,
        project_id: &str,
        mapping: &KeyMapping,
        now: DateTime<Utc>,
    ) -> Result<SaveMapping, PortError>;
    /// Disconnect: removes the integration with its mapping. Missing is fine.
    async fn delete_integration(&self, project_id: &str) -> Result<(), PortError>;

    // --- OAuth states ---
    /// `Conflict` if the same state value exists already.
    async fn put_oauth_state(&self, state: &OAuthState) -> Result<(), PortError>;
    /// Consumes a state at most once and never at or after its expiry.
    async fn consume_oauth_state(
        &self,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<ConsumedState, PortError>;

    // --- syncs ---
    /// Creates the sync unless the project already has one for the same (cohort id, advertiser id, write
    /// mode): then that one is returned (the API's idempotent creation, safe under concurrent requests).
    /// `Conflict` if the sync id exists.
    async fn create_sync(&self, sync: &SyncConfig) -> Result<CreateSync, PortError>;
    async fn get_sync(
        &self,
        project_id: &str,
        sync_id: &str,
    ) -> Result<Option<SyncConfig>, PortError>;
    async fn list_syncs(&self, project_id: &str) -> Result<Vec<SyncConfig>, PortError>;
    /// Syncs of a cohort id, any project (GSI: eventually consistent, re-read with `get_sync` before acting).
    async fn syncs_for_cohort(&self, cohort_id: &str) -> Result<Vec<SyncConfig>, PortError>;
    /// Writes the sync's settings if their `version` is still the stored one (`Conflict` otherwise: re-read
    /// and reapply). Never touches `progress`, `committed`, `pending_export` or the lease. Returns the stored
    /// record (with the stored progress).
    async fn update_sync(&self, sync: &SyncConfig) -> Result<SyncConfig, PortError>;
    /// Deletes the sync and its runs. Missing is fine.
    async fn delete_sync(&self, project_id: &str, sync_id: &str) -> Result<(), PortError>;

    // --- history kept across a disconnect ---
    /// Replaces a sync by its retired marker and keeps its runs: the marker is written first, then the
    /// sync and its uniqueness guard are deleted (a retry after a failure finishes it).
    async fn retire_sync(&self, retired: &RetiredSync) -> Result<(), PortError>;
    async fn get_retired_sync(
        &self,
        project_id: &str,
        sync_id: &str,
    ) -> Result<Option<RetiredSync>, PortError>;
    /// A project's retired syncs, by sync id.
    async fn list_retired_syncs(&self, project_id: &str) -> Result<Vec<RetiredSync>, PortError>;
    /// The runs of a retired sync, then its marker. Missing is fine.
    async fn delete_retired_sync(&self, project_id: &str, sync_id: &str) -> Result<(), PortError>;
    /// Projects that have retired syncs (possibly no integration any more), sorted.
    async fn projects_with_history(&self) -> Result<Vec<String>, PortError>;

    // --- lease, fence and the engine's writes ---
    /// Takes the sync's lease if it is free or expired (never when another holder's is live, not even the
    /// caller's own: a continuation uses [`StateStore::take_over_lease`]). The grant's fence is one more than
    /// any earlier grant's. `NotFound`: no such sync.
    async fn acquire_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        holder: &str,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<LeaseOutcome, PortError>;
    /// A continuation of `fence.holder` takes the lease over, only if nobody was granted it since `fence`
    /// (expired or not) and the run has not released it. The new grant has the next fence: of two deliveries
    /// of one continuation exactly one wins. `None`: fenced out.
    async fn take_over_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, PortError>;
    /// Extends the lease while nobody else was granted it. `None`: the lease is lost.
    async fn renew_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, PortError>;
    /// Releases the lease if the caller still holds it, whatever is pending (after an infrastructure failure;
    /// the sweeper picks the pending export up). `false` if it did not hold it.
    async fn release_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
    ) -> Result<bool, PortError>;
    /// Ends a run's tenure atomically with the pending slot: releases the lease only if no export is pending;
    /// otherwise takes the pending export and keeps the lease (the caller runs it next). An export recorded
    /// as pending is therefore never left behind by a holder that finished at the same moment.
    async fn finish_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
    ) -> Result<FinishOutcome, PortError>;
    /// Moves the snapshot pointer, only under the caller's fence and never to an export older than the
    /// committed one (equal timestamps are accepted: same export re-committed, or a same-minute re-export).
    async fn commit_snapshot(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
        pointer: &SnapshotPointer,
        now: DateTime<Utc>,
    ) -> Result<CommitOutcome, PortError>;
    /// Writes the engine's progress under the caller's fence. `false`: fenced out, or the sync is gone.
    async fn save_progress(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
        progress: &SyncProgress,
    ) -> Result<bool, PortError>;
    /// Records an export that arrived while a run held the lease; keeps the newer of the stored and the given
    /// one. Returns whether it was stored.
    async fn set_pending_export(
        &self,
        project_id: &str,
        sync_id: &str,
        export: &ExportRef,
    ) -> Result<bool, PortError>;
    /// The newest export seen of a cohort (kept per cohort so runs list only what came after it).
    async fn latest_seen_export(&self, cohort_id: &str) -> Result<Option<ExportRef>, PortError>;
    /// Remembers an export as the newest seen of its cohort unless a newer one is already remembered.
    async fn note_seen_export(&self, cohort_id: &str, export: &ExportRef) -> Result<(), PortError>;
    /// Syncs the sweeper should resume: `progress.next_attempt_at` or a pending export is due and the lease
    /// is free or expired. At most `limit`.
    async fn syncs_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, PortError>;

    // --- run ledgers ---
    /// Writes a run's ledger under the caller's fence (and only while the sync exists). A finished ledger is
    /// never rewritten: `false` when fenced out, the sync is gone, or the stored ledger is finished.
    async fn put_run(&self, fence: &Fence, run: &RunLedger) -> Result<bool, PortError>;
    async fn get_run(&self, sync_id: &str, run_id: &str) -> Result<Option<RunLedger>, PortError>;
    /// Newest first. `cursor` is a previous page's `next_cursor`.
    async fn list_runs(
        &self,
        sync_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<RunPage, PortError>;

    // --- TikTok's per-audience daily budget (customer-file create/update calls) ---
    /// Takes one call from the UTC day's budget of `limit` for this audience key (the sync id: a `create` has no
    /// TikTok audience id yet).
    async fn try_consume_daily_call(
        &self,
        audience_key: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<BudgetOutcome, PortError>;
    async fn daily_calls_used(&self, audience_key: &str, day: NaiveDate) -> Result<u32, PortError>;

    // --- previews ---
    async fn put_preview(&self, preview: &PreviewRecord) -> Result<(), PortError>;
    async fn get_preview(
        &self,
        project_id: &str,
        preview_id: &str,
    ) -> Result<Option<PreviewRecord>, PortError>;

    // --- unmatched exports (diagnostics of the whole deployment, no project) ---
    /// Keeps an object that started nothing: one record per key (a repeat replaces it, so repeats do not
    /// grow the table), forgotten after [`crate::cohort::unmatched::UNMATCHED_RETENTION_DAYS`].
    async fn record_unmatched_export(&self, export: &UnmatchedExport) -> Result<(), PortError>;
    /// Newest first (by `seen_at`), at most `limit`, only those not expired at `now`.
    async fn list_unmatched_exports(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<UnmatchedExport>, PortError>;
}

/// Read-modify-write of a sync under optimistic concurrency: applies `change` to the current record and stores
/// it, re-reading and re-applying when a concurrent writer got there first (up to 8 times). `NotFound` when the
/// sync does not exist. `change` must be repeatable (it may run more than once).
pub async fn update_sync_with<F>(
    store: &dyn StateStore,
    project_id: &str,
    sync_id: &str,
    mut change: F,
) -> Result<SyncConfig, PortError>
where
    F: FnMut(&mut SyncConfig) + Send,
{
    let mut last = None;
    for _ in 0..8 {
        let Some(mut sync) = store.get_sync(project_id, sync_id).await? else {
            return Err(PortError::NotFound(format!("sync {sync_id}")));
        };
        change(&mut sync);
        match store.update_sync(&sync).await {
            Ok(stored) => return Ok(stored),
            Err(PortError::Conflict(m)) => last = Some(m),
            Err(e) => return Err(e),
        }
    }
    Err(PortError::Conflict(last.unwrap_or_else(|| {
        format!("sync {sync_id} keeps changing")
    })))
}

/// A project's TikTok connection as kept in the vault. `Debug` redacts the token (secrecy).
#[derive(Debug, Clone)]
pub struct TikTokConnection {
    pub access_token: SecretString,
    pub advertiser_ids: Vec<String>,
    pub scope_ids: Vec<u32>,
    pub connected_at: DateTime<Utc>,
}

/// The TikTok app's credentials (operator-provided secret).
#[derive(Debug, Clone)]
pub struct AppCredentials {
    pub app_id: String,
    pub secret: SecretString,
}

/// Secrets (Secrets Manager in production).
#[async_trait::async_trait]
pub trait TokenVault: Send + Sync {
    /// Creates or replaces the project's connection (a reconnect after a disconnect works).
    async fn put_connection(
        &self,
        project_id: &str,
        connection: &TikTokConnection,
    ) -> Result<(), PortError>;
    /// Read through a short in-process cache; `None` when not connected.
    async fn get_connection(&self, project_id: &str)
    -> Result<Option<TikTokConnection>, PortError>;
    /// Deletes without a recovery window. Missing is fine.
    async fn delete_connection(&self, project_id: &str) -> Result<(), PortError>;
    /// Drops the cached entry: a runner that got a reconnect-class error re-reads once before believing it.
    fn invalidate(&self, project_id: &str);
    async fn app_credentials(&self) -> Result<AppCredentials, PortError>;
    async fn admin_token(&self) -> Result<SecretString, PortError>;
}

/// What identifies one stored object version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub etag: Option<String>,
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
    pub version_id: Option<String>,
}

/// An export file found by listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportObject {
    pub meta: ObjectMeta,
    pub name: ExportName,
}

impl ExportObject {
    pub fn to_export_ref(&self) -> ExportRef {
        ExportRef {
            s3_key: self.meta.key.clone(),
            exported_at: self.name.exported_at,
            etag: self.meta.etag.clone(),
            last_modified: self.meta.last_modified,
        }
    }
}

/// An open object: a blocking reader over the streamed body (bounded memory; never the whole object).
/// Read it on a blocking thread (`tokio::task::spawn_blocking`), not inside an async task.
pub struct ObjectReader {
    pub meta: ObjectMeta,
    pub body: Box<dyn Read + Send>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// Checks a snapshot name (the object is `<name>.snapshot` under the sync's snapshot prefix): 1-128 of
/// `[A-Za-z0-9_-]`, so a name can never reach another sync's key or outside the prefix.
pub fn check_snapshot_name(name: &str) -> Result<(), PortError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(PortError::Invalid(
            "a snapshot name must be 1-128 characters of [A-Za-z0-9_-]".into(),
        ))
    }
}

/// Cohort exports, snapshots and reports (S3 in production).
#[async_trait::async_trait]
pub trait CohortStore: Send + Sync {
    /// The newest `existing` export of the cohort under the cohort prefix (newest by the name's timestamp; ties:
    /// the later LastModified). `seen` is the newest export already known (the state table's, see
    /// `cohort::listing`): only that cohort's keys from its hour on are listed. Without it only
    /// `<prefix>/<cohortID>_` is listed, and the whole prefix when that holds nothing. Keys that do not follow
    /// Amplitude's naming are ignored (and recorded, `cohort::unmatched`).
    async fn newest_existing_export(
        &self,
        cohort_id: &str,
        seen: Option<&str>,
    ) -> Result<Option<ExportObject>, PortError>;
    /// Metadata of a raw key; `None` when missing.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, PortError>;
    /// Opens a raw key for streaming (`NotFound` when missing).
    async fn open(&self, key: &str) -> Result<ObjectReader, PortError>;
    /// Uploads a snapshot file (streamed from disk) as the sync's snapshot object `name` (see
    /// [`check_snapshot_name`]; `Invalid` otherwise). Every snapshot gets its own key, never overwritten: a run
    /// that writes one and never commits it cannot turn the committed one into an old version.
    async fn put_snapshot(
        &self,
        project_id: &str,
        sync_id: &str,
        name: &str,
        file: &Path,
    ) -> Result<SnapshotRef, PortError>;
    /// Removes a snapshot object for good: every stored version of its key (and delete marker), since a plain
    /// delete in a versioned bucket keeps the hashed identifiers. Missing is fine. `Invalid` for a ref that is
    /// not a snapshot of this store.
    async fn delete_snapshot(&self, snapshot: &SnapshotRef) -> Result<(), PortError>;
    /// Opens a snapshot (the exact version when the ref has one).
    async fn open_snapshot(&self, snapshot: &SnapshotRef) -> Result<ObjectReader, PortError>;
    /// Writes a run's JSON report; returns its key.
    async fn put_run_report(
        &self,
        project_id: &str,
        sync_id: &str,
        run_id: &str,
        report: &serde_json::Value,
    ) -> Result<String, PortError>;
    /// Removes a run's report (its ledger was refused: the sync is gone). Missing is fine.
    async fn delete_run_report(
        &self,
        project_id: &str,
        sync_id: &str,
        run_id: &str,
    ) -> Result<(), PortError>;
    /// Writes a preview's JSON report; returns its key.
    async fn put_preview_report(
        &self,
        project_id: &str,
        preview_id: &str,
        report: &serde_json::Value,
    ) -> Result<String, PortError>;
    /// Reads a JSON report by key; `None` when missing.
    async fn get_report(&self, key: &str) -> Result<Option<serde_json::Value>, PortError>;
    /// Deletes the sync's snapshots and reports, every version of each (disconnect / sync deletion): nothing
    /// under the sync's snapshot and report prefixes remains. Missing is fine.
    async fn delete_sync_objects(&self, project_id: &str, sync_id: &str) -> Result<(), PortError>;
    /// Deletes every version of everything under the project's snapshot and report prefixes (disconnect):
    /// also what belongs to no listed sync any more (a run that wrote after its sync was deleted) and preview
    /// reports. Missing is fine.
    async fn delete_project_objects(&self, project_id: &str) -> Result<(), PortError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleRate {
    Hourly,
    Daily,
}

impl ScheduleRate {
    pub fn expression(self) -> &'static str {
        match self {
            ScheduleRate::Hourly => "rate(1 hour)",
            ScheduleRate::Daily => "rate(1 day)",
        }
    }
}

/// A schedule as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleInfo {
    pub name: String,
    pub expression: String,
    pub enabled: bool,
    /// The exact input the runner receives.
    pub input: String,
    pub target_arn: String,
    pub role_arn: String,
    pub flexible_window_minutes: Option<i32>,
}

#[derive(serde::Serialize)]
struct ScheduleInput<'a> {
    trigger: &'static str,
    project_id: &'a str,
    sync_id: &'a str,
}

/// The exact input a schedule gives the sync-runner: `{"trigger":"schedule","project_id":..,"sync_id":..}`
/// (fields in that order).
pub fn schedule_input(project_id: &str, sync_id: &str) -> String {
    let input = ScheduleInput {
        trigger: "schedule",
        project_id,
        sync_id,
    };
    // Serializing three strings cannot fail; an equivalent form regardless.
    serde_json::to_string(&input).unwrap_or_else(|_| {
        serde_json::json!({"trigger": "schedule", "project_id": project_id, "sync_id": sync_id})
            .to_string()
    })
}

/// `sync-<sync_id>`: at most 64 of `[0-9A-Za-z-_.]` (sync ids are ULIDs).
pub fn schedule_name(sync_id: &str) -> String {
    format!("sync-{sync_id}")
}

/// Recurring runs (EventBridge Scheduler in production): one schedule per hourly/daily sync.
#[async_trait::async_trait]
pub trait Schedules: Send + Sync {
    /// Creates or updates `sync-<sync_id>` with input `{"trigger":"schedule","project_id":..,"sync_id":..}`.
    async fn upsert_schedule(
        &self,
        project_id: &str,
        sync_id: &str,
        rate: ScheduleRate,
        enabled: bool,
    ) -> Result<(), PortError>;
    /// `false` when the schedule does not exist.
    async fn set_schedule_enabled(&self, sync_id: &str, enabled: bool) -> Result<bool, PortError>;
    /// Missing is fine.
    async fn delete_schedule(&self, sync_id: &str) -> Result<(), PortError>;
    async fn get_schedule(&self, sync_id: &str) -> Result<Option<ScheduleInfo>, PortError>;
}

/// Asynchronous runs of the sync-runner (Lambda `Invoke` with `InvocationType::Event` in production).
#[async_trait::async_trait]
pub trait Invoker: Send + Sync {
    async fn invoke_async(&self, payload: &serde_json::Value) -> Result<(), PortError>;
}

/// Failure notifications (a webhook in production, see `crate::notify`). Best effort by contract: the
/// adapter bounds its own time, logs its failures and never returns one; the engine also caps the wait.
#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    async fn notify(&self, notice: &crate::notify::Notice);
}

/// Notifications off (no webhook configured).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNotifier;

#[async_trait::async_trait]
impl Notifier for NoNotifier {
    async fn notify(&self, _notice: &crate::notify::Notice) {}
}

/// The engine's time source: the system clock in production, a virtual one in the simulation.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

//! Persistent domain records (integration, sync configuration, run ledger, ...). Stored by the StateStore port
//! (`ports::StateStore`); every record is plain serde data so a store can keep it as JSON. No secret ever sits
//! in one of these records: tokens live in the TokenVault only.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::identifiers::KeyKind;

/// Connection state of a project's TikTok integration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationStatus {
    NotConnected,
    Connected,
    /// A reconnect-class TikTok error was seen: nothing is sent until the user reconnects.
    ReconnectRequired,
}

impl IntegrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationStatus::NotConnected => "not_connected",
            IntegrationStatus::Connected => "connected",
            IntegrationStatus::ReconnectRequired => "reconnect_required",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertiser {
    pub advertiser_id: String,
    pub advertiser_name: String,
}

/// Which Amplitude property feeds which TikTok key. Immutable once saved (as in Amplitude): the store refuses a
/// different one until the project disconnects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMapping {
    pub amplitude_property: String,
    pub tiktok_key: KeyKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_phone_region: Option<String>,
}

impl KeyMapping {
    /// The stored spelling: property trimmed, region uppercased.
    pub fn canonical(&self) -> KeyMapping {
        KeyMapping {
            amplitude_property: self.amplitude_property.trim().to_string(),
            tiktok_key: self.tiktok_key,
            default_phone_region: self
                .default_phone_region
                .as_deref()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_ascii_uppercase),
        }
    }

    /// Identity used to decide "same mapping": the property is compared case-insensitively (columns are
    /// matched that way), the key and region exactly after canonicalization.
    pub fn fingerprint(&self) -> String {
        let c = self.canonical();
        format!(
            "{}\u{1f}{}\u{1f}{}",
            c.amplitude_property.to_lowercase(),
            c.tiktok_key.as_str(),
            c.default_phone_region.unwrap_or_default()
        )
    }
}

/// A project's integration as the API shows it. `mapping` is written only through
/// `StateStore::save_mapping` (immutability is a conditional write); other fields by the connect/status calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    pub project_id: String,
    pub status: IntegrationStatus,
    #[serde(default)]
    pub advertisers: Vec<Advertiser>,
    /// TikTok scope ids granted at consent (30/31 = read/manage audiences).
    #[serde(default)]
    pub scope_ids: Vec<u32>,
    #[serde(default)]
    pub mapping: Option<KeyMapping>,
    #[serde(default)]
    pub connected_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A pending OAuth `state`: single use, never after `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthState {
    pub state: String,
    pub project_id: String,
    pub redirect_uri: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cadence {
    OneTime,
    OnUpload,
    Hourly,
    Daily,
}

impl Cadence {
    /// Only these have an EventBridge schedule.
    pub fn is_recurring(self) -> bool {
        matches!(self, Cadence::Hourly | Cadence::Daily)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    #[default]
    CustomerFile,
    Streaming,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    Active,
    Paused,
    Completed,
}

/// An export object a run used or will use: the raw S3 key plus what identifies its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRef {
    /// Raw (listed / decoded-once) S3 key.
    pub s3_key: String,
    /// Amplitude's timestamp from the name: the order of exports.
    pub exported_at: DateTime<Utc>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub last_modified: Option<DateTime<Utc>>,
}

/// Where the committed snapshot (what the TikTok audience holds, as far as we know) is, and what it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPointer {
    pub snapshot: SnapshotRef,
    pub export: ExportRef,
    pub digests: u64,
    pub key_kind: KeyKind,
    pub rule_version: u32,
    pub committed_at: DateTime<Utc>,
}

/// One stored snapshot object version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub key: String,
    /// Set when the bucket is versioned (S3 here: versioning is bucket-wide); the exact version read back.
    #[serde(default)]
    pub version_id: Option<String>,
    #[serde(default)]
    pub etag: Option<String>,
    pub size: u64,
}

/// TikTok's view of the audience, read back after a run (`dmp/custom_audience/get/`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TikTokAudienceStatus {
    pub is_valid: bool,
    pub cover_num: Option<u64>,
    pub is_expiring: bool,
    pub msg: Option<String>,
    pub checked_at: DateTime<Utc>,
}

/// Intent recorded before creating a TikTok audience, so an unknown outcome is resolved by name, never by a
/// second create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceCreateIntent {
    pub audience_name: String,
    pub recorded_at: DateTime<Utc>,
}

/// Share of the audience a run may remove without review.
pub const DEFAULT_MAX_REMOVAL_RATIO: f64 = 0.5;
/// Customer-file audiences are created from this many digests (TikTok needs 1,000 matched users).
pub const DEFAULT_MIN_CREATE_SIZE: u64 = 1000;

fn default_max_removal_ratio() -> f64 {
    DEFAULT_MAX_REMOVAL_RATIO
}

fn default_min_create_size() -> u64 {
    DEFAULT_MIN_CREATE_SIZE
}

/// The one rule for the ids that become storage keys (project, sync, run, cohort, advertiser ids and
/// snapshot names): 1-128 characters of `[A-Za-z0-9_-]`.
pub mod ids {
    pub const MAX_LEN: usize = 128;

    pub fn valid(id: &str) -> bool {
        (1..=MAX_LEN).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    /// `Invalid` with the rule spelled out.
    pub fn check(what: &str, id: &str) -> Result<(), crate::ports::PortError> {
        if valid(id) {
            Ok(())
        } else {
            Err(crate::ports::PortError::Invalid(format!(
                "{what} must be 1-{MAX_LEN} characters of [A-Za-z0-9_-]"
            )))
        }
    }
}

/// A sync: one cohort into one TikTok audience. The record has two owners, kept apart by construction:
/// the settings (every field but `progress`) are written by the API only (`StateStore::update_sync`, versioned),
/// `progress` by the engine only (`StateStore::save_progress`, fenced by the lease). A user's edit during a run
/// and the run's own writes never overwrite each other. `committed` and `pending_export` have their own
/// conditional calls (`commit_snapshot`, `set_pending_export`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncConfig {
    /// Short id (ULID): the schedule name `sync-<sync_id>` must fit 64 characters.
    pub sync_id: String,
    pub project_id: String,
    pub cohort_id: String,
    pub advertiser_id: String,
    pub cadence: Cadence,
    #[serde(default)]
    pub write_mode: WriteMode,
    /// The user's state: `Active` or `Paused` (`Completed` is derived, see [`SyncConfig::effective_state`]).
    pub state: SyncState,
    #[serde(default)]
    pub audience_name: Option<String>,
    #[serde(default = "default_max_removal_ratio")]
    pub max_removal_ratio: f64,
    #[serde(default = "default_min_create_size")]
    pub min_create_size: u64,
    /// `sync-<sync_id>` for hourly/daily syncs.
    #[serde(default)]
    pub schedule_name: Option<String>,
    /// Settings warnings (e.g. hourly customer-file syncs spend TikTok's daily budget).
    #[serde(default)]
    pub warnings: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version of the settings, maintained by the store.
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub committed: Option<SnapshotPointer>,
    /// A newer export that arrived while a run held the lease.
    #[serde(default)]
    pub pending_export: Option<ExportRef>,
    #[serde(default)]
    pub progress: SyncProgress,
}

impl SyncConfig {
    /// The one rule for a sync's EventBridge schedule: it exists for hourly/daily syncs and is enabled only
    /// while the sync is active and the project's integration connected.
    pub fn schedule_enabled(&self, integration: IntegrationStatus) -> bool {
        self.cadence.is_recurring()
            && self.effective_state() == SyncState::Active
            && integration == IntegrationStatus::Connected
    }

    /// What the sync is doing for the user: paused wins; a one-time sync whose export was applied is completed.
    pub fn effective_state(&self) -> SyncState {
        if self.state == SyncState::Paused {
            SyncState::Paused
        } else if self.cadence == Cadence::OneTime
            && (self.state == SyncState::Completed || self.progress.one_time_done.is_some())
        {
            SyncState::Completed
        } else {
            SyncState::Active
        }
    }
}

/// The engine's part of a sync. Adding a field here is all it takes for every run to keep it: the store
/// writes this struct whole.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncProgress {
    #[serde(default)]
    pub tiktok_audience_id: Option<String>,
    #[serde(default)]
    pub audience_create_intent: Option<AudienceCreateIntent>,
    #[serde(default)]
    pub last_run: Option<RunLedger>,
    #[serde(default)]
    pub tiktok_status: Option<TikTokAudienceStatus>,
    #[serde(default)]
    pub waiting_for_minimum: Option<u64>,
    #[serde(default)]
    pub held_removals: u64,
    #[serde(default)]
    pub held_adds: u64,
    #[serde(default)]
    pub deferred: u64,
    /// Whether any run of this sync has used an export yet (hourly/daily: uploads start runs until then).
    #[serde(default)]
    pub used_export: bool,
    /// Digests whose last write had no answer: re-sent in the cohort's direction until one is confirmed.
    #[serde(default)]
    pub uncertain: Option<UncertainSet>,
    /// The run whose work is unfinished (running, continuing, or cut off): the sweeper resumes it.
    #[serde(default)]
    pub active_run: Option<String>,
    /// When the sweeper should run this sync again without a new export (held, deferred or cut-off work).
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Customer-file mode: the last edit call (TikTok processes an audience for hours after each).
    #[serde(default)]
    pub last_edit: Option<LastEdit>,
    /// Runs in a row that applied nothing because TikTok held every change.
    #[serde(default)]
    pub consecutive_holds: u32,
    /// Engine warnings shown on the sync (e.g. repeated holds, a recreated audience).
    #[serde(default)]
    pub notices: Vec<String>,
    /// One-time syncs: the export whose application completed the sync.
    #[serde(default)]
    pub one_time_done: Option<String>,
}

/// The uncertain digests, kept in S3 (never in DynamoDB): a snapshot object of the sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UncertainSet {
    pub snapshot: SnapshotRef,
    pub digests: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditKind {
    Create,
    Append,
    Remove,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastEdit {
    pub kind: EditKind,
    pub at: DateTime<Utc>,
}

/// What every engine write carries: the run holding the lease and the lease's fence number. A write whose
/// fence is no longer the sync's changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub holder: String,
    pub fence: u64,
}

/// A sync's lease: the one run allowed to change its audience and snapshot pointer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    pub expires_at: DateTime<Utc>,
    /// Grows by one with every grant or hand-over: continuations carry it, every engine write checks it.
    pub fence: u64,
}

impl Lease {
    pub fn fence(&self) -> Fence {
        Fence {
            holder: self.holder.clone(),
            fence: self.fence,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    Upload,
    Schedule,
    Manual,
    Pending,
    Continue,
    /// The sweeper resumed work left unfinished (a cut-off run, held or deferred changes).
    Resume,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Succeeded,
    /// Nothing was applied: TikTok held every change (processing, too small) or the budget deferred it.
    Held,
    UpToDate,
    WaitingForMinimum,
    HeldForReview,
    Stale,
    Skipped,
    Failed,
}

impl RunState {
    pub const ALL: [RunState; 9] = [
        RunState::Running,
        RunState::Succeeded,
        RunState::Held,
        RunState::UpToDate,
        RunState::WaitingForMinimum,
        RunState::HeldForReview,
        RunState::Stale,
        RunState::Skipped,
        RunState::Failed,
    ];

    /// The API's spelling (`up_to_date`), the serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Held => "held",
            RunState::UpToDate => "up_to_date",
            RunState::WaitingForMinimum => "waiting_for_minimum",
            RunState::HeldForReview => "held_for_review",
            RunState::Stale => "stale",
            RunState::Skipped => "skipped",
            RunState::Failed => "failed",
        }
    }
}

/// Planned = applied + held + deferred.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeCounts {
    pub planned: u64,
    pub applied: u64,
    pub held: u64,
    pub deferred: u64,
}

/// The ledger of one run (the API's run JSON plus the engine's checkpoint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunLedger {
    pub run_id: String,
    pub sync_id: String,
    pub project_id: String,
    pub trigger: RunTrigger,
    #[serde(default)]
    pub source_export: Option<String>,
    pub state: RunState,
    #[serde(default)]
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub rows: u64,
    #[serde(default)]
    pub valid: u64,
    #[serde(default)]
    pub unique: u64,
    #[serde(default)]
    pub duplicates: u64,
    /// Skip reason -> count (only reasons that occurred).
    #[serde(default)]
    pub skipped: BTreeMap<String, u64>,
    #[serde(default)]
    pub adds: ChangeCounts,
    #[serde(default)]
    pub removes: ChangeCounts,
    #[serde(default)]
    pub tiktok_calls: u64,
    #[serde(default)]
    pub tiktok_request_ids: Vec<String>,
    /// Digests re-sent this run because an earlier write had no answer.
    #[serde(default)]
    pub uncertain_resent: u64,
    /// Digests whose write this run had no answer (kept as uncertain for later runs).
    #[serde(default)]
    pub uncertain_left: u64,
    /// The lease fence this run worked under.
    #[serde(default)]
    pub fence: u64,
    /// Digests the audience holds after this run (the committed base; the console's size chart).
    #[serde(default)]
    pub audience_size: Option<u64>,
    /// TikTok's matched-user count (`cover_num`) as last read back by this run or before it.
    #[serde(default)]
    pub matched: Option<u64>,
}

impl RunLedger {
    pub fn is_finished(&self) -> bool {
        self.state != RunState::Running
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreviewState {
    Running,
    Done,
    Failed,
}

/// A sync a disconnect removed while keeping its run history (`DELETE .../integration?keep_history=true`):
/// what it was, so its runs stay readable. Holds no identifier and no snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetiredSync {
    pub sync_id: String,
    pub project_id: String,
    pub cohort_id: String,
    pub advertiser_id: String,
    pub cadence: Cadence,
    pub write_mode: WriteMode,
    pub tiktok_audience_id: Option<String>,
    pub audience_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub retired_at: DateTime<Utc>,
    pub last_run: Option<RunLedger>,
}

impl RetiredSync {
    pub fn of(s: &SyncConfig, now: DateTime<Utc>) -> RetiredSync {
        RetiredSync {
            sync_id: s.sync_id.clone(),
            project_id: s.project_id.clone(),
            cohort_id: s.cohort_id.clone(),
            advertiser_id: s.advertiser_id.clone(),
            cadence: s.cadence,
            write_mode: s.write_mode,
            tiktok_audience_id: s.progress.tiktok_audience_id.clone(),
            audience_name: s.audience_name.clone(),
            created_at: s.created_at,
            retired_at: now,
            last_run: s.progress.last_run.clone(),
        }
    }
}

/// An asynchronous pre-flight report requested through the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreviewRecord {
    pub preview_id: String,
    pub project_id: String,
    pub s3_key: String,
    /// The sync the preview compares with, if one was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_id: Option<String>,
    pub state: PreviewState,
    #[serde(default)]
    pub report: Option<serde_json::Value>,
    /// `{"code","message"}` when failed.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

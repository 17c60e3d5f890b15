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

fn default_max_removal_ratio() -> f64 {
    0.5
}

fn default_min_create_size() -> u64 {
    1000
}

/// A sync: one cohort into one TikTok audience. The fields `committed`, `pending_export` and the lease are
/// owned by dedicated conditional store calls (`commit_snapshot`, `set_pending_export`, `acquire_lease`);
/// `StateStore::update_sync` does not write them.
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
    pub state: SyncState,
    #[serde(default)]
    pub audience_name: Option<String>,
    #[serde(default = "default_max_removal_ratio")]
    pub max_removal_ratio: f64,
    #[serde(default = "default_min_create_size")]
    pub min_create_size: u64,
    #[serde(default)]
    pub tiktok_audience_id: Option<String>,
    #[serde(default)]
    pub audience_create_intent: Option<AudienceCreateIntent>,
    /// `sync-<sync_id>` for hourly/daily syncs.
    #[serde(default)]
    pub schedule_name: Option<String>,
    #[serde(default)]
    pub committed: Option<SnapshotPointer>,
    /// A newer export that arrived while a run held the lease.
    #[serde(default)]
    pub pending_export: Option<ExportRef>,
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
    #[serde(default)]
    pub warnings: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version, maintained by the store.
    #[serde(default)]
    pub version: u64,
}

/// A sync's lease: the one run allowed to change its audience and snapshot pointer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    Upload,
    Schedule,
    Manual,
    Pending,
    Continue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Succeeded,
    UpToDate,
    WaitingForMinimum,
    HeldForReview,
    Stale,
    Skipped,
    Failed,
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
    /// Engine-owned resume state (what was acknowledged so far); opaque to the store.
    #[serde(default)]
    pub checkpoint: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreviewState {
    Running,
    Done,
    Failed,
}

/// An asynchronous pre-flight report requested through the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreviewRecord {
    pub preview_id: String,
    pub project_id: String,
    pub s3_key: String,
    pub state: PreviewState,
    #[serde(default)]
    pub report: Option<serde_json::Value>,
    /// `{"code","message"}` when failed.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

//! The engine's knobs and TikTok's numbers, in one place.

use std::path::PathBuf;
use std::time::Duration;

use crate::cohort::reader::ReaderLimits;
use crate::sync::batches;

/// One TikTok request's timeout: the TikTok client's default (`audience_tiktok::ClientConfig`) is this.
pub const TIKTOK_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// What a run needs after its last call: snapshot upload (hundreds of MB at 10M users), pointer, ledger.
pub const COMMIT_ALLOWANCE: Duration = Duration::from_secs(60);
/// Share of malformed rows above which an export is refused.
pub const DEFAULT_MAX_MALFORMED_RATIO: f64 = 0.01;
/// TikTok's per-audience daily budget of customer-file create/update calls (Amplitude documents 24).
pub const DEFAULT_DAILY_BUDGET: u32 = 24;

#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Short, so a run that dies frees its sync within minutes; a live run renews it (`heartbeat`).
    pub lease_ttl: Duration,
    /// How often a live run renews its lease in the background. `None`: only before TikTok calls.
    pub heartbeat: Option<Duration>,
    /// Stop taking new TikTok calls when less than this remains before the Lambda deadline (checked before
    /// every call, the first included): at least one request timeout plus the commit.
    pub deadline_margin: Duration,
    pub max_malformed_ratio: f64,
    pub digests_per_file: usize,
    pub files_per_call: usize,
    pub mapping_batch: usize,
    pub daily_budget: u32,
    /// After a customer-file create or update TikTok processes the audience and refuses edits (40002) for
    /// hours: the engine makes at most one edit per audience per window.
    pub processing_window: Duration,
    /// A new streaming audience takes mappings after a minute or two (40201 before).
    pub stream_ready_after: Duration,
    /// When a run failed for a reason that may pass (TikTok unreachable, answers lost), the sweeper tries
    /// again after this.
    pub retry_after_failure: Duration,
    /// Runs in a row that applied nothing because TikTok held everything before the sync shows a warning.
    pub holds_before_warning: u32,
    /// How many due syncs one sweep resumes.
    pub sweep_batch: usize,
    /// What the reader accepts (record size, decompressed bytes, gzip ratio).
    pub reader: ReaderLimits,
    /// Where customer files and snapshots are written before upload (Lambda: /tmp).
    pub work_dir: PathBuf,
    /// At most this many TikTok request ids are kept per ledger (a DynamoDB item is at most 400 KB).
    pub max_request_ids: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            lease_ttl: Duration::from_secs(3 * 60),
            heartbeat: Some(Duration::from_secs(45)),
            deadline_margin: TIKTOK_REQUEST_TIMEOUT + COMMIT_ALLOWANCE,
            max_malformed_ratio: DEFAULT_MAX_MALFORMED_RATIO,
            digests_per_file: batches::DEFAULT_DIGESTS_PER_FILE,
            files_per_call: batches::DEFAULT_FILES_PER_CALL,
            mapping_batch: batches::MAX_MAPPING_BATCH,
            daily_budget: DEFAULT_DAILY_BUDGET,
            processing_window: Duration::from_secs(6 * 3600),
            stream_ready_after: Duration::from_secs(120),
            retry_after_failure: Duration::from_secs(15 * 60),
            holds_before_warning: 3,
            sweep_batch: 50,
            reader: ReaderLimits::default(),
            work_dir: std::env::temp_dir(),
            max_request_ids: 200,
        }
    }
}

pub(crate) fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

//! The TikTok port of the sync engine: the audience operations a run needs, in domain terms. The one adapter
//! is `audience_tiktok::AudienceAdapter` over the real client; unit tests use small fakes.

use std::path::Path;

use secrecy::SecretString;

use crate::digests::Digest;
use crate::identifiers::KeyKind;

/// A successful call with TikTok's request id (kept in ledgers and reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack<T> {
    pub value: T,
    pub request_id: Option<String>,
}

/// What the engine must do about a failed call (the client already retried what it could).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// Server errors or throttling that outlasted the client's bounded backoff: fail the run, commit what was
    /// applied; the next run sends the rest.
    GaveUp,
    /// The request may or may not have been applied (dropped connection, gateway error after sending).
    OutcomeUnknown,
    /// The token no longer works (revoked, expired, scope withdrawn): reconnect needed.
    ReconnectRequired,
    /// The audience does not exist on TikTok's side (deleted or expired).
    NotFound,
    /// TikTok will not edit the audience now (under 1,000 matched users, or still processing): hold the change.
    /// Only TikTok's own texts for these causes give this kind; any other 40002 is `Invalid`.
    NotEditable,
    /// The audience expired (12 months unused): TikTok only allows deleting it; a new one is created.
    Expired,
    /// A new streaming audience does not take mappings yet: send them in a later run.
    NotReady,
    /// The uploaded file was refused.
    FileRejected,
    /// Anything else: a request TikTok considers invalid, a configuration problem.
    Invalid,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("TikTok {endpoint}: {message} (code {code:?}, request id {request_id:?})")]
pub struct ApiError {
    pub kind: ApiErrorKind,
    pub endpoint: String,
    pub code: Option<i64>,
    pub message: String,
    pub request_id: Option<String>,
}

/// The action of a customer-file update. REPLACE is deliberately absent: the engine never replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    Append,
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingAction {
    Add,
    Delete,
}

/// TikTok's view of an audience.
#[derive(Debug, Clone, PartialEq)]
pub struct AudienceView {
    pub audience_id: String,
    pub name: String,
    pub is_valid: bool,
    pub cover_num: Option<u64>,
    pub is_expiring: bool,
    pub msg: Option<String>,
}

/// Counters of the adapter's process-wide client; a run reports the difference over its duration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounters {
    pub calls: u64,
    pub retries: u64,
}

#[async_trait::async_trait]
pub trait AudienceApi: Send + Sync {
    /// Uploads a file of lowercase hex digests (one per line) and returns its `file_path`.
    async fn upload_digest_file(
        &self,
        token: &SecretString,
        advertiser_id: &str,
        key: KeyKind,
        file: &Path,
    ) -> Result<Ack<String>, ApiError>;
    /// Creates a customer-file audience from uploaded files; returns its id. Never retried on an unknown
    /// outcome (that could make a second audience): the engine looks the name up instead.
    async fn create_file_audience(
        &self,
        token: &SecretString,
        advertiser_id: &str,
        name: &str,
        key: KeyKind,
        file_paths: &[String],
    ) -> Result<Ack<String>, ApiError>;
    async fn update_file_audience(
        &self,
        token: &SecretString,
        advertiser_id: &str,
        audience_id: &str,
        action: FileAction,
        file_paths: &[String],
    ) -> Result<Ack<()>, ApiError>;
    /// Creates a streaming (segment) audience; returns its id.
    async fn create_stream_audience(
        &self,
        token: &SecretString,
        advertiser_id: &str,
        name: &str,
    ) -> Result<Ack<String>, ApiError>;
    /// One `segment/mapping` request of at most 10,000 digests.
    async fn stream_mapping(
        &self,
        token: &SecretString,
        advertiser_id: &str,
        audience_id: &str,
        key: KeyKind,
        action: MappingAction,
        digests: &[Digest],
    ) -> Result<Ack<()>, ApiError>;
    /// The ids of every audience of the advertiser with exactly this name (all pages).
    async fn find_audiences_by_name(
        &self,
        token: &SecretString,
        advertiser_id: &str,
        name: &str,
    ) -> Result<Ack<Vec<String>>, ApiError>;
    /// `None` when TikTok does not know the audience.
    async fn audience_status(
        &self,
        token: &SecretString,
        advertiser_id: &str,
        audience_id: &str,
    ) -> Result<Ack<Option<AudienceView>>, ApiError>;
    fn counters(&self) -> CallCounters;
}

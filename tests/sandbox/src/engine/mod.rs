//! The sandbox's model of TikTok: apps, consent, tokens, uploaded files, audiences, limits, faults and the
//! request log. Everything here is synchronous and runs under one mutex; the HTTP layer (`http.rs`) parses
//! requests, asks this module what TikTok would do, and writes the answer.
//!
//! `types` (apps, faults, the log), `oauth` (consent, tokens, scopes), `files` (uploads), `audiences`
//! (customer-file edits), `reads` (get/list), `streaming`
//! (segment API), `limits` (rate windows, daily budget, faults), `rules` (the configurable TikTok rules and
//! their messages), `validate` (request-shape checks).

mod audiences;
pub mod digest;
mod files;
mod limits;
mod members;
mod oauth;
mod reads;
pub mod rules;
mod scan;
mod streaming;
mod types;
mod validate;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

pub use audiences::CREATE_CALCULATE_TYPES;
pub use files::{
    FileIds, UPLOAD_CALCULATE_TYPES, UploadForm, UploadedFile, UploadedPart, file_lines,
    fits_calculate_type, union_of,
};
pub use members::Members;
pub use oauth::scopes_cover;
pub use rules::Rules;
pub use scan::{ScannedFile, scan_file};
pub use streaming::{Batch, MAPPING_ID_SCHEMAS, mapping_ids, parse_batch};
pub use types::{AdvertiserSpec, AppSpec, FaultConfig, LogEntry, digest_matches, ids_sha256};

/// TikTok's documented response codes used by the sandbox.
pub mod codes {
    pub const OK: i64 = 0;
    pub const INVALID_PARAMS: i64 = 40000;
    pub const PERMISSION: i64 = 40001;
    pub const NOT_EDITABLE: i64 = 40002;
    pub const NOT_FOUND: i64 = 40007;
    pub const TOO_MANY_IDS: i64 = 40011;
    pub const AUDIENCE_DAILY_LIMIT: i64 = 40016;
    pub const APP_RATE_LIMIT: i64 = 40100;
    pub const APP_SECRET: i64 = 40101;
    pub const TOKEN_EMPTY: i64 = 40104;
    pub const TOKEN_INVALID: i64 = 40105;
    pub const TOKEN_ADVERTISER: i64 = 40106;
    pub const AUTH_CODE_INVALID: i64 = 40110;
    pub const NOT_ALLOWLISTED: i64 = 40118;
    pub const ADVERTISER_RATE_LIMIT: i64 = 40133;
    /// "not ready" in TikTok's return-code list; the sandbox answers it for a streaming audience's first
    /// seconds (an assumption: see the README).
    pub const NOT_READY: i64 = 40201;
    pub const FILE_SIGNATURE: i64 = 40900;
    pub const FILE_FOREIGN: i64 = 40905;
    pub const FILE_EMPTY: i64 = 40906;
    pub const FILE_TOO_LARGE: i64 = 40907;
    pub const FILE_SUFFIX: i64 = 40908;
    pub const FILE_CALCULATE_TYPE: i64 = 40909;
    pub const FILE_EXPIRED: i64 = 40910;
    /// More files than an audience may reference over its life (an assumption within 40900-40916).
    pub const FILE_COUNT: i64 = 40911;
}

/// Scope ids: TikTok's "Audience Management" (3) and its children 30 (read) and 31 (create/update).
pub const SCOPE_AUDIENCE_MANAGEMENT: i64 = 3;
pub const SCOPE_AUDIENCE_READ: i64 = 30;
pub const SCOPE_AUDIENCE_WRITE: i64 = 31;
/// The ad-account read permission (TikTok lists `oauth2/advertiser/get/` under it).
pub const SCOPE_AD_ACCOUNT_READ: i64 = 100;

/// TikTok needs this many matched users before an audience is usable or editable.
pub const MIN_MATCHED: usize = 1_000;
/// Users per `segment/mapping/` request.
pub const MAX_MAPPING_USERS: usize = 10_000;
/// Audiences per advertiser.
pub const MAX_AUDIENCES: usize = 400;
/// Customer-file `create`/`update` calls per audience per UTC day.
pub const DAILY_AUDIENCE_CALLS: u32 = 24;
/// Auth codes are valid one hour.
pub const AUTH_CODE_TTL_MS: i64 = 3_600_000;
/// An audience is flagged `is_expiring` this long before it expires.
pub const EXPIRING_WINDOW_MS: i64 = 60 * 86_400_000;

pub const TYPE_CUSTOMER_FILE: &str = "Customer File";
pub const TYPE_PARTNER: &str = "Partner";

#[derive(Debug, Clone)]
struct AuthCode {
    app_id: String,
    expires_at_ms: i64,
    used: bool,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub app_id: String,
    pub advertiser_ids: Vec<String>,
    pub scopes: Vec<i64>,
    pub revoked: bool,
}

#[derive(Debug, Clone)]
struct HistoryItem {
    action: String,
    action_detail: String,
    msg: String,
    opt_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Audience {
    pub id: String,
    pub advertiser_id: String,
    pub name: String,
    pub kind: &'static str,
    pub calculate_type: Option<String>,
    pub members: Members,
    create_ms: i64,
    /// Last create or edit (the expiry clock restarts here).
    modify_ms: i64,
    history: Vec<HistoryItem>,
    day: Option<NaiveDate>,
    day_calls: u32,
    /// While the logical clock is before this, the audience is processing its last edit.
    processing_until_ms: i64,
    /// `cover_num` shown while processing: the value before the edit.
    shown_cover: usize,
    /// Streaming audiences refuse mappings before this.
    ready_at_ms: i64,
    /// Every file path the audience referenced (TikTok caps them over its life).
    files_used: BTreeSet<String>,
}

impl Audience {
    fn new(
        (id, advertiser_id): (String, String),
        name: String,
        kind: &'static str,
        now: i64,
        match_rate: f64,
    ) -> Self {
        Audience {
            id,
            advertiser_id,
            name,
            kind,
            calculate_type: None,
            members: Members::new(match_rate),
            create_ms: now,
            modify_ms: now,
            history: Vec::new(),
            day: None,
            day_calls: 0,
            processing_until_ms: now,
            shown_cover: 0,
            ready_at_ms: now,
            files_used: BTreeSet::new(),
        }
    }

    /// Hex characters of its digests (`*_MD5` files: 32; everything else: 64).
    pub fn hex_width(&self) -> usize {
        self.calculate_type
            .as_deref()
            .and_then(digest::hex_width)
            .unwrap_or(64)
    }

    fn push_history(&mut self, action: &str, detail: String, msg: String, now: i64) {
        self.history.push(HistoryItem {
            action: action.to_string(),
            action_detail: detail,
            msg,
            opt_ms: now,
        });
    }
}

/// What the handler decided, for the envelope and the log.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub code: i64,
    pub message: String,
    pub data: Value,
    pub applied: bool,
    /// Set when the handler learns the audience id (e.g. a new audience).
    pub audience_id: Option<String>,
}

impl Outcome {
    pub fn ok(data: Value) -> Self {
        Outcome {
            code: codes::OK,
            message: "OK".into(),
            data,
            applied: true,
            audience_id: None,
        }
    }
    pub fn err(code: i64, message: impl Into<String>) -> Self {
        Outcome {
            code,
            message: message.into(),
            data: json!({}),
            applied: false,
            audience_id: None,
        }
    }
    fn with_audience(mut self, id: String) -> Self {
        self.audience_id = Some(id);
        self
    }
}

pub(crate) type Reject = (i64, String);

pub(crate) fn reject(code: i64, msg: impl Into<String>) -> Reject {
    (code, msg.into())
}

impl From<Reject> for Outcome {
    fn from((code, message): Reject) -> Self {
        Outcome::err(code, message)
    }
}

/// What a fault roll decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultDecision {
    None,
    Code(i64),
    Http(u16),
    DropBefore,
    DropAfter,
}

pub struct State {
    pub qps: u32,
    pub match_rate: f64,
    pub rules: Rules,
    pub default_app: AppSpec,
    pub apps: HashMap<String, AppSpec>,
    pub consent_deny: bool,
    auth_codes: HashMap<String, AuthCode>,
    pub tokens: HashMap<String, Token>,
    pub files: HashMap<String, UploadedFile>,
    pub audiences: BTreeMap<String, Audience>,
    next_audience: u64,
    /// Admitted requests per app and per advertiser, as `ts_ms` values (the same clock as the log, so the
    /// log shows exactly what the limiters saw).
    windows: limits::Windows,
    /// Wall time at start plus monotonic time since: log timestamps that never go backwards.
    mono_base: (Instant, u64),
    faults: FaultConfig,
    seed: u64,
    fault_rng: StdRng,
    pub log: Vec<LogEntry>,
    /// Request bodies and queries of non-OAuth calls, for contract tests (`GET /_sandbox/captured`), as
    /// compact JSON (a parsed `Value` of a 10,000-id mapping is ~10x its text).
    pub captured: Vec<String>,
    clock_offset_ms: i64,
    request_counter: u64,
}

impl State {
    pub fn new(
        qps: u32,
        match_rate: f64,
        rules: Rules,
        default_app: AppSpec,
        faults: FaultConfig,
        seed: u64,
    ) -> Self {
        let mut apps = HashMap::new();
        apps.insert(default_app.app_id.clone(), default_app.clone());
        let fault_rng = StdRng::seed_from_u64(faults.seed.unwrap_or(seed));
        State {
            qps,
            match_rate,
            rules,
            default_app,
            apps,
            consent_deny: false,
            auth_codes: HashMap::new(),
            tokens: HashMap::new(),
            files: HashMap::new(),
            audiences: BTreeMap::new(),
            next_audience: 1,
            windows: limits::Windows::default(),
            mono_base: (Instant::now(), wall_ms()),
            faults,
            seed,
            fault_rng,
            log: Vec::new(),
            captured: Vec::new(),
            clock_offset_ms: 0,
            request_counter: 0,
        }
    }

    /// Clears audiences, tokens, files, faults and the log; keeps the default app (and drops other apps)
    /// and the rules.
    pub fn reset(&mut self) {
        // Faults are cleared too, including the start-up ones (CLI flags): a reset is a clean slate.
        *self = State::new(
            self.qps,
            self.match_rate,
            self.rules.clone(),
            self.default_app.clone(),
            FaultConfig::default(),
            self.seed,
        );
    }

    /// Logical time (ms since epoch): wall clock plus the offset set by `/_sandbox/clock`.
    pub fn now_ms(&self) -> i64 {
        wall_ms() as i64 + self.clock_offset_ms
    }

    pub fn advance_clock(&mut self, ms: i64) {
        self.clock_offset_ms += ms;
    }

    pub fn next_request_id(&mut self) -> String {
        self.request_counter += 1;
        let t = DateTime::<Utc>::from_timestamp_millis(self.now_ms()).unwrap_or_default();
        format!("{}{:012X}", t.format("%Y%m%d%H%M%S"), self.request_counter)
    }

    /// Milliseconds since the epoch for an instant, on a monotonic clock.
    pub fn ts_ms(&self, at: Instant) -> u64 {
        self.mono_base.1 + at.saturating_duration_since(self.mono_base.0).as_millis() as u64
    }

    pub fn register_app(&mut self, app: AppSpec) {
        self.apps.insert(app.app_id.clone(), app);
    }

    fn new_audience_id(&mut self) -> String {
        let id = format!("{}", 7_400_000_000_000_000_000u64 + self.next_audience);
        self.next_audience += 1;
        id
    }

    fn advertiser_audience_count(&self, advertiser_id: &str) -> usize {
        self.audiences
            .values()
            .filter(|a| a.advertiser_id == advertiser_id)
            .count()
    }

    fn check_audience_room(&self, advertiser_id: &str) -> Result<(), Reject> {
        if self.advertiser_audience_count(advertiser_id) >= MAX_AUDIENCES {
            return Err(reject(
                codes::NOT_EDITABLE,
                format!(
                    "The number of audiences has reached the limit of {MAX_AUDIENCES} per advertiser"
                ),
            ));
        }
        Ok(())
    }

    pub fn matched(&self, members: &Members) -> usize {
        members.matched(self.match_rate)
    }

    /// When the audience expires (12 months after its last edit by default).
    fn expires_at(&self, a: &Audience) -> i64 {
        if self.rules.audience_ttl_ms <= 0 {
            // Rule off: show TikTok's nominal 12 months but never act on it.
            return a.modify_ms + 365 * 86_400_000;
        }
        a.modify_ms + self.rules.audience_ttl_ms
    }

    fn is_expired(&self, a: &Audience) -> bool {
        self.rules.audience_ttl_ms > 0 && self.now_ms() >= self.expires_at(a)
    }

    fn is_processing(&self, a: &Audience) -> bool {
        self.now_ms() < a.processing_until_ms
    }

    /// `GET /_sandbox/audiences/{id}` object.
    pub fn inspect(&self, a: &Audience) -> Value {
        let w = a.hex_width();
        let members: Vec<String> = a.members.iter().map(|d| digest::encode(d, w)).collect();
        json!({ "audience": self.details(a), "members": members })
    }
}

pub fn fmt_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill(&mut b[..]);
    hex::encode(b)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_match_exactly_or_by_wildcard_prefix() {
        let a = AppSpec {
            app_id: "a".into(),
            secret: "s".into(),
            redirect_uris: vec!["http://127.0.0.1:*".into(), "https://app.example/cb".into()],
            advertisers: vec![],
            scopes: vec![],
            streaming_allowed: false,
            advertiser_get_scope: None,
        };
        assert!(a.accepts_redirect("http://127.0.0.1:8080/cb"));
        assert!(a.accepts_redirect("https://app.example/cb"));
        assert!(!a.accepts_redirect("https://app.example/cb/other"));
        assert!(!a.accepts_redirect("http://127.0.0.2:80/"));
        assert!(!a.accepts_redirect("http://localhost:80/"));
    }

    #[test]
    fn batch_identity_ignores_order() {
        let a = vec!["b".to_string(), "a".to_string()];
        let b = vec!["a".to_string(), "b".to_string()];
        assert_eq!(ids_sha256(&a), ids_sha256(&b));
        assert_ne!(ids_sha256(&a), ids_sha256(&a[..1]));
        // The empty batch has the SHA-256 of nothing.
        assert_eq!(
            ids_sha256(&[]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn matching_is_stable_and_follows_the_rate() {
        let d = "ff".repeat(32);
        assert!(!digest_matches(&d, 0.7));
        assert!(digest_matches(&"00".repeat(32), 0.01));
        assert!(!digest_matches(&"00".repeat(32), 0.0));
        assert!(digest_matches(&d, 1.0));
    }
}

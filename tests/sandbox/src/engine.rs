//! The sandbox's model of TikTok: apps, consent, tokens, uploaded files, audiences, limits, faults and the
//! request log. Everything here is synchronous and runs under one mutex; the HTTP layer (`http.rs`) parses
//! requests, asks this module what TikTok would do, and writes the answer.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

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
    pub const TOKEN_EMPTY: i64 = 40104;
    pub const TOKEN_INVALID: i64 = 40105;
    pub const TOKEN_ADVERTISER: i64 = 40106;
    pub const AUTH_CODE_INVALID: i64 = 40110;
    pub const FILE_SIGNATURE: i64 = 40900;
    pub const FILE_EMPTY: i64 = 40901;
    pub const FILE_FOREIGN: i64 = 40905;
    pub const FILE_SUFFIX: i64 = 40908;
    pub const FILE_CALCULATE_TYPE: i64 = 40915;
}

/// Scope ids granted at consent (TikTok's "Audience Management": 30 read, 31 create/update).
pub const SCOPE_AUDIENCE_READ: i64 = 30;
pub const SCOPE_AUDIENCE_WRITE: i64 = 31;

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

pub const TYPE_CUSTOMER_FILE: &str = "Customer File";
pub const TYPE_PARTNER: &str = "Partner";

/// `calculate_type` values accepted by `file/upload/` (TikTok's DmpCalculateType enum).
pub const UPLOAD_CALCULATE_TYPES: &[&str] = &[
    "EMAIL_SHA256",
    "FIRST_MD5",
    "FIRST_SHA256",
    "GAID_MD5",
    "GAID_SHA256",
    "IDFA_MD5",
    "IDFA_SHA256",
    "MAID_MD5",
    "MAID_SHA256",
    "MULTIPLE_TYPES",
    "PHONE_SHA256",
];
/// `calculate_type` values accepted by `create/` (TikTok's CalculateType enum).
pub const CREATE_CALCULATE_TYPES: &[&str] = &[
    "EMAIL_SHA256",
    "FIRST_MD5",
    "FIRST_SHA256",
    "GAID_MD5",
    "GAID_SHA256",
    "IDFA_MD5",
    "IDFA_SHA256",
    "MULTIPLE_TYPES",
    "PHONE_SHA256",
];
/// `id_schema` values of `segment/mapping/`.
pub const MAPPING_ID_SCHEMAS: &[&str] =
    &["EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "AAID_SHA256"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdvertiserSpec {
    pub advertiser_id: String,
    pub advertiser_name: String,
}

/// A developer app registered with the sandbox (`POST /_sandbox/apps`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppSpec {
    pub app_id: String,
    pub secret: String,
    pub redirect_uris: Vec<String>,
    pub advertisers: Vec<AdvertiserSpec>,
    pub scopes: Vec<i64>,
}

impl AppSpec {
    pub fn advertiser_ids(&self) -> Vec<String> {
        self.advertisers
            .iter()
            .map(|a| a.advertiser_id.clone())
            .collect()
    }

    /// A registered URI matches exactly, or by prefix when it ends in `*`.
    pub fn accepts_redirect(&self, uri: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|r| match r.strip_suffix('*') {
                Some(prefix) => uri.starts_with(prefix),
                None => r == uri,
            })
    }
}

/// Fault settings (`POST /_sandbox/faults`). Missing fields take their defaults (no faults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Share of requests answered with one of `codes` ∪ `http_errors` and not applied.
    pub rate: f64,
    /// Envelope codes (HTTP 200) to answer with.
    pub codes: Vec<i64>,
    /// HTTP statuses answered without an envelope (HTML body).
    pub http_errors: Vec<u16>,
    pub latency_ms: u64,
    /// Share of requests whose connection is dropped before anything is applied.
    pub drop_before_apply_rate: f64,
    /// Share of requests applied and then dropped (the "outcome unknown" case).
    pub drop_after_apply_rate: f64,
    /// Only these paths get faults (all `/open_api/` paths when absent).
    pub paths: Option<Vec<String>>,
    pub seed: Option<u64>,
}

impl FaultConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, r) in [
            ("rate", self.rate),
            ("drop_before_apply_rate", self.drop_before_apply_rate),
            ("drop_after_apply_rate", self.drop_after_apply_rate),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("{name} must be within [0, 1]"));
            }
        }
        if self.rate > 0.0 && self.codes.is_empty() && self.http_errors.is_empty() {
            return Err("rate > 0 needs at least one of codes or http_errors".into());
        }
        if let Some(s) = self.http_errors.iter().find(|s| !(400..600).contains(*s)) {
            return Err(format!("http error {s} is not a 4xx/5xx status"));
        }
        Ok(())
    }
}

/// One line of `GET /_sandbox/requests`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub ts_ms: u64,
    pub method: String,
    pub path: String,
    pub app_id: Option<String>,
    pub advertiser_id: Option<String>,
    pub audience_id: Option<String>,
    pub action: Option<String>,
    pub ids: usize,
    pub ids_sha256: String,
    pub file_paths: Vec<String>,
    pub http_status: Option<u16>,
    pub code: Option<i64>,
    pub fault: Option<String>,
    pub applied: bool,
}

/// The "batch identity" of a request: SHA-256 hex over its ids, sorted, each followed by `\n`.
pub fn ids_sha256(ids: &[String]) -> String {
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    for id in sorted {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Whether a digest "matches" a TikTok user: decided by the digest's own bytes so it is stable across runs.
pub fn digest_matches(digest: &str, match_rate: f64) -> bool {
    let bytes: Vec<u8> = match hex::decode(digest) {
        Ok(b) if b.len() >= 4 => b,
        _ => Sha256::digest(digest.as_bytes()).to_vec(),
    };
    let v = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    (v as f64) < match_rate * 4_294_967_296.0
}

/// Whether a line fits a `calculate_type`: 64 lowercase hex for `*_SHA256`, 32 for `*_MD5`.
pub fn fits_calculate_type(line: &str, calculate_type: &str) -> bool {
    let want = if calculate_type.ends_with("_SHA256") {
        64
    } else if calculate_type.ends_with("_MD5") {
        32
    } else {
        return false;
    };
    line.len() == want
        && line
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

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
pub struct UploadedFile {
    pub advertiser_id: String,
    pub calculate_type: String,
    pub digests: Vec<String>,
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
    pub members: BTreeSet<String>,
    create_ms: i64,
    modify_ms: i64,
    history: Vec<HistoryItem>,
    day: Option<NaiveDate>,
    day_calls: u32,
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
}

type Reject = (i64, String);

fn reject(code: i64, msg: impl Into<String>) -> Reject {
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
    pub default_app: AppSpec,
    pub apps: HashMap<String, AppSpec>,
    pub consent_deny: bool,
    auth_codes: HashMap<String, AuthCode>,
    pub tokens: HashMap<String, Token>,
    pub files: HashMap<String, UploadedFile>,
    pub audiences: BTreeMap<String, Audience>,
    next_audience: u64,
    /// Admitted requests per app, as `ts_ms` values (the same clock as the log, so the log shows exactly
    /// what the limiter saw).
    windows: HashMap<String, VecDeque<u64>>,
    /// Wall time at start plus monotonic time since: log timestamps that never go backwards.
    mono_base: (Instant, u64),
    faults: FaultConfig,
    seed: u64,
    fault_rng: StdRng,
    pub log: Vec<LogEntry>,
    /// Request bodies and queries of non-OAuth calls, for contract tests (`GET /_sandbox/captured`).
    pub captured: Vec<Value>,
    clock_offset_ms: i64,
    request_counter: u64,
}

impl State {
    pub fn new(
        qps: u32,
        match_rate: f64,
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
            default_app,
            apps,
            consent_deny: false,
            auth_codes: HashMap::new(),
            tokens: HashMap::new(),
            files: HashMap::new(),
            audiences: BTreeMap::new(),
            next_audience: 1,
            windows: HashMap::new(),
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

    /// Clears audiences, tokens, files, faults and the log; keeps the default app (and drops other apps).
    pub fn reset(&mut self) {
        // Faults are cleared too, including the start-up ones (CLI flags): a reset is a clean slate.
        *self = State::new(
            self.qps,
            self.match_rate,
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

    pub fn set_faults(&mut self, faults: FaultConfig) {
        self.fault_rng = StdRng::seed_from_u64(faults.seed.unwrap_or(self.seed));
        self.faults = faults;
    }

    pub fn faults(&self) -> &FaultConfig {
        &self.faults
    }

    /// Milliseconds since the epoch for an instant, on a monotonic clock.
    pub fn ts_ms(&self, at: Instant) -> u64 {
        self.mono_base.1 + at.saturating_duration_since(self.mono_base.0).as_millis() as u64
    }

    /// Sliding 1,000 ms window per app: admits the request (and counts it) or says no.
    pub fn admit(&mut self, app_id: &str, ts_ms: u64) -> bool {
        let qps = self.qps as usize;
        let w = self.windows.entry(app_id.to_string()).or_default();
        while w.front().is_some_and(|front| front + 1000 <= ts_ms) {
            w.pop_front();
        }
        if w.len() >= qps {
            return false;
        }
        w.push_back(ts_ms);
        true
    }

    pub fn roll_fault(&mut self, path: &str) -> FaultDecision {
        let f = &self.faults;
        if let Some(paths) = &f.paths
            && !paths.iter().any(|p| p == path)
        {
            return FaultDecision::None;
        }
        let (rate, before, after) = (f.rate, f.drop_before_apply_rate, f.drop_after_apply_rate);
        let choices = f.codes.len() + f.http_errors.len();
        if rate > 0.0 && choices > 0 && self.fault_rng.random::<f64>() < rate {
            let i = self.fault_rng.random_range(0..choices);
            return if i < self.faults.codes.len() {
                FaultDecision::Code(self.faults.codes[i])
            } else {
                FaultDecision::Http(self.faults.http_errors[i - self.faults.codes.len()])
            };
        }
        if before > 0.0 && self.fault_rng.random::<f64>() < before {
            return FaultDecision::DropBefore;
        }
        if after > 0.0 && self.fault_rng.random::<f64>() < after {
            return FaultDecision::DropAfter;
        }
        FaultDecision::None
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.faults.latency_ms)
    }

    pub fn register_app(&mut self, app: AppSpec) {
        self.apps.insert(app.app_id.clone(), app);
    }

    pub fn revoke_app_tokens(&mut self, app_id: &str) -> usize {
        let mut n = 0;
        for t in self
            .tokens
            .values_mut()
            .filter(|t| t.app_id == app_id && !t.revoked)
        {
            t.revoked = true;
            n += 1;
        }
        n
    }

    // ---- consent and OAuth ----

    /// `GET /portal/auth`: `Ok(Some(code))` approve, `Ok(None)` deny, `Err` bad request (400).
    pub fn consent(&mut self, app_id: &str, redirect_uri: &str) -> Result<Option<String>, String> {
        let app = self
            .apps
            .get(app_id)
            .ok_or_else(|| format!("unknown app_id {app_id}"))?;
        if !app.accepts_redirect(redirect_uri) {
            return Err("redirect_uri is not registered for this app".into());
        }
        if self.consent_deny {
            return Ok(None);
        }
        let code = random_hex(20);
        let expires_at_ms = self.now_ms() + AUTH_CODE_TTL_MS;
        self.auth_codes.insert(
            code.clone(),
            AuthCode {
                app_id: app_id.to_string(),
                expires_at_ms,
                used: false,
            },
        );
        Ok(Some(code))
    }

    pub fn exchange(&mut self, body: &Map<String, Value>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_fields(body, &["app_id", "secret", "auth_code"])?;
            let app_id = req_str(body, "app_id")?;
            let secret = req_str(body, "secret")?;
            let code = req_str(body, "auth_code")?;
            let app = self.check_app(&app_id, &secret)?.clone();
            let now = self.now_ms();
            let Some(ac) = self.auth_codes.get_mut(&code) else {
                return Err(reject(codes::AUTH_CODE_INVALID, "auth_code is invalid"));
            };
            if ac.app_id != app_id {
                return Err(reject(
                    codes::AUTH_CODE_INVALID,
                    "auth_code was issued to another app",
                ));
            }
            if ac.used {
                return Err(reject(
                    codes::AUTH_CODE_INVALID,
                    "auth_code has already been used",
                ));
            }
            if now >= ac.expires_at_ms {
                return Err(reject(codes::AUTH_CODE_INVALID, "auth_code has expired"));
            }
            ac.used = true;
            let token = random_hex(40);
            let advertiser_ids = app.advertiser_ids();
            self.tokens.insert(
                token.clone(),
                Token {
                    app_id: app.app_id.clone(),
                    advertiser_ids: advertiser_ids.clone(),
                    scopes: app.scopes.clone(),
                    revoked: false,
                },
            );
            Ok(Outcome::ok(json!({
                "access_token": token,
                "advertiser_ids": advertiser_ids,
                "scope": app.scopes,
            })))
        })();
        r.unwrap_or_else(Outcome::from)
    }

    pub fn revoke_token(&mut self, body: &Map<String, Value>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_fields(body, &["app_id", "secret", "access_token"])?;
            let app_id = req_str(body, "app_id")?;
            let secret = req_str(body, "secret")?;
            let token = req_str(body, "access_token")?;
            self.check_app(&app_id, &secret)?;
            match self.tokens.get_mut(&token) {
                Some(t) if t.app_id == app_id && !t.revoked => {
                    t.revoked = true;
                    Ok(Outcome::ok(json!({})))
                }
                _ => Err(reject(
                    codes::TOKEN_INVALID,
                    "access_token is invalid or already revoked",
                )),
            }
        })();
        r.unwrap_or_else(Outcome::from)
    }

    fn check_app(&self, app_id: &str, secret: &str) -> Result<&AppSpec, Reject> {
        match self.apps.get(app_id) {
            Some(app) if app.secret == secret => Ok(app),
            Some(_) => Err(reject(
                codes::INVALID_PARAMS,
                "secret is not correct for this app_id",
            )),
            None => Err(reject(
                codes::INVALID_PARAMS,
                format!("app_id {app_id} does not exist"),
            )),
        }
    }

    /// Checks the `Access-Token` for the advertisers and scope a call needs.
    pub fn authorize(
        &self,
        token: Option<&str>,
        advertisers: &[String],
        scope: Option<i64>,
    ) -> Result<Token, Reject> {
        let token = match token {
            Some(t) if !t.is_empty() => t,
            _ => {
                return Err(reject(
                    codes::TOKEN_EMPTY,
                    "Access token is null, please check your header",
                ));
            }
        };
        let t = match self.tokens.get(token) {
            Some(t) if !t.revoked => t,
            Some(_) => {
                return Err(reject(
                    codes::TOKEN_INVALID,
                    "The access token has been revoked",
                ));
            }
            None => return Err(reject(codes::TOKEN_INVALID, "The access token is invalid")),
        };
        for a in advertisers {
            if !t.advertiser_ids.contains(a) {
                return Err(reject(
                    codes::TOKEN_ADVERTISER,
                    format!("The access token is not valid for advertiser {a}"),
                ));
            }
        }
        if let Some(s) = scope
            && !t.scopes.contains(&s)
        {
            return Err(reject(
                codes::PERMISSION,
                format!("No permission: scope {s} was not granted"),
            ));
        }
        Ok(t.clone())
    }

    pub fn token_app(&self, token: &str) -> Option<String> {
        self.tokens.get(token).map(|t| t.app_id.clone())
    }

    pub fn authorized_advertisers(
        &self,
        token: Option<&str>,
        query: &HashMap<String, String>,
    ) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_query(query, &["app_id", "secret"])?;
            let app_id = query
                .get("app_id")
                .ok_or_else(|| reject(codes::INVALID_PARAMS, "app_id is required"))?;
            let secret = query
                .get("secret")
                .ok_or_else(|| reject(codes::INVALID_PARAMS, "secret is required"))?;
            let app = self.check_app(app_id, secret)?.clone();
            let t = self.authorize(token, &[], None)?;
            if t.app_id != app.app_id {
                return Err(reject(
                    codes::TOKEN_INVALID,
                    "The access token belongs to another app",
                ));
            }
            let list: Vec<Value> = app
                .advertisers
                .iter()
                .filter(|a| t.advertiser_ids.contains(&a.advertiser_id))
                .map(|a| json!({"advertiser_id": a.advertiser_id, "advertiser_name": a.advertiser_name}))
                .collect();
            Ok(Outcome::ok(json!({ "list": list })))
        })();
        r.unwrap_or_else(Outcome::from)
    }

    pub fn user_info(&self, token: Option<&str>) -> Outcome {
        match self.authorize(token, &[], None) {
            Ok(t) => Outcome::ok(json!({
                "core_user_id": format!("7{:018}", fnv(&t.app_id) % 1_000_000_000_000_000_000),
                "display_name": "Sandbox User",
                "email": "sandbox-user@example.invalid",
                "avatar_url": "",
                "create_time": 1_700_000_000i64,
            })),
            Err(r) => r.into(),
        }
    }

    pub fn advertiser_info(&self, token: Option<&str>, query: &HashMap<String, String>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_query(query, &["advertiser_ids", "fields"])?;
            let ids = query_str_array(query, "advertiser_ids", true, 1, 100)?;
            if let Some(fields) = query.get("fields") {
                parse_str_array(fields, "fields")?;
            }
            let t = self.authorize(token, &ids, None)?;
            let app = self.apps.get(&t.app_id);
            let list: Vec<Value> = ids
                .iter()
                .map(|id| {
                    let name = app
                        .and_then(|a| a.advertisers.iter().find(|x| &x.advertiser_id == id))
                        .map(|a| a.advertiser_name.clone())
                        .unwrap_or_default();
                    json!({
                        "advertiser_id": id,
                        "name": name,
                        "status": "STATUS_ENABLE",
                        "role": "ROLE_ADVERTISER",
                        "currency": "USD",
                        "timezone": "Etc/GMT",
                        "country": "US",
                        "create_time": 1_700_000_000i64,
                    })
                })
                .collect();
            Ok(Outcome::ok(json!({ "list": list })))
        })();
        r.unwrap_or_else(Outcome::from)
    }

    // ---- customer files ----

    pub fn upload(&mut self, token: Option<&str>, form: &UploadForm) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            if let Some(f) = form.fields.keys().find(|k| {
                !["advertiser_id", "file_signature", "calculate_type", "name"].contains(&k.as_str())
            }) {
                return Err(reject(codes::INVALID_PARAMS, format!("unknown field {f}")));
            }
            let advertiser_id = form_field(form, "advertiser_id")?;
            self.authorize(
                token,
                std::slice::from_ref(&advertiser_id),
                Some(SCOPE_AUDIENCE_WRITE),
            )?;
            let signature = form_field(form, "file_signature")?;
            let calculate_type = form_field(form, "calculate_type")?;
            let Some(file) = &form.file else {
                return Err(reject(codes::INVALID_PARAMS, "file is required"));
            };
            if !UPLOAD_CALCULATE_TYPES.contains(&calculate_type.as_str()) {
                return Err(reject(
                    codes::INVALID_PARAMS,
                    format!("calculate_type {calculate_type} is not a valid enum value"),
                ));
            }
            let lower = file.file_name.to_ascii_lowercase();
            if !(lower.ends_with(".csv") || lower.ends_with(".txt")) {
                return Err(reject(
                    codes::FILE_SUFFIX,
                    "file suffix must be .csv or .txt",
                ));
            }
            let md5 = {
                use md5::Digest as _;
                hex::encode(md5::Md5::digest(&file.bytes))
            };
            if !md5.eq_ignore_ascii_case(signature.trim()) {
                return Err(reject(
                    codes::FILE_SIGNATURE,
                    "file_signature does not match the file's MD5",
                ));
            }
            if calculate_type == "MULTIPLE_TYPES" {
                return Err(reject(
                    codes::FILE_CALCULATE_TYPE,
                    "MULTIPLE_TYPES files are not supported by the sandbox",
                ));
            }
            let digests = file_lines(&file.bytes)
                .map_err(|_| reject(codes::FILE_CALCULATE_TYPE, "file is not UTF-8 text"))?;
            if digests.is_empty() {
                return Err(reject(codes::FILE_EMPTY, "file is empty"));
            }
            if let Some((n, _)) = digests
                .iter()
                .enumerate()
                .find(|(_, l)| !fits_calculate_type(l, &calculate_type))
            {
                return Err(reject(
                    codes::FILE_CALCULATE_TYPE,
                    format!(
                        "line {} does not fit calculate_type {calculate_type}",
                        n + 1
                    ),
                ));
            }
            let file_path = random_hex(8);
            self.files.insert(
                file_path.clone(),
                UploadedFile {
                    advertiser_id,
                    calculate_type,
                    digests,
                },
            );
            Ok(Outcome::ok(json!({ "file_path": file_path })))
        })();
        r.unwrap_or_else(Outcome::from)
    }

    /// Resolves `file_paths` for an advertiser and a calculate_type into the union of their digests.
    fn resolve_files(
        &self,
        advertiser_id: &str,
        calculate_type: &str,
        paths: &[String],
    ) -> Result<BTreeSet<String>, Reject> {
        let mut out = BTreeSet::new();
        for p in paths {
            let Some(f) = self.files.get(p) else {
                return Err(reject(
                    codes::INVALID_PARAMS,
                    format!("file_path {p} does not exist"),
                ));
            };
            if f.advertiser_id != advertiser_id {
                return Err(reject(
                    codes::FILE_FOREIGN,
                    format!("file_path {p} belongs to another advertiser"),
                ));
            }
            if f.calculate_type != calculate_type {
                return Err(reject(
                    codes::FILE_CALCULATE_TYPE,
                    format!(
                        "file_path {p} has calculate_type {} but {calculate_type} is required",
                        f.calculate_type
                    ),
                ));
            }
            out.extend(f.digests.iter().cloned());
        }
        Ok(out)
    }

    /// All digests in the given files (for the log's batch identity).
    pub fn file_digests(&self, paths: &[String]) -> Vec<String> {
        let set: BTreeSet<&String> = paths
            .iter()
            .filter_map(|p| self.files.get(p))
            .flat_map(|f| f.digests.iter())
            .collect();
        set.into_iter().cloned().collect()
    }

    pub fn matched(&self, members: &BTreeSet<String>) -> usize {
        members
            .iter()
            .filter(|d| digest_matches(d, self.match_rate))
            .count()
    }

    fn advertiser_audience_count(&self, advertiser_id: &str) -> usize {
        self.audiences
            .values()
            .filter(|a| a.advertiser_id == advertiser_id)
            .count()
    }

    fn new_audience_id(&mut self) -> String {
        let id = format!("{}", 7_400_000_000_000_000_000u64 + self.next_audience);
        self.next_audience += 1;
        id
    }

    /// Counts one customer-file create/update call against the audience's daily budget.
    fn take_daily_call(&mut self, id: &str) -> Result<(), Reject> {
        let today = DateTime::<Utc>::from_timestamp_millis(self.now_ms())
            .unwrap_or_default()
            .date_naive();
        let Some(a) = self.audiences.get_mut(id) else {
            return Err(reject(codes::NOT_FOUND, "audience does not exist"));
        };
        if a.day != Some(today) {
            a.day = Some(today);
            a.day_calls = 0;
        }
        if a.day_calls >= DAILY_AUDIENCE_CALLS {
            return Err(reject(
                codes::AUDIENCE_DAILY_LIMIT,
                format!("audience {id} reached its limit of {DAILY_AUDIENCE_CALLS} calls per day"),
            ));
        }
        a.day_calls += 1;
        Ok(())
    }

    fn daily_calls_left(&self, id: &str) -> bool {
        let today = DateTime::<Utc>::from_timestamp_millis(self.now_ms())
            .unwrap_or_default()
            .date_naive();
        self.audiences
            .get(id)
            .is_none_or(|a| a.day != Some(today) || a.day_calls < DAILY_AUDIENCE_CALLS)
    }

    pub fn create(&mut self, token: Option<&str>, body: &Map<String, Value>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_fields(
                body,
                &[
                    "advertiser_id",
                    "custom_audience_name",
                    "calculate_type",
                    "file_paths",
                    "audience_sub_type",
                    "retention_in_days",
                    "audience_enhancement",
                ],
            )?;
            let advertiser_id = req_str(body, "advertiser_id")?;
            self.authorize(
                token,
                std::slice::from_ref(&advertiser_id),
                Some(SCOPE_AUDIENCE_WRITE),
            )?;
            let name = req_str(body, "custom_audience_name")?;
            check_len("custom_audience_name", &name, 1, 128)?;
            let calculate_type = req_str(body, "calculate_type")?;
            if !CREATE_CALCULATE_TYPES.contains(&calculate_type.as_str()) {
                return Err(reject(
                    codes::INVALID_PARAMS,
                    format!("calculate_type {calculate_type} is not a valid enum value"),
                ));
            }
            let paths = req_str_array(body, "file_paths", 1, 500)?;
            check_file_paths(&paths)?;
            if let Some(v) = body.get("audience_sub_type") {
                let s = v.as_str().ok_or_else(|| {
                    reject(codes::INVALID_PARAMS, "audience_sub_type must be a string")
                })?;
                if !["NORMAL", "REACH_FREQUENCY"].contains(&s) {
                    return Err(reject(
                        codes::INVALID_PARAMS,
                        "audience_sub_type is not a valid enum value",
                    ));
                }
            }
            if let Some(v) = body.get("retention_in_days") {
                match v.as_i64() {
                    Some(d) if (1..=365).contains(&d) => {}
                    _ => {
                        return Err(reject(
                            codes::INVALID_PARAMS,
                            "retention_in_days must be an integer in [1, 365]",
                        ));
                    }
                }
            }
            if let Some(v) = body.get("audience_enhancement")
                && !v.is_boolean()
            {
                return Err(reject(
                    codes::INVALID_PARAMS,
                    "audience_enhancement must be a boolean",
                ));
            }
            let members = self.resolve_files(&advertiser_id, &calculate_type, &paths)?;
            if self.advertiser_audience_count(&advertiser_id) >= MAX_AUDIENCES {
                return Err(reject(
                    codes::NOT_EDITABLE,
                    format!(
                        "The number of audiences has reached the limit of {MAX_AUDIENCES} per advertiser"
                    ),
                ));
            }
            let id = self.new_audience_id();
            let now = self.now_ms();
            let n = members.len();
            self.audiences.insert(
                id.clone(),
                Audience {
                    id: id.clone(),
                    advertiser_id,
                    name,
                    kind: TYPE_CUSTOMER_FILE,
                    calculate_type: Some(calculate_type),
                    members,
                    create_ms: now,
                    modify_ms: now,
                    history: vec![HistoryItem {
                        action: "CREATE".into(),
                        action_detail: format!("created from {} file(s), {n} ids", paths.len()),
                        msg: "".into(),
                        opt_ms: now,
                    }],
                    day: None,
                    day_calls: 0,
                },
            );
            self.take_daily_call(&id)?;
            let mut o = Outcome::ok(json!({ "custom_audience_id": id }));
            o.audience_id = Some(id);
            Ok(o)
        })();
        r.unwrap_or_else(Outcome::from)
    }

    pub fn update(&mut self, token: Option<&str>, body: &Map<String, Value>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_fields(
                body,
                &[
                    "advertiser_id",
                    "custom_audience_id",
                    "custom_audience_name",
                    "audience_sub_type",
                    "file_paths",
                    "action",
                    "audience_enhancement",
                    "context_info",
                ],
            )?;
            let advertiser_id = req_str(body, "advertiser_id")?;
            self.authorize(
                token,
                std::slice::from_ref(&advertiser_id),
                Some(SCOPE_AUDIENCE_WRITE),
            )?;
            let id = req_str(body, "custom_audience_id")?;
            let new_name = opt_str(body, "custom_audience_name")?;
            if let Some(n) = &new_name {
                check_len("custom_audience_name", n, 1, 128)?;
            }
            let paths = match body.get("file_paths") {
                Some(_) => Some(req_str_array(body, "file_paths", 1, 500)?),
                None => None,
            };
            let action = opt_str(body, "action")?;
            if let Some(a) = &action
                && !["APPEND", "REMOVE", "REPLACE"].contains(&a.as_str())
            {
                return Err(reject(
                    codes::INVALID_PARAMS,
                    format!("action {a} is not a valid enum value"),
                ));
            }
            if new_name.is_none() && paths.is_none() {
                return Err(reject(
                    codes::INVALID_PARAMS,
                    "pass custom_audience_name or file_paths",
                ));
            }
            let audience = match self.audiences.get(&id) {
                Some(a) if a.advertiser_id == advertiser_id => a.clone(),
                _ => {
                    return Err(reject(
                        codes::NOT_FOUND,
                        format!("audience {id} does not exist"),
                    ));
                }
            };
            if audience.kind != TYPE_CUSTOMER_FILE {
                return Err(reject(
                    codes::NOT_EDITABLE,
                    "only customer file audiences can be updated here",
                ));
            }
            if !self.daily_calls_left(&id) {
                return Err(reject(
                    codes::AUDIENCE_DAILY_LIMIT,
                    format!(
                        "audience {id} reached its limit of {DAILY_AUDIENCE_CALLS} calls per day"
                    ),
                ));
            }
            let mut next = audience.members.clone();
            // TikTok's documented default when file_paths come without an action.
            let action = action.unwrap_or_else(|| "REPLACE".to_string());
            if let Some(paths) = &paths {
                check_file_paths(paths)?;
                let calc = audience.calculate_type.clone().unwrap_or_default();
                let incoming = self.resolve_files(&advertiser_id, &calc, paths)?;
                next = match action.as_str() {
                    "APPEND" => next.union(&incoming).cloned().collect(),
                    "REMOVE" => next.difference(&incoming).cloned().collect(),
                    _ => incoming,
                };
                let matched = self.matched(&next);
                if matched < MIN_MATCHED {
                    return Err(reject(
                        codes::NOT_EDITABLE,
                        format!(
                            "The audience size would be {matched} matched users after {action}; \
                             it must be at least {MIN_MATCHED}"
                        ),
                    ));
                }
            }
            self.take_daily_call(&id)?;
            let now = self.now_ms();
            let Some(a) = self.audiences.get_mut(&id) else {
                return Err(reject(codes::NOT_FOUND, "audience does not exist"));
            };
            if let Some(n) = new_name {
                a.name = n;
            }
            let detail = if paths.is_some() {
                let d = format!("{action}: {} -> {} ids", a.members.len(), next.len());
                a.members = next;
                d
            } else {
                "renamed".to_string()
            };
            a.modify_ms = now;
            a.history.push(HistoryItem {
                action: if paths.is_some() {
                    action
                } else {
                    "RENAME".into()
                },
                action_detail: detail,
                msg: "".into(),
                opt_ms: now,
            });
            let mut o = Outcome::ok(json!({}));
            o.audience_id = Some(id);
            Ok(o)
        })();
        r.unwrap_or_else(Outcome::from)
    }

    /// The `audience_details` object of `get/` (and each item of `list/`).
    pub fn details(&self, a: &Audience) -> Value {
        let matched = self.matched(&a.members);
        let valid = matched >= MIN_MATCHED;
        let expires = a.modify_ms.max(a.create_ms) + 365 * 86_400_000;
        json!({
            "audience_id": a.id,
            "name": a.name,
            "type": a.kind,
            "audience_sub_type": "NORMAL",
            "calculate_type": a.calculate_type,
            "cover_num": if valid { matched } else { 0 },
            "is_valid": valid,
            "is_expiring": expires - self.now_ms() < 60 * 86_400_000,
            "is_creator": true,
            "is_auto_refresh": false,
            "shared": false,
            "audience_enhancement": false,
            "owner_id": a.advertiser_id,
            "msg": if valid { String::new() } else { format!("Audience needs at least {MIN_MATCHED} matched users") },
            "error_msg": "",
            "rule": "",
            "lookalike_spec": null,
            "create_time": fmt_time(a.create_ms),
            "expired_time": fmt_time(expires),
        })
    }

    fn history(&self, a: &Audience, size: usize) -> Vec<Value> {
        a.history
            .iter()
            .rev()
            .take(size)
            .map(|h| {
                json!({
                    "action": h.action,
                    "action_detail": h.action_detail,
                    "editor": "API",
                    "msg": h.msg,
                    "opt_time": fmt_time(h.opt_ms),
                })
            })
            .collect()
    }

    pub fn get(&self, token: Option<&str>, query: &HashMap<String, String>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_query(
                query,
                &["advertiser_id", "custom_audience_ids", "history_size"],
            )?;
            let advertiser_id = query
                .get("advertiser_id")
                .cloned()
                .ok_or_else(|| reject(codes::INVALID_PARAMS, "advertiser_id is required"))?;
            self.authorize(
                token,
                std::slice::from_ref(&advertiser_id),
                Some(SCOPE_AUDIENCE_READ),
            )?;
            let ids = query_str_array(query, "custom_audience_ids", true, 1, 100)?;
            let history_size = match query.get("history_size") {
                Some(s) => match s.parse::<usize>() {
                    Ok(n) if (1..=100).contains(&n) => n,
                    _ => {
                        return Err(reject(
                            codes::INVALID_PARAMS,
                            "history_size must be an integer in [1, 100]",
                        ));
                    }
                },
                None => 100,
            };
            let mut list = Vec::new();
            for id in &ids {
                match self.audiences.get(id) {
                    Some(a) if a.advertiser_id == advertiser_id => list.push(json!({
                        "audience_details": self.details(a),
                        "audience_history": self.history(a, history_size),
                    })),
                    _ => {
                        return Err(reject(
                            codes::NOT_FOUND,
                            format!("audience {id} does not exist"),
                        ));
                    }
                }
            }
            Ok(Outcome::ok(json!({ "list": list })))
        })();
        r.unwrap_or_else(Outcome::from)
    }

    pub fn list(&self, token: Option<&str>, query: &HashMap<String, String>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_query(
                query,
                &["advertiser_id", "custom_audience_ids", "page", "page_size"],
            )?;
            let advertiser_id = query
                .get("advertiser_id")
                .cloned()
                .ok_or_else(|| reject(codes::INVALID_PARAMS, "advertiser_id is required"))?;
            self.authorize(
                token,
                std::slice::from_ref(&advertiser_id),
                Some(SCOPE_AUDIENCE_READ),
            )?;
            let filter = if query.contains_key("custom_audience_ids") {
                Some(query_str_array(query, "custom_audience_ids", true, 1, 100)?)
            } else {
                None
            };
            let page = query_int(query, "page", 1, 1, i64::MAX)? as usize;
            let page_size = query_int(query, "page_size", 10, 1, 100)? as usize;
            let all: Vec<&Audience> = self
                .audiences
                .values()
                .filter(|a| a.advertiser_id == advertiser_id)
                .filter(|a| filter.as_ref().is_none_or(|f| f.contains(&a.id)))
                .collect();
            let total = all.len();
            let list: Vec<Value> = all
                .iter()
                .skip((page - 1).saturating_mul(page_size))
                .take(page_size)
                .map(|a| self.details(a))
                .collect();
            Ok(Outcome::ok(json!({
                "list": list,
                "page_info": {
                    "page": page,
                    "page_size": page_size,
                    "total_number": total,
                    "total_page": total.div_ceil(page_size),
                }
            })))
        })();
        r.unwrap_or_else(Outcome::from)
    }

    pub fn delete(&mut self, token: Option<&str>, body: &Map<String, Value>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_fields(body, &["advertiser_id", "custom_audience_ids"])?;
            let advertiser_id = req_str(body, "advertiser_id")?;
            self.authorize(
                token,
                std::slice::from_ref(&advertiser_id),
                Some(SCOPE_AUDIENCE_WRITE),
            )?;
            let ids = req_str_array(body, "custom_audience_ids", 1, 100)?;
            for id in &ids {
                match self.audiences.get(id) {
                    Some(a) if a.advertiser_id == advertiser_id => {}
                    _ => {
                        return Err(reject(
                            codes::NOT_FOUND,
                            format!("audience {id} does not exist"),
                        ));
                    }
                }
            }
            for id in &ids {
                self.audiences.remove(id);
            }
            Ok(Outcome::ok(json!({})))
        })();
        r.unwrap_or_else(Outcome::from)
    }

    // ---- streaming ("segment") API ----

    pub fn segment_audience(&mut self, token: Option<&str>, body: &Map<String, Value>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_fields(
                body,
                &[
                    "advertiser_id",
                    "action",
                    "custom_audience_name",
                    "audience_id",
                ],
            )?;
            let advertiser_id = req_str(body, "advertiser_id")?;
            self.authorize(
                token,
                std::slice::from_ref(&advertiser_id),
                Some(SCOPE_AUDIENCE_WRITE),
            )?;
            let action = req_str(body, "action")?;
            match action.as_str() {
                "create" => {
                    let name = req_str(body, "custom_audience_name")?;
                    if name.is_empty() {
                        return Err(reject(
                            codes::INVALID_PARAMS,
                            "custom_audience_name must not be empty",
                        ));
                    }
                    // TikTok cuts names over 70 characters.
                    let name: String = name.chars().take(70).collect();
                    if self.advertiser_audience_count(&advertiser_id) >= MAX_AUDIENCES {
                        return Err(reject(
                            codes::NOT_EDITABLE,
                            format!(
                                "The number of audiences has reached the limit of {MAX_AUDIENCES} per advertiser"
                            ),
                        ));
                    }
                    let id = self.new_audience_id();
                    let now = self.now_ms();
                    self.audiences.insert(
                        id.clone(),
                        Audience {
                            id: id.clone(),
                            advertiser_id,
                            name,
                            kind: TYPE_PARTNER,
                            calculate_type: None,
                            members: BTreeSet::new(),
                            create_ms: now,
                            modify_ms: now,
                            history: vec![HistoryItem {
                                action: "CREATE".into(),
                                action_detail: "streaming audience created".into(),
                                msg: "".into(),
                                opt_ms: now,
                            }],
                            day: None,
                            day_calls: 0,
                        },
                    );
                    let mut o = Outcome::ok(json!({ "audience_id": id }));
                    o.audience_id = Some(id);
                    Ok(o)
                }
                "delete" => {
                    let id = req_str(body, "audience_id")?;
                    match self.audiences.get(&id) {
                        Some(a) if a.advertiser_id == advertiser_id && a.kind == TYPE_PARTNER => {}
                        _ => {
                            return Err(reject(
                                codes::NOT_FOUND,
                                format!("audience {id} does not exist"),
                            ));
                        }
                    }
                    self.audiences.remove(&id);
                    let mut o = Outcome::ok(json!({}));
                    o.audience_id = Some(id);
                    Ok(o)
                }
                other => Err(reject(
                    codes::INVALID_PARAMS,
                    format!("action {other} is not valid (create or delete)"),
                )),
            }
        })();
        r.unwrap_or_else(Outcome::from)
    }

    pub fn segment_mapping(&mut self, token: Option<&str>, body: &Map<String, Value>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_fields(
                body,
                &["advertiser_ids", "action", "id_schema", "batch_data"],
            )?;
            let advertisers = req_str_array(body, "advertiser_ids", 1, 100)?;
            self.authorize(token, &advertisers, Some(SCOPE_AUDIENCE_WRITE))?;
            let action = req_str(body, "action")?;
            if !["add", "delete"].contains(&action.as_str()) {
                return Err(reject(
                    codes::INVALID_PARAMS,
                    format!("action {action} is not valid (add or delete)"),
                ));
            }
            let schema = req_str_array(body, "id_schema", 1, MAPPING_ID_SCHEMAS.len())?;
            if let Some(s) = schema
                .iter()
                .find(|s| !MAPPING_ID_SCHEMAS.contains(&s.as_str()))
            {
                return Err(reject(
                    codes::INVALID_PARAMS,
                    format!("id_schema {s} is not valid"),
                ));
            }
            let batch = parse_batch(body, schema.len())?;
            if batch.users > MAX_MAPPING_USERS {
                return Err(reject(
                    codes::TOO_MANY_IDS,
                    format!(
                        "batch_data has {} users; at most {MAX_MAPPING_USERS} are allowed",
                        batch.users
                    ),
                ));
            }
            for (id, _) in &batch.pairs {
                if !fits_calculate_type(id, "X_SHA256") {
                    return Err(reject(
                        codes::INVALID_PARAMS,
                        "every id must be 64 lowercase hex (SHA-256)",
                    ));
                }
            }
            let mut touched = BTreeSet::new();
            for (_, auds) in &batch.pairs {
                for aud in auds {
                    match self.audiences.get(aud) {
                        Some(a) if advertisers.contains(&a.advertiser_id) => {
                            if a.kind != TYPE_PARTNER {
                                return Err(reject(
                                    codes::NOT_EDITABLE,
                                    format!("audience {aud} is not a streaming audience"),
                                ));
                            }
                        }
                        _ => {
                            return Err(reject(
                                codes::NOT_FOUND,
                                format!("audience {aud} does not exist"),
                            ));
                        }
                    }
                    touched.insert(aud.clone());
                }
            }
            let now = self.now_ms();
            for (id, auds) in &batch.pairs {
                for aud in auds {
                    if let Some(a) = self.audiences.get_mut(aud) {
                        if action == "add" {
                            a.members.insert(id.clone());
                        } else {
                            a.members.remove(id);
                        }
                    }
                }
            }
            for aud in &touched {
                if let Some(a) = self.audiences.get_mut(aud) {
                    a.modify_ms = now;
                }
            }
            Ok(Outcome::ok(json!({})))
        })();
        r.unwrap_or_else(Outcome::from)
    }

    /// `GET /_sandbox/audiences/{id}` object.
    pub fn inspect(&self, a: &Audience) -> Value {
        json!({ "audience": self.details(a), "members": a.members.iter().collect::<Vec<_>>() })
    }
}

/// A parsed `file/upload/` multipart form.
#[derive(Debug, Clone, Default)]
pub struct UploadForm {
    pub fields: BTreeMap<String, String>,
    pub file: Option<UploadedPart>,
}

#[derive(Debug, Clone)]
pub struct UploadedPart {
    pub file_name: String,
    pub bytes: bytes::Bytes,
}

/// The users of a `segment/mapping/` batch: each (id, audience_ids) pair, and the number of users.
pub struct Batch {
    pub users: usize,
    pub pairs: Vec<(String, Vec<String>)>,
}

pub fn parse_batch(body: &Map<String, Value>, schema_len: usize) -> Result<Batch, Reject> {
    let Some(Value::Array(users)) = body.get("batch_data") else {
        return Err(reject(codes::INVALID_PARAMS, "batch_data must be an array"));
    };
    let mut pairs = Vec::new();
    for user in users {
        let Value::Array(positions) = user else {
            return Err(reject(
                codes::INVALID_PARAMS,
                "each batch_data item must be an array",
            ));
        };
        if positions.len() != schema_len {
            return Err(reject(
                codes::INVALID_PARAMS,
                "each batch_data item must follow id_schema",
            ));
        }
        for p in positions {
            let Value::Object(o) = p else {
                return Err(reject(
                    codes::INVALID_PARAMS,
                    "each id position must be an object",
                ));
            };
            if o.is_empty() {
                continue;
            }
            let id = req_str(o, "id")?;
            let auds = req_str_array(o, "audience_ids", 1, 100)?;
            pairs.push((id, auds));
        }
    }
    Ok(Batch {
        users: users.len(),
        pairs,
    })
}

/// Ids a request carries, for the log (best effort: the request may be malformed).
pub fn mapping_ids(body: &Map<String, Value>) -> (Vec<String>, Option<String>) {
    let mut ids = Vec::new();
    let mut first_aud = None;
    if let Some(Value::Array(users)) = body.get("batch_data") {
        for u in users.iter().filter_map(Value::as_array) {
            for p in u.iter().filter_map(Value::as_object) {
                if let Some(id) = p.get("id").and_then(Value::as_str) {
                    ids.push(id.to_string());
                }
                if first_aud.is_none() {
                    first_aud = p
                        .get("audience_ids")
                        .and_then(Value::as_array)
                        .and_then(|a| a.first())
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
            }
        }
    }
    (ids, first_aud)
}

pub fn file_lines(bytes: &[u8]) -> Result<Vec<String>, std::str::Utf8Error> {
    let text = std::str::from_utf8(bytes)?;
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

fn form_field(form: &UploadForm, name: &str) -> Result<String, Reject> {
    form.fields
        .get(name)
        .cloned()
        .ok_or_else(|| reject(codes::INVALID_PARAMS, format!("{name} is required")))
}

fn only_fields(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), Reject> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(reject(codes::INVALID_PARAMS, format!("unknown field {k}"))),
        None => Ok(()),
    }
}

fn only_query(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), Reject> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(reject(
            codes::INVALID_PARAMS,
            format!("unknown parameter {k}"),
        )),
        None => Ok(()),
    }
}

fn req_str(body: &Map<String, Value>, name: &str) -> Result<String, Reject> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(reject(
            codes::INVALID_PARAMS,
            format!("{name} must be a string"),
        )),
        None => Err(reject(codes::INVALID_PARAMS, format!("{name} is required"))),
    }
}

fn opt_str(body: &Map<String, Value>, name: &str) -> Result<Option<String>, Reject> {
    match body.get(name) {
        None => Ok(None),
        Some(_) => req_str(body, name).map(Some),
    }
}

fn check_len(name: &str, s: &str, min: usize, max: usize) -> Result<(), Reject> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(reject(
            codes::INVALID_PARAMS,
            format!("{name} must have {min}-{max} characters"),
        ));
    }
    Ok(())
}

fn check_file_paths(paths: &[String]) -> Result<(), Reject> {
    match paths.iter().find(|p| p.chars().count() != 16) {
        Some(p) => Err(reject(
            codes::INVALID_PARAMS,
            format!("file_path {p} must have 16 characters"),
        )),
        None => Ok(()),
    }
}

fn str_array(v: &Value, name: &str, min: usize, max: usize) -> Result<Vec<String>, Reject> {
    let Value::Array(items) = v else {
        return Err(reject(
            codes::INVALID_PARAMS,
            format!("{name} must be an array of strings"),
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for i in items {
        match i {
            Value::String(s) => out.push(s.clone()),
            _ => {
                return Err(reject(
                    codes::INVALID_PARAMS,
                    format!("{name} items must be strings"),
                ));
            }
        }
    }
    if out.len() < min || out.len() > max {
        return Err(reject(
            codes::INVALID_PARAMS,
            format!("{name} must have {min}-{max} items"),
        ));
    }
    Ok(out)
}

fn req_str_array(
    body: &Map<String, Value>,
    name: &str,
    min: usize,
    max: usize,
) -> Result<Vec<String>, Reject> {
    match body.get(name) {
        Some(v) => str_array(v, name, min, max),
        None => Err(reject(codes::INVALID_PARAMS, format!("{name} is required"))),
    }
}

fn parse_str_array(raw: &str, name: &str) -> Result<Vec<String>, Reject> {
    let v: Value = serde_json::from_str(raw).map_err(|_| {
        reject(
            codes::INVALID_PARAMS,
            format!("{name} must be a JSON array of strings"),
        )
    })?;
    str_array(&v, name, 0, usize::MAX)
}

fn query_str_array(
    q: &HashMap<String, String>,
    name: &str,
    required: bool,
    min: usize,
    max: usize,
) -> Result<Vec<String>, Reject> {
    match q.get(name) {
        Some(raw) => {
            let v: Value = serde_json::from_str(raw).map_err(|_| {
                reject(
                    codes::INVALID_PARAMS,
                    format!("{name} must be a JSON array of strings"),
                )
            })?;
            str_array(&v, name, min, max)
        }
        None if required => Err(reject(codes::INVALID_PARAMS, format!("{name} is required"))),
        None => Ok(Vec::new()),
    }
}

fn query_int(
    q: &HashMap<String, String>,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, Reject> {
    match q.get(name) {
        None => Ok(default),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(reject(
                codes::INVALID_PARAMS,
                format!("{name} must be an integer in [{min}, {max}]"),
            )),
        },
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

    fn app(uris: &[&str]) -> AppSpec {
        AppSpec {
            app_id: "a".into(),
            secret: "s".into(),
            redirect_uris: uris.iter().map(|u| u.to_string()).collect(),
            advertisers: vec![],
            scopes: vec![],
        }
    }

    #[test]
    fn redirect_uris_match_exactly_or_by_wildcard_prefix() {
        let a = app(&["http://127.0.0.1:*", "https://app.example/cb"]);
        assert!(a.accepts_redirect("http://127.0.0.1:8080/cb"));
        assert!(a.accepts_redirect("https://app.example/cb"));
        assert!(!a.accepts_redirect("https://app.example/cb/other"));
        assert!(!a.accepts_redirect("http://127.0.0.2:80/"));
        assert!(!a.accepts_redirect("http://localhost:80/"));
    }

    #[test]
    fn calculate_type_lines() {
        let sha = "a".repeat(64);
        assert!(fits_calculate_type(&sha, "EMAIL_SHA256"));
        assert!(!fits_calculate_type(&"A".repeat(64), "EMAIL_SHA256"));
        assert!(!fits_calculate_type(&"a".repeat(63), "PHONE_SHA256"));
        assert!(fits_calculate_type(&"0".repeat(32), "IDFA_MD5"));
        assert!(!fits_calculate_type(&sha, "IDFA_MD5"));
        assert!(!fits_calculate_type(&sha, "MULTIPLE_TYPES"));
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

    #[test]
    fn sliding_window_admits_qps_per_app() {
        let mut st = State::new(2, 0.7, app(&[]), FaultConfig::default(), 1);
        assert!(st.admit("a", 1_000));
        assert!(st.admit("a", 1_500));
        assert!(!st.admit("a", 1_999), "third within 1,000 ms");
        assert!(st.admit("b", 1_999), "per app");
        assert!(st.admit("a", 2_000), "the first left the window");
        assert!(!st.admit("a", 2_100));
    }

    #[test]
    fn file_lines_skip_blank_and_crlf() {
        assert_eq!(file_lines(b"a\r\nb\n\nc").unwrap(), vec!["a", "b", "c"]);
        assert!(file_lines(&[0xff, 0xfe]).is_err());
    }
}

//! The client: one place sends every request (app-wide gate or in-process limiter → HTTP → envelope → retry), and one
//! method per endpoint builds its request.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use audience_core::ports::RateGate;
use backon::Retryable;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use md5::{Digest, Md5};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use url::Url;

use crate::backoff::FullJitter;
use crate::error::{CallKind, ErrorAction, TikTokError, is_success_code};
use crate::secret::{AccessToken, AppSecret};
use crate::types::*;

/// TikTok's production host.
pub const DEFAULT_HOST: &str = "https://business-api.tiktok.com";
/// Users per `segment/mapping/` request (TikTok's documented maximum).
pub const MAX_MAPPING_USERS: usize = audience_core::sync::batches::MAX_MAPPING_BATCH;
/// Ids per `get/` and `delete/` request.
pub const MAX_AUDIENCE_IDS: usize = 100;
/// Pages `list_audiences` reads at most.
const MAX_LIST_PAGES: u64 = 1_000;
/// TikTok documents customer files of at most 50 MB (40907 above), read strictly as 50,000,000 bytes; the
/// planner (`audience_core::sync::batches`) keeps every file under it.
pub const MAX_FILE_BYTES: u64 = 50_000_000;
/// `list/` page size (TikTok's maximum).
pub const LIST_PAGE_SIZE: u32 = 100;

/// Retry bounds for retryable and rate-limited errors (exponential backoff with full jitter).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included (1 = never retry).
    pub max_attempts: u32,
    /// No retry starts once this much time has passed since the first attempt.
    pub max_elapsed: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            max_elapsed: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(16),
        }
    }
}

/// Client settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// Scheme and host (tests: the sandbox's base URL). API calls go to `<host>/open_api/v1.3/<path>/`.
    pub host: String,
    /// Requests per second this process sends at most, evenly spaced (no bursts), when there is no
    /// `rate_gate` (with one, the gate alone spaces requests). Default 9.0: 90 % of TikTok's basic tier
    /// (10/s) so arrival jitter never makes 11 in a window.
    pub rate_per_second: f64,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// The app-wide limiter shared by every runner (TikTok's limit is per app), called before each
    /// request instead of the in-process limiter.
    pub rate_gate: Option<Arc<dyn RateGate>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            host: DEFAULT_HOST.to_string(),
            rate_per_second: DEFAULT_TIER_QPS * TIER_SHARE,
            connect_timeout: Duration::from_secs(10),
            // The engine's deadline margin is built from this same constant.
            request_timeout: audience_core::sync::TIKTOK_REQUEST_TIMEOUT,
            retry: RetryPolicy::default(),
            rate_gate: None,
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("host", &self.host)
            .field("rate_per_second", &self.rate_per_second)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .field("rate_gate", &self.rate_gate.as_ref().map(|_| "set"))
            .finish()
    }
}

/// TikTok's basic tier: 10 requests per second per app.
pub const DEFAULT_TIER_QPS: f64 = 10.0;
/// Share of the tier the client uses, so that arrival jitter never makes one request too many in a window.
pub const TIER_SHARE: f64 = 0.9;

impl ClientConfig {
    /// Sets `rate_per_second` to 90 % of the app's tier (requests per second per app: 10, 20, 30, 50).
    /// Several processes of one app still need the app-wide `rate_gate` to share that tier.
    pub fn with_tier(mut self, tier_qps: f64) -> Self {
        self.rate_per_second = tier_qps * TIER_SHARE;
        self
    }
}

/// Problems with a [`ClientConfig`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid host {0:?}: must be an http(s) URL without path, query or credentials")]
    Host(String),
    #[error("rate_per_second must be a positive finite number, got {0}")]
    Rate(f64),
    #[error("retry.max_attempts must be at least 1")]
    Attempts,
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// Counters for run reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientStats {
    /// HTTP requests sent (attempts, retries included).
    pub calls: u64,
    /// Attempts that were retries of an earlier one.
    pub retries: u64,
    /// Answers that were rate or frequency limits.
    pub rate_limited: u64,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
}

struct Inner {
    http: reqwest::Client,
    host: Url,
    limiter: DefaultDirectRateLimiter,
    gate: Option<Arc<dyn RateGate>>,
    retry: RetryPolicy,
    counters: Counters,
}

/// TikTok Marketing API client. Cheap to clone (shares its limiter, connection pool and counters).
#[derive(Clone)]
pub struct TikTokClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TikTokClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TikTokClient")
            .field("host", &self.inner.host.as_str())
            .field("stats", &self.stats())
            .finish()
    }
}

/// A request body.
enum Payload<'a> {
    None,
    Json(Value),
    Upload(&'a UploadSpec),
}

struct UploadSpec {
    path: std::path::PathBuf,
    file_name: String,
    len: u64,
    advertiser_id: String,
    calculate_type: CalculateType,
    signature: String,
}

/// Everything one endpoint call needs; attempts rebuild the HTTP request from it.
struct Call<'a> {
    endpoint: &'static str,
    method: Method,
    token: Option<&'a AccessToken>,
    query: Vec<(&'static str, String)>,
    payload: Payload<'a>,
    /// Safe to send twice (set semantics, reads, uploads). Unsafe calls are not retried when the outcome
    /// is unknown: a second `create` would make a second audience.
    idempotent: bool,
    kind: CallKind,
}

#[derive(Deserialize)]
struct Envelope {
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

impl TikTokClient {
    pub fn new(config: ClientConfig) -> Result<Self, ConfigError> {
        let host = Url::parse(&config.host).map_err(|_| ConfigError::Host(config.host.clone()))?;
        if !matches!(host.scheme(), "http" | "https")
            || host.host_str().is_none()
            || !matches!(host.path(), "" | "/")
            || host.query().is_some()
            || !host.username().is_empty()
            || host.password().is_some()
        {
            return Err(ConfigError::Host(config.host));
        }
        let rate = config.rate_per_second;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(ConfigError::Rate(rate));
        }
        if config.retry.max_attempts == 0 {
            return Err(ConfigError::Attempts);
        }
        let period = Duration::from_secs_f64(1.0 / rate);
        // Burst of one: requests are spaced by the period, never bunched.
        let quota = Quota::with_period(period)
            .ok_or(ConfigError::Rate(rate))?
            .allow_burst(NonZeroU32::MIN);
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("audience-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Http(e.without_url().to_string()))?;
        Ok(TikTokClient {
            inner: Arc::new(Inner {
                http,
                host,
                limiter: RateLimiter::direct(quota),
                gate: config.rate_gate,
                retry: config.retry,
                counters: Counters::default(),
            }),
        })
    }

    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        ClientStats {
            calls: c.calls.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
        }
    }

    fn api_url(&self, endpoint: &str) -> Url {
        let mut u = self.inner.host.clone();
        u.set_path(&format!("/open_api/v1.3/{endpoint}"));
        u
    }

    /// The consent page an advertiser opens: `<host>/portal/auth?app_id&state&redirect_uri`.
    pub fn consent_url(&self, app_id: &str, state: &str, redirect_uri: &str) -> String {
        let mut u = self.inner.host.clone();
        u.set_path("/portal/auth");
        u.query_pairs_mut()
            .append_pair("app_id", app_id)
            .append_pair("state", state)
            .append_pair("redirect_uri", redirect_uri);
        u.to_string()
    }

    // ---------------------------------------------------------------- transport

    async fn call<T: DeserializeOwned>(
        &self,
        call: &Call<'_>,
    ) -> Result<ApiResponse<T>, TikTokError> {
        let attempts = AtomicU32::new(0);
        let counters = &self.inner.counters;
        let op = || async {
            let n = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            if n > 1 {
                counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.attempt::<T>(call).await
        };
        let result = op
            .retry(FullJitter::new(self.inner.retry.clone()))
            .sleep(tokio::time::sleep)
            .when(|e: &TikTokError| should_retry(e, call.idempotent))
            // A known wait (the app-wide gate's hint) is a floor for the jittered delay.
            .adjust(|e: &TikTokError, d: Option<Duration>| {
                d.map(|d| d.max(e.retry_after().unwrap_or_default()))
            })
            .notify(|e: &TikTokError, wait: Duration| {
                tracing::warn!(
                    endpoint = call.endpoint,
                    action = %e.action(),
                    code = ?e.code(),
                    http_status = ?e.http_status(),
                    request_id = ?e.request_id(),
                    wait_ms = wait.as_millis() as u64,
                    "TikTok call failed; retrying"
                );
            })
            .await;
        result.map_err(|e| e.with_attempts(attempts.load(Ordering::Relaxed)))
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        call: &Call<'_>,
    ) -> Result<ApiResponse<T>, TikTokError> {
        let ep = call.endpoint;
        // Built before the slot is taken: a 10,000-id body takes milliseconds to serialize (more on a busy
        // CPU), and time spent between the slot and the send bunches requests (11 in a second at 10/s).
        let req = self.build_request(call).await?;
        match &self.inner.gate {
            // The app-wide gate spaces every request of the app, this process's too: a second, slower
            // in-process spacing would only lower the rate.
            Some(gate) => gate.acquire().await.map_err(|e| {
                TikTokError::new(ErrorAction::Retry, ep, e.to_string())
                    .with_retry_after(e.retry_after)
            })?,
            None => self.inner.limiter.until_ready().await,
        }
        self.inner.counters.calls.fetch_add(1, Ordering::Relaxed);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Err(transport_error(ep, e)),
        };
        let status = resp.status();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(transport_error(ep, e).with_http_status(Some(status.as_u16()))),
        };
        let env = match serde_json::from_slice::<Envelope>(&body) {
            Ok(env) if env.code.is_some() => env,
            _ => return Err(self.no_envelope(ep, status)),
        };
        let code = env.code.unwrap_or_default();
        let message = env.message.unwrap_or_default();
        if !is_success_code(code) {
            let err = TikTokError::api(ep, code, message, env.request_id, call.kind);
            if err.action() == ErrorAction::RateLimited {
                self.inner
                    .counters
                    .rate_limited
                    .fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(endpoint = ep, code, request_id = ?err.request_id(), "TikTok error");
            return Err(err);
        }
        let data = match env.data {
            Some(Value::Null) | None => json!({}),
            Some(d) => d,
        };
        let data: T = serde_json::from_value(data).map_err(|e| {
            // A success we cannot read: TikTok did something, we do not know what.
            TikTokError::new(
                ErrorAction::OutcomeUnknown,
                ep,
                format!("unexpected response data: {e}"),
            )
            .with_request_id(env.request_id.clone())
            .with_http_status(Some(status.as_u16()))
        })?;
        tracing::debug!(endpoint = ep, code, request_id = ?env.request_id, "TikTok ok");
        Ok(ApiResponse {
            data,
            request_id: env.request_id,
            code,
            message,
        })
    }

    fn no_envelope(&self, ep: &'static str, status: StatusCode) -> TikTokError {
        let s = status.as_u16();
        if s == 429 {
            self.inner
                .counters
                .rate_limited
                .fetch_add(1, Ordering::Relaxed);
        }
        let action = if s == 429 || status.is_server_error() || status.is_success() {
            ErrorAction::OutcomeUnknown
        } else {
            ErrorAction::InvalidRequest
        };
        TikTokError::new(action, ep, format!("HTTP {s} without a TikTok envelope"))
            .with_http_status(Some(s))
    }

    async fn build_request(&self, call: &Call<'_>) -> Result<reqwest::RequestBuilder, TikTokError> {
        let mut req = self
            .inner
            .http
            .request(call.method.clone(), self.api_url(call.endpoint));
        let mut headers = HeaderMap::new();
        if let Some(token) = call.token {
            let mut v = HeaderValue::from_str(token.expose_secret()).map_err(|_| {
                TikTokError::new(
                    ErrorAction::ReconnectRequired,
                    call.endpoint,
                    "access token is not a valid header value",
                )
            })?;
            v.set_sensitive(true);
            headers.insert("Access-Token", v);
        }
        req = req.headers(headers);
        if !call.query.is_empty() {
            req = req.query(&call.query);
        }
        Ok(match &call.payload {
            Payload::None => req,
            Payload::Json(v) => req.json(v),
            Payload::Upload(u) => req.multipart(upload_form(call.endpoint, u).await?),
        })
    }

    // ---------------------------------------------------------------- OAuth

    /// `oauth2/access_token/`: trades the consent page's `auth_code` for a long-lived token.
    pub async fn exchange_auth_code(
        &self,
        app_id: &str,
        secret: &AppSecret,
        auth_code: &str,
    ) -> Result<ApiResponse<TokenGrant>, TikTokError> {
        const EP: &str = "oauth2/access_token/";
        non_empty(EP, "app_id", app_id)?;
        non_empty(EP, "auth_code", auth_code)?;
        let body =
            json!({ "app_id": app_id, "secret": secret.expose_secret(), "auth_code": auth_code });
        // Not idempotent: an auth_code works once, so a lost answer cannot be fetched again.
        self.call(&Call {
            idempotent: false,
            ..Call::post(EP, None, body)
        })
        .await
    }

    /// `oauth2/revoke_token/`.
    pub async fn revoke_token(
        &self,
        app_id: &str,
        secret: &AppSecret,
        token: &AccessToken,
    ) -> Result<ApiResponse<()>, TikTokError> {
        const EP: &str = "oauth2/revoke_token/";
        let body = json!({ "app_id": app_id, "secret": secret.expose_secret(), "access_token": token.expose_secret() });
        let r: ApiResponse<Value> = self.call(&Call::post(EP, None, body)).await?;
        Ok(r.map(|_| ()))
    }

    /// `oauth2/advertiser/get/`: the advertisers the token covers now.
    pub async fn authorized_advertisers(
        &self,
        token: &AccessToken,
        app_id: &str,
        secret: &AppSecret,
    ) -> Result<ApiResponse<Vec<AuthorizedAdvertiser>>, TikTokError> {
        const EP: &str = "oauth2/advertiser/get/";
        #[derive(Deserialize)]
        struct D {
            #[serde(default)]
            list: Vec<AuthorizedAdvertiser>,
        }
        let call = Call {
            query: vec![
                ("app_id", app_id.to_string()),
                ("secret", secret.expose_secret().to_string()),
            ],
            ..Call::get(EP, Some(token))
        };
        let r: ApiResponse<D> = self.call(&call).await?;
        Ok(r.map(|d| d.list))
    }

    /// `advertiser/info/`.
    pub async fn advertiser_info(
        &self,
        token: &AccessToken,
        advertiser_ids: &[String],
    ) -> Result<ApiResponse<Vec<AdvertiserInfo>>, TikTokError> {
        const EP: &str = "advertiser/info/";
        if advertiser_ids.is_empty() || advertiser_ids.len() > 100 {
            return Err(TikTokError::invalid(
                EP,
                "advertiser_ids must have 1-100 ids",
            ));
        }
        #[derive(Deserialize)]
        struct D {
            #[serde(default)]
            list: Vec<AdvertiserInfo>,
        }
        let call = Call {
            query: vec![("advertiser_ids", json_array(advertiser_ids))],
            ..Call::get(EP, Some(token))
        };
        let r: ApiResponse<D> = self.call(&call).await?;
        Ok(r.map(|d| d.list))
    }

    /// `user/info/`: the liveness check of a token.
    pub async fn user_info(
        &self,
        token: &AccessToken,
    ) -> Result<ApiResponse<UserInfo>, TikTokError> {
        self.call(&Call::get("user/info/", Some(token))).await
    }

    // ---------------------------------------------------------------- customer files

    /// `dmp/custom_audience/file/upload/`: uploads a `.csv`/`.txt` file of digests, one per line. The MD5
    /// signature is computed by streaming the file, and the body is streamed from disk on each attempt.
    /// Returns the `file_path` to use in `create`/`update`.
    pub async fn upload_file(
        &self,
        token: &AccessToken,
        advertiser_id: &str,
        calculate_type: CalculateType,
        path: &Path,
    ) -> Result<ApiResponse<String>, TikTokError> {
        const EP: &str = "dmp/custom_audience/file/upload/";
        non_empty(EP, "advertiser_id", advertiser_id)?;
        let (signature, len) = md5_file(EP, path).await?;
        if len > MAX_FILE_BYTES {
            return Err(TikTokError::new(
                ErrorAction::FileRejected,
                EP,
                format!("file has {len} bytes; TikTok takes files of at most {MAX_FILE_BYTES}"),
            ));
        }
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| TikTokError::invalid(EP, "the file path has no usable file name"))?
            .to_string();
        let spec = UploadSpec {
            path: path.to_path_buf(),
            file_name,
            len,
            advertiser_id: advertiser_id.to_string(),
            calculate_type,
            signature,
        };
        #[derive(Deserialize)]
        struct D {
            file_path: String,
        }
        let call = Call {
            endpoint: EP,
            method: Method::POST,
            token: Some(token),
            query: vec![],
            payload: Payload::Upload(&spec),
            idempotent: true,
            kind: CallKind::Other,
        };
        let r: ApiResponse<D> = self.call(&call).await?;
        Ok(r.map(|d| d.file_path))
    }

    /// `dmp/custom_audience/create/`: always makes a new audience (names are not unique). Not retried
    /// when the outcome is unknown (a retry could make a second audience): the caller reconciles.
    pub async fn create_audience(
        &self,
        token: &AccessToken,
        advertiser_id: &str,
        name: &str,
        calculate_type: CalculateType,
        file_paths: &[String],
    ) -> Result<ApiResponse<String>, TikTokError> {
        const EP: &str = "dmp/custom_audience/create/";
        non_empty(EP, "advertiser_id", advertiser_id)?;
        let n = name.chars().count();
        if !(1..=128).contains(&n) {
            return Err(TikTokError::invalid(
                EP,
                "custom_audience_name must have 1-128 characters",
            ));
        }
        check_file_paths(EP, file_paths)?;
        let body = json!({
            "advertiser_id": advertiser_id,
            "custom_audience_name": name,
            "calculate_type": calculate_type.as_str(),
            "file_paths": file_paths,
        });
        #[derive(Deserialize)]
        struct D {
            #[serde(deserialize_with = "id_string")]
            custom_audience_id: String,
        }
        let r: ApiResponse<D> = self
            .call(&Call {
                idempotent: false,
                ..Call::post(EP, Some(token), body)
            })
            .await?;
        Ok(r.map(|d| d.custom_audience_id))
    }

    /// `dmp/custom_audience/update/` with files and an explicit `action` (never left to TikTok's REPLACE
    /// default). 40002 comes back as [`ErrorAction::NotEditable`]: hold the change for a later run.
    pub async fn update_audience(
        &self,
        token: &AccessToken,
        advertiser_id: &str,
        audience_id: &str,
        action: UpdateAction,
        file_paths: &[String],
    ) -> Result<ApiResponse<()>, TikTokError> {
        const EP: &str = "dmp/custom_audience/update/";
        non_empty(EP, "advertiser_id", advertiser_id)?;
        non_empty(EP, "custom_audience_id", audience_id)?;
        check_file_paths(EP, file_paths)?;
        let body = json!({
            "advertiser_id": advertiser_id,
            "custom_audience_id": audience_id,
            "action": action.as_str(),
            "file_paths": file_paths,
        });
        let call = Call {
            kind: CallKind::AudienceEdit,
            ..Call::post(EP, Some(token), body)
        };
        let r: ApiResponse<Value> = self.call(&call).await?;
        Ok(r.map(|_| ()))
    }

    /// `dmp/custom_audience/update/` renaming an audience (no files, so no action).
    pub async fn rename_audience(
        &self,
        token: &AccessToken,
        advertiser_id: &str,
        audience_id: &str,
        name: &str,
    ) -> Result<ApiResponse<()>, TikTokError> {
        const EP: &str = "dmp/custom_audience/update/";
        if !(1..=128).contains(&name.chars().count()) {
            return Err(TikTokError::invalid(
                EP,
                "custom_audience_name must have 1-128 characters",
            ));
        }
        let body = json!({ "advertiser_id": advertiser_id, "custom_audience_id": audience_id, "custom_audience_name": name });
        let call = Call {
            kind: CallKind::AudienceEdit,
            ..Call::post(EP, Some(token), body)
        };
        let r: ApiResponse<Value> = self.call(&call).await?;
        Ok(r.map(|_| ()))
    }

    /// `dmp/custom_audience/get/` for 1-100 audiences.
    pub async fn get_audiences(
        &self,
        token: &AccessToken,
        advertiser_id: &str,
        audience_ids: &[String],
    ) -> Result<ApiResponse<Vec<AudienceRecord>>, TikTokError> {
        const EP: &str = "dmp/custom_audience/get/";
        non_empty(EP, "advertiser_id", advertiser_id)?;
        if audience_ids.is_empty() || audience_ids.len() > MAX_AUDIENCE_IDS {
            return Err(TikTokError::invalid(
                EP,
                "custom_audience_ids must have 1-100 ids",
            ));
        }
        #[derive(Deserialize)]
        struct D {
            #[serde(default)]
            list: Vec<AudienceRecord>,
        }
        let call = Call {
            query: vec![
                ("advertiser_id", advertiser_id.to_string()),
                ("custom_audience_ids", json_array(audience_ids)),
            ],
            ..Call::get(EP, Some(token))
        };
        let r: ApiResponse<D> = self.call(&call).await?;
        Ok(r.map(|d| d.list))
    }

    /// `dmp/custom_audience/list/`, every page. The `request_id` returned is the last page's.
    pub async fn list_audiences(
        &self,
        token: &AccessToken,
        advertiser_id: &str,
    ) -> Result<ApiResponse<Vec<AudienceDetails>>, TikTokError> {
        const EP: &str = "dmp/custom_audience/list/";
        non_empty(EP, "advertiser_id", advertiser_id)?;
        #[derive(Deserialize)]
        struct D {
            #[serde(default)]
            list: Vec<AudienceDetails>,
            page_info: Option<PageInfo>,
        }
        let mut all = Vec::new();
        let mut page: u64 = 1;
        loop {
            let call = Call {
                query: vec![
                    ("advertiser_id", advertiser_id.to_string()),
                    ("page", page.to_string()),
                    ("page_size", LIST_PAGE_SIZE.to_string()),
                ],
                ..Call::get(EP, Some(token))
            };
            let r: ApiResponse<D> = self.call(&call).await?;
            let got = r.data.list.len();
            all.extend(r.data.list);
            let total_page = r.data.page_info.as_ref().map(|p| p.total_page);
            let more = match total_page {
                Some(tp) => page < tp,
                // Without page_info, a full page means there may be another.
                None => got as u64 == u64::from(LIST_PAGE_SIZE),
            };
            if more && page >= MAX_LIST_PAGES {
                // 400 audiences per advertiser fit in 4 pages: a list that does not end is a server bug.
                return Err(TikTokError::new(
                    ErrorAction::Retry,
                    EP,
                    format!("list did not end after {MAX_LIST_PAGES} pages"),
                ));
            }
            if !more || got == 0 {
                return Ok(ApiResponse {
                    data: all,
                    request_id: r.request_id,
                    code: r.code,
                    message: r.message,
                });
            }
            page += 1;
        }
    }

    /// `dmp/custom_audience/delete/` for 1-100 audiences.
    pub async fn delete_audiences(
        &self,
        token: &AccessToken,
        advertiser_id: &str,
        audience_ids: &[String],
    ) -> Result<ApiResponse<()>, TikTokError> {
        const EP: &str = "dmp/custom_audience/delete/";
        non_empty(EP, "advertiser_id", advertiser_id)?;
        if audience_ids.is_empty() || audience_ids.len() > MAX_AUDIENCE_IDS {
            return Err(TikTokError::invalid(
                EP,
                "custom_audience_ids must have 1-100 ids",
            ));
        }
        let body = json!({ "advertiser_id": advertiser_id, "custom_audience_ids": audience_ids });
        let r: ApiResponse<Value> = self.call(&Call::post(EP, Some(token), body)).await?;
        Ok(r.map(|_| ()))
    }

    // ---------------------------------------------------------------- streaming (segment) API

    /// `segment/audience/` create: a streaming ("Partner") audience. Names over 70 characters are cut by
    /// TikTok. Not retried when the outcome is unknown.
    pub async fn create_segment_audience(
        &self,
        token: &AccessToken,
        advertiser_id: &str,
        name: &str,
    ) -> Result<ApiResponse<String>, TikTokError> {
        const EP: &str = "segment/audience/";
        non_empty(EP, "advertiser_id", advertiser_id)?;
        non_empty(EP, "custom_audience_name", name)?;
        let body = json!({ "advertiser_id": advertiser_id, "action": "create", "custom_audience_name": name });
        #[derive(Deserialize)]
        struct D {
            #[serde(deserialize_with = "id_string")]
            audience_id: String,
        }
        let r: ApiResponse<D> = self
            .call(&Call {
                idempotent: false,
                ..Call::post(EP, Some(token), body)
            })
            .await?;
        Ok(r.map(|d| d.audience_id))
    }

    /// `segment/audience/` delete (TikTok names the audience `delete_audience_id` here).
    pub async fn delete_segment_audience(
        &self,
        token: &AccessToken,
        advertiser_id: &str,
        audience_id: &str,
    ) -> Result<ApiResponse<()>, TikTokError> {
        const EP: &str = "segment/audience/";
        non_empty(EP, "delete_audience_id", audience_id)?;
        let body = json!({ "advertiser_id": advertiser_id, "action": "delete", "delete_audience_id": audience_id });
        let r: ApiResponse<Value> = self.call(&Call::post(EP, Some(token), body)).await?;
        Ok(r.map(|_| ()))
    }

    /// `segment/mapping/` for digests of one key type: adds them to (or deletes them from) the audiences,
    /// split into requests of at most 10,000 users. On error, [`TikTokError::completed_items`] says how
    /// many of `digests` (a prefix) were confirmed applied.
    pub async fn segment_mapping(
        &self,
        token: &AccessToken,
        advertiser_id: &str,
        action: MappingAction,
        schema: IdSchema,
        audience_ids: &[String],
        digests: &[String],
    ) -> Result<ApiResponse<Vec<MappingBatch>>, TikTokError> {
        let users: Vec<Vec<Option<&str>>> =
            digests.iter().map(|d| vec![Some(d.as_str())]).collect();
        self.segment_mapping_users(
            token,
            advertiser_id,
            action,
            &[schema],
            audience_ids,
            &users,
        )
        .await
    }

    /// `segment/mapping/` with several keys per user: `id_schema` lists the key types and each user has
    /// one position per key (`None` = key unknown for that user, sent as `{}`).
    pub async fn segment_mapping_users(
        &self,
        token: &AccessToken,
        advertiser_id: &str,
        action: MappingAction,
        id_schema: &[IdSchema],
        audience_ids: &[String],
        users: &[Vec<Option<&str>>],
    ) -> Result<ApiResponse<Vec<MappingBatch>>, TikTokError> {
        const EP: &str = "segment/mapping/";
        non_empty(EP, "advertiser_id", advertiser_id)?;
        if id_schema.is_empty() {
            return Err(TikTokError::invalid(EP, "id_schema must not be empty"));
        }
        if audience_ids.is_empty() {
            return Err(TikTokError::invalid(EP, "audience_ids must not be empty"));
        }
        for u in users {
            if u.len() != id_schema.len() {
                return Err(TikTokError::invalid(
                    EP,
                    "each user needs one position per id_schema entry",
                ));
            }
            if u.iter().all(Option::is_none) {
                return Err(TikTokError::invalid(EP, "a user needs at least one id"));
            }
            if u.iter().flatten().any(|d| !is_sha256_hex(d)) {
                // Never send something that is not a digest: it could be a raw identifier.
                return Err(TikTokError::invalid(
                    EP,
                    "ids must be SHA-256 digests (64 lowercase hex)",
                ));
            }
        }
        let schema: Vec<&str> = id_schema.iter().map(|s| s.as_str()).collect();
        let mut batches = Vec::new();
        let mut done = 0usize;
        let mut last: Option<ApiResponse<Value>> = None;
        for chunk in users.chunks(MAX_MAPPING_USERS) {
            let batch_data: Vec<Vec<Value>> = chunk
                .iter()
                .map(|u| {
                    u.iter()
                        .map(|p| match p {
                            Some(id) => json!({ "id": id, "audience_ids": audience_ids }),
                            None => json!({}),
                        })
                        .collect()
                })
                .collect();
            let body = json!({
                "advertiser_ids": [advertiser_id],
                "action": action.as_str(),
                "id_schema": schema,
                "batch_data": batch_data,
            });
            let call = Call {
                kind: CallKind::Mapping,
                ..Call::post(EP, Some(token), body)
            };
            match self.call::<Value>(&call).await {
                Ok(r) => {
                    done += chunk.len();
                    batches.push(MappingBatch {
                        users: chunk.len(),
                        request_id: r.request_id.clone(),
                    });
                    last = Some(r);
                }
                Err(e) => return Err(e.with_completed(done)),
            }
        }
        Ok(match last {
            Some(r) => r.map(|_| batches),
            None => ApiResponse {
                data: batches,
                request_id: None,
                code: 0,
                message: "nothing to send".into(),
            },
        })
    }
}

impl<'a> Call<'a> {
    fn get(endpoint: &'static str, token: Option<&'a AccessToken>) -> Self {
        Call {
            endpoint,
            method: Method::GET,
            token,
            query: vec![],
            payload: Payload::None,
            idempotent: true,
            kind: CallKind::Other,
        }
    }
    fn post(endpoint: &'static str, token: Option<&'a AccessToken>, body: Value) -> Self {
        Call {
            endpoint,
            method: Method::POST,
            token,
            query: vec![],
            payload: Payload::Json(body),
            idempotent: true,
            kind: CallKind::Other,
        }
    }
}

fn should_retry(e: &TikTokError, idempotent: bool) -> bool {
    match e.action() {
        ErrorAction::Retry | ErrorAction::RateLimited => true,
        ErrorAction::OutcomeUnknown => idempotent,
        _ => false,
    }
}

/// A reqwest failure, without its URL (the URL of `oauth2/advertiser/get/` carries the app secret).
fn transport_error(ep: &'static str, e: reqwest::Error) -> TikTokError {
    let e = e.without_url();
    // A failed connect never reached TikTok: nothing was applied, so even unsafe calls may retry.
    let action = if e.is_connect() {
        ErrorAction::Retry
    } else {
        ErrorAction::OutcomeUnknown
    };
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    TikTokError::new(action, ep, format!("transport: {msg}"))
        .with_http_status(e.status().map(|s| s.as_u16()))
}

fn non_empty(ep: &'static str, field: &str, v: &str) -> Result<(), TikTokError> {
    if v.is_empty() {
        Err(TikTokError::invalid(
            ep,
            format!("{field} must not be empty"),
        ))
    } else {
        Ok(())
    }
}

fn check_file_paths(ep: &'static str, paths: &[String]) -> Result<(), TikTokError> {
    if paths.is_empty() || paths.len() > 500 {
        return Err(TikTokError::invalid(
            ep,
            "file_paths must have 1-500 entries",
        ));
    }
    if paths.iter().any(|p| p.is_empty()) {
        return Err(TikTokError::invalid(
            ep,
            "file_paths must not contain empty paths",
        ));
    }
    Ok(())
}

fn json_array(ids: &[String]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_string())
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// MD5 hex and length of a file, read in chunks (never whole in memory).
async fn md5_file(ep: &'static str, path: &Path) -> Result<(String, u64), TikTokError> {
    let io = |e: std::io::Error| {
        TikTokError::invalid(ep, format!("cannot read {}: {e}", path.display()))
    };
    let mut f = tokio::fs::File::open(path).await.map_err(io)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(h.finalize()), len))
}

async fn upload_form(
    ep: &'static str,
    u: &UploadSpec,
) -> Result<reqwest::multipart::Form, TikTokError> {
    let file = tokio::fs::File::open(&u.path)
        .await
        .map_err(|e| TikTokError::invalid(ep, format!("cannot open {}: {e}", u.path.display())))?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let part = reqwest::multipart::Part::stream_with_length(body, u.len)
        .file_name(u.file_name.clone())
        .mime_str("text/csv")
        .map_err(|e| TikTokError::invalid(ep, e.without_url().to_string()))?;
    Ok(reqwest::multipart::Form::new()
        .text("advertiser_id", u.advertiser_id.clone())
        .text("calculate_type", u.calculate_type.as_str())
        .text("file_signature", u.signature.clone())
        .part("file", part))
}

//! The HTTP API (functions `oauth-callback` and `save-mapping`) as plain async code over the ports and the
//! TikTok client: [`Api::handle`] takes a method, path, query, headers and body ([`ApiRequest`]) and returns a
//! status, headers and body ([`ApiResponse`]). The Lambda functions adapt lambda_http's types to these
//! (`api::lambda`, feature `lambda`); the local stack serves the same router from a plain HTTP server.
//!
//! Routes (API reference: `docs/openapi.yaml`):
//!
//! | function | routes |
//! |---|---|
//! | `oauth-callback` | `POST /v1/projects/{project_id}/connect`, `GET /oauth/tiktok/callback` |
//! | `save-mapping` | every other `/v1/...` route |
//!
//! Every `/v1/...` route requires `Authorization: Bearer <admin token>` (compared in constant time); the
//! OAuth callback is public and protected by its single-use `state`.

mod console;
mod error;
mod history;
#[cfg(feature = "lambda")]
pub mod lambda;
mod oauth;
mod previews;
mod project;
mod syncs;
mod unmatched;
mod views;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audience_aws::{Adapters, AwsClients, Config};
use audience_core::ports::{CohortStore, Invoker, Schedules, StateStore, TokenVault};
use audience_tiktok::{ClientConfig, RetryPolicy, TikTokClient};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use error::{ApiError, ErrorCode};
pub use views::{run_json, sync_json};

/// One HTTP request, as any server hands it over.
#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    pub method: String,
    /// The path without query string, percent-encoded as received (e.g. `/v1/projects/p1/syncs`).
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Header names in any case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The API's public host name (API Gateway's request context `domainName`), used for the OAuth
    /// `redirect_uri` when no callback URL is configured. `None` outside API Gateway: the `Host` header is used.
    pub domain_name: Option<String>,
}

impl ApiRequest {
    pub fn new(method: &str, path: &str) -> ApiRequest {
        ApiRequest {
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            ..ApiRequest::default()
        }
    }

    /// Splits `path?query` (the query is decoded as `application/x-www-form-urlencoded`).
    pub fn from_target(method: &str, target: &str) -> ApiRequest {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut r = ApiRequest::new(method, path);
        r.query = parse_query(query);
        r
    }

    pub fn with_header(mut self, name: &str, value: &str) -> ApiRequest {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_json(mut self, body: &serde_json::Value) -> ApiRequest {
        self.body = body.to_string().into_bytes();
        self.headers
            .push(("content-type".into(), "application/json".into()));
        self
    }

    pub fn with_bearer(self, token: &str) -> ApiRequest {
        self.with_header("authorization", &format!("Bearer {token}"))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes a raw query string.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// One HTTP answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ApiResponse {
    pub fn json(status: u16, value: &serde_json::Value) -> ApiResponse {
        ApiResponse {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: value.to_string().into_bytes(),
        }
    }

    pub fn html(status: u16, html: String) -> ApiResponse {
        ApiResponse {
            status,
            headers: vec![
                ("content-type".into(), "text/html; charset=utf-8".into()),
                ("cache-control".into(), "no-store".into()),
                // The page shows only our own text: no scripts, no framing.
                (
                    "content-security-policy".into(),
                    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'".into(),
                ),
            ],
            body: html.into_bytes(),
        }
    }

    pub fn empty(status: u16) -> ApiResponse {
        ApiResponse {
            status,
            headers: vec![],
            body: vec![],
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json_body(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Which routes a process serves: each Lambda function serves its own (API Gateway routes only those to it);
/// the local stack serves all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    OAuthCallback,
    SaveMapping,
    All,
}

/// What the API talks to.
#[derive(Clone)]
pub struct ApiDeps {
    pub state: Arc<dyn StateStore>,
    pub vault: Arc<dyn TokenVault>,
    pub cohorts: Arc<dyn CohortStore>,
    pub schedules: Arc<dyn Schedules>,
    pub invoker: Arc<dyn Invoker>,
    pub tiktok: TikTokClient,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The OAuth `redirect_uri` (stack parameter `CallbackUrl`, env `CALLBACK_URL`); `None`: built from the
    /// request (`https://<domainName>/oauth/tiktok/callback`).
    pub callback_url: Option<String>,
    /// Where Amplitude writes exports (previews only read keys under it). `""` = the bucket root.
    pub cohort_prefix: String,
    /// How long an OAuth `state` stays valid.
    pub state_ttl: Duration,
    /// How long the admin token's digest is kept in memory before Secrets Manager is read again.
    pub admin_token_cache: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            callback_url: None,
            cohort_prefix: "cohorts".into(),
            state_ttl: Duration::from_secs(600),
            admin_token_cache: Duration::from_secs(60),
        }
    }
}

type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The API: build once per process, then [`Api::handle`] each request.
pub struct Api {
    deps: ApiDeps,
    settings: ApiSettings,
    routes: Routes,
    clock: Clock,
    /// SHA-256 of the admin token and when it was read (the token itself is not kept).
    admin_digest: Mutex<Option<(Instant, [u8; 32])>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] audience_aws::ConfigError),
    #[error("TikTok client: {0}")]
    TikTok(#[from] audience_tiktok::ConfigError),
    #[error("{0} must be configured for the API")]
    Missing(&'static str),
}

impl Api {
    pub fn new(deps: ApiDeps, settings: ApiSettings, routes: Routes) -> Api {
        Api {
            deps,
            settings,
            routes,
            clock: Arc::new(Utc::now),
            admin_digest: Mutex::new(None),
        }
    }

    /// Replaces the clock (tests: OAuth state expiry).
    pub fn with_clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Api {
        self.clock = Arc::new(clock);
        self
    }

    pub fn settings(&self) -> &ApiSettings {
        &self.settings
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Builds the API from the environment, as a function does once at cold start.
    pub async fn from_env(routes: Routes) -> Result<Api, SetupError> {
        let config = Config::from_env()?;
        let clients = AwsClients::load().await;
        let callback_url = std::env::var("CALLBACK_URL")
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        Api::from_config(&config, &clients, callback_url, routes)
    }

    /// Builds the API from a configuration and SDK clients (the local stack passes its own).
    pub fn from_config(
        config: &Config,
        clients: &AwsClients,
        callback_url: Option<String>,
        routes: Routes,
    ) -> Result<Api, SetupError> {
        let adapters = Adapters::new(clients, config)?;
        let tiktok = TikTokClient::new(ClientConfig {
            host: config.tiktok_host.clone(),
            rate_per_second: config.tiktok_rate * audience_tiktok::TIER_SHARE,
            rate_gate: Some(adapters.rate_gate.clone()),
            // API Gateway gives up after 30 s: retry briefly, then answer tiktok_error.
            request_timeout: Duration::from_secs(15),
            retry: RetryPolicy {
                max_attempts: 3,
                max_elapsed: Duration::from_secs(10),
                ..RetryPolicy::default()
            },
            ..ClientConfig::default()
        })?;
        let deps = ApiDeps {
            state: adapters.state.clone(),
            vault: adapters.vault.clone(),
            cohorts: adapters.cohorts.clone(),
            schedules: adapters.schedules.clone().ok_or(SetupError::Missing(
                "SYNC_RUNNER_ARN and SCHEDULER_ROLE_ARN",
            ))?,
            invoker: adapters
                .invoker
                .clone()
                .ok_or(SetupError::Missing("SYNC_RUNNER_ARN"))?,
            tiktok,
        };
        let settings = ApiSettings {
            callback_url,
            cohort_prefix: config.cohort_prefix.clone(),
            ..ApiSettings::default()
        };
        Ok(Api::new(deps, settings, routes))
    }

    /// The router: every route of the API. Never panics on input; every failure is an error answer.
    pub async fn handle(&self, req: ApiRequest) -> ApiResponse {
        let started = Instant::now();
        let resp = match self.dispatch(&req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        // One line per request: method, path (ids only; the query, which may hold an OAuth code, is not
        // logged), status and duration.
        let path: String = req
            .path
            .chars()
            .take(200)
            .filter(|c| !c.is_control())
            .collect();
        tracing::info!(
            method = %req.method,
            path = %path,
            status = resp.status,
            duration_ms = started.elapsed().as_millis() as u64,
            "API request"
        );
        resp
    }

    async fn dispatch(&self, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let segments: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
        let method = req.method.to_ascii_uppercase();
        let m = method.as_str();
        if segments == ["oauth", "tiktok", "callback"] {
            if m != "GET" || !self.serves(Routes::OAuthCallback) {
                return Err(no_route(m, &req.path));
            }
            return Ok(self.oauth_callback(req).await);
        }
        if segments.first() == Some(&"console") {
            return Ok(self.console(req, &segments[1..]).await);
        }
        // Exports belong to no project: one top-level route, authorized like every /v1 route.
        if segments == ["v1", "unmatched-exports"] {
            self.authorize(req).await?;
            if m != "GET" || !self.serves(Routes::SaveMapping) {
                return Err(no_route(m, &req.path));
            }
            return self.list_unmatched_exports().await;
        }
        // Authorization comes first: nothing about the API is told to an unauthenticated caller.
        match segments.as_slice() {
            ["v1", "projects"] if m == "GET" && self.serves(Routes::SaveMapping) => {
                self.authorize(req).await?;
                self.list_projects().await
            }
            ["v1", "projects", project_id, rest @ ..] => {
                self.authorize(req).await?;
                self.route_project(req, project_id, rest).await
            }
            _ => Err(no_route(m, &req.path)),
        }
    }

    /// The `/v1/projects/{project_id}/...` routes of an authorized caller (the bearer token, or the console's
    /// session: the console calls the same routes, so it and `curl` always agree).
    pub(crate) async fn route_project(
        &self,
        req: &ApiRequest,
        project_id: &str,
        rest: &[&str],
    ) -> Result<ApiResponse, ApiError> {
        let method = req.method.to_ascii_uppercase();
        let m = method.as_str();
        if !valid_project_id(project_id) {
            return Err(ApiError::invalid(
                "project_id must be 1-64 characters of A-Z, a-z, 0-9, _ and -",
            ));
        }
        let p = project_id;
        let owner = match rest {
            ["connect"] => Routes::OAuthCallback,
            _ => Routes::SaveMapping,
        };
        if !self.serves(owner) {
            return Err(no_route(m, &req.path));
        }
        match (m, rest) {
            ("POST", ["connect"]) => self.connect(req, p).await,
            ("GET", ["integration"]) => self.get_integration(p).await,
            ("DELETE", ["integration"]) => self.disconnect(req, p).await,
            ("PUT", ["mapping"]) => self.put_mapping(req, p).await,
            ("GET", ["syncs"]) => self.list_syncs(p).await,
            ("POST", ["syncs"]) => self.create_sync(req, p).await,
            ("GET", ["syncs", s]) => self.get_sync(p, s).await,
            ("PATCH", ["syncs", s]) => self.patch_sync(req, p, s).await,
            ("DELETE", ["syncs", s]) => self.delete_sync(p, s).await,
            ("POST", ["syncs", s, "run"]) => self.run_sync(p, s).await,
            ("GET", ["syncs", s, "runs"]) => self.list_runs(req, p, s).await,
            ("GET", ["syncs", s, "runs", r]) => self.get_run(p, s, r).await,
            ("GET", ["retired-syncs"]) => self.list_retired(p).await,
            ("DELETE", ["retired-syncs", s]) => self.delete_retired(p, s).await,
            ("POST", ["previews"]) => self.create_preview(req, p).await,
            ("GET", ["previews", id]) => self.get_preview(p, id).await,
            _ => Err(no_route(m, &req.path)),
        }
    }

    fn serves(&self, owner: Routes) -> bool {
        self.routes == Routes::All || self.routes == owner
    }

    /// `Authorization: Bearer <admin token>`, compared in constant time (digests of both sides, so the
    /// comparison time does not depend on the length either).
    async fn authorize(&self, req: &ApiRequest) -> Result<(), ApiError> {
        let unauthorized = || {
            ApiError::new(
                ErrorCode::Unauthorized,
                "missing or wrong admin token (Authorization: Bearer <token>)",
            )
        };
        let header = req.header("authorization").ok_or_else(unauthorized)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or_else(unauthorized)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(unauthorized());
        }
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let expected = self.admin_digest().await?;
        if bool::from(given.ct_eq(&expected)) {
            Ok(())
        } else {
            Err(unauthorized())
        }
    }

    async fn admin_digest(&self) -> Result<[u8; 32], ApiError> {
        {
            let cached = self.admin_digest.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, d)) = *cached
                && at.elapsed() < self.settings.admin_token_cache
            {
                return Ok(d);
            }
        }
        let token = self
            .deps
            .vault
            .admin_token()
            .await
            .map_err(|e| ApiError::internal(format!("admin token unavailable: {e}")))?;
        let d: [u8; 32] = Sha256::digest(token.expose_secret().as_bytes()).into();
        *self.admin_digest.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), d));
        Ok(d)
    }
}

fn no_route(method: &str, path: &str) -> ApiError {
    // The path is echoed only when short and printable (it comes from outside).
    let shown: String = path.chars().take(200).filter(|c| !c.is_control()).collect();
    ApiError::not_found(format!("no route {method} {shown}"))
}

/// Amplitude's project id: 1-64 characters of `[A-Za-z0-9_-]`.
pub fn valid_project_id(id: &str) -> bool {
    valid_id(id)
}

/// Ids we accept in paths and bodies (sync, run, preview, cohort, advertiser ids): 1-64 of `[A-Za-z0-9_-]`.
/// Anything else cannot be one of ours (and never reaches a storage key).
pub(crate) fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parses a JSON body into `T` (unknown fields refused by `T`'s serde attributes).
pub(crate) fn parse_body<T: DeserializeOwned>(req: &ApiRequest) -> Result<T, ApiError> {
    if req.body.is_empty() {
        return Err(ApiError::invalid("a JSON body is required"));
    }
    serde_json::from_slice(&req.body).map_err(|e| ApiError::invalid(format!("invalid body: {e}")))
}

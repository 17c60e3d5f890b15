//! The HTTP API's handlers (`audience_app::api`, served by the `oauth-callback` and `save-mapping` functions)
//! on a real moto server (DynamoDB, Secrets Manager, S3, EventBridge Scheduler) and the TikTok sandbox over
//! real HTTP. Lambda cannot run on moto: the runner's asynchronous invocations go to a recording `Invoker`
//! fake, and the tests assert its payloads. Every route and error code is covered here, and
//! `openapi_document_matches_the_router` checks docs/openapi.yaml against the router.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audience_app::api::{Api, ApiDeps, ApiRequest, ApiResponse, ApiSettings, Routes};
use audience_aws::{Adapters, Config};
use audience_core::model::{
    ChangeCounts, IntegrationStatus, OAuthState, PreviewState, RunLedger, RunState, RunTrigger,
    SyncProgress,
};
use audience_core::ports::memory::RecordingInvoker;
use audience_core::ports::{CohortStore, LeaseOutcome, Schedules, StateStore, TokenVault};
use audience_core::sync::input::Trigger;
use audience_sync_tests::{ACCOUNT_ID, REGION, TestEnv};
use audience_tiktok::{AccessToken, ClientConfig, ExposeSecret, TikTokClient};
use chrono::Utc;
use serde_json::{Value, json};
use tiktok_sandbox::{AppSpec, RunningSandbox, Sandbox, SandboxOptions};

/// Every log line of this test process (debug and up, JSON as in Lambda), to check that no token is logged.
static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

fn logged() -> String {
    String::from_utf8_lossy(&capture_logs().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
const CALLBACK: &str = "http://127.0.0.1:9/oauth/tiktok/callback";

struct Harness {
    env: TestEnv,
    sandbox: RunningSandbox,
    api: Api,
    adapters: Adapters,
    invoker: Arc<RecordingInvoker>,
    /// Seconds added to the API's clock.
    clock_offset: Arc<AtomicI64>,
    /// (method, path, status) of every API call made through [`Harness::call`].
    calls: Mutex<Vec<(String, String, u16)>>,
    http: reqwest::Client,
}

impl Harness {
    async fn new() -> Harness {
        Harness::with_app(None).await
    }

    /// `app`: a TikTok app to register in the sandbox and use instead of the default one.
    async fn with_app(app: Option<AppSpec>) -> Harness {
        capture_logs();
        let env = TestEnv::new().await.expect("moto resources");
        let sandbox = Sandbox::start(SandboxOptions {
            qps: 100_000,
            ..SandboxOptions::default()
        })
        .await
        .expect("sandbox");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        let (app_id, secret) = match &app {
            Some(a) => {
                let r = http
                    .post(format!("{}/_sandbox/apps", sandbox.base_url))
                    .json(a)
                    .send()
                    .await
                    .expect("register app");
                assert!(r.status().is_success());
                (a.app_id.clone(), a.secret.clone())
            }
            None => (sandbox.app_id().to_string(), sandbox.secret().to_string()),
        };
        let sm = &env.clients.secrets;
        sm.create_secret()
            .name(format!("{}/admin-token", env.secret_prefix))
            .secret_string(json!({ "token": ADMIN_TOKEN }).to_string())
            .send()
            .await
            .expect("admin token secret");
        sm.create_secret()
            .name(format!("{}/app-credentials", env.secret_prefix))
            .secret_string(json!({"app_id": app_id, "secret": secret}).to_string())
            .send()
            .await
            .expect("app credentials secret");
        let vars: BTreeMap<&str, String> = [
            ("TABLE_NAME", env.table.clone()),
            ("BUCKET_NAME", env.bucket.clone()),
            ("SECRET_PREFIX", env.secret_prefix.clone()),
            ("SCHEDULE_GROUP", env.schedule_group.clone()),
            (
                "SYNC_RUNNER_ARN",
                format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:sync-runner"),
            ),
            (
                "SCHEDULER_ROLE_ARN",
                format!("arn:aws:iam::{ACCOUNT_ID}:role/scheduler-invoke"),
            ),
            ("TIKTOK_HOST", sandbox.base_url.clone()),
        ]
        .into_iter()
        .collect();
        let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("config");
        let adapters = Adapters::new(&env.clients, &config).expect("adapters");
        let invoker = Arc::new(RecordingInvoker::new());
        let tiktok = TikTokClient::new(ClientConfig {
            host: sandbox.base_url.clone(),
            rate_per_second: 10_000.0,
            ..ClientConfig::default()
        })
        .expect("tiktok client");
        let deps = ApiDeps {
            state: adapters.state.clone(),
            vault: adapters.vault.clone(),
            cohorts: adapters.cohorts.clone(),
            schedules: adapters.schedules.clone().expect("schedules"),
            invoker: invoker.clone(),
            tiktok,
        };
        let clock_offset = Arc::new(AtomicI64::new(0));
        let offset = clock_offset.clone();
        let api = Api::new(
            deps,
            ApiSettings {
                callback_url: Some(CALLBACK.into()),
                cohort_prefix: "cohorts".into(),
                ..ApiSettings::default()
            },
            Routes::All,
        )
        .with_clock(move || Utc::now() + chrono::Duration::seconds(offset.load(Ordering::SeqCst)));
        Harness {
            env,
            sandbox,
            api,
            adapters,
            invoker,
            clock_offset,
            calls: Mutex::new(Vec::new()),
            http,
        }
    }

    fn state(&self) -> &dyn StateStore {
        self.adapters.state.as_ref()
    }

    fn schedules(&self) -> &dyn Schedules {
        self.adapters.schedules.as_deref().expect("schedules")
    }

    async fn send(&self, req: ApiRequest) -> ApiResponse {
        let (m, p) = (req.method.clone(), req.path.clone());
        let r = self.api.handle(req).await;
        self.calls.lock().unwrap().push((m, p, r.status));
        r
    }

    /// An authorized call with an optional JSON body.
    async fn call(&self, method: &str, target: &str, body: Option<Value>) -> ApiResponse {
        let mut req = ApiRequest::from_target(method, target).with_bearer(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.with_json(&b);
        }
        self.send(req).await
    }

    /// `POST .../connect` → the consent URL.
    async fn authorization_url(&self, project: &str) -> url::Url {
        let r = self
            .call("POST", &format!("/v1/projects/{project}/connect"), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let u = r.json_body()["authorization_url"]
            .as_str()
            .expect("authorization_url")
            .to_string();
        url::Url::parse(&u).expect("authorization_url is a URL")
    }

    /// Opens the consent page like a browser would and returns the callback request TikTok redirects to.
    async fn consent(&self, authorization_url: &url::Url) -> ApiRequest {
        let r = self
            .http
            .get(authorization_url.as_str())
            .send()
            .await
            .expect("consent page");
        assert_eq!(r.status().as_u16(), 302, "consent answered {}", r.status());
        let loc = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("redirect location")
            .to_string();
        let u = url::Url::parse(&loc).expect("redirect URL");
        assert_eq!(
            format!(
                "{}://{}:{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.port().unwrap_or(0),
                u.path()
            ),
            CALLBACK,
            "TikTok redirects to the stored redirect_uri"
        );
        ApiRequest::from_target("GET", &format!("{}?{}", u.path(), u.query().unwrap_or("")))
    }

    /// The whole OAuth flow; returns the callback page.
    async fn connect(&self, project: &str) -> ApiResponse {
        let url = self.authorization_url(project).await;
        let callback = self.consent(&url).await;
        self.send(callback).await
    }

    async fn connect_ok(&self, project: &str) {
        let page = self.connect(project).await;
        assert_eq!(page.status, 200, "{}", page.text());
    }

    async fn map_email(&self, project: &str) {
        let r = self
            .call(
                "PUT",
                &format!("/v1/projects/{project}/mapping"),
                Some(json!({"amplitude_property": "email", "tiktok_key": "EMAIL"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }

    async fn sandbox_post(&self, path: &str, body: Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.sandbox.base_url))
            .json(&body)
            .send()
            .await
            .expect("sandbox control");
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    fn adv(&self, i: usize) -> String {
        self.sandbox.advertiser_ids()[i].clone()
    }

    async fn token(&self, project: &str) -> Option<String> {
        self.adapters.vault.invalidate(project);
        self.adapters
            .vault
            .get_connection(project)
            .await
            .expect("vault")
            .map(|c| c.access_token.expose_secret().to_string())
    }

    /// Every item of the state table, as text (to check what DynamoDB holds).
    async fn table_dump(&self) -> String {
        let out = self
            .env
            .clients
            .dynamodb
            .scan()
            .table_name(&self.env.table)
            .send()
            .await
            .expect("scan");
        format!("{:?}", out.items())
    }

    async fn put_export(&self, key: &str, body: &str) {
        self.env
            .clients
            .s3
            .put_object()
            .bucket(&self.env.bucket)
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .expect("put export");
    }
}

fn error_code(r: &ApiResponse) -> String {
    r.json_body()["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const SYNC_KEYS: &[&str] = &[
    "sync_id",
    "project_id",
    "cohort_id",
    "advertiser_id",
    "audience_name",
    "cadence",
    "write_mode",
    "state",
    "max_removal_ratio",
    "min_create_size",
    "tiktok_audience_id",
    "tiktok_status",
    "waiting_for_minimum",
    "held_removals",
    "held_adds",
    "deferred",
    "pending_export",
    "last_run",
    "warnings",
    "notices",
    "uncertain",
    "active_run",
    "next_attempt_at",
    "audience_size",
    "matched_users",
    "match_rate",
];

const RUN_KEYS: &[&str] = &[
    "run_id",
    "sync_id",
    "trigger",
    "source_export",
    "state",
    "reason",
    "started_at",
    "finished_at",
    "rows",
    "valid",
    "unique",
    "duplicates",
    "skipped",
    "adds",
    "removes",
    "tiktok_calls",
    "tiktok_request_ids",
    "uncertain_resent",
    "uncertain_left",
    "audience_size",
    "matched_users",
];

// ------------------------------------------------------------------------------------------------ OAuth

#[tokio::test]
async fn oauth_happy_path_through_the_sandbox_consent() {
    let h = Harness::new().await;
    let url = h.authorization_url("proj_1").await;
    let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["app_id"], h.sandbox.app_id());
    assert_eq!(q["redirect_uri"], CALLBACK);
    let state = q["state"].clone();
    assert_eq!(state.len(), 64, "256 bits as hex");
    assert!(state.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(
        !h.table_dump().await.contains(&state),
        "only the state's digest is stored"
    );

    let callback = h.consent(&url).await;
    assert!(callback.query_param("auth_code").is_some());
    let replay = callback.clone();
    let page = h.send(callback).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.header("content-type")
            .unwrap_or("")
            .starts_with("text/html")
    );
    let html = page.text();
    assert!(html.contains("Sandbox Advertiser One") && html.contains(&h.adv(0)));
    assert!(html.contains("Sandbox Advertiser Two") && html.contains(&h.adv(1)));

    let r = h.call("GET", "/v1/projects/proj_1/integration", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json_body(),
        json!({
            "project_id": "proj_1",
            "status": "connected",
            "advertisers": [
                {"advertiser_id": h.adv(0), "advertiser_name": "Sandbox Advertiser One", "name_known": true},
                {"advertiser_id": h.adv(1), "advertiser_name": "Sandbox Advertiser Two", "name_known": true},
            ],
            "advertiser_names_known": true,
            "notice": null,
            // the sandbox's default app also grants the ad-account read permission (100)
            "scopes": [30, 31, 100],
            "mapping": null,
            "syncs": 0,
        })
    );

    // The token is in Secrets Manager only: not in the page, not in DynamoDB.
    let token = h.token("proj_1").await.expect("token stored in the vault");
    assert!(!html.contains(&token));
    assert!(!h.table_dump().await.contains(&token));
    assert!(!r.text().contains(&token));
    let logs = logged();
    assert!(logs.contains("TikTok connected"), "logs are captured");
    assert!(!logs.contains(&token), "the token is never logged");
    assert!(
        !logs.contains(h.sandbox.secret()),
        "the app secret is never logged"
    );
    assert!(!logs.contains(&state), "the OAuth state is never logged");

    // A replayed callback (same state) is refused and changes nothing.
    let again = h.send(replay).await;
    assert_eq!(again.status, 400);
    assert!(again.text().contains("unknown or was already used"));
    assert_eq!(h.token("proj_1").await.as_deref(), Some(token.as_str()));
}

#[tokio::test]
async fn declined_consent_connects_nothing() {
    let h = Harness::new().await;
    h.sandbox_post("/_sandbox/consent", json!({"mode": "deny"}))
        .await;
    let url = h.authorization_url("p_declined").await;
    let callback = h.consent(&url).await;
    assert_eq!(callback.query_param("error"), Some("access_denied"));
    let replay = callback.clone();
    let page = h.send(callback).await;
    assert_eq!(page.status, 400);
    assert!(page.text().contains("Connection declined"));
    assert!(page.text().contains("access_denied"));
    let r = h
        .call("GET", "/v1/projects/p_declined/integration", None)
        .await;
    assert_eq!(r.json_body()["status"], "not_connected");
    assert!(h.token("p_declined").await.is_none());
    // The state was used up by the decline.
    assert_eq!(h.send(replay).await.status, 400);
}

#[tokio::test]
async fn expired_and_unknown_states_are_refused() {
    let h = Harness::new().await;
    let url = h.authorization_url("p_exp").await;
    let callback = h.consent(&url).await;
    // Ten minutes and a bit later.
    h.clock_offset.store(601, Ordering::SeqCst);
    let page = h.send(callback).await;
    assert_eq!(page.status, 400);
    assert!(page.text().contains("expired"), "{}", page.text());
    assert!(h.token("p_exp").await.is_none());
    let r = h.call("GET", "/v1/projects/p_exp/integration", None).await;
    assert_eq!(r.json_body()["status"], "not_connected");

    // Just before expiry still works.
    h.clock_offset.store(0, Ordering::SeqCst);
    let url = h.authorization_url("p_exp").await;
    let callback = h.consent(&url).await;
    h.clock_offset.store(590, Ordering::SeqCst);
    assert_eq!(h.send(callback).await.status, 200);

    // Made-up state, missing state, missing code.
    let forged = h
        .send(ApiRequest::from_target(
            "GET",
            "/oauth/tiktok/callback?auth_code=abc&state=00ff",
        ))
        .await;
    assert_eq!(forged.status, 400);
    let no_state = h
        .send(ApiRequest::from_target(
            "GET",
            "/oauth/tiktok/callback?auth_code=abc",
        ))
        .await;
    assert_eq!(no_state.status, 400);
    let no_code = h
        .send(ApiRequest::from_target(
            "GET",
            "/oauth/tiktok/callback?state=00ff",
        ))
        .await;
    assert_eq!(no_code.status, 400);
}

#[tokio::test]
async fn a_state_written_expired_is_refused() {
    let h = Harness::new().await;
    // A state stored by another process whose expiry has passed (the store refuses it at consume time).
    let raw = "aa".repeat(32);
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(raw.as_bytes()));
    let now = Utc::now();
    h.state()
        .put_oauth_state(&OAuthState {
            state: digest,
            project_id: "p_old".into(),
            redirect_uri: CALLBACK.into(),
            created_at: now - chrono::Duration::minutes(20),
            expires_at: now - chrono::Duration::minutes(10),
        })
        .await
        .unwrap();
    let page = h
        .send(ApiRequest::from_target(
            "GET",
            &format!("/oauth/tiktok/callback?code=whatever&state={raw}"),
        ))
        .await;
    assert_eq!(page.status, 400);
    assert!(page.text().contains("expired"));
}

#[tokio::test]
async fn missing_audience_scopes_are_refused_and_the_token_dropped() {
    let app = AppSpec {
        app_id: "7300000000000000099".into(),
        secret: "0123456789abcdef0123456789abcdef01234567".into(),
        redirect_uris: vec!["http://127.0.0.1:*".into()],
        advertisers: vec![tiktok_sandbox::AdvertiserSpec {
            advertiser_id: "7100000000000000099".into(),
            advertiser_name: "Read Only Ads".into(),
        }],
        scopes: vec![30],
        streaming_allowed: false,
        advertiser_get_scope: None,
    };
    let h = Harness::with_app(Some(app)).await;
    let page = h.connect("p_scopes").await;
    assert_eq!(page.status, 403, "{}", page.text());
    assert!(page.text().contains("Audience Management"));
    assert!(h.token("p_scopes").await.is_none());
    let r = h
        .call("GET", "/v1/projects/p_scopes/integration", None)
        .await;
    assert_eq!(r.json_body()["status"], "not_connected");
    // The token we will not use was revoked at TikTok.
    let revoked = h
        .sandbox
        .requests()
        .iter()
        .any(|e| e.path.ends_with("oauth2/revoke_token/") && e.applied);
    assert!(revoked, "token revoked");
}

/// A TikTok app of the sandbox, from JSON (fields the test does not name take the sandbox's defaults).
fn sandbox_app(id_suffix: &str, scopes: &[i64], extra: Value) -> AppSpec {
    let mut app = json!({
        "app_id": format!("73000000000000{id_suffix}"),
        "secret": "0123456789abcdef0123456789abcdef01234567",
        "redirect_uris": ["http://127.0.0.1:*"],
        "advertisers": [{
            "advertiser_id": format!("71000000000000{id_suffix}"),
            "advertiser_name": "Parent Scope Ads",
        }],
        "scopes": scopes,
    });
    if let (Some(o), Some(more)) = (app.as_object_mut(), extra.as_object()) {
        o.extend(more.clone());
    }
    serde_json::from_value(app).expect("sandbox app spec")
}

#[tokio::test]
async fn the_parent_audience_permission_3_is_accepted_for_30_and_31() {
    let h = Harness::with_app(Some(sandbox_app("10003", &[3], json!({})))).await;
    let page = h.connect("p_scope3").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("Parent Scope Ads"), "{}", page.text());
    let token = h.token("p_scope3").await.expect("token stored");
    let i = h
        .call("GET", "/v1/projects/p_scope3/integration", None)
        .await
        .json_body();
    assert_eq!(i["status"], "connected");
    assert_eq!(i["scopes"], json!([3]));
    // The token works for audience reads (30) at TikTok with only the parent listed.
    let r: Value = h
        .http
        .get(format!(
            "{}/open_api/v1.3/dmp/custom_audience/list/?advertiser_id=7100000000000010003",
            h.sandbox.base_url
        ))
        .header("Access-Token", token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("envelope");
    assert_eq!(r["code"], 0, "{r}");
}

#[tokio::test]
async fn advertiser_listing_refused_keeps_the_token_and_uses_the_grants_ids() {
    // TikTok lists `oauth2/advertiser/get/` under the ad-account read permission (100); this app lacks it.
    let app = sandbox_app("10004", &[3], json!({"advertiser_get_scope": 100}));
    let h = Harness::with_app(Some(app)).await;
    let page = h.connect("p_noread").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    assert!(html.contains("names are unknown"), "{html}");
    assert!(html.contains("7100000000000010004"), "{html}");
    assert!(
        h.token("p_noread").await.is_some(),
        "the fresh token is kept"
    );
    let log = h.sandbox.requests();
    assert!(
        log.iter()
            .any(|e| e.path.ends_with("oauth2/advertiser/get/") && e.code == Some(40001)),
        "the listing was refused: {log:?}"
    );
    assert!(
        !log.iter().any(|e| e.path.ends_with("oauth2/revoke_token/")),
        "nothing revoked"
    );
    let i = h
        .call("GET", "/v1/projects/p_noread/integration", None)
        .await
        .json_body();
    assert_eq!(i["status"], "connected");
    assert_eq!(i["advertiser_names_known"], false);
    assert_eq!(
        i["advertisers"],
        json!([{"advertiser_id": "7100000000000010004", "advertiser_name": "", "name_known": false}])
    );
    assert!(
        i["notice"]
            .as_str()
            .is_some_and(|n| n.contains("read permission")),
        "{i}"
    );
}

#[tokio::test]
async fn a_refused_auth_code_shows_tiktoks_message_and_request_id() {
    let h = Harness::new().await;
    let url = h.authorization_url("p_bad_code").await;
    let state: String = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let page = h
        .send(ApiRequest::from_target(
            "GET",
            &format!("/oauth/tiktok/callback?auth_code=not-a-code&state={state}"),
        ))
        .await;
    assert_eq!(page.status, 502, "{}", page.text());
    let html = page.text();
    assert!(html.contains("auth_code is invalid"), "{html}");
    assert!(html.contains("request_id"), "{html}");
    assert!(h.token("p_bad_code").await.is_none());
}

// ------------------------------------------------------------------------------------------------ auth

#[tokio::test]
async fn authorization_failures() {
    let h = Harness::new().await;
    let routes = [
        ("POST", "/v1/projects/p1/connect"),
        ("GET", "/v1/projects/p1/integration"),
        ("DELETE", "/v1/projects/p1/integration"),
        ("PUT", "/v1/projects/p1/mapping"),
        ("GET", "/v1/projects/p1/syncs"),
        ("POST", "/v1/projects/p1/syncs"),
        ("GET", "/v1/projects/p1/syncs/S1/runs"),
        ("POST", "/v1/projects/p1/previews"),
        ("GET", "/v1/projects/bad.id/integration"),
        ("GET", "/v1/projects/p1/nothing-here"),
    ];
    for (m, p) in routes {
        let none = h.send(ApiRequest::new(m, p)).await;
        assert_eq!(none.status, 401, "{m} {p} without token");
        assert_eq!(error_code(&none), "unauthorized");
        let bads: Vec<String> = vec![
            "Bearer wrong-token-wrong-token-1234".into(),
            "Basic dGVzdDp0ZXN0".into(),
            "Bearer".into(),
            format!("Bearer {ADMIN_TOKEN}x"),
            format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
            ADMIN_TOKEN.to_string(),
        ];
        for bad in &bads {
            let r = h
                .send(ApiRequest::new(m, p).with_header("Authorization", bad))
                .await;
            assert_eq!(r.status, 401, "{m} {p} with {bad:?}");
        }
    }
    // The scheme is case-insensitive; the header name too.
    let ok = h
        .send(
            ApiRequest::new("GET", "/v1/projects/p1/integration")
                .with_header("authorization", &format!("bearer {ADMIN_TOKEN}")),
        )
        .await;
    assert_eq!(ok.status, 200);
    // Nothing was stored by refused calls.
    assert!(h.invoker.payloads().is_empty());
    // The callback is public (protected by its state only).
    let cb = h
        .send(ApiRequest::from_target(
            "GET",
            "/oauth/tiktok/callback?code=x&state=y",
        ))
        .await;
    assert_eq!(cb.status, 400);
}

#[tokio::test]
async fn project_ids_are_validated() {
    let h = Harness::new().await;
    let long = "a".repeat(65);
    for bad in ["bad.id", "a%20b", "p$1", long.as_str()] {
        let r = h
            .call("GET", &format!("/v1/projects/{bad}/integration"), None)
            .await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(error_code(&r), "invalid_request");
    }
    let ok64 = "A-z_9".repeat(12) + "abcd";
    assert_eq!(ok64.len(), 64);
    let r = h
        .call("GET", &format!("/v1/projects/{ok64}/integration"), None)
        .await;
    assert_eq!(r.status, 200);
    let r = h.call("GET", "/v1/projects/p1/unknown", None).await;
    assert_eq!((r.status, error_code(&r).as_str()), (404, "not_found"));
    let r = h.call("PATCH", "/v1/projects/p1/mapping", None).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn each_function_serves_only_its_routes() {
    let h = Harness::new().await;
    // Rebuild the same API restricted like the Lambda functions are (API Gateway routes by path).
    let adapters = &h.adapters;
    let deps = ApiDeps {
        state: adapters.state.clone(),
        vault: adapters.vault.clone(),
        cohorts: adapters.cohorts.clone(),
        schedules: adapters.schedules.clone().unwrap(),
        invoker: h.invoker.clone(),
        tiktok: TikTokClient::new(ClientConfig {
            host: h.sandbox.base_url.clone(),
            ..ClientConfig::default()
        })
        .unwrap(),
    };
    let settings = ApiSettings {
        callback_url: Some(CALLBACK.into()),
        ..ApiSettings::default()
    };
    let oauth = Api::new(deps.clone(), settings.clone(), Routes::OAuthCallback);
    let save = Api::new(deps, settings, Routes::SaveMapping);
    let req = |m: &str, p: &str| ApiRequest::new(m, p).with_bearer(ADMIN_TOKEN);
    assert_eq!(
        oauth
            .handle(req("POST", "/v1/projects/p/connect"))
            .await
            .status,
        200
    );
    assert_eq!(
        oauth
            .handle(req("GET", "/v1/projects/p/integration"))
            .await
            .status,
        404
    );
    assert_eq!(
        save.handle(req("GET", "/v1/projects/p/integration"))
            .await
            .status,
        200
    );
    assert_eq!(
        save.handle(req("POST", "/v1/projects/p/connect"))
            .await
            .status,
        404
    );
    assert_eq!(
        save.handle(req("GET", "/oauth/tiktok/callback"))
            .await
            .status,
        404
    );
}

// ------------------------------------------------------------------------------------------------ mapping

#[tokio::test]
async fn mapping_is_canonical_and_immutable() {
    let h = Harness::new().await;
    let put = |body: Value| h.call("PUT", "/v1/projects/pm/mapping", Some(body));
    let r = put(json!({"amplitude_property": "email", "tiktok_key": "EMAIL"})).await;
    assert_eq!((r.status, error_code(&r).as_str()), (409, "not_connected"));

    h.connect_ok("pm").await;
    for bad in [
        json!({"amplitude_property": "  ", "tiktok_key": "EMAIL"}),
        json!({"amplitude_property": "email", "tiktok_key": "MAID"}),
        json!({"amplitude_property": "email"}),
        json!({"amplitude_property": "email", "tiktok_key": "EMAIL", "extra": 1}),
        json!({"amplitude_property": "email", "tiktok_key": "EMAIL", "default_phone_region": "US"}),
        json!({"amplitude_property": "phone", "tiktok_key": "PHONE", "default_phone_region": "ZZ"}),
        json!([1, 2]),
    ] {
        let r = put(bad.clone()).await;
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (400, "invalid_request"),
            "{bad}"
        );
    }
    let r = h
        .send(
            ApiRequest::new("PUT", "/v1/projects/pm/mapping")
                .with_bearer(ADMIN_TOKEN)
                .with_header("content-type", "application/json"),
        )
        .await;
    assert_eq!(r.status, 400, "empty body");

    let r = put(json!({"amplitude_property": " Phone Number ", "tiktok_key": "phone", "default_phone_region": "us"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let stored = json!({"amplitude_property": "Phone Number", "tiktok_key": "PHONE", "default_phone_region": "US"});
    assert_eq!(r.json_body(), stored);
    // Identical (property compared case-insensitively, as columns are matched).
    let r = put(json!({"amplitude_property": "phone number", "tiktok_key": "PHONE", "default_phone_region": "US"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json_body(), stored);
    // Any other mapping is locked.
    for other in [
        json!({"amplitude_property": "email", "tiktok_key": "EMAIL"}),
        json!({"amplitude_property": "Phone Number", "tiktok_key": "PHONE", "default_phone_region": "GB"}),
        json!({"amplitude_property": "Phone Number", "tiktok_key": "PHONE"}),
    ] {
        let r = put(other.clone()).await;
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (409, "mapping_locked"),
            "{other}"
        );
    }
    let r = h.call("GET", "/v1/projects/pm/integration", None).await;
    assert_eq!(r.json_body()["mapping"], stored);
}

// ------------------------------------------------------------------------------------------------ syncs

#[tokio::test]
async fn sync_creation_preconditions() {
    let h = Harness::new().await;
    let body = |adv: &str| json!({"cohort_id": "coh1", "advertiser_id": adv, "cadence": "daily"});
    let r = h
        .call("POST", "/v1/projects/ps/syncs", Some(body(&h.adv(0))))
        .await;
    assert_eq!((r.status, error_code(&r).as_str()), (409, "not_connected"));
    h.connect_ok("ps").await;
    let r = h
        .call("POST", "/v1/projects/ps/syncs", Some(body(&h.adv(0))))
        .await;
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (409, "mapping_missing")
    );
    h.map_email("ps").await;
    let r = h
        .call(
            "POST",
            "/v1/projects/ps/syncs",
            Some(body("7199999999999999999")),
        )
        .await;
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (409, "advertiser_not_authorized")
    );
    for bad in [
        json!({"cohort_id": "coh1", "advertiser_id": h.adv(0), "cadence": "weekly"}),
        json!({"cohort_id": "coh 1", "advertiser_id": h.adv(0), "cadence": "daily"}),
        json!({"cohort_id": "coh1", "advertiser_id": h.adv(0)}),
        json!({"cohort_id": "coh1", "advertiser_id": h.adv(0), "cadence": "daily", "write_mode": "fast"}),
        json!({"cohort_id": "coh1", "advertiser_id": h.adv(0), "cadence": "daily", "max_removal_ratio": 2}),
        json!({"cohort_id": "coh1", "advertiser_id": h.adv(0), "cadence": "daily", "audience_name": ""}),
        json!({"cohort_id": "coh1", "advertiser_id": 7100000000000000001u64, "cadence": "daily"}),
    ] {
        let r = h
            .call("POST", "/v1/projects/ps/syncs", Some(bad.clone()))
            .await;
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (400, "invalid_request"),
            "{bad}"
        );
    }
    // reconnect_required is not connected for new syncs.
    h.state()
        .set_integration_status("ps", IntegrationStatus::ReconnectRequired, Utc::now())
        .await
        .unwrap();
    let r = h
        .call("POST", "/v1/projects/ps/syncs", Some(body(&h.adv(0))))
        .await;
    assert_eq!((r.status, error_code(&r).as_str()), (409, "not_connected"));
    assert!(h.invoker.payloads().is_empty());
}

#[tokio::test]
async fn sync_lifecycle_idempotency_schedules_and_json() {
    let h = Harness::new().await;
    h.connect_ok("pl").await;
    h.map_email("pl").await;
    let create = json!({"cohort_id": "cohA", "advertiser_id": h.adv(0), "cadence": "hourly", "audience_name": "Buyers"});
    let r = h
        .call("POST", "/v1/projects/pl/syncs", Some(create.clone()))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let sync = r.json_body();
    assert_eq!(keys(&sync), set(SYNC_KEYS));
    let id = sync["sync_id"].as_str().unwrap().to_string();
    assert_eq!(sync["project_id"], "pl");
    assert_eq!(sync["cadence"], "hourly");
    assert_eq!(sync["write_mode"], "customer_file");
    assert_eq!(sync["state"], "active");
    assert_eq!(sync["max_removal_ratio"], 0.5);
    assert_eq!(sync["min_create_size"], 1000);
    assert_eq!(sync["tiktok_audience_id"], Value::Null);
    assert_eq!(sync["last_run"], Value::Null);
    let warnings = sync["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].as_str().unwrap().contains("24"));
    let sched = h
        .schedules()
        .get_schedule(&id)
        .await
        .unwrap()
        .expect("schedule");
    assert!(sched.enabled);
    assert_eq!(sched.expression, "rate(1 hour)");
    assert_eq!(
        serde_json::from_str::<Value>(&sched.input).unwrap(),
        json!({"trigger": "schedule", "project_id": "pl", "sync_id": id})
    );
    // Hourly syncs are started by their schedule, not at creation.
    assert!(h.invoker.payloads().is_empty());

    // The same request: the same sync, 200.
    let r = h
        .call("POST", "/v1/projects/pl/syncs", Some(create.clone()))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json_body()["sync_id"], id.as_str());
    // The same triple with other fields: conflict naming the sync.
    let mut other = create.clone();
    other["cadence"] = json!("daily");
    let r = h.call("POST", "/v1/projects/pl/syncs", Some(other)).await;
    assert_eq!((r.status, error_code(&r).as_str()), (409, "conflict"));
    assert!(
        r.json_body()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&id)
    );
    // Another write mode is another sync; streaming hourly has no budget warning.
    let mut streaming = create.clone();
    streaming["write_mode"] = json!("streaming");
    let r = h
        .call("POST", "/v1/projects/pl/syncs", Some(streaming))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json_body()["warnings"], json!([]));
    let id2 = r.json_body()["sync_id"].as_str().unwrap().to_string();

    let r = h.call("GET", "/v1/projects/pl/syncs", None).await;
    let list = r.json_body()["syncs"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert_eq!(
        h.call("GET", "/v1/projects/pl/integration", None)
            .await
            .json_body()["syncs"],
        2
    );
    let r = h
        .call("GET", &format!("/v1/projects/pl/syncs/{id}"), None)
        .await;
    assert_eq!(r.json_body(), sync);
    // Another project does not see it.
    let r = h
        .call("GET", &format!("/v1/projects/other/syncs/{id}"), None)
        .await;
    assert_eq!((r.status, error_code(&r).as_str()), (404, "not_found"));

    // PATCH: pause disables the schedule, resume enables it, cadence changes move it.
    let path = format!("/v1/projects/pl/syncs/{id}");
    let r = h
        .call(
            "PATCH",
            &path,
            Some(json!({"paused": true, "max_removal_ratio": 0.2, "min_create_size": 5000})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json_body()["state"], "paused");
    assert_eq!(r.json_body()["max_removal_ratio"], 0.2);
    assert_eq!(r.json_body()["min_create_size"], 5000);
    assert!(
        !h.schedules()
            .get_schedule(&id)
            .await
            .unwrap()
            .unwrap()
            .enabled
    );
    let r = h
        .call(
            "PATCH",
            &path,
            Some(json!({"paused": false, "cadence": "daily"})),
        )
        .await;
    assert_eq!(r.json_body()["state"], "active");
    assert_eq!(r.json_body()["warnings"], json!([]));
    let s = h.schedules().get_schedule(&id).await.unwrap().unwrap();
    assert!(s.enabled);
    assert_eq!(s.expression, "rate(1 day)");
    // Resumed: a run applies what arrived while paused.
    assert_eq!(
        h.invoker.take(),
        vec![json!({"trigger": "manual", "project_id": "pl", "sync_id": id})]
    );
    for bad in [
        json!({"cadence": "weekly"}),
        json!({"paused": "yes"}),
        json!({"max_removal_ratio": -1}),
        json!({"min_create_size": 0}),
        json!({"write_mode": "streaming"}),
    ] {
        let r = h.call("PATCH", &path, Some(bad.clone())).await;
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (400, "invalid_request"),
            "{bad}"
        );
    }
    let r = h
        .call("PATCH", &path, Some(json!({"cadence": "on_upload"})))
        .await;
    assert_eq!(r.json_body()["cadence"], "on_upload");
    assert!(
        h.schedules().get_schedule(&id).await.unwrap().is_none(),
        "schedule removed"
    );
    let r = h
        .call(
            "PATCH",
            "/v1/projects/pl/syncs/NOSUCHSYNC",
            Some(json!({"paused": true})),
        )
        .await;
    assert_eq!(r.status, 404);

    // Run now.
    let r = h.call("POST", &format!("{path}/run"), None).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json_body(), json!({"accepted": true}));
    assert_eq!(
        h.invoker.take(),
        vec![json!({"trigger": "manual", "project_id": "pl", "sync_id": id})]
    );
    let r = h
        .call("POST", "/v1/projects/pl/syncs/NOSUCHSYNC/run", None)
        .await;
    assert_eq!(r.status, 404);

    // DELETE: 204, then gone; the schedule of the hourly one goes with it.
    assert!(h.schedules().get_schedule(&id2).await.unwrap().is_some());
    let r = h
        .call("DELETE", &format!("/v1/projects/pl/syncs/{id2}"), None)
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert!(h.schedules().get_schedule(&id2).await.unwrap().is_none());
    let r = h
        .call("GET", &format!("/v1/projects/pl/syncs/{id2}"), None)
        .await;
    assert_eq!(r.status, 404);
    let r = h
        .call("DELETE", &format!("/v1/projects/pl/syncs/{id2}"), None)
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn resuming_a_paused_sync_runs_it_and_completed_is_derived() {
    let h = Harness::new().await;
    h.connect_ok("pr").await;
    h.map_email("pr").await;
    let r = h
        .call(
            "POST",
            "/v1/projects/pr/syncs",
            Some(json!({"cohort_id": "cohR", "advertiser_id": h.adv(0), "cadence": "on_upload"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json_body()["sync_id"].as_str().unwrap().to_string();
    let path = format!("/v1/projects/pr/syncs/{id}");
    let patch = |body: Value| {
        let path = path.clone();
        let h = &h;
        async move {
            let r = h.call("PATCH", &path, Some(body)).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json_body()
        }
    };
    // Pausing (twice) and editing start nothing.
    assert_eq!(patch(json!({"paused": true})).await["state"], "paused");
    assert_eq!(patch(json!({"paused": true})).await["state"], "paused");
    patch(json!({"max_removal_ratio": 0.3})).await;
    assert!(h.invoker.payloads().is_empty());
    // Resuming runs it once: exports that arrived while paused are applied now (the runner's trigger type).
    assert_eq!(patch(json!({"paused": false})).await["state"], "active");
    let manual = Trigger::Manual {
        project_id: "pr".into(),
        sync_id: id.clone(),
    };
    assert_eq!(h.invoker.take(), vec![manual.to_json()]);
    // Already active: nothing more.
    patch(json!({"paused": false})).await;
    assert!(h.invoker.payloads().is_empty());

    // A one-time sync whose export the engine applied shows completed (derived from its progress)...
    patch(json!({"cadence": "one_time"})).await;
    let key = "cohorts/cohR_2024-03-05T14:07_existing.csv";
    as_run(&h, "pr", &id, |p| p.one_time_done = Some(key.into()), &[]).await;
    let s = h.call("GET", &path, None).await.json_body();
    assert_eq!(s["state"], "completed");
    // ...is not run again by a pause and resume...
    assert_eq!(patch(json!({"paused": true})).await["state"], "paused");
    assert_eq!(patch(json!({"paused": false})).await["state"], "completed");
    assert!(h.invoker.payloads().is_empty());
    // ...and given another cadence it runs again (here: daily, its schedule enabled).
    assert_eq!(patch(json!({"cadence": "daily"})).await["state"], "active");
    assert!(
        h.schedules()
            .get_schedule(&id)
            .await
            .unwrap()
            .unwrap()
            .enabled
    );

    // Not connected: resuming starts nothing (the run could not reach TikTok).
    patch(json!({"paused": true})).await;
    h.state()
        .set_integration_status("pr", IntegrationStatus::ReconnectRequired, Utc::now())
        .await
        .unwrap();
    assert_eq!(patch(json!({"paused": false})).await["state"], "active");
    assert!(h.invoker.payloads().is_empty());
    assert!(
        !h.schedules()
            .get_schedule(&id)
            .await
            .unwrap()
            .unwrap()
            .enabled
    );
}

#[tokio::test]
async fn one_time_sync_starts_on_an_existing_export() {
    let h = Harness::new().await;
    h.connect_ok("po").await;
    h.map_email("po").await;
    // No export yet: nothing is started (the next upload will).
    let r = h
        .call(
            "POST",
            "/v1/projects/po/syncs",
            Some(json!({"cohort_id": "cohNone", "advertiser_id": h.adv(0), "cadence": "one_time"})),
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(h.invoker.payloads().is_empty());
    assert!(
        h.schedules()
            .get_schedule(r.json_body()["sync_id"].as_str().unwrap())
            .await
            .unwrap()
            .is_none()
    );

    h.put_export(
        "cohorts/cohX_2024-03-05T14:07_existing.csv",
        "email\na@example.com\n",
    )
    .await;
    let r = h
        .call("POST", "/v1/projects/po/syncs", Some(json!({"cohort_id": "cohX", "advertiser_id": h.adv(1), "cadence": "one_time", "write_mode": "streaming"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json_body()["sync_id"].as_str().unwrap().to_string();
    assert_eq!(
        h.invoker.payloads(),
        vec![json!({"trigger": "manual", "project_id": "po", "sync_id": id})]
    );
}

#[tokio::test]
async fn audience_limit_and_tiktok_errors() {
    let h = Harness::new().await;
    h.connect_ok("pa").await;
    h.map_email("pa").await;
    let token = AccessToken::new(h.token("pa").await.unwrap());
    let client = TikTokClient::new(ClientConfig {
        host: h.sandbox.base_url.clone(),
        rate_per_second: 10_000.0,
        ..ClientConfig::default()
    })
    .unwrap();
    for i in 0..400 {
        client
            .create_segment_audience(&token, &h.adv(0), &format!("full {i}"))
            .await
            .expect("create audience");
    }
    let r = h
        .call(
            "POST",
            "/v1/projects/pa/syncs",
            Some(json!({"cohort_id": "c1", "advertiser_id": h.adv(0), "cadence": "on_upload"})),
        )
        .await;
    assert_eq!((r.status, error_code(&r).as_str()), (409, "audience_limit"));
    assert!(
        r.json_body()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("400")
    );
    // The other advertiser has room.
    let r = h
        .call(
            "POST",
            "/v1/projects/pa/syncs",
            Some(json!({"cohort_id": "c1", "advertiser_id": h.adv(1), "cadence": "on_upload"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());

    // TikTok failing the audience count: 502 tiktok_error, nothing created.
    h.sandbox_post(
        "/_sandbox/faults",
        json!({"rate": 1.0, "codes": [40000], "paths": ["/open_api/v1.3/dmp/custom_audience/list/"]}),
    )
    .await;
    let r = h
        .call(
            "POST",
            "/v1/projects/pa/syncs",
            Some(json!({"cohort_id": "c2", "advertiser_id": h.adv(1), "cadence": "on_upload"})),
        )
        .await;
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (502, "tiktok_error"),
        "{}",
        r.text()
    );
    assert_eq!(
        h.call("GET", "/v1/projects/pa/syncs", None)
            .await
            .json_body()["syncs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

// ------------------------------------------------------------------------------------------------ disconnect

/// Every version and delete marker under a prefix of the harness's bucket.
async fn versions_under(h: &Harness, prefix: &str) -> Vec<String> {
    let out = h
        .env
        .clients
        .s3
        .list_object_versions()
        .bucket(&h.env.bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list versions");
    let versions = out.versions().iter().map(|v| v.key());
    let markers = out.delete_markers().iter().map(|m| m.key());
    versions
        .chain(markers)
        .map(|k| k.unwrap_or_default().to_string())
        .collect()
}

/// Issue 12 item 6: deleting a sync and disconnecting leave no snapshot version (hashed identifiers), no
/// report and no run record of it, including objects of a sync the table no longer lists (a run that wrote
/// after its sync was deleted) and the project's preview reports. Another project's objects stay.
#[tokio::test]
async fn delete_and_disconnect_leave_no_objects_or_runs() {
    let h = Harness::new().await;
    h.connect_ok("pz").await;
    h.map_email("pz").await;
    let mut ids = Vec::new();
    for cohort in ["cohZ1", "cohZ2"] {
        let body = json!({"cohort_id": cohort, "advertiser_id": h.adv(0), "cadence": "on_upload"});
        let r = h.call("POST", "/v1/projects/pz/syncs", Some(body)).await;
        assert_eq!(r.status, 201, "{}", r.text());
        ids.push(r.json_body()["sync_id"].as_str().unwrap().to_string());
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.snapshot");
    std::fs::write(&file, b"digests").unwrap();
    let cohorts = h.adapters.cohorts.clone();
    for sync in ids.iter().map(String::as_str).chain(["GONE1"]) {
        let first = cohorts
            .put_snapshot("pz", sync, "R1-1", &file)
            .await
            .unwrap();
        // A retried PUT (a second version), a newer snapshot, and a plain delete: a marker over versions
        // that still hold the digests.
        cohorts
            .put_snapshot("pz", sync, "R1-1", &file)
            .await
            .unwrap();
        cohorts
            .put_snapshot("pz", sync, "R2-2", &file)
            .await
            .unwrap();
        h.env
            .clients
            .s3
            .delete_object()
            .bucket(&h.env.bucket)
            .key(&first.key)
            .send()
            .await
            .unwrap();
        cohorts
            .put_run_report("pz", sync, "R1", &json!({"rows": 1}))
            .await
            .unwrap();
    }
    for sync in &ids {
        let run = ledger("pz", sync, &ulid::Ulid::new().to_string());
        as_run(&h, "pz", sync, |_| {}, std::slice::from_ref(&run)).await;
    }
    cohorts
        .put_preview_report("pz", "PV1", &json!({"rows": 1}))
        .await
        .unwrap();
    // Another project whose id starts with this one's.
    cohorts
        .put_snapshot("pzz", "S1", "R1-1", &file)
        .await
        .unwrap();
    let snaps = "audience-sync/snapshots";
    let reports = "audience-sync/reports";
    assert_eq!(
        versions_under(&h, &format!("{snaps}/pz/{}/", ids[0]))
            .await
            .len(),
        4
    );

    let r = h
        .call("DELETE", &format!("/v1/projects/pz/syncs/{}", ids[0]), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    for prefix in [snaps, reports] {
        let left = versions_under(&h, &format!("{prefix}/pz/{}/", ids[0])).await;
        assert!(left.is_empty(), "after the sync's deletion: {left:?}");
    }
    assert!(
        h.state()
            .list_runs(&ids[0], 10, None)
            .await
            .unwrap()
            .runs
            .is_empty()
    );
    let other = versions_under(&h, &format!("{snaps}/pz/{}/", ids[1])).await;
    assert_eq!(other.len(), 4, "the other sync's objects stay");

    let r = h.call("DELETE", "/v1/projects/pz/integration", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for prefix in [snaps, reports] {
        let left = versions_under(&h, &format!("{prefix}/pz/")).await;
        assert!(left.is_empty(), "after the disconnect: {left:?}");
    }
    assert!(
        h.state()
            .list_runs(&ids[1], 10, None)
            .await
            .unwrap()
            .runs
            .is_empty()
    );
    assert_eq!(versions_under(&h, &format!("{snaps}/pzz/")).await.len(), 1);
}

/// `keep_history=true`: each sync's runs stay readable (through a retired marker) while its schedule,
/// snapshots and reports go as in a plain disconnect; the mapping and uniqueness guards go, so a reconnect
/// can map again and recreate the sync. A later plain disconnect or a delete removes the history.
#[tokio::test]
async fn disconnect_can_keep_run_history() {
    let h = Harness::new().await;
    h.connect_ok("ph").await;
    h.map_email("ph").await;
    let body = json!({"cohort_id": "cohH", "advertiser_id": h.adv(0), "cadence": "daily"});
    let r = h
        .call("POST", "/v1/projects/ph/syncs", Some(body.clone()))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json_body()["sync_id"].as_str().unwrap().to_string();
    let run = ledger("ph", &id, &ulid::Ulid::new().to_string());
    as_run(&h, "ph", &id, |_| {}, std::slice::from_ref(&run)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.snapshot");
    std::fs::write(&file, b"digests").unwrap();
    let cohorts = h.adapters.cohorts.clone();
    cohorts
        .put_snapshot("ph", &id, "R1-1", &file)
        .await
        .unwrap();
    assert!(h.schedules().get_schedule(&id).await.unwrap().is_some());

    let r = h
        .call(
            "DELETE",
            "/v1/projects/ph/integration?keep_history=true",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json_body()["history_kept"], json!([id]));
    // What a plain disconnect deletes is gone.
    assert!(h.schedules().get_schedule(&id).await.unwrap().is_none());
    let left = versions_under(&h, "audience-sync/snapshots/ph/").await;
    assert!(left.is_empty(), "{left:?}");
    let r = h
        .call("GET", &format!("/v1/projects/ph/syncs/{id}"), None)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        h.call("GET", "/v1/projects/ph/integration", None)
            .await
            .json_body()["status"],
        "not_connected"
    );
    // The history is readable at the usual routes, and the project is still listed.
    let runs = h
        .call("GET", &format!("/v1/projects/ph/syncs/{id}/runs"), None)
        .await;
    assert_eq!(runs.status, 200, "{}", runs.text());
    assert_eq!(runs.json_body()["runs"][0]["run_id"], json!(run.run_id));
    let one = h
        .call(
            "GET",
            &format!("/v1/projects/ph/syncs/{id}/runs/{}", run.run_id),
            None,
        )
        .await;
    assert_eq!(one.json_body()["rows"], json!(run.rows));
    let retired = h
        .call("GET", "/v1/projects/ph/retired-syncs", None)
        .await
        .json_body();
    let r0 = &retired["retired_syncs"][0];
    assert_eq!(
        (r0["sync_id"].clone(), r0["cohort_id"].clone()),
        (json!(id), json!("cohH"))
    );
    assert_eq!(r0["cadence"], "daily");
    let projects = h.call("GET", "/v1/projects", None).await.json_body();
    let listed = projects["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["project_id"] == "ph")
        .cloned()
        .expect("a project with history is listed");
    assert_eq!(
        (listed["status"].clone(), listed["retired_syncs"].clone()),
        (json!("not_connected"), json!(1))
    );
    // Another project cannot read it.
    let r = h
        .call("GET", &format!("/v1/projects/other/syncs/{id}/runs"), None)
        .await;
    assert_eq!(r.status, 404);

    // Reconnect: another key can be mapped, and the same sync can be created again (a new one).
    h.connect_ok("ph").await;
    let r = h
        .call(
            "PUT",
            "/v1/projects/ph/mapping",
            Some(json!({"amplitude_property": "gaid", "tiktok_key": "GAID"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = h.call("POST", "/v1/projects/ph/syncs", Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_ne!(r.json_body()["sync_id"], json!(id));

    // A plain disconnect deletes the kept history too.
    let r = h.call("DELETE", "/v1/projects/ph/integration", None).await;
    assert_eq!(r.json_body()["history_kept"], json!([]));
    assert!(
        h.state()
            .list_runs(&id, 10, None)
            .await
            .unwrap()
            .runs
            .is_empty()
    );
    let r = h
        .call("GET", &format!("/v1/projects/ph/syncs/{id}/runs"), None)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        h.call("GET", "/v1/projects/ph/retired-syncs", None)
            .await
            .json_body(),
        json!({"retired_syncs": []})
    );
}

/// Deleting one retired sync's history removes its runs and marker; other projects' markers are untouched.
#[tokio::test]
async fn a_kept_history_can_be_deleted() {
    let h = Harness::new().await;
    h.connect_ok("pk").await;
    h.map_email("pk").await;
    let body = json!({"cohort_id": "cohK", "advertiser_id": h.adv(0), "cadence": "on_upload"});
    let r = h.call("POST", "/v1/projects/pk/syncs", Some(body)).await;
    let id = r.json_body()["sync_id"].as_str().unwrap().to_string();
    let run = ledger("pk", &id, &ulid::Ulid::new().to_string());
    as_run(&h, "pk", &id, |_| {}, std::slice::from_ref(&run)).await;
    h.call(
        "DELETE",
        "/v1/projects/pk/integration?keep_history=true",
        None,
    )
    .await;
    let r = h
        .call(
            "DELETE",
            &format!("/v1/projects/other/retired-syncs/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "another project's path does not reach it");
    let r = h
        .call(
            "DELETE",
            &format!("/v1/projects/pk/retired-syncs/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(
        h.state()
            .list_runs(&id, 10, None)
            .await
            .unwrap()
            .runs
            .is_empty()
    );
    assert!(
        h.state()
            .get_retired_sync("pk", &id)
            .await
            .unwrap()
            .is_none()
    );
    let r = h
        .call(
            "DELETE",
            &format!("/v1/projects/pk/retired-syncs/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn disconnect_then_reconnect() {
    let h = Harness::new().await;
    h.connect_ok("pd").await;
    h.map_email("pd").await;
    let r = h
        .call(
            "POST",
            "/v1/projects/pd/syncs",
            Some(json!({"cohort_id": "cohD", "advertiser_id": h.adv(0), "cadence": "daily"})),
        )
        .await;
    let id = r.json_body()["sync_id"].as_str().unwrap().to_string();
    // As if a run had created the audience.
    as_run(
        &h,
        "pd",
        &id,
        |p| p.tiktok_audience_id = Some("900000000000000001".into()),
        &[ledger("pd", &id, &ulid::Ulid::new().to_string())],
    )
    .await;
    let token = h.token("pd").await.unwrap();

    let r = h.call("DELETE", "/v1/projects/pd/integration", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json_body(),
        json!({"audiences_kept": ["900000000000000001"], "history_kept": []})
    );
    assert!(h.token("pd").await.is_none(), "secret deleted");
    assert!(h.schedules().get_schedule(&id).await.unwrap().is_none());
    assert!(h.state().get_sync("pd", &id).await.unwrap().is_none());
    assert!(
        h.state()
            .list_runs(&id, 10, None)
            .await
            .unwrap()
            .runs
            .is_empty()
    );
    let r = h.call("GET", "/v1/projects/pd/integration", None).await;
    assert_eq!(r.json_body()["status"], "not_connected");
    assert_eq!(r.json_body()["mapping"], Value::Null);
    assert_eq!(r.json_body()["syncs"], 0);
    // The token was revoked at TikTok.
    let probe = TikTokClient::new(ClientConfig {
        host: h.sandbox.base_url.clone(),
        ..ClientConfig::default()
    })
    .unwrap();
    let err = probe.user_info(&AccessToken::new(token)).await.unwrap_err();
    assert_eq!(err.code(), Some(40105));
    // Idempotent.
    let r = h.call("DELETE", "/v1/projects/pd/integration", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json_body(),
        json!({"audiences_kept": [], "history_kept": []})
    );

    // Reconnect works at once (secret deleted without recovery window), and a new mapping may be chosen.
    h.connect_ok("pd").await;
    let r = h.call("GET", "/v1/projects/pd/integration", None).await;
    assert_eq!(r.json_body()["status"], "connected");
    let r = h
        .call(
            "PUT",
            "/v1/projects/pd/mapping",
            Some(json!({"amplitude_property": "gaid", "tiktok_key": "GAID"})),
        )
        .await;
    assert_eq!(r.status, 201);
}

#[tokio::test]
async fn reconnect_reenables_the_schedules_the_runner_disabled() {
    let h = Harness::new().await;
    h.connect_ok("pr").await;
    h.map_email("pr").await;
    let mut ids = Vec::new();
    for (cohort, cadence) in [("c1", "hourly"), ("c2", "daily"), ("c3", "daily")] {
        let r = h
            .call(
                "POST",
                "/v1/projects/pr/syncs",
                Some(json!({"cohort_id": cohort, "advertiser_id": h.adv(0), "cadence": cadence})),
            )
            .await;
        assert_eq!(r.status, 201);
        ids.push(r.json_body()["sync_id"].as_str().unwrap().to_string());
    }
    let r = h
        .call(
            "PATCH",
            &format!("/v1/projects/pr/syncs/{}", ids[2]),
            Some(json!({"paused": true})),
        )
        .await;
    assert_eq!(r.status, 200);
    // What the runner does on a reconnect-class error.
    h.state()
        .set_integration_status("pr", IntegrationStatus::ReconnectRequired, Utc::now())
        .await
        .unwrap();
    for id in &ids {
        h.schedules().set_schedule_enabled(id, false).await.unwrap();
    }
    let r = h.call("GET", "/v1/projects/pr/integration", None).await;
    assert_eq!(r.json_body()["status"], "reconnect_required");
    // Run now is refused while not connected.
    let r = h
        .call(
            "POST",
            &format!("/v1/projects/pr/syncs/{}/run", ids[0]),
            None,
        )
        .await;
    assert_eq!((r.status, error_code(&r).as_str()), (409, "not_connected"));

    h.connect_ok("pr").await;
    let r = h.call("GET", "/v1/projects/pr/integration", None).await;
    assert_eq!(r.json_body()["status"], "connected");
    assert_eq!(
        r.json_body()["mapping"]["tiktok_key"],
        "EMAIL",
        "mapping kept"
    );
    let mut enabled = Vec::new();
    for id in &ids {
        enabled.push(
            h.schedules()
                .get_schedule(id)
                .await
                .unwrap()
                .unwrap()
                .enabled,
        );
    }
    assert_eq!(
        enabled,
        vec![true, true, false],
        "active syncs' schedules re-enabled; a paused sync's stays disabled"
    );
}

// ------------------------------------------------------------------------------------------------ runs

fn ledger(project: &str, sync_id: &str, run_id: &str) -> RunLedger {
    RunLedger {
        run_id: run_id.into(),
        sync_id: sync_id.into(),
        project_id: project.into(),
        trigger: RunTrigger::Upload,
        source_export: Some("cohorts/c_2024-03-05T14:07_existing.csv".into()),
        state: RunState::Succeeded,
        reason: None,
        started_at: Utc::now(),
        finished_at: Some(Utc::now()),
        rows: 10,
        valid: 8,
        unique: 7,
        duplicates: 1,
        skipped: [("empty".to_string(), 2u64)].into_iter().collect(),
        adds: ChangeCounts {
            planned: 7,
            applied: 7,
            held: 0,
            deferred: 0,
        },
        removes: ChangeCounts::default(),
        tiktok_calls: 3,
        tiktok_request_ids: vec!["req-1".into()],
        uncertain_resent: 0,
        uncertain_left: 0,
        fence: 1,
        audience_size: None,
        matched: None,
    }
}

/// Writes what a run writes, through the engine's calls (lease, fenced progress and ledgers, release): the
/// API's own `update_sync` never touches progress.
async fn as_run(
    h: &Harness,
    project: &str,
    sync_id: &str,
    change: impl FnOnce(&mut SyncProgress),
    runs: &[RunLedger],
) {
    let st = h.state();
    let holder = ulid::Ulid::new().to_string();
    let lease = match st
        .acquire_lease(
            project,
            sync_id,
            &holder,
            Duration::from_secs(60),
            Utc::now(),
        )
        .await
        .unwrap()
    {
        LeaseOutcome::Acquired(l) => l,
        other => panic!("lease: {other:?}"),
    };
    let fence = lease.fence();
    let mut progress = st
        .get_sync(project, sync_id)
        .await
        .unwrap()
        .expect("sync")
        .progress;
    change(&mut progress);
    assert!(
        st.save_progress(project, sync_id, &fence, &progress)
            .await
            .unwrap()
    );
    for run in runs {
        assert!(st.put_run(&fence, run).await.unwrap(), "run {}", run.run_id);
    }
    assert!(st.release_lease(project, sync_id, &fence).await.unwrap());
}

#[tokio::test]
async fn runs_are_paginated_newest_first() {
    let h = Harness::new().await;
    h.connect_ok("pn").await;
    h.map_email("pn").await;
    let r = h
        .call(
            "POST",
            "/v1/projects/pn/syncs",
            Some(json!({"cohort_id": "c", "advertiser_id": h.adv(0), "cadence": "on_upload"})),
        )
        .await;
    let id = r.json_body()["sync_id"].as_str().unwrap().to_string();
    let mut run_ids = Vec::new();
    for _ in 0..3 {
        let run_id = ulid::Ulid::new().to_string();
        as_run(&h, "pn", &id, |_| {}, &[ledger("pn", &id, &run_id)]).await;
        run_ids.push(run_id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let base = format!("/v1/projects/pn/syncs/{id}/runs");
    let r = h.call("GET", &format!("{base}?limit=2"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.json_body();
    let got: Vec<&str> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![run_ids[2].as_str(), run_ids[1].as_str()]);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let r = h
        .call("GET", &format!("{base}?limit=2&cursor={cursor}"), None)
        .await;
    let page2 = r.json_body();
    assert_eq!(page2["runs"].as_array().unwrap().len(), 1);
    assert_eq!(page2["runs"][0]["run_id"], run_ids[0].as_str());
    assert_eq!(page2["next_cursor"], Value::Null);
    // Default page, exact run JSON (no engine field such as the fence).
    let r = h.call("GET", &base, None).await;
    assert_eq!(r.json_body()["runs"].as_array().unwrap().len(), 3);
    let one = h.call("GET", &format!("{base}/{}", run_ids[0]), None).await;
    assert_eq!(one.status, 200);
    let run = one.json_body();
    assert_eq!(keys(&run), set(RUN_KEYS));
    assert_eq!(run["trigger"], "upload");
    assert_eq!(run["state"], "succeeded");
    assert_eq!(run["skipped"], json!({"empty": 2}));
    assert_eq!(
        run["adds"],
        json!({"planned": 7, "applied": 7, "held": 0, "deferred": 0})
    );
    // The sync's last_run uses the same shape.
    let last = ledger("pn", &id, "01J0000000000000000000000Z");
    as_run(&h, "pn", &id, |p| p.last_run = Some(last), &[]).await;
    let s = h
        .call("GET", &format!("/v1/projects/pn/syncs/{id}"), None)
        .await
        .json_body();
    assert_eq!(keys(&s["last_run"]), set(RUN_KEYS));

    for bad in ["limit=0", "limit=101", "limit=abc", "cursor=a%23b"] {
        let r = h.call("GET", &format!("{base}?{bad}"), None).await;
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (400, "invalid_request"),
            "{bad}"
        );
    }
    let r = h.call("GET", &format!("{base}/NOSUCHRUN"), None).await;
    assert_eq!((r.status, error_code(&r).as_str()), (404, "not_found"));
    let r = h
        .call("GET", "/v1/projects/pn/syncs/NOSUCH/runs", None)
        .await;
    assert_eq!(r.status, 404);
    let r = h
        .call(
            "GET",
            &format!("/v1/projects/elsewhere/syncs/{id}/runs/{}", run_ids[0]),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
}

// ------------------------------------------------------------------------------------------------ previews

#[tokio::test]
async fn previews_are_started_asynchronously() {
    let h = Harness::new().await;
    let key = "cohorts/cohP_2024-03-05T14:07_existing.csv";
    let post = |body: Value| h.call("POST", "/v1/projects/pp/previews", Some(body));
    let r = post(json!({"s3_key": key})).await;
    assert_eq!((r.status, error_code(&r).as_str()), (409, "not_connected"));
    h.connect_ok("pp").await;
    let r = post(json!({"s3_key": key})).await;
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (409, "mapping_missing")
    );
    h.map_email("pp").await;
    for bad in [
        json!({"s3_key": key}),
        json!({"s3_key": "audience-sync/snapshots/x"}),
        json!({}),
        json!({"s3_key": ""}),
    ] {
        let r = post(bad.clone()).await;
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (400, "invalid_request"),
            "{bad}"
        );
    }
    h.put_export(key, "email\na@example.com\n").await;
    let r = post(json!({"s3_key": key})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let pid = r.json_body()["preview_id"].as_str().unwrap().to_string();
    assert_eq!(
        h.invoker.payloads(),
        vec![json!({"trigger": "preview", "project_id": "pp", "preview_id": pid, "s3_key": key})]
    );
    let path = format!("/v1/projects/pp/previews/{pid}");
    let r = h.call("GET", &path, None).await;
    assert_eq!(
        r.json_body(),
        json!({"state": "running", "s3_key": key, "sync_id": null, "report": null, "error": null})
    );
    // The runner fills the record in.
    let mut rec = h.state().get_preview("pp", &pid).await.unwrap().unwrap();
    rec.state = PreviewState::Done;
    rec.report = Some(json!({"rows": 1, "valid": 1}));
    h.state().put_preview(&rec).await.unwrap();
    let r = h.call("GET", &path, None).await;
    assert_eq!(
        r.json_body(),
        json!({"state": "done", "s3_key": key, "sync_id": null, "report": {"rows": 1, "valid": 1}, "error": null})
    );
    let r = h.call("GET", "/v1/projects/pp/previews/NOSUCH", None).await;
    assert_eq!((r.status, error_code(&r).as_str()), (404, "not_found"));
    let r = h
        .call("GET", &format!("/v1/projects/other/previews/{pid}"), None)
        .await;
    assert_eq!(r.status, 404);
}

/// A preview may name a sync: the runner then compares with its committed snapshot and uses its guards.
#[tokio::test]
async fn a_preview_can_be_against_a_sync_of_the_same_cohort() {
    let h = Harness::new().await;
    h.connect_ok("pq").await;
    h.map_email("pq").await;
    let sync = json!({"cohort_id": "cohQ", "advertiser_id": h.adv(0), "cadence": "on_upload"});
    let r = h.call("POST", "/v1/projects/pq/syncs", Some(sync)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let sid = r.json_body()["sync_id"].as_str().unwrap().to_string();
    let key = "cohorts/cohQ_2024-03-05T14:07_existing.csv";
    let other = "cohorts/cohR_2024-03-05T14:07_existing.csv";
    h.put_export(key, "email\na@example.com\n").await;
    h.put_export(other, "email\na@example.com\n").await;
    let post = |body: Value| h.call("POST", "/v1/projects/pq/previews", Some(body));
    let r = post(json!({"s3_key": key, "sync_id": "NOSUCH"})).await;
    assert_eq!((r.status, error_code(&r).as_str()), (404, "not_found"));
    let r = post(json!({"s3_key": key, "sync_id": "../x"})).await;
    assert_eq!(r.status, 404);
    let r = post(json!({"s3_key": other, "sync_id": sid})).await;
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (400, "invalid_request")
    );
    assert!(r.text().contains("cohort cohR"), "{}", r.text());
    let r = post(json!({"s3_key": key, "sync_id": sid})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let pid = r.json_body()["preview_id"].as_str().unwrap().to_string();
    let sent = h.invoker.payloads();
    assert_eq!(
        sent.last(),
        Some(
            &json!({"trigger": "preview", "project_id": "pq", "preview_id": pid, "s3_key": key, "sync_id": sid})
        )
    );
    let r = h
        .call("GET", &format!("/v1/projects/pq/previews/{pid}"), None)
        .await;
    assert_eq!(r.json_body()["sync_id"], json!(sid));
}

// ------------------------------------------------------------------------------------------------ OpenAPI

/// Matches a concrete path against a template like `/v1/projects/{project_id}/syncs/{sync_id}`.
fn matches_template(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let p: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}')) || t == p)
}

/// Every documented operation is served and answered only with documented statuses; every route the
/// router serves is documented. The calls come from a scenario exercising each route, its happy path and
/// its documented errors.
#[tokio::test]
async fn openapi_document_matches_the_router() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml"))
            .expect("docs/openapi.yaml");
    let doc: Value = serde_yaml::from_str(&text).expect("OpenAPI YAML parses");
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3.1"));
    let mut documented: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let statuses = op["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|s| s.parse::<u16>().expect("numeric status"))
                .collect();
            documented.insert((method.to_uppercase(), path.clone()), statuses);
        }
    }
    assert_eq!(documented.len(), 19, "the issue's routes");

    // A scenario over every route.
    let h = Harness::new().await;
    let p = "/v1/projects/oa";
    h.send(ApiRequest::new("GET", &format!("{p}/integration")))
        .await; // 401
    h.call("GET", "/v1/projects/bad.id/integration", None).await; // 400
    h.call("GET", &format!("{p}/integration"), None).await;
    h.send(ApiRequest::new("GET", "/v1/projects")).await; // 401
    h.call("GET", "/v1/projects", None).await;
    h.send(ApiRequest::new("GET", "/v1/unmatched-exports"))
        .await; // 401
    h.call("GET", "/v1/unmatched-exports", None).await;
    h.call(
        "PUT",
        &format!("{p}/mapping"),
        Some(json!({"amplitude_property": "email", "tiktok_key": "EMAIL"})),
    )
    .await; // 409
    h.call(
        "POST",
        &format!("{p}/syncs"),
        Some(json!({"cohort_id": "c", "advertiser_id": h.adv(0), "cadence": "daily"})),
    )
    .await; // 409
    h.send(ApiRequest::from_target(
        "GET",
        "/oauth/tiktok/callback?code=x&state=y",
    ))
    .await; // 400
    h.connect_ok("oa").await;
    h.call(
        "PUT",
        &format!("{p}/mapping"),
        Some(json!({"amplitude_property": "x", "tiktok_key": "NOPE"})),
    )
    .await;
    h.map_email("oa").await;
    h.call(
        "PUT",
        &format!("{p}/mapping"),
        Some(json!({"amplitude_property": "email", "tiktok_key": "EMAIL"})),
    )
    .await;
    h.call(
        "PUT",
        &format!("{p}/mapping"),
        Some(json!({"amplitude_property": "gaid", "tiktok_key": "GAID"})),
    )
    .await;
    h.call(
        "POST",
        &format!("{p}/syncs"),
        Some(json!({"cohort_id": "c", "advertiser_id": "1", "cadence": "daily"})),
    )
    .await;
    h.call(
        "POST",
        &format!("{p}/syncs"),
        Some(json!({"cohort_id": "c"})),
    )
    .await;
    let r = h
        .call(
            "POST",
            &format!("{p}/syncs"),
            Some(json!({"cohort_id": "c", "advertiser_id": h.adv(0), "cadence": "daily"})),
        )
        .await;
    let id = r.json_body()["sync_id"].as_str().unwrap().to_string();
    h.call(
        "POST",
        &format!("{p}/syncs"),
        Some(json!({"cohort_id": "c", "advertiser_id": h.adv(0), "cadence": "daily"})),
    )
    .await;
    h.call(
        "POST",
        &format!("{p}/syncs"),
        Some(json!({"cohort_id": "c", "advertiser_id": h.adv(0), "cadence": "hourly"})),
    )
    .await;
    h.call("GET", &format!("{p}/syncs"), None).await;
    h.call("GET", &format!("{p}/syncs/{id}"), None).await;
    h.call("GET", &format!("{p}/syncs/NOSUCH"), None).await;
    h.call(
        "PATCH",
        &format!("{p}/syncs/{id}"),
        Some(json!({"paused": true})),
    )
    .await;
    h.call(
        "PATCH",
        &format!("{p}/syncs/{id}"),
        Some(json!({"paused": 3})),
    )
    .await;
    h.call(
        "PATCH",
        &format!("{p}/syncs/NOSUCH"),
        Some(json!({"paused": true})),
    )
    .await;
    h.call("POST", &format!("{p}/syncs/{id}/run"), None).await;
    h.call("POST", &format!("{p}/syncs/NOSUCH/run"), None).await;
    as_run(
        &h,
        "oa",
        &id,
        |_| {},
        &[ledger("oa", &id, &ulid::Ulid::new().to_string())],
    )
    .await;
    let runs = h
        .call("GET", &format!("{p}/syncs/{id}/runs?limit=1"), None)
        .await;
    let run_id = runs.json_body()["runs"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    h.call("GET", &format!("{p}/syncs/{id}/runs?limit=0"), None)
        .await;
    h.call("GET", &format!("{p}/syncs/NOSUCH/runs"), None).await;
    h.call("GET", &format!("{p}/syncs/{id}/runs/{run_id}"), None)
        .await;
    h.call("GET", &format!("{p}/syncs/{id}/runs/NOSUCH"), None)
        .await;
    let key = "cohorts/c_2024-03-05T14:07_existing.csv";
    h.call(
        "POST",
        &format!("{p}/previews"),
        Some(json!({"s3_key": key})),
    )
    .await; // 400: no object
    h.put_export(key, "email\nx@example.com\n").await;
    let pr = h
        .call(
            "POST",
            &format!("{p}/previews"),
            Some(json!({"s3_key": key})),
        )
        .await;
    let pid = pr.json_body()["preview_id"].as_str().unwrap().to_string();
    h.call("GET", &format!("{p}/previews/{pid}"), None).await;
    h.call("GET", &format!("{p}/previews/NOSUCH"), None).await;
    h.call("DELETE", &format!("{p}/syncs/{id}"), None).await;
    h.call("DELETE", &format!("{p}/syncs/{id}"), None).await;
    let r = h
        .call(
            "POST",
            &format!("{p}/syncs"),
            Some(json!({"cohort_id": "c2", "advertiser_id": h.adv(0), "cadence": "daily"})),
        )
        .await;
    let id2 = r.json_body()["sync_id"].as_str().unwrap().to_string();
    h.call(
        "DELETE",
        &format!("{p}/integration?keep_history=maybe"),
        None,
    )
    .await; // 400
    h.call(
        "DELETE",
        &format!("{p}/integration?keep_history=true"),
        None,
    )
    .await;
    h.call("GET", &format!("{p}/retired-syncs"), None).await;
    h.call("GET", &format!("{p}/syncs/{id2}/runs"), None).await;
    h.call("DELETE", &format!("{p}/retired-syncs/{id2}"), None)
        .await;
    h.call("DELETE", &format!("{p}/retired-syncs/NOSUCH"), None)
        .await; // 404
    h.call("DELETE", &format!("{p}/integration"), None).await;
    h.call("POST", "/v1/projects/bad.id/connect", None).await;
    h.send(ApiRequest::new("POST", &format!("{p}/connect")))
        .await;
    // Reconnecting exercises the callback's success page once more; a replay its 400.
    let url = h.authorization_url("oa").await;
    let cb = h.consent(&url).await;
    h.send(cb.clone()).await;
    h.send(cb).await;

    let calls = h.calls.lock().unwrap().clone();
    let mut exercised: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
    for (method, path, status) in calls {
        let op = documented
            .keys()
            .find(|(m, t)| *m == method && matches_template(t, &path))
            .cloned();
        let Some(op) = op else {
            panic!("{method} {path} answered {status} but is not documented");
        };
        assert!(
            documented[&op].contains(&status),
            "{method} {path} answered {status}, documented {:?}",
            documented[&op]
        );
        exercised.entry(op).or_default().insert(status);
    }
    for (op, statuses) in &documented {
        let got = exercised.get(op);
        assert!(
            got.is_some(),
            "{op:?} is documented but was never exercised"
        );
        let success = statuses.iter().filter(|s| **s < 300).collect::<Vec<_>>();
        assert!(
            success.iter().all(|s| got.unwrap().contains(s)),
            "{op:?}: documented successes {success:?}, exercised {:?}",
            got.unwrap()
        );
    }
}

#[tokio::test]
async fn redirect_uri_from_the_request_when_no_callback_url_is_configured() {
    let h = Harness::new().await;
    let deps = ApiDeps {
        state: h.adapters.state.clone(),
        vault: h.adapters.vault.clone(),
        cohorts: h.adapters.cohorts.clone(),
        schedules: h.adapters.schedules.clone().unwrap(),
        invoker: h.invoker.clone(),
        tiktok: TikTokClient::new(ClientConfig {
            host: h.sandbox.base_url.clone(),
            ..ClientConfig::default()
        })
        .unwrap(),
    };
    let api = Api::new(deps, ApiSettings::default(), Routes::OAuthCallback);
    let mut req = ApiRequest::new("POST", "/v1/projects/pu/connect").with_bearer(ADMIN_TOKEN);
    req.domain_name = Some("abc123.execute-api.us-east-1.amazonaws.com".into());
    let r = api.handle(req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let url = url::Url::parse(r.json_body()["authorization_url"].as_str().unwrap()).unwrap();
    let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(
        q["redirect_uri"],
        "https://abc123.execute-api.us-east-1.amazonaws.com/oauth/tiktok/callback"
    );
    // The redirect_uri is stored with the state.
    let raw = &q["state"];
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(raw.as_bytes()));
    match h
        .state()
        .consume_oauth_state(&digest, Utc::now())
        .await
        .unwrap()
    {
        audience_core::ports::ConsumedState::Consumed(s) => {
            assert_eq!(s.project_id, "pu");
            assert_eq!(s.redirect_uri, q["redirect_uri"]);
            let ttl = s.expires_at - s.created_at;
            assert_eq!(ttl, chrono::Duration::minutes(10));
        }
        other => panic!("state not stored: {other:?}"),
    }
    // Without a domain name and a Host header there is no redirect URI to give.
    let r = api
        .handle(ApiRequest::new("POST", "/v1/projects/pu/connect").with_bearer(ADMIN_TOKEN))
        .await;
    assert_eq!((r.status, error_code(&r).as_str()), (500, "internal"));
}

#[tokio::test]
async fn unfilled_app_credentials_are_an_internal_error() {
    let h = Harness::new().await;
    h.env
        .clients
        .secrets
        .put_secret_value()
        .secret_id(format!("{}/app-credentials", h.env.secret_prefix))
        .secret_string(r#"{"app_id": "", "secret": ""}"#)
        .send()
        .await
        .unwrap();
    let r = h.call("POST", "/v1/projects/pi/connect", None).await;
    assert_eq!((r.status, error_code(&r).as_str()), (500, "internal"));
    assert!(
        r.json_body()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must be filled in")
    );
}

/// The production wiring (`Api::from_config`: DynamoDB rate gate, Lambda invoker) with Lambda's Invoke API
/// served by a recorder: "run now" reaches Lambda as an asynchronous `Event` invocation of the runner.
#[tokio::test]
async fn production_wiring_invokes_the_runner_asynchronously() {
    let h = Harness::new().await;
    h.connect_ok("pw").await;
    h.map_email("pw").await;
    let r = h
        .call(
            "POST",
            "/v1/projects/pw/syncs",
            Some(json!({"cohort_id": "cw", "advertiser_id": h.adv(0), "cadence": "on_upload"})),
        )
        .await;
    let id = r.json_body()["sync_id"].as_str().unwrap().to_string();

    let recorder = audience_sync_tests::RecordingServer::start(202, "").expect("recorder");
    let mut clients = h.env.clients.clone();
    clients.lambda =
        aws_sdk_lambda::Client::new(&audience_sync_tests::sdk_config_for(&recorder.endpoint).await);
    let runner = format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:sync-runner");
    let vars: BTreeMap<&str, String> = [
        ("TABLE_NAME", h.env.table.clone()),
        ("BUCKET_NAME", h.env.bucket.clone()),
        ("SECRET_PREFIX", h.env.secret_prefix.clone()),
        ("SCHEDULE_GROUP", h.env.schedule_group.clone()),
        ("SYNC_RUNNER_ARN", runner.clone()),
        (
            "SCHEDULER_ROLE_ARN",
            format!("arn:aws:iam::{ACCOUNT_ID}:role/scheduler-invoke"),
        ),
        ("TIKTOK_HOST", h.sandbox.base_url.clone()),
    ]
    .into_iter()
    .collect();
    let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let api = Api::from_config(
        &config,
        &clients,
        Some(CALLBACK.into()),
        Routes::SaveMapping,
    )
    .expect("api from config");
    let r = api
        .handle(
            ApiRequest::new("POST", &format!("/v1/projects/pw/syncs/{id}/run"))
                .with_bearer(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let reqs = recorder.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].path,
        format!(
            "/2015-03-31/functions/{}/invocations",
            runner.replace(':', "%3A")
        )
    );
    assert_eq!(reqs[0].header("x-amz-invocation-type"), Some("Event"));
    assert_eq!(
        serde_json::from_slice::<Value>(&reqs[0].body).unwrap(),
        json!({"trigger": "manual", "project_id": "pw", "sync_id": id})
    );
    // The audience count goes through the app-wide DynamoDB rate gate of this wiring.
    let r = api
        .handle(
            ApiRequest::new("POST", "/v1/projects/pw/syncs")
                .with_bearer(ADMIN_TOKEN)
                .with_json(
                    &json!({"cohort_id": "cw2", "advertiser_id": h.adv(0), "cadence": "on_upload"}),
                ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // Missing runner configuration is a setup error, not a panic.
    let bare = Config::from_lookup(|k| match k {
        "TABLE_NAME" => Some("t".into()),
        "BUCKET_NAME" => Some("b".into()),
        _ => None,
    })
    .unwrap();
    assert!(Api::from_config(&bare, &clients, None, Routes::All).is_err());
}

fn yaml_str(v: &serde_yaml::Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_default()
}

/// The template's HttpApi routes are exactly the documented ones, each on the function the issue names;
/// no IAM statement allows a `*` action or a `*` resource.
#[test]
fn template_routes_and_least_privilege() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let template: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{root}/infra/template.yaml")).expect("template"),
    )
    .expect("template YAML parses");
    let doc: Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{root}/docs/openapi.yaml")).expect("openapi"),
    )
    .expect("openapi parses");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let resources = template["Resources"].as_mapping().expect("Resources");
    let mut routed = BTreeSet::new();
    let mut allow_statements = 0;
    for (name, res) in resources {
        let name = yaml_str(name);
        if yaml_str(&res["Type"]) == "AWS::Serverless::Function" {
            if let Some(events) = res["Properties"]["Events"].as_mapping() {
                for ev in events.values() {
                    assert_eq!(yaml_str(&ev["Type"]), "HttpApi");
                    let method = yaml_str(&ev["Properties"]["Method"]);
                    let path = yaml_str(&ev["Properties"]["Path"]);
                    let oauth = path.ends_with("/connect") || path == "/oauth/tiktok/callback";
                    let expected = if oauth {
                        "OAuthCallbackFunction"
                    } else {
                        "SaveMappingFunction"
                    };
                    assert_eq!(name, expected, "{method} {path}");
                    assert!(routed.insert((method, path)), "route twice");
                }
            }
            for policy in res["Properties"]["Policies"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                for st in policy["Statement"].as_sequence().into_iter().flatten() {
                    assert_eq!(yaml_str(&st["Effect"]), "Allow");
                    allow_statements += 1;
                    let actions: Vec<String> = match &st["Action"] {
                        serde_yaml::Value::Sequence(s) => s.iter().map(yaml_str).collect(),
                        other => vec![yaml_str(other)],
                    };
                    for a in &actions {
                        assert!(!a.is_empty() && !a.contains('*'), "{name}: action {a:?}");
                    }
                    let resources: Vec<&serde_yaml::Value> = match &st["Resource"] {
                        serde_yaml::Value::Sequence(s) => s.iter().collect(),
                        other => vec![other],
                    };
                    for r in resources {
                        assert_ne!(yaml_str(r), "*", "{name}: resource *");
                    }
                }
            }
        }
    }
    assert!(allow_statements >= 20, "policies were read");
    // The console's pages are HTML, not API routes: its three proxy routes and its connect form (served by
    // oauth-callback, which owns connect) are routed besides the documented ones.
    let console: BTreeSet<(String, String)> = [
        ("GET", "/console"),
        ("GET", "/console/{proxy+}"),
        ("POST", "/console/{proxy+}"),
        ("POST", "/console/projects/{project_id}/connect"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert!(
        console.is_subset(&routed),
        "the console is routed: {routed:?}"
    );
    let routed: BTreeSet<_> = routed.difference(&console).cloned().collect();
    assert_eq!(routed, documented, "template routes = documented routes");
}

/// `GET /v1/unmatched-exports` answers the stored records newest first in the documented shape, on the
/// save-mapping function only; other methods are not routes.
#[tokio::test]
async fn unmatched_exports_are_listed_newest_first() {
    use audience_core::cohort::naming::parse_export_key;
    use audience_core::cohort::unmatched::UnmatchedExport;
    let h = Harness::new().await;
    let now = Utc::now();
    let bad = parse_export_key("cohorts/x.txt").unwrap_err();
    let old = UnmatchedExport::misnamed(
        "cohorts/x.txt",
        Some(5),
        &bad,
        now - chrono::Duration::hours(1),
    );
    let new = UnmatchedExport::no_sync("cohorts/c9_2026-11-20T10:00_existing.csv", None, "c9", now);
    h.adapters
        .state
        .record_unmatched_export(&old)
        .await
        .unwrap();
    h.adapters
        .state
        .record_unmatched_export(&new)
        .await
        .unwrap();
    let r = h.call("GET", "/v1/unmatched-exports", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json_body()["unmatched_exports"]
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["key"], "cohorts/c9_2026-11-20T10:00_existing.csv");
    assert_eq!(list[0]["reason"], "no_sync");
    assert_eq!(list[0]["cohort_id"], "c9");
    assert_eq!(list[0]["size"], Value::Null);
    assert_eq!(list[1]["key"], "cohorts/x.txt");
    assert_eq!(list[1]["reason"], "extension");
    assert_eq!(list[1]["size"], 5);
    assert_eq!(list[1]["cohort_id"], Value::Null);
    for u in &list {
        let keys: BTreeSet<&str> = u.as_object().unwrap().keys().map(String::as_str).collect();
        let want: BTreeSet<&str> =
            ["key", "size", "seen_at", "reason", "message", "cohort_id"].into();
        assert_eq!(keys, want);
    }
    assert_eq!(
        h.call("POST", "/v1/unmatched-exports", None).await.status,
        404
    );
}

/// Creating a sync with a token TikTok no longer accepts answers `reconnect_required` (not TikTok's raw
/// error) and marks the integration as a run would.
#[tokio::test]
async fn creating_a_sync_with_a_revoked_token_asks_for_a_reconnect() {
    let h = Harness::new().await;
    h.connect_ok("rv").await;
    h.map_email("rv").await;
    h.sandbox_post(
        "/_sandbox/tokens/revoke",
        json!({"app_id": h.sandbox.app_id()}),
    )
    .await;
    let r = h
        .call(
            "POST",
            "/v1/projects/rv/syncs",
            Some(json!({"cohort_id": "c1", "advertiser_id": h.adv(0), "cadence": "on_upload"})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(error_code(&r), "reconnect_required");
    assert!(r.text().contains("reconnect TikTok"), "{}", r.text());
    let i = h.call("GET", "/v1/projects/rv/integration", None).await;
    assert_eq!(i.json_body()["status"], "reconnect_required");
    assert!(h.state().list_syncs("rv").await.unwrap().is_empty());
}

/// `?state=` filters runs (across the store's pages); consecutive `up_to_date` runs collapse into one entry
/// unless `collapse=false`.
#[tokio::test]
async fn runs_filter_by_state_and_up_to_date_runs_collapse() {
    let h = Harness::new().await;
    h.connect_ok("rf").await;
    h.map_email("rf").await;
    let r = h
        .call(
            "POST",
            "/v1/projects/rf/syncs",
            Some(json!({"cohort_id": "c", "advertiser_id": h.adv(0), "cadence": "hourly"})),
        )
        .await;
    let id = r.json_body()["sync_id"].as_str().unwrap().to_string();
    use audience_core::model::RunState::{Failed, Succeeded, UpToDate};
    let mut ids = Vec::new();
    for state in [Succeeded, UpToDate, UpToDate, UpToDate, Failed, UpToDate] {
        let run_id = ulid::Ulid::new().to_string();
        let mut l = ledger("rf", &id, &run_id);
        l.state = state;
        as_run(&h, "rf", &id, |_| {}, &[l]).await;
        ids.push(run_id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let base = format!("/v1/projects/rf/syncs/{id}/runs");
    let get = |q: String| {
        let h = &h;
        let base = base.clone();
        async move { h.call("GET", &format!("{base}{q}"), None).await }
    };
    let run_ids = |v: &Value| -> Vec<String> {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect()
    };
    // Newest first: ids[5] (up to date), ids[4] (failed), ids[3..=1] collapsed, ids[0].
    let all = get(String::new()).await.json_body();
    assert_eq!(
        run_ids(&all),
        vec![
            ids[5].clone(),
            ids[4].clone(),
            ids[3].clone(),
            ids[0].clone()
        ]
    );
    assert_eq!(all["runs"][2]["collapsed_count"], 3);
    assert!(all["runs"][0].get("collapsed_count").is_none());
    let raw = get("?collapse=false".into()).await.json_body();
    assert_eq!(run_ids(&raw).len(), 6);
    let failed = get("?state=failed".into()).await.json_body();
    assert_eq!(run_ids(&failed), vec![ids[4].clone()]);
    // A filtered page that stops inside the store's page continues after the last run it read.
    let p1 = get("?state=up_to_date&collapse=false&limit=2".into())
        .await
        .json_body();
    assert_eq!(run_ids(&p1), vec![ids[5].clone(), ids[3].clone()]);
    let cursor = p1["next_cursor"].as_str().expect("more").to_string();
    let p2 = get(format!(
        "?state=up_to_date&collapse=false&limit=2&cursor={cursor}"
    ))
    .await
    .json_body();
    assert_eq!(run_ids(&p2), vec![ids[2].clone(), ids[1].clone()]);
    for bad in ["?state=done", "?collapse=maybe"] {
        let r = get(bad.into()).await;
        assert_eq!(
            (r.status, error_code(&r)),
            (400, "invalid_request".into()),
            "{bad}"
        );
    }
}

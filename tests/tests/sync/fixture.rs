//! A connected project on moto + the TikTok sandbox, with the real engine and adapters. Only the Invoker
//! is a recording fake (moto cannot run Lambdas): tests feed its payloads back like Lambda would.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use audience_aws::{Adapters, Config};
use audience_core::model::{
    Advertiser, Cadence, KeyMapping, RunLedger, SyncConfig, SyncState, WriteMode,
};
use audience_core::ports::{
    CreateSync, Invoker, PortError, ScheduleRate, Schedules, StateStore, TikTokConnection,
    TokenVault,
};
use audience_core::sync::engine::Outcome;
use audience_core::sync::{Deps, Engine, EngineSettings};
use audience_core::{KeyKind, Normalizer};
use audience_sync_tests::{TestEnv, unique_name};
use audience_tiktok::{AppSecret, AudienceAdapter, ExposeSecret};
use chrono::Utc;
use serde_json::{Value, json};
use tiktok_sandbox::{Rules, RunningSandbox, Sandbox, SandboxOptions};

/// TikTok's processing window after a customer-file create or update (the sandbox's default).
pub const PROCESSING_MS: i64 = 6 * 3_600_000;

/// TikTok's rules with the processing window off, for tests that study something else: engine v1 sends
/// several edits (APPEND then REMOVE, or more than one APPEND) to one audience in one run, and TikTok
/// refuses every edit but the first for hours (40002, held). Issue 12 plans one edit per window.
pub fn no_processing() -> Rules {
    Rules {
        processing_ms: 0,
        ..Rules::default()
    }
}

/// TikTok's rules with a new streaming audience ready at once, for tests that study something else:
/// engine v1 maps users in the run that creates the streaming audience, and TikTok refuses mappings for
/// its first ~90 s (40201; the client's retries give up well before).
pub fn streaming_ready_at_once() -> Rules {
    Rules {
        streaming_not_ready_ms: 0,
        ..Rules::default()
    }
}

#[derive(Default)]
pub struct RecordingInvoker {
    pub payloads: Mutex<Vec<Value>>,
}

#[async_trait::async_trait]
impl Invoker for RecordingInvoker {
    async fn invoke_async(&self, payload: &Value) -> Result<(), PortError> {
        self.payloads
            .lock()
            .map_err(|_| PortError::Config("poisoned".into()))?
            .push(payload.clone());
        Ok(())
    }
}

pub use audience_sync_tests::SandboxClock;

pub struct World {
    pub env: TestEnv,
    pub sandbox: RunningSandbox,
    pub config: Config,
    pub adapters: Adapters,
    pub invoker: Arc<RecordingInvoker>,
    pub engine: Engine,
    pub clock: Arc<dyn audience_core::ports::Clock>,
    pub project: String,
    pub advertiser: String,
    pub http: reqwest::Client,
    pub work: tempfile::TempDir,
}

pub fn settings(work: &std::path::Path) -> EngineSettings {
    EngineSettings {
        work_dir: work.to_path_buf(),
        // small files and calls so tests exercise several of each
        digests_per_file: 400,
        files_per_call: 2,
        ..EngineSettings::default()
    }
}

impl World {
    pub async fn new() -> World {
        Self::with(
            SandboxOptions {
                qps: 50,
                ..SandboxOptions::default()
            },
            |s| s,
        )
        .await
    }

    /// The default world with these TikTok rules.
    pub async fn with_rules(rules: Rules) -> World {
        Self::with(
            SandboxOptions {
                qps: 50,
                rules,
                ..SandboxOptions::default()
            },
            |s| s,
        )
        .await
    }

    /// Moves the sandbox's logical clock: what the hours between two scheduled runs do.
    pub fn advance_clock(&self, ms: i64) {
        self.sandbox.shared().lock().advance_clock(ms);
    }

    pub async fn with(
        opts: SandboxOptions,
        tune: impl FnOnce(EngineSettings) -> EngineSettings,
    ) -> World {
        let env = TestEnv::new().await.expect("moto resources");
        let sandbox = Sandbox::start(opts).await.expect("sandbox");
        let mut vars: HashMap<&str, String> = HashMap::new();
        vars.insert("TABLE_NAME", env.table.clone());
        vars.insert("BUCKET_NAME", env.bucket.clone());
        vars.insert("COHORT_PREFIX", "cohorts".into());
        vars.insert("SECRET_PREFIX", env.secret_prefix.clone());
        vars.insert("SCHEDULE_GROUP", env.schedule_group.clone());
        vars.insert(
            "SYNC_RUNNER_ARN",
            "arn:aws:lambda:us-east-1:123456789012:function:sync-runner".into(),
        );
        vars.insert(
            "SCHEDULER_ROLE_ARN",
            "arn:aws:iam::123456789012:role/scheduler".into(),
        );
        vars.insert("TIKTOK_HOST", sandbox.base_url.clone());
        vars.insert("TIKTOK_RATE", "50".into());
        let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("config");
        let adapters = Adapters::new(&env.clients, &config).expect("adapters");
        let invoker = Arc::new(RecordingInvoker::default());
        let work = tempfile::tempdir().expect("work dir");
        let clock: Arc<dyn audience_core::ports::Clock> =
            Arc::new(SandboxClock(sandbox.shared().clone()));
        let engine = Self::engine_on(
            &adapters,
            invoker.clone(),
            tune(settings(work.path())),
            Arc::new(AudienceAdapter::new(test_client(&config, &adapters))),
            clock.clone(),
        );
        let advertiser = sandbox.advertiser_ids()[0].clone();
        let w = World {
            env,
            sandbox,
            config,
            adapters,
            invoker,
            engine,
            clock,
            project: unique_name("proj"),
            advertiser,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http"),
            work,
        };
        w.connect().await;
        w
    }

    /// Another engine (another Lambda) on the same moto, sandbox and clock.
    pub fn engine(&self, settings: EngineSettings) -> Engine {
        let api = Arc::new(AudienceAdapter::new(test_client(
            &self.config,
            &self.adapters,
        )));
        self.engine_with_api(settings, api)
    }

    pub fn engine_with_api(
        &self,
        settings: EngineSettings,
        tiktok: Arc<dyn audience_core::sync::AudienceApi>,
    ) -> Engine {
        Self::engine_on(
            &self.adapters,
            self.invoker.clone(),
            settings,
            tiktok,
            self.clock.clone(),
        )
    }

    pub fn engine_on(
        adapters: &Adapters,
        invoker: Arc<RecordingInvoker>,
        settings: EngineSettings,
        tiktok: Arc<dyn audience_core::sync::AudienceApi>,
        clock: Arc<dyn audience_core::ports::Clock>,
    ) -> Engine {
        Engine::new(
            Deps {
                state: adapters.state.clone(),
                vault: adapters.vault.clone(),
                cohorts: adapters.cohorts.clone(),
                schedules: adapters.schedules.clone().expect("schedules"),
                invoker,
                tiktok,
                clock,
            },
            settings,
        )
    }

    /// Consent in the sandbox, code exchange, token stored, integration connected, email mapping saved.
    pub async fn connect(&self) {
        let url = format!(
            "{}/portal/auth?app_id={}&state=s1&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb",
            self.sandbox.base_url,
            self.sandbox.app_id()
        );
        let resp = self.http.get(url).send().await.expect("consent");
        assert_eq!(resp.status().as_u16(), 302);
        let location = resp.headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        let code = url::Url::parse(&location)
            .expect("url")
            .query_pairs()
            .find(|(k, _)| k == "auth_code")
            .map(|(_, v)| v.to_string())
            .expect("auth_code");
        let client =
            audience_app::runner::tiktok_client(&self.config, &self.adapters).expect("client");
        let grant = client
            .exchange_auth_code(
                self.sandbox.app_id(),
                &AppSecret::new(self.sandbox.secret()),
                &code,
            )
            .await
            .expect("exchange")
            .data;
        let conn = TikTokConnection {
            access_token: grant.access_token.expose_secret().to_string().into(),
            advertiser_ids: grant.advertiser_ids.clone(),
            scope_ids: grant.scope.iter().map(|s| *s as u32).collect(),
            connected_at: Utc::now(),
        };
        self.adapters
            .vault
            .put_connection(&self.project, &conn)
            .await
            .expect("vault");
        let advertisers: Vec<Advertiser> = grant
            .advertiser_ids
            .iter()
            .map(|a| Advertiser {
                advertiser_id: a.clone(),
                advertiser_name: format!("adv {a}"),
            })
            .collect();
        self.adapters
            .state
            .record_connection(&self.project, &advertisers, &conn.scope_ids, Utc::now())
            .await
            .expect("connection");
        let mapping = KeyMapping {
            amplitude_property: "email".into(),
            tiktok_key: KeyKind::Email,
            default_phone_region: None,
        };
        self.adapters
            .state
            .save_mapping(&self.project, &mapping, Utc::now())
            .await
            .expect("mapping");
    }

    pub async fn create_sync(&self, cohort: &str, cadence: Cadence, mode: WriteMode) -> SyncConfig {
        let now = Utc::now();
        let sync_id = ulid::Ulid::new().to_string();
        let sync = SyncConfig {
            schedule_name: cadence
                .is_recurring()
                .then(|| audience_core::ports::schedule_name(&sync_id)),
            sync_id,
            project_id: self.project.clone(),
            cohort_id: cohort.to_string(),
            advertiser_id: self.advertiser.clone(),
            cadence,
            write_mode: mode,
            state: SyncState::Active,
            audience_name: Some(format!("Test {cohort}")),
            max_removal_ratio: audience_core::model::DEFAULT_MAX_REMOVAL_RATIO,
            min_create_size: audience_core::model::DEFAULT_MIN_CREATE_SIZE,
            committed: None,
            pending_export: None,
            warnings: vec![],
            created_at: now,
            updated_at: now,
            version: 0,
            progress: Default::default(),
        };
        let sync = match self
            .adapters
            .state
            .create_sync(&sync)
            .await
            .expect("create sync")
        {
            CreateSync::Created(s) => s,
            CreateSync::Exists(s) => s,
        };
        if cadence.is_recurring() {
            let rate = if cadence == Cadence::Hourly {
                ScheduleRate::Hourly
            } else {
                ScheduleRate::Daily
            };
            self.adapters
                .schedules
                .as_ref()
                .expect("schedules")
                .upsert_schedule(&self.project, &sync.sync_id, rate, true)
                .await
                .expect("schedule");
        }
        sync
    }

    /// Uploads an Amplitude-style export (`Amplitude ID,User ID,email` columns) and returns its raw key.
    pub async fn upload(&self, cohort: &str, stamp: &str, emails: &[String]) -> String {
        self.put(
            &format!("cohorts/{cohort}_{stamp}_existing_test.csv"),
            export_csv(emails),
        )
        .await
    }

    pub async fn put(&self, key: &str, body: Vec<u8>) -> String {
        self.env
            .clients
            .s3
            .put_object()
            .bucket(&self.env.bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .expect("put object");
        key.to_string()
    }

    /// The real S3 ObjectCreated event JSON for a raw key (URL-encoded like S3 does).
    pub fn s3_event(&self, key: &str) -> Value {
        self.s3_event_encoded(&s3_event_encode(key))
    }

    /// The event for a key exactly as given (already encoded, possibly badly).
    pub fn s3_event_encoded(&self, encoded: &str) -> Value {
        let bucket = &self.env.bucket;
        json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-11-26T10:00:00.000Z", "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AWS:EXAMPLE"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": "R", "x-amz-id-2": "I"},
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "cohort-exports",
                   "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A"}, "arn": format!("arn:aws:s3:::{bucket}")},
                   "object": {"key": encoded, "size": 1, "eTag": "e", "sequencer": "0A"}}
        }]})
    }

    pub async fn handle(&self, payload: Value) -> Vec<Outcome> {
        self.handle_on(&self.engine, payload).await
    }

    pub async fn handle_on(&self, engine: &Engine, payload: Value) -> Vec<Outcome> {
        let v = audience_app::runner::handle(engine, payload, None)
            .await
            .expect("runner");
        serde_json::from_value::<Vec<Value>>(v["outcomes"].clone())
            .expect("outcomes")
            .into_iter()
            .map(outcome)
            .collect()
    }

    /// Runs the invocations the engine asked for (pending exports, continuations, recreation), like Lambda.
    pub async fn drain(&self) -> Vec<Outcome> {
        let mut out = Vec::new();
        for _ in 0..20 {
            let batch: Vec<Value> =
                std::mem::take(&mut *self.invoker.payloads.lock().expect("lock"));
            if batch.is_empty() {
                break;
            }
            for p in batch {
                out.extend(self.handle(p).await);
            }
        }
        out
    }

    /// What the sweeper's schedule does: resume every sync with work left, then run what it asked for.
    pub async fn sweep(&self) -> Vec<Outcome> {
        let mut out = self.handle(json!({"trigger": "sweep"})).await;
        out.extend(self.drain().await);
        out
    }

    /// Moves the clocks past TikTok's processing window and sweeps, until the sync owes nothing (or
    /// `rounds` windows passed). Returns the number of windows it took.
    pub async fn settle_by_sweeps(&self, sync_id: &str, rounds: usize) -> usize {
        for i in 0..rounds {
            let s = self.sync(sync_id).await;
            let p = &s.progress;
            let owed = p.held_adds + p.held_removals + p.deferred > 0
                || p.uncertain.is_some()
                || p.active_run.is_some()
                || s.pending_export.is_some();
            if !owed {
                return i;
            }
            self.advance_clock(PROCESSING_MS);
            self.sweep().await;
        }
        rounds
    }

    pub async fn sync(&self, id: &str) -> SyncConfig {
        self.adapters
            .state
            .get_sync(&self.project, id)
            .await
            .expect("get")
            .expect("sync exists")
    }

    pub async fn runs(&self, id: &str) -> Vec<RunLedger> {
        self.adapters
            .state
            .list_runs(id, 100, None)
            .await
            .expect("runs")
            .runs
    }

    pub async fn members(&self, audience_id: &str) -> BTreeSet<String> {
        let v: Value = self
            .http
            .get(format!(
                "{}/_sandbox/audiences/{audience_id}",
                self.sandbox.base_url
            ))
            .send()
            .await
            .expect("sandbox")
            .json()
            .await
            .expect("json");
        v["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m.as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub async fn audiences(&self) -> Vec<Value> {
        self.http
            .get(format!(
                "{}/_sandbox/audiences?advertiser_id={}",
                self.sandbox.base_url, self.advertiser
            ))
            .send()
            .await
            .expect("sandbox")
            .json()
            .await
            .expect("json")
    }

    pub async fn faults(&self, f: Value) {
        let r = self
            .http
            .post(format!("{}/_sandbox/faults", self.sandbox.base_url))
            .json(&f)
            .send()
            .await
            .expect("faults");
        assert!(r.status().is_success(), "{:?}", r.text().await);
    }

    pub async fn revoke(&self) {
        let r = self
            .http
            .post(format!("{}/_sandbox/tokens/revoke", self.sandbox.base_url))
            .json(&json!({"app_id": self.sandbox.app_id()}))
            .send()
            .await
            .expect("revoke");
        assert!(r.status().is_success());
    }

    /// Number of TikTok requests the sandbox has seen so far.
    pub fn tiktok_requests(&self) -> usize {
        self.sandbox
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/open_api/"))
            .count()
    }
}

/// The production client settings, with retries that back off in milliseconds (tests inject many faults).
pub fn test_client(config: &Config, adapters: &Adapters) -> audience_tiktok::TikTokClient {
    audience_tiktok::TikTokClient::new(audience_tiktok::ClientConfig {
        host: config.tiktok_host.clone(),
        rate_per_second: config.tiktok_rate * audience_tiktok::TIER_SHARE,
        rate_gate: Some(adapters.rate_gate.clone()),
        retry: audience_tiktok::RetryPolicy {
            max_attempts: 6,
            max_elapsed: std::time::Duration::from_secs(20),
            initial_backoff: std::time::Duration::from_millis(20),
            max_backoff: std::time::Duration::from_millis(200),
        },
        ..audience_tiktok::ClientConfig::default()
    })
    .expect("tiktok client")
}

fn outcome(v: Value) -> Outcome {
    match v["outcome"].as_str() {
        Some("run") => Outcome::Run {
            sync_id: v["sync_id"].as_str().unwrap_or_default().into(),
            run_id: v["run_id"].as_str().unwrap_or_default().into(),
            state: serde_json::from_value(v["state"].clone()).expect("state"),
            reason: v["reason"].as_str().map(str::to_string),
        },
        Some("deferred") => Outcome::Deferred {
            sync_id: v["sync_id"].as_str().unwrap_or_default().into(),
            pending_export: v["pending_export"].as_str().map(str::to_string),
        },
        Some("preview") => Outcome::Preview {
            preview_id: v["preview_id"].as_str().unwrap_or_default().into(),
            state: serde_json::from_value(v["state"].clone()).expect("state"),
        },
        Some("ignored") => Outcome::Ignored {
            reason: v["reason"].as_str().unwrap_or_default().into(),
        },
        Some("swept") => Outcome::Swept {
            resumed: serde_json::from_value(v["resumed"].clone()).expect("resumed"),
        },
        _ => panic!("unexpected outcome {v}"),
    }
}

/// S3 event notifications URL-encode keys: a space becomes `+`, reserved and non-ASCII bytes `%XX`.
pub fn s3_event_encode(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b'*' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An Amplitude-style export body: `Amplitude ID,User ID,email` columns.
pub fn export_csv(emails: &[String]) -> Vec<u8> {
    let mut body = String::from("Amplitude ID,User ID,email\n");
    for (i, e) in emails.iter().enumerate() {
        body.push_str(&format!("{},u{i},{e}\n", 1000 + i));
    }
    body.into_bytes()
}

pub fn emails(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("User{i}@Example.com")).collect()
}

/// The digests TikTok should hold for these raw emails (computed independently of the engine's path).
pub fn digests(raw: &[String]) -> BTreeSet<String> {
    let n = Normalizer::new(KeyKind::Email, None).expect("normalizer");
    raw.iter()
        .filter_map(|e| n.digest(e).ok())
        .map(|d| d.to_hex())
        .collect()
}

/// Set equality with a short message (counts of missing and extra digests, never the whole sets).
#[track_caller]
pub fn assert_same(actual: &BTreeSet<String>, expected: &BTreeSet<String>, what: &str) {
    let missing = expected.difference(actual).count();
    let extra = actual.difference(expected).count();
    assert!(
        missing == 0 && extra == 0,
        "{what}: audience has {} digests, cohort {}; {missing} missing, {extra} extra",
        actual.len(),
        expected.len()
    );
}

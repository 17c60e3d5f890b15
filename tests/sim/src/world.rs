//! One connected project on the in-memory ports and an in-process TikTok sandbox, with the real engine.

use std::collections::BTreeSet;
use std::sync::Arc;

use audience_core::model::{Advertiser, Cadence, KeyMapping, SyncConfig, SyncState, WriteMode};
use audience_core::ports::memory::{
    MemoryCohortStore, MemorySchedules, MemoryStateStore, MemoryVault,
};
use audience_core::ports::{
    CreateSync, Invoker, PortError, StateStore, TikTokConnection, TokenVault,
};
use audience_core::sync::{Deps, Engine, EngineSettings};
use audience_core::{KeyKind, Normalizer};
use audience_tiktok::{AppSecret, AudienceAdapter, ExposeSecret};
use chrono::{DateTime, Utc};
use tiktok_sandbox::{RunningSandbox, Sandbox, SandboxOptions};

use crate::faults::Faults;
use crate::scheduler::{VirtualClock, lock};
use crate::state::FaultyState;

/// Payloads the engine sends itself; the history delivers them.
#[derive(Default)]
pub struct SimInvoker {
    pub outbox: std::sync::Mutex<Vec<serde_json::Value>>,
}

#[async_trait::async_trait]
impl Invoker for SimInvoker {
    async fn invoke_async(&self, payload: &serde_json::Value) -> Result<(), PortError> {
        lock(&self.outbox).push(payload.clone());
        Ok(())
    }
}

pub struct World {
    pub sandbox: RunningSandbox,
    pub state: Arc<MemoryStateStore>,
    pub cohorts: Arc<MemoryCohortStore>,
    pub invoker: Arc<SimInvoker>,
    pub clock: Arc<VirtualClock>,
    pub engine: Engine,
    pub project: String,
    pub advertiser: String,
    pub cohort: String,
    pub work: std::path::PathBuf,
    /// Inputs whose invocation failed: Lambda retries them.
    pub retries: std::sync::Mutex<Vec<serde_json::Value>>,
}

/// Digest of a simulated user's email as the engine computes it.
pub fn digest_of(email: &str) -> Result<String, String> {
    let n = Normalizer::new(KeyKind::Email, None).map_err(|e| e.to_string())?;
    n.digest(email)
        .map(|d| d.to_hex())
        .map_err(|e| format!("{e:?}"))
}

/// An export's CSV in Amplitude's shape.
pub fn export_csv(members: &BTreeSet<u32>) -> Vec<u8> {
    let mut s = String::from("amplitude_id,user_id,email\n");
    for m in members {
        s.push_str(&format!("{m},u{m},user{m}@example.com\n"));
    }
    s.into_bytes()
}

pub fn export_key(cohort: &str, at: DateTime<Utc>) -> String {
    format!(
        "cohorts/{cohort}_{}_existing.csv",
        at.format("%Y-%m-%dT%H:%M")
    )
}

impl World {
    pub async fn new(
        seed: u64,
        faults: Arc<Faults>,
        clock_start: DateTime<Utc>,
    ) -> Result<World, String> {
        let sandbox = Sandbox::start(SandboxOptions {
            // The sim sends far fewer than 600/min per sandbox; a high per-second rate keeps it fast.
            qps: 1_000,
            seed,
            ..SandboxOptions::default()
        })
        .await
        .map_err(|e| format!("sandbox: {e}"))?;
        let clock = Arc::new(VirtualClock::new(clock_start, sandbox.shared().clone()));
        let state = Arc::new(MemoryStateStore::new());
        let cohorts = Arc::new(MemoryCohortStore::new("cohorts"));
        let vault = Arc::new(MemoryVault::new());
        let invoker = Arc::new(SimInvoker::default());
        let client = audience_tiktok::TikTokClient::new(audience_tiktok::ClientConfig {
            host: sandbox.base_url.clone(),
            rate_per_second: 500.0,
            retry: audience_tiktok::RetryPolicy {
                max_attempts: 4,
                max_elapsed: std::time::Duration::from_secs(5),
                initial_backoff: std::time::Duration::from_millis(1),
                max_backoff: std::time::Duration::from_millis(5),
            },
            ..audience_tiktok::ClientConfig::default()
        })
        .map_err(|e| format!("client: {e}"))?;
        let token = connect_token(&sandbox, &client).await?;
        let project = "proj1".to_string();
        let advertiser = sandbox
            .advertiser_ids()
            .first()
            .cloned()
            .ok_or("no advertiser")?;
        vault
            .put_connection(
                &project,
                &TikTokConnection {
                    access_token: token.into(),
                    advertiser_ids: vec![advertiser.clone()],
                    scope_ids: vec![],
                    connected_at: clock_start,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let adv = Advertiser {
            advertiser_id: advertiser.clone(),
            advertiser_name: "a".into(),
        };
        state
            .record_connection(&project, &[adv], &[], clock_start)
            .await
            .map_err(|e| e.to_string())?;
        let mapping = KeyMapping {
            amplitude_property: "email".into(),
            tiktok_key: KeyKind::Email,
            default_phone_region: None,
        };
        state
            .save_mapping(&project, &mapping, clock_start)
            .await
            .map_err(|e| e.to_string())?;
        let work = std::env::temp_dir().join(format!("audience-sim-{seed}-{}", std::process::id()));
        std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        let deps = Deps {
            state: Arc::new(FaultyState {
                inner: state.clone(),
                faults,
            }),
            vault,
            cohorts: cohorts.clone(),
            schedules: Arc::new(MemorySchedules::new()),
            invoker: invoker.clone(),
            tiktok: Arc::new(AudienceAdapter::new(client)),
            clock: clock.clone(),
        };
        let settings = EngineSettings {
            work_dir: work.clone(),
            // Lease renewals run on the virtual clock between calls; a real-time heartbeat would not.
            heartbeat: None,
            ..EngineSettings::default()
        };
        Ok(World {
            sandbox,
            state,
            cohorts,
            invoker,
            clock,
            engine: Engine::new(deps, settings),
            project,
            advertiser,
            cohort: "coh1".into(),
            work,
            retries: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub fn outbox(&self) -> std::sync::MutexGuard<'_, Vec<serde_json::Value>> {
        self.invoker
            .outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn take_retries(&self) -> std::sync::MutexGuard<'_, Vec<serde_json::Value>> {
        self.retries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn create_sync(
        &self,
        id: &str,
        cadence: Cadence,
        mode: WriteMode,
    ) -> Result<SyncConfig, String> {
        let now = audience_core::ports::Clock::now(&*self.clock);
        let sync = SyncConfig {
            sync_id: id.into(),
            project_id: self.project.clone(),
            cohort_id: self.cohort.clone(),
            advertiser_id: self.advertiser.clone(),
            cadence,
            write_mode: mode,
            state: SyncState::Active,
            audience_name: Some("Sim".into()),
            max_removal_ratio: 0.5,
            min_create_size: 1000,
            schedule_name: None,
            warnings: vec![],
            created_at: now,
            updated_at: now,
            version: 0,
            committed: None,
            pending_export: None,
            progress: Default::default(),
        };
        match self
            .state
            .create_sync(&sync)
            .await
            .map_err(|e| e.to_string())?
        {
            CreateSync::Created(s) | CreateSync::Exists(s) => Ok(s),
        }
    }
}

async fn connect_token(
    sb: &RunningSandbox,
    client: &audience_tiktok::TikTokClient,
) -> Result<String, String> {
    let url = format!(
        "{}/portal/auth?app_id={}&state=s1&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb",
        sb.base_url,
        sb.app_id()
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    let loc = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("no location")?
        .to_string();
    let code = url::Url::parse(&loc)
        .map_err(|e| e.to_string())?
        .query_pairs()
        .find(|(k, _)| k == "auth_code")
        .map(|(_, v)| v.to_string())
        .ok_or("no auth_code")?;
    let grant = client
        .exchange_auth_code(sb.app_id(), &AppSecret::new(sb.secret()), &code)
        .await
        .map_err(|e| e.to_string())?
        .data;
    Ok(grant.access_token.expose_secret().to_string())
}

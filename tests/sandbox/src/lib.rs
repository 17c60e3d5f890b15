//! A TikTok Marketing API sandbox: TikTok's routes (`/open_api/v1.3/...`, `/portal/auth`) over real HTTP,
//! behaving as TikTok documents (envelope codes, OAuth, scopes, rate limits, customer files, audiences with
//! a deterministic match rate, streaming mappings, processing windows, file limits, expiry), plus `/_sandbox/` controls for tests: apps, consent mode,
//! token revocation, audience inspection, the request log, fault injection, reset and a logical clock.
//!
//! Use it in-process with [`Sandbox::start`], mount [`router`] yourself, or run the `tiktok-sandbox` binary.

pub mod engine;
pub mod http;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;

pub use engine::rules::{
    MSG_EXPIRED, MSG_NOT_READY, MSG_PROCESSING, MSG_TOO_SMALL, NotEditable, not_editable_cause,
};
pub use engine::{AdvertiserSpec, AppSpec, FaultConfig, LogEntry, Rules};
pub use http::{Shared, router};

/// How to start a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Requests per app in any sliding 1,000 ms window (TikTok's basic tier: 10).
    pub qps: u32,
    /// Share of digests that match a TikTok user.
    pub match_rate: f64,
    /// Faults active from the start.
    pub faults: FaultConfig,
    /// Seeds the default app's secret and the fault dice.
    pub seed: u64,
    /// The app registered at start; `None` registers [`default_app`] for `seed`.
    pub default_app: Option<AppSpec>,
    /// TikTok's rules (processing windows, file limits, expiry, per-minute limits): all on by default.
    pub rules: Rules,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            port: 0,
            qps: 10,
            match_rate: 0.7,
            faults: FaultConfig::default(),
            seed: 1,
            default_app: None,
            rules: Rules::default(),
        }
    }
}

/// The default app: scopes 30, 31 and 100 (`oauth2/advertiser/get/` needs 100), allow-listed for the
/// streaming API (so streaming tests work; other apps are not unless they say so), redirect URIs
/// `http://127.0.0.1:*`, two advertisers.
pub fn default_app(seed: u64) -> AppSpec {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut secret = [0u8; 20];
    rng.fill(&mut secret);
    AppSpec {
        app_id: "7300000000000000001".into(),
        secret: hex::encode(secret),
        redirect_uris: vec!["http://127.0.0.1:*".into()],
        advertisers: vec![
            AdvertiserSpec {
                advertiser_id: "7100000000000000001".into(),
                advertiser_name: "Sandbox Advertiser One".into(),
            },
            AdvertiserSpec {
                advertiser_id: "7100000000000000002".into(),
                advertiser_name: "Sandbox Advertiser Two".into(),
            },
        ],
        scopes: vec![
            engine::SCOPE_AUDIENCE_READ,
            engine::SCOPE_AUDIENCE_WRITE,
            engine::SCOPE_AD_ACCOUNT_READ,
        ],
        streaming_allowed: true,
        advertiser_get_scope: Some(engine::SCOPE_AD_ACCOUNT_READ),
    }
}

pub struct Sandbox;

impl Sandbox {
    /// The sandbox's state and router without a listener, to mount in another server or test harness.
    pub fn router(opts: &SandboxOptions) -> Result<(axum::Router, Shared), String> {
        opts.faults.validate()?;
        let app = opts
            .default_app
            .clone()
            .unwrap_or_else(|| default_app(opts.seed));
        let state = engine::State::new(
            opts.qps.max(1),
            opts.match_rate,
            opts.rules.clone(),
            app,
            opts.faults.clone(),
            opts.seed,
        );
        let shared = Shared(Arc::new(Mutex::new(state)));
        Ok((router(shared.clone()), shared))
    }

    /// Binds 127.0.0.1:`port` and serves until the returned handle is dropped or shut down.
    pub async fn start(opts: SandboxOptions) -> std::io::Result<RunningSandbox> {
        let (app_router, shared) = Sandbox::router(&opts)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let app = shared.lock().default_app.clone();
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], opts.port))).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app_router).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "sandbox server stopped");
            }
        });
        Ok(RunningSandbox {
            base_url: format!("http://{addr}"),
            addr,
            app,
            shared,
            shutdown: Some(tx),
            task: Some(task),
        })
    }
}

/// A running sandbox. Dropping it stops the server.
pub struct RunningSandbox {
    /// `http://127.0.0.1:PORT`: the client's `host`.
    pub base_url: String,
    pub addr: SocketAddr,
    /// The default app (its secret is the sandbox's, not a real one).
    pub app: AppSpec,
    shared: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningSandbox {
    pub fn app_id(&self) -> &str {
        &self.app.app_id
    }
    pub fn secret(&self) -> &str {
        &self.app.secret
    }
    pub fn advertiser_ids(&self) -> Vec<String> {
        self.app.advertiser_ids()
    }
    /// Direct access to the state, for in-process tests that need more than the HTTP controls.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }
    /// A copy of the request log (the same as `GET /_sandbox/requests`).
    pub fn requests(&self) -> Vec<LogEntry> {
        self.shared.lock().log.clone()
    }
    /// The ready line the binary prints, keys in the documented order:
    /// `{"listening":"http://127.0.0.1:P","app_id":..,"secret":..,"advertiser_ids":[..]}`.
    pub fn ready_line(&self) -> String {
        #[derive(serde::Serialize)]
        struct Ready<'a> {
            listening: &'a str,
            app_id: &'a str,
            secret: &'a str,
            advertiser_ids: Vec<String>,
        }
        let r = Ready {
            listening: &self.base_url,
            app_id: &self.app.app_id,
            secret: &self.app.secret,
            advertiser_ids: self.app.advertiser_ids(),
        };
        serde_json::to_string(&r).unwrap_or_default()
    }
    /// Stops accepting connections and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            // In-flight keep-alive connections would hold graceful shutdown open; a dropped sandbox is done.
            t.abort();
        }
    }
}

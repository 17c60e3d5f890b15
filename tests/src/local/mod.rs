//! The local stack (`audience-sync-local`): the real handlers on moto against the TikTok sandbox, driven through
//! the same HTTP routes, S3 uploads and schedules as in production.
//!
//! | production | local stack |
//! |---|---|
//! | DynamoDB, S3, Secrets Manager, EventBridge Scheduler | moto (`AWS_ENDPOINT_URL`, or one started here) |
//! | API Gateway → `oauth-callback`, `save-mapping` | [`api`]: a plain HTTP server on `127.0.0.1` calling `audience_app::api::Api` |
//! | S3 ObjectCreated → sync-runner | bucket notifications → SQS in moto → [`dispatcher`] → the runner |
//! | Lambda `Invoke` (async) of the sync-runner | [`lambda`]: Lambda's Invoke API on its own port, the real handler |
//! | EventBridge Scheduler firing | [`scheduler`]: reads moto's schedules, fires due ones with their exact input |
//! | TikTok Marketing API | the TikTok sandbox, in-process or external (`--tiktok-sandbox`) |
//!
//! [`client`] is the black-box client the demo ([`demo`]) and the end-to-end tests use; [`exports`] makes
//! Amplitude-style exports and what their sync must produce.

pub mod api;
pub mod client;
pub mod demo;
pub mod dispatcher;
pub mod exports;
pub mod lambda;
pub mod provision;
pub mod scheduler;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use audience_app::api::{Api, Routes};
use audience_aws::{AwsClients, Config};
use audience_core::sync::EngineSettings;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tiktok_sandbox::{RunningSandbox, Sandbox, SandboxOptions};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::REGION;
use provision::Names;

/// How to start the stack (the binary's flags).
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Names every resource (`<name>-state`, `<name>-cohorts-<account>`, secrets under `<name>/`, ...): the
    /// same name on the same moto finds the same resources after a restart.
    pub name: String,
    /// 0 picks a free port.
    pub api_port: u16,
    pub lambda_port: u16,
    /// Schedule time passes this many times faster than real time.
    pub time_scale: f64,
    /// Use this sandbox instead of starting one (its app is registered through `/_sandbox/apps`).
    pub tiktok_sandbox: Option<String>,
    /// The TikTok host the functions call (e.g. a proxy in front of the sandbox); default the sandbox.
    pub tiktok_api_base: Option<String>,
    pub cohort_prefix: String,
    /// The in-process sandbox's requests per app per second, and the functions' `TIKTOK_RATE`.
    pub tiktok_qps: u32,
    /// Share of digests the in-process sandbox matches to TikTok users.
    pub match_rate: f64,
    /// The sync-runner's timeout (each invocation's deadline).
    pub runner_timeout: Duration,
    /// How long a run's lease on its sync lasts without renewal (a killed run's lease expires after it).
    pub lease_ttl: Duration,
    /// The in-process sandbox's TikTok rules (processing windows, file limits, ...): TikTok's by default.
    pub tiktok_rules: tiktok_sandbox::Rules,
    /// How often the sweeper resumes unfinished syncs (the template's `SweepRate`, 5 minutes there; short
    /// here so a local demo recovers quickly). `None`: no sweeper.
    pub sweep_every: Option<Duration>,
    /// A failure-notification webhook URL (the template's `FailureNotifications=on`): stored in the
    /// `<name>/notification-webhook` secret the runner reads. `None`: notifications off.
    pub notification_webhook: Option<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            name: "audience-sync-local".into(),
            api_port: 0,
            lambda_port: 0,
            time_scale: 1.0,
            tiktok_sandbox: None,
            tiktok_api_base: None,
            cohort_prefix: "cohorts".into(),
            tiktok_qps: 10,
            match_rate: 0.7,
            runner_timeout: Duration::from_secs(900),
            lease_ttl: EngineSettings::default().lease_ttl,
            tiktok_rules: tiktok_sandbox::Rules::default(),
            sweep_every: Some(DEFAULT_SWEEP_EVERY),
            notification_webhook: None,
        }
    }
}

/// The local sweeper's default period.
pub const DEFAULT_SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The one line printed on stdout when the stack is ready (fields in this order).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ready {
    pub api: String,
    pub admin_token: String,
    pub region: String,
    pub bucket: String,
    /// No trailing slash; may be "".
    pub cohort_prefix: String,
    pub aws_endpoint: String,
    pub tiktok_sandbox: String,
    pub app_id: String,
    pub advertiser_ids: Vec<String>,
}

impl Ready {
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A running stack. Dropping it stops its servers and loops.
pub struct Stack {
    pub ready: Ready,
    runner: Arc<lambda::Runner>,
    tasks: Vec<JoinHandle<()>>,
    _sandbox: Option<RunningSandbox>,
    _work: tempfile::TempDir,
}

impl Stack {
    pub async fn start(opts: StackOptions) -> Result<Stack> {
        provision::validate_stack_name(&opts.name)?;
        if !(opts.time_scale.is_finite() && opts.time_scale > 0.0) {
            bail!("--time-scale must be a positive number");
        }
        let cohort_prefix = opts.cohort_prefix.trim().trim_matches('/').to_string();
        let names = Names::new(&opts.name);

        // moto: the one at AWS_ENDPOINT_URL, or one started for (and dying with) this process.
        let external = std::env::var("AWS_ENDPOINT_URL").is_ok_and(|u| !u.trim().is_empty());
        if !external {
            // Said plainly before the harness, which panics when it has no moto (a test's way to fail).
            crate::find_moto_python()?;
        }
        let endpoint = tokio::task::spawn_blocking(|| {
            std::panic::catch_unwind(crate::moto_endpoint).map(str::to_string)
        })
        .await
        .context("starting moto")?
        .map_err(|p| {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            anyhow::anyhow!("{why}")
        })?;
        info!(aws_endpoint = %endpoint, "moto");
        let sdk = crate::sdk_config_for(&endpoint).await;

        // Ports first: the callback URL names the API's port and the Lambda endpoint is the clients'.
        let api_listener = bind(opts.api_port).await.context("binding the API port")?;
        let lambda_listener = bind(opts.lambda_port)
            .await
            .context("binding the Lambda port")?;
        let api_url = format!("http://{}", api_listener.local_addr()?);
        let lambda_url = format!("http://{}", lambda_listener.local_addr()?);
        let callback_url = format!("{api_url}/oauth/tiktok/callback");

        let (sandbox, sandbox_url) = match &opts.tiktok_sandbox {
            Some(url) => (None, url.trim().trim_end_matches('/').to_string()),
            None => {
                let s = Sandbox::start(SandboxOptions {
                    qps: opts.tiktok_qps,
                    match_rate: opts.match_rate,
                    rules: opts.tiktok_rules.clone(),
                    ..SandboxOptions::default()
                })
                .await
                .context("starting the TikTok sandbox")?;
                let url = s.base_url.clone();
                (Some(s), url)
            }
        };
        let tiktok_host = opts
            .tiktok_api_base
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| sandbox_url.clone());

        let function_arn = names.function_arn(REGION);
        let mut vars: HashMap<&str, String> = HashMap::new();
        vars.insert("TABLE_NAME", names.table.clone());
        vars.insert("BUCKET_NAME", names.bucket.clone());
        vars.insert("COHORT_PREFIX", cohort_prefix.clone());
        vars.insert("SECRET_PREFIX", names.secret_prefix.clone());
        vars.insert("SCHEDULE_GROUP", names.schedule_group.clone());
        vars.insert("SYNC_RUNNER_ARN", function_arn.clone());
        vars.insert("SCHEDULER_ROLE_ARN", names.scheduler_role_arn.clone());
        vars.insert("TIKTOK_HOST", tiktok_host);
        vars.insert("TIKTOK_RATE", opts.tiktok_qps.max(1).to_string());
        let webhook_secret = format!("{}/notification-webhook", names.secret_prefix);
        if opts.notification_webhook.is_some() {
            vars.insert("NOTIFICATION_WEBHOOK_SECRET", webhook_secret.clone());
        }
        let config = Config::from_lookup(|k| vars.get(k).cloned())
            .context("the functions' configuration")?;

        // The functions' clients: moto for everything, the Invoke server for Lambda (what
        // AWS_ENDPOINT_URL_LAMBDA does for a function).
        let mut clients = AwsClients::from_sdk_config(&sdk);
        clients.lambda = aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(&sdk)
                .endpoint_url(&lambda_url)
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::new(&sdk);

        let queues = provision::resources(&clients, &sqs, &names, &cohort_prefix, REGION).await?;
        let admin_token =
            provision::admin_token(&clients.secrets, &config.admin_token_secret).await?;
        let app = provision::app_identity(&clients.secrets, &config.app_credentials_secret).await?;
        if let Some(url) = &opts.notification_webhook {
            provision::webhook(&clients.secrets, &webhook_secret, url).await?;
        }
        let advertisers = app.advertisers();
        register_app(&sandbox_url, &app, &advertisers, &callback_url).await?;

        let work = tempfile::tempdir().context("creating the runner's work directory")?;
        // With the sandbox in-process the engine runs on its clock (the demo moves it hours ahead).
        let clock: Arc<dyn audience_core::ports::Clock> = match &sandbox {
            Some(s) => Arc::new(crate::SandboxClock(s.shared().clone())),
            None => Arc::new(audience_core::ports::SystemClock),
        };
        let engine = audience_app::runner::engine_with_clock(
            &config,
            &clients,
            EngineSettings {
                work_dir: work.path().to_path_buf(),
                lease_ttl: opts.lease_ttl,
                ..EngineSettings::default()
            },
            clock,
        )
        .context("building the sync-runner")?;
        let runner = Arc::new(lambda::Runner::new(
            engine,
            opts.runner_timeout,
            Some(lambda::DeadLetters {
                sqs: sqs.clone(),
                queue_url: queues.dlq_url.clone(),
            }),
        ));
        let api = Api::from_config(&config, &clients, Some(callback_url.clone()), Routes::All)
            .context("building the API")?;

        let mut tasks = vec![
            serve(
                "lambda",
                lambda_listener,
                lambda::router(runner.clone(), names.function.clone(), function_arn.clone()),
            ),
            serve("api", api_listener, api::router(Arc::new(api))),
            tokio::spawn(dispatcher::run(
                sqs.clone(),
                queues.events_url.clone(),
                runner.clone(),
            )),
            tokio::spawn(
                scheduler::Scheduler {
                    client: clients.scheduler.clone(),
                    group: names.schedule_group.clone(),
                    targets: vec![function_arn, names.function.clone()],
                    time_scale: opts.time_scale,
                    runner: runner.clone(),
                }
                .run(),
            ),
        ];
        if let Some(every) = opts.sweep_every.filter(|d| !d.is_zero()) {
            tasks.push(tokio::spawn(
                scheduler::Sweeper {
                    every,
                    runner: runner.clone(),
                }
                .run(),
            ));
        }

        let ready = Ready {
            api: api_url,
            admin_token,
            region: REGION.into(),
            bucket: names.bucket.clone(),
            cohort_prefix,
            aws_endpoint: endpoint,
            tiktok_sandbox: sandbox_url,
            app_id: app.app_id.clone(),
            advertiser_ids: advertisers.into_iter().map(|(id, _)| id).collect(),
        };
        info!(api = %ready.api, lambda = %lambda_url, callback = %callback_url, "local stack ready");
        Ok(Stack {
            ready,
            runner,
            tasks,
            _sandbox: sandbox,
            _work: work,
        })
    }

    /// Waits (at most `limit`) for accepted invocations to finish, so a stopped stack leaves no lease held,
    /// then stops everything.
    pub async fn shutdown(self, limit: Duration) {
        let start = Instant::now();
        while self.runner.in_flight() > 0 && start.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if self.runner.in_flight() > 0 {
            warn!(
                in_flight = self.runner.in_flight(),
                "stopping with runs in flight: their leases expire on their own"
            );
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await
}

fn serve(what: &'static str, listener: TcpListener, router: axum::Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(server = what, error = %e, "server stopped");
        }
    })
}

/// Registers (or re-registers, keeping its tokens) the stack's app in the sandbox, with the callback URL.
async fn register_app(
    sandbox: &str,
    app: &provision::AppIdentity,
    advertisers: &[(String, String)],
    callback_url: &str,
) -> Result<()> {
    let body = json!({
        "app_id": app.app_id,
        "secret": app.secret,
        "redirect_uris": [callback_url],
        "advertisers": advertisers.iter().map(|(id, name)| json!({"advertiser_id": id, "advertiser_name": name})).collect::<Vec<_>>(),
        // As the sandbox's default app: Audience Management (30 read, 31 write), the ad-account read
        // permission that `oauth2/advertiser/get/` needs (100), and allow-listed for the streaming API.
        "scopes": [30, 31, 100],
        "advertiser_get_scope": 100,
        "streaming_allowed": true,
    });
    let url = format!("{sandbox}/_sandbox/apps");
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("registering the app at {url}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        bail!("registering the app at {url}: {status} {text}");
    }
    Ok(())
}

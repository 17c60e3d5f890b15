//! The sync-runner's dependencies and its one handler function.

use std::sync::Arc;
use std::time::Duration;

use audience_aws::notify::WebhookNotifier;
use audience_aws::{Adapters, AwsClients, Config};
use audience_core::sync::engine::{EngineError, Outcome};
use audience_core::sync::{Deps, Engine, EngineSettings, RunnerInput};
use audience_tiktok::{AudienceAdapter, ClientConfig, TikTokClient};
use serde_json::{Value, json};
use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] audience_aws::ConfigError),
    #[error("TikTok client: {0}")]
    TikTok(#[from] audience_tiktok::ConfigError),
    #[error("{0} must be configured for the sync-runner")]
    Missing(&'static str),
}

/// The TikTok client of this process: its own limiter at the configured app rate (spaced, no bursts) and
/// the app-wide DynamoDB limiter shared with every other runner.
pub fn tiktok_client(config: &Config, adapters: &Adapters) -> Result<TikTokClient, SetupError> {
    let client = TikTokClient::new(ClientConfig {
        host: config.tiktok_host.clone(),
        rate_per_second: config.tiktok_rate * audience_tiktok::TIER_SHARE,
        rate_gate: Some(adapters.rate_gate.clone()),
        ..ClientConfig::default()
    })?;
    Ok(client)
}

/// Builds the engine from the environment (once, at cold start).
pub async fn engine_from_env() -> Result<Engine, SetupError> {
    let config = Config::from_env()?;
    let clients = AwsClients::load().await;
    engine_from(&config, &clients, EngineSettings::default())
}

pub fn engine_from(
    config: &Config,
    clients: &AwsClients,
    settings: EngineSettings,
) -> Result<Engine, SetupError> {
    engine_with_clock(
        config,
        clients,
        settings,
        Arc::new(audience_core::ports::SystemClock),
    )
}

/// As [`engine_from`], on another clock (the local stack runs the engine on its TikTok sandbox's clock).
pub fn engine_with_clock(
    config: &Config,
    clients: &AwsClients,
    settings: EngineSettings,
    clock: Arc<dyn audience_core::ports::Clock>,
) -> Result<Engine, SetupError> {
    let adapters = Adapters::new(clients, config)?;
    let tiktok = AudienceAdapter::new(tiktok_client(config, &adapters)?);
    let deps = Deps {
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
        tiktok: Arc::new(tiktok),
        clock,
    };
    let engine = Engine::new(deps, settings);
    Ok(match &config.notification_webhook_secret {
        Some(secret) => engine.with_notifier(Arc::new(WebhookNotifier::new(
            clients.secrets.clone(),
            secret.clone(),
        ))),
        None => engine,
    })
}

/// Handles one runner invocation. Unrecognized inputs are acknowledged and logged, never retried forever;
/// infrastructure failures are errors so Lambda retries the asynchronous invocation (then the DLQ).
pub async fn handle(
    engine: &Engine,
    payload: Value,
    time_left: Option<Duration>,
) -> Result<Value, EngineError> {
    let input = match RunnerInput::parse(&payload) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "runner input ignored");
            return Ok(json!({"outcomes": [Outcome::Ignored { reason: e.to_string() }]}));
        }
    };
    // The engine measures time on its clock (the system clock here).
    let deadline = time_left
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| engine.now() + d);
    let outcomes = engine.handle(input, deadline).await?;
    Ok(json!({ "outcomes": outcomes }))
}

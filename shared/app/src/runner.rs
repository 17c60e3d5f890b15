//! The sync-runner's dependencies and its one handler function.

use std::sync::Arc;
use std::time::Duration;

use audience_aws::notify::WebhookNotifier;
use audience_aws::{Adapters, AwsClients, Config};
use audience_core::digests::Spill;
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
    let lookup = |k: &str| std::env::var(k).ok();
    engine_from(&config, &clients, settings_from(&lookup))
}

/// The engine's settings for this function: the digest memory budget is `DIGEST_MEMORY_MB`, else half of
/// the function's memory (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`; the other half is the runtime, the reader's
/// chunks and the HTTP clients), else 512 MB. Digests beyond it are sorted in files under /tmp.
pub fn settings_from(lookup: &dyn Fn(&str) -> Option<String>) -> EngineSettings {
    let mb = |k: &str| lookup(k).and_then(|v| v.trim().parse::<u64>().ok());
    let budget_mb = mb("DIGEST_MEMORY_MB")
        .or_else(|| mb("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").map(|m| m / 2))
        .unwrap_or(512)
        .max(16);
    let mut settings = EngineSettings::default();
    settings.reader.spill = Spill::from_budget(budget_mb << 20, settings.work_dir.clone());
    settings
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

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(vars: &[(&str, &str)]) -> usize {
        let map: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        settings_from(&|k| map.get(k).cloned())
            .reader
            .spill
            .list_max
    }

    #[test]
    fn the_digest_budget_follows_the_function_memory_unless_set() {
        let per_mb = |mb: usize| (mb << 20) / 32 / 6;
        assert_eq!(budget(&[]), per_mb(512));
        assert_eq!(
            budget(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008")]),
            per_mb(1504)
        );
        assert_eq!(
            budget(&[
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008"),
                ("DIGEST_MEMORY_MB", "100")
            ]),
            per_mb(100)
        );
        // Unparsable values fall through; a tiny one is raised to 16 MB.
        assert_eq!(budget(&[("DIGEST_MEMORY_MB", "lots")]), per_mb(512));
        assert_eq!(budget(&[("DIGEST_MEMORY_MB", "1")]), per_mb(16));
    }
}

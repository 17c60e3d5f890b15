//! SDK clients, built once per process, and the adapters wired from [`Config`].

use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};

use crate::config::{Config, ConfigError};
use crate::{
    DynamoRateGate, DynamoStateStore, EventBridgeSchedules, LambdaInvoker, S3CohortStore,
    SecretsVault,
};

/// One client per service. Cheap to clone (the SDK clients are `Arc`s inside).
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    pub lambda: aws_sdk_lambda::Client,
}

impl AwsClients {
    /// From the SDK's default chain: region, credentials and endpoints (`AWS_ENDPOINT_URL`,
    /// `AWS_ENDPOINT_URL_<SERVICE>`) from the environment.
    pub async fn load() -> AwsClients {
        let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
        AwsClients::from_sdk_config(&sdk)
    }

    pub fn from_sdk_config(sdk: &SdkConfig) -> AwsClients {
        // Path-style: bucket names with dots, and local endpoints (moto) that have no per-bucket DNS.
        let s3 = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build();
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            s3: aws_sdk_s3::Client::from_conf(s3),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
            scheduler: aws_sdk_scheduler::Client::new(sdk),
            lambda: aws_sdk_lambda::Client::new(sdk),
        }
    }
}

/// Every adapter, wired from one [`Config`]. Functions build this once at cold start.
#[derive(Clone)]
pub struct Adapters {
    pub state: Arc<DynamoStateStore>,
    pub rate_gate: Arc<DynamoRateGate>,
    pub vault: Arc<SecretsVault>,
    pub cohorts: Arc<S3CohortStore>,
    /// `None` when `SYNC_RUNNER_ARN` or `SCHEDULER_ROLE_ARN` is not configured.
    pub schedules: Option<Arc<EventBridgeSchedules>>,
    /// `None` when `SYNC_RUNNER_ARN` is not configured.
    pub invoker: Option<Arc<LambdaInvoker>>,
}

impl Adapters {
    pub fn new(clients: &AwsClients, config: &Config) -> Result<Adapters, ConfigError> {
        let table = config.table()?.to_string();
        let bucket = config.bucket()?.to_string();
        let schedules = match (
            config.sync_runner_arn.as_deref(),
            config.scheduler_role_arn.as_deref(),
        ) {
            (Some(target), Some(role)) => Some(Arc::new(EventBridgeSchedules::new(
                clients.scheduler.clone(),
                config.schedule_group.clone(),
                target.to_string(),
                role.to_string(),
            ))),
            _ => None,
        };
        let invoker = config
            .sync_runner_arn
            .as_deref()
            .map(|f| Arc::new(LambdaInvoker::new(clients.lambda.clone(), f.to_string())));
        Ok(Adapters {
            state: Arc::new(DynamoStateStore::new(
                clients.dynamodb.clone(),
                table.clone(),
            )),
            rate_gate: Arc::new(DynamoRateGate::new(
                clients.dynamodb.clone(),
                table,
                "tiktok",
                config.tiktok_rate,
            )),
            vault: Arc::new(SecretsVault::new(
                clients.secrets.clone(),
                config.secret_prefix.clone(),
                config.app_credentials_secret.clone(),
                config.admin_token_secret.clone(),
                config.token_cache_ttl,
            )),
            cohorts: Arc::new(S3CohortStore::new(
                clients.s3.clone(),
                bucket,
                config.cohort_prefix.clone(),
                config.snapshot_prefix.clone(),
                config.report_prefix.clone(),
            )),
            schedules,
            invoker,
        })
    }

    /// `AwsClients::load` + `Config::from_env` + [`Adapters::new`].
    pub async fn from_env() -> Result<Adapters, ConfigError> {
        let config = Config::from_env()?;
        let clients = AwsClients::load().await;
        Adapters::new(&clients, &config)
    }
}

/// Bounded exponential backoff used by the adapters' own retry loops (conditional-write races, a secret
/// still being deleted).
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(50).saturating_mul(1u32 << attempt.min(6));
    let jitter = Duration::from_millis(rand::random_range(0..50));
    base.min(Duration::from_secs(3)) + jitter
}

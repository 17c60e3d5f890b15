//! AWS adapters (one per port of `audience_core::ports`):
//!
//! | port | adapter | service |
//! |---|---|---|
//! | `StateStore` | [`DynamoStateStore`] | DynamoDB, one table (see `docs/table-design.md`) |
//! | `RateGate` | [`DynamoRateGate`] | DynamoDB, GCRA "next free slot" item |
//! | `TokenVault` | [`SecretsVault`] | Secrets Manager |
//! | `CohortStore` | [`S3CohortStore`] | S3 |
//! | `Schedules` | [`EventBridgeSchedules`] | EventBridge Scheduler |
//! | `Invoker` | [`LambdaInvoker`] | Lambda `Invoke` (asynchronous) |
//! | `Notifier` | [`notify::WebhookNotifier`] | Secrets Manager (the URL) + an HTTPS webhook |
//!
//! Configuration comes from environment variables ([`Config`], documented in `docs/configuration.md`); the SDK
//! clients are built once per process ([`AwsClients`]).

pub mod clients;
pub mod cohorts;
pub mod config;
mod error;
pub mod iam_actions;
pub mod invoker;
pub mod notify;
pub mod provision;
pub mod rate;
pub mod s3_versions;
pub mod schedules;
pub mod state;
pub mod vault;

pub use clients::{Adapters, AwsClients};
pub use cohorts::S3CohortStore;
pub use config::{Config, ConfigError};
pub use invoker::LambdaInvoker;
pub use rate::{DEFAULT_JITTER_ALLOWANCE, DynamoRateGate, GateStats};
pub use schedules::EventBridgeSchedules;
pub use state::DynamoStateStore;
pub use vault::SecretsVault;

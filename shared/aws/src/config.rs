//! Configuration from environment variables, all in one place.
//!
//! | variable | used by | default | meaning |
//! |---|---|---|---|
//! | `TABLE_NAME` | all functions | (required) | the DynamoDB state table |
//! | `BUCKET_NAME` | runner, API | (required) | bucket of cohort exports, snapshots and reports |
//! | `COHORT_PREFIX` | runner, API | `cohorts` | where Amplitude writes exports (`""` = bucket root) |
//! | `SNAPSHOT_PREFIX` | runner, API | `audience-sync/snapshots` | snapshots (one key each, never overwritten) |
//! | `REPORT_PREFIX` | runner, API | `audience-sync/reports` | JSON run and preview reports |
//! | `SECRET_PREFIX` | runner, API | `audience-sync` | project secrets are `<prefix>/tiktok/<project_id>` |
//! | `APP_CREDENTIALS_SECRET` | runner, API | `<SECRET_PREFIX>/app-credentials` | `{"app_id","secret"}` of the TikTok app |
//! | `ADMIN_TOKEN_SECRET` | API | `<SECRET_PREFIX>/admin-token` | the API's bearer token |
//! | `SCHEDULE_GROUP` | API, runner | `audience-sync` | EventBridge Scheduler group of the sync schedules |
//! | `SYNC_RUNNER_ARN` | API, runner | (required to schedule/invoke) | sync-runner function name or ARN |
//! | `SCHEDULER_ROLE_ARN` | API, runner | (required to schedule) | role EventBridge Scheduler assumes to invoke |
//! | `TIKTOK_HOST` | runner, API | `https://business-api.tiktok.com` | TikTok Marketing API base URL |
//! | `TIKTOK_RATE` | runner, API | `10` | app-wide TikTok requests per second (all runners together) |
//! | `TOKEN_CACHE_SECONDS` | runner, API | `300` | in-process token cache TTL |
//!
//! AWS endpoints and credentials come from the SDK's own variables (`AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_<SERVICE>`, ...).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub table_name: Option<String>,
    pub bucket_name: Option<String>,
    pub cohort_prefix: String,
    pub snapshot_prefix: String,
    pub report_prefix: String,
    pub secret_prefix: String,
    pub app_credentials_secret: String,
    pub admin_token_secret: String,
    pub schedule_group: String,
    pub sync_runner_arn: Option<String>,
    pub scheduler_role_arn: Option<String>,
    pub tiktok_host: String,
    pub tiktok_rate: f64,
    pub token_cache_ttl: Duration,
    /// The secret holding the failure-notification webhook URL (`NOTIFICATION_WEBHOOK_SECRET`); `None`: off.
    pub notification_webhook_secret: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Same as [`Config::from_env`] with another source of variables (tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let non_empty = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let secret_prefix =
            trim_slashes(&non_empty("SECRET_PREFIX").unwrap_or_else(|| "audience-sync".into()));
        let tiktok_rate = match non_empty("TIKTOK_RATE") {
            None => 10.0,
            Some(v) => match v.parse::<f64>() {
                Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000.0 => r,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "TIKTOK_RATE",
                        why: format!("{v:?} is not a number of requests per second in (0, 10000]"),
                    });
                }
            },
        };
        let token_cache_ttl = match non_empty("TOKEN_CACHE_SECONDS") {
            None => Duration::from_secs(300),
            Some(v) => Duration::from_secs(v.parse::<u64>().map_err(|_| ConfigError::Invalid {
                name: "TOKEN_CACHE_SECONDS",
                why: format!("{v:?} is not a whole number of seconds"),
            })?),
        };
        Ok(Config {
            table_name: non_empty("TABLE_NAME"),
            bucket_name: non_empty("BUCKET_NAME"),
            // A prefix may be "" (exports at the bucket root), so only unset means the default.
            cohort_prefix: trim_slashes(&get("COHORT_PREFIX").unwrap_or_else(|| "cohorts".into())),
            snapshot_prefix: trim_slashes(
                &get("SNAPSHOT_PREFIX").unwrap_or_else(|| "audience-sync/snapshots".into()),
            ),
            report_prefix: trim_slashes(
                &get("REPORT_PREFIX").unwrap_or_else(|| "audience-sync/reports".into()),
            ),
            app_credentials_secret: non_empty("APP_CREDENTIALS_SECRET")
                .unwrap_or_else(|| format!("{secret_prefix}/app-credentials")),
            admin_token_secret: non_empty("ADMIN_TOKEN_SECRET")
                .unwrap_or_else(|| format!("{secret_prefix}/admin-token")),
            secret_prefix,
            schedule_group: non_empty("SCHEDULE_GROUP").unwrap_or_else(|| "audience-sync".into()),
            sync_runner_arn: non_empty("SYNC_RUNNER_ARN"),
            scheduler_role_arn: non_empty("SCHEDULER_ROLE_ARN"),
            tiktok_host: non_empty("TIKTOK_HOST")
                .unwrap_or_else(|| "https://business-api.tiktok.com".into()),
            tiktok_rate,
            token_cache_ttl,
            notification_webhook_secret: non_empty("NOTIFICATION_WEBHOOK_SECRET"),
        })
    }

    pub fn table(&self) -> Result<&str, ConfigError> {
        self.table_name
            .as_deref()
            .ok_or(ConfigError::Missing("TABLE_NAME"))
    }

    pub fn bucket(&self) -> Result<&str, ConfigError> {
        self.bucket_name
            .as_deref()
            .ok_or(ConfigError::Missing("BUCKET_NAME"))
    }

    pub fn sync_runner(&self) -> Result<&str, ConfigError> {
        self.sync_runner_arn
            .as_deref()
            .ok_or(ConfigError::Missing("SYNC_RUNNER_ARN"))
    }

    pub fn scheduler_role(&self) -> Result<&str, ConfigError> {
        self.scheduler_role_arn
            .as_deref()
            .ok_or(ConfigError::Missing("SCHEDULER_ROLE_ARN"))
    }
}

fn trim_slashes(s: &str) -> String {
    s.trim().trim_matches('/').to_string()
}

/// Joins key parts with `/`, skipping empty ones (an empty prefix means the bucket root).
pub(crate) fn join_key(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_and_derived_names() {
        let c = cfg(&[("TABLE_NAME", "t1"), ("SECRET_PREFIX", "/acme/")]).unwrap();
        assert_eq!(c.table().unwrap(), "t1");
        assert_eq!(c.bucket(), Err(ConfigError::Missing("BUCKET_NAME")));
        assert_eq!(c.cohort_prefix, "cohorts");
        assert_eq!(c.secret_prefix, "acme");
        assert_eq!(c.app_credentials_secret, "acme/app-credentials");
        assert_eq!(c.admin_token_secret, "acme/admin-token");
        assert_eq!(c.tiktok_rate, 10.0);
        assert_eq!(c.token_cache_ttl, Duration::from_secs(300));
    }

    #[test]
    fn empty_cohort_prefix_is_the_bucket_root() {
        let c = cfg(&[("COHORT_PREFIX", "")]).unwrap();
        assert_eq!(c.cohort_prefix, "");
        assert_eq!(join_key(&[&c.cohort_prefix, "a.csv"]), "a.csv");
        assert_eq!(join_key(&["x/", "/y", "z"]), "x/y/z");
    }

    #[test]
    fn bad_rate_is_a_clear_error() {
        for bad in ["0", "-1", "abc", "NaN"] {
            let err = cfg(&[("TIKTOK_RATE", bad)]).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        name: "TIKTOK_RATE",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        assert_eq!(cfg(&[("TIKTOK_RATE", "2.5")]).unwrap().tiktok_rate, 2.5);
    }
}

//! The local stack's AWS resources on moto, shaped like `infra/template.yaml`: the state table (GSI, TTL), the
//! versioned cohort bucket with ObjectCreated notifications, the schedule group, the admin-token and
//! app-credentials secrets, and (because moto cannot invoke Lambdas) an SQS queue the notifications go to,
//! plus the runner's dead-letter queue. Every step is idempotent: a restarted stack on the same moto finds its
//! resources and secrets and keeps them.

use anyhow::{Context, Result, bail};
use audience_aws::{AwsClients, provision};
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;
use rand::Rng;

use crate::ACCOUNT_ID;

/// Names of everything the stack provisions, derived from one stack name.
#[derive(Debug, Clone)]
pub struct Names {
    pub table: String,
    pub bucket: String,
    pub schedule_group: String,
    pub secret_prefix: String,
    pub events_queue: String,
    pub dlq: String,
    /// The sync-runner's function name (the Lambda Invoke server answers to it and to its ARN).
    pub function: String,
    pub scheduler_role_arn: String,
}

impl Names {
    pub fn new(stack: &str) -> Names {
        Names {
            table: format!("{stack}-state"),
            bucket: format!("{stack}-cohorts-{ACCOUNT_ID}"),
            schedule_group: stack.to_string(),
            secret_prefix: stack.to_string(),
            events_queue: format!("{stack}-cohort-events"),
            dlq: format!("{stack}-runner-dlq"),
            function: format!("{stack}-sync-runner"),
            scheduler_role_arn: format!("arn:aws:iam::{ACCOUNT_ID}:role/{stack}-scheduler"),
        }
    }

    pub fn function_arn(&self, region: &str) -> String {
        format!(
            "arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{}",
            self.function
        )
    }
}

/// A stack name must make valid bucket, table, queue and secret names.
pub fn validate_stack_name(name: &str) -> Result<()> {
    let ok = (3..=30).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!("--name must be 3-30 characters of [a-z0-9-], not starting or ending with '-'");
    }
    Ok(())
}

/// The queue URLs of the provisioned queues.
pub struct Queues {
    pub events_url: String,
    pub dlq_url: String,
}

/// Table, bucket (versioned), schedule group, queues and the bucket's notifications to the events queue.
pub async fn resources(
    clients: &AwsClients,
    sqs: &aws_sdk_sqs::Client,
    names: &Names,
    cohort_prefix: &str,
    region: &str,
) -> Result<Queues> {
    provision::create_table(&clients.dynamodb, &names.table)
        .await
        .context("creating the state table")?;
    provision::create_bucket(&clients.s3, &names.bucket)
        .await
        .context("creating the cohort bucket")?;
    provision::create_schedule_group(&clients.scheduler, &names.schedule_group)
        .await
        .context("creating the schedule group")?;
    let events_url = create_queue(sqs, &names.events_queue).await?;
    let dlq_url = create_queue(sqs, &names.dlq).await?;
    let queue_arn = format!("arn:aws:sqs:{region}:{ACCOUNT_ID}:{}", names.events_queue);
    // As the template: ObjectCreated under the cohort prefix, one rule per suffix (.csv and .csv.gz).
    let prefix = if cohort_prefix.is_empty() {
        String::new()
    } else {
        format!("{cohort_prefix}/")
    };
    let mut config = NotificationConfiguration::builder();
    for (id, suffix) in [("cohort-csv", ".csv"), ("cohort-csv-gz", ".csv.gz")] {
        let mut rules = S3KeyFilter::builder().filter_rules(
            FilterRule::builder()
                .name(FilterRuleName::Suffix)
                .value(suffix)
                .build(),
        );
        if !prefix.is_empty() {
            rules = rules.filter_rules(
                FilterRule::builder()
                    .name(FilterRuleName::Prefix)
                    .value(&prefix)
                    .build(),
            );
        }
        let queue = QueueConfiguration::builder()
            .id(id)
            .queue_arn(&queue_arn)
            .events(Event::S3ObjectCreated)
            .filter(
                NotificationConfigurationFilter::builder()
                    .key(rules.build())
                    .build(),
            )
            .build()
            .context("building the bucket notification")?;
        config = config.queue_configurations(queue);
    }
    clients
        .s3
        .put_bucket_notification_configuration()
        .bucket(&names.bucket)
        .notification_configuration(config.build())
        .send()
        .await
        .context("configuring the bucket's ObjectCreated notifications")?;
    Ok(Queues {
        events_url,
        dlq_url,
    })
}

async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String> {
    // CreateQueue with the same attributes returns the existing queue.
    let out = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, "60")
        .send()
        .await
        .with_context(|| format!("creating SQS queue {name}"))?;
    out.queue_url
        .with_context(|| format!("SQS queue {name} has no URL"))
}

/// The TikTok app the stack registers in the sandbox: its credentials live in the app-credentials secret.
#[derive(Debug, Clone)]
pub struct AppIdentity {
    pub app_id: String,
    pub secret: String,
}

impl AppIdentity {
    /// `73` + 16 digits + `0`: shaped like TikTok's 19-digit app ids.
    fn generate() -> AppIdentity {
        let mut rng = rand::rng();
        let digits: String = (0..16)
            .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
            .collect();
        let mut secret = [0u8; 20];
        rng.fill(&mut secret);
        AppIdentity {
            app_id: format!("73{digits}0"),
            secret: hex::encode(secret),
        }
    }

    /// The app's advertisers, derived from the app id so a restarted stack finds the same ones.
    pub fn advertisers(&self) -> Vec<(String, String)> {
        let core = self.app_id.get(2..18).unwrap_or("0000000000000000");
        vec![
            (format!("71{core}1"), "Local Advertiser One".to_string()),
            (format!("71{core}2"), "Local Advertiser Two".to_string()),
        ]
    }
}

/// Creates the admin-token secret unless it exists (as the template generates it: `{"token": "..."}`); returns
/// the token in force.
/// The failure-notification webhook's secret: the URL itself (rewritten on every start).
pub async fn webhook(
    secrets: &aws_sdk_secretsmanager::Client,
    name: &str,
    url: &str,
) -> Result<()> {
    let url = url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        anyhow::bail!("--notification-webhook must be an http(s) URL");
    }
    put_secret(secrets, name, url).await
}

pub async fn admin_token(secrets: &aws_sdk_secretsmanager::Client, name: &str) -> Result<String> {
    if let Some(existing) = read_secret(secrets, name).await? {
        let existing = existing.trim();
        // The functions accept a bare string or JSON with "token".
        let token = match serde_json::from_str::<serde_json::Value>(existing) {
            Ok(v) => v
                .get("token")
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_string(),
            Err(_) => existing.to_string(),
        };
        if token.len() >= 16 {
            return Ok(token);
        }
    }
    let mut raw = [0u8; 24];
    rand::rng().fill(&mut raw);
    let token = hex::encode(raw);
    put_secret(
        secrets,
        name,
        &serde_json::json!({ "token": token }).to_string(),
    )
    .await?;
    Ok(token)
}

/// The app credentials in the secret when a previous run of the stack stored them, else a new app.
pub async fn app_identity(
    secrets: &aws_sdk_secretsmanager::Client,
    name: &str,
) -> Result<AppIdentity> {
    if let Some(existing) = read_secret(secrets, name).await? {
        let v: serde_json::Value = serde_json::from_str(&existing)
            .with_context(|| format!("secret {name} is not JSON"))?;
        if let (Some(app_id), Some(secret)) = (
            v.get("app_id").and_then(|v| v.as_str()),
            v.get("secret").and_then(|v| v.as_str()),
        ) {
            return Ok(AppIdentity {
                app_id: app_id.to_string(),
                secret: secret.to_string(),
            });
        }
    }
    let app = AppIdentity::generate();
    let body = serde_json::json!({"app_id": app.app_id, "secret": app.secret}).to_string();
    put_secret(secrets, name, &body).await?;
    Ok(app)
}

async fn read_secret(
    secrets: &aws_sdk_secretsmanager::Client,
    name: &str,
) -> Result<Option<String>> {
    match secrets.get_secret_value().secret_id(name).send().await {
        Ok(out) => Ok(out.secret_string),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading secret {name}"))),
    }
}

async fn put_secret(
    secrets: &aws_sdk_secretsmanager::Client,
    name: &str,
    value: &str,
) -> Result<()> {
    match secrets
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_exists_exception()) =>
        {
            secrets
                .put_secret_value()
                .secret_id(name)
                .secret_string(value)
                .send()
                .await
                .with_context(|| format!("updating secret {name}"))?;
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating secret {name}"))),
    }
}

//! `TokenVault` on Secrets Manager: one secret per connected project, `<prefix>/tiktok/<project_id>`.
//!
//! Secret values are parsed into `SecretString`s at once; error messages name the secret, never its content
//! (serde_json's messages can quote the offending value, so only line/column are kept).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use audience_core::ports::{AppCredentials, PortError, TikTokConnection, TokenVault};
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::clients::backoff;
use crate::error::unavailable;

const SERVICE: &str = "Secrets Manager";
/// Attempts of create-or-replace while a previous secret of the same name is still being deleted.
const PUT_ATTEMPTS: u32 = 8;

pub struct SecretsVault {
    client: Client,
    prefix: String,
    app_credentials_secret: String,
    admin_token_secret: String,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, TikTokConnection)>>,
}

impl std::fmt::Debug for SecretsVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsVault")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

// No Debug: it holds the token in clear between parsing and wrapping.
#[derive(Deserialize)]
struct StoredConnection {
    access_token: String,
    #[serde(default)]
    advertiser_ids: Vec<String>,
    #[serde(default)]
    scope_ids: Vec<u32>,
    connected_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct StoredAppCredentials {
    app_id: String,
    #[serde(alias = "app_secret")]
    secret: String,
}

#[derive(Deserialize)]
struct StoredAdminToken {
    #[serde(alias = "admin_token", alias = "password")]
    token: String,
}

fn code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

fn parse_error(secret: &str, e: &serde_json::Error) -> PortError {
    PortError::Corrupt(format!(
        "secret {secret} does not hold the expected JSON (line {}, column {})",
        e.line(),
        e.column()
    ))
}

impl SecretsVault {
    pub fn new(
        client: Client,
        prefix: impl Into<String>,
        app_credentials_secret: impl Into<String>,
        admin_token_secret: impl Into<String>,
        cache_ttl: Duration,
    ) -> SecretsVault {
        SecretsVault {
            client,
            prefix: prefix.into().trim_matches('/').to_string(),
            app_credentials_secret: app_credentials_secret.into(),
            admin_token_secret: admin_token_secret.into(),
            ttl: cache_ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `<prefix>/tiktok/<project_id>`.
    pub fn secret_name(&self, project_id: &str) -> String {
        if self.prefix.is_empty() {
            format!("tiktok/{project_id}")
        } else {
            format!("{}/tiktok/{project_id}", self.prefix)
        }
    }

    fn cached(&self, project_id: &str) -> Option<TikTokConnection> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(project_id)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, c)| c.clone())
    }

    fn remember(&self, project_id: &str, connection: &TikTokConnection) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(project_id.to_string(), (Instant::now(), connection.clone()));
    }

    /// The secret's string value; `None` when missing or scheduled for deletion.
    async fn read(&self, name: &str) -> Result<Option<SecretString>, PortError> {
        match self.client.get_secret_value().secret_id(name).send().await {
            Ok(out) => match out.secret_string {
                Some(v) => Ok(Some(SecretString::from(v))),
                None => Err(PortError::Corrupt(format!(
                    "secret {name} has no string value"
                ))),
            },
            Err(e) if matches!(code(&e), Some("ResourceNotFoundException")) => Ok(None),
            // A secret scheduled for deletion is gone as far as we are concerned.
            Err(e) if matches!(code(&e), Some("InvalidRequestException")) => Ok(None),
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn put_value(&self, name: &str, value: &str) -> Result<(), PortError> {
        for attempt in 0..PUT_ATTEMPTS {
            let created = self
                .client
                .create_secret()
                .name(name)
                .secret_string(value)
                .description("audience-sync: TikTok connection of one Amplitude project")
                .send()
                .await;
            let err = match created {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            match code(&err) {
                Some("ResourceExistsException") => {
                    // The name may belong to a secret scheduled for deletion (moto reports that case as
                    // "exists" and would even accept a value into it): restore it first.
                    if self.scheduled_for_deletion(name).await? {
                        self.restore(name).await?;
                    }
                    match self
                        .client
                        .put_secret_value()
                        .secret_id(name)
                        .secret_string(value)
                        .send()
                        .await
                    {
                        Ok(_) => return Ok(()),
                        // Scheduled for deletion: restore below and overwrite.
                        Err(e) if matches!(code(&e), Some("InvalidRequestException")) => {
                            self.restore(name).await?
                        }
                        // Deleted between the two calls: create again.
                        Err(e) if matches!(code(&e), Some("ResourceNotFoundException")) => {}
                        Err(e) => return Err(unavailable(SERVICE, e)),
                    }
                }
                // "already scheduled for deletion" (a disconnect's deletion still completing on AWS, or a
                // secret deleted with a recovery window): restore it, then overwrite its value.
                Some("InvalidRequestException") => self.restore(name).await?,
                _ => return Err(unavailable(SERVICE, err)),
            }
            if attempt + 1 < PUT_ATTEMPTS {
                // After a restore the next round's create finds it and overwrites; after a force-delete
                // still in flight, the name frees up shortly.
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Err(PortError::Unavailable {
            service: SERVICE,
            message: format!("secret {name} stayed unavailable (still being deleted?)"),
        })
    }

    async fn scheduled_for_deletion(&self, name: &str) -> Result<bool, PortError> {
        match self.client.describe_secret().secret_id(name).send().await {
            Ok(out) => Ok(out.deleted_date.is_some()),
            Err(e) if matches!(code(&e), Some("ResourceNotFoundException")) => Ok(false),
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn restore(&self, name: &str) -> Result<(), PortError> {
        match self.client.restore_secret().secret_id(name).send().await {
            Ok(_) => Ok(()),
            // Deletion already completed (name free) or in progress: the retry loop handles both.
            Err(e)
                if matches!(
                    code(&e),
                    Some("ResourceNotFoundException" | "InvalidRequestException")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }
}

#[async_trait]
impl TokenVault for SecretsVault {
    async fn put_connection(
        &self,
        project_id: &str,
        connection: &TikTokConnection,
    ) -> Result<(), PortError> {
        let name = self.secret_name(project_id);
        let value = SecretString::from(
            serde_json::json!({
                "access_token": connection.access_token.expose_secret(),
                "advertiser_ids": connection.advertiser_ids,
                "scope_ids": connection.scope_ids,
                "connected_at": connection.connected_at,
            })
            .to_string(),
        );
        self.invalidate(project_id);
        self.put_value(&name, value.expose_secret()).await?;
        self.remember(project_id, connection);
        Ok(())
    }

    async fn get_connection(
        &self,
        project_id: &str,
    ) -> Result<Option<TikTokConnection>, PortError> {
        if let Some(c) = self.cached(project_id) {
            return Ok(Some(c));
        }
        let name = self.secret_name(project_id);
        let Some(raw) = self.read(&name).await? else {
            return Ok(None);
        };
        let stored: StoredConnection =
            serde_json::from_str(raw.expose_secret()).map_err(|e| parse_error(&name, &e))?;
        let connection = TikTokConnection {
            access_token: SecretString::from(stored.access_token),
            advertiser_ids: stored.advertiser_ids,
            scope_ids: stored.scope_ids,
            connected_at: stored.connected_at,
        };
        self.remember(project_id, &connection);
        Ok(Some(connection))
    }

    async fn delete_connection(&self, project_id: &str) -> Result<(), PortError> {
        self.invalidate(project_id);
        let name = self.secret_name(project_id);
        match self
            .client
            .delete_secret()
            .secret_id(&name)
            .force_delete_without_recovery(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(code(&e), Some("ResourceNotFoundException")) => Ok(()),
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    fn invalidate(&self, project_id: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.remove(project_id);
    }

    async fn app_credentials(&self) -> Result<AppCredentials, PortError> {
        let name = &self.app_credentials_secret;
        let raw = self.read(name).await?.ok_or_else(|| {
            // The template creates this secret without a value: "no value yet" is the usual case.
            PortError::Config(format!(
                "app-credentials secret {name} has no value yet (or does not exist): put \
                 {{\"app_id\": \"...\", \"secret\": \"...\"}} with aws secretsmanager put-secret-value"
            ))
        })?;
        let stored: StoredAppCredentials =
            serde_json::from_str(raw.expose_secret()).map_err(|e| parse_error(name, &e))?;
        if stored.app_id.trim().is_empty() || stored.secret.is_empty() {
            return Err(PortError::Config(format!(
                "secret {name}: app_id and secret must be filled in"
            )));
        }
        Ok(AppCredentials {
            app_id: stored.app_id.trim().to_string(),
            secret: SecretString::from(stored.secret),
        })
    }

    async fn admin_token(&self) -> Result<SecretString, PortError> {
        let name = &self.admin_token_secret;
        let raw = self.read(name).await?.ok_or_else(|| {
            PortError::Config(format!("admin-token secret {name} does not exist"))
        })?;
        // A generated secret is either the bare string or JSON with one key (GenerateStringKey).
        let value = raw.expose_secret().trim();
        let token = if value.starts_with('{') {
            let stored: StoredAdminToken =
                serde_json::from_str(value).map_err(|e| parse_error(name, &e))?;
            stored.token
        } else {
            value.to_string()
        };
        if token.len() < 16 {
            return Err(PortError::Config(format!(
                "admin token in {name} is shorter than 16 characters"
            )));
        }
        Ok(SecretString::from(token))
    }
}

//! `Notifier` as a webhook: the URL is read from a Secrets Manager secret (cached a few minutes; no secret,
//! no value or an empty value = notifications off) and each notice is POSTed as JSON (Slack-compatible
//! `{"text": ...}` plus fields). Best effort: one attempt, a 5 s timeout, failures logged without the URL
//! (a webhook URL is a credential).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use audience_core::notify::Notice;
use audience_core::ports::Notifier;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use secrecy::{ExposeSecret, SecretString};
use tracing::{info, warn};

/// One POST's whole time budget (connect included).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the URL (or its absence) is believed before the secret is read again.
pub const URL_CACHE: Duration = Duration::from_secs(300);

type Cached = Option<(Instant, Option<SecretString>)>;

pub struct WebhookNotifier {
    client: Client,
    secret_id: String,
    http: reqwest::Client,
    cache: Mutex<Cached>,
    cache_for: Duration,
}

impl WebhookNotifier {
    pub fn new(client: Client, secret_id: impl Into<String>) -> WebhookNotifier {
        let http = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .connect_timeout(WEBHOOK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        WebhookNotifier {
            client,
            secret_id: secret_id.into(),
            http,
            cache: Mutex::new(None),
            cache_for: URL_CACHE,
        }
    }

    /// Another cache time (tests).
    pub fn with_cache(mut self, cache_for: Duration) -> WebhookNotifier {
        self.cache_for = cache_for;
        self
    }

    /// The URL, or `None` when notifications are off (or the secret cannot be read: logged).
    async fn url(&self) -> Option<SecretString> {
        {
            let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, url)) = &*c
                && at.elapsed() < self.cache_for
            {
                return url.clone();
            }
        }
        let url = match self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
        {
            Ok(out) => out.secret_string.as_deref().and_then(parse_url),
            Err(e) => {
                let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
                // No secret, or a secret without a value yet: off, and worth no warning.
                if code != "ResourceNotFoundException" {
                    warn!(error = %e, "notification webhook secret unreadable; notifications skipped");
                }
                None
            }
        };
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), url.clone()));
        url
    }
}

/// The secret holds the URL itself or `{"url": "..."}`; empty means off.
fn parse_url(raw: &str) -> Option<SecretString> {
    let raw = raw.trim();
    let url = match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(v) if v.is_object() => v.get("url")?.as_str()?.trim().to_string(),
        _ => raw.to_string(),
    };
    (url.starts_with("https://") || url.starts_with("http://")).then(|| SecretString::from(url))
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn notify(&self, notice: &Notice) {
        let Some(url) = self.url().await else {
            return;
        };
        let event = notice.kind.as_str();
        let sent = self
            .http
            .post(url.expose_secret())
            .json(&notice.to_json())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                info!(event, run_id = %notice.run_id, "notification sent")
            }
            Ok(r) => {
                warn!(event, run_id = %notice.run_id, status = r.status().as_u16(), "webhook refused the notification")
            }
            // Without the URL: reqwest's error text includes it.
            Err(e) => warn!(
                event,
                run_id = %notice.run_id,
                timeout = e.is_timeout(),
                connect = e.is_connect(),
                "webhook unreachable; notification dropped"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let u = |s: &str| parse_url(s).map(|u| u.expose_secret().to_string());
        assert_eq!(
            u(" https://hooks.example/x "),
            Some("https://hooks.example/x".into())
        );
        assert_eq!(
            u(r#"{"url": "https://hooks.example/y"}"#),
            Some("https://hooks.example/y".into())
        );
        assert_eq!(u(""), None);
        assert_eq!(u(r#"{"url": ""}"#), None);
        assert_eq!(u("{}"), None);
        assert_eq!(u("ftp://x"), None);
    }
}

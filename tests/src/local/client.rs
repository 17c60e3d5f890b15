//! A black-box client of a running local stack: only what a user has (the HTTP API with the admin token, S3
//! uploads to the cohort bucket, a browser following TikTok's consent redirect) plus the sandbox's `/_sandbox/`
//! controls. The demo and the end-to-end tests use it; it never touches the stack's internals.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_s3::primitives::ByteStream;
use reqwest::Method;
use serde_json::{Value, json};

use super::Ready;

/// Run states after which a run does not change any more.
pub const FINAL_RUN_STATES: [&str; 8] = [
    "succeeded",
    "held",
    "up_to_date",
    "waiting_for_minimum",
    "held_for_review",
    "stale",
    "skipped",
    "failed",
];

pub struct StackClient {
    pub ready: Ready,
    http: reqwest::Client,
    s3: aws_sdk_s3::Client,
}

/// An API answer: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The body when the status is the expected one, else an error showing both.
    pub fn expect(self, status: u16) -> Result<Value> {
        if self.status != status {
            bail!("expected HTTP {status}, got {}: {}", self.status, self.body);
        }
        Ok(self.body)
    }

    pub fn error_code(&self) -> Option<&str> {
        self.body.pointer("/error/code").and_then(Value::as_str)
    }
}

/// What a browser sees while connecting a project.
#[derive(Debug, Clone)]
pub struct Connected {
    pub authorization_url: String,
    /// Where TikTok's consent page redirected (the stack's callback with `auth_code` and `state`).
    pub redirected_to: String,
    pub callback_status: u16,
    /// The callback page's text without tags.
    pub page_text: String,
}

impl StackClient {
    pub async fn new(ready: Ready) -> Result<StackClient> {
        let sdk = crate::sdk_config_for(&ready.aws_endpoint).await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(StackClient { ready, http, s3 })
    }

    /// `METHOD <api><path>` with the admin token and an optional JSON body.
    pub async fn api(&self, method: Method, path: &str, body: Option<Value>) -> Result<Answer> {
        self.api_with_token(method, path, body, Some(&self.ready.admin_token))
            .await
    }

    pub async fn api_with_token(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Result<Answer> {
        let url = format!("{}{path}", self.ready.api);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.api(Method::GET, path, None).await?.expect(200)
    }

    /// Connects a project the way a user does: the API's authorization URL, TikTok's consent page (the
    /// sandbox approves or denies per `/_sandbox/consent`), then the browser follows the redirect to the
    /// stack's callback.
    pub async fn connect(&self, project: &str) -> Result<Connected> {
        let auth = self
            .api(
                Method::POST,
                &format!("/v1/projects/{project}/connect"),
                None,
            )
            .await?
            .expect(200)?;
        let authorization_url = auth
            .get("authorization_url")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("no authorization_url in {auth}"))?
            .to_string();
        let consent = self
            .http
            .get(&authorization_url)
            .send()
            .await
            .context("opening the consent page")?;
        if !consent.status().is_redirection() {
            bail!(
                "consent page answered {} instead of redirecting",
                consent.status()
            );
        }
        let redirected_to = consent
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("consent redirect without Location"))?
            .to_string();
        let page = self
            .http
            .get(&redirected_to)
            .send()
            .await
            .context("following the redirect to the callback")?;
        let callback_status = page.status().as_u16();
        let html = page.text().await.unwrap_or_default();
        Ok(Connected {
            authorization_url,
            redirected_to,
            callback_status,
            page_text: strip_tags(&html),
        })
    }

    /// The object key of an export file under the cohort prefix.
    pub fn export_key(&self, file_name: &str) -> String {
        if self.ready.cohort_prefix.is_empty() {
            file_name.to_string()
        } else {
            format!("{}/{file_name}", self.ready.cohort_prefix)
        }
    }

    /// Uploads an export as Amplitude's S3 destination does; returns its key.
    pub async fn upload(&self, file_name: &str, bytes: Vec<u8>) -> Result<String> {
        let key = self.export_key(file_name);
        self.s3
            .put_object()
            .bucket(&self.ready.bucket)
            .key(&key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .with_context(|| format!("uploading s3://{}/{key}", self.ready.bucket))?;
        Ok(key)
    }

    /// Runs of a sync, newest first (first page).
    pub async fn runs(&self, project: &str, sync_id: &str) -> Result<Vec<Value>> {
        let page = self
            .get(&format!(
                "/v1/projects/{project}/syncs/{sync_id}/runs?limit=50"
            ))
            .await?;
        Ok(page
            .get("runs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until a finished run of the sync satisfies `pred` (checking every 250 ms, at most `limit`: a guard
    /// against hanging, not a performance check) and returns it.
    pub async fn wait_for_run(
        &self,
        project: &str,
        sync_id: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let start = Instant::now();
        loop {
            let runs = self.runs(project, sync_id).await?;
            if let Some(r) = runs.iter().find(|r| is_final(r) && pred(r)) {
                return Ok(r.clone());
            }
            if start.elapsed() > limit {
                bail!(
                    "no matching finished run of sync {sync_id} after {limit:?}; runs: {}",
                    Value::Array(runs)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits for the finished run of `key` (any trigger).
    pub async fn wait_for_export_run(
        &self,
        project: &str,
        sync_id: &str,
        key: &str,
    ) -> Result<Value> {
        self.wait_for_run(project, sync_id, Duration::from_secs(120), |r| {
            r.get("source_export").and_then(Value::as_str) == Some(key)
        })
        .await
    }

    pub async fn sandbox_get(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.ready.tiktok_sandbox);
        let resp = self.http.get(&url).send().await.context(url.clone())?;
        if !resp.status().is_success() {
            bail!("GET {url}: {}", resp.status());
        }
        resp.json().await.context("sandbox answer is not JSON")
    }

    pub async fn sandbox_post(&self, path: &str, body: Value) -> Result<Value> {
        let url = format!("{}{path}", self.ready.tiktok_sandbox);
        let resp = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .context(url.clone())?;
        if !resp.status().is_success() {
            bail!("POST {url}: {}", resp.status());
        }
        Ok(resp.json().await.unwrap_or(Value::Null))
    }

    /// The digests a TikTok audience holds, as the sandbox sees them.
    pub async fn audience_members(&self, audience_id: &str) -> Result<BTreeSet<String>> {
        let a = self
            .sandbox_get(&format!("/_sandbox/audiences/{audience_id}"))
            .await?;
        Ok(a.get("members")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The sandbox's view of an audience (`get/`'s audience details).
    pub async fn audience_details(&self, audience_id: &str) -> Result<Value> {
        let a = self
            .sandbox_get(&format!("/_sandbox/audiences/{audience_id}"))
            .await?;
        Ok(a.get("audience").cloned().unwrap_or(Value::Null))
    }

    /// Audiences of an advertiser in the sandbox.
    pub async fn audiences_of(&self, advertiser_id: &str) -> Result<Vec<Value>> {
        let v = self
            .sandbox_get(&format!(
                "/_sandbox/audiences?advertiser_id={advertiser_id}"
            ))
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Revokes every token of the stack's app on the sandbox (the user removed the app's access on TikTok).
    pub async fn revoke_tokens(&self) -> Result<()> {
        self.sandbox_post(
            "/_sandbox/tokens/revoke",
            json!({"app_id": self.ready.app_id}),
        )
        .await
        .map(|_| ())
    }
}

pub fn is_final(run: &Value) -> bool {
    run.get("state")
        .and_then(Value::as_str)
        .is_some_and(|s| FINAL_RUN_STATES.contains(&s))
}

/// Text of an HTML page: tags, styles and scripts removed, blanks collapsed.
pub fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        out.push(' ');
        let tag = &rest[i..];
        let lower = tag.get(..7).unwrap_or(tag).to_ascii_lowercase();
        // The contents of <style> and <script> are not text.
        let closing = if lower.starts_with("<style") {
            Some("</style>")
        } else if lower.starts_with("<script") {
            Some("</script>")
        } else {
            None
        };
        rest = match closing {
            Some(c) => match tag.to_ascii_lowercase().find(c) {
                Some(j) => &tag[j + c.len()..],
                None => "",
            },
            None => match tag.find('>') {
                Some(j) => &tag[j + 1..],
                None => "",
            },
        };
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn strip_tags_keeps_text_only() {
        let html = "<html><head><title>T</title><STYLE>body{x:1}</style></head><body><h1>Hi</h1>\n<p>a &amp; <b>b</b></p><script>x()</script></body></html>";
        assert_eq!(super::strip_tags(html), "T Hi a &amp; b");
    }
}

//! `POST /v1/projects/{project_id}/connect` and `GET /oauth/tiktok/callback` (function `oauth-callback`).

use audience_core::model::{Advertiser, IntegrationStatus, OAuthState};
use audience_core::ports::{ConsumedState, TikTokConnection};
use audience_tiktok::{AccessToken, AppSecret, ExposeSecret};
use chrono::Duration as ChronoDuration;
use rand::RngCore;
use secrecy::SecretString;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::{Api, ApiError, ApiRequest, ApiResponse};

/// TikTok's permission ids are hierarchical: 3 is Audience Management and stands for its children, 30 (read
/// audiences) and 31 (create and update audiences). Writing needs 31 (or 3).
const AUDIENCE_MANAGEMENT: u32 = 3;
const AUDIENCE_WRITE: u32 = 31;

/// Whether a grant clearly lacks audience write: only when TikTok listed scopes and neither 3 nor 31 is among
/// them (TikTok does not always list scopes; an empty list proves nothing).
fn lacks_audience_write(scope_ids: &[u32]) -> bool {
    !scope_ids.is_empty()
        && !scope_ids
            .iter()
            .any(|s| *s == AUDIENCE_MANAGEMENT || *s == AUDIENCE_WRITE)
}
pub(crate) const CALLBACK_PATH: &str = "/oauth/tiktok/callback";

/// The state is stored under its SHA-256: what sits in DynamoDB cannot be replayed at the callback.
fn state_key(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

impl Api {
    pub(crate) async fn connect(
        &self,
        req: &ApiRequest,
        project_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let redirect_uri = self.redirect_uri(req)?;
        let app = self
            .deps
            .vault
            .app_credentials()
            .await
            .map_err(|e| ApiError::internal(format!("TikTok app credentials: {e}")))?;
        // 256 random bits from the OS-seeded CSPRNG.
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let state = hex::encode(bytes);
        let now = self.now();
        let ttl = ChronoDuration::from_std(self.settings.state_ttl)
            .unwrap_or_else(|_| ChronoDuration::minutes(10));
        self.deps
            .state
            .put_oauth_state(&OAuthState {
                state: state_key(&state),
                project_id: project_id.to_string(),
                redirect_uri: redirect_uri.clone(),
                created_at: now,
                expires_at: now + ttl,
            })
            .await?;
        let url = self
            .deps
            .tiktok
            .consent_url(&app.app_id, &state, &redirect_uri);
        Ok(ApiResponse::json(200, &json!({"authorization_url": url})))
    }

    /// `CallbackUrl` when configured, else `https://<domainName>/oauth/tiktok/callback` from the request.
    fn redirect_uri(&self, req: &ApiRequest) -> Result<String, ApiError> {
        if let Some(u) = &self.settings.callback_url {
            return Ok(u.clone());
        }
        let host = req
            .domain_name
            .as_deref()
            .or_else(|| req.header("host"))
            .map(str::trim)
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .ok_or_else(|| {
                ApiError::internal(
                    "no callback URL: set the CallbackUrl parameter (CALLBACK_URL) or call through API Gateway",
                )
            })?;
        Ok(format!("https://{host}{CALLBACK_PATH}"))
    }

    pub(crate) async fn oauth_callback(&self, req: &ApiRequest) -> ApiResponse {
        match self.callback_inner(req).await {
            Ok(page) => page,
            Err(page) => page,
        }
    }

    async fn callback_inner(&self, req: &ApiRequest) -> Result<ApiResponse, ApiResponse> {
        let state = req
            .query_param("state")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                page(
                    400,
                    "Connection failed",
                    "<p>The callback has no <code>state</code>. Start again from the connect request.</p>",
                )
            })?;
        let declined = req.query_param("error").filter(|e| !e.is_empty());
        let code = req
            .query_param("auth_code")
            .or_else(|| req.query_param("code"))
            .filter(|c| !c.is_empty());
        if declined.is_none() && code.is_none() {
            return Err(page(
                400,
                "Connection failed",
                "<p>TikTok sent neither an authorization code nor an error.</p>",
            ));
        }
        let consumed = self
            .deps
            .state
            .consume_oauth_state(&state_key(state), self.now())
            .await
            .map_err(|e| internal_page(&e.to_string()))?;
        let pending = match consumed {
            ConsumedState::Consumed(s) => s,
            ConsumedState::Unknown => {
                return Err(page(
                    400,
                    "Link not valid",
                    "<p>This authorization link is unknown or was already used. Start again from the connect request.</p>",
                ));
            }
            ConsumedState::Expired => {
                return Err(page(
                    400,
                    "Link expired",
                    "<p>This authorization link has expired (links are valid for 10 minutes). Start again from the connect request.</p>",
                ));
            }
        };
        let project_id = pending.project_id.clone();
        if let Some(err) = declined {
            let detail = req
                .query_param("error_description")
                .map(|d| format!(": {}", escape(d)))
                .unwrap_or_default();
            info!(project_id = %project_id, "TikTok consent declined");
            return Err(page(
                400,
                "Connection declined",
                &format!(
                    "<p>TikTok reported <code>{}</code>{detail}. Nothing was connected for project <code>{}</code>.</p>",
                    escape(err),
                    escape(&project_id)
                ),
            ));
        }
        let code = code.unwrap_or_default();
        let app = self
            .deps
            .vault
            .app_credentials()
            .await
            .map_err(|e| internal_page(&e.to_string()))?;
        let secret = AppSecret::new(app.secret.expose_secret());
        let grant = self
            .deps
            .tiktok
            .exchange_auth_code(&app.app_id, &secret, code)
            .await
            .map_err(|e| tiktok_page(&ApiError::tiktok(&e)))?
            .data;
        let scope_ids: Vec<u32> = grant
            .scope
            .iter()
            .filter_map(|s| u32::try_from(*s).ok())
            .collect();
        if lacks_audience_write(&scope_ids) {
            self.revoke_quietly(&app.app_id, &secret, &grant.access_token)
                .await;
            return Err(page(
                403,
                "Permission missing",
                "<p>The authorization did not grant TikTok's <strong>Audience Management</strong> permission \
                 (id 3, or its child 31: create and update audiences). Enable Audience Management for the app on TikTok's developer portal, \
                 then connect again and keep that permission checked on the consent page.</p>",
            ));
        }
        // Names come from `oauth2/advertiser/get/`, which TikTok lists under the ad-account read permission. The
        // grant is good without it: keep the fresh token and fall back to the grant's advertiser ids.
        let (listed, names_missing) = match self
            .deps
            .tiktok
            .authorized_advertisers(&grant.access_token, &app.app_id, &secret)
            .await
        {
            Ok(r) => (r.data, None),
            Err(e) => {
                warn!(project_id = %project_id, error = %e, "TikTok did not list the ad accounts; using the grant's ids");
                (Vec::new(), Some(e))
            }
        };
        let mut advertisers: Vec<Advertiser> = listed
            .into_iter()
            .map(|a| Advertiser {
                advertiser_id: a.advertiser_id,
                advertiser_name: a.advertiser_name,
            })
            .collect();
        for id in &grant.advertiser_ids {
            if !advertisers.iter().any(|a| &a.advertiser_id == id) {
                advertisers.push(Advertiser {
                    advertiser_id: id.clone(),
                    advertiser_name: String::new(),
                });
            }
        }
        let now = self.now();
        let previous = self
            .deps
            .state
            .get_integration(&project_id)
            .await
            .map_err(|e| internal_page(&e.to_string()))?
            .map(|i| i.status);
        self.deps
            .vault
            .put_connection(
                &project_id,
                &TikTokConnection {
                    access_token: SecretString::from(grant.access_token.expose_secret()),
                    advertiser_ids: advertisers
                        .iter()
                        .map(|a| a.advertiser_id.clone())
                        .collect(),
                    scope_ids: scope_ids.clone(),
                    connected_at: now,
                },
            )
            .await
            .map_err(|e| internal_page(&e.to_string()))?;
        self.deps
            .state
            .record_connection(&project_id, &advertisers, &scope_ids, now)
            .await
            .map_err(|e| internal_page(&e.to_string()))?;
        if previous == Some(IntegrationStatus::ReconnectRequired) {
            self.reenable_schedules(&project_id)
                .await
                .map_err(|e| internal_page(&e.message))?;
        }
        info!(project_id = %project_id, advertisers = advertisers.len(), "TikTok connected");
        let names_note = match &names_missing {
            None => String::new(),
            Some(e) => format!(
                "<p><strong>Ad account names are unknown:</strong> TikTok refused to list them ({}). The accounts \
                 below come from the authorization itself and work for syncs. To see names, give the TikTok app \
                 the ad-account read permission on TikTok's developer portal and connect again.</p>",
                escape(e.message())
            ),
        };
        let items: String = advertisers
            .iter()
            .map(|a| {
                format!(
                    "<li>{} <code>{}</code></li>",
                    escape(if a.advertiser_name.is_empty() {
                        "(unnamed ad account)"
                    } else {
                        &a.advertiser_name
                    }),
                    escape(&a.advertiser_id)
                )
            })
            .collect();
        Ok(page(
            200,
            "TikTok connected",
            &format!(
                "<p>Project <code>{}</code> is connected to these TikTok ad accounts:</p><ul>{items}</ul>\
                 {names_note}<p><a href=\"/console/projects/{}\">Back to the console</a> (or close this page).</p>",
                escape(&project_id),
                escape(&project_id)
            ),
        ))
    }

    /// After a reconnect: the schedules the runner disabled come back for active syncs (paused syncs keep
    /// theirs disabled).
    pub(crate) async fn reenable_schedules(&self, project_id: &str) -> Result<(), ApiError> {
        for s in self.deps.state.list_syncs(project_id).await? {
            if s.schedule_enabled(IntegrationStatus::Connected) {
                let found = self
                    .deps
                    .schedules
                    .set_schedule_enabled(&s.sync_id, true)
                    .await?;
                if !found {
                    warn!(project_id, sync_id = %s.sync_id, "schedule missing at reconnect");
                }
            }
        }
        Ok(())
    }

    async fn revoke_quietly(&self, app_id: &str, secret: &AppSecret, token: &AccessToken) {
        if let Err(e) = self.deps.tiktok.revoke_token(app_id, secret, token).await {
            warn!(error = %e, "revoking the TikTok token failed (best effort)");
        }
    }
}

fn internal_page(message: &str) -> ApiResponse {
    tracing::error!(message, "OAuth callback failed");
    page(
        500,
        "Connection failed",
        "<p>audience-sync could not complete the connection (see the function's logs). Try again.</p>",
    )
}

fn tiktok_page(e: &ApiError) -> ApiResponse {
    warn!(message = %e.message, "TikTok refused the OAuth exchange");
    page(
        502,
        "TikTok refused the connection",
        &format!(
            "<p>TikTok answered: {}</p><p>Start again from the connect request.</p>",
            escape(&e.message)
        ),
    )
}

fn page(status: u16, title: &str, body_html: &str) -> ApiResponse {
    ApiResponse::html(
        status,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>audience-sync: {t}</title>\
             <style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;line-height:1.5}}</style></head>\
             <body><h1>{t}</h1>{body_html}</body></html>",
            t = escape(title)
        ),
    )
}

/// HTML text escaping (everything shown comes from TikTok or the query string).
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_grant_that_lists_scopes_without_audience_write_is_refused() {
        // TikTok's parent permission 3 stands for 30 and 31.
        assert!(!lacks_audience_write(&[3]));
        assert!(!lacks_audience_write(&[30, 31]));
        assert!(!lacks_audience_write(&[31]));
        assert!(!lacks_audience_write(&[100, 3]));
        // No list is no proof of a missing permission.
        assert!(!lacks_audience_write(&[]));
        assert!(lacks_audience_write(&[30]));
        assert!(lacks_audience_write(&[100, 4, 30]));
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}

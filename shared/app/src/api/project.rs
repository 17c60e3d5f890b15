//! A project's integration: status, key mapping, disconnect.

use audience_core::identifiers::KeyKind;
use audience_core::model::KeyMapping;
use audience_core::ports::SaveMapping;
use audience_core::{Normalizer, ports::TikTokConnection};
use audience_tiktok::{AccessToken, AppSecret, ExposeSecret};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use super::views::{integration_json, mapping_json};
use super::{Api, ApiError, ApiRequest, ApiResponse, ErrorCode, parse_body};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingBody {
    amplitude_property: String,
    tiktok_key: String,
    #[serde(default)]
    default_phone_region: Option<String>,
}

/// Validates and canonicalizes a mapping request: property trimmed, key and region uppercased.
fn parse_mapping(body: MappingBody) -> Result<KeyMapping, ApiError> {
    let property = body.amplitude_property.trim();
    if property.is_empty() || property.chars().count() > 256 {
        return Err(ApiError::invalid(
            "amplitude_property must be 1-256 characters",
        ));
    }
    let key: KeyKind = body
        .tiktok_key
        .trim()
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| ApiError::invalid("tiktok_key must be one of EMAIL, PHONE, IDFA, GAID"))?;
    let region = body
        .default_phone_region
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_ascii_uppercase);
    if let Some(r) = &region {
        if key != KeyKind::Phone {
            return Err(ApiError::invalid(
                "default_phone_region applies only to tiktok_key PHONE",
            ));
        }
        Normalizer::new(key, Some(r)).map_err(|_| {
            ApiError::invalid(format!(
                "default_phone_region {r:?} is not a known region code (e.g. US, GB, DE)"
            ))
        })?;
    }
    Ok(KeyMapping {
        amplitude_property: property.to_string(),
        tiktok_key: key,
        default_phone_region: region,
    }
    .canonical())
}

impl Api {
    /// `GET /v1/projects`: every project that was ever connected (and not disconnected since), and every
    /// project with run history kept across a disconnect (`not_connected`).
    pub(crate) async fn list_projects(&self) -> Result<ApiResponse, ApiError> {
        let st = &self.deps.state;
        let integrations = st.list_integrations().await?;
        let mut ids: Vec<String> = integrations.iter().map(|i| i.project_id.clone()).collect();
        ids.extend(st.projects_with_history().await?);
        ids.sort();
        ids.dedup();
        let mut projects = Vec::new();
        for id in ids {
            let i = integrations.iter().find(|i| i.project_id == id);
            let syncs = st.list_syncs(&id).await?.len();
            let mut v = integration_json(&id, i, syncs);
            v["retired_syncs"] = json!(st.list_retired_syncs(&id).await?.len());
            projects.push(v);
        }
        Ok(ApiResponse::json(200, &json!({ "projects": projects })))
    }

    pub(crate) async fn get_integration(&self, project_id: &str) -> Result<ApiResponse, ApiError> {
        let integration = self.deps.state.get_integration(project_id).await?;
        let syncs = self.deps.state.list_syncs(project_id).await?.len();
        Ok(ApiResponse::json(
            200,
            &integration_json(project_id, integration.as_ref(), syncs),
        ))
    }

    pub(crate) async fn put_mapping(
        &self,
        req: &ApiRequest,
        project_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let mapping = parse_mapping(parse_body(req)?)?;
        match self
            .deps
            .state
            .save_mapping(project_id, &mapping, self.now())
            .await?
        {
            SaveMapping::Created => Ok(ApiResponse::json(201, &mapping_json(&mapping))),
            SaveMapping::Unchanged => {
                // Answer with what is stored (the first spelling of the property wins).
                let stored = self
                    .deps
                    .state
                    .get_integration(project_id)
                    .await?
                    .and_then(|i| i.mapping)
                    .unwrap_or(mapping);
                Ok(ApiResponse::json(200, &mapping_json(&stored)))
            }
            SaveMapping::Locked(existing) => Err(ApiError::new(
                ErrorCode::MappingLocked,
                format!(
                    "the project already maps {:?} to {}; a mapping cannot change (disconnect first)",
                    existing.amplitude_property,
                    existing.tiktok_key.as_str()
                ),
            )),
            SaveMapping::NotConnected => Err(not_connected(project_id)),
        }
    }

    /// Disconnect: revoke the token (best effort), delete every sync with its schedule, snapshots, reports and
    /// runs, then everything left under the project's snapshot and report prefixes (objects of syncs no longer
    /// listed, preview reports), the secret and the integration with its mapping. TikTok audiences are kept.
    /// `keep_history=true` keeps each sync's runs under a retired marker (everything else goes the same way);
    /// without it, history kept by an earlier disconnect goes too. Idempotent: a failed disconnect is
    /// repeated as a whole.
    pub(crate) async fn disconnect(
        &self,
        req: &ApiRequest,
        project_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let keep_history = match req.query_param("keep_history") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(ApiError::invalid("keep_history must be true or false")),
        };
        if let Some(conn) = self.deps.vault.get_connection(project_id).await? {
            self.revoke(project_id, &conn).await;
        }
        let mut kept = Vec::new();
        for s in self.deps.state.list_syncs(project_id).await? {
            if keep_history {
                self.retire_sync(&s).await?;
            } else {
                self.remove_sync(&s).await?;
            }
            if let Some(a) = s.progress.tiktok_audience_id {
                kept.push(a);
            }
        }
        if !keep_history {
            self.delete_history(project_id).await?;
        }
        // After the syncs: a run that wrote after its sync's deletion left objects no sync lists any more.
        self.deps.cohorts.delete_project_objects(project_id).await?;
        self.deps.vault.delete_connection(project_id).await?;
        self.deps.state.delete_integration(project_id).await?;
        let history: Vec<String> = self
            .deps
            .state
            .list_retired_syncs(project_id)
            .await?
            .into_iter()
            .map(|r| r.sync_id)
            .collect();
        info!(
            project_id,
            audiences_kept = kept.len(),
            histories_kept = history.len(),
            "project disconnected"
        );
        Ok(ApiResponse::json(
            200,
            &json!({"audiences_kept": kept, "history_kept": history}),
        ))
    }

    async fn revoke(&self, project_id: &str, conn: &TikTokConnection) {
        let app = match self.deps.vault.app_credentials().await {
            Ok(a) => a,
            Err(e) => {
                warn!(project_id, error = %e, "token not revoked: app credentials unavailable");
                return;
            }
        };
        let secret = AppSecret::new(app.secret.expose_secret());
        let token = AccessToken::new(conn.access_token.expose_secret());
        match self
            .deps
            .tiktok
            .revoke_token(&app.app_id, &secret, &token)
            .await
        {
            Ok(_) => info!(project_id, "TikTok token revoked"),
            Err(e) => {
                warn!(project_id, error = %e, "revoking the TikTok token failed (best effort)")
            }
        }
    }
}

pub(crate) fn not_connected(project_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotConnected,
        format!("project {project_id} is not connected to TikTok (POST .../connect first)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(p: &str, k: &str, r: Option<&str>) -> MappingBody {
        MappingBody {
            amplitude_property: p.into(),
            tiktok_key: k.into(),
            default_phone_region: r.map(str::to_string),
        }
    }

    #[test]
    fn mapping_is_canonicalized() {
        let m = parse_mapping(body("  Phone Number ", "phone", Some(" us "))).unwrap();
        assert_eq!(m.amplitude_property, "Phone Number");
        assert_eq!(m.tiktok_key, KeyKind::Phone);
        assert_eq!(m.default_phone_region.as_deref(), Some("US"));
    }

    #[test]
    fn bad_mappings_are_refused() {
        assert!(parse_mapping(body(" ", "EMAIL", None)).is_err());
        assert!(parse_mapping(body("email", "MAID", None)).is_err());
        assert!(parse_mapping(body("email", "EMAIL", Some("US"))).is_err());
        assert!(parse_mapping(body("phone", "PHONE", Some("XX"))).is_err());
    }
}

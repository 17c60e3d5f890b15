//! Previews: what an export would give, and (against a sync) what its next run would add and remove and
//! whether the sync's guards would let it. The runner computes them asynchronously.

use audience_core::cohort::naming::parse_export_key;
use audience_core::model::{PreviewRecord, PreviewState};
use audience_core::sync::input::Trigger;
use serde::Deserialize;
use serde_json::{Value, json};

use super::project::not_connected;
use super::{Api, ApiError, ApiRequest, ApiResponse, ErrorCode, parse_body, valid_id};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    s3_key: String,
    /// Compare with this sync's committed snapshot and use its guards.
    #[serde(default)]
    sync_id: Option<String>,
}

impl Api {
    pub(crate) async fn create_preview(
        &self,
        req: &ApiRequest,
        project_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let b: PreviewBody = parse_body(req)?;
        let key = b.s3_key.clone();
        let prefix = &self.settings.cohort_prefix;
        let under_prefix = prefix.is_empty() || key.starts_with(&format!("{prefix}/"));
        if key.is_empty() || key.len() > 1024 || !under_prefix {
            return Err(ApiError::invalid(format!(
                "s3_key must be the full key of an export under the cohort prefix {prefix:?}"
            )));
        }
        let integration = self
            .deps
            .state
            .get_integration(project_id)
            .await?
            .ok_or_else(|| not_connected(project_id))?;
        if integration.mapping.is_none() {
            return Err(ApiError::new(
                ErrorCode::MappingMissing,
                "save the key mapping (PUT .../mapping) before previewing",
            ));
        }
        if let Some(sync_id) = &b.sync_id {
            self.check_preview_sync(project_id, sync_id, &key).await?;
        }
        if self.deps.cohorts.head(&key).await?.is_none() {
            return Err(ApiError::invalid(format!("no object at s3_key {key:?}")));
        }
        let now = self.now();
        let preview_id = ulid::Ulid::new().to_string();
        let mut record = PreviewRecord {
            preview_id: preview_id.clone(),
            project_id: project_id.to_string(),
            s3_key: key.clone(),
            sync_id: b.sync_id.clone(),
            state: PreviewState::Running,
            report: None,
            error: None,
            created_at: now,
            updated_at: now,
        };
        self.deps.state.put_preview(&record).await?;
        let payload = Trigger::Preview {
            project_id: project_id.to_string(),
            preview_id: preview_id.clone(),
            s3_key: key.clone(),
            sync_id: b.sync_id.clone(),
        };
        if let Err(e) = self.deps.invoker.invoke_async(&payload.to_json()).await {
            record.state = PreviewState::Failed;
            record.error =
                Some(json!({"code": "internal", "message": "the preview could not be started"}));
            record.updated_at = self.now();
            let _ = self.deps.state.put_preview(&record).await;
            return Err(e.into());
        }
        Ok(ApiResponse::json(202, &json!({"preview_id": preview_id})))
    }

    pub(crate) async fn get_preview(
        &self,
        project_id: &str,
        preview_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let not_found = || ApiError::not_found(format!("no preview {preview_id}"));
        if !valid_id(preview_id) {
            return Err(not_found());
        }
        let p = self
            .deps
            .state
            .get_preview(project_id, preview_id)
            .await?
            .ok_or_else(not_found)?;
        Ok(ApiResponse::json(
            200,
            &json!({
                "state": serde_json::to_value(p.state).unwrap_or(Value::Null),
                "s3_key": p.s3_key,
                "sync_id": p.sync_id,
                "report": p.report,
                "error": p.error,
            }),
        ))
    }

    /// The sync exists in this project, and a well-named export is of its cohort (another cohort's file
    /// would show every member as a removal).
    async fn check_preview_sync(
        &self,
        project_id: &str,
        sync_id: &str,
        key: &str,
    ) -> Result<(), ApiError> {
        let missing = || ApiError::not_found(format!("no sync {sync_id}"));
        if !valid_id(sync_id) {
            return Err(missing());
        }
        let sync = self
            .deps
            .state
            .get_sync(project_id, sync_id)
            .await?
            .ok_or_else(missing)?;
        if let Ok(name) = parse_export_key(key)
            && name.cohort_id != sync.cohort_id
        {
            return Err(ApiError::invalid(format!(
                "the export is of cohort {}, and sync {sync_id} syncs cohort {}",
                name.cohort_id, sync.cohort_id
            )));
        }
        Ok(())
    }
}

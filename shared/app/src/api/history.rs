//! Run history kept across a disconnect (`DELETE .../integration?keep_history=true`): each sync becomes a
//! retired marker; its runs stay readable at the usual runs routes until the history is deleted.

use audience_core::model::{RetiredSync, SyncConfig};
use serde_json::{Value, json};
use tracing::info;

use super::views::run_json;
use super::{Api, ApiError, ApiResponse, valid_id};

pub(crate) fn retired_json(r: &RetiredSync) -> Value {
    json!({
        "sync_id": r.sync_id,
        "cohort_id": r.cohort_id,
        "advertiser_id": r.advertiser_id,
        "cadence": r.cadence,
        "write_mode": r.write_mode,
        "tiktok_audience_id": r.tiktok_audience_id,
        "audience_name": r.audience_name,
        "created_at": r.created_at,
        "retired_at": r.retired_at,
        "last_run": r.last_run.as_ref().map(run_json),
    })
}

impl Api {
    /// As `remove_sync` (schedule, snapshots, reports), but the run ledgers stay, under a retired marker.
    pub(crate) async fn retire_sync(&self, s: &SyncConfig) -> Result<(), ApiError> {
        self.deps.schedules.delete_schedule(&s.sync_id).await?;
        let objects = &self.deps.cohorts;
        objects
            .delete_sync_objects(&s.project_id, &s.sync_id)
            .await?;
        let retired = RetiredSync::of(s, self.now());
        self.deps.state.retire_sync(&retired).await?;
        // Again once the sync is gone: a run in flight may have written since (its commit now fails).
        objects
            .delete_sync_objects(&s.project_id, &s.sync_id)
            .await?;
        info!(project_id = %s.project_id, sync_id = %s.sync_id, "sync retired (runs kept)");
        Ok(())
    }

    /// The id whose runs a runs route reads: a live sync's, or a retired one's.
    pub(crate) async fn runs_owner(
        &self,
        project_id: &str,
        sync_id: &str,
    ) -> Result<String, ApiError> {
        let missing = || ApiError::not_found(format!("no sync {sync_id} in this project"));
        if !valid_id(sync_id) {
            return Err(missing());
        }
        let st = &self.deps.state;
        if let Some(s) = st.get_sync(project_id, sync_id).await? {
            return Ok(s.sync_id);
        }
        match st.get_retired_sync(project_id, sync_id).await? {
            Some(r) => Ok(r.sync_id),
            None => Err(missing()),
        }
    }

    pub(crate) async fn list_retired(&self, project_id: &str) -> Result<ApiResponse, ApiError> {
        let retired = self.deps.state.list_retired_syncs(project_id).await?;
        let list: Vec<Value> = retired.iter().map(retired_json).collect();
        Ok(ApiResponse::json(200, &json!({"retired_syncs": list})))
    }

    pub(crate) async fn delete_retired(
        &self,
        project_id: &str,
        sync_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let st = &self.deps.state;
        if !valid_id(sync_id) || st.get_retired_sync(project_id, sync_id).await?.is_none() {
            return Err(ApiError::not_found(format!(
                "no retired sync {sync_id} in this project"
            )));
        }
        st.delete_retired_sync(project_id, sync_id).await?;
        Ok(ApiResponse::empty(204))
    }

    /// Every retired sync of the project with its runs (a disconnect that keeps nothing).
    pub(crate) async fn delete_history(&self, project_id: &str) -> Result<(), ApiError> {
        let st = &self.deps.state;
        for r in st.list_retired_syncs(project_id).await? {
            st.delete_retired_sync(project_id, &r.sync_id).await?;
        }
        Ok(())
    }
}

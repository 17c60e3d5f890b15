//! The pre-flight report for the API, computed by the runner because large exports outlast API Gateway's
//! 30 s. Against a sync it is the run's own plan (`Engine::known` + `Engine::assess`) without the writes.

use serde_json::json;

use super::{Engine, EngineError, Outcome};
use crate::cohort::CohortDigests;
use crate::cohort::naming::parse_export_key;
use crate::model::{KeyMapping, PreviewRecord, PreviewState};
use crate::report::{PreviewBasis, PreviewReport};

/// A preview that could not be computed: an API error code and a message.
type Failure = (&'static str, String);

impl Engine {
    pub(super) async fn preview(
        &self,
        project_id: &str,
        preview_id: &str,
        s3_key: &str,
        sync_id: Option<&str>,
    ) -> Result<Outcome, EngineError> {
        let st = &self.deps.state;
        let now = self.now();
        let mut record = st
            .get_preview(project_id, preview_id)
            .await?
            .unwrap_or(PreviewRecord {
                preview_id: preview_id.to_string(),
                project_id: project_id.to_string(),
                s3_key: s3_key.to_string(),
                sync_id: sync_id.map(str::to_string),
                state: PreviewState::Running,
                report: None,
                error: None,
                created_at: now,
                updated_at: now,
            });
        let mapping = st
            .get_integration(project_id)
            .await?
            .and_then(|i| i.mapping);
        let result = match &mapping {
            None => Err((
                "mapping_missing",
                "save the key mapping before previewing".to_string(),
            )),
            Some(m) => match self.read_export(s3_key, m).await? {
                Ok(read) => self.report(project_id, sync_id, s3_key, m, &read).await?,
                Err(e) => Err(("invalid_request", e)),
            },
        };
        match result.and_then(|r| serde_json::to_value(&r).map_err(|e| ("internal", e.to_string())))
        {
            Ok(report) => {
                let _ = self
                    .deps
                    .cohorts
                    .put_preview_report(project_id, preview_id, &report)
                    .await;
                record.state = PreviewState::Done;
                record.report = Some(report);
            }
            Err((code, message)) => {
                record.state = PreviewState::Failed;
                record.error = Some(json!({"code": code, "message": message}));
            }
        }
        record.updated_at = self.now();
        st.put_preview(&record).await?;
        Ok(Outcome::Preview {
            preview_id: preview_id.to_string(),
            state: record.state,
        })
    }

    /// Without a sync: a new sync's first run with the default guards. With one: what its next run would
    /// add and remove against its committed snapshot (plus the uncertain writes), under its own guards.
    async fn report(
        &self,
        project_id: &str,
        sync_id: Option<&str>,
        s3_key: &str,
        m: &KeyMapping,
        read: &CohortDigests,
    ) -> Result<Result<PreviewReport, Failure>, EngineError> {
        let name = parse_export_key(s3_key).ok();
        let (key, column) = (m.tiktok_key, m.amplitude_property.as_str());
        let Some(sync_id) = sync_id else {
            return Ok(Ok(PreviewReport::new(read, name.as_ref(), key, column)));
        };
        let Some(sync) = self.deps.state.get_sync(project_id, sync_id).await? else {
            return Ok(Err(("not_found", format!("no sync {sync_id}"))));
        };
        let known = self.known(&sync, m).await?;
        let a = self.assess(&sync, read, &known).await?;
        let committed = sync.committed.as_ref();
        let basis = PreviewBasis {
            sync_id: sync.sync_id.clone(),
            audience_exists: known.audience,
            committed_digests: known.base.len() as u64,
            committed_export: committed.map(|c| c.export.s3_key.clone()),
            committed_at: committed.map(|c| c.committed_at),
            uncertain_resent: known.uncertain.len() as u64,
            cohort_removes: a.cohort_removes,
            guards: a.guards,
            note: known.note.clone(),
        };
        let report = PreviewReport::with_verdict(read, name.as_ref(), key, column, &a.verdict);
        Ok(Ok(report.against(
            basis,
            a.adds.len() as u64,
            a.removes.len() as u64,
        )))
    }
}

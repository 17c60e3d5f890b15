//! The pre-flight report for the API, computed by the runner because large exports outlast API Gateway's
//! 30 s.

use serde_json::json;

use super::{Engine, EngineError, Outcome};
use crate::cohort::naming::parse_export_key;
use crate::model::{PreviewRecord, PreviewState};
use crate::report::PreviewReport;

impl Engine {
    pub(super) async fn preview(
        &self,
        project_id: &str,
        preview_id: &str,
        s3_key: &str,
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
                Ok(read) => {
                    let name = parse_export_key(s3_key).ok();
                    let report = PreviewReport::new(
                        &read,
                        name.as_ref(),
                        m.tiktok_key,
                        &m.amplitude_property,
                    );
                    serde_json::to_value(&report).map_err(|e| ("internal", e.to_string()))
                }
                Err(e) => Err(("invalid_request", e)),
            },
        };
        match result {
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
}

//! `GET /v1/unmatched-exports`: objects that reached the bucket and started nothing (misnamed, or a cohort no
//! sync reads), for the whole deployment: exports belong to no project.

use audience_core::cohort::unmatched::UnmatchedExport;
use serde_json::{Value, json};

use super::{Api, ApiError, ApiResponse};

/// How many the route answers at most.
pub const UNMATCHED_LIMIT: usize = 100;

fn unmatched_json(u: &UnmatchedExport) -> Value {
    json!({
        "key": u.key,
        "size": u.size,
        "seen_at": u.seen_at,
        "reason": u.reason,
        "message": u.message,
        "cohort_id": u.cohort_id,
    })
}

impl Api {
    pub(crate) async fn list_unmatched_exports(&self) -> Result<ApiResponse, ApiError> {
        let list = self
            .deps
            .state
            .list_unmatched_exports(self.now(), UNMATCHED_LIMIT)
            .await?;
        let list: Vec<Value> = list.iter().map(unmatched_json).collect();
        Ok(ApiResponse::json(200, &json!({"unmatched_exports": list})))
    }
}

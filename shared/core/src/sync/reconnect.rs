//! One rule for a refused TikTok token, wherever it is seen (a run, or the API creating a sync): the
//! integration becomes `reconnect_required` and the project's schedules are disabled until the user
//! reconnects (the OAuth callback re-enables them).

use chrono::{DateTime, Utc};

use crate::model::IntegrationStatus;
use crate::ports::{PortError, Schedules, StateStore};

/// Marks the project `reconnect_required` and disables its recurring syncs' schedules. `true` when the
/// integration was not `reconnect_required` before (a notice is due once per change).
pub async fn require_reconnect(
    state: &dyn StateStore,
    schedules: &dyn Schedules,
    project_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, PortError> {
    // Best effort: a failed read counts as a change (a second notice beats none).
    let before = match state.get_integration(project_id).await {
        Ok(i) => i.map(|i| i.status),
        Err(_) => None,
    };
    state
        .set_integration_status(project_id, IntegrationStatus::ReconnectRequired, now)
        .await?;
    for s in state.list_syncs(project_id).await? {
        if s.cadence.is_recurring() {
            let enabled = s.schedule_enabled(IntegrationStatus::ReconnectRequired);
            schedules.set_schedule_enabled(&s.sync_id, enabled).await?;
        }
    }
    tracing::warn!(
        project_id,
        "TikTok token refused: integration marked reconnect_required, schedules disabled"
    );
    Ok(before != Some(IntegrationStatus::ReconnectRequired))
}

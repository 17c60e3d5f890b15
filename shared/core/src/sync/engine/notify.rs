//! After the commit: the notice a run calls for goes to the notifier, with a cap on the wait so a slow
//! webhook never holds a run up (the adapter has its own, shorter timeout).

use std::time::Duration;

use tracing::warn;

use super::Engine;
use super::prepare::Ctx;
use super::settle::Settled;
use crate::model::{RunLedger, RunState};
use crate::notify::{NoticeInput, notice_for};

/// The longest a run waits for its notice to be delivered.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(6);

impl Engine {
    pub(super) async fn notify_committed(
        &self,
        ctx: &Ctx<'_>,
        previous: Option<&RunLedger>,
        s: &Settled,
    ) {
        if s.state == RunState::Running {
            return;
        }
        let input = NoticeInput {
            cohort_id: &ctx.sync.cohort_id,
            previous,
            run: &ctx.ledger,
            consecutive_holds: s.consecutive_holds,
            holds_before_warning: self.settings.holds_before_warning,
            reconnect_marked: ctx.reconnect_marked,
        };
        let Some(notice) = notice_for(&input) else {
            return;
        };
        if tokio::time::timeout(NOTIFY_TIMEOUT, self.notifier.notify(&notice))
            .await
            .is_err()
        {
            warn!(run_id = %notice.run_id, event = notice.kind.as_str(), "notification timed out");
        }
    }
}

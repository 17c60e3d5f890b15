//! Invariants read from the stores after a history (the harness's own reads: no gate, no faults).

use audience_core::model::RunState;
use audience_core::ports::StateStore;
use audience_core::sync::ledger::reconcile;

use crate::world::World;

/// No run left `running`, every finished ledger reconciles, no `progress.active_run` left.
pub async fn state_checks(world: &World, sync_id: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match world.state.list_runs(sync_id, 100, cursor.as_deref()).await {
            Ok(p) => p,
            Err(e) => {
                v.push(format!("list_runs: {e}"));
                break;
            }
        };
        for r in &page.runs {
            if r.state == RunState::Running {
                v.push(format!("run {} left running", r.run_id));
            } else if let Err(e) = reconcile(r) {
                v.push(format!(
                    "run {} ({:?}) does not reconcile: {e}",
                    r.run_id, r.state
                ));
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    match world.state.get_sync(&world.project, sync_id).await {
        Ok(Some(s)) if s.progress.active_run.is_some() => {
            v.push(format!(
                "progress.active_run left: {:?}",
                s.progress.active_run
            ));
        }
        Ok(_) => {}
        Err(e) => v.push(format!("get_sync: {e}")),
    }
    v
}

//! Streaming mode: create the segment audience once, then add and delete in batches of at most 10,000,
//! alternating so removals never wait behind a long run of adds. A new audience takes mappings after a
//! minute or two: until then the changes wait for a later run (the sweeper comes back).

use super::apply::{Applied, Token};
use super::plan::Plan;
use super::prepare::{Ctx, Ready};
use super::settle::Stop;
use super::{Engine, EngineError};
use crate::sync::api::{ApiErrorKind, MappingAction};
use crate::sync::batches::{self, CallBatch};

impl Engine {
    pub(super) async fn apply_stream(
        &self,
        ctx: &mut Ctx<'_>,
        token: &mut Token,
        plan: &Plan,
        ready: &Ready,
        out: &mut Applied,
    ) -> Result<(), EngineError> {
        if plan.adds.is_empty() && plan.removes.is_empty() {
            if ctx.sync.progress.tiktok_audience_id.is_some() {
                let _ = self.read_status(ctx, token).await;
            }
            return Ok(());
        }
        if let Some(stop) = self.before_call(ctx).await {
            out.stop(stop);
            return Ok(());
        }
        match self.resolve_intent(ctx, token).await {
            Ok(true) => {}
            Ok(false) => {
                if let Err(stop) = self.create_stream(ctx, token).await {
                    out.stop(stop);
                    return Ok(());
                }
            }
            Err(stop) => {
                out.stop(stop);
                return Ok(());
            }
        }
        let b = self.settings.mapping_batch;
        let adds = batches::plan_mapping_calls(plan.adds.len(), b);
        let removes = batches::plan_mapping_calls(plan.removes.len(), b);
        for step in interleave(&adds, &removes) {
            if let Some(stop) = self.before_call(ctx).await {
                out.stop(stop);
                return Ok(());
            }
            let (action, call) = step;
            if !self
                .map_one(ctx, token, plan, ready, action, call, out)
                .await
            {
                break;
            }
        }
        let _ = self.read_status(ctx, token).await;
        Ok(())
    }

    async fn create_stream(
        &self,
        ctx: &mut Ctx<'_>,
        token: &mut Token,
    ) -> Result<(), super::settle::Stop> {
        self.record_intent(ctx).await?;
        let name = super::audience_name(&ctx.sync);
        let (api, adv) = (self.deps.tiktok.clone(), ctx.sync.advertiser_id.clone());
        let r = self
            .call(ctx, token, |t| {
                let (api, adv, name) = (api.clone(), adv.clone(), name.clone());
                async move { api.create_stream_audience(&t, &adv, &name).await }
            })
            .await;
        self.after_create(ctx, token, r).await.map(|_| ())
    }

    /// One mapping request. `false`: stop sending (the reason is in `out`).
    #[allow(clippy::too_many_arguments)]
    async fn map_one(
        &self,
        ctx: &mut Ctx<'_>,
        token: &mut Token,
        plan: &Plan,
        ready: &Ready,
        action: MappingAction,
        call: &CallBatch,
        out: &mut Applied,
    ) -> bool {
        let list = match action {
            MappingAction::Add => &plan.adds,
            MappingAction::Delete => &plan.removes,
        };
        let (api, adv, key) = (
            self.deps.tiktok.clone(),
            ctx.sync.advertiser_id.clone(),
            ready.mapping.tiktok_key,
        );
        let aid = ctx
            .sync
            .progress
            .tiktok_audience_id
            .clone()
            .unwrap_or_default();
        let chunk = match list.range(call.range.clone()) {
            Ok(c) => c,
            Err(e) => {
                out.stop(Stop::Failed {
                    reason: format!("cannot read the planned changes: {e}"),
                    retry: true,
                });
                return false;
            }
        };
        let r = self
            .call(ctx, token, |t| {
                let (api, adv, aid, chunk) = (api.clone(), adv.clone(), aid.clone(), chunk.clone());
                async move {
                    api.stream_mapping(&t, &adv, &aid, key, action, &chunk)
                        .await
                }
            })
            .await;
        let sent = match action {
            MappingAction::Add => &mut out.adds,
            MappingAction::Delete => &mut out.removes,
        };
        let e = match r {
            Ok(_) => {
                sent.acked.push(call.range.clone());
                return true;
            }
            Err(e) => e,
        };
        match e.kind {
            ApiErrorKind::NotReady => {
                let at = self.now() + super::settings::chrono(self.settings.stream_ready_after);
                out.tally.defer_reason = Some(format!(
                    "TikTok makes a new streaming audience ready in a minute or two; the users go after {at}"
                ));
                out.tally.retry_at = Some(at);
            }
            ApiErrorKind::NotEditable => {
                // Possibly applied by an earlier attempt of the client's: uncertain as well as held.
                sent.unknown.push(call.range.clone());
                let why = format!("TikTok would not edit the audience now: {}", e.message);
                out.hold_rest(plan, why);
                out.tally.retry_at =
                    Some(self.now() + super::settings::chrono(self.settings.retry_after_failure));
            }
            ApiErrorKind::OutcomeUnknown => {
                sent.unknown.push(call.range.clone());
                out.stop(self.stop_for(&e));
            }
            ApiErrorKind::NotFound => {
                let stop = self.confirm_gone(ctx, token, &e).await;
                out.stop(stop);
            }
            _ => out.stop(self.stop_for(&e)),
        }
        false
    }
}

/// Add and delete batches, one of each in turn.
fn interleave<'a>(
    adds: &'a [CallBatch],
    removes: &'a [CallBatch],
) -> Vec<(MappingAction, &'a CallBatch)> {
    let mut out = Vec::with_capacity(adds.len() + removes.len());
    for i in 0..adds.len().max(removes.len()) {
        if let Some(r) = removes.get(i) {
            out.push((MappingAction::Delete, r));
        }
        if let Some(a) = adds.get(i) {
            out.push((MappingAction::Add, a));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_are_interleaved_with_adds() {
        let adds = batches::plan_mapping_calls(30_000, 10_000);
        let removes = batches::plan_mapping_calls(5, 10_000);
        let order: Vec<MappingAction> = interleave(&adds, &removes)
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        assert_eq!(
            order,
            vec![
                MappingAction::Delete,
                MappingAction::Add,
                MappingAction::Add,
                MappingAction::Add
            ]
        );
    }
}

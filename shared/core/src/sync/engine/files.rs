//! Customer-file mode. TikTok processes an audience for hours after every create or update and refuses
//! edits meanwhile, so a run makes one edit per processing window: the create (with the whole first
//! cohort), or an APPEND or a REMOVE, alternating so removals never starve behind adds. `get/` is read
//! first, so a window still open costs no call from the daily budget, and again after each edit: only when
//! TikTok reports the audience ready already does the same run make the next edit.

use chrono::{DateTime, Utc};

use super::apply::{Applied, Token};
use super::plan::Plan;
use super::prepare::{Ctx, Ready};
use super::settle::Stop;
use super::{Engine, EngineError};
use crate::digests::Sorted;
use crate::model::{EditKind, LastEdit};
use crate::ports::BudgetOutcome;
use crate::sync::api::{ApiErrorKind, FileAction};
use crate::sync::batches::{self, CallBatch};

impl Engine {
    pub(super) async fn apply_files(
        &self,
        ctx: &mut Ctx<'_>,
        token: &mut Token,
        plan: &Plan,
        ready: &Ready,
        out: &mut Applied,
    ) -> Result<(), EngineError> {
        if let Some(stop) = self.before_call(ctx).await {
            out.stop(stop);
            return Ok(());
        }
        match self.resolve_intent(ctx, token).await {
            Ok(true) => {}
            Ok(false) => return self.create_with_files(ctx, token, plan, ready, out).await,
            Err(stop) => {
                out.stop(stop);
                return Ok(());
            }
        }
        // Nothing to send: the status is still read back for the sync's view.
        if plan.adds.is_empty() && plan.removes.is_empty() {
            let _ = self.read_status(ctx, token).await;
            return Ok(());
        }
        if !self.window_open(ctx, token, plan, out).await {
            return Ok(());
        }
        // An edit TikTok refuses for the size rule (it would leave under 1,000 matched users) starts no
        // processing: the other action is tried in the same run (an APPEND may lift the count first).
        let mut size_refused: Option<bool> = None;
        for _ in 0..MAX_EDITS_PER_RUN {
            let adds_left = next_start(&out.adds) < plan.adds.len();
            let removes_left = next_start(&out.removes) < plan.removes.len();
            let (adds_left, removes_left) = match size_refused {
                Some(true) => (false, removes_left),
                Some(false) => (adds_left, false),
                None => (adds_left, removes_left),
            };
            if !adds_left && !removes_left {
                break;
            }
            if let Some(stop) = self.before_call(ctx).await {
                out.stop(stop);
                break;
            }
            let is_add = choose_add(
                adds_left,
                removes_left,
                ctx.sync.progress.last_edit.as_ref(),
            );
            if !self.take_budget(ctx, plan, out).await? {
                break;
            }
            if !self.edit_once(ctx, token, plan, ready, out, is_add).await {
                let other_left = if is_add { removes_left } else { adds_left };
                if size_refused.is_none()
                    && out.tally.stop.is_none()
                    && is_size_hold(out)
                    && other_left
                {
                    size_refused = Some(is_add);
                    out.tally.held_adds = 0;
                    out.tally.held_removes = 0;
                    let why = out.tally.hold_reason.take();
                    out.tally.note = why;
                    continue;
                }
                break;
            }
            // TikTok processes after an edit: another one goes only if `get/` says it is done already.
            match self.read_status(ctx, token).await {
                Ok(Some(v)) if v.is_valid => {}
                _ => break,
            }
        }
        if let Some(was_add) = size_refused {
            // The refused action stays held, with TikTok's reason.
            let (list, sent) = if was_add {
                (&plan.adds, &out.adds)
            } else {
                (&plan.removes, &out.removes)
            };
            let left = (list.len() - sent.acked_count() as usize) as u64;
            if was_add {
                out.tally.held_adds = left;
            } else {
                out.tally.held_removes = left;
            }
            out.tally.hold_reason = out.tally.note.take();
        }
        Ok(())
    }

    /// One edit: the next call's worth of the chosen list, uploaded and applied. `true`: acknowledged.
    async fn edit_once(
        &self,
        ctx: &mut Ctx<'_>,
        token: &mut Token,
        plan: &Plan,
        ready: &Ready,
        out: &mut Applied,
        is_add: bool,
    ) -> bool {
        let list = if is_add { &plan.adds } else { &plan.removes };
        let start = next_start(if is_add { &out.adds } else { &out.removes });
        let s = &self.settings;
        let calls =
            batches::plan_file_calls(list.len() - start, s.digests_per_file, s.files_per_call, 0);
        let Some(call) = calls.first().map(|c| shift(c, start)) else {
            return false;
        };
        let call = &call;
        let paths = match self.upload(ctx, token, ready, list, call, is_add).await {
            Ok(p) => p,
            Err(stop) => {
                out.stop(stop);
                return false;
            }
        };
        let action = if is_add {
            FileAction::Append
        } else {
            FileAction::Remove
        };
        let (api, adv) = (self.deps.tiktok.clone(), ctx.sync.advertiser_id.clone());
        let aid = ctx
            .sync
            .progress
            .tiktok_audience_id
            .clone()
            .unwrap_or_default();
        let r = self
            .call(ctx, token, |t| {
                let (api, adv, aid, paths) = (api.clone(), adv.clone(), aid.clone(), paths.clone());
                async move {
                    api.update_file_audience(&t, &adv, &aid, action, &paths)
                        .await
                }
            })
            .await;
        let now = self.now();
        let kind = if is_add {
            EditKind::Append
        } else {
            EditKind::Remove
        };
        let sent = if is_add {
            &mut out.adds
        } else {
            &mut out.removes
        };
        match r {
            Ok(_) => {
                sent.acked.push(call.range.clone());
                ctx.sync.progress.last_edit = Some(LastEdit { kind, at: now });
                let next = now + super::settings::chrono(s.processing_window);
                out.tally.defer_reason = Some(format!(
                    "TikTok processes the audience after each edit: one edit per window, the next after {next}"
                ));
                out.tally.retry_at = Some(next);
                true
            }
            Err(e) => {
                // The attempt counts as an edit for the window: TikTok may be processing either way.
                ctx.sync.progress.last_edit = Some(LastEdit { kind, at: now });
                match e.kind {
                    ApiErrorKind::NotEditable => {
                        // The client may have sent this edit before (an answer lost, then a retry that
                        // TikTok refused as "processing"): it may be applied, so it is uncertain too.
                        sent.unknown.push(call.range.clone());
                        out.hold_rest(
                            plan,
                            format!("TikTok would not edit the audience now: {}", e.message),
                        );
                        out.tally.retry_at =
                            Some(now + super::settings::chrono(s.processing_window));
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
    }

    /// The create: the whole first cohort in one call where TikTok's 500 paths allow (an audience created
    /// small and grown later is refused edits while under 1,000 matched users).
    async fn create_with_files(
        &self,
        ctx: &mut Ctx<'_>,
        token: &mut Token,
        plan: &Plan,
        ready: &Ready,
        out: &mut Applied,
    ) -> Result<(), EngineError> {
        if plan.adds.is_empty() {
            return Ok(());
        }
        if !self.take_budget(ctx, plan, out).await? {
            return Ok(());
        }
        let s = &self.settings;
        let calls = batches::plan_file_calls(
            plan.adds.len(),
            s.digests_per_file,
            s.files_per_call,
            batches::MAX_FILES_PER_CALL,
        );
        let Some(call) = calls.first() else {
            return Ok(());
        };
        let paths = match self.upload(ctx, token, ready, &plan.adds, call, true).await {
            Ok(p) => p,
            Err(stop) => {
                out.stop(stop);
                return Ok(());
            }
        };
        if let Err(stop) = self.record_intent(ctx).await {
            out.stop(stop);
            return Ok(());
        }
        let name = super::audience_name(&ctx.sync);
        let (api, adv, key) = (
            self.deps.tiktok.clone(),
            ctx.sync.advertiser_id.clone(),
            ready.mapping.tiktok_key,
        );
        let r = self
            .call(ctx, token, |t| {
                let (api, adv, name, paths) =
                    (api.clone(), adv.clone(), name.clone(), paths.clone());
                async move { api.create_file_audience(&t, &adv, &name, key, &paths).await }
            })
            .await;
        let not_editable = matches!(&r, Err(e) if e.kind == ApiErrorKind::NotEditable);
        let unknown = matches!(&r, Err(e) if e.kind == ApiErrorKind::OutcomeUnknown);
        match self.after_create(ctx, token, r).await {
            Ok(_) => {
                out.adds.acked.push(call.range.clone());
                let now = self.now();
                ctx.sync.progress.last_edit = Some(LastEdit {
                    kind: EditKind::Create,
                    at: now,
                });
                let next = now + super::settings::chrono(s.processing_window);
                out.tally.defer_reason = Some(format!(
                    "TikTok processes a new audience for hours; the rest goes after {next}"
                ));
                out.tally.retry_at = Some(next);
            }
            Err(_) if not_editable => {
                let why = "TikTok would not create the audience yet (under 1,000 matched users)";
                out.hold_rest(plan, why.into());
                // Only a bigger cohort changes that: the next export retries, the sweeper waits a day.
                out.tally.retry_at = Some(self.now() + chrono::Duration::days(1));
            }
            Err(stop) => {
                // The audience may exist with these users (found by name later): they are uncertain.
                if unknown {
                    out.adds.unknown.push(call.range.clone());
                }
                out.stop(stop)
            }
        }
        Ok(())
    }

    /// Reads `get/`: an edit goes only when the audience is valid, or the last edit's window has passed
    /// (a small audience stays invalid until it grows, so a closed window means "try"). `false`: held.
    async fn window_open(
        &self,
        ctx: &mut Ctx<'_>,
        token: &mut Token,
        plan: &Plan,
        out: &mut Applied,
    ) -> bool {
        let now = self.now();
        let window = super::settings::chrono(self.settings.processing_window);
        match self.read_status(ctx, token).await {
            Err(e) => {
                out.stop(self.stop_for(&e));
                false
            }
            // Not listed: never forgotten for that. The edit is tried; if the audience is really gone TikTok
            // answers 40007, which `get/` confirms before the audience is given up.
            Ok(None) => true,
            Ok(Some(v)) => match &ctx.sync.progress.last_edit {
                Some(last) if !v.is_valid && last.at + window > now => {
                    let next = last.at + window;
                    out.hold_rest(
                        plan,
                        format!("TikTok is processing the audience after the edit of {}; the next edit goes after {next}", last.at),
                    );
                    out.tally.retry_at = Some(next);
                    false
                }
                _ => true,
            },
        }
    }

    /// One call from the audience's daily budget. `false`: spent; everything is deferred to 00:00 UTC.
    async fn take_budget(
        &self,
        ctx: &Ctx<'_>,
        plan: &Plan,
        out: &mut Applied,
    ) -> Result<bool, EngineError> {
        let key = format!("sync:{}", ctx.sync.sync_id);
        let now = self.now();
        match self
            .deps
            .state
            .try_consume_daily_call(&key, now, self.settings.daily_budget)
            .await?
        {
            BudgetOutcome::Granted { .. } => Ok(true),
            BudgetOutcome::Exhausted { .. } => {
                let _ = plan;
                out.tally.defer_reason = Some(format!(
                    "TikTok's budget of {} create/update calls per audience per UTC day is spent",
                    self.settings.daily_budget
                ));
                out.tally.retry_at = Some(next_utc_midnight(now));
                Ok(false)
            }
        }
    }

    /// Writes and uploads the call's files; their paths.
    async fn upload(
        &self,
        ctx: &mut Ctx<'_>,
        token: &mut Token,
        ready: &Ready,
        list: &Sorted,
        call: &CallBatch,
        is_add: bool,
    ) -> Result<Vec<String>, Stop> {
        let dir = tempfile::Builder::new()
            .prefix("batches-")
            .tempdir_in(&self.settings.work_dir)
            .map_err(|e| Stop::Failed {
                reason: format!("work dir: {e}"),
                retry: true,
            })?;
        let mut paths = Vec::with_capacity(call.files.len());
        for (j, r) in call.files.iter().enumerate() {
            if let Some(stop) = self.before_call(ctx).await {
                return Err(stop);
            }
            let name = format!(
                "{}-{}-{j}",
                if is_add { "add" } else { "remove" },
                ctx.ledger.run_id
            );
            let (list, r, d) = (list.clone(), r.clone(), dir.path().to_path_buf());
            let file = tokio::task::spawn_blocking(move || {
                batches::write_digest_file(&d, &name, &list.range(r)?)
            })
            .await
            .map_err(|e| Stop::Failed {
                reason: format!("file writer task: {e}"),
                retry: true,
            })?
            .map_err(|e| Stop::Failed {
                reason: format!("cannot write a customer file: {e}"),
                retry: true,
            })?;
            let (api, adv, key) = (
                self.deps.tiktok.clone(),
                ctx.sync.advertiser_id.clone(),
                ready.mapping.tiktok_key,
            );
            let r = self
                .call(ctx, token, |t| {
                    let (api, adv, file) = (api.clone(), adv.clone(), file.clone());
                    async move { api.upload_digest_file(&t, &adv, key, &file).await }
                })
                .await;
            let _ = std::fs::remove_file(&file);
            match r {
                Ok(ack) => paths.push(ack.value),
                Err(e) => return Err(self.stop_for(&e)),
            }
        }
        Ok(paths)
    }
}

/// Whether the last hold was TikTok's size rule (not its processing).
fn is_size_hold(out: &Applied) -> bool {
    out.tally.hold_reason.as_deref().is_some_and(|r| {
        let r = r.to_ascii_lowercase();
        r.contains("too small") || r.contains("fewer than 1000")
    })
}

/// Edits one run makes at most (each needs TikTok done processing the one before).
const MAX_EDITS_PER_RUN: usize = 4;

/// Where the unsent part of a list starts (acknowledged and unanswered calls come in order).
fn next_start(sent: &super::apply::Sent) -> usize {
    sent.acked
        .iter()
        .chain(sent.unknown.iter())
        .map(|r| r.end)
        .max()
        .unwrap_or(0)
}

fn shift(c: &CallBatch, by: usize) -> CallBatch {
    CallBatch {
        range: c.range.start + by..c.range.end + by,
        files: c.files.iter().map(|f| f.start + by..f.end + by).collect(),
    }
}

/// Which action this window's edit is: the only one owed, or the one the last edit was not.
pub(super) fn choose_add(adds: bool, removes: bool, last: Option<&LastEdit>) -> bool {
    match (adds, removes) {
        (true, false) => true,
        (false, _) => false,
        (true, true) => matches!(last.map(|l| l.kind), Some(EditKind::Remove)),
    }
}

fn next_utc_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let day = now.date_naive().succ_opt().unwrap_or(now.date_naive());
    day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(kind: EditKind) -> LastEdit {
        LastEdit {
            kind,
            at: Utc::now(),
        }
    }

    #[test]
    fn removals_never_starve_behind_adds() {
        // After an APPEND (or the create) the REMOVE goes next, after a REMOVE the APPEND.
        assert!(!choose_add(true, true, Some(&edit(EditKind::Append))));
        assert!(!choose_add(true, true, Some(&edit(EditKind::Create))));
        assert!(!choose_add(true, true, None));
        assert!(choose_add(true, true, Some(&edit(EditKind::Remove))));
        assert!(choose_add(true, false, Some(&edit(EditKind::Append))));
        assert!(!choose_add(false, true, Some(&edit(EditKind::Remove))));
    }
}

//! The TikTok calls both write modes share: one call with a token re-read, the create intent and the
//! lookup by name that make an unknown-outcome create safe, the status read-back, and confirming that an
//! audience is really gone before the engine lets go of it.

use std::future::Future;

use secrecy::SecretString;

use super::apply::Token;
use super::prepare::Ctx;
use super::settle::Stop;
use super::{Engine, EngineError, audience_name};
use crate::model::{AudienceCreateIntent, TikTokAudienceStatus};
use crate::sync::api::{Ack, ApiError, ApiErrorKind, AudienceView};

impl Engine {
    /// One TikTok call; on a reconnect-class error the token is re-read once (a reconnect may have replaced
    /// it) before the error is believed. Request ids go to the ledger.
    pub(super) async fn call<T, F, Fut>(
        &self,
        ctx: &mut Ctx<'_>,
        token: &mut Token,
        f: F,
    ) -> Result<Ack<T>, ApiError>
    where
        F: Fn(SecretString) -> Fut,
        Fut: Future<Output = Result<Ack<T>, ApiError>>,
    {
        let r = match f(token.0.clone()).await {
            Err(e) if e.kind == ApiErrorKind::ReconnectRequired => {
                let project = ctx.sync.project_id.clone();
                self.deps.vault.invalidate(&project);
                match self.deps.vault.get_connection(&project).await {
                    Ok(Some(conn)) => {
                        token.0 = conn.access_token;
                        f(token.0.clone()).await
                    }
                    _ => Err(e),
                }
            }
            other => other,
        };
        let id = match &r {
            Ok(a) => a.request_id.clone(),
            Err(e) => e.request_id.clone(),
        };
        if let Some(id) = id
            && ctx.ledger.tiktok_request_ids.len() < self.settings.max_request_ids
        {
            ctx.ledger.tiktok_request_ids.push(id);
        }
        r
    }

    /// What a failed call means for the run (NotFound, NotEditable and NotReady are decided by the callers).
    pub(super) fn stop_for(&self, e: &ApiError) -> Stop {
        match e.kind {
            ApiErrorKind::ReconnectRequired => Stop::Reconnect(format!(
                "TikTok refused the token ({}); reconnect TikTok to resume",
                e.message
            )),
            ApiErrorKind::Expired => Stop::Gone(format!(
                "the TikTok audience expired (TikTok only allows deleting it): {}",
                e.message
            )),
            ApiErrorKind::GaveUp | ApiErrorKind::OutcomeUnknown => Stop::Failed {
                reason: e.to_string(),
                retry: true,
            },
            _ => Stop::Failed {
                reason: e.to_string(),
                retry: false,
            },
        }
    }

    /// The sync's audience by its exact name (after a create whose outcome is unknown).
    pub(super) async fn find_by_name(
        &self,
        ctx: &mut Ctx<'_>,
        token: &mut Token,
    ) -> Result<Option<String>, Stop> {
        let name = audience_name(&ctx.sync);
        let (api, adv) = (self.deps.tiktok.clone(), ctx.sync.advertiser_id.clone());
        let r = self
            .call(ctx, token, |t| {
                let (api, adv, name) = (api.clone(), adv.clone(), name.clone());
                async move { api.find_audiences_by_name(&t, &adv, &name).await }
            })
            .await;
        match r {
            Ok(ack) => Ok(ack.value.into_iter().next()),
            Err(e) => Err(self.stop_for(&e)),
        }
    }

    /// Looks the audience up when an earlier create may have happened; `Ok(true)` when one exists now.
    pub(super) async fn resolve_intent(
        &self,
        ctx: &mut Ctx<'_>,
        token: &mut Token,
    ) -> Result<bool, Stop> {
        if ctx.sync.progress.tiktok_audience_id.is_none()
            && ctx.sync.progress.audience_create_intent.is_some()
        {
            ctx.sync.progress.tiktok_audience_id = self.find_by_name(ctx, token).await?;
        }
        Ok(ctx.sync.progress.tiktok_audience_id.is_some())
    }

    /// Saves the intent to create (fenced) before the create call.
    pub(super) async fn record_intent(&self, ctx: &mut Ctx<'_>) -> Result<(), Stop> {
        ctx.sync.progress.audience_create_intent = Some(AudienceCreateIntent {
            audience_name: audience_name(&ctx.sync),
            recorded_at: self.now(),
        });
        let saved = self
            .deps
            .state
            .save_progress(
                &ctx.sync.project_id,
                &ctx.sync.sync_id,
                &ctx.tenure.fence,
                &ctx.sync.progress,
            )
            .await;
        match saved {
            Ok(true) => Ok(()),
            Ok(false) => Err(Stop::LeaseLost),
            Err(e) => Err(Stop::Failed {
                reason: format!("cannot record the audience create intent: {e}"),
                retry: true,
            }),
        }
    }

    /// After a create call: the id, or (unknown outcome) the audience found by name, or the stop.
    pub(super) async fn after_create(
        &self,
        ctx: &mut Ctx<'_>,
        token: &mut Token,
        r: Result<Ack<String>, ApiError>,
    ) -> Result<String, Stop> {
        match r {
            Ok(ack) => {
                ctx.sync.progress.tiktok_audience_id = Some(ack.value.clone());
                Ok(ack.value)
            }
            Err(e) if e.kind == ApiErrorKind::OutcomeUnknown => {
                match self.find_by_name(ctx, token).await? {
                    Some(id) => {
                        ctx.sync.progress.tiktok_audience_id = Some(id.clone());
                        Ok(id)
                    }
                    None => Err(Stop::Failed {
                        reason: format!(
                            "creating the audience had an unknown outcome and no audience of that name exists \
                             yet: {e}"
                        ),
                        retry: true,
                    }),
                }
            }
            Err(e) => Err(self.stop_for(&e)),
        }
    }

    /// TikTok's view of the audience, kept on the sync. `Ok(None)`: TikTok does not list it (now).
    pub(super) async fn read_status(
        &self,
        ctx: &mut Ctx<'_>,
        token: &mut Token,
    ) -> Result<Option<AudienceView>, ApiError> {
        let Some(aid) = ctx.sync.progress.tiktok_audience_id.clone() else {
            return Ok(None);
        };
        let (api, adv) = (self.deps.tiktok.clone(), ctx.sync.advertiser_id.clone());
        let ack = self
            .call(ctx, token, |t| {
                let (api, adv, aid) = (api.clone(), adv.clone(), aid.clone());
                async move { api.audience_status(&t, &adv, &aid).await }
            })
            .await?;
        if let Some(v) = &ack.value {
            ctx.sync.progress.tiktok_status = Some(TikTokAudienceStatus {
                is_valid: v.is_valid,
                cover_num: v.cover_num,
                is_expiring: v.is_expiring,
                msg: v.msg.clone(),
                checked_at: self.now(),
            });
        }
        Ok(ack.value)
    }

    /// A 40007 on an edit: TikTok uses it for a missing audience and for a missing file. The audience is
    /// dropped only when `get/` confirms it is gone.
    pub(super) async fn confirm_gone(
        &self,
        ctx: &mut Ctx<'_>,
        token: &mut Token,
        e: &ApiError,
    ) -> Stop {
        match self.read_status(ctx, token).await {
            Ok(None) => Stop::Gone(format!(
                "the TikTok audience {} no longer exists (deleted on TikTok's side)",
                ctx.sync
                    .progress
                    .tiktok_audience_id
                    .as_deref()
                    .unwrap_or("?")
            )),
            Ok(Some(_)) => Stop::Failed {
                reason: format!("TikTok answered 40007 but the audience exists: {e}"),
                retry: true,
            },
            Err(e2) => Stop::Failed {
                reason: format!("{e}; checking the audience failed too: {e2}"),
                retry: true,
            },
        }
    }

    /// Marks the integration `reconnect_required` and disables the project's schedules: nothing more is
    /// sent until the user reconnects (the OAuth callback re-enables them). `true` when the integration was
    /// not `reconnect_required` before (a notice is due once per change).
    pub(super) async fn require_reconnect(&self, project_id: &str) -> Result<bool, EngineError> {
        let (st, sc) = (&*self.deps.state, &*self.deps.schedules);
        Ok(crate::sync::reconnect::require_reconnect(st, sc, project_id, self.now()).await?)
    }
}

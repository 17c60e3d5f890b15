//! Run history kept across a disconnect: the project page's list of retired syncs and one retired sync's
//! read-only page (its runs), with a button that deletes the history.

use maud::{Markup, html};
use serde_json::Value;

use super::Ctx;
use super::layout::{csrf_field, page, respond, see_other, text, when};
use super::sync_page::runs_section;
use crate::api::{Api, ApiError, ApiResponse};

impl Api {
    pub(crate) async fn history_page(
        &self,
        ctx: &Ctx<'_>,
        p: &str,
        s: &str,
    ) -> Result<ApiResponse, ApiError> {
        let all = self
            .v1(ctx, "GET", p, &["retired-syncs"], &[], None)
            .await?;
        let retired = all["retired_syncs"]
            .as_array()
            .and_then(|l| l.iter().find(|r| r["sync_id"] == s).cloned())
            .ok_or_else(|| ApiError::not_found(format!("no kept history of sync {s}")))?;
        let (runs, filter) = self.runs_of(ctx, p, s).await?;
        let base = format!("/console/projects/{p}/history/{s}");
        Ok(respond(
            200,
            page(
                &ctx.shell("Kept history"),
                html! {
                    p { a href={ "/console/projects/" (p) } { "← Project " (p) } }
                    h1 { "Kept history of cohort " code { (text(&retired["cohort_id"])) } }
                    p.hint { "This sync was removed by a disconnect that kept its run history. Its snapshots and schedule \
                              are gone; the TikTok audience " code { (text(&retired["tiktok_audience_id"])) } " stays in TikTok." }
                    (runs_section(&base, &runs, filter))
                    section {
                        h2 { "Delete this history" }
                        form method="post" action={ (base) "/delete" } {
                            (csrf_field(&ctx.csrf))
                            div.actions { button.danger type="submit" { "Delete the kept runs" } }
                        }
                    }
                },
            ),
        ))
    }

    pub(crate) async fn history_action(
        &self,
        ctx: &Ctx<'_>,
        p: &str,
        s: &str,
        action: &str,
    ) -> Result<ApiResponse, ApiError> {
        match action {
            "delete" => {
                self.v1(ctx, "DELETE", p, &["retired-syncs", s], &[], None)
                    .await?;
                Ok(see_other(&format!(
                    "/console/projects/{p}?done=history_deleted"
                )))
            }
            _ => Err(ApiError::not_found("no such console action")),
        }
    }
}

/// The project page's list of retired syncs (nothing when there are none).
pub(super) fn history_section(p: &str, retired: &[Value]) -> Markup {
    html! {
        @if !retired.is_empty() {
            section {
                h2 { "Kept run history" }
                p.hint { "Syncs a disconnect removed while keeping their runs (counts and reasons only: no identifier)." }
                table {
                    thead { tr { th { "Cohort" } th { "Ad account" } th { "TikTok audience" } th { "Retired" } th { "Last run" } } }
                    tbody { @for r in retired { tr {
                        td { a href={ "/console/projects/" (p) "/history/" (text(&r["sync_id"])) } { code { (text(&r["cohort_id"])) } } }
                        td { (text(&r["advertiser_id"])) }
                        td { (text(&r["tiktok_audience_id"])) }
                        td { (when(&r["retired_at"])) }
                        td { (text(&r["last_run"]["state"])) }
                    } } }
                }
            }
        }
    }
}

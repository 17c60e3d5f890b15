//! The projects page and one project's page (connection, key mapping, syncs, create a sync).

use audience_core::model::{DEFAULT_MAX_REMOVAL_RATIO, DEFAULT_MIN_CREATE_SIZE};
use maud::{Markup, html};
use serde_json::Value;

use super::Ctx;
use super::layout::{
    advertiser_name, badge, count, csrf_field, flash, next_run, page, percent, respond, text, when,
};
use crate::api::{Api, ApiError, ApiResponse};

impl Api {
    pub(crate) async fn projects_page(&self, ctx: &Ctx<'_>) -> Result<ApiResponse, ApiError> {
        let projects = self.list_projects().await?.json_body();
        let list = projects["projects"].as_array().cloned().unwrap_or_default();
        Ok(respond(
            200,
            page(
                &ctx.shell("Projects"),
                html! {
                    h1 { "Projects" }
                    section {
                        @if list.is_empty() {
                            p { "No project is connected yet. Open one by its Amplitude project id to connect it to TikTok." }
                        } @else {
                            table {
                                thead { tr { th { "Project" } th { "TikTok" } th { "Ad accounts" } th { "Key" } th { "Syncs" } } }
                                tbody {
                                    @for p in &list {
                                        tr {
                                            td { a href={ "/console/projects/" (text(&p["project_id"])) } { (text(&p["project_id"])) } }
                                            td { (badge(p["status"].as_str().unwrap_or("not_connected"))) }
                                            td.n { (p["advertisers"].as_array().map(Vec::len).unwrap_or(0)) }
                                            td { (text(&p["mapping"]["tiktok_key"])) " " span.hint { (text(&p["mapping"]["amplitude_property"])) } }
                                            td.n { (text(&p["syncs"])) }
                                        }
                                        @if p["status"] == "reconnect_required" {
                                            tr { td colspan="5" { (reconnect_banner(&ctx.csrf, p["project_id"].as_str().unwrap_or_default())) } }
                                        }
                                    }
                                }
                            }
                        }
                        form method="get" action="/console/open" {
                            label for="project" { "Open a project" }
                            input #project name="project" placeholder="Amplitude project id" required;
                            " " button.secondary type="submit" { "Open" }
                        }
                    }
                },
            ),
        ))
    }

    /// Exports that reached the bucket but started nothing (misnamed, or a cohort no sync reads).
    pub(crate) async fn exports_page(&self, ctx: &Ctx<'_>) -> Result<ApiResponse, ApiError> {
        let list = self.list_unmatched_exports().await?.json_body();
        let list = list["unmatched_exports"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(respond(
            200,
            page(
                &ctx.shell("Unmatched exports"),
                html! {
                    h1 { "Unmatched exports" }
                    section {
                        p.hint { "Files that reached the bucket in the last 30 days but matched no sync or no export naming \
                                  rule. Nothing was read from them." }
                        @if list.is_empty() { p { "None: every export started a sync." } } @else {
                            table {
                                thead { tr { th { "Seen" } th { "Key" } th { "Size" } th { "Reason" } th { "Cohort" } } }
                                tbody { @for e in &list { tr {
                                    td { (when(&e["seen_at"])) } td { code { (text(&e["key"])) } } td.n { (count(&e["size"])) }
                                    td { (badge(e["reason"].as_str().unwrap_or(""))) br; span.hint { (text(&e["message"])) } }
                                    td { (text(&e["cohort_id"])) }
                                } } }
                            }
                        }
                    }
                },
            ),
        ))
    }

    pub(crate) async fn project_page(
        &self,
        ctx: &Ctx<'_>,
        p: &str,
    ) -> Result<ApiResponse, ApiError> {
        let integ = self.v1(ctx, "GET", p, &["integration"], &[], None).await?;
        let syncs = self.v1(ctx, "GET", p, &["syncs"], &[], None).await?;
        let syncs = syncs["syncs"].as_array().cloned().unwrap_or_default();
        let retired = self
            .v1(ctx, "GET", p, &["retired-syncs"], &[], None)
            .await?;
        let retired = retired["retired_syncs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let status = integ["status"]
            .as_str()
            .unwrap_or("not_connected")
            .to_string();
        let done = ctx.req.query_param("done");
        Ok(respond(
            200,
            page(
                &ctx.shell(p),
                html! {
                    h1 { "Project " code { (p) } " " (badge(&status)) }
                    @match done {
                        Some("mapping") => (flash("ok", "Key mapping saved.")),
                        Some("deleted") => (flash("ok", "Sync deleted: its schedule, snapshots and history are gone; the TikTok audience is kept.")),
                        Some("disconnected") => (flash("ok", "Disconnected.")),
                        Some("history_deleted") => (flash("ok", "The kept run history was deleted.")),
                        _ => {}
                    }
                    @if status == "reconnect_required" { (reconnect_banner(&ctx.csrf, p)) }
                    (connection_section(ctx, p, &integ, &status))
                    @if status != "not_connected" { (mapping_section(ctx, p, &integ)) }
                    (syncs_section(&syncs, &integ))
                    @if status == "connected" && !integ["mapping"].is_null() { (create_sync_section(ctx, p, &integ)) }
                    (super::history::history_section(p, &retired))
                    @if status != "not_connected" { (disconnect_section(ctx, p)) }
                },
            ),
        ))
    }
}

pub(super) fn reconnect_banner(csrf: &str, p: &str) -> Markup {
    html! {
        div.banner.bad role="alert" {
            b { "TikTok needs you to reconnect. " }
            "The access token was revoked or expired: nothing is sent to TikTok for this project until you reconnect. "
            form.inline method="post" action={ "/console/projects/" (p) "/connect" } {
                (csrf_field(csrf)) button.danger type="submit" { "Reconnect" }
            }
        }
    }
}

fn connection_section(ctx: &Ctx<'_>, p: &str, integ: &Value, status: &str) -> Markup {
    let advertisers = integ["advertisers"].as_array().cloned().unwrap_or_default();
    html! {
        section {
            h2 { "TikTok connection" }
            @if status == "not_connected" {
                p { "Connect the TikTok for Business ad accounts this project's audiences go to. TikTok asks you to \
                     grant Audience Management; the token stays in this AWS account's Secrets Manager." }
            } @else {
                @if let Some(n) = integ["notice"].as_str() { (flash("info", n)) }
                table {
                    thead { tr { th { "Ad account" } th { "Advertiser id" } } }
                    tbody { @for a in &advertisers { tr { td { (advertiser_name(a)) } td { code { (text(&a["advertiser_id"])) } } } } }
                }
            }
            form method="post" action={ "/console/projects/" (p) "/connect" } {
                (csrf_field(&ctx.csrf))
                div.actions { button type="submit" { @if status == "not_connected" { "Connect TikTok" } @else { "Reconnect" } } }
            }
        }
    }
}

fn mapping_section(ctx: &Ctx<'_>, p: &str, integ: &Value) -> Markup {
    let m = &integ["mapping"];
    html! {
        section {
            h2 { "Key mapping" }
            @if m.is_null() {
                p { "Which Amplitude user property holds the identifier TikTok matches on. "
                    b { "It cannot change later" } " without a disconnect (which deletes this project's syncs)." }
                form method="post" action={ "/console/projects/" (p) "/mapping" } {
                    (csrf_field(&ctx.csrf))
                    label for="amplitude_property" { "Amplitude user property" }
                    input #amplitude_property name="amplitude_property" placeholder="e.g. email or gp:phone" required;
                    label for="tiktok_key" { "TikTok key" }
                    select #tiktok_key name="tiktok_key" {
                        option value="EMAIL" { "EMAIL (lowercased, trimmed, SHA-256)" }
                        option value="PHONE" { "PHONE (E.164, SHA-256)" }
                        option value="IDFA" { "IDFA (iOS advertising id)" }
                        option value="GAID" { "GAID (Android advertising id)" }
                    }
                    label for="default_phone_region" { "Default phone region (PHONE only)" }
                    input #default_phone_region name="default_phone_region" placeholder="e.g. US" maxlength="2";
                    p.hint { "Phone numbers without a +country code are only usable with a default region: \
                              without one they are skipped and counted as invalid." }
                    div.actions { button type="submit" { "Save mapping" } }
                }
            } @else {
                p { "Amplitude property " code { (text(&m["amplitude_property"])) } " → TikTok " b { (text(&m["tiktok_key"])) }
                    @if let Some(r) = m["default_phone_region"].as_str() { " (default region " (r) ")" } }
                p.hint { "The mapping is fixed: changing it needs a disconnect, which deletes this project's syncs." }
            }
        }
    }
}

fn syncs_section(syncs: &[Value], integ: &Value) -> Markup {
    let advertisers = integ["advertisers"].as_array().cloned().unwrap_or_default();
    html! {
        section {
            h2 { "Syncs" }
            @if syncs.is_empty() { p { "No sync yet." } } @else {
                table {
                    thead { tr {
                        th { "Cohort" } th { "State" } th { "Cadence" } th { "Mode" } th { "Ad account" } th { "TikTok audience" }
                        th { "Matched" } th { "Match rate" } th { "Held / deferred" } th { "Last run" } th { "Next" }
                    } }
                    tbody { @for s in syncs {
                        @let adv = advertisers.iter().find(|a| a["advertiser_id"] == s["advertiser_id"]);
                        tr {
                            td { a href={ "/console/projects/" (text(&s["project_id"])) "/syncs/" (text(&s["sync_id"])) } { (text(&s["cohort_id"])) } }
                            td { (badge(s["state"].as_str().unwrap_or("active"))) }
                            td { (text(&s["cadence"])) } td { (text(&s["write_mode"])) }
                            td { (adv.map(advertiser_name).unwrap_or_else(|| text(&s["advertiser_id"]))) }
                            td { code { (text(&s["tiktok_audience_id"])) } }
                            td.n { (count(&s["matched_users"])) } td.n { (percent(&s["match_rate"])) }
                            td.n { (count(&(s["held_adds"].as_u64().unwrap_or(0) + s["held_removals"].as_u64().unwrap_or(0)).into())) " / " (count(&s["deferred"])) }
                            td { @if s["last_run"].is_null() { "—" } @else { (badge(s["last_run"]["state"].as_str().unwrap_or(""))) " " (when(&s["last_run"]["started_at"])) } }
                            td { (next_run(s)) }
                        }
                    } }
                }
            }
        }
    }
}

fn create_sync_section(ctx: &Ctx<'_>, p: &str, integ: &Value) -> Markup {
    let advertisers = integ["advertisers"].as_array().cloned().unwrap_or_default();
    html! {
        section {
            h2 { "Create a sync" }
            form method="post" action={ "/console/projects/" (p) "/syncs" } {
                (csrf_field(&ctx.csrf))
                div.grid {
                    div { label for="cohort_id" { "Amplitude cohort id" } input #cohort_id name="cohort_id" required; }
                    div { label for="advertiser_id" { "TikTok ad account" }
                        select #advertiser_id name="advertiser_id" { @for a in &advertisers {
                            option value=(text(&a["advertiser_id"])) { (advertiser_name(a)) " (" (text(&a["advertiser_id"])) ")" }
                        } } }
                    div { label for="cadence" { "Cadence" }
                        select #cadence name="cadence" {
                            option value="on_upload" { "On every new export" } option value="daily" { "Daily" }
                            option value="hourly" { "Hourly" } option value="one_time" { "Once" }
                        } }
                    div { label for="write_mode" { "Write mode" }
                        select #write_mode name="write_mode" {
                            option value="customer_file" { "Customer file (batched uploads)" }
                            option value="streaming" { "Streaming (10k ids per call)" }
                        } }
                    div { label for="audience_name" { "Audience name (optional)" } input #audience_name name="audience_name" maxlength="128"; }
                }
                div.grid {
                    div { label for="max_removal_ratio" { "Max removal ratio" }
                        input #max_removal_ratio name="max_removal_ratio" inputmode="decimal" placeholder=(DEFAULT_MAX_REMOVAL_RATIO);
                        p.hint { "A run that would remove more than this share of the audience is held for review (default "
                                 (DEFAULT_MAX_REMOVAL_RATIO) ": half)." } }
                    div { label for="min_create_size" { "Minimum audience size" }
                        input #min_create_size name="min_create_size" inputmode="numeric" placeholder=(DEFAULT_MIN_CREATE_SIZE);
                        p.hint { "The TikTok audience is created only once the cohort has this many usable ids (default "
                                 (DEFAULT_MIN_CREATE_SIZE) ", TikTok's own floor for matching)." } }
                }
                p.hint { "Customer-file mode makes at most one edit per TikTok processing window; hourly cadence with it \
                          mostly waits. Streaming suits hourly." }
                div.actions { button type="submit" { "Create sync" } }
            }
        }
    }
}

fn disconnect_section(ctx: &Ctx<'_>, p: &str) -> Markup {
    html! {
        section {
            h2 { "Disconnect" }
            p { "Disconnecting revokes and deletes the TikTok token, deletes the key mapping, every sync of this project, \
                 their schedules, snapshots, run history and reports. TikTok audiences already created stay in TikTok Ads Manager." }
            form method="post" action={ "/console/projects/" (p) "/disconnect" } {
                (csrf_field(&ctx.csrf))
                label.inline { input type="checkbox" name="keep_history" value="true"; " Keep the run history (run counts, states and \
                    reasons: no identifier; readable here until you delete it). Without it, history kept by an earlier disconnect goes too." }
                div.actions { button.danger type="submit" { "Disconnect project" } }
            }
        }
    }
}

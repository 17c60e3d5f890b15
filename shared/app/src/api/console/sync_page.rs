//! One sync's page (settings, TikTok's view, run history with a chart, actions) and a preview's page.

use audience_core::model::RunState;
use maud::{Markup, html};
use serde_json::Value;

use super::Ctx;
use super::layout::{
    advertiser_name, badge, count, csrf_field, flash, next_run, page, percent, respond, text, when,
};
use crate::api::{Api, ApiError, ApiResponse};

impl Api {
    pub(crate) async fn sync_page(
        &self,
        ctx: &Ctx<'_>,
        p: &str,
        s: &str,
    ) -> Result<ApiResponse, ApiError> {
        let sync = self.v1(ctx, "GET", p, &["syncs", s], &[], None).await?;
        let integ = self.v1(ctx, "GET", p, &["integration"], &[], None).await?;
        let (runs, filter) = self.runs_of(ctx, p, s).await?;
        let adv = integ["advertisers"].as_array().and_then(|a| {
            a.iter()
                .find(|a| a["advertiser_id"] == sync["advertiser_id"])
                .cloned()
        });
        let title = format!("Sync {}", text(&sync["cohort_id"]));
        let base = format!("/console/projects/{p}/syncs/{s}");
        let done = ctx.req.query_param("done");
        Ok(respond(
            200,
            page(
                &ctx.shell(&title),
                html! {
                    p { a href={ "/console/projects/" (p) } { "← Project " (p) } }
                    h1 { "Cohort " code { (text(&sync["cohort_id"])) } " " (badge(sync["state"].as_str().unwrap_or(""))) }
                    @match done {
                        Some("run") => (flash("ok", "Run started: it shows below once the runner picked it up (reload).")),
                        Some("saved") => (flash("ok", "Settings saved.")),
                        Some("created") => (flash("ok", "Sync created. It runs on the cohort's next export (or press Run now).")),
                        _ => {}
                    }
                    @if integ["status"] == "reconnect_required" { (super::pages::reconnect_banner(&ctx.csrf, p)) }
                    @for n in sync["notices"].as_array().into_iter().flatten() { (flash("info", &text(n))) }
                    @for w in sync["warnings"].as_array().into_iter().flatten() { (flash("info", &text(w))) }
                    (overview(&sync, adv.as_ref()))
                    (actions(ctx, &base, &sync))
                    section {
                        h2 { "Audience size and match rate" }
                        (chart(&runs))
                    }
                    (runs_section(&base, &runs, filter))
                    (settings_form(ctx, &base, &sync))
                    (preview_form(ctx, &base, &sync))
                },
            ),
        ))
    }

    /// The sync's (or a retired sync's) last 50 runs, of the state the page's `?state=` names if valid.
    pub(super) async fn runs_of<'c>(
        &self,
        ctx: &'c Ctx<'_>,
        p: &str,
        s: &str,
    ) -> Result<(Vec<Value>, Option<&'c str>), ApiError> {
        let filter = ctx
            .req
            .query_param("state")
            .filter(|f| RunState::ALL.iter().any(|st| st.as_str() == *f));
        let mut query = vec![("limit", "50")];
        if let Some(f) = filter {
            query.push(("state", f));
        }
        let runs = self
            .v1(ctx, "GET", p, &["syncs", s, "runs"], &query, None)
            .await?;
        Ok((runs["runs"].as_array().cloned().unwrap_or_default(), filter))
    }

    pub(crate) async fn preview_page(
        &self,
        ctx: &Ctx<'_>,
        p: &str,
        id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let pv = self.v1(ctx, "GET", p, &["previews", id], &[], None).await?;
        let running = pv["state"] == "running";
        let mut markup = page(
            &ctx.shell("Preview"),
            html! {
                p { a href={ "/console/projects/" (p) } { "← Project " (p) } }
                h1 { "Preview " (badge(pv["state"].as_str().unwrap_or(""))) }
                @if running { p { "Reading the export… this page reloads by itself." } }
                @if !pv["error"].is_null() { (flash("bad", &text(&pv["error"]["message"]))) }
                @if let Some(verdict) = pv["report"].get("verdict") {
                    section {
                        h2 { "Verdict " (badge(verdict["outcome"].as_str().unwrap_or(""))) }
                        p { (text(&verdict["message"])) }
                        @if !verdict["guard"].is_null() { p.hint { "Guard: " code { (text(&verdict["guard"])) } } }
                    }
                }
                @if let Some(basis) = pv["report"].get("against") {
                    p.hint {
                        "Against sync " code { (text(&basis["sync_id"])) } ": "
                        @if basis["audience_exists"] == true {
                            (count(&basis["committed_digests"])) " users committed from "
                            code { (text(&basis["committed_export"])) } " at " (when(&basis["committed_at"]))
                        } @else { "no audience yet (the first run creates it)" }
                        "; its guards: max_removal_ratio " (text(&basis["guards"]["max_removal_ratio"]))
                        ", min_create_size " (count(&basis["guards"]["min_create_size"])) "."
                    }
                }
                @if let Some(report) = pv["report"].as_object() {
                    section { h2 { "What the next run would do" } table { tbody {
                        @for (k, v) in report { @if k != "verdict" && k != "against" {
                            tr { th { (k.replace('_', " ")) } td {
                                @if v.is_object() || v.is_array() { code { (v.to_string()) } } @else { (count(v)) }
                            } }
                        } }
                    } } }
                }
            },
        );
        if running {
            // No script runs in the console: a refresh header polls while the runner reads the file.
            markup = maud::PreEscaped(markup.into_string().replacen(
                "<head>",
                "<head><meta http-equiv=\"refresh\" content=\"2\">",
                1,
            ));
        }
        Ok(respond(200, markup))
    }
}

fn overview(s: &Value, adv: Option<&Value>) -> Markup {
    let item = |k: &str, v: String| html! { div { div { (k) } b { (v) } } };
    html! {
        section.kv { div.grid {
            (item("Cadence", text(&s["cadence"])))
            (item("Write mode", text(&s["write_mode"])))
            (item("Ad account", adv.map(advertiser_name).unwrap_or_else(|| text(&s["advertiser_id"]))))
            (item("TikTok audience id", text(&s["tiktok_audience_id"])))
            (item("Audience name", text(&s["audience_name"])))
            (item("Audience size (sent)", count(&s["audience_size"])))
            (item("Matched users", count(&s["matched_users"])))
            (item("Match rate", percent(&s["match_rate"])))
            (item("Held adds / removals", format!("{} / {}", count(&s["held_adds"]), count(&s["held_removals"]))))
            (item("Deferred", count(&s["deferred"])))
            (item("Uncertain (re-sent next run)", count(&s["uncertain"])))
            (item("Last run", s["last_run"]["state"].as_str().map(|st| format!("{st} at {}", when(&s["last_run"]["started_at"]))).unwrap_or_else(|| "—".into())))
            (item("Next run", next_run(s)))
            (item("Pending export", text(&s["pending_export"])))
        } }
    }
}

fn actions(ctx: &Ctx<'_>, base: &str, s: &Value) -> Markup {
    let paused = s["state"] == "paused";
    html! {
        section { div.actions {
            form.inline method="post" action={ (base) "/run" } { (csrf_field(&ctx.csrf)) button type="submit" { "Run now" } }
            @if paused {
                form.inline method="post" action={ (base) "/resume" } { (csrf_field(&ctx.csrf)) button.secondary type="submit" { "Resume" } }
            } @else {
                form.inline method="post" action={ (base) "/pause" } { (csrf_field(&ctx.csrf)) button.secondary type="submit" { "Pause" } }
            }
            form.inline method="post" action={ (base) "/delete" } {
                (csrf_field(&ctx.csrf))
                label.inline { input type="checkbox" name="confirm" value="yes" required; " delete this sync" }
                " " button.danger type="submit" { "Delete" }
            }
        } }
    }
}

/// An inline SVG: audience size (solid) and match rate (dashed) per run, oldest left. Runs without a size
/// (failed before a commit) are left out.
fn chart(runs: &[Value]) -> Markup {
    let points: Vec<(f64, Option<f64>)> = runs
        .iter()
        .rev()
        .filter_map(|r| {
            let size = r["audience_size"].as_u64()? as f64;
            let rate = r["matched_users"]
                .as_u64()
                .filter(|_| size > 0.0)
                .map(|m| m as f64 / size);
            Some((size, rate))
        })
        .collect();
    if points.len() < 2 {
        return html! { p.hint { "The chart appears after two runs with a committed audience." } };
    }
    let (w, h, pad) = (600.0, 160.0, 30.0);
    let max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (points.len() - 1) as f64;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v;
    let size_line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.0 / max)))
        .collect();
    let rate_line: Vec<String> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.1.map(|r| format!("{:.1},{:.1}", x(i), y(r.min(1.0)))))
        .collect();
    html! {
        svg.chart viewBox={ "0 0 " (w) " " (h) } role="img" aria-label="audience size and match rate over runs" {
            line.axis x1=(pad) y1=(h - pad) x2=(w - pad) y2=(h - pad) {}
            polyline.size points=(size_line.join(" ")) {}
            @if rate_line.len() > 1 { polyline.rate points=(rate_line.join(" ")) {} }
            text x="2" y=(pad - 8.0) { "size max " (count(&Value::from(max as u64))) }
            text x=(w - 150.0) y=(pad - 8.0) { "match rate (dashed), top = 100 %" }
        }
    }
}

pub(super) fn runs_section(base: &str, runs: &[Value], filter: Option<&str>) -> Markup {
    html! {
        section {
            h2 { "Runs" }
            form method="get" action=(base) {
                label for="state" { "Show" }
                select #state name="state" {
                    option value="" { "every state" }
                    @for st in RunState::ALL.map(RunState::as_str) { option value=(st) selected[filter == Some(st)] { (st.replace('_', " ")) } }
                }
                " " button.secondary type="submit" { "Filter" }
            }
            @if runs.is_empty() { p { "No run yet." } } @else {
                table {
                    thead { tr { th { "Started" } th { "Trigger" } th { "State" } th { "Rows" } th { "Valid" } th { "Unique" }
                        th { "Skipped" } th { "Adds (applied/held/deferred)" } th { "Removes" } th { "Size" } th { "Matched" } th { "Calls" } } }
                    tbody { @for r in runs { (run_row(r)) } }
                }
            }
        }
    }
}

fn run_row(r: &Value) -> Markup {
    let cc = |c: &Value| {
        format!(
            "{} ({}/{}/{})",
            count(&c["planned"]),
            count(&c["applied"]),
            count(&c["held"]),
            count(&c["deferred"])
        )
    };
    html! {
        tr {
            td { (when(&r["started_at"]))
                @if let Some(n) = r["collapsed_count"].as_u64().filter(|n| *n > 1) { br; span.hint { "×" (n) " runs since " (when(&r["oldest_started_at"])) } } }
            td { (text(&r["trigger"])) }
            td { (badge(r["state"].as_str().unwrap_or(""))) @if let Some(reason) = r["reason"].as_str() { br; span.hint { (reason) } } }
            td.n { (count(&r["rows"])) } td.n { (count(&r["valid"])) } td.n { (count(&r["unique"])) }
            td { @for (k, v) in r["skipped"].as_object().into_iter().flatten() { div { (k) ": " (count(v)) } } }
            td.n { (cc(&r["adds"])) } td.n { (cc(&r["removes"])) }
            td.n { (count(&r["audience_size"])) } td.n { (count(&r["matched_users"])) } td.n { (count(&r["tiktok_calls"])) }
        }
    }
}

fn settings_form(ctx: &Ctx<'_>, base: &str, s: &Value) -> Markup {
    html! {
        section {
            h2 { "Settings and guards" }
            form method="post" action={ (base) "/settings" } {
                (csrf_field(&ctx.csrf))
                div.grid {
                    div { label for="cadence" { "Cadence" } select #cadence name="cadence" {
                        @for c in ["on_upload", "daily", "hourly", "one_time"] { option value=(c) selected[s["cadence"] == c] { (c.replace('_', " ")) } }
                    } }
                    div { label for="max_removal_ratio" { "Max removal ratio" }
                        input #max_removal_ratio name="max_removal_ratio" inputmode="decimal" value=(text(&s["max_removal_ratio"]));
                        p.hint { "Runs removing more than this share of the audience are held for review." } }
                    div { label for="min_create_size" { "Minimum audience size" }
                        input #min_create_size name="min_create_size" inputmode="numeric" value=(text(&s["min_create_size"]));
                        p.hint { "The audience is created once the cohort has this many usable ids." } }
                    div { label for="audience_name" { "Audience name" }
                        input #audience_name name="audience_name" maxlength="128" value=(user_name(s)); }
                }
                div.actions { button type="submit" { "Save settings" } }
            }
        }
    }
}

fn preview_form(ctx: &Ctx<'_>, base: &str, s: &Value) -> Markup {
    let key = s["pending_export"]
        .as_str()
        .or(s["last_run"]["source_export"].as_str())
        .unwrap_or_default();
    html! {
        section {
            h2 { "Preview" }
            p.hint { "Reads an export and shows what the next run would add and remove against what this sync last \
                      committed to TikTok, and the guards' verdict. Nothing is sent." }
            form method="post" action={ (base) "/preview" } {
                (csrf_field(&ctx.csrf))
                label for="s3_key" { "Export S3 key" }
                input #s3_key name="s3_key" value=(key) required;
                " " button.secondary type="submit" { "Preview" }
            }
        }
    }
}

/// The audience name as the user wrote it: TikTok's name without the `[as:<sync id>]` suffix the engine adds.
fn user_name(s: &Value) -> String {
    let full = s["audience_name"].as_str().unwrap_or_default();
    match full.rfind(" [as:") {
        Some(i) if full.ends_with(']') => full[..i].to_string(),
        _ => full.to_string(),
    }
}

//! The console's page shell, its stylesheet and small formatting helpers. Everything shown comes from the
//! same JSON the API answers; maud escapes every interpolated value.

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use crate::api::ApiResponse;

/// Only our own stylesheet; no scripts, no inline styles, no framing, forms post only to us.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

pub const CSS_PATH: &str = "/console/static/console.css";

pub const CSS: &str = r#"
:root{--fg:#1d2330;--mut:#5b6577;--line:#dde2ea;--bg:#f6f7f9;--acc:#1f6feb;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e}
*{box-sizing:border-box}body{margin:0;font:15px/1.5 system-ui,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;gap:1.5em;align-items:center;padding:.7em 1.5em;background:#0d1117;color:#fff}
header a{color:#fff;text-decoration:none}header .brand{font-weight:700}header form{margin-left:auto}
main{max-width:72em;margin:1.5em auto;padding:0 1.5em}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:1em 1.3em;margin-bottom:1.2em}
h1{font-size:1.5em;margin:.2em 0 .6em}h2{font-size:1.15em;margin:.2em 0 .6em}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--mut);font-weight:600;font-size:.9em}td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 .55em;border-radius:1em;font-size:.85em;border:1px solid currentColor}
.s-connected,.s-succeeded,.s-active,.s-up_to_date,.s-completed,.s-would_apply{color:var(--ok)}
.s-reconnect_required,.s-failed,.s-would_fail{color:var(--bad)}
.s-held,.s-held_for_review,.s-waiting_for_minimum,.s-paused,.s-stale,.s-skipped,.s-not_connected,.s-would_hold{color:var(--warn)}
.banner{padding:.8em 1em;border-radius:6px;margin-bottom:1em;border:1px solid}
.banner.bad{background:#ffebe9;border-color:#ffb3ad}.banner.ok{background:#dafbe1;border-color:#9be9a8}.banner.info{background:#ddf4ff;border-color:#99d1ff}
form.inline{display:inline}label{display:block;margin:.5em 0 .2em;font-weight:600}
input,select{font:inherit;padding:.35em .5em;border:1px solid var(--line);border-radius:5px;min-width:16em}
button{font:inherit;padding:.4em 1em;border-radius:5px;border:1px solid var(--acc);background:var(--acc);color:#fff;cursor:pointer}
button.secondary{background:#fff;color:var(--acc)}button.danger{background:var(--bad);border-color:var(--bad)}
.hint{color:var(--mut);font-size:.9em;margin:.2em 0}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(13em,1fr));gap:.8em}
.kv div{color:var(--mut);font-size:.85em}.kv b{font-size:1.1em}.actions{display:flex;gap:.6em;flex-wrap:wrap;margin-top:.8em}
svg.chart{width:100%;height:auto;max-height:14em}.chart .size{fill:none;stroke:var(--acc);stroke-width:2}
.chart .rate{fill:none;stroke:var(--ok);stroke-width:2;stroke-dasharray:4 3}.chart text{font-size:11px;fill:var(--mut)}
.chart .axis{stroke:var(--line)}code{background:#eef1f5;padding:0 .3em;border-radius:4px}
"#;

/// What the shell needs: the session's CSRF token (for the sign-out form) when signed in.
pub struct Shell<'a> {
    pub title: &'a str,
    pub csrf: Option<&'a str>,
}

pub fn page(shell: &Shell, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "audience-sync: " (shell.title) }
                link rel="stylesheet" href=(CSS_PATH);
            }
            body {
                header {
                    a.brand href="/console" { "audience-sync" }
                    @if let Some(csrf) = shell.csrf {
                        a href="/console" { "Projects" }
                        a href="/console/exports" { "Unmatched exports" }
                        form.inline method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button.secondary type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// An HTML answer with the console's headers.
pub fn respond(status: u16, markup: Markup) -> ApiResponse {
    let mut r = ApiResponse::html(status, markup.into_string());
    for (k, v) in r.headers.iter_mut() {
        if k == "content-security-policy" {
            *v = CSP.to_string();
        }
    }
    r.headers
        .push(("x-content-type-options".into(), "nosniff".into()));
    r.headers
        .push(("referrer-policy".into(), "same-origin".into()));
    r
}

/// `303 See Other` to a console page (after a form: reload never resubmits).
pub fn see_other(location: &str) -> ApiResponse {
    let mut r = ApiResponse::empty(303);
    r.headers.push(("location".into(), location.to_string()));
    r.headers.push(("cache-control".into(), "no-store".into()));
    r
}

pub fn badge(state: &str) -> Markup {
    html! { span class={ "badge s-" (state) } { (state.replace('_', " ")) } }
}

/// A JSON value as text: strings bare, null as an em dash.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An RFC 3339 time shortened to minutes, UTC.
pub fn when(v: &Value) -> String {
    match v.as_str() {
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|_| s.to_string()),
        None => "—".into(),
    }
}

/// Thousands separators for counts.
pub fn count(v: &Value) -> String {
    match v.as_u64() {
        Some(n) => {
            let s = n.to_string();
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
        None => text(v),
    }
}

pub fn percent(v: &Value) -> String {
    v.as_f64()
        .map(|r| format!("{:.1} %", r * 100.0))
        .unwrap_or_else(|| "—".into())
}

/// The message of an API error answer (the console shows the API's own words).
pub fn error_banner(message: &str) -> Markup {
    html! { div.banner.bad role="alert" { (message) } }
}

pub fn flash(kind: &str, message: &str) -> Markup {
    html! { div class={ "banner " (kind) } role="status" { (message) } }
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// An ad account's name, or its id when TikTok did not list it at connect.
pub fn advertiser_name(a: &Value) -> String {
    match a["advertiser_name"].as_str() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!("(unnamed) {}", text(&a["advertiser_id"])),
    }
}

/// When the sync runs next, as far as the sync record says.
pub fn next_run(s: &Value) -> String {
    match s["state"].as_str() {
        Some("paused") => return "paused".into(),
        Some("completed") => return "—".into(),
        _ => {}
    }
    if !s["next_attempt_at"].is_null() {
        return format!("retry {}", when(&s["next_attempt_at"]));
    }
    match s["cadence"].as_str() {
        Some("hourly") => "within the hour (schedule)".into(),
        Some("daily") => "within the day (schedule)".into(),
        Some("on_upload") | Some("one_time") => "on the next export".into(),
        _ => "—".into(),
    }
}

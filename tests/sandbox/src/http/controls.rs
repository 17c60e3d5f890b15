//! `/portal/auth` (the consent page) and the `/_sandbox/` test controls.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use std::collections::HashMap;

use axum::http::Method;

use super::{Parsed, Shared};
use crate::engine::{AppSpec, FaultConfig, LogEntry, Rules, State, ids_sha256};

#[derive(Deserialize)]
pub(super) struct AuthQuery {
    app_id: Option<String>,
    state: Option<String>,
    redirect_uri: Option<String>,
}

pub(super) async fn portal_auth(
    AxState(sb): AxState<Shared>,
    Query(q): Query<AuthQuery>,
) -> Response {
    let mut st = sb.lock();
    let ts_ms = st.ts_ms(Instant::now());
    let mut entry = LogEntry {
        ts_ms,
        method: "GET".into(),
        path: "/portal/auth".into(),
        app_id: q.app_id.clone(),
        advertiser_id: None,
        audience_id: None,
        action: None,
        ids: 0,
        ids_sha256: ids_sha256(&[]),
        file_paths: vec![],
        http_status: None,
        code: None,
        fault: None,
        applied: false,
    };
    let bad = |st: &mut State, mut entry: LogEntry, msg: String| {
        entry.http_status = Some(400);
        st.log.push(entry);
        (StatusCode::BAD_REQUEST, msg).into_response()
    };
    let (Some(app_id), Some(redirect_uri)) = (q.app_id.clone(), q.redirect_uri.clone()) else {
        return bad(
            &mut st,
            entry,
            "app_id and redirect_uri are required".into(),
        );
    };
    let mut target = match url::Url::parse(&redirect_uri) {
        Ok(u) => u,
        Err(_) => return bad(&mut st, entry, "redirect_uri is not a valid URL".into()),
    };
    let consent = st.consent(&app_id, &redirect_uri);
    match consent {
        Err(msg) => bad(&mut st, entry, msg),
        Ok(code) => {
            {
                let mut pairs = target.query_pairs_mut();
                match &code {
                    Some(c) => {
                        pairs.append_pair("auth_code", c);
                        pairs.append_pair("code", c);
                    }
                    None => {
                        pairs.append_pair("error", "access_denied");
                    }
                }
                if let Some(s) = &q.state {
                    pairs.append_pair("state", s);
                }
            }
            entry.http_status = Some(302);
            entry.applied = code.is_some();
            entry.action = Some(if code.is_some() { "approve" } else { "deny" }.into());
            st.log.push(entry);
            (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response()
        }
    }
}

// ---- /_sandbox/ controls ----

fn bad_request(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": msg.into() })),
    )
        .into_response()
}

pub(super) async fn ctl_apps(AxState(sb): AxState<Shared>, body: Bytes) -> Response {
    let app: AppSpec = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return bad_request(format!("invalid app: {e}")),
    };
    if app.app_id.is_empty() || app.secret.is_empty() {
        return bad_request("app_id and secret must not be empty");
    }
    sb.lock().register_app(app.clone());
    axum::Json(json!({ "ok": true, "app_id": app.app_id })).into_response()
}

#[derive(Deserialize)]
struct ConsentMode {
    mode: String,
}

pub(super) async fn ctl_consent(AxState(sb): AxState<Shared>, body: Bytes) -> Response {
    let m: ConsentMode = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => return bad_request(format!("invalid body: {e}")),
    };
    let deny = match m.mode.as_str() {
        "approve" => false,
        "deny" => true,
        _ => return bad_request("mode must be approve or deny"),
    };
    sb.lock().consent_deny = deny;
    axum::Json(json!({ "ok": true, "mode": m.mode })).into_response()
}

#[derive(Deserialize)]
struct RevokeApp {
    app_id: String,
}

pub(super) async fn ctl_revoke(AxState(sb): AxState<Shared>, body: Bytes) -> Response {
    let r: RevokeApp = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid body: {e}")),
    };
    let n = sb.lock().revoke_app_tokens(&r.app_id);
    axum::Json(json!({ "ok": true, "revoked": n })).into_response()
}

#[derive(Deserialize)]
pub(super) struct AudQuery {
    advertiser_id: Option<String>,
}

pub(super) async fn ctl_audiences(
    AxState(sb): AxState<Shared>,
    Query(q): Query<AudQuery>,
) -> Response {
    let st = sb.lock();
    let list: Vec<Value> = st
        .audiences
        .values()
        .filter(|a| {
            q.advertiser_id
                .as_ref()
                .is_none_or(|x| x == &a.advertiser_id)
        })
        .map(|a| st.inspect(a))
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

pub(super) async fn ctl_audience(AxState(sb): AxState<Shared>, Path(id): Path<String>) -> Response {
    let st = sb.lock();
    match st.audiences.get(&id) {
        Some(a) => axum::Json(st.inspect(a)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": format!("no audience {id}") })),
        )
            .into_response(),
    }
}

/// What a request carried, for contract tests: query parameters, JSON body, or multipart text fields
/// plus the file part's name.
pub(super) fn capture(
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    parsed: &Parsed,
) -> Value {
    let body = match parsed {
        Parsed::Json(m) => json!({ "kind": "json", "fields": m }),
        Parsed::Form(f, _) => json!({
            "kind": "multipart",
            "fields": f.fields,
            "file_name": f.file.as_ref().map(|p| p.file_name.clone()),
            "file_bytes": f.file.as_ref().map(|p| p.bytes.len()),
        }),
        Parsed::Query => json!({ "kind": "none" }),
        Parsed::Invalid(e) => json!({ "kind": "invalid", "error": e }),
    };
    json!({ "method": method.as_str(), "path": path, "query": query, "body": body })
}

pub(super) async fn ctl_captured(AxState(sb): AxState<Shared>) -> Response {
    // Each entry is compact JSON already: the array is their concatenation (what `Json` would write).
    let body = format!("[{}]", sb.lock().captured.join(","));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(super) async fn ctl_requests(AxState(sb): AxState<Shared>) -> Response {
    let log = sb.lock().log.clone();
    axum::Json(log).into_response()
}

pub(super) async fn ctl_set_faults(AxState(sb): AxState<Shared>, body: Bytes) -> Response {
    let f: FaultConfig = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(format!("invalid faults: {e}")),
    };
    if let Err(e) = f.validate() {
        return bad_request(e);
    }
    sb.lock().set_faults(f.clone());
    axum::Json(f).into_response()
}

pub(super) async fn ctl_get_faults(AxState(sb): AxState<Shared>) -> Response {
    axum::Json(sb.lock().faults().clone()).into_response()
}

pub(super) async fn ctl_reset(AxState(sb): AxState<Shared>) -> Response {
    sb.lock().reset();
    axum::Json(json!({ "ok": true })).into_response()
}

#[derive(Deserialize)]
struct Clock {
    advance_ms: i64,
}

/// Moves the sandbox's logical clock (auth code expiry, the per-audience UTC day, processing and
/// not-ready windows, file and audience expiry) forward. The rate windows always use real time.
pub(super) async fn ctl_clock(AxState(sb): AxState<Shared>, body: Bytes) -> Response {
    let c: Clock = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return bad_request(format!("invalid body: {e}")),
    };
    let mut st = sb.lock();
    st.advance_clock(c.advance_ms);
    axum::Json(json!({ "ok": true, "now_ms": st.now_ms() })).into_response()
}

/// Replaces the sandbox's rules (missing fields take TikTok's defaults; unknown keys → 400).
pub(super) async fn ctl_set_rules(AxState(sb): AxState<Shared>, body: Bytes) -> Response {
    let r: Rules = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid rules: {e}")),
    };
    sb.lock().rules = r.clone();
    axum::Json(r).into_response()
}

pub(super) async fn ctl_get_rules(AxState(sb): AxState<Shared>) -> Response {
    axum::Json(sb.lock().rules.clone()).into_response()
}

//! HTTP layer: TikTok's routes (one dispatcher so that rate limiting, faults and the request log apply the
//! same way to every endpoint); the consent page and the `/_sandbox/` test controls are in `controls`.

mod controls;
mod parse;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State as AxState};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Value, json};

use crate::engine::{FaultDecision, LogEntry, Outcome, State, codes, ids_sha256};
use controls::*;
use parse::{Described, Parsed, describe, parse_body, query_map};

/// Largest request body the sandbox reads (TikTok allows files under 1 GB; tests use small ones).
const BODY_LIMIT: usize = 256 * 1024 * 1024;
pub const API_PREFIX: &str = "/open_api/v1.3";

/// The sandbox's shared state.
#[derive(Clone)]
pub struct Shared(pub Arc<Mutex<State>>);

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving rather than poisoning tests.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sandbox's axum router: TikTok's paths plus `/_sandbox/` controls.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/open_api/{*rest}", any(open_api))
        .route("/portal/auth", get(portal_auth))
        .route("/_sandbox/apps", post(ctl_apps))
        .route("/_sandbox/consent", post(ctl_consent))
        .route("/_sandbox/tokens/revoke", post(ctl_revoke))
        .route("/_sandbox/audiences", get(ctl_audiences))
        .route("/_sandbox/audiences/{id}", get(ctl_audience))
        .route("/_sandbox/requests", get(ctl_requests))
        .route("/_sandbox/captured", get(ctl_captured))
        .route("/_sandbox/faults", post(ctl_set_faults).get(ctl_get_faults))
        .route("/_sandbox/reset", post(ctl_reset))
        .route("/_sandbox/clock", post(ctl_clock))
        .route("/_sandbox/rules", post(ctl_set_rules).get(ctl_get_rules))
        // Multipart re-reads the body under axum's limit (2 MB by default): TikTok-sized customer files
        // need the sandbox's own.
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

fn envelope(
    status: StatusCode,
    code: i64,
    message: &str,
    request_id: &str,
    data: Value,
) -> Response {
    let body = json!({ "code": code, "message": message, "request_id": request_id, "data": data });
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut().insert(
        "x-tt-logid",
        header::HeaderValue::from_str(request_id).unwrap_or(header::HeaderValue::from_static("-")),
    );
    r
}

/// A response whose body fails at once: hyper aborts the connection, so the client sees a dropped
/// connection (no complete HTTP response).
fn dropped() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("sandbox: connection dropped"))
    });
    Response::new(Body::from_stream(stream))
}

fn gateway_error(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let html = format!(
        "<html><head><title>{code}</title></head><body><center><h1>{code}</h1></center><hr><center>gateway</center></body></html>"
    );
    (code, [(header::CONTENT_TYPE, "text/html")], html).into_response()
}

/// TikTok's endpoints and their methods; anything else is HTTP 404 without an envelope.
fn route_method(endpoint: &str) -> Option<Method> {
    Some(match endpoint {
        "/oauth2/access_token/"
        | "/oauth2/revoke_token/"
        | "/dmp/custom_audience/file/upload/"
        | "/dmp/custom_audience/create/"
        | "/dmp/custom_audience/update/"
        | "/dmp/custom_audience/delete/"
        | "/segment/audience/"
        | "/segment/mapping/" => Method::POST,
        "/oauth2/advertiser/get/"
        | "/user/info/"
        | "/advertiser/info/"
        | "/dmp/custom_audience/get/"
        | "/dmp/custom_audience/list/" => Method::GET,
        _ => return None,
    })
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/html")],
        "<html><head><title>404 Not Found</title></head><body><h1>404 Not Found</h1></body></html>",
    )
        .into_response()
}

/// A request read off the wire.
struct Incoming {
    method: Method,
    path: String,
    endpoint: String,
    query: HashMap<String, String>,
    token: Option<String>,
    parsed: Parsed,
}

fn log_entry(ts_ms: u64, inc: &Incoming, desc: &Described) -> LogEntry {
    LogEntry {
        ts_ms,
        method: inc.method.to_string(),
        path: inc.path.clone(),
        app_id: desc.app_id.clone(),
        advertiser_id: desc.advertiser_id.clone(),
        audience_id: desc.audience_id.clone(),
        action: desc.action.clone(),
        ids: desc.ids.len(),
        ids_sha256: ids_sha256(&desc.ids),
        file_paths: desc.file_paths.clone(),
        http_status: None,
        code: None,
        fault: None,
        applied: false,
    }
}

/// What happens to a request before its handler runs.
enum Gate {
    NotFound,
    Limited(i64, String),
    Fault(FaultDecision),
}

async fn open_api(AxState(sb): AxState<Shared>, req: Request) -> Response {
    let arrival = Instant::now();
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
    };
    let path = parts.uri.path().to_string();
    let inc = Incoming {
        method: parts.method.clone(),
        endpoint: path.strip_prefix(API_PREFIX).unwrap_or("").to_string(),
        query: query_map(parts.uri.query()),
        token: parts
            .headers
            .get("Access-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        parsed: parse_body(&parts.method, &parts.headers, &parts.extensions, bytes).await,
        path,
    };
    let (mut entry, gate, request_id, latency) = {
        let mut st = sb.lock();
        let ts_ms = st.ts_ms(arrival);
        // OAuth bodies carry the app secret and tokens: never captured.
        if !inc.endpoint.starts_with("/oauth2/") {
            let c = capture(&inc.method, &inc.path, &inc.query, &inc.parsed);
            st.captured.push(c);
        }
        let desc = describe(
            &st,
            &inc.endpoint,
            inc.token.as_deref(),
            &inc.query,
            &inc.parsed,
        );
        let gate = if route_method(&inc.endpoint).is_none_or(|m| m != inc.method) {
            // Unknown routes never reach the limiter: TikTok's gateway answers them.
            Gate::NotFound
        } else {
            match st.admit(desc.app_id.as_deref(), desc.advertiser_id.as_deref(), ts_ms) {
                Err((code, msg)) => Gate::Limited(code, msg),
                Ok(()) => Gate::Fault(st.roll_fault(&inc.path)),
            }
        };
        (
            log_entry(ts_ms, &inc, &desc),
            gate,
            st.next_request_id(),
            st.latency(),
        )
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let record = |entry: LogEntry| sb.lock().log.push(entry);
    let decision = match gate {
        Gate::NotFound => {
            entry.http_status = Some(404);
            record(entry);
            return not_found();
        }
        Gate::Limited(code, msg) => {
            entry.http_status = Some(200);
            entry.code = Some(code);
            record(entry);
            return envelope(StatusCode::OK, code, &msg, &request_id, json!({}));
        }
        Gate::Fault(d) => d,
    };
    match decision {
        FaultDecision::Code(c) => {
            entry.http_status = Some(200);
            entry.code = Some(c);
            entry.fault = Some("code".into());
            record(entry);
            return envelope(
                StatusCode::OK,
                c,
                "sandbox injected error",
                &request_id,
                json!({}),
            );
        }
        FaultDecision::Http(s) => {
            entry.http_status = Some(s);
            entry.fault = Some("http".into());
            record(entry);
            return gateway_error(s);
        }
        FaultDecision::DropBefore => {
            entry.fault = Some("drop_before".into());
            record(entry);
            return dropped();
        }
        FaultDecision::None | FaultDecision::DropAfter => {}
    }
    let outcome = dispatch(&mut sb.lock(), &inc);
    entry.applied = outcome.applied;
    entry.code = Some(outcome.code);
    if entry.audience_id.is_none() {
        entry.audience_id = outcome.audience_id.clone();
    }
    if decision == FaultDecision::DropAfter {
        entry.fault = Some("drop_after".into());
        record(entry);
        return dropped();
    }
    entry.http_status = Some(200);
    record(entry);
    envelope(
        StatusCode::OK,
        outcome.code,
        &outcome.message,
        &request_id,
        outcome.data,
    )
}

/// Runs the endpoint's handler (the route and method were checked before).
fn dispatch(st: &mut State, inc: &Incoming) -> Outcome {
    let t = inc.token.as_deref();
    let q = &inc.query;
    let body = match &inc.parsed {
        Parsed::Json(m) => Ok(m),
        Parsed::Invalid(e) => Err(Outcome::err(codes::INVALID_PARAMS, e.clone())),
        _ => Err(Outcome::err(
            codes::INVALID_PARAMS,
            "request body must be JSON",
        )),
    };
    let with_body = |f: &mut dyn FnMut(&serde_json::Map<String, Value>) -> Outcome| match &body {
        Ok(b) => f(b),
        Err(e) => e.clone(),
    };
    match inc.endpoint.as_str() {
        "/oauth2/access_token/" => with_body(&mut |b| st.exchange(b)),
        "/oauth2/revoke_token/" => with_body(&mut |b| st.revoke_token(b)),
        "/oauth2/advertiser/get/" => st.authorized_advertisers(t, q),
        "/user/info/" => st.user_info(t),
        "/advertiser/info/" => st.advertiser_info(t, q),
        "/dmp/custom_audience/file/upload/" => match &inc.parsed {
            Parsed::Form(f) => st.upload(t, f),
            Parsed::Invalid(e) => Outcome::err(codes::INVALID_PARAMS, e.clone()),
            _ => Outcome::err(
                codes::INVALID_PARAMS,
                "file/upload needs a multipart/form-data body",
            ),
        },
        "/dmp/custom_audience/create/" => with_body(&mut |b| st.create(t, b)),
        "/dmp/custom_audience/update/" => with_body(&mut |b| st.update(t, b)),
        "/dmp/custom_audience/get/" => st.get(t, q),
        "/dmp/custom_audience/list/" => st.list(t, q),
        "/dmp/custom_audience/delete/" => with_body(&mut |b| st.delete(t, b)),
        "/segment/audience/" => with_body(&mut |b| st.segment_audience(t, b)),
        "/segment/mapping/" => with_body(&mut |b| st.segment_mapping(t, b)),
        _ => Outcome::err(codes::INVALID_PARAMS, "unknown endpoint"),
    }
}

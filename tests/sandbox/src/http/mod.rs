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

use crate::engine::digest::Digest;
use crate::engine::{FaultDecision, LogEntry, Outcome, ScannedFile, State, codes};
use controls::*;
use parse::{Described, LogIds, Parsed, describe, parse_body, query_map, scan_upload};

/// Largest request body the sandbox reads (TikTok allows files under 1 GB; tests use small ones).
const BODY_LIMIT: usize = 256 * 1024 * 1024;
pub const API_PREFIX: &str = "/open_api/v1.3";
const UPLOAD: &str = "/dmp/custom_audience/file/upload/";

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

/// What was read before the handler runs, so that it does not read it again under the lock.
struct Prepared {
    scan: Option<ScannedFile>,
    union: Option<Vec<Digest>>,
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
        // filled in by `LogIds::finish` once the lock is released
        ids: 0,
        ids_sha256: String::new(),
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

/// Reads the request off the wire (an upload's file is read here too, on a blocking thread).
async fn read_incoming(req: Request) -> Result<Incoming, Response> {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response());
    };
    let path = parts.uri.path().to_string();
    let mut inc = Incoming {
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
    if inc.endpoint == UPLOAD {
        scan_upload(&mut inc.parsed).await;
    }
    Ok(inc)
}

/// What the gate decided under the lock: the log entry so far, the gate, the request id, the latency
/// to add and the ids for the log.
type Admitted = (LogEntry, Gate, String, std::time::Duration, LogIds);

/// Captures, describes, rate-limits and rolls faults for a request, under the lock (cheap work only).
fn admit(st: &mut State, inc: &Incoming, arrival: Instant, captured: Option<String>) -> Admitted {
    let ts_ms = st.ts_ms(arrival);
    if let Some(c) = captured {
        st.captured.push(c);
    }
    let mut desc = describe(
        st,
        &inc.endpoint,
        inc.token.as_deref(),
        &inc.query,
        &inc.parsed,
    );
    let ids = std::mem::take(&mut desc.ids);
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
        log_entry(ts_ms, inc, &desc),
        gate,
        st.next_request_id(),
        st.latency(),
        ids,
    )
}

/// The answer to a request stopped before its handler (with its log entry completed), or the fault
/// decision to go on with.
fn stopped(
    gate: Gate,
    entry: &mut LogEntry,
    request_id: &str,
) -> Result<FaultDecision, Box<Response>> {
    let decision = match gate {
        Gate::NotFound => {
            entry.http_status = Some(404);
            return Err(Box::new(not_found()));
        }
        Gate::Limited(code, msg) => {
            entry.http_status = Some(200);
            entry.code = Some(code);
            return Err(Box::new(envelope(
                StatusCode::OK,
                code,
                &msg,
                request_id,
                json!({}),
            )));
        }
        Gate::Fault(d) => d,
    };
    match decision {
        FaultDecision::Code(c) => {
            entry.http_status = Some(200);
            entry.code = Some(c);
            entry.fault = Some("code".into());
            let msg = "sandbox injected error";
            Err(Box::new(envelope(
                StatusCode::OK,
                c,
                msg,
                request_id,
                json!({}),
            )))
        }
        FaultDecision::Http(s) => {
            entry.http_status = Some(s);
            entry.fault = Some("http".into());
            Err(Box::new(gateway_error(s)))
        }
        FaultDecision::DropBefore => {
            entry.fault = Some("drop_before".into());
            Err(Box::new(dropped()))
        }
        d @ (FaultDecision::None | FaultDecision::DropAfter) => Ok(d),
    }
}

async fn open_api(AxState(sb): AxState<Shared>, req: Request) -> Response {
    let arrival = Instant::now();
    let mut inc = match read_incoming(req).await {
        Ok(inc) => inc,
        Err(r) => return r,
    };
    // OAuth bodies carry the app secret and tokens: never captured.
    let captured = (!inc.endpoint.starts_with("/oauth2/"))
        .then(|| capture(&inc.method, &inc.path, &inc.query, &inc.parsed).to_string());
    let (mut entry, gate, request_id, latency, ids) =
        admit(&mut sb.lock(), &inc, arrival, captured);
    // Batch identities of big files are hashed here, off the lock.
    let (n, sha, union) = ids.finish().await;
    entry.ids = n;
    entry.ids_sha256 = sha;
    let prepared = Prepared {
        scan: match &mut inc.parsed {
            Parsed::Form(_, scan) => scan.take(),
            _ => None,
        },
        union,
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let record = |entry: LogEntry| sb.lock().log.push(entry);
    let decision = match stopped(gate, &mut entry, &request_id) {
        Ok(d) => d,
        Err(answer) => {
            record(entry);
            return *answer;
        }
    };
    let outcome = dispatch(&mut sb.lock(), &inc, prepared);
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
fn dispatch(st: &mut State, inc: &Incoming, prepared: Prepared) -> Outcome {
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
    let Prepared { scan, union } = prepared;
    let mut union = Some(union);
    match inc.endpoint.as_str() {
        "/oauth2/access_token/" => with_body(&mut |b| st.exchange(b)),
        "/oauth2/revoke_token/" => with_body(&mut |b| st.revoke_token(b)),
        "/oauth2/advertiser/get/" => st.authorized_advertisers(t, q),
        "/user/info/" => st.user_info(t),
        "/advertiser/info/" => st.advertiser_info(t, q),
        UPLOAD => match &inc.parsed {
            Parsed::Form(f, _) => st.upload_scanned(t, f, scan),
            Parsed::Invalid(e) => Outcome::err(codes::INVALID_PARAMS, e.clone()),
            _ => Outcome::err(
                codes::INVALID_PARAMS,
                "file/upload needs a multipart/form-data body",
            ),
        },
        "/dmp/custom_audience/create/" => {
            with_body(&mut |b| st.create_with(t, b, union.take().flatten()))
        }
        "/dmp/custom_audience/update/" => {
            with_body(&mut |b| st.update_with(t, b, union.take().flatten()))
        }
        "/dmp/custom_audience/get/" => st.get(t, q),
        "/dmp/custom_audience/list/" => st.list(t, q),
        "/dmp/custom_audience/delete/" => with_body(&mut |b| st.delete(t, b)),
        "/segment/audience/" => with_body(&mut |b| st.segment_audience(t, b)),
        "/segment/mapping/" => with_body(&mut |b| st.segment_mapping(t, b)),
        _ => Outcome::err(codes::INVALID_PARAMS, "unknown endpoint"),
    }
}

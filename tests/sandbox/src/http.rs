//! HTTP layer: TikTok's routes (one dispatcher so that rate limiting, faults and the request log apply the
//! same way to every endpoint) and the `/_sandbox/` test controls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{
    DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State as AxState,
};
use axum::http::{Extensions, HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::engine::{
    AppSpec, FaultConfig, FaultDecision, LogEntry, Outcome, State, UploadForm, UploadedPart, codes,
    ids_sha256, mapping_ids,
};

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
        // Multipart re-reads the body under axum's limit (2 MB by default): TikTok-sized customer files
        // need the sandbox's own.
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

/// What the log needs to know about a request, read before it is processed so that faulted and
/// rate-limited requests are logged with the same batch identity as their retries.
#[derive(Default)]
struct Described {
    app_id: Option<String>,
    advertiser_id: Option<String>,
    audience_id: Option<String>,
    action: Option<String>,
    ids: Vec<String>,
    file_paths: Vec<String>,
}

enum Parsed {
    Json(Map<String, Value>),
    Form(UploadForm),
    Query,
    Invalid(String),
}

fn query_map(q: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn str_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_string)
}

fn first_of_array(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn first_of_json_query(q: &HashMap<String, String>, name: &str) -> Option<String> {
    q.get(name)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| first_of_array(Some(&v)))
}

async fn parse_body(
    method: &Method,
    headers: &HeaderMap,
    extensions: &Extensions,
    body: Bytes,
) -> Parsed {
    if method == Method::GET {
        return Parsed::Query;
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if ctype.starts_with("multipart/form-data") {
        let mut req = match Request::builder()
            .header(header::CONTENT_TYPE, ctype)
            .body(Body::from(body))
        {
            Ok(r) => r,
            Err(e) => return Parsed::Invalid(e.to_string()),
        };
        // carries the DefaultBodyLimit set on the router
        *req.extensions_mut() = extensions.clone();
        let mut mp = match Multipart::from_request(req, &()).await {
            Ok(m) => m,
            Err(e) => return Parsed::Invalid(format!("invalid multipart body: {e}")),
        };
        let mut form = UploadForm::default();
        loop {
            match mp.next_field().await {
                Ok(Some(field)) => {
                    let name = field.name().unwrap_or("").to_string();
                    let file_name = field.file_name().map(str::to_string);
                    let data = match field.bytes().await {
                        Ok(d) => d,
                        Err(e) => return Parsed::Invalid(format!("invalid multipart field: {e}")),
                    };
                    if name == "file" {
                        form.file = Some(UploadedPart {
                            file_name: file_name.unwrap_or_default(),
                            bytes: data,
                        });
                    } else {
                        form.fields
                            .insert(name, String::from_utf8_lossy(&data).into_owned());
                    }
                }
                Ok(None) => break,
                Err(e) => return Parsed::Invalid(format!("invalid multipart body: {e}")),
            }
        }
        return Parsed::Form(form);
    }
    if !ctype.starts_with("application/json") {
        return Parsed::Invalid("Content-Type must be application/json".into());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => Parsed::Json(m),
        Ok(_) => Parsed::Invalid("request body must be a JSON object".into()),
        Err(e) => Parsed::Invalid(format!("request body is not valid JSON: {e}")),
    }
}

fn describe(
    st: &State,
    endpoint: &str,
    token: Option<&str>,
    q: &HashMap<String, String>,
    parsed: &Parsed,
) -> Described {
    let mut d = Described {
        app_id: token.and_then(|t| st.token_app(t)),
        ..Default::default()
    };
    let empty = Map::new();
    let body = match parsed {
        Parsed::Json(m) => m,
        _ => &empty,
    };
    if d.app_id.is_none() {
        d.app_id = str_of(body.get("app_id")).or_else(|| q.get("app_id").cloned());
    }
    d.advertiser_id = str_of(body.get("advertiser_id"))
        .or_else(|| first_of_array(body.get("advertiser_ids")))
        .or_else(|| q.get("advertiser_id").cloned())
        .or_else(|| first_of_json_query(q, "advertiser_ids"));
    d.action = str_of(body.get("action"));
    match endpoint {
        "/dmp/custom_audience/file/upload/" => {
            if let Parsed::Form(f) = parsed {
                d.advertiser_id = f.fields.get("advertiser_id").cloned();
                if let Some(file) = &f.file {
                    d.ids = crate::engine::file_lines(&file.bytes).unwrap_or_default();
                }
            }
        }
        "/dmp/custom_audience/create/" | "/dmp/custom_audience/update/" => {
            d.audience_id = str_of(body.get("custom_audience_id"));
            if let Some(Value::Array(ps)) = body.get("file_paths") {
                d.file_paths = ps
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
            }
            d.ids = st.file_digests(&d.file_paths);
        }
        "/dmp/custom_audience/delete/" => {
            d.audience_id = first_of_array(body.get("custom_audience_ids"))
        }
        "/dmp/custom_audience/get/" | "/dmp/custom_audience/list/" => {
            d.audience_id = first_of_json_query(q, "custom_audience_ids")
        }
        "/segment/audience/" => d.audience_id = str_of(body.get("audience_id")),
        "/segment/mapping/" => {
            let (ids, aud) = mapping_ids(body);
            d.ids = ids;
            d.audience_id = aud;
        }
        _ => {}
    }
    d
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

async fn open_api(AxState(sb): AxState<Shared>, req: Request) -> Response {
    let arrival = Instant::now();
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = query_map(parts.uri.query());
    let token = parts
        .headers
        .get("Access-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
    };
    let parsed = parse_body(&method, &parts.headers, &parts.extensions, bytes).await;
    let endpoint = path.strip_prefix(API_PREFIX).unwrap_or("").to_string();

    let (ts_ms, desc, decision, request_id, latency) = {
        let mut st = sb.lock();
        let ts_ms = st.ts_ms(arrival);
        // OAuth bodies carry the app secret and tokens: never captured.
        if !endpoint.starts_with("/oauth2/") {
            let c = capture(&method, &path, &query, &parsed);
            st.captured.push(c);
        }
        let desc = describe(&st, &endpoint, token.as_deref(), &query, &parsed);
        let request_id = st.next_request_id();
        let admitted = match &desc.app_id {
            Some(app) => st.admit(app, ts_ms),
            None => true,
        };
        let decision = if admitted {
            st.roll_fault(&path)
        } else {
            FaultDecision::None
        };
        (
            ts_ms,
            desc,
            if admitted { Some(decision) } else { None },
            request_id,
            st.latency(),
        )
    };
    let mut entry = LogEntry {
        ts_ms,
        method: method.to_string(),
        path: path.clone(),
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
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let record = |entry: LogEntry| sb.lock().log.push(entry);

    let Some(decision) = decision else {
        entry.http_status = Some(200);
        entry.code = Some(codes::APP_RATE_LIMIT);
        record(entry);
        return envelope(
            StatusCode::OK,
            codes::APP_RATE_LIMIT,
            "Too many requests. The app exceeded its QPS limit; please retry later.",
            &request_id,
            json!({}),
        );
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

    let outcome = {
        let mut st = sb.lock();
        let t = token.as_deref();
        let json_body = |p: &Parsed| match p {
            Parsed::Json(m) => Ok(m.clone()),
            Parsed::Invalid(e) => Err(Outcome::err(codes::INVALID_PARAMS, e.clone())),
            _ => Err(Outcome::err(
                codes::INVALID_PARAMS,
                "request body must be JSON",
            )),
        };
        let want = |m: Method| {
            if method == m {
                Ok(())
            } else {
                Err(Outcome::err(
                    codes::INVALID_PARAMS,
                    format!("use {m} for {endpoint}"),
                ))
            }
        };
        let r: Result<Outcome, Outcome> = (|| {
            Ok(match endpoint.as_str() {
                "/oauth2/access_token/" => {
                    want(Method::POST)?;
                    st.exchange(&json_body(&parsed)?)
                }
                "/oauth2/revoke_token/" => {
                    want(Method::POST)?;
                    st.revoke_token(&json_body(&parsed)?)
                }
                "/oauth2/advertiser/get/" => {
                    want(Method::GET)?;
                    st.authorized_advertisers(t, &query)
                }
                "/user/info/" => {
                    want(Method::GET)?;
                    st.user_info(t)
                }
                "/advertiser/info/" => {
                    want(Method::GET)?;
                    st.advertiser_info(t, &query)
                }
                "/dmp/custom_audience/file/upload/" => {
                    want(Method::POST)?;
                    match &parsed {
                        Parsed::Form(f) => st.upload(t, f),
                        Parsed::Invalid(e) => Outcome::err(codes::INVALID_PARAMS, e.clone()),
                        _ => Outcome::err(
                            codes::INVALID_PARAMS,
                            "file/upload needs a multipart/form-data body",
                        ),
                    }
                }
                "/dmp/custom_audience/create/" => {
                    want(Method::POST)?;
                    st.create(t, &json_body(&parsed)?)
                }
                "/dmp/custom_audience/update/" => {
                    want(Method::POST)?;
                    st.update(t, &json_body(&parsed)?)
                }
                "/dmp/custom_audience/get/" => {
                    want(Method::GET)?;
                    st.get(t, &query)
                }
                "/dmp/custom_audience/list/" => {
                    want(Method::GET)?;
                    st.list(t, &query)
                }
                "/dmp/custom_audience/delete/" => {
                    want(Method::POST)?;
                    st.delete(t, &json_body(&parsed)?)
                }
                "/segment/audience/" => {
                    want(Method::POST)?;
                    st.segment_audience(t, &json_body(&parsed)?)
                }
                "/segment/mapping/" => {
                    want(Method::POST)?;
                    st.segment_mapping(t, &json_body(&parsed)?)
                }
                _ => {
                    return Err(Outcome::err(
                        codes::INVALID_PARAMS,
                        format!("unknown endpoint {path}"),
                    ));
                }
            })
        })();
        r.unwrap_or_else(|e| e)
    };
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

#[derive(Deserialize)]
struct AuthQuery {
    app_id: Option<String>,
    state: Option<String>,
    redirect_uri: Option<String>,
}

async fn portal_auth(AxState(sb): AxState<Shared>, Query(q): Query<AuthQuery>) -> Response {
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

async fn ctl_apps(AxState(sb): AxState<Shared>, body: Bytes) -> Response {
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

async fn ctl_consent(AxState(sb): AxState<Shared>, body: Bytes) -> Response {
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

async fn ctl_revoke(AxState(sb): AxState<Shared>, body: Bytes) -> Response {
    let r: RevokeApp = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid body: {e}")),
    };
    let n = sb.lock().revoke_app_tokens(&r.app_id);
    axum::Json(json!({ "ok": true, "revoked": n })).into_response()
}

#[derive(Deserialize)]
struct AudQuery {
    advertiser_id: Option<String>,
}

async fn ctl_audiences(AxState(sb): AxState<Shared>, Query(q): Query<AudQuery>) -> Response {
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

async fn ctl_audience(AxState(sb): AxState<Shared>, Path(id): Path<String>) -> Response {
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
fn capture(method: &Method, path: &str, query: &HashMap<String, String>, parsed: &Parsed) -> Value {
    let body = match parsed {
        Parsed::Json(m) => json!({ "kind": "json", "fields": m }),
        Parsed::Form(f) => json!({
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

async fn ctl_captured(AxState(sb): AxState<Shared>) -> Response {
    let c = sb.lock().captured.clone();
    axum::Json(Value::Array(c)).into_response()
}

async fn ctl_requests(AxState(sb): AxState<Shared>) -> Response {
    let log = sb.lock().log.clone();
    axum::Json(log).into_response()
}

async fn ctl_set_faults(AxState(sb): AxState<Shared>, body: Bytes) -> Response {
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

async fn ctl_get_faults(AxState(sb): AxState<Shared>) -> Response {
    axum::Json(sb.lock().faults().clone()).into_response()
}

async fn ctl_reset(AxState(sb): AxState<Shared>) -> Response {
    sb.lock().reset();
    axum::Json(json!({ "ok": true })).into_response()
}

#[derive(Deserialize)]
struct Clock {
    advance_ms: i64,
}

/// Moves the sandbox's logical clock (auth code expiry, the per-audience UTC day) forward. The rate window
/// always uses real time.
async fn ctl_clock(AxState(sb): AxState<Shared>, body: Bytes) -> Response {
    let c: Clock = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return bad_request(format!("invalid body: {e}")),
    };
    let mut st = sb.lock();
    st.advance_clock(c.advance_ms);
    axum::Json(json!({ "ok": true, "now_ms": st.now_ms() })).into_response()
}

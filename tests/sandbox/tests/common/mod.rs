//! Shared helpers for the sandbox and client integration tests.
#![allow(dead_code)]

pub mod raw_api;

use std::path::{Path, PathBuf};
use std::time::Duration;

use audience_tiktok::{AccessToken, AppSecret, ClientConfig, RetryPolicy, TikTokClient};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tiktok_sandbox::{Rules, RunningSandbox, Sandbox, SandboxOptions};

/// TikTok's default processing window after a customer-file create or update (6 h of logical time).
pub const PROCESSING_MS: i64 = 6 * 3_600_000;
/// TikTok's default not-ready window of a new streaming audience.
pub const NOT_READY_MS: i64 = 90_000;

/// A sandbox with a high QPS and the default match rate, for tests not about rate: the per-minute limits
/// (600 per app and per advertiser) are off too, since these tests fire hundreds of requests a minute.
/// Every other TikTok rule stays on.
pub async fn sandbox() -> RunningSandbox {
    sandbox_with(SandboxOptions {
        qps: 10_000,
        rules: no_minute_limits(),
        ..Default::default()
    })
    .await
}

/// TikTok's rules without the per-minute windows (see [`sandbox`]).
pub fn no_minute_limits() -> Rules {
    Rules {
        qpm: 0,
        advertiser_qpm: 0,
        ..Rules::default()
    }
}

/// Moves the sandbox's logical clock forward (what hours between runs do).
pub async fn advance_clock(sb: &RunningSandbox, ms: i64) {
    let (status, body) = post_json(sb, "/_sandbox/clock", json!({ "advance_ms": ms })).await;
    assert_eq!(status, 200, "clock: {body}");
}

pub async fn sandbox_with(opts: SandboxOptions) -> RunningSandbox {
    match Sandbox::start(opts).await {
        Ok(s) => s,
        Err(e) => panic!("sandbox did not start: {e}"),
    }
}

pub fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts,
        max_elapsed: Duration::from_secs(30),
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
    }
}

pub fn client_for(sb: &RunningSandbox, rate: f64, attempts: u32) -> TikTokClient {
    let cfg = ClientConfig {
        host: sb.base_url.clone(),
        rate_per_second: rate,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
        retry: fast_retry(attempts),
        rate_gate: None,
    };
    TikTokClient::new(cfg).expect("valid config")
}

/// A plain HTTP client that does not follow redirects (to read the consent page's 302).
pub fn raw() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

pub fn secret(sb: &RunningSandbox) -> AppSecret {
    AppSecret::new(sb.secret().to_string())
}

/// Goes through consent (302 with auth_code) and returns the auth code.
pub async fn consent_code(sb: &RunningSandbox, client: &TikTokClient, app_id: &str) -> String {
    let url = client.consent_url(app_id, "st-1", "http://127.0.0.1:9/callback");
    let resp = raw().get(&url).send().await.expect("consent page");
    assert_eq!(resp.status().as_u16(), 302);
    let loc = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_string();
    let u = url::Url::parse(&loc).expect("redirect URL");
    let q: std::collections::HashMap<String, String> = u.query_pairs().into_owned().collect();
    assert_eq!(q.get("state").map(String::as_str), Some("st-1"));
    let _ = sb;
    q.get("auth_code").cloned().expect("auth_code in redirect")
}

/// Consent + exchange with the default app: a working token.
pub async fn connect(sb: &RunningSandbox, client: &TikTokClient) -> AccessToken {
    let code = consent_code(sb, client, sb.app_id()).await;
    let grant = client
        .exchange_auth_code(sb.app_id(), &secret(sb), &code)
        .await
        .expect("exchange");
    grant.data.access_token
}

/// `n` distinct SHA-256 digests (lowercase hex) of made-up emails.
pub fn digests(n: usize, salt: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            hex::encode(Sha256::digest(
                format!("user{i}-{salt}@example.com").as_bytes(),
            ))
        })
        .collect()
}

/// Digests that the sandbox counts as matched (match_rate 0.7, decided by the digest's first 4 bytes).
pub fn matched(ds: &[String], rate: f64) -> usize {
    ds.iter()
        .filter(|d| tiktok_sandbox::engine::digest_matches(d, rate))
        .count()
}

pub fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.join(name);
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(&p, s).expect("write file");
    p
}

pub async fn get_json(sb: &RunningSandbox, path: &str) -> Value {
    let r = raw()
        .get(format!("{}{}", sb.base_url, path))
        .send()
        .await
        .expect("GET");
    r.json().await.expect("JSON")
}

pub async fn post_json(sb: &RunningSandbox, path: &str, body: Value) -> (u16, Value) {
    let r = raw()
        .post(format!("{}{}", sb.base_url, path))
        .json(&body)
        .send()
        .await
        .expect("POST");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub async fn requests(sb: &RunningSandbox) -> Vec<Value> {
    match get_json(sb, "/_sandbox/requests").await {
        Value::Array(a) => a,
        other => panic!("requests log is not an array: {other}"),
    }
}

pub async fn set_faults(sb: &RunningSandbox, faults: Value) {
    let (s, body) = post_json(sb, "/_sandbox/faults", faults).await;
    assert_eq!(s, 200, "faults rejected: {body}");
}

pub async fn clear_faults(sb: &RunningSandbox) {
    set_faults(sb, json!({})).await;
}

/// Calls a TikTok endpoint directly (no client) and returns (HTTP status, body JSON).
pub async fn api_get(
    sb: &RunningSandbox,
    token: Option<&str>,
    endpoint: &str,
    query: &[(&str, &str)],
) -> (u16, Value) {
    let mut rb = raw()
        .get(format!("{}/open_api/v1.3/{endpoint}", sb.base_url))
        .query(query);
    if let Some(t) = token {
        rb = rb.header("Access-Token", t);
    }
    let r = rb.send().await.expect("GET");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub async fn api_post(
    sb: &RunningSandbox,
    token: Option<&str>,
    endpoint: &str,
    body: Value,
) -> (u16, Value) {
    let mut rb = raw()
        .post(format!("{}/open_api/v1.3/{endpoint}", sb.base_url))
        .json(&body);
    if let Some(t) = token {
        rb = rb.header("Access-Token", t);
    }
    let r = rb.send().await.expect("POST");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub fn code(v: &Value) -> i64 {
    v["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no code in {v}"))
}

/// Counts, for each request, how many requests of the same app fall in the 1,000 ms window starting at
/// it; returns the largest count.
pub fn max_in_window(ts: &[u64]) -> usize {
    let mut ts = ts.to_vec();
    ts.sort();
    let mut best = 0;
    for (i, t) in ts.iter().enumerate() {
        let n = ts[i..].iter().take_while(|u| **u < t + 1000).count();
        best = best.max(n);
    }
    best
}

// ------------------------------------------------------------------ contract checks

pub fn contract() -> Value {
    serde_json::from_str(include_str!("../fixtures/tiktok_contract.json"))
        .expect("contract fixture")
}

fn resolve<'a>(c: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(name) => &c["definitions"][name],
        None => schema,
    }
}

/// Checks a JSON value against a schema node of the fixture. Returns every violation found.
pub fn check(c: &Value, schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
    let schema = resolve(c, schema);
    if v.is_null() {
        if !schema["nullable"].as_bool().unwrap_or(false) {
            out.push(format!("{at}: null but not nullable"));
        }
        return;
    }
    let ty = schema["type"].as_str().unwrap_or("any");
    let ok = match ty {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    };
    if !ok {
        out.push(format!("{at}: expected {ty}, got {v}"));
        return;
    }
    if let Some(e) = schema["enum"].as_array()
        && !e.contains(v)
    {
        out.push(format!("{at}: {v} not in enum {e:?}"));
    }
    if let Some(s) = v.as_str() {
        let n = s.chars().count() as u64;
        if schema["minLength"].as_u64().is_some_and(|m| n < m)
            || schema["maxLength"].as_u64().is_some_and(|m| n > m)
        {
            out.push(format!("{at}: length {n} outside limits"));
        }
        if schema["pattern_sha256"].as_bool() == Some(true)
            && !(s.len() == 64
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            out.push(format!("{at}: not a lowercase SHA-256 hex digest"));
        }
    }
    if let Some(n) = v.as_i64()
        && (schema["minimum"].as_i64().is_some_and(|m| n < m)
            || schema["maximum"].as_i64().is_some_and(|m| n > m))
    {
        out.push(format!("{at}: {n} outside limits"));
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as u64;
        if schema["minItems"].as_u64().is_some_and(|m| n < m)
            || schema["maxItems"].as_u64().is_some_and(|m| n > m)
        {
            out.push(format!("{at}: {n} items outside limits"));
        }
        if let Some(is) = schema.get("items") {
            for (i, it) in items.iter().enumerate() {
                check(c, is, it, &format!("{at}[{i}]"), out);
            }
        }
    }
    if let Some(obj) = v.as_object() {
        for r in schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(r) {
                out.push(format!("{at}: missing required {r}"));
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (k, val) in obj {
                if let Some(p) = props.get(k) {
                    check(c, p, val, &format!("{at}.{k}"), out);
                }
            }
        }
    }
}

/// Checks a captured request (`GET /_sandbox/captured` item) against the fixture: no unknown fields,
/// required fields present, types, enums, limits.
pub fn check_request(c: &Value, captured: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let path = captured["path"].as_str().unwrap_or("");
    let ep = path.strip_prefix("/open_api/v1.3").unwrap_or(path);
    let Some(spec) = c["endpoints"].get(ep) else {
        return vec![format!("{ep}: endpoint not in the contract")];
    };
    if captured["method"] != spec["method"] {
        out.push(format!(
            "{ep}: method {} but contract says {}",
            captured["method"], spec["method"]
        ));
    }
    let req = &spec["request"];
    let props = req["properties"].as_object().cloned().unwrap_or_default();
    let (fields, is_query): (serde_json::Map<String, Value>, bool) = match req["in"].as_str() {
        Some("query") => (
            captured["query"].as_object().cloned().unwrap_or_default(),
            true,
        ),
        _ => (
            captured["body"]["fields"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
            false,
        ),
    };
    if req["in"] == "multipart" {
        match captured["body"]["file_name"].as_str() {
            Some(name) => {
                let ok = req["file_suffixes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .any(|s| name.ends_with(s));
                if !ok {
                    out.push(format!(
                        "{ep}: file name {name} has a suffix TikTok refuses"
                    ));
                }
            }
            None => out.push(format!("{ep}: no file part")),
        }
    }
    for r in req["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if r != "file" && !fields.contains_key(r) {
            out.push(format!("{ep}: missing required {r}"));
        }
    }
    for (k, raw) in &fields {
        let Some(p) = props.get(k) else {
            out.push(format!("{ep}: field {k} is not in the contract"));
            continue;
        };
        // Query and multipart values arrive as strings: decode them the way TikTok does.
        let v = if is_query || req["in"] == "multipart" {
            let s = raw.as_str().unwrap_or("");
            match p["type"].as_str() {
                Some("array") if p["json_in_query"].as_bool() == Some(true) => {
                    match serde_json::from_str::<Value>(s) {
                        Ok(v) => v,
                        Err(_) => {
                            out.push(format!("{ep}: {k} is not a JSON array string: {s}"));
                            continue;
                        }
                    }
                }
                Some("integer") => match s.parse::<i64>() {
                    Ok(n) => json!(n),
                    Err(_) => {
                        out.push(format!("{ep}: {k} is not an integer: {s}"));
                        continue;
                    }
                },
                _ => raw.clone(),
            }
        } else {
            raw.clone()
        };
        check(c, p, &v, &format!("{ep}.{k}"), &mut out);
    }
    out
}

/// Checks a response envelope and its data against the fixture.
pub fn check_response(c: &Value, endpoint: &str, body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(
        c,
        &c["envelope"],
        body,
        &format!("{endpoint} envelope"),
        &mut out,
    );
    if body["code"] == 0 {
        check(
            c,
            &c["endpoints"][endpoint]["response"],
            &body["data"],
            &format!("{endpoint} data"),
            &mut out,
        );
    }
    out
}

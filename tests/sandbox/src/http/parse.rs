//! Reading a TikTok request: its body (JSON, multipart or none) and what the request log records about it.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{Extensions, HeaderMap, Method, header};
use serde_json::{Map, Value};

use crate::engine::digest::{Digest, hex_lines_sha256};
use crate::engine::{
    FileIds, ScannedFile, State, UploadForm, UploadedPart, file_lines, ids_sha256, mapping_ids,
    scan_file, union_of,
};

/// What the log needs to know about a request, read before it is processed so that faulted and
/// rate-limited requests are logged with the same batch identity as their retries.
#[derive(Default)]
pub(super) struct Described {
    pub(super) app_id: Option<String>,
    pub(super) advertiser_id: Option<String>,
    pub(super) audience_id: Option<String>,
    pub(super) action: Option<String>,
    pub(super) ids: LogIds,
    pub(super) file_paths: Vec<String>,
}

/// The ids a request carries, in whatever form is cheapest to take under the lock; `finish` turns them
/// into the log's count and batch identity.
pub(super) enum LogIds {
    Strings(Vec<String>),
    /// An upload read by `scan_file`: its line count and batch identity.
    Counted(usize, String),
    Files(FileIds),
}

impl Default for LogIds {
    fn default() -> Self {
        LogIds::Strings(Vec::new())
    }
}

/// Above this many digests the union and its hash are made on a blocking thread.
const BLOCKING_IDS: usize = 100_000;

impl LogIds {
    /// (ids, ids_sha256) for the log, and the union of the referenced files' digests when it was made
    /// (handed to create/update so they do not make it again).
    pub(super) async fn finish(self) -> (usize, String, Option<Vec<Digest>>) {
        match self {
            LogIds::Strings(v) | LogIds::Files(FileIds::Hex(v)) => (v.len(), ids_sha256(&v), None),
            LogIds::Counted(n, sha) => (n, sha, None),
            LogIds::Files(FileIds::Files { files, width }) => {
                let total: usize = files.iter().map(|f| f.len()).sum();
                let work = move || {
                    let union = union_of(&files);
                    let sha = hex_lines_sha256(&union, width);
                    (union.len(), sha, Some(union))
                };
                if total < BLOCKING_IDS {
                    return work();
                }
                tokio::task::spawn_blocking(work)
                    .await
                    .unwrap_or_else(|e| (0, format!("sandbox: hashing failed: {e}"), None))
            }
        }
    }
}

pub(crate) enum Parsed {
    Json(Map<String, Value>),
    /// An upload form and, once `scan_upload` ran, its file read.
    Form(UploadForm, Option<ScannedFile>),
    Query,
    Invalid(String),
}

pub(super) fn query_map(q: Option<&str>) -> HashMap<String, String> {
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

pub(super) async fn parse_body(
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
        return Parsed::Form(form, None);
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

/// Reads an upload's file on a blocking thread (MD5, lines, digests: O(file), up to 50 MB), before the
/// state lock is taken.
pub(super) async fn scan_upload(parsed: &mut Parsed) {
    let Parsed::Form(form, scan) = parsed else {
        return;
    };
    let Some(file) = &form.file else {
        return;
    };
    let bytes = file.bytes.clone();
    let calculate_type = form
        .fields
        .get("calculate_type")
        .cloned()
        .unwrap_or_default();
    // On a failed task the handler reads the file itself.
    *scan = tokio::task::spawn_blocking(move || scan_file(&bytes, &calculate_type))
        .await
        .ok();
}

pub(super) fn describe(
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
            if let Parsed::Form(f, scan) = parsed {
                d.advertiser_id = f.fields.get("advertiser_id").cloned();
                if let Some(file) = &f.file {
                    d.ids = match scan {
                        Some(s) => LogIds::Counted(s.lines, s.lines_sha256.clone()),
                        None => LogIds::Strings(file_lines(&file.bytes)),
                    };
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
            d.ids = LogIds::Files(st.file_ids(&d.file_paths));
        }
        "/dmp/custom_audience/delete/" => {
            d.audience_id = first_of_array(body.get("custom_audience_ids"))
        }
        "/dmp/custom_audience/get/" | "/dmp/custom_audience/list/" => {
            d.audience_id = first_of_json_query(q, "custom_audience_ids")
        }
        "/segment/audience/" => d.audience_id = str_of(body.get("delete_audience_id")),
        "/segment/mapping/" => {
            let (ids, aud) = mapping_ids(body);
            d.ids = LogIds::Strings(ids);
            d.audience_id = aud;
        }
        _ => {}
    }
    d
}

//! The sync-runner "function" of the local stack: the real handler (`audience_app::runner::handle`) behind
//! Lambda's Invoke API, so the functions' `LambdaInvoker` (run now, pending exports, continuations, previews)
//! works unchanged. Asynchronous invocations behave like Lambda's: accepted with 202, run concurrently, retried
//! twice on error, then sent to the dead-letter queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use audience_core::sync::Engine;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tracing::{error, info, warn};

/// Where a failed asynchronous invocation goes after its retries (the template's on-failure destination).
#[derive(Clone)]
pub struct DeadLetters {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
}

pub struct Runner {
    engine: Engine,
    /// The function's timeout: each invocation gets this deadline, as Lambda's context does.
    timeout: Duration,
    /// Delays before Lambda's two retries of a failed asynchronous invocation (shortened locally).
    retry_delays: [Duration; 2],
    dead_letters: Option<DeadLetters>,
    in_flight: AtomicUsize,
}

impl Runner {
    pub fn new(engine: Engine, timeout: Duration, dead_letters: Option<DeadLetters>) -> Runner {
        Runner {
            engine,
            timeout,
            retry_delays: [Duration::from_secs(2), Duration::from_secs(5)],
            dead_letters,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Invocations accepted and not finished yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// One synchronous invocation (RequestResponse).
    pub async fn invoke(&self, payload: Value) -> Result<Value, String> {
        audience_app::runner::handle(&self.engine, payload, Some(self.timeout))
            .await
            .map_err(|e| e.to_string())
    }

    /// One invocation counted in [`Runner::in_flight`] until it ends (or is dropped).
    pub async fn invoke_tracked(&self, payload: Value) -> Result<Value, String> {
        let _counted = InFlight::new(&self.in_flight);
        self.invoke(payload).await
    }

    /// An asynchronous invocation (`Event`): returns at once; the handler runs on its own task.
    pub fn invoke_async(self: &Arc<Self>, source: &'static str, payload: Value) {
        let runner = self.clone();
        runner.in_flight.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            runner.run_with_retries(source, payload).await;
            runner.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }

    async fn run_with_retries(&self, source: &'static str, payload: Value) {
        let kind = describe(&payload);
        let mut last_error = String::new();
        for attempt in 0..=self.retry_delays.len() {
            if attempt > 0 {
                tokio::time::sleep(self.retry_delays[attempt - 1]).await;
            }
            match self.invoke(payload.clone()).await {
                Ok(result) => {
                    info!(source, input = %kind, attempt, result = %result, "sync-runner invocation done");
                    return;
                }
                Err(e) => {
                    warn!(source, input = %kind, attempt, error = %e, "sync-runner invocation failed");
                    last_error = e;
                }
            }
        }
        self.dead_letter(source, &payload, &last_error, self.retry_delays.len() + 1)
            .await;
    }

    /// Sends a failed invocation's record to the dead-letter queue, in Lambda's on-failure shape.
    pub async fn dead_letter(
        &self,
        source: &'static str,
        payload: &Value,
        last_error: &str,
        attempts: usize,
    ) {
        let kind = describe(payload);
        error!(source, input = %kind, error = %last_error, attempts, "sync-runner invocation failed after retries: dead-lettered");
        if let Some(dl) = &self.dead_letters {
            let body = json!({
                "requestPayload": payload,
                "responsePayload": {"errorMessage": last_error},
                "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": attempts},
            });
            if let Err(e) = dl
                .sqs
                .send_message()
                .queue_url(&dl.queue_url)
                .message_body(body.to_string())
                .send()
                .await
            {
                error!(error = %e, "dead-letter queue unreachable");
            }
        }
    }
}

/// Counts one invocation in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(n: &'a AtomicUsize) -> InFlight<'a> {
        n.fetch_add(1, Ordering::SeqCst);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A short description of an input for logs (never the payload's values beyond ids and trigger).
fn describe(v: &Value) -> String {
    if let Some(t) = v.get("trigger").and_then(Value::as_str) {
        let sync = v
            .get("sync_id")
            .or_else(|| v.get("preview_id"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        return format!("{t} {sync}");
    }
    if let Some(records) = v.get("Records").and_then(Value::as_array) {
        let keys: Vec<&str> = records
            .iter()
            .filter_map(|r| r.pointer("/s3/object/key").and_then(Value::as_str))
            .collect();
        return format!("s3 {}", keys.join(","));
    }
    if v.get("Event").is_some() {
        return "s3 test event".into();
    }
    "unrecognized".into()
}

#[derive(Clone)]
struct Served {
    runner: Arc<Runner>,
    function: String,
    arn: String,
}

/// Lambda's Invoke API for the sync-runner: `POST /2015-03-31/functions/{name}/invocations`, `name` being the
/// function's name or ARN (optionally with `:$LATEST`).
pub fn router(runner: Arc<Runner>, function: String, arn: String) -> Router {
    Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke_route),
        )
        .with_state(Served {
            runner,
            function,
            arn,
        })
}

fn request_id() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut resp = (
        status,
        axum::Json(json!({"Type": "User", "message": message, "Message": message})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(kind) {
        resp.headers_mut().insert("x-amzn-ErrorType", v);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        resp.headers_mut().insert("x-amzn-RequestId", v);
    }
    resp
}

async fn invoke_route(
    State(s): State<Served>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let name = percent_encoding::percent_decode_str(&name)
        .decode_utf8_lossy()
        .into_owned();
    let bare = name.strip_suffix(":$LATEST").unwrap_or(&name);
    if bare != s.function && bare != s.arn {
        return aws_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Function not found: {name}"),
        );
    }
    let payload: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return aws_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContentException",
                    &format!("Could not parse request body into json: {e}"),
                );
            }
        }
    };
    let kind = headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse")
        .to_string();
    let rid = request_id();
    let mut resp = match kind.as_str() {
        "Event" => {
            s.runner.invoke_async("invoke", payload);
            StatusCode::ACCEPTED.into_response()
        }
        "DryRun" => StatusCode::NO_CONTENT.into_response(),
        "RequestResponse" => match s.runner.invoke(payload).await {
            Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
            Err(e) => {
                let mut r = (
                    StatusCode::OK,
                    axum::Json(json!({"errorMessage": e, "errorType": "EngineError"})),
                )
                    .into_response();
                r.headers_mut().insert(
                    "X-Amz-Function-Error",
                    HeaderValue::from_static("Unhandled"),
                );
                r
            }
        },
        other => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                &format!("unsupported invocation type {other:?}"),
            );
        }
    };
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-amzn-RequestId", v);
    }
    resp
}

//! sync-runner Lambda: thin handler. Config, AWS clients, the TikTok client and the engine are built once
//! per execution environment; each invocation calls into `audience_app::runner`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    audience_app::init_tracing();
    let engine = audience_app::runner::engine_from_env().await?;
    let engine = &engine;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let time_left = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
        audience_app::runner::handle(engine, event.payload, Some(time_left))
            .await
            .map_err(Error::from)
    }))
    .await
}

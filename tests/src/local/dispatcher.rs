//! S3 → sync-runner. moto cannot invoke a Lambda from a bucket notification, so the bucket notifies an SQS queue
//! and this loop hands each message's body (the S3 event JSON exactly as S3 wrote it, `s3:TestEvent`
//! included) to the runner as an asynchronous invocation, which is how S3 invokes Lambda.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::{debug, warn};

use super::lambda::Runner;

pub async fn run(sqs: aws_sdk_sqs::Client, queue_url: String, runner: Arc<Runner>) {
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                warn!(error = %e, "cohort events queue unreachable; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for m in messages {
            let body = m.body.as_deref().unwrap_or_default();
            match serde_json::from_str::<Value>(body) {
                Ok(event) => {
                    debug!("S3 event delivered to the sync-runner");
                    runner.invoke_async("s3", event);
                }
                // Not an S3 event: nothing could ever process it, so it is dropped (logged), not redelivered.
                Err(e) => {
                    warn!(error = %e, "message on the cohort events queue is not JSON; dropped")
                }
            }
            if let Some(handle) = m.receipt_handle.as_deref()
                && let Err(e) = sqs
                    .delete_message()
                    .queue_url(&queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
            {
                // The event may be delivered twice then: the runner is idempotent per export.
                warn!(error = %e, "could not delete a cohort event from the queue");
            }
        }
    }
}

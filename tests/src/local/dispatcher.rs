//! S3 → sync-runner. moto cannot invoke a Lambda from a bucket notification, so the bucket notifies an SQS queue
//! and this loop hands each message's body (the S3 event JSON exactly as S3 wrote it, `s3:TestEvent`
//! included) to the runner, which is how S3 invokes Lambda.
//!
//! A message is deleted only once the run for it ended (succeeded, or any outcome the handler answered): a
//! stack killed mid-run leaves it on the queue, and the next process receives it again once its visibility
//! lapses. While the run lasts its visibility is extended (no second delivery of a live run). When the
//! invocation errors the message is left for redelivery after a short delay, as Lambda retries an
//! asynchronous invocation twice; after the third failed attempt it goes to the dead-letter queue. Each
//! message runs on its own task: runs stay concurrent.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde_json::Value;
use tracing::{debug, warn};

use super::lambda::Runner;

/// How long a received message stays invisible; extended every third of it while its run lasts. Short, so a
/// message whose run died with the process comes back soon.
pub const VISIBILITY: Duration = Duration::from_secs(10);
/// Delay before the redelivery after a failed attempt (Lambda waits 1 then 2 minutes; shortened locally).
const RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(5)];

pub async fn run(sqs: aws_sdk_sqs::Client, queue_url: String, runner: Arc<Runner>) {
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(secs(VISIBILITY))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
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
            let delivery = Delivery {
                sqs: sqs.clone(),
                queue_url: queue_url.clone(),
                receipt: m.receipt_handle.clone().unwrap_or_default(),
            };
            tokio::spawn(handle(delivery, runner.clone(), m));
        }
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// One received message's handle on the queue.
struct Delivery {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    receipt: String,
}

impl Delivery {
    async fn delete(&self) {
        if let Err(e) = self
            .sqs
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(&self.receipt)
            .send()
            .await
        {
            // The event may be delivered twice then: the runner is idempotent per export.
            warn!(error = %e, "could not delete a cohort event from the queue");
        }
    }

    /// Makes the message visible again in `d` (from now).
    async fn visible_in(&self, d: Duration) {
        if let Err(e) = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(&self.receipt)
            .visibility_timeout(secs(d))
            .send()
            .await
        {
            warn!(error = %e, "could not change a cohort event's visibility");
        }
    }
}

fn receive_count(m: &Message) -> usize {
    m.attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

async fn handle(delivery: Delivery, runner: Arc<Runner>, m: Message) {
    let body = m.body.as_deref().unwrap_or_default();
    let event = match serde_json::from_str::<Value>(body) {
        Ok(event) => event,
        // Not an S3 event: nothing could ever process it, so it is dropped (logged), not redelivered.
        Err(e) => {
            warn!(error = %e, "message on the cohort events queue is not JSON; dropped");
            delivery.delete().await;
            return;
        }
    };
    debug!("S3 event delivered to the sync-runner");
    let run = runner.invoke_tracked(event.clone());
    tokio::pin!(run);
    let mut beat = tokio::time::interval(VISIBILITY / 3);
    beat.tick().await; // the first tick is immediate: the receive just set the visibility
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = beat.tick() => delivery.visible_in(VISIBILITY).await,
        }
    };
    let attempt = receive_count(&m);
    match (after(result.is_ok(), attempt), result) {
        (After::Delete, _) => delivery.delete().await,
        (After::RetryIn(delay), r) => {
            let error = r.err().unwrap_or_default();
            warn!(attempt, %error, "sync-runner invocation for an S3 event failed; redelivered");
            delivery.visible_in(delay).await;
        }
        (After::DeadLetter, r) => {
            let error = r.err().unwrap_or_default();
            runner.dead_letter("s3", &event, &error, attempt).await;
            delivery.delete().await;
        }
    }
}

/// What becomes of a message once its run ended.
#[derive(Debug, PartialEq, Eq)]
enum After {
    Delete,
    /// Left on the queue, visible again after the delay.
    RetryIn(Duration),
    /// Sent to the dead-letter queue, then deleted.
    DeadLetter,
}

/// `attempt`: the message's receive count (1 = first delivery).
fn after(succeeded: bool, attempt: usize) -> After {
    if succeeded {
        return After::Delete;
    }
    match RETRY_DELAYS.get(attempt.saturating_sub(1)) {
        Some(delay) => After::RetryIn(*delay),
        None => After::DeadLetter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_is_redelivered_twice_then_dead_lettered() {
        assert_eq!(after(true, 1), After::Delete);
        assert_eq!(after(true, 7), After::Delete);
        assert_eq!(after(false, 1), After::RetryIn(RETRY_DELAYS[0]));
        assert_eq!(after(false, 2), After::RetryIn(RETRY_DELAYS[1]));
        assert_eq!(after(false, 3), After::DeadLetter);
        // A count SQS did not give is read as the first delivery.
        assert_eq!(after(false, 0), After::RetryIn(RETRY_DELAYS[0]));
    }
}

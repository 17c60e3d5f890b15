//! `Invoker` on Lambda's `Invoke` API, asynchronous (`InvocationType::Event`): Lambda queues the event and
//! answers 202; failures after that go to the function's on-failure destination (the template's DLQ).

use async_trait::async_trait;
use audience_core::ports::{Invoker, PortError};
use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;

use crate::error::unavailable;

const SERVICE: &str = "Lambda";

#[derive(Clone, Debug)]
pub struct LambdaInvoker {
    client: Client,
    function: String,
}

impl LambdaInvoker {
    /// `function`: the sync-runner's name or ARN.
    pub fn new(client: Client, function: impl Into<String>) -> LambdaInvoker {
        LambdaInvoker {
            client,
            function: function.into(),
        }
    }
}

#[async_trait]
impl Invoker for LambdaInvoker {
    async fn invoke_async(&self, payload: &serde_json::Value) -> Result<(), PortError> {
        let body = serde_json::to_vec(payload).map_err(|e| PortError::Invalid(e.to_string()))?;
        let out = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(body))
            .send()
            .await
            .map_err(|e| unavailable(SERVICE, e))?;
        if out.status_code != 202 {
            return Err(PortError::Unavailable {
                service: SERVICE,
                message: format!(
                    "asynchronous invoke answered status {} (expected 202)",
                    out.status_code
                ),
            });
        }
        Ok(())
    }
}

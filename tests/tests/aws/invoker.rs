use audience_aws::LambdaInvoker;
use audience_core::ports::{Invoker, PortError};
use audience_sync_tests::{RecordingServer, sdk_config_for};

// moto cannot run a function, so the Invoke API is served by a recorder: what matters is the request as sent.
#[tokio::test]
async fn async_invoke_request_as_sent() {
    let server = RecordingServer::start(202, "").expect("recorder");
    let lambda = aws_sdk_lambda::Client::new(&sdk_config_for(&server.endpoint).await);
    let invoker = LambdaInvoker::new(lambda, "audience-sync-runner");
    let payload = serde_json::json!({"trigger": "manual", "project_id": "proj-1", "sync_id": "01J0000000000000000000000A"});
    invoker.invoke_async(&payload).await.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.path,
        "/2015-03-31/functions/audience-sync-runner/invocations"
    );
    assert_eq!(r.header("x-amz-invocation-type"), Some("Event"));
    assert!(
        r.header("authorization")
            .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256"))
    );
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body, payload);
}

#[tokio::test]
async fn a_failed_invoke_is_an_error() {
    let server =
        RecordingServer::start(500, r#"{"Type":"Service","message":"boom"}"#).expect("recorder");
    let lambda = aws_sdk_lambda::Client::new(&sdk_config_for(&server.endpoint).await);
    let invoker = LambdaInvoker::new(lambda, "audience-sync-runner");
    let err = invoker
        .invoke_async(&serde_json::json!({"trigger": "manual"}))
        .await
        .unwrap_err();
    assert!(matches!(err, PortError::Unavailable { .. }), "{err}");
}

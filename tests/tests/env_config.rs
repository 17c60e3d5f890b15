//! Functions build everything from the environment: `Adapters::from_env` with the SDK's endpoint variables
//! (`AWS_ENDPOINT_URL`, and `AWS_ENDPOINT_URL_LAMBDA` overriding it for one service). Its own test binary:
//! it sets process environment variables, which must not race with other tests.

use audience_aws::{Adapters, provision};
use audience_core::ports::{Invoker, StateStore};
use audience_sync_tests::{RecordingServer, clients, moto_endpoint, unique_name};

#[tokio::test]
async fn adapters_from_env_use_the_sdk_endpoint_variables() {
    let moto = moto_endpoint().to_string();
    let lambda = RecordingServer::start(202, "").expect("recorder");
    let table = unique_name("tbl");
    let bucket = unique_name("bkt");
    let c = clients().await;
    provision::create_table(&c.dynamodb, &table).await.unwrap();
    provision::create_bucket(&c.s3, &bucket).await.unwrap();
    let vars = [
        ("AWS_ENDPOINT_URL", moto.as_str()),
        ("AWS_ENDPOINT_URL_LAMBDA", lambda.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("TABLE_NAME", table.as_str()),
        ("BUCKET_NAME", bucket.as_str()),
        (
            "SYNC_RUNNER_ARN",
            "arn:aws:lambda:us-east-1:123456789012:function:sync-runner",
        ),
    ];
    for (k, v) in vars {
        // SAFETY: the only test of this binary, and the harness has already read AWS_ENDPOINT_URL; nothing
        // else reads the environment concurrently.
        unsafe { std::env::set_var(k, v) };
    }
    let adapters = Adapters::from_env().await.expect("adapters");
    // DynamoDB through AWS_ENDPOINT_URL (moto): the table exists there.
    assert!(
        adapters
            .state
            .get_integration("p1")
            .await
            .unwrap()
            .is_none()
    );
    adapters
        .state
        .record_connection("p1", &[], &[30, 31], chrono::Utc::now())
        .await
        .unwrap();
    assert!(
        adapters
            .state
            .get_integration("p1")
            .await
            .unwrap()
            .is_some()
    );
    // Lambda through its own variable.
    let invoker = adapters.invoker.expect("invoker configured");
    invoker
        .invoke_async(
            &serde_json::json!({"trigger": "manual", "project_id": "p1", "sync_id": "S1"}),
        )
        .await
        .unwrap();
    let reqs = lambda.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].path,
        "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Async-runner/invocations"
    );
}

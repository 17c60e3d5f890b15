//! The app-wide limiter wired into the TikTok client's hook: three clients (three "runners") with no
//! in-process limit to speak of, against the sandbox that enforces TikTok's per-app rate in every sliding
//! second. The sandbox's own request log is the judge.

use std::sync::Arc;

use audience_aws::DynamoRateGate;
use audience_sync_tests::{TestEnv, unique_name};
use audience_tiktok::{AccessToken, ClientConfig, TikTokClient};
use tiktok_sandbox::{Sandbox, SandboxOptions};

#[tokio::test]
async fn tiktok_clients_sharing_the_dynamodb_gate_stay_under_the_sandbox_rate() {
    let env = TestEnv::new().await.expect("env");
    let sandbox = Sandbox::start(SandboxOptions {
        qps: 10,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    let app = unique_name("app");
    let per_client = 8;
    let mut handles = Vec::new();
    for _ in 0..3 {
        let gate = DynamoRateGate::new(env.clients.dynamodb.clone(), env.table.clone(), &app, 10.0);
        let client = TikTokClient::new(ClientConfig {
            host: sandbox.base_url.clone(),
            rate_per_second: 1000.0,
            rate_gate: Some(Arc::new(gate)),
            ..ClientConfig::default()
        })
        .expect("client");
        handles.push(tokio::spawn(async move {
            let token = AccessToken::new("not-a-real-token");
            for _ in 0..per_client {
                // The answer (an auth error) does not matter: every request counts against the app's rate.
                let _ = client.user_info(&token).await;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let log = sandbox.requests();
    assert!(log.len() >= 3 * per_client, "{} requests logged", log.len());
    let limited = log.iter().filter(|e| e.code == Some(40100)).count();
    assert_eq!(limited, 0, "the sandbox rate-limited {limited} requests");
    let mut ts: Vec<u64> = log.iter().map(|e| e.ts_ms).collect();
    ts.sort();
    let mut max = 0;
    let mut j = 0;
    for i in 0..ts.len() {
        while j < ts.len() && ts[j] < ts[i] + 1000 {
            j += 1;
        }
        max = max.max(j - i);
    }
    eprintln!(
        "TikTok sandbox saw {} requests, at most {max} in any sliding second",
        ts.len()
    );
    assert!(max <= 10, "{max} requests in one second");
}

//! The webhook notifier on moto's Secrets Manager and a local HTTP receiver: the URL comes from the secret
//! (plain or `{"url": ...}`), no secret / no value / empty = nothing sent, a slow or failing receiver costs
//! at most the timeout and never an error.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audience_aws::notify::{WEBHOOK_TIMEOUT, WebhookNotifier};
use audience_core::model::{ChangeCounts, RunState};
use audience_core::notify::{Notice, NoticeKind};
use audience_core::ports::Notifier;
use audience_sync_tests::{TestEnv, unique_name};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

type Got = Arc<Mutex<Vec<Value>>>;

/// A receiver on a free port: `/ok` keeps the body, `/slow` answers after 30 s, `/fail` answers 500.
async fn receiver() -> (String, Got) {
    let got: Got = Arc::default();
    async fn ok(State(g): State<Got>, body: axum::Json<Value>) -> StatusCode {
        g.lock().unwrap().push(body.0);
        StatusCode::OK
    }
    async fn slow() -> StatusCode {
        tokio::time::sleep(Duration::from_secs(30)).await;
        StatusCode::OK
    }
    async fn fail() -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
    let app = Router::new()
        .route("/ok", post(ok))
        .route("/slow", post(slow))
        .route("/fail", post(fail))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), got)
}

fn notice() -> Notice {
    Notice {
        kind: NoticeKind::RunFailed,
        project_id: "p1".into(),
        sync_id: "01SYNC".into(),
        cohort_id: "coh1".into(),
        run_id: "01RUN".into(),
        state: RunState::Failed,
        reason: Some("TikTok answered 50000".into()),
        adds: ChangeCounts {
            planned: 10,
            applied: 4,
            held: 0,
            deferred: 6,
        },
        removes: ChangeCounts::default(),
        consecutive_holds: 0,
    }
}

async fn secret(env: &TestEnv, value: Option<&str>) -> String {
    let name = unique_name("notify");
    let mut req = env.clients.secrets.create_secret().name(&name);
    if let Some(v) = value {
        req = req.secret_string(v);
    }
    req.send().await.expect("create secret");
    name
}

#[tokio::test]
async fn posts_the_notice_to_the_url_in_the_secret() {
    let env = TestEnv::new().await.expect("env");
    let (base, got) = receiver().await;
    let plain = secret(&env, Some(&format!("{base}/ok"))).await;
    let n = WebhookNotifier::new(env.clients.secrets.clone(), plain.clone());
    n.notify(&notice()).await;
    let json_form = secret(&env, Some(&format!(r#"{{"url": "{base}/ok"}}"#))).await;
    WebhookNotifier::new(env.clients.secrets.clone(), json_form)
        .notify(&notice())
        .await;
    let bodies = got.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    let b = &bodies[0];
    assert_eq!(b["event"], "run_failed");
    assert_eq!(b["project_id"], "p1");
    assert_eq!(b["sync_id"], "01SYNC");
    assert_eq!(b["run_id"], "01RUN");
    assert_eq!(b["state"], "failed");
    assert_eq!(b["adds"]["applied"], 4);
    let text = b["text"].as_str().unwrap();
    assert!(
        text.contains("run failed") && text.contains("01RUN") && text.contains("50000"),
        "{text}"
    );
    // Cached: a changed secret is read again only after the cache time.
    got.lock().unwrap().clear();
    env.clients
        .secrets
        .put_secret_value()
        .secret_id(&plain)
        .secret_string(r#"{"url": ""}"#)
        .send()
        .await
        .unwrap();
    n.notify(&notice()).await;
    assert_eq!(got.lock().unwrap().len(), 1, "the cached URL is still used");
}

#[tokio::test]
async fn off_without_secret_value_or_url_and_never_slow_or_failing() {
    let env = TestEnv::new().await.expect("env");
    let (base, got) = receiver().await;
    for id in [
        unique_name("missing"),
        secret(&env, None).await,
        secret(&env, Some("")).await,
        secret(&env, Some(r#"{"url": ""}"#)).await,
    ] {
        WebhookNotifier::new(env.clients.secrets.clone(), id)
            .notify(&notice())
            .await;
    }
    assert!(got.lock().unwrap().is_empty());
    // Refused and slow receivers: no error, and no longer than the timeout.
    for path in ["/fail", "/slow"] {
        let id = secret(&env, Some(&format!("{base}{path}"))).await;
        let n = WebhookNotifier::new(env.clients.secrets.clone(), id);
        let started = Instant::now();
        n.notify(&notice()).await;
        assert!(
            started.elapsed() < WEBHOOK_TIMEOUT + Duration::from_secs(2),
            "{path}"
        );
    }
    // A URL put in later is used once the cache expires.
    let id = secret(&env, Some("")).await;
    let n = WebhookNotifier::new(env.clients.secrets.clone(), id.clone())
        .with_cache(Duration::from_millis(200));
    n.notify(&notice()).await;
    env.clients
        .secrets
        .put_secret_value()
        .secret_id(&id)
        .secret_string(format!("{base}/ok"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    n.notify(&notice()).await;
    assert_eq!(got.lock().unwrap().len(), 1);
}

//! `--notification-webhook`: the local stack stores the URL in the secret the runner reads (as the template's
//! `FailureNotifications=on`), and a failed run is POSTed there as Slack-compatible JSON.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

use crate::support;

type Got = Arc<Mutex<Vec<Value>>>;

async fn receiver() -> (String, Got) {
    let got: Got = Arc::default();
    async fn keep(State(g): State<Got>, body: axum::Json<Value>) -> StatusCode {
        g.lock().unwrap_or_else(|p| p.into_inner()).push(body.0);
        StatusCode::OK
    }
    let app = Router::new()
        .route("/hook", post(keep))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test]
async fn a_failed_run_is_posted_to_the_local_webhook() {
    let (url, got) = receiver().await;
    let st = support::start(&["--notification-webhook", &url]).await;
    let p = support::project();
    let cohort = support::cohort();
    let sid = st.connected_on_upload_sync(&p, &cohort).await;
    // Rows, but no usable e-mail: the no_usable_identifiers guard fails the run.
    let body = (0..50).fold(String::from("email\n"), |b, i| b + &format!("user{i}\n"));
    let key =
        st.c.upload(
            &format!("{cohort}_2026-11-20T10:00_existing.csv"),
            body.into_bytes(),
        )
        .await
        .expect("upload");
    let run = st.run_of(&p, &sid, &key).await;
    assert_eq!(run["state"], "failed", "{run}");
    let mut notices = Vec::new();
    for _ in 0..80 {
        notices = got.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !notices.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(notices.len(), 1, "{notices:?}");
    let n = &notices[0];
    assert_eq!(n["event"], "run_failed");
    assert_eq!(
        (n["sync_id"].clone(), n["run_id"].clone()),
        (json!(sid), run["run_id"].clone())
    );
    assert!(
        n["text"].as_str().is_some_and(|t| t.contains(&cohort)),
        "{n}"
    );
    assert!(
        n["reason"]
            .as_str()
            .is_some_and(|r| r.contains("usable identifier")),
        "{n}"
    );
}

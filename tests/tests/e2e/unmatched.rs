//! Objects that reach the bucket and start nothing are listed by `GET /v1/unmatched-exports`: a misnamed file
//! and an export of a cohort no sync reads, by key, size and reason (never their contents).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support;

async fn unmatched(st: &support::Stack) -> Vec<Value> {
    let v = st.c.get("/v1/unmatched-exports").await.expect("unmatched");
    v["unmatched_exports"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn misnamed_and_unsynced_exports_are_listed() {
    let st = support::start(&[]).await;
    let cohort = support::cohort();
    // A file named after the cohort but without Amplitude's timestamp and difftype.
    let misnamed =
        st.c.upload(&format!("{cohort}.csv"), b"email\na@example.com\n".to_vec())
            .await
            .expect("upload");
    let unsynced =
        st.c.upload(
            &format!("{cohort}_2026-11-20T10:00_existing.csv"),
            b"email\nb@example.com\nc@example.com\n".to_vec(),
        )
        .await
        .expect("upload");
    let started = Instant::now();
    let list = loop {
        let list = unmatched(&st).await;
        let keys: Vec<&str> = list.iter().filter_map(|u| u["key"].as_str()).collect();
        if keys.contains(&misnamed.as_str()) && keys.contains(&unsynced.as_str()) {
            break list;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not listed: {list:?}; log: {}",
            support::log_tail(&st.log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let find = |k: &str| {
        list.iter()
            .find(|u| u["key"] == k)
            .cloned()
            .expect("listed")
    };
    let m = find(&misnamed);
    assert_eq!(m["reason"], "no_timestamp", "{m}");
    assert_eq!(m["size"], 20);
    assert_eq!(m["cohort_id"], Value::Null);
    let u = find(&unsynced);
    assert_eq!(u["reason"], "no_sync", "{u}");
    assert_eq!(u["cohort_id"], cohort.as_str());
    assert_eq!(u["size"], 34);
    // Newest first; contents never stored.
    let times: Vec<&str> = list.iter().filter_map(|u| u["seen_at"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert!(!list.iter().any(|u| u.to_string().contains("example.com")));
    // Unauthorized without the admin token.
    let anon =
        st.c.api_with_token(
            reqwest::Method::GET,
            "/v1/unmatched-exports",
            None,
            Some("wrong"),
        )
        .await
        .expect("call");
    assert_eq!(anon.status, 401);
}

//! S3 events that start nothing are kept as unmatched exports (key, size, why), once per key.

use super::*;

fn s3_event(key: &str, size: u64) -> serde_json::Value {
    serde_json::json!({"Records": [{
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "b"}, "object": {"key": key, "size": size}}
    }]})
}

#[tokio::test]
async fn misnamed_and_unsynced_exports_are_recorded_once_per_key() {
    let (t, _) = world(WriteMode::CustomerFile).await;
    let now = t.clock.now();
    t.run(s3_event("cohorts/report.csv", 12)).await;
    t.advance(60);
    t.run(s3_event("cohorts/other_2026-11-20T01:00_existing.csv", 345))
        .await;
    // An entering file and a synced cohort's export are normal: not unmatched.
    t.run(s3_event("cohorts/other_2026-11-20T01:00_entering.csv", 1))
        .await;
    let k = t.upload(1, 0..20);
    t.run(s3_event(&k, 9)).await;
    let list = t
        .state
        .list_unmatched_exports(t.clock.now(), 100)
        .await
        .unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0].key, "cohorts/other_2026-11-20T01:00_existing.csv");
    assert_eq!(list[0].reason, "no_sync");
    assert_eq!(list[0].cohort_id.as_deref(), Some("other"));
    assert_eq!(list[0].size, Some(345));
    assert_eq!(list[1].key, "cohorts/report.csv");
    assert_eq!(list[1].reason, "no_timestamp");
    assert_eq!(list[1].cohort_id, None);
    assert!(list[1].message.contains("naming"), "{}", list[1].message);
    assert_eq!(list[1].seen_at, now);
    // A repeat replaces its record (newer time, same single item).
    t.advance(60);
    t.run(s3_event("cohorts/report.csv", 13)).await;
    let list = t
        .state
        .list_unmatched_exports(t.clock.now(), 100)
        .await
        .unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0].key.as_str(), list[0].size),
        ("cohorts/report.csv", Some(13))
    );
    // Limited, and forgotten after the retention.
    let one = t
        .state
        .list_unmatched_exports(t.clock.now(), 1)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    let later = t.clock.now() + chrono::Duration::days(31);
    assert!(
        t.state
            .list_unmatched_exports(later, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

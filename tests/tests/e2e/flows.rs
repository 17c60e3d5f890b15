//! The whole flow, a delta with removals, and a preview.

use std::time::Duration;

use audience_sync_tests::local::exports::{Dirt, amplitude_export, users};
use chrono::{TimeZone, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{self, assert_ledger_matches};

/// Connect → mapping → on_upload sync → a dirty export → the audience equals the cohort; the next export (gzip,
/// churn) sends exactly the delta, removals included. Both runs are started by the S3 events.
#[tokio::test]
async fn whole_flow_then_a_delta_with_removals() {
    // Processing off: the delta an hour later sends APPEND and REMOVE in one run, inside TikTok's 6 h
    // window (engine v1; issue 12 plans one edit per processing window).
    let st = support::start(&["--tiktok-rules", support::NO_PROCESSING]).await;
    let p = support::project();
    let cohort = support::cohort();
    st.connect_with_email(&p).await;
    let integration = st.integration(&p).await;
    assert_eq!(integration["status"], "connected");
    assert_eq!(
        integration["advertisers"].as_array().map(|a| a
            .iter()
            .map(|x| x["advertiser_id"].clone())
            .collect::<Vec<_>>()),
        Some(st.c.ready.advertiser_ids.iter().map(|a| json!(a)).collect())
    );
    let sync = st
        .create_sync(
            &p,
            json!({"cohort_id": cohort, "advertiser_id": st.advertiser(), "cadence": "on_upload"}),
        )
        .await;
    let sid = sync["sync_id"].as_str().expect("sync_id").to_string();
    assert_eq!(sync["write_mode"], "customer_file");

    let t0 = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
    let first = amplitude_export(&cohort, t0, &users(0..1_300), Dirt::USUAL, false);
    let k1 = st.upload(&first).await;
    let r1 = st.run_of(&p, &sid, &k1).await;
    assert_eq!(r1["state"], "succeeded", "{r1}");
    assert_eq!(r1["trigger"], "upload");
    assert_ledger_matches(&r1, &first);
    assert_eq!(r1["adds"]["applied"], json!(first.expected.len()));
    assert_eq!(r1["removes"]["planned"], json!(0));
    st.assert_audience_is(&p, &sid, &first).await;

    let second = amplitude_export(
        &cohort,
        t0 + chrono::Duration::hours(1),
        &users(100..1_450),
        Dirt::USUAL,
        true,
    );
    // The same file under a name no sync picks up, previewed against the sync: its run then does exactly
    // what the preview said.
    let name = if second.file_name.ends_with(".gz") {
        "candidate.csv.gz"
    } else {
        "candidate.csv"
    };
    let candidate =
        st.c.upload(name, second.bytes.clone())
            .await
            .expect("upload");
    let pv = preview(&st, &p, json!({"s3_key": candidate, "sync_id": sid})).await;
    assert_eq!(pv["state"], "done", "{pv}");
    let plan = &pv["report"];
    assert_eq!(plan["verdict"]["outcome"], "would_apply", "{plan}");
    assert_eq!(
        plan["against"]["committed_digests"],
        json!(first.expected.len())
    );
    assert_eq!(plan["against"]["audience_exists"], json!(true));

    let k2 = st.upload(&second).await;
    let r2 = st.run_of(&p, &sid, &k2).await;
    assert_eq!(r2["state"], "succeeded", "{r2}");
    assert_eq!(r2["trigger"], "upload");
    assert_ledger_matches(&r2, &second);
    let adds = second.expected.difference(&first.expected).count();
    let removes = first.expected.difference(&second.expected).count();
    assert_eq!((adds, removes), (150, 100), "the generator's churn");
    assert_eq!(r2["adds"]["planned"], json!(adds), "{r2}");
    assert_eq!(r2["adds"]["applied"], json!(adds), "{r2}");
    assert_eq!(r2["removes"]["applied"], json!(removes), "{r2}");
    assert_eq!(
        plan["adds"], r2["adds"]["planned"],
        "preview {plan} vs run {r2}"
    );
    assert_eq!(
        plan["removes"], r2["removes"]["planned"],
        "preview {plan} vs run {r2}"
    );
    st.assert_audience_is(&p, &sid, &second).await;

    // The sync tells the same story.
    let s = st.sync(&p, &sid).await;
    assert_eq!(s["last_run"]["run_id"], r2["run_id"]);
    assert_eq!(s["state"], "active");
    // Runs print their metrics (EMF) on the functions' stdout; the stack's stdout stays the ready line alone.
    assert_eq!(st.stdout_after_ready(), Vec::<String>::new());

    // Every log line the stack wrote (all functions, the dispatcher, the scheduler) is free of the cohort's
    // raw identifiers and of the admin token (the ready line, on stdout, is the one place it appears).
    let log = std::fs::read_to_string(&st.log)
        .expect("stack log")
        .to_lowercase();
    assert!(
        log.contains("sync run"),
        "the run log lines are in the stack log"
    );
    let leaked = users(0..1_450)
        .iter()
        .filter(|u| log.contains(u.as_str()))
        .count();
    assert_eq!(leaked, 0, "raw identifiers in the stack log");
    assert!(
        !log.contains(&st.c.ready.admin_token.to_lowercase()),
        "admin token in the stack log"
    );
}

/// A preview of an export, started through the API and computed by the runner, counts every row.
#[tokio::test]
async fn preview_of_an_export() {
    let st = support::start(&[]).await;
    let p = support::project();
    let cohort = support::cohort();
    st.connect_with_email(&p).await;
    let e = amplitude_export(
        &cohort,
        Utc.with_ymd_and_hms(2026, 11, 21, 8, 0, 0).unwrap(),
        &users(0..700),
        Dirt::USUAL,
        true,
    );
    let key = st.upload(&e).await;
    let preview = preview(&st, &p, json!({"s3_key": key})).await;
    assert_eq!(preview["state"], "done", "{preview}");
    let report = &preview["report"];
    assert_eq!(report["rows"], json!(e.rows), "{report}");
    assert_eq!(report["valid"], json!(e.valid), "{report}");
    assert_eq!(report["unique"], json!(e.expected.len()), "{report}");
    assert_eq!(report["duplicates"], json!(e.duplicates()), "{report}");
    assert_eq!(report["cohort_id"], json!(cohort), "{report}");
    assert_eq!(report["meets_tiktok_minimum"], json!(false), "{report}");
    // A preview sends nothing to TikTok.
    let audiences =
        st.c.audiences_of(&st.advertiser())
            .await
            .expect("audiences");
    assert!(audiences.is_empty(), "{audiences:?}");
}

/// Starts a preview through the API and waits for the runner to finish it.
async fn preview(st: &support::Stack, p: &str, body: Value) -> Value {
    let started =
        st.c.api(
            Method::POST,
            &format!("/v1/projects/{p}/previews"),
            Some(body),
        )
        .await
        .expect("preview")
        .expect(202)
        .expect("202");
    let id = started["preview_id"]
        .as_str()
        .expect("preview_id")
        .to_string();
    let mut preview = Value::Null;
    for _ in 0..240 {
        preview =
            st.c.get(&format!("/v1/projects/{p}/previews/{id}"))
                .await
                .expect("get preview");
        if preview["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    preview
}

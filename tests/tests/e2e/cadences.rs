//! Each cadence's trigger path: `one_time` on an upload after creation and on an existing export at creation,
//! `hourly` from its schedule under `--time-scale`. (`on_upload` on two exports: `flows.rs`.)

use std::time::Duration;

use audience_sync_tests::local::exports::{Dirt, amplitude_export, users};
use chrono::{TimeZone, Utc};
use serde_json::json;

use crate::support;

/// Created before any export: the next upload runs it, it completes, and a later upload records no run.
#[tokio::test]
async fn one_time_runs_on_the_next_upload_then_completes() {
    let st = support::start(&[]).await;
    let p = support::project();
    let cohort = support::cohort();
    st.connect_with_email(&p).await;
    let once = st
        .create_sync(
            &p,
            json!({"cohort_id": cohort, "advertiser_id": st.c.ready.advertiser_ids[0], "cadence": "one_time"}),
        )
        .await;
    let once_id = once["sync_id"].as_str().expect("sync_id").to_string();
    // A second sync of the same cohort on the other advertiser: its runs show when an upload has been handled.
    let witness = st
        .create_sync(
            &p,
            json!({"cohort_id": cohort, "advertiser_id": st.c.ready.advertiser_ids[1], "cadence": "on_upload"}),
        )
        .await;
    let witness_id = witness["sync_id"].as_str().expect("sync_id").to_string();
    assert!(st.c.runs(&p, &once_id).await.expect("runs").is_empty());

    let t0 = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    let first = amplitude_export(&cohort, t0, &users(0..1_100), Dirt::NONE, false);
    let k1 = st.upload(&first).await;
    let r1 = st.run_of(&p, &once_id, &k1).await;
    assert_eq!(r1["state"], "succeeded", "{r1}");
    assert_eq!(r1["trigger"], "upload");
    st.assert_audience_is(&p, &once_id, &first).await;
    assert_eq!(st.sync(&p, &once_id).await["state"], "completed");

    let second = amplitude_export(
        &cohort,
        t0 + chrono::Duration::hours(1),
        &users(0..1_200),
        Dirt::NONE,
        false,
    );
    let k2 = st.upload(&second).await;
    st.run_of(&p, &witness_id, &k2).await;
    // The upload has been handled (the witness ran on it); give the one_time sync's handling of the same event
    // a moment more, then it must still have exactly its one run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = st.c.runs(&p, &once_id).await.expect("runs");
    assert_eq!(
        runs.len(),
        1,
        "a completed one_time sync records no run: {runs:?}"
    );
    st.assert_audience_is(&p, &once_id, &first).await;
}

/// Created when an export exists: the API invokes the runner (through Lambda's Invoke API) at creation.
#[tokio::test]
async fn one_time_runs_on_an_existing_export_at_creation() {
    let st = support::start(&[]).await;
    let p = support::project();
    let cohort = support::cohort();
    st.connect_with_email(&p).await;
    let e = amplitude_export(
        &cohort,
        Utc.with_ymd_and_hms(2026, 11, 22, 11, 0, 0).unwrap(),
        &users(0..1_050),
        Dirt::USUAL,
        false,
    );
    let key = st.upload(&e).await;
    // The upload's event finds no sync (nothing to do); the export waits in the bucket.
    let sync = st
        .create_sync(
            &p,
            json!({"cohort_id": cohort, "advertiser_id": st.advertiser(), "cadence": "one_time"}),
        )
        .await;
    let sid = sync["sync_id"].as_str().expect("sync_id").to_string();
    let run = st.run_of(&p, &sid, &key).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "manual", "{run}");
    support::assert_ledger_matches(&run, &e);
    st.assert_audience_is(&p, &sid, &e).await;
    assert_eq!(st.sync(&p, &sid).await["state"], "completed");
}

/// An hourly sync: the first upload runs it (no run has used an export yet); a later upload waits for the
/// schedule, which fires (an hour every 4 s here) with the schedule's input and syncs the newest export.
#[tokio::test]
async fn hourly_runs_from_its_schedule() {
    // Processing off: the hourly run an hour after the first sends APPEND and REMOVE in one run, inside
    // TikTok's 6 h window (engine v1; issue 12 plans one edit per processing window).
    let st = support::start(&[
        "--time-scale",
        "900",
        "--tiktok-rules",
        support::NO_PROCESSING,
    ])
    .await;
    let p = support::project();
    let cohort = support::cohort();
    st.connect_with_email(&p).await;
    let sync = st
        .create_sync(
            &p,
            json!({"cohort_id": cohort, "advertiser_id": st.advertiser(), "cadence": "hourly"}),
        )
        .await;
    let sid = sync["sync_id"].as_str().expect("sync_id").to_string();
    assert!(
        sync["warnings"].as_array().is_some_and(|w| !w.is_empty()),
        "an hourly customer_file sync warns about TikTok's 24 calls a day: {sync}"
    );

    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
    let first = amplitude_export(&cohort, t0, &users(0..1_100), Dirt::NONE, false);
    let k1 = st.upload(&first).await;
    let r1 = st.run_of(&p, &sid, &k1).await;
    // Normally the upload's run; the schedule may get there first on a loaded machine (both are correct).
    assert!(
        r1["trigger"] == "upload" || r1["trigger"] == "schedule",
        "{r1}"
    );
    assert_eq!(r1["state"], "succeeded", "{r1}");

    let second = amplitude_export(
        &cohort,
        t0 + chrono::Duration::hours(1),
        &users(50..1_200),
        Dirt::NONE,
        true,
    );
    let k2 = st.upload(&second).await;
    let r2 =
        st.c.wait_for_run(&p, &sid, Duration::from_secs(120), |r| {
            r["source_export"] == json!(k2) && r["state"] == "succeeded"
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", support::log_tail(&st.log)));
    assert_eq!(
        r2["trigger"], "schedule",
        "only the schedule runs an hourly sync after its first export: {r2}"
    );
    assert_eq!(r2["adds"]["applied"], json!(100));
    assert_eq!(r2["removes"]["applied"], json!(50));
    st.assert_audience_is(&p, &sid, &second).await;
    // No run of this sync was started by the second upload.
    let runs = st.c.runs(&p, &sid).await.expect("runs");
    assert!(
        runs.iter()
            .filter(|r| r["source_export"] == json!(k2))
            .all(|r| r["trigger"] == "schedule"),
        "{runs:?}"
    );
}

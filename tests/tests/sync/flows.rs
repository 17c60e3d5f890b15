//! Issue 5's flows: first sync, delta, no change, both write modes, every cadence's trigger path.

use audience_core::model::{Cadence, RunState, SyncState, WriteMode};
use audience_core::sync::engine::Outcome;
use audience_core::sync::ledger::reconcile;
use serde_json::json;

use crate::fixture::{World, assert_same, digests, emails, no_processing, streaming_ready_at_once};

fn run_state(o: &[Outcome]) -> Vec<RunState> {
    o.iter()
        .filter_map(|o| match o {
            Outcome::Run { state, .. } => Some(*state),
            _ => None,
        })
        .collect()
}

async fn check_audience(w: &World, sync_id: &str, cohort: &[String]) {
    let sync = w.sync(sync_id).await;
    let aid = sync
        .progress
        .tiktok_audience_id
        .clone()
        .expect("audience id");
    assert_same(
        &w.members(&aid).await,
        &digests(cohort),
        "audience equals the cohort",
    );
    for run in w.runs(sync_id).await {
        reconcile(&run).unwrap_or_else(|e| panic!("ledger {}: {e}", run.run_id));
    }
}

async fn first_delta_nochange(mode: WriteMode) {
    // One TikTok rule off per mode, each for engine v1 (see the fixture): the delta run sends APPEND and
    // REMOVE to a customer-file audience in one run; the first streaming run maps right after creating.
    let w = World::with_rules(match mode {
        WriteMode::CustomerFile => no_processing(),
        WriteMode::Streaming => streaming_ready_at_once(),
    })
    .await;
    let cohort = format!("c{}", ulid::Ulid::new().to_string().to_lowercase());
    let sync = w.create_sync(&cohort, Cadence::OnUpload, mode).await;

    // first sync, with dirt: duplicates (case), an invalid value, an empty one
    let mut first = emails(0..1500);
    first.extend(emails(0..20).into_iter().map(|e| e.to_uppercase()));
    first.push("not-an-email".into());
    first.push(String::new());
    let k1 = w.upload(&cohort, "2026-11-20T10:00", &first).await;
    let out = w.handle(w.s3_event(&k1)).await;
    assert_eq!(run_state(&out), vec![RunState::Succeeded], "{out:?}");
    check_audience(&w, &sync.sync_id, &first).await;
    let run = w
        .sync(&sync.sync_id)
        .await
        .progress
        .last_run
        .expect("last run");
    assert_eq!(
        (run.rows, run.valid, run.unique, run.duplicates),
        (1522, 1520, 1500, 20)
    );
    assert_eq!(run.skipped.get("invalid_email"), Some(&1));
    assert_eq!(run.skipped.get("empty"), Some(&1));
    assert_eq!(run.adds.planned, 1500);
    assert_eq!(run.adds.applied, 1500);
    assert!(run.tiktok_calls > 0 && !run.tiktok_request_ids.is_empty());

    // delta: 100 leave, 200 join
    let second = emails(100..1700);
    let k2 = w.upload(&cohort, "2026-11-21T10:00", &second).await;
    let out = w.handle(w.s3_event(&k2)).await;
    assert_eq!(run_state(&out), vec![RunState::Succeeded], "{out:?}");
    check_audience(&w, &sync.sync_id, &second).await;
    let run = w
        .sync(&sync.sync_id)
        .await
        .progress
        .last_run
        .expect("last run");
    assert_eq!((run.adds.applied, run.removes.applied), (200, 100));

    // the same event three times: one effective run, no TikTok write
    let before = w.tiktok_requests();
    for _ in 0..3 {
        let out = w.handle(w.s3_event(&k2)).await;
        assert_eq!(run_state(&out), vec![RunState::UpToDate], "{out:?}");
    }
    let writes = w.sandbox.requests()[before..]
        .iter()
        .filter(|r| !r.path.contains("/get/") && !r.path.contains("/list/"))
        .count();
    assert_eq!(writes, 0, "no TikTok write for a duplicate delivery");

    // a late event for an older export changes nothing
    let out = w.handle(w.s3_event(&k1)).await;
    assert_eq!(run_state(&out), vec![RunState::Stale]);
    check_audience(&w, &sync.sync_id, &second).await;
    assert_eq!(w.audiences().await.len(), 1, "exactly one audience");
    assert!(
        w.sync(&sync.sync_id).await.progress.tiktok_status.is_some(),
        "status read back"
    );
}

#[tokio::test]
async fn customer_file_first_sync_delta_and_duplicates() {
    first_delta_nochange(WriteMode::CustomerFile).await;
}

#[tokio::test]
async fn streaming_first_sync_delta_and_duplicates() {
    first_delta_nochange(WriteMode::Streaming).await;
}

#[tokio::test]
async fn customer_file_waits_for_minimum_then_creates() {
    let w = World::new().await;
    let cohort = format!("c{}", ulid::Ulid::new().to_string().to_lowercase());
    let sync = w
        .create_sync(&cohort, Cadence::OnUpload, WriteMode::CustomerFile)
        .await;
    let small = emails(0..600);
    let k = w.upload(&cohort, "2026-11-20T10:00", &small).await;
    let before = w.tiktok_requests();
    let out = w.handle(w.s3_event(&k)).await;
    assert_eq!(run_state(&out), vec![RunState::WaitingForMinimum]);
    assert_eq!(w.tiktok_requests(), before, "no TikTok call while waiting");
    let s = w.sync(&sync.sync_id).await;
    assert_eq!(s.progress.waiting_for_minimum, Some(600));
    assert!(s.progress.tiktok_audience_id.is_none());

    let grown = emails(0..1200);
    let k = w.upload(&cohort, "2026-11-21T10:00", &grown).await;
    let out = w.handle(w.s3_event(&k)).await;
    assert_eq!(run_state(&out), vec![RunState::Succeeded]);
    check_audience(&w, &sync.sync_id, &grown).await;
    assert_eq!(
        w.sync(&sync.sync_id).await.progress.waiting_for_minimum,
        None
    );
}

#[tokio::test]
async fn streaming_syncs_below_the_minimum() {
    // Engine v1 maps in the run that creates the streaming audience (fixture: streaming_ready_at_once).
    let w = World::with_rules(streaming_ready_at_once()).await;
    let cohort = format!("c{}", ulid::Ulid::new().to_string().to_lowercase());
    let sync = w
        .create_sync(&cohort, Cadence::OnUpload, WriteMode::Streaming)
        .await;
    let small = emails(0..300);
    let k = w.upload(&cohort, "2026-11-20T10:00", &small).await;
    assert_eq!(
        run_state(&w.handle(w.s3_event(&k)).await),
        vec![RunState::Succeeded]
    );
    check_audience(&w, &sync.sync_id, &small).await;
}

#[tokio::test]
async fn one_time_runs_once_on_upload_after_creation() {
    let w = World::new().await;
    let cohort = format!("c{}", ulid::Ulid::new().to_string().to_lowercase());
    let sync = w
        .create_sync(&cohort, Cadence::OneTime, WriteMode::CustomerFile)
        .await;
    let a = emails(0..1100);
    let k = w.upload(&cohort, "2026-11-20T10:00", &a).await;
    assert_eq!(
        run_state(&w.handle(w.s3_event(&k)).await),
        vec![RunState::Succeeded]
    );
    assert_eq!(
        w.sync(&sync.sync_id).await.effective_state(),
        SyncState::Completed
    );
    check_audience(&w, &sync.sync_id, &a).await;
    // uploads after completion record no run
    let k = w
        .upload(&cohort, "2026-11-21T10:00", &emails(0..1300))
        .await;
    let out = w.handle(w.s3_event(&k)).await;
    assert!(run_state(&out).is_empty(), "{out:?}");
    assert_eq!(w.runs(&sync.sync_id).await.len(), 1);
    check_audience(&w, &sync.sync_id, &a).await;
}

#[tokio::test]
async fn one_time_with_an_existing_export_runs_on_manual_trigger() {
    let w = World::new().await;
    let cohort = format!("c{}", ulid::Ulid::new().to_string().to_lowercase());
    let older = emails(0..1000);
    let newer = emails(0..1100);
    w.upload(&cohort, "2026-11-19T10:00", &older).await;
    w.upload(&cohort, "2026-11-20T10-00-30", &newer).await;
    let sync = w
        .create_sync(&cohort, Cadence::OneTime, WriteMode::CustomerFile)
        .await;
    // what the API invokes at creation when an export exists
    let out = w
        .handle(json!({"trigger": "manual", "project_id": w.project, "sync_id": sync.sync_id}))
        .await;
    assert_eq!(run_state(&out), vec![RunState::Succeeded]);
    check_audience(&w, &sync.sync_id, &newer).await;
    assert_eq!(
        w.sync(&sync.sync_id).await.effective_state(),
        SyncState::Completed
    );
}

#[tokio::test]
async fn hourly_runs_on_first_upload_then_only_on_schedule() {
    // Processing off: an hourly run comes 1 h after the create, inside TikTok's 6 h window, and sends
    // APPEND and REMOVE in one run (engine v1; issue 12 plans one edit per processing window).
    let w = World::with_rules(no_processing()).await;
    let cohort = format!("c{}", ulid::Ulid::new().to_string().to_lowercase());
    let sync = w
        .create_sync(&cohort, Cadence::Hourly, WriteMode::CustomerFile)
        .await;
    let a = emails(0..1600);
    let k = w.upload(&cohort, "2026-11-20T10:00", &a).await;
    assert_eq!(
        run_state(&w.handle(w.s3_event(&k)).await),
        vec![RunState::Succeeded]
    );
    let b = emails(50..1700);
    let k = w.upload(&cohort, "2026-11-20T11:00", &b).await;
    assert!(
        run_state(&w.handle(w.s3_event(&k)).await).is_empty(),
        "second upload waits for the schedule"
    );
    check_audience(&w, &sync.sync_id, &a).await;
    // the schedule's exact input
    let info = w.adapters.schedules.as_ref().expect("schedules");
    let schedule = audience_core::ports::Schedules::get_schedule(info.as_ref(), &sync.sync_id)
        .await
        .expect("get")
        .expect("schedule");
    let input: serde_json::Value = serde_json::from_str(&schedule.input).expect("input json");
    assert_eq!(run_state(&w.handle(input).await), vec![RunState::Succeeded]);
    check_audience(&w, &sync.sync_id, &b).await;
}

#[tokio::test]
async fn ignores_entering_files_test_events_and_foreign_keys() {
    let w = World::new().await;
    let cohort = format!("c{}", ulid::Ulid::new().to_string().to_lowercase());
    let sync = w
        .create_sync(&cohort, Cadence::OnUpload, WriteMode::CustomerFile)
        .await;
    let k = w
        .put(
            &format!("cohorts/{cohort}_2026-11-20T10:00_entering.csv"),
            b"email\na@b.co\n".to_vec(),
        )
        .await;
    let out = w.handle(w.s3_event(&k)).await;
    assert!(
        matches!(out.as_slice(), [Outcome::Ignored { .. }]),
        "{out:?}"
    );
    let k = w.put("cohorts/notes.txt", b"hello".to_vec()).await;
    assert!(matches!(
        w.handle(w.s3_event(&k)).await.as_slice(),
        [Outcome::Ignored { .. }]
    ));
    let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-26T10:00:00Z", "Bucket": w.env.bucket, "RequestId": "x", "HostId": "y"});
    assert!(matches!(
        w.handle(test_event).await.as_slice(),
        [Outcome::Ignored { .. }]
    ));
    assert!(matches!(
        w.handle(json!({"hello": 1})).await.as_slice(),
        [Outcome::Ignored { .. }]
    ));
    assert!(w.runs(&sync.sync_id).await.is_empty());
}

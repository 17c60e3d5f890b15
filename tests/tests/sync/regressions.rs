//! Issue 12's cases, one named test each, on moto + the TikTok sandbox with TikTok's rules on (processing
//! windows, a new streaming audience not ready at once). Each failed on engine v1.

use std::sync::Arc;
use std::time::Duration;

use audience_core::model::{Cadence, RunState, SyncConfig, SyncState, WriteMode};
use audience_core::ports::{CohortStore, StateStore, update_sync_with};
use audience_core::sync::EngineSettings;
use audience_core::sync::api::ApiErrorKind;
use audience_core::sync::engine::Outcome;
use audience_tiktok::AudienceAdapter;
use serde_json::json;

use crate::faulty::{Act, Faulty, Op, err};
use crate::fixture::{PROCESSING_MS, World, assert_same, digests, emails, settings, test_client};

fn cohort_id() -> String {
    format!("c{}", ulid::Ulid::new().to_string().to_lowercase())
}

fn faulty(w: &World) -> Faulty {
    Faulty::new(AudienceAdapter::new(test_client(&w.config, &w.adapters)))
}

/// A sync whose audience holds `users` (created, processed, nothing owed).
async fn synced(
    w: &World,
    mode: WriteMode,
    cadence: Cadence,
    users: &[String],
) -> (SyncConfig, String) {
    let cohort = cohort_id();
    let sync = w.create_sync(&cohort, cadence, mode).await;
    let key = w.upload(&cohort, "2026-11-20T10:00", users).await;
    w.handle(w.s3_event(&key)).await;
    w.drain().await;
    w.settle_by_sweeps(&sync.sync_id, 6).await;
    let s = w.sync(&sync.sync_id).await;
    let aid = s
        .progress
        .tiktok_audience_id
        .clone()
        .expect("audience created");
    assert_same(&w.members(&aid).await, &digests(users), "first sync");
    w.advance_clock(PROCESSING_MS);
    (s, cohort)
}

async fn audience_of(w: &World, sync_id: &str) -> std::collections::BTreeSet<String> {
    let aid = w
        .sync(sync_id)
        .await
        .progress
        .tiktok_audience_id
        .expect("audience");
    w.members(&aid).await
}

fn write_op(mode: WriteMode) -> Op {
    match mode {
        WriteMode::CustomerFile => Op::UpdateFile,
        WriteMode::Streaming => Op::Mapping,
    }
}

/// Case 1: an add applied by TikTok whose answer was lost; the users then leave the cohort.
async fn lost_add_then_leave(mode: WriteMode) {
    let w = World::new().await;
    let (sync, cohort) = synced(&w, mode, Cadence::OnUpload, &emails(0..1400)).await;
    let lossy = w.engine_with_api(
        settings(w.work.path()),
        Arc::new(faulty(&w).on(write_op(mode), 0, Act::LoseAnswer)),
    );
    let k2 = w
        .upload(&cohort, "2026-11-21T10:00", &emails(0..2000))
        .await;
    let out = w.handle_on(&lossy, w.s3_event(&k2)).await;
    assert!(
        matches!(
            out.as_slice(),
            [Outcome::Run {
                state: RunState::Failed,
                ..
            }]
        ),
        "{out:?}"
    );
    let s = w.sync(&sync.sync_id).await;
    assert!(
        s.progress.uncertain.is_some(),
        "the unanswered adds are kept as uncertain"
    );
    w.advance_clock(PROCESSING_MS);
    let k3 = w
        .upload(&cohort, "2026-11-22T10:00", &emails(0..1400))
        .await;
    w.handle(w.s3_event(&k3)).await;
    w.drain().await;
    w.settle_by_sweeps(&sync.sync_id, 8).await;
    assert_same(
        &audience_of(&w, &sync.sync_id).await,
        &digests(&emails(0..1400)),
        "the 600 left",
    );
    assert!(
        w.sync(&sync.sync_id).await.progress.uncertain.is_none(),
        "confirmed"
    );
}

/// Case 1, mirror: a remove applied whose answer was lost; the users then re-enter.
async fn lost_remove_then_reenter(mode: WriteMode) {
    let w = World::new().await;
    let (sync, cohort) = synced(&w, mode, Cadence::OnUpload, &emails(0..2000)).await;
    let lossy = w.engine_with_api(
        settings(w.work.path()),
        Arc::new(faulty(&w).on(write_op(mode), 0, Act::LoseAnswer)),
    );
    let k2 = w
        .upload(&cohort, "2026-11-21T10:00", &emails(0..1400))
        .await;
    w.handle_on(&lossy, w.s3_event(&k2)).await;
    w.advance_clock(PROCESSING_MS);
    let k3 = w
        .upload(&cohort, "2026-11-22T10:00", &emails(0..2000))
        .await;
    w.handle(w.s3_event(&k3)).await;
    w.drain().await;
    w.settle_by_sweeps(&sync.sync_id, 8).await;
    assert_same(
        &audience_of(&w, &sync.sync_id).await,
        &digests(&emails(0..2000)),
        "they are back",
    );
}

#[tokio::test]
async fn case01_lost_answers_customer_file() {
    lost_add_then_leave(WriteMode::CustomerFile).await;
    lost_remove_then_reenter(WriteMode::CustomerFile).await;
}

#[tokio::test]
async fn case01_lost_answers_streaming() {
    lost_add_then_leave(WriteMode::Streaming).await;
    lost_remove_then_reenter(WriteMode::Streaming).await;
}

/// Case 2: the first run of a one-time sync dies right after TikTok created the audience. Nothing else
/// happens (no export, no "run now"): the sweeper finishes it.
#[tokio::test]
async fn case02_killed_mid_apply_finishes_by_itself() {
    let w = World::new().await;
    let cohort = cohort_id();
    let sync = w
        .create_sync(&cohort, Cadence::OneTime, WriteMode::CustomerFile)
        .await;
    let users = emails(0..1500);
    let key = w.upload(&cohort, "2026-11-20T10:00", &users).await;
    let dying = w.engine_with_api(
        settings(w.work.path()),
        Arc::new(faulty(&w).on(Op::CreateFile, 0, Act::ApplyThenHang)),
    );
    let cut = tokio::time::timeout(
        Duration::from_secs(5),
        w.handle_on(&dying, w.s3_event(&key)),
    )
    .await;
    assert!(cut.is_err(), "the invocation died");
    // Sweeps before the lease expires leave the live-looking run alone.
    assert!(
        matches!(w.sweep().await.as_slice(), [Outcome::Swept { resumed }] if resumed.is_empty())
    );
    w.advance_clock(EngineSettings::default().lease_ttl.as_millis() as i64 + 1000);
    w.sweep().await;
    w.settle_by_sweeps(&sync.sync_id, 4).await;
    let s = w.sync(&sync.sync_id).await;
    assert_eq!(
        s.effective_state(),
        SyncState::Completed,
        "{:?}",
        s.progress.last_run
    );
    assert_same(
        &audience_of(&w, &sync.sync_id).await,
        &digests(&users),
        "finished by the sweeper",
    );
    assert_eq!(
        w.audiences().await.len(),
        1,
        "the created audience was found, not created again"
    );
    assert!(
        w.runs(&sync.sync_id)
            .await
            .iter()
            .all(|r| r.state != RunState::Running)
    );
    assert!(s.progress.active_run.is_none());
}

/// Case 3: a continuation delivered twice at once, and once more after the run finished.
#[tokio::test]
async fn case03_duplicate_and_late_continuations_change_nothing() {
    let w = World::new().await;
    let (sync, cohort) = synced(&w, WriteMode::Streaming, Cadence::OnUpload, &emails(0..200)).await;
    let tight = EngineSettings {
        mapping_batch: 100,
        deadline_margin: Duration::from_secs(600),
        ..settings(w.work.path())
    };
    // The second mapping call takes "an hour": the deadline passes and the run continues elsewhere.
    let clock_shared = w.sandbox.shared().clone();
    let slow = faulty(&w).on(
        Op::Mapping,
        1,
        Act::Before(Box::new(move || {
            Box::pin(async move { clock_shared.lock().advance_clock(3_600_000) })
        })),
    );
    let engine = w.engine_with_api(tight, Arc::new(slow));
    let k2 = w
        .upload(&cohort, "2026-11-21T10:00", &emails(0..1500))
        .await;
    let v = audience_app::runner::handle(&engine, w.s3_event(&k2), Some(Duration::from_secs(1800)))
        .await
        .expect("run");
    assert_eq!(v["outcomes"][0]["state"], "running", "{v}");
    let payloads = std::mem::take(&mut *w.invoker.payloads.lock().expect("lock"));
    let cont = payloads
        .iter()
        .find(|p| p["trigger"] == "continue")
        .cloned()
        .expect("a continuation");
    let before = w.tiktok_requests();
    let (a, b) = tokio::join!(w.handle(cont.clone()), w.handle(cont.clone()));
    let ran: Vec<_> = a
        .iter()
        .chain(b.iter())
        .filter(|o| matches!(o, Outcome::Run { .. }))
        .collect();
    assert_eq!(ran.len(), 1, "exactly one delivery runs: {a:?} {b:?}");
    w.drain().await;
    let finished = w.runs(&sync.sync_id).await;
    let late = w.handle(cont).await;
    assert!(
        matches!(late.as_slice(), [Outcome::Ignored { .. }]),
        "{late:?}"
    );
    assert_eq!(
        w.runs(&sync.sync_id).await,
        finished,
        "a finished run's record is never rewritten"
    );
    assert_same(
        &audience_of(&w, &sync.sync_id).await,
        &digests(&emails(0..1500)),
        "continued",
    );
    // 1,300 adds in batches of 100: at most 13 mapping calls after the cut, never a batch twice.
    let mappings = w.sandbox.requests()[..]
        .iter()
        .skip(before)
        .filter(|r| r.path.ends_with("segment/mapping/"))
        .count();
    assert!(mappings <= 13, "{mappings} mapping calls after the cut");
}

/// Case 4: the user changes a one-time sync to daily while its run applies.
#[tokio::test]
async fn case04_cadence_change_during_a_one_time_run_is_kept() {
    let w = World::new().await;
    let cohort = cohort_id();
    let sync = w
        .create_sync(&cohort, Cadence::OneTime, WriteMode::CustomerFile)
        .await;
    let (state, project, id) = (
        w.adapters.state.clone(),
        w.project.clone(),
        sync.sync_id.clone(),
    );
    let edit = faulty(&w).on(
        Op::CreateFile,
        0,
        Act::Before(Box::new(move || {
            Box::pin(async move {
                update_sync_with(&*state, &project, &id, |s| s.cadence = Cadence::Daily)
                    .await
                    .expect("user edit");
            })
        })),
    );
    let engine = w.engine_with_api(settings(w.work.path()), Arc::new(edit));
    let key = w
        .upload(&cohort, "2026-11-20T10:00", &emails(0..1500))
        .await;
    w.handle_on(&engine, w.s3_event(&key)).await;
    let s = w.sync(&sync.sync_id).await;
    assert_eq!(
        s.cadence,
        Cadence::Daily,
        "the user's change survived the run's writes"
    );
    assert_eq!(
        s.effective_state(),
        SyncState::Active,
        "a daily sync is not completed"
    );
    assert!(
        s.progress.tiktok_audience_id.is_some(),
        "and the run's own writes survived too"
    );
}

/// Case 5: an export arriving while the holder applies is run by the holder when it finishes.
#[tokio::test]
async fn case05_export_arriving_mid_run_is_run_by_the_holder() {
    let w = World::new().await;
    let cohort = cohort_id();
    let sync = w
        .create_sync(&cohort, Cadence::OnUpload, WriteMode::CustomerFile)
        .await;
    let k1 = w
        .upload(&cohort, "2026-11-20T10:00", &emails(0..1500))
        .await;
    let k2 = w
        .upload(&cohort, "2026-11-21T10:00", &emails(0..1600))
        .await;
    // Another Lambda gets the second export's event while the first run is creating the audience.
    let other = Arc::new(w.engine(settings(w.work.path())));
    let deferred = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let (d2, o2, adapters_event) = (deferred.clone(), other.clone(), w.s3_event(&k2));
    let hook = faulty(&w).on(
        Op::CreateFile,
        0,
        Act::Before(Box::new(move || {
            Box::pin(async move {
                let v = audience_app::runner::handle(&o2, adapters_event, None)
                    .await
                    .expect("second");
                d2.lock().await.push(v);
            })
        })),
    );
    let holder = w.engine_with_api(settings(w.work.path()), Arc::new(hook));
    w.handle_on(&holder, w.s3_event(&k1)).await;
    let second = deferred.lock().await.clone();
    assert_eq!(
        second[0]["outcomes"][0]["outcome"], "deferred",
        "{second:?}"
    );
    let s = w.sync(&sync.sync_id).await;
    assert_eq!(
        s.committed.as_ref().map(|c| c.export.s3_key.clone()),
        Some(k2.clone()),
        "the holder ran the pending export before letting go"
    );
    assert!(s.pending_export.is_none());
}

/// Case 6: the sync is deleted while its run applies: nothing of it is left behind.
#[tokio::test]
async fn case06_delete_during_a_run_leaves_nothing() {
    let w = World::new().await;
    let cohort = cohort_id();
    let sync = w
        .create_sync(&cohort, Cadence::OnUpload, WriteMode::CustomerFile)
        .await;
    let (state, cohorts, project, id) = (
        w.adapters.state.clone(),
        w.adapters.cohorts.clone(),
        w.project.clone(),
        sync.sync_id.clone(),
    );
    let delete = faulty(&w).on(
        Op::CreateFile,
        0,
        Act::Before(Box::new(move || {
            Box::pin(async move {
                state.delete_sync(&project, &id).await.expect("delete");
                cohorts
                    .delete_sync_objects(&project, &id)
                    .await
                    .expect("objects");
            })
        })),
    );
    let engine = w.engine_with_api(settings(w.work.path()), Arc::new(delete));
    let key = w
        .upload(&cohort, "2026-11-20T10:00", &emails(0..1500))
        .await;
    w.handle_on(&engine, w.s3_event(&key)).await;
    assert!(
        w.adapters
            .state
            .get_sync(&w.project, &sync.sync_id)
            .await
            .expect("get")
            .is_none()
    );
    assert!(w.runs(&sync.sync_id).await.is_empty(), "no run record left");
    let left = sync_objects(&w, &sync.sync_id).await;
    assert!(left.is_empty(), "objects left behind: {left:?}");
}

/// Every object version in the bucket whose key names the sync.
async fn sync_objects(w: &World, sync_id: &str) -> Vec<String> {
    let out = w
        .env
        .clients
        .s3
        .list_object_versions()
        .bucket(&w.env.bucket)
        .send()
        .await
        .expect("list");
    out.versions()
        .iter()
        .filter_map(|v| v.key())
        .filter(|k| k.contains(sync_id))
        .map(str::to_string)
        .collect()
}

/// Case 7: every commit writes a new object; the superseded one goes, the committed one is never
/// overwritten (so no lifecycle rule on noncurrent versions can reach it).
#[tokio::test]
async fn case07_committed_snapshots_are_never_overwritten() {
    let w = World::new().await;
    let (s1, cohort) = synced(&w, WriteMode::Streaming, Cadence::OnUpload, &emails(0..300)).await;
    let first = s1.committed.clone().expect("committed").snapshot;
    let k2 = w.upload(&cohort, "2026-11-21T10:00", &emails(0..400)).await;
    w.handle(w.s3_event(&k2)).await;
    let s2 = w.sync(&s1.sync_id).await;
    let second = s2.committed.clone().expect("committed").snapshot;
    assert_ne!(first.key, second.key, "a new object per commit");
    let keys = sync_objects(&w, &s1.sync_id).await;
    assert!(
        !keys.contains(&first.key),
        "the superseded snapshot is gone: {keys:?}"
    );
    assert_eq!(
        keys.iter().filter(|k| **k == second.key).count(),
        1,
        "one version of the committed one"
    );
}

/// Case 8: TikTok briefly leaves the audience out of `get/`.
#[tokio::test]
async fn case08_missing_status_entry_never_forgets_the_audience() {
    let w = World::new().await;
    let (sync, cohort) = synced(
        &w,
        WriteMode::CustomerFile,
        Cadence::OnUpload,
        &emails(0..1500),
    )
    .await;
    let aid = sync.progress.tiktok_audience_id.clone();
    let blind = w.engine_with_api(
        settings(w.work.path()),
        Arc::new(faulty(&w).on(Op::Status, 0, Act::NotListed)),
    );
    let k2 = w
        .upload(&cohort, "2026-11-21T10:00", &emails(0..1700))
        .await;
    // Not listed is not gone: the edit is tried on the same audience (TikTok would answer 40007 if it
    // were gone, and `get/` would confirm it).
    let out = w.handle_on(&blind, w.s3_event(&k2)).await;
    assert!(
        matches!(
            out.as_slice(),
            [Outcome::Run {
                state: RunState::Succeeded,
                ..
            }]
        ),
        "{out:?}"
    );
    assert_eq!(
        w.sync(&sync.sync_id).await.progress.tiktok_audience_id,
        aid,
        "kept"
    );
    w.settle_by_sweeps(&sync.sync_id, 6).await;
    assert_eq!(w.audiences().await.len(), 1, "no second audience");
    assert_same(
        &audience_of(&w, &sync.sync_id).await,
        &digests(&emails(0..1700)),
        "applied later",
    );
}

/// Case 9: TikTok's codes read narrowly: a generic 40002 fails the run with TikTok's message; a 40007 on an
/// update with the audience still listed does not drop the audience.
#[tokio::test]
async fn case09_generic_40002_fails_and_40007_is_confirmed() {
    let w = World::new().await;
    let (sync, cohort) = synced(
        &w,
        WriteMode::CustomerFile,
        Cadence::OnUpload,
        &emails(0..1500),
    )
    .await;
    w.faults(json!({"rate": 1.0, "codes": [40002], "paths": ["/open_api/v1.3/dmp/custom_audience/update/"]}))
        .await;
    let k2 = w
        .upload(&cohort, "2026-11-21T10:00", &emails(0..1700))
        .await;
    let out = w.handle(w.s3_event(&k2)).await;
    match out.as_slice() {
        [
            Outcome::Run {
                state: RunState::Failed,
                reason: Some(r),
                ..
            },
        ] => {
            assert!(
                r.contains("sandbox injected error"),
                "TikTok's message: {r}"
            )
        }
        other => panic!("a generic 40002 must fail the run: {other:?}"),
    }
    w.faults(json!({"rate": 0.0, "codes": []})).await;
    w.advance_clock(PROCESSING_MS);
    let aid = w.sync(&sync.sync_id).await.progress.tiktok_audience_id;
    let missing_file = w.engine_with_api(
        settings(w.work.path()),
        Arc::new(faulty(&w).on(
            Op::UpdateFile,
            0,
            Act::Fail(err(
                ApiErrorKind::NotFound,
                Some(40007),
                "file_path does not exist",
            )),
        )),
    );
    let out = w
        .handle_on(
            &missing_file,
            json!({"trigger": "manual", "project_id": w.project, "sync_id": sync.sync_id}),
        )
        .await;
    assert!(
        matches!(
            out.as_slice(),
            [Outcome::Run {
                state: RunState::Failed,
                ..
            }]
        ),
        "{out:?}"
    );
    assert_eq!(
        w.sync(&sync.sync_id).await.progress.tiktok_audience_id,
        aid,
        "not dropped"
    );
    w.settle_by_sweeps(&sync.sync_id, 6).await;
    assert_eq!(w.audiences().await.len(), 1, "no second audience");
    assert_same(
        &audience_of(&w, &sync.sync_id).await,
        &digests(&emails(0..1700)),
        "applied",
    );
}

/// Case 10: with TikTok processing after every edit, an export with adds and removes lands whole, one edit
/// per window, the REMOVE first after an APPEND or create.
#[tokio::test]
async fn case10_adds_and_removes_both_land_across_processing_windows() {
    let w = World::new().await;
    let (sync, cohort) = synced(
        &w,
        WriteMode::CustomerFile,
        Cadence::Hourly,
        &emails(0..2000),
    )
    .await;
    let k2 = w
        .upload(&cohort, "2026-11-21T10:00", &emails(500..2500))
        .await;
    let before = w.sandbox.requests().len();
    w.handle(json!({"trigger": "schedule", "project_id": w.project, "sync_id": sync.sync_id}))
        .await;
    let windows = w.settle_by_sweeps(&sync.sync_id, 6).await;
    assert!(windows <= 2, "took {windows} more windows");
    assert_same(
        &audience_of(&w, &sync.sync_id).await,
        &digests(&emails(500..2500)),
        "both landed",
    );
    let updates: Vec<String> = w.sandbox.requests()[before..]
        .iter()
        .filter(|r| r.path.ends_with("custom_audience/update/") && r.code == Some(0))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        updates.len(),
        2,
        "one REMOVE and one APPEND, no refused edit in between"
    );
    let _ = k2;
}

/// Case 11: a run that applied nothing says so.
#[tokio::test]
async fn case11_all_held_is_not_succeeded() {
    let w = World::new().await;
    let cohort = cohort_id();
    let sync = w
        .create_sync(&cohort, Cadence::OnUpload, WriteMode::CustomerFile)
        .await;
    let k1 = w
        .upload(&cohort, "2026-11-20T10:00", &emails(0..1500))
        .await;
    w.handle(w.s3_event(&k1)).await;
    // Minutes later (TikTok still processing the create), three more exports.
    for (i, n) in [1600, 1700, 1800].iter().enumerate() {
        let k = w
            .upload(
                &cohort,
                &format!("2026-11-20T1{}:00", i + 1),
                &emails(0..*n),
            )
            .await;
        let out = w.handle(w.s3_event(&k)).await;
        assert!(
            matches!(out.as_slice(), [Outcome::Run { state: RunState::Held, reason: Some(r), .. }] if r.contains("processing")),
            "{out:?}"
        );
    }
    let s = w.sync(&sync.sync_id).await;
    assert_eq!(s.progress.consecutive_holds, 3);
    assert!(
        s.progress
            .notices
            .iter()
            .any(|n| n.contains("3 runs in a row")),
        "{:?}",
        s.progress.notices
    );
    assert!(
        s.progress.next_attempt_at.is_some(),
        "the sweeper comes back after the window"
    );
}

//! Issue 5's failure paths: broken exports, mass removals, revoked tokens, overlapping runs, held and
//! deferred changes.

use audience_core::model::{Cadence, RunState, WriteMode};
use audience_core::ports::{LeaseOutcome, Schedules, StateStore};
use audience_core::sync::engine::Outcome;
use serde_json::json;
use std::io::Write;

use crate::fixture::{World, assert_same, digests, emails};

fn states(o: &[Outcome]) -> Vec<RunState> {
    o.iter()
        .filter_map(|o| match o {
            Outcome::Run { state, .. } => Some(*state),
            _ => None,
        })
        .collect()
}

fn cohort_id() -> String {
    format!("c{}", ulid::Ulid::new().to_string().to_lowercase())
}

fn writes_since(w: &World, from: usize) -> usize {
    let writes: Vec<String> = w.sandbox.requests()[from..]
        .iter()
        .filter(|r| {
            r.path.starts_with("/open_api/")
                && !r.path.contains("/get/")
                && !r.path.contains("/list/")
        })
        .map(|r| r.path.clone())
        .collect();
    if !writes.is_empty() {
        eprintln!("TikTok writes: {writes:?}");
    }
    writes.len()
}

#[tokio::test]
async fn truncated_export_and_mass_removal_are_refused_without_a_tiktok_call() {
    let w = World::new().await;
    let cohort = cohort_id();
    let sync = w
        .create_sync(&cohort, Cadence::OnUpload, WriteMode::CustomerFile)
        .await;
    let base = emails(0..2000);
    let k = w.upload(&cohort, "2026-11-20T10:00", &base).await;
    assert_eq!(
        states(&w.handle(w.s3_event(&k)).await),
        vec![RunState::Succeeded]
    );
    let aid = w
        .sync(&sync.sync_id)
        .await
        .progress
        .tiktok_audience_id
        .expect("audience");

    // a truncated gzip export
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"Amplitude ID,User ID,email\n").expect("gz");
    for e in emails(0..5000) {
        gz.write_all(format!("1,u,{e}\n").as_bytes()).expect("gz");
    }
    let bytes = gz.finish().expect("gz");
    let key = w
        .put(
            &format!("cohorts/{cohort}_2026-11-21T10:00_existing.csv.gz"),
            bytes[..bytes.len() / 2].to_vec(),
        )
        .await;
    // An index into the whole request log (controls included), as `writes_since` reads it.
    let before = w.sandbox.requests().len();
    let out = w.handle(w.s3_event(&key)).await;
    assert_eq!(states(&out), vec![RunState::Failed], "{out:?}");
    assert_eq!(writes_since(&w, before), 0);
    assert_same(&w.members(&aid).await, &digests(&base), "audience");

    // an export that would remove 60 % of the audience
    let k = w.upload(&cohort, "2026-11-22T10:00", &emails(0..800)).await;
    let out = w.handle(w.s3_event(&k)).await;
    assert_eq!(states(&out), vec![RunState::HeldForReview], "{out:?}");
    assert_eq!(writes_since(&w, before), 0);
    assert_same(&w.members(&aid).await, &digests(&base), "audience");
    let s = w.sync(&sync.sync_id).await;
    assert_eq!(s.progress.held_removals, 1200);

    // a file whose quoting broke: more than 1 % malformed rows
    let mut body = String::from("Amplitude ID,User ID,email\n");
    for (i, e) in emails(0..2000).iter().enumerate() {
        body.push_str(&format!("{i},u,{e}\n"));
    }
    body.push_str("9,u,\"broken\n");
    body.push_str(&"x,y,\"z\n".repeat(10));
    let k = w
        .put(
            &format!("cohorts/{cohort}_2026-11-23T10:00_existing.csv"),
            body.replace("User1", "\"User1").into_bytes(),
        )
        .await;
    let out = w.handle(w.s3_event(&k)).await;
    assert_eq!(states(&out), vec![RunState::Failed], "{out:?}");
    assert_eq!(writes_since(&w, before), 0);
    assert_same(&w.members(&aid).await, &digests(&base), "audience");
}

#[tokio::test]
async fn revoked_token_requires_reconnect_and_disables_schedules() {
    // Engine v1 maps in the run that creates the streaming audience (fixture: streaming_ready_at_once).
    let w = World::with_rules(crate::fixture::streaming_ready_at_once()).await;
    let cohort = cohort_id();
    let sync = w
        .create_sync(&cohort, Cadence::Daily, WriteMode::Streaming)
        .await;
    let k = w.upload(&cohort, "2026-11-20T10:00", &emails(0..400)).await;
    assert_eq!(
        states(&w.handle(w.s3_event(&k)).await),
        vec![RunState::Succeeded]
    );
    w.revoke().await;
    w.upload(&cohort, "2026-11-21T10:00", &emails(0..500)).await;
    let out = w
        .handle(json!({"trigger": "schedule", "project_id": w.project, "sync_id": sync.sync_id}))
        .await;
    assert_eq!(states(&out), vec![RunState::Failed], "{out:?}");
    let integration = w
        .adapters
        .state
        .get_integration(&w.project)
        .await
        .expect("get")
        .expect("integration");
    assert_eq!(integration.status.as_str(), "reconnect_required");
    let schedule = w
        .adapters
        .schedules
        .as_ref()
        .expect("schedules")
        .get_schedule(&sync.sync_id)
        .await
        .expect("get")
        .expect("exists");
    assert!(!schedule.enabled, "schedules disabled");
    // nothing more is sent until the user reconnects
    let before = w.tiktok_requests();
    let out = w
        .handle(json!({"trigger": "manual", "project_id": w.project, "sync_id": sync.sync_id}))
        .await;
    assert_eq!(states(&out), vec![RunState::Skipped]);
    assert_eq!(w.tiktok_requests(), before);
    // reconnect (new consent and token) → the next run converges
    w.connect().await;
    let out = w
        .handle(json!({"trigger": "manual", "project_id": w.project, "sync_id": sync.sync_id}))
        .await;
    assert_eq!(states(&out), vec![RunState::Succeeded], "{out:?}");
    let aid = w
        .sync(&sync.sync_id)
        .await
        .progress
        .tiktok_audience_id
        .expect("audience");
    assert_same(
        &w.members(&aid).await,
        &digests(&emails(0..500)),
        "audience",
    );
}

#[tokio::test]
async fn an_export_arriving_during_a_run_is_applied_after_it() {
    // Engine v1 maps in the run that creates the streaming audience (fixture: streaming_ready_at_once).
    let w = World::with_rules(crate::fixture::streaming_ready_at_once()).await;
    let cohort = cohort_id();
    let sync = w
        .create_sync(&cohort, Cadence::OnUpload, WriteMode::Streaming)
        .await;
    let k1 = w.upload(&cohort, "2026-11-20T10:00", &emails(0..300)).await;
    assert_eq!(
        states(&w.handle(w.s3_event(&k1)).await),
        vec![RunState::Succeeded]
    );
    // another run holds the lease
    let held = w
        .adapters
        .state
        .acquire_lease(
            &w.project,
            &sync.sync_id,
            "other-run",
            std::time::Duration::from_secs(60),
            w.clock.now(),
        )
        .await
        .expect("lease");
    let LeaseOutcome::Acquired(held) = held else {
        panic!("lease: {held:?}")
    };
    let k2 = w
        .upload(&cohort, "2026-11-21T10:00", &emails(100..450))
        .await;
    for _ in 0..3 {
        let out = w.handle(w.s3_event(&k2)).await;
        assert!(
            matches!(out.as_slice(), [Outcome::Deferred { pending_export: Some(p), .. }] if *p == k2),
            "{out:?}"
        );
    }
    assert_eq!(
        w.sync(&sync.sync_id).await.pending_export.map(|p| p.s3_key),
        Some(k2.clone())
    );
    // the holder finishes: it takes the pending export with its lease (as the engine's finish does),
    // then hands it to a new invocation
    let fence = held.fence();
    let finish = w
        .adapters
        .state
        .finish_lease(&w.project, &sync.sync_id, &fence)
        .await
        .expect("finish");
    let audience_core::ports::FinishOutcome::Pending(p) = finish else {
        panic!("pending export recorded: {finish:?}")
    };
    w.adapters
        .state
        .release_lease(&w.project, &sync.sync_id, &fence)
        .await
        .expect("release");
    let out = w.handle(json!({"trigger": "pending", "project_id": w.project, "sync_id": sync.sync_id, "s3_key": p.s3_key})).await;
    assert_eq!(states(&out), vec![RunState::Succeeded]);
    let aid = w
        .sync(&sync.sync_id)
        .await
        .progress
        .tiktok_audience_id
        .expect("audience");
    assert_same(
        &w.members(&aid).await,
        &digests(&emails(100..450)),
        "audience",
    );
    // exactly one effective run per export
    let effective = w
        .runs(&sync.sync_id)
        .await
        .iter()
        .filter(|r| r.state == RunState::Succeeded)
        .count();
    assert_eq!(effective, 2);
}

#[tokio::test]
async fn a_run_runs_a_pending_export_before_letting_go() {
    // A new streaming audience ready at once: this test studies the hand-off, not TikTok's 90 s.
    let w = World::with_rules(crate::fixture::streaming_ready_at_once()).await;
    let cohort = cohort_id();
    let sync = w
        .create_sync(&cohort, Cadence::OnUpload, WriteMode::Streaming)
        .await;
    let k1 = w.upload(&cohort, "2026-11-20T10:00", &emails(0..200)).await;
    // record a pending export first, as if it had arrived during this run
    let k2 = w
        .upload(&cohort, "2026-11-21T10:00", &emails(50..260))
        .await;
    let newer = audience_core::model::ExportRef {
        s3_key: k2.clone(),
        exported_at: audience_core::cohort::parse_export_key(&k2)
            .expect("name")
            .exported_at,
        etag: None,
        last_modified: None,
    };
    w.adapters
        .state
        .set_pending_export(&w.project, &sync.sync_id, &newer)
        .await
        .expect("pending");
    // The holder takes the pending export with its lease (`finish_lease`) and runs it in the same
    // invocation: nothing is handed to another invocation, nothing can be lost between the two.
    assert_eq!(
        states(&w.handle(w.s3_event(&k1)).await),
        vec![RunState::Succeeded, RunState::Succeeded],
        "the run, then the pending export's"
    );
    assert!(w.invoker.payloads.lock().expect("lock").is_empty());
    let s = w.sync(&sync.sync_id).await;
    assert_eq!(s.committed.map(|c| c.export.s3_key), Some(k2.clone()));
    assert!(s.pending_export.is_none());
    let aid = w
        .sync(&sync.sync_id)
        .await
        .progress
        .tiktok_audience_id
        .expect("audience");
    assert_same(
        &w.members(&aid).await,
        &digests(&emails(50..260)),
        "audience",
    );
}

#[tokio::test]
async fn not_editable_changes_are_held_then_applied() {
    // match rate 0.7: 1,500 users match ~1,050; removing 150 would leave ~945 matched (< 1,000)
    // Processing off: this test studies the size rule's hold (TikTok done processing at once, the engine
    // makes the APPEND and the held REMOVE in one run; regressions::case10 covers processing).
    let w = World::with_rules(crate::fixture::no_processing()).await;
    let cohort = cohort_id();
    let sync = w
        .create_sync(&cohort, Cadence::OnUpload, WriteMode::CustomerFile)
        .await;
    let k = w
        .upload(&cohort, "2026-11-20T10:00", &emails(0..1500))
        .await;
    assert_eq!(
        states(&w.handle(w.s3_event(&k)).await),
        vec![RunState::Succeeded]
    );
    let k = w
        .upload(&cohort, "2026-11-21T10:00", &emails(150..1500))
        .await;
    let out = w.handle(w.s3_event(&k)).await;
    // Nothing applied: the run says so.
    assert_eq!(states(&out), vec![RunState::Held], "{out:?}");
    let s = w.sync(&sync.sync_id).await;
    assert_eq!(s.progress.held_removals, 150, "{:?}", s.progress.last_run);
    let aid = s.progress.tiktok_audience_id.clone().expect("audience");
    assert_same(
        &w.members(&aid).await,
        &digests(&emails(0..1500)),
        "held: audience untouched",
    );
    // the cohort grows: the APPEND lifts the matched count, the held REMOVE goes through
    let k = w
        .upload(&cohort, "2026-11-22T10:00", &emails(150..2000))
        .await;
    assert_eq!(
        states(&w.handle(w.s3_event(&k)).await),
        vec![RunState::Succeeded]
    );
    let s = w.sync(&sync.sync_id).await;
    assert_eq!((s.progress.held_removals, s.progress.held_adds), (0, 0));
    assert_same(
        &w.members(&aid).await,
        &digests(&emails(150..2000)),
        "audience",
    );
}

#[tokio::test]
async fn budget_deferred_changes_are_applied_by_a_later_run() {
    let w = World::with(
        tiktok_sandbox::SandboxOptions {
            qps: 50,
            ..Default::default()
        },
        |s| audience_core::sync::EngineSettings {
            daily_budget: 2,
            ..s
        },
    )
    .await;
    let cohort = cohort_id();
    let sync = w
        .create_sync(&cohort, Cadence::OnUpload, WriteMode::CustomerFile)
        .await;
    // the create (1 call) and the next run's first edit (1 call) spend the budget; after a create the
    // REMOVE goes first (removals never starve), so the APPEND is deferred
    let k = w
        .upload(&cohort, "2026-11-20T10:00", &emails(0..1600))
        .await;
    assert_eq!(
        states(&w.handle(w.s3_event(&k)).await),
        vec![RunState::Succeeded]
    );
    // the next day: TikTok has long processed the create
    w.advance_clock(crate::fixture::PROCESSING_MS);
    let k = w
        .upload(&cohort, "2026-11-21T10:00", &emails(100..1700))
        .await;
    let out = w.handle(w.s3_event(&k)).await;
    assert_eq!(states(&out), vec![RunState::Succeeded]);
    let s = w.sync(&sync.sync_id).await;
    assert_eq!(
        s.progress.deferred, 100,
        "100 adds deferred: {:?}",
        s.progress.last_run
    );
    let aid = s.progress.tiktok_audience_id.clone().expect("audience");
    assert_same(
        &w.members(&aid).await,
        &digests(&emails(100..1600)),
        "removes applied, adds deferred",
    );
    // a later run with budget left (a new UTC day; here: a runner configured with the normal budget),
    // hours later, when TikTok has processed the APPEND
    w.advance_clock(crate::fixture::PROCESSING_MS);
    let fresh = w.engine(crate::fixture::settings(w.work.path()));
    let v = audience_app::runner::handle(&fresh, w.s3_event(&k), None)
        .await
        .expect("run");
    assert_eq!(v["outcomes"][0]["state"], "succeeded", "{v}");
    assert_eq!(w.sync(&sync.sync_id).await.progress.deferred, 0);
    assert_same(
        &w.members(&aid).await,
        &digests(&emails(100..1700)),
        "audience",
    );
}

#[tokio::test]
async fn near_the_deadline_a_run_makes_no_call_and_continues() {
    // The margin is checked before every call, the first included: an invocation whose remaining time is
    // under it makes no TikTok write, commits and hands over; the continuation (a fresh 15 minutes) finishes.
    let w = World::with(
        tiktok_sandbox::SandboxOptions {
            qps: 50,
            // a new streaming audience ready at once: this test studies the deadline
            rules: crate::fixture::streaming_ready_at_once(),
            ..Default::default()
        },
        |s| audience_core::sync::EngineSettings {
            deadline_margin: std::time::Duration::from_secs(3600),
            mapping_batch: 100,
            ..s
        },
    )
    .await;
    let cohort = cohort_id();
    let sync = w
        .create_sync(&cohort, Cadence::OnUpload, WriteMode::Streaming)
        .await;
    let users = emails(0..350);
    let k = w.upload(&cohort, "2026-11-20T10:00", &users).await;
    let v = audience_app::runner::handle(
        &w.engine,
        w.s3_event(&k),
        Some(std::time::Duration::from_secs(1)),
    )
    .await
    .expect("run");
    assert_eq!(v["outcomes"][0]["state"], "running", "{v}");
    let run_id = v["outcomes"][0]["run_id"]
        .as_str()
        .expect("run id")
        .to_string();
    let s = w.sync(&sync.sync_id).await;
    if let Some(aid) = &s.progress.tiktok_audience_id {
        assert!(w.members(aid).await.is_empty(), "no member was written");
    }
    let mut invocations = 0;
    loop {
        let batch: Vec<serde_json::Value> =
            std::mem::take(&mut *w.invoker.payloads.lock().expect("lock"));
        if batch.is_empty() {
            break;
        }
        for p in batch {
            // The continuation carries the lease's holder and fence; the run it continues is the sync's
            // active run.
            assert_eq!(p["trigger"], "continue", "{p}");
            assert!(
                p["fence"].as_u64().is_some() && p["holder"].is_string(),
                "{p}"
            );
            assert_eq!(
                w.sync(&sync.sync_id).await.progress.active_run.as_deref(),
                Some(run_id.as_str())
            );
            invocations += 1;
            audience_app::runner::handle(&w.engine, p, None)
                .await
                .expect("continue");
        }
        assert!(invocations < 20, "continuations progress");
    }
    assert_eq!(invocations, 1, "the continuation, with time, finishes");
    let s = w.sync(&sync.sync_id).await;
    let last = s.progress.last_run.clone().expect("last run");
    assert_eq!(
        (last.run_id.as_str(), last.state),
        (run_id.as_str(), RunState::Succeeded)
    );
    assert_eq!((last.adds.planned, last.adds.applied), (350, 350));
    assert_eq!(w.runs(&sync.sync_id).await.len(), 1, "one run, continued");
    let aid = s.progress.tiktok_audience_id.expect("audience");
    assert_same(&w.members(&aid).await, &digests(&users), "audience");
}

#[tokio::test]
async fn an_audience_deleted_on_tiktok_is_recreated_with_a_full_upload() {
    let w = World::new().await;
    let cohort = cohort_id();
    let sync = w
        .create_sync(&cohort, Cadence::OnUpload, WriteMode::CustomerFile)
        .await;
    let users = emails(0..1600);
    let k = w.upload(&cohort, "2026-11-20T10:00", &users).await;
    assert_eq!(
        states(&w.handle(w.s3_event(&k)).await),
        vec![RunState::Succeeded]
    );
    let old = w
        .sync(&sync.sync_id)
        .await
        .progress
        .tiktok_audience_id
        .expect("audience");
    // the advertiser deletes the audience in TikTok's UI
    let client = crate::fixture::test_client(&w.config, &w.adapters);
    let token =
        audience_core::ports::TokenVault::get_connection(w.adapters.vault.as_ref(), &w.project)
            .await
            .expect("vault")
            .expect("conn")
            .access_token;
    client
        .delete_audiences(
            &audience_tiktok::AccessToken::new(secrecy::ExposeSecret::expose_secret(&token)),
            &w.advertiser,
            std::slice::from_ref(&old),
        )
        .await
        .expect("delete");
    // the next change: TikTok answers 40007, the base is discarded, a new audience gets the whole cohort
    let grown = emails(0..1700);
    let k = w.upload(&cohort, "2026-11-21T10:00", &grown).await;
    let out = w.handle(w.s3_event(&k)).await;
    assert_eq!(states(&out), vec![RunState::Failed], "{out:?}");
    let out = w.drain().await;
    assert_eq!(states(&out), vec![RunState::Succeeded], "{out:?}");
    let new = w
        .sync(&sync.sync_id)
        .await
        .progress
        .tiktok_audience_id
        .expect("new audience");
    assert_ne!(new, old);
    assert_same(
        &w.members(&new).await,
        &digests(&grown),
        "recreated audience",
    );
}

//! Issue 8's reliability suite for the engine: convergence under injected faults, crash and resume,
//! app-wide rate under concurrent runners. Bounded: small cohorts, fast client backoff.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use audience_core::digests::Digest;
use audience_core::identifiers::KeyKind;
use audience_core::model::{Cadence, RunState, SyncConfig, WriteMode};
use audience_core::sync::EngineSettings;
use audience_core::sync::api::{
    Ack, ApiError, AudienceApi, AudienceView, CallCounters, FileAction, MappingAction,
};
use audience_core::sync::ledger::reconcile;
use audience_tiktok::AudienceAdapter;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::fixture::{
    PROCESSING_MS, World, assert_same, digests, emails, no_processing, settings,
    streaming_ready_at_once, test_client,
};

fn cohort_id() -> String {
    format!("c{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// Runs the sync until it has nothing left to do (faults make single runs fail or stop early).
/// The one TikTok rule a single run of engine v1 cannot live with, per write mode (see the fixture).
fn rules_for_one_run(mode: WriteMode) -> tiktok_sandbox::Rules {
    match mode {
        WriteMode::CustomerFile => no_processing(),
        WriteMode::Streaming => streaming_ready_at_once(),
    }
}

async fn settle(w: &World, sync: &SyncConfig, trigger_key: &str) {
    let _ = w.handle(w.s3_event(trigger_key)).await;
    w.drain().await;
    for _ in 0..12 {
        let s = w.sync(&sync.sync_id).await;
        let last = s.progress.last_run.clone().expect("a run");
        let clean = matches!(last.state, RunState::Succeeded | RunState::UpToDate)
            && s.progress.held_adds == 0
            && s.progress.held_removals == 0
            && s.progress.deferred == 0
            && s.committed.as_ref().map(|c| c.export.s3_key.as_str()) == Some(trigger_key);
        if clean {
            return;
        }
        // The next run comes hours later (a schedule or a retry): TikTok has processed the last edit and
        // a new streaming audience is ready.
        w.advance_clock(PROCESSING_MS);
        let _ = w
            .handle(json!({"trigger": "manual", "project_id": w.project, "sync_id": sync.sync_id}))
            .await;
        w.drain().await;
    }
    panic!(
        "sync {} did not settle: {:?}",
        sync.sync_id,
        w.sync(&sync.sync_id).await.progress.last_run
    );
}

async fn faults_on(w: &World, seed: u64) {
    w.faults(json!({
        "rate": 0.2, "codes": [40100, 50000, 40202], "http_errors": [429, 502], "latency_ms": 2,
        "drop_before_apply_rate": 0.03, "drop_after_apply_rate": 0.03,
        "seed": seed
    }))
    .await;
}

async fn faults_off(w: &World) {
    w.faults(
        json!({"rate": 0.0, "codes": [], "http_errors": [], "latency_ms": 0,
                    "drop_before_apply_rate": 0.0, "drop_after_apply_rate": 0.0, "seed": 0}),
    )
    .await;
}

async fn converge_under_faults(mode: WriteMode, seeds: std::ops::Range<u64>) {
    let w = World::new().await;
    for seed in seeds {
        let cohort = cohort_id();
        let sync = w.create_sync(&cohort, Cadence::OnUpload, mode).await;
        faults_on(&w, seed).await;
        // first sync + two churned resyncs (10 % out, 15 % in each time)
        let steps = [emails(0..1400), emails(140..1610), emails(300..1800)];
        for (i, users) in steps.iter().enumerate() {
            let key = w
                .upload(&cohort, &format!("2026-11-2{}T10:00", i + 1), users)
                .await;
            settle(&w, &sync, &key).await;
        }
        faults_off(&w).await;
        let s = w.sync(&sync.sync_id).await;
        let aid = s.progress.tiktok_audience_id.clone().expect("audience");
        assert_same(
            &w.members(&aid).await,
            &digests(&steps[2]),
            &format!("seed {seed} {mode:?}"),
        );
        let name = audience_core::sync::engine::audience_name(&s);
        let same_name = w
            .audiences()
            .await
            .iter()
            .filter(|a| a["audience"]["name"] == json!(name))
            .count();
        assert_eq!(same_name, 1, "seed {seed}: no duplicate audience");
        for run in w.runs(&sync.sync_id).await {
            reconcile(&run).unwrap_or_else(|e| panic!("seed {seed} ledger {}: {e}", run.run_id));
        }
    }
    let faulted = w
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.fault.is_some())
        .count();
    assert!(faulted > 20, "faults were injected ({faulted})");
}

#[tokio::test]
async fn customer_file_converges_under_20_percent_faults() {
    converge_under_faults(WriteMode::CustomerFile, 0..10).await;
}

#[tokio::test]
async fn streaming_converges_under_20_percent_faults() {
    converge_under_faults(WriteMode::Streaming, 100..110).await;
}

/// An AudienceApi that "crashes" (never answers) after `k` acknowledged write calls: dropping the run
/// future then is what a Lambda killed mid-run looks like to the state (ledger running, lease held).
struct CrashAfter {
    inner: AudienceAdapter,
    left: AtomicUsize,
}

impl CrashAfter {
    async fn gate(&self) {
        if self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait::async_trait]
impl AudienceApi for CrashAfter {
    async fn upload_digest_file(
        &self,
        t: &SecretString,
        a: &str,
        k: KeyKind,
        f: &std::path::Path,
    ) -> Result<Ack<String>, ApiError> {
        self.inner.upload_digest_file(t, a, k, f).await
    }
    async fn create_file_audience(
        &self,
        t: &SecretString,
        a: &str,
        n: &str,
        k: KeyKind,
        p: &[String],
    ) -> Result<Ack<String>, ApiError> {
        self.gate().await;
        self.inner.create_file_audience(t, a, n, k, p).await
    }
    async fn update_file_audience(
        &self,
        t: &SecretString,
        a: &str,
        id: &str,
        act: FileAction,
        p: &[String],
    ) -> Result<Ack<()>, ApiError> {
        self.gate().await;
        self.inner.update_file_audience(t, a, id, act, p).await
    }
    async fn create_stream_audience(
        &self,
        t: &SecretString,
        a: &str,
        n: &str,
    ) -> Result<Ack<String>, ApiError> {
        self.gate().await;
        self.inner.create_stream_audience(t, a, n).await
    }
    async fn stream_mapping(
        &self,
        t: &SecretString,
        a: &str,
        id: &str,
        k: KeyKind,
        act: MappingAction,
        d: &[Digest],
    ) -> Result<Ack<()>, ApiError> {
        self.gate().await;
        let r = self.inner.stream_mapping(t, a, id, k, act, d).await;
        // crash right after an applied call, before the engine hears of it (outcome unknown to us)
        if self.left.load(Ordering::SeqCst) == 0 {
            std::future::pending::<()>().await;
        }
        r
    }
    async fn find_audiences_by_name(
        &self,
        t: &SecretString,
        a: &str,
        n: &str,
    ) -> Result<Ack<Vec<String>>, ApiError> {
        self.inner.find_audiences_by_name(t, a, n).await
    }
    async fn audience_status(
        &self,
        t: &SecretString,
        a: &str,
        id: &str,
    ) -> Result<Ack<Option<AudienceView>>, ApiError> {
        self.inner.audience_status(t, a, id).await
    }
    fn counters(&self) -> CallCounters {
        self.inner.counters()
    }
}

async fn crash_then_resume(mode: WriteMode, k: usize) {
    // One rule off per mode, for engine v1 (fixture): the resync's REMOVEs follow its APPENDs in one run;
    // the first streaming run maps right after creating. This test studies crash recovery.
    let w = World::with_rules(rules_for_one_run(mode)).await;
    let cohort = cohort_id();
    let sync = w.create_sync(&cohort, Cadence::OnUpload, mode).await;
    let first = emails(0..2600);
    let k1 = w.upload(&cohort, "2026-11-20T10:00", &first).await;
    assert!(matches!(
        w.handle(w.s3_event(&k1)).await.as_slice(),
        [audience_core::sync::engine::Outcome::Run {
            state: RunState::Succeeded,
            ..
        }]
    ));
    // a churned export; the run crashes after k acknowledged calls
    let second = emails(1000..3600);
    let k2 = w.upload(&cohort, "2026-11-21T10:00", &second).await;
    let short_lease = EngineSettings {
        lease_ttl: Duration::from_millis(1500),
        mapping_batch: 100,
        ..settings(w.work.path())
    };
    let crashing = w.engine_with_api(
        short_lease.clone(),
        Arc::new(CrashAfter {
            inner: AudienceAdapter::new(test_client(&w.config, &w.adapters)),
            left: AtomicUsize::new(k),
        }),
    );
    let event = w.s3_event(&k2);
    let crashed = tokio::time::timeout(
        Duration::from_secs(5),
        audience_app::runner::handle(&crashing, event, None),
    )
    .await;
    assert!(crashed.is_err(), "the run was cut off");
    // the lease expires; the next run (the export's retry, or a schedule) converges
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let fresh = w.engine(settings(w.work.path()));
    let v: Value = audience_app::runner::handle(
        &fresh,
        json!({"trigger": "manual", "project_id": w.project, "sync_id": sync.sync_id}),
        None,
    )
    .await
    .expect("run");
    // the interrupted run is finished first; this manual run then finds the same export up to date
    assert!(
        matches!(
            v["outcomes"][0]["state"].as_str(),
            Some("succeeded" | "up_to_date")
        ),
        "k={k}: {v}"
    );
    let runs = w.runs(&sync.sync_id).await;
    assert!(
        runs.iter().all(|r| r.state != RunState::Running),
        "k={k}: interrupted run finished"
    );
    let s = w.sync(&sync.sync_id).await;
    let aid = s.progress.tiktok_audience_id.clone().expect("audience");
    assert_same(
        &w.members(&aid).await,
        &digests(&second),
        &format!("{mode:?} crash after {k} calls"),
    );
    assert_eq!(w.audiences().await.len(), 1, "no duplicate audience");
}

#[tokio::test]
async fn crash_after_k_calls_then_resume_customer_file() {
    // the resync makes 4 write calls (2 APPEND, 2 REMOVE of 2 files each)
    for k in [0, 1, 2, 3] {
        crash_then_resume(WriteMode::CustomerFile, k).await;
    }
}

#[tokio::test]
async fn crash_after_k_calls_then_resume_streaming() {
    for k in [0, 1, 3, 6] {
        crash_then_resume(WriteMode::Streaming, k).await;
    }
}

#[tokio::test]
async fn concurrent_runners_share_the_app_rate() {
    // sandbox at TikTok's basic tier; three runners (three clients, as three Lambdas) share the
    // DynamoDB rate gate configured for 10/s
    let opts = tiktok_sandbox::SandboxOptions {
        qps: 10,
        // engine v1 maps in the run that creates the streaming audience (fixture)
        rules: streaming_ready_at_once(),
        ..Default::default()
    };
    let w = World::with(opts, |s| EngineSettings {
        mapping_batch: 200,
        ..s
    })
    .await;
    let mut cfg = w.config.clone();
    cfg.tiktok_rate = 10.0;
    let adapters = audience_aws::Adapters::new(&w.env.clients, &cfg).expect("adapters");
    let mut syncs = Vec::new();
    for _ in 0..3 {
        let cohort = cohort_id();
        let sync = w
            .create_sync(&cohort, Cadence::OnUpload, WriteMode::Streaming)
            .await;
        let users = emails(0..1600);
        let key = w.upload(&cohort, "2026-11-20T10:00", &users).await;
        syncs.push((sync, key, users));
    }
    let engines: Vec<_> = (0..3)
        .map(|_| {
            World::engine_on(
                &adapters,
                w.invoker.clone(),
                EngineSettings {
                    mapping_batch: 200,
                    ..settings(w.work.path())
                },
                Arc::new(AudienceAdapter::new(test_client(&cfg, &adapters))),
                w.clock.clone(),
            )
        })
        .collect();
    let start = w.sandbox.requests().len();
    let runs = syncs
        .iter()
        .zip(&engines)
        .map(|((_, key, _), e)| audience_app::runner::handle(e, w.s3_event(key), None));
    for r in futures::future::join_all(runs).await {
        let v = r.expect("run");
        assert_eq!(v["outcomes"][0]["state"], "succeeded", "{v}");
    }
    let log: Vec<_> = w.sandbox.requests()[start..]
        .iter()
        .filter(|r| r.path.starts_with("/open_api/"))
        .cloned()
        .collect();
    assert!(
        log.len() >= 27,
        "enough requests to test the rate ({})",
        log.len()
    );
    assert!(
        log.iter().all(|r| r.code != Some(40100)),
        "no 40100 without injected faults"
    );
    let ts: Vec<u64> = log.iter().map(|r| r.ts_ms).collect();
    let worst = ts
        .iter()
        .map(|t| ts.iter().filter(|u| **u >= *t && **u < t + 1000).count())
        .max()
        .unwrap_or(0);
    assert!(
        worst <= 10,
        "at most 10 requests in any sliding second, saw {worst}"
    );
    for (sync, _, users) in &syncs {
        let aid = w
            .sync(&sync.sync_id)
            .await
            .progress
            .tiktok_audience_id
            .expect("audience");
        let members: BTreeSet<String> = w.members(&aid).await;
        assert_same(&members, &digests(users), "concurrent sync");
    }
}

/// The worst case for a cut-off run: it applied part of export 2's changes, then export 3 arrives (without
/// some users export 2 added). The next run finishes the interrupted run first, so nothing is left behind.
async fn crash_then_newer_export(mode: WriteMode, k: usize) {
    // As crash_then_resume: one rule off per mode for engine v1, this test studies crash recovery.
    let w = World::with_rules(rules_for_one_run(mode)).await;
    let cohort = cohort_id();
    let sync = w.create_sync(&cohort, Cadence::OnUpload, mode).await;
    let k1 = w
        .upload(&cohort, "2026-11-20T10:00", &emails(0..2600))
        .await;
    w.handle(w.s3_event(&k1)).await;
    let k2 = w
        .upload(&cohort, "2026-11-21T10:00", &emails(1000..3600))
        .await;
    let short_lease = EngineSettings {
        lease_ttl: Duration::from_millis(1500),
        mapping_batch: 100,
        ..settings(w.work.path())
    };
    let crashing = w.engine_with_api(
        short_lease.clone(),
        Arc::new(CrashAfter {
            inner: AudienceAdapter::new(test_client(&w.config, &w.adapters)),
            left: AtomicUsize::new(k),
        }),
    );
    let cut = tokio::time::timeout(
        Duration::from_secs(5),
        audience_app::runner::handle(&crashing, w.s3_event(&k2), None),
    )
    .await;
    assert!(cut.is_err(), "the run was cut off");
    // export 3 drops users 2600..3600 that export 2 was adding (and keeps > 1,000 matched users)
    let third = emails(1000..2600);
    let k3 = w.upload(&cohort, "2026-11-22T10:00", &third).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let fresh = w.engine(settings(w.work.path()));
    let v = audience_app::runner::handle(&fresh, w.s3_event(&k3), None)
        .await
        .expect("run");
    assert_eq!(v["outcomes"][0]["state"], "succeeded", "k={k}: {v}");
    let s = w.sync(&sync.sync_id).await;
    let aid = s.progress.tiktok_audience_id.clone().expect("audience");
    assert_same(
        &w.members(&aid).await,
        &digests(&third),
        &format!("{mode:?} crash after {k} calls, then a newer export"),
    );
    let runs = w.runs(&sync.sync_id).await;
    assert!(
        runs.iter().all(|r| r.state != RunState::Running),
        "the interrupted run was finished"
    );
    for run in &runs {
        reconcile(run).unwrap_or_else(|e| panic!("ledger {}: {e}", run.run_id));
    }
}

#[tokio::test]
async fn interrupted_run_is_finished_before_a_newer_export_customer_file() {
    for k in [1, 2, 3] {
        crash_then_newer_export(WriteMode::CustomerFile, k).await;
    }
}

#[tokio::test]
async fn interrupted_run_is_finished_before_a_newer_export_streaming() {
    for k in [1, 5, 20] {
        crash_then_newer_export(WriteMode::Streaming, k).await;
    }
}

/// Two schedules firing together and every S3 event delivered three times, concurrently: one effective run
/// per export, and the sandbox never applies the same batch twice.
#[tokio::test]
async fn concurrent_duplicate_triggers_apply_each_batch_once() {
    // Engine v1 maps in the run that creates the streaming audience (fixture: streaming_ready_at_once).
    let w = World::with_rules(streaming_ready_at_once()).await;
    let cohort = cohort_id();
    let sync = w
        .create_sync(&cohort, Cadence::Daily, WriteMode::Streaming)
        .await;
    let schedule = json!({"trigger": "schedule", "project_id": w.project, "sync_id": sync.sync_id});
    w.upload(&cohort, "2026-11-20T10:00", &emails(0..900)).await;
    let (a, b) = tokio::join!(w.handle(schedule.clone()), w.handle(schedule.clone()));
    let outcomes: Vec<_> = a.into_iter().chain(b).collect();
    let ran = outcomes
        .iter()
        .filter(|o| {
            matches!(
                o,
                audience_core::sync::engine::Outcome::Run {
                    state: RunState::Succeeded,
                    ..
                }
            )
        })
        .count();
    assert_eq!(ran, 1, "one effective run: {outcomes:?}");
    w.drain().await;
    let k2 = w
        .upload(&cohort, "2026-11-21T10:00", &emails(100..1000))
        .await;
    // two schedule firings and the export's S3 event, all at once (a daily sync ignores uploads once it has
    // used an export, so the event is acknowledged; the schedules race for the lease)
    tokio::join!(
        w.handle(schedule.clone()),
        w.handle(schedule.clone()),
        w.handle(w.s3_event(&k2))
    );
    w.drain().await;
    let s = w.sync(&sync.sync_id).await;
    let aid = s.progress.tiktok_audience_id.clone().expect("audience");
    assert_same(
        &w.members(&aid).await,
        &digests(&emails(100..1000)),
        "after concurrent triggers",
    );
    let effective = w
        .runs(&sync.sync_id)
        .await
        .iter()
        .filter(|r| r.state == RunState::Succeeded)
        .count();
    assert_eq!(effective, 2, "one effective run per export");
    // no batch applied twice (no faults were injected, so no retries either)
    let mut seen = std::collections::HashSet::new();
    for r in w
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.applied && r.path.ends_with("/segment/mapping/"))
    {
        assert!(
            seen.insert((r.action.clone(), r.ids_sha256.clone())),
            "batch applied twice: {r:?}"
        );
    }
    assert!(seen.len() >= 2);
}

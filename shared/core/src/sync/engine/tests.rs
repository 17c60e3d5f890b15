//! The engine's phases together on the in-memory ports and a small TikTok fake that keeps members and
//! refuses edits while "processing" (the moto + sandbox suites in tests/ are the real check; these keep
//! the engine's own logic fast to test).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::*;
use crate::digests::Digest;
use crate::identifiers::{KeyKind, Normalizer};
use crate::model::{Cadence, KeyMapping, RunState, SyncConfig, SyncState, WriteMode};
use crate::ports::memory::{
    MemoryCohortStore, MemorySchedules, MemoryStateStore, MemoryVault, RecordingInvoker,
};
use crate::ports::{CreateSync, TikTokConnection};
use crate::sync::api::{
    Ack, ApiError, ApiErrorKind, AudienceView, CallCounters, FileAction, MappingAction,
};

struct TestClock(Mutex<DateTime<Utc>>);

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Name, members, last edit.
type FakeAudience = (String, BTreeSet<Digest>, Option<DateTime<Utc>>);

#[derive(Default)]
struct Fake {
    files: Mutex<HashMap<String, Vec<Digest>>>,
    audiences: Mutex<HashMap<String, FakeAudience>>,
    clock: Option<Arc<TestClock>>,
    /// The next write call is applied, then its answer lost / the process dies.
    lose_next: std::sync::atomic::AtomicBool,
    die_next: std::sync::atomic::AtomicBool,
    /// TikTok done processing at once (as the sandbox with its processing rule off).
    instant: bool,
}

const WINDOW: i64 = 6 * 3600;

impl Fake {
    fn now(&self) -> DateTime<Utc> {
        self.clock.as_ref().map(|c| c.now()).unwrap_or_default()
    }
    fn processing(&self, edited: Option<DateTime<Utc>>) -> bool {
        !self.instant && edited.is_some_and(|t| (self.now() - t).num_seconds() < WINDOW)
    }
    fn members(&self, id: &str) -> BTreeSet<Digest> {
        self.audiences
            .lock()
            .unwrap()
            .get(id)
            .map(|a| a.1.clone())
            .unwrap_or_default()
    }
}

impl Fake {
    fn edit_files(&self, id: &str, action: FileAction, paths: &[String]) -> Result<(), ApiError> {
        let files = self.files.lock().unwrap();
        let mut auds = self.audiences.lock().unwrap();
        let Some(a) = auds.get_mut(id) else {
            return Err(api_err(ApiErrorKind::NotFound, "gone"));
        };
        if self.processing(a.2) {
            return Err(api_err(
                ApiErrorKind::NotEditable,
                "currently being updated or under processing",
            ));
        }
        for d in paths
            .iter()
            .flat_map(|p| files.get(p).cloned().unwrap_or_default())
        {
            match action {
                FileAction::Append => a.1.insert(d),
                FileAction::Remove => a.1.remove(&d),
            };
        }
        a.2 = Some(self.now());
        Ok(())
    }

    fn map(&self, id: &str, action: MappingAction, digests: &[Digest]) -> Result<(), ApiError> {
        let mut auds = self.audiences.lock().unwrap();
        let Some(a) = auds.get_mut(id) else {
            return Err(api_err(ApiErrorKind::NotFound, "gone"));
        };
        for d in digests {
            match action {
                MappingAction::Add => a.1.insert(*d),
                MappingAction::Delete => a.1.remove(d),
            };
        }
        Ok(())
    }

    /// After a write was applied: the answer may be lost, or the process may die.
    async fn answer<T>(&self, value: T) -> Result<Ack<T>, ApiError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.die_next.swap(false, SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.lose_next.swap(false, SeqCst) {
            return Err(api_err(ApiErrorKind::OutcomeUnknown, "answer lost"));
        }
        ok(value)
    }
}

fn ok<T>(value: T) -> Result<Ack<T>, ApiError> {
    Ok(Ack {
        value,
        request_id: None,
    })
}

#[async_trait::async_trait]
impl AudienceApi for Fake {
    async fn upload_digest_file(
        &self,
        _t: &SecretString,
        _a: &str,
        _k: KeyKind,
        file: &std::path::Path,
    ) -> Result<Ack<String>, ApiError> {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let digests = text.lines().filter_map(Digest::from_hex).collect();
        let path = format!("fp-{}", ulid::Ulid::new());
        self.files.lock().unwrap().insert(path.clone(), digests);
        ok(path)
    }
    async fn create_file_audience(
        &self,
        _t: &SecretString,
        _a: &str,
        name: &str,
        _k: KeyKind,
        paths: &[String],
    ) -> Result<Ack<String>, ApiError> {
        let files = self.files.lock().unwrap();
        let members = paths
            .iter()
            .flat_map(|p| files.get(p).cloned().unwrap_or_default())
            .collect();
        let id = format!("aud{}", self.audiences.lock().unwrap().len() + 1);
        let edited = Some(self.now());
        self.audiences
            .lock()
            .unwrap()
            .insert(id.clone(), (name.to_string(), members, edited));
        ok(id)
    }
    async fn update_file_audience(
        &self,
        _t: &SecretString,
        _a: &str,
        id: &str,
        action: FileAction,
        paths: &[String],
    ) -> Result<Ack<()>, ApiError> {
        self.edit_files(id, action, paths)?;
        self.answer(()).await
    }
    async fn create_stream_audience(
        &self,
        _t: &SecretString,
        _a: &str,
        name: &str,
    ) -> Result<Ack<String>, ApiError> {
        let id = format!("aud{}", self.audiences.lock().unwrap().len() + 1);
        self.audiences
            .lock()
            .unwrap()
            .insert(id.clone(), (name.to_string(), BTreeSet::new(), None));
        ok(id)
    }
    async fn stream_mapping(
        &self,
        _t: &SecretString,
        _a: &str,
        id: &str,
        _k: KeyKind,
        action: MappingAction,
        digests: &[Digest],
    ) -> Result<Ack<()>, ApiError> {
        self.map(id, action, digests)?;
        self.answer(()).await
    }
    async fn find_audiences_by_name(
        &self,
        _t: &SecretString,
        _a: &str,
        name: &str,
    ) -> Result<Ack<Vec<String>>, ApiError> {
        let auds = self.audiences.lock().unwrap();
        ok(auds
            .iter()
            .filter(|(_, a)| a.0 == name)
            .map(|(id, _)| id.clone())
            .collect())
    }
    async fn audience_status(
        &self,
        _t: &SecretString,
        _a: &str,
        id: &str,
    ) -> Result<Ack<Option<AudienceView>>, ApiError> {
        let auds = self.audiences.lock().unwrap();
        ok(auds.get(id).map(|a| AudienceView {
            audience_id: id.to_string(),
            name: a.0.clone(),
            is_valid: !self.processing(a.2),
            cover_num: Some(a.1.len() as u64),
            is_expiring: false,
            msg: None,
        }))
    }
    fn counters(&self) -> CallCounters {
        CallCounters::default()
    }
}

fn api_err(kind: ApiErrorKind, message: &str) -> ApiError {
    ApiError {
        kind,
        endpoint: "fake".into(),
        code: None,
        message: message.into(),
        request_id: None,
    }
}

struct T {
    engine: Engine,
    state: Arc<MemoryStateStore>,
    cohorts: Arc<MemoryCohortStore>,
    invoker: Arc<RecordingInvoker>,
    tiktok: Arc<Fake>,
    clock: Arc<TestClock>,
    _dir: tempfile::TempDir,
}

async fn world(mode: WriteMode) -> (T, SyncConfig) {
    world_with(mode, false).await
}

async fn world_with(mode: WriteMode, instant: bool) -> (T, SyncConfig) {
    world_in(mode, instant, None).await
}

/// `list_max`: the most digests a list keeps in memory (`Some(2)`: nearly every list of the run is a file).
async fn world_in(mode: WriteMode, instant: bool, list_max: Option<usize>) -> (T, SyncConfig) {
    let clock = Arc::new(TestClock(Mutex::new(Utc::now())));
    let state = Arc::new(MemoryStateStore::new());
    let vault = Arc::new(MemoryVault::new());
    let cohorts = Arc::new(MemoryCohortStore::new("cohorts"));
    let invoker = Arc::new(RecordingInvoker::new());
    let tiktok = Arc::new(Fake {
        clock: Some(clock.clone()),
        instant,
        ..Fake::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let now = clock.now();
    state
        .record_connection("p1", &[], &[31], now)
        .await
        .unwrap();
    let mapping = KeyMapping {
        amplitude_property: "email".into(),
        tiktok_key: KeyKind::Email,
        default_phone_region: None,
    };
    state.save_mapping("p1", &mapping, now).await.unwrap();
    vault
        .put_connection(
            "p1",
            &TikTokConnection {
                access_token: SecretString::from("tok".to_string()),
                advertiser_ids: vec!["adv".into()],
                scope_ids: vec![31],
                connected_at: now,
            },
        )
        .await
        .unwrap();
    let sync = SyncConfig {
        sync_id: "s1".into(),
        project_id: "p1".into(),
        cohort_id: "coh".into(),
        advertiser_id: "adv".into(),
        cadence: Cadence::OnUpload,
        write_mode: mode,
        state: SyncState::Active,
        audience_name: None,
        max_removal_ratio: 0.9,
        min_create_size: 10,
        schedule_name: None,
        warnings: vec![],
        created_at: now,
        updated_at: now,
        version: 0,
        committed: None,
        pending_export: None,
        progress: Default::default(),
    };
    let CreateSync::Created(sync) = state.create_sync(&sync).await.unwrap() else {
        panic!("created")
    };
    let engine = Engine::new(
        Deps {
            state: state.clone(),
            vault,
            cohorts: cohorts.clone(),
            schedules: Arc::new(MemorySchedules::new()),
            invoker: invoker.clone(),
            tiktok: tiktok.clone(),
            clock: clock.clone(),
        },
        EngineSettings {
            work_dir: dir.path().to_path_buf(),
            heartbeat: None,
            reader: crate::cohort::reader::ReaderLimits {
                spill: match list_max {
                    Some(n) => crate::digests::Spill {
                        dir: dir.path().join("spill"),
                        sort_buffer: n * 3,
                        list_max: n,
                    },
                    None => crate::digests::Spill::default(),
                },
                ..Default::default()
            },
            ..EngineSettings::default()
        },
    );
    let t = T {
        engine,
        state,
        cohorts,
        invoker,
        tiktok,
        clock,
        _dir: dir,
    };
    (t, sync)
}

impl T {
    fn upload(&self, hour: u32, users: std::ops::Range<u32>) -> String {
        let key = format!("cohorts/coh_2026-11-20T{hour:02}:00_existing_x.csv");
        let mut body = String::from("email\n");
        for i in users {
            body.push_str(&format!("u{i}@example.com\n"));
        }
        self.cohorts.put_object(&key, body.into_bytes());
        key
    }
    fn advance(&self, secs: i64) {
        let mut c = self.clock.0.lock().unwrap();
        *c += chrono::Duration::seconds(secs);
    }
    async fn run(&self, input: serde_json::Value) -> Vec<Outcome> {
        let parsed = RunnerInput::parse(&input).unwrap();
        self.engine.handle(parsed, None).await.unwrap()
    }
    async fn upload_event(&self, key: &str) -> Vec<Outcome> {
        self.run(serde_json::json!({"trigger": "pending", "project_id": "p1", "sync_id": "s1", "s3_key": key}))
            .await
    }
    async fn drain(&self) {
        for _ in 0..20 {
            let batch = self.invoker.take();
            if batch.is_empty() {
                return;
            }
            for p in batch {
                self.run(p).await;
            }
        }
    }
    /// Windows pass and the sweeper comes, until nothing is owed.
    async fn settle(&self) {
        for _ in 0..10 {
            self.advance(WINDOW + 1);
            self.run(serde_json::json!({"trigger": "sweep"})).await;
            self.drain().await;
        }
    }
    async fn sync(&self) -> SyncConfig {
        self.state.get_sync("p1", "s1").await.unwrap().unwrap()
    }
    async fn members(&self) -> BTreeSet<Digest> {
        let id = self
            .sync()
            .await
            .progress
            .tiktok_audience_id
            .expect("audience");
        self.tiktok.members(&id)
    }
}

fn want(users: std::ops::Range<u32>) -> BTreeSet<Digest> {
    let n = Normalizer::new(KeyKind::Email, None).unwrap();
    users
        .map(|i| n.digest(&format!("u{i}@example.com")).unwrap())
        .collect()
}

#[tokio::test]
async fn customer_file_converges_one_edit_per_window() {
    customer_file_converges_one_edit_per_window_in(None).await;
}

async fn customer_file_converges_one_edit_per_window_in(list_max: Option<usize>) {
    let (t, _) = world_in(WriteMode::CustomerFile, false, list_max).await;
    let k1 = t.upload(1, 0..100);
    let out = t.upload_event(&k1).await;
    assert!(
        matches!(
            &out[..],
            [Outcome::Run {
                state: RunState::Succeeded,
                ..
            }]
        ),
        "{out:?}"
    );
    assert_eq!(t.members().await, want(0..100));
    // Right after the create TikTok processes: the next export is held, with no budget spent.
    let k2 = t.upload(2, 20..150);
    let out = t.upload_event(&k2).await;
    assert!(
        matches!(
            &out[..],
            [Outcome::Run {
                state: RunState::Held,
                ..
            }]
        ),
        "{out:?}"
    );
    t.settle().await;
    assert_eq!(t.members().await, want(20..150));
    let s = t.sync().await;
    assert!(s.progress.active_run.is_none() && s.progress.uncertain.is_none());
    assert_eq!(
        s.progress.held_adds + s.progress.held_removals + s.progress.deferred,
        0
    );
    let runs = t.state.list_runs("s1", 50, None).await.unwrap().runs;
    for r in &runs {
        crate::sync::ledger::reconcile(r).unwrap_or_else(|e| panic!("{}: {e}", r.run_id));
    }
}

#[tokio::test]
async fn streaming_converges() {
    streaming_converges_in(None).await;
}

async fn streaming_converges_in(list_max: Option<usize>) {
    let (t, _) = world_in(WriteMode::Streaming, false, list_max).await;
    let k1 = t.upload(1, 0..100);
    t.upload_event(&k1).await;
    assert_eq!(t.members().await, want(0..100));
    let k2 = t.upload(2, 50..120);
    let out = t.upload_event(&k2).await;
    assert!(
        matches!(
            &out[..],
            [Outcome::Run {
                state: RunState::Succeeded,
                ..
            }]
        ),
        "{out:?}"
    );
    assert_eq!(t.members().await, want(50..120));
    // Same export again: up to date, nothing sent.
    let out = t.upload_event(&k2).await;
    assert!(
        matches!(
            &out[..],
            [Outcome::Run {
                state: RunState::UpToDate,
                ..
            }]
        ),
        "{out:?}"
    );
}

#[tokio::test]
async fn lost_answers_are_resent_in_the_cohorts_direction() {
    lost_answers_are_resent_in_the_cohorts_direction_in(None).await;
}

async fn lost_answers_are_resent_in_the_cohorts_direction_in(list_max: Option<usize>) {
    for mode in [WriteMode::CustomerFile, WriteMode::Streaming] {
        let (t, _) = world_in(mode, false, list_max).await;
        t.upload_event(&t.upload(1, 0..100)).await;
        t.advance(WINDOW + 1);
        t.tiktok
            .lose_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let out = t.upload_event(&t.upload(2, 0..160)).await;
        assert!(
            matches!(
                &out[..],
                [Outcome::Run {
                    state: RunState::Failed,
                    ..
                }]
            ),
            "{out:?}"
        );
        assert!(t.sync().await.progress.uncertain.is_some());
        // The 60 leave again before any run confirmed them.
        t.advance(WINDOW + 1);
        t.upload_event(&t.upload(3, 0..100)).await;
        t.settle().await;
        assert_eq!(t.members().await, want(0..100), "{mode:?}");
        assert!(t.sync().await.progress.uncertain.is_none(), "{mode:?}");
    }
}

#[tokio::test]
async fn a_run_killed_mid_apply_is_finished_by_the_sweeper() {
    a_run_killed_mid_apply_is_finished_by_the_sweeper_in(None).await;
}

async fn a_run_killed_mid_apply_is_finished_by_the_sweeper_in(list_max: Option<usize>) {
    for mode in [WriteMode::CustomerFile, WriteMode::Streaming] {
        let (t, _) = world_in(mode, false, list_max).await;
        t.upload_event(&t.upload(1, 0..100)).await;
        t.advance(WINDOW + 1);
        t.tiktok
            .die_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let k2 = t.upload(2, 40..170);
        let cut =
            tokio::time::timeout(std::time::Duration::from_millis(300), t.upload_event(&k2)).await;
        assert!(cut.is_err(), "killed");
        // Nothing else happens: no export, no run now. The lease expires; the sweeper resumes.
        t.settle().await;
        assert_eq!(t.members().await, want(40..170), "{mode:?}");
        let s = t.sync().await;
        assert!(s.progress.active_run.is_none(), "{mode:?}");
        let runs = t.state.list_runs("s1", 50, None).await.unwrap().runs;
        assert!(
            runs.iter().all(|r| r.state != RunState::Running),
            "{mode:?} {runs:?}"
        );
    }
}

#[tokio::test]
async fn a_processed_audience_takes_the_next_edit_in_the_same_run() {
    let (t, _) = world_with(WriteMode::CustomerFile, true).await;
    t.upload_event(&t.upload(1, 0..100)).await;
    let out = t.upload_event(&t.upload(2, 30..160)).await;
    assert!(
        matches!(
            &out[..],
            [Outcome::Run {
                state: RunState::Succeeded,
                reason: None,
                ..
            }]
        ),
        "{out:?}"
    );
    assert_eq!(t.members().await, want(30..160));
}

mod notify;
mod preview;
mod unmatched;

/// The same histories with nearly every digest list of the run in a file (cohort runs merged, base and
/// uncertain sets streamed from their snapshots, changes and commits merged on disk).
#[tokio::test]
async fn the_runs_converge_the_same_with_every_list_on_disk() {
    customer_file_converges_one_edit_per_window_in(Some(2)).await;
    streaming_converges_in(Some(2)).await;
    lost_answers_are_resent_in_the_cohorts_direction_in(Some(2)).await;
    a_run_killed_mid_apply_is_finished_by_the_sweeper_in(Some(2)).await;
}

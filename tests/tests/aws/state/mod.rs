//! StateStore contract tests: each runs against the DynamoDB adapter (on moto) and the in-memory fake the
//! engine's unit tests use, so the fake cannot drift from the real semantics. Racing tests use two SDK
//! clients (two connection pools) on a multi-thread runtime, and run 30 rounds each.
//!
//! - this file: helpers, integrations, OAuth states, concurrent creation
//! - [`records`]: sync records, settings vs progress, optimistic updates, the snapshot pointer
//! - [`leases`]: lease grants, fences, take-over, release, finish
//! - [`runs`]: run ledgers (fenced, never rewritten, none after a delete), the sweeper's query, the daily
//!   budget
//! - [`unmatched`]: unmatched exports
//! - [`retired`]: syncs retired by a disconnect that kept their run history

mod leases;
mod records;
mod retired;
mod runs;
mod unmatched;

use std::sync::Arc;
use std::time::Duration;

use audience_aws::DynamoStateStore;
use audience_core::identifiers::KeyKind;
use audience_core::model::{
    Advertiser, Cadence, ExportRef, Fence, IntegrationStatus, KeyMapping, OAuthState, RunLedger,
    RunState, RunTrigger, SnapshotPointer, SnapshotRef, SyncConfig, SyncState, WriteMode,
};
use audience_core::ports::memory::MemoryStateStore;
use audience_core::ports::{
    ConsumedState, CreateSync, LeaseOutcome, PortError, SaveMapping, StateStore,
};
use audience_sync_tests::{TestEnv, clients, unique_name};
use chrono::{DateTime, Duration as CDuration, TimeZone, Utc};

/// Racing tests repeat this many rounds (a flaky test is a defect).
pub(crate) const ROUNDS: usize = 30;

/// Two handles on one store: for DynamoDB two SDK clients (separate connection pools, so racing requests
/// reach moto in parallel); for memory the same store twice.
pub(crate) struct Stores {
    pub a: Arc<dyn StateStore>,
    pub b: Arc<dyn StateStore>,
}

async fn dynamo() -> Stores {
    let env = TestEnv::new().await.expect("test env");
    let other = clients().await.dynamodb;
    // Tiny scan pages: the sweeper's query must follow every page.
    let store = |c| DynamoStateStore::new(c, env.table.clone()).with_scan_page_size(2);
    Stores {
        a: Arc::new(store(env.clients.dynamodb.clone())),
        b: Arc::new(store(other)),
    }
}

fn memory() -> Stores {
    let m: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
    Stores { a: m.clone(), b: m }
}

/// Each contract runs against the DynamoDB adapter (on moto) and the in-memory fake.
macro_rules! contract {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dynamodb() {
                super::$name(crate::state::dynamo().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name(crate::state::memory()).await
            }
        }
    };
}
pub(crate) use contract;

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

pub(crate) const TTL: Duration = Duration::from_secs(60);

pub(crate) fn new_sync(project: &str, cohort: &str) -> SyncConfig {
    SyncConfig {
        sync_id: ulid::Ulid::new().to_string(),
        project_id: project.to_string(),
        cohort_id: cohort.to_string(),
        advertiser_id: "7000000001".into(),
        cadence: Cadence::Hourly,
        write_mode: WriteMode::CustomerFile,
        state: SyncState::Active,
        audience_name: None,
        max_removal_ratio: 0.5,
        min_create_size: 1000,
        schedule_name: None,
        committed: None,
        pending_export: None,
        warnings: vec![],
        created_at: t0(),
        updated_at: t0(),
        version: 0,
        progress: Default::default(),
    }
}

/// A fresh sync in a fresh project.
pub(crate) async fn fresh_sync(store: &dyn StateStore) -> SyncConfig {
    let sync = new_sync(&unique_name("p"), "c1");
    store.create_sync(&sync).await.unwrap();
    sync
}

/// Acquires the lease (it must be free) and returns its fence.
pub(crate) async fn grant(
    store: &dyn StateStore,
    s: &SyncConfig,
    holder: &str,
    now: DateTime<Utc>,
) -> Fence {
    match store
        .acquire_lease(&s.project_id, &s.sync_id, holder, TTL, now)
        .await
        .unwrap()
    {
        LeaseOutcome::Acquired(l) => l.fence(),
        other => panic!("lease of {} not granted: {other:?}", s.sync_id),
    }
}

pub(crate) fn pointer(exported_at: DateTime<Utc>, tag: &str) -> SnapshotPointer {
    SnapshotPointer {
        snapshot: SnapshotRef {
            key: format!("snap/{tag}"),
            version_id: Some(format!("v-{tag}")),
            etag: Some(format!("\"{tag}\"")),
            size: 22,
        },
        export: export(exported_at, tag),
        digests: 0,
        key_kind: KeyKind::Email,
        rule_version: 1,
        committed_at: t0(),
    }
}

pub(crate) fn export(exported_at: DateTime<Utc>, tag: &str) -> ExportRef {
    ExportRef {
        s3_key: format!("cohorts/abc_{tag}_existing.csv"),
        exported_at,
        etag: Some(format!("\"e-{tag}\"")),
        last_modified: None,
    }
}

pub(crate) fn ledger(s: &SyncConfig, run_id: &str, state: RunState, fence: u64) -> RunLedger {
    RunLedger {
        run_id: run_id.to_string(),
        sync_id: s.sync_id.clone(),
        project_id: s.project_id.clone(),
        trigger: RunTrigger::Upload,
        source_export: Some(format!(
            "cohorts/{}_2026-03-01T12:00_existing.csv",
            s.cohort_id
        )),
        state,
        reason: None,
        started_at: t0(),
        finished_at: (state != RunState::Running).then(t0),
        rows: 10,
        valid: 10,
        unique: 10,
        duplicates: 0,
        skipped: [("invalid_email".to_string(), 1)].into_iter().collect(),
        adds: Default::default(),
        removes: Default::default(),
        tiktok_calls: 1,
        tiktok_request_ids: vec!["req".into()],
        uncertain_resent: 0,
        uncertain_left: 0,
        fence,
        audience_size: None,
        matched: None,
    }
}

fn email_mapping(property: &str) -> KeyMapping {
    KeyMapping {
        amplitude_property: property.into(),
        tiktok_key: KeyKind::Email,
        default_phone_region: None,
    }
}

contract!(mapping_once_saved_cannot_change);
async fn mapping_once_saved_cannot_change(stores: Stores) {
    let store = stores.a;
    let project = unique_name("p");
    // No integration yet: nothing to save the mapping to.
    assert_eq!(
        store
            .save_mapping(&project, &email_mapping("email"), t0())
            .await
            .unwrap(),
        SaveMapping::NotConnected
    );
    let advertisers = vec![Advertiser {
        advertiser_id: "7000000001".into(),
        advertiser_name: "Acme Ads".into(),
    }];
    store
        .record_connection(&project, &advertisers, &[3, 30, 31], t0())
        .await
        .unwrap();
    assert_eq!(
        store
            .save_mapping(&project, &email_mapping("  email "), t0())
            .await
            .unwrap(),
        SaveMapping::Created
    );
    // Identical (property compared case-insensitively): fine, and the stored spelling stays.
    assert_eq!(
        store
            .save_mapping(&project, &email_mapping("EMAIL"), t0())
            .await
            .unwrap(),
        SaveMapping::Unchanged
    );
    // A different key is refused, and the refusal names the existing mapping.
    let phone = KeyMapping {
        amplitude_property: "phone".into(),
        tiktok_key: KeyKind::Phone,
        default_phone_region: Some("us".into()),
    };
    assert_eq!(
        store.save_mapping(&project, &phone, t0()).await.unwrap(),
        SaveMapping::Locked(email_mapping("email"))
    );
    // So is another property with the same key.
    assert!(matches!(
        store
            .save_mapping(&project, &email_mapping("work_email"), t0())
            .await
            .unwrap(),
        SaveMapping::Locked(_)
    ));
    let integ = store
        .get_integration(&project)
        .await
        .unwrap()
        .expect("integration");
    assert_eq!(integ.status, IntegrationStatus::Connected);
    assert_eq!(integ.advertisers, advertisers);
    assert_eq!(integ.scope_ids, vec![3, 30, 31]);
    assert_eq!(integ.mapping, Some(email_mapping("email")));

    // A reconnect keeps the mapping; status changes do too.
    store
        .set_integration_status(&project, IntegrationStatus::ReconnectRequired, t0())
        .await
        .unwrap();
    store
        .record_connection(&project, &advertisers, &[30, 31], t0())
        .await
        .unwrap();
    let integ = store.get_integration(&project).await.unwrap().unwrap();
    assert_eq!(integ.mapping, Some(email_mapping("email")));
    assert_eq!(integ.status, IntegrationStatus::Connected);

    // Disconnect, then a new mapping is possible.
    store.delete_integration(&project).await.unwrap();
    assert!(store.get_integration(&project).await.unwrap().is_none());
    assert!(matches!(
        store
            .set_integration_status(&project, IntegrationStatus::Connected, t0())
            .await,
        Err(PortError::NotFound(_))
    ));
    store
        .record_connection(&project, &advertisers, &[30, 31], t0())
        .await
        .unwrap();
    assert_eq!(
        store.save_mapping(&project, &phone, t0()).await.unwrap(),
        SaveMapping::Created
    );
    let stored = store
        .get_integration(&project)
        .await
        .unwrap()
        .unwrap()
        .mapping
        .unwrap();
    assert_eq!(stored.default_phone_region.as_deref(), Some("US"));
}

contract!(oauth_state_is_single_use_and_expires);
async fn oauth_state_is_single_use_and_expires(stores: Stores) {
    let store = stores.a;
    let project = unique_name("p");
    let issue = |state: &str| OAuthState {
        state: state.to_string(),
        project_id: project.clone(),
        redirect_uri: "https://api.example.com/oauth/tiktok/callback".into(),
        created_at: t0(),
        expires_at: t0() + CDuration::minutes(10),
    };
    let a = unique_name("st");
    store.put_oauth_state(&issue(&a)).await.unwrap();
    // The same state value cannot be issued twice.
    assert!(matches!(
        store.put_oauth_state(&issue(&a)).await,
        Err(PortError::Conflict(_))
    ));
    match store
        .consume_oauth_state(&a, t0() + CDuration::minutes(9))
        .await
        .unwrap()
    {
        ConsumedState::Consumed(s) => assert_eq!(s, issue(&a)),
        other => panic!("expected consumed, got {other:?}"),
    }
    // Replay.
    assert_eq!(
        store.consume_oauth_state(&a, t0()).await.unwrap(),
        ConsumedState::Unknown
    );

    // Expired (moto never runs TTL deletion, like DynamoDB's lag: only the condition refuses it).
    let b = unique_name("st");
    store.put_oauth_state(&issue(&b)).await.unwrap();
    assert_eq!(
        store
            .consume_oauth_state(&b, t0() + CDuration::minutes(10))
            .await
            .unwrap(),
        ConsumedState::Expired
    );
    // And it is gone: not consumable even with an earlier clock.
    assert_eq!(
        store.consume_oauth_state(&b, t0()).await.unwrap(),
        ConsumedState::Unknown
    );
    assert_eq!(
        store
            .consume_oauth_state("never-issued", t0())
            .await
            .unwrap(),
        ConsumedState::Unknown
    );
    // Garbage from the public callback: unknown, not a server error.
    let huge = "x".repeat(5000);
    for bad in ["", "a#b", "../x", huge.as_str()] {
        assert_eq!(
            store.consume_oauth_state(bad, t0()).await.unwrap(),
            ConsumedState::Unknown
        );
    }

    // Two concurrent consumers of one state: exactly one wins.
    let c = unique_name("st");
    store.put_oauth_state(&issue(&c)).await.unwrap();
    let (r1, r2) = tokio::join!(
        store.consume_oauth_state(&c, t0()),
        store.consume_oauth_state(&c, t0())
    );
    let wins = [r1.unwrap(), r2.unwrap()]
        .iter()
        .filter(|r| matches!(r, ConsumedState::Consumed(_)))
        .count();
    assert_eq!(wins, 1);
}

contract!(concurrent_creation_of_the_same_sync_makes_one);
async fn concurrent_creation_of_the_same_sync_makes_one(stores: Stores) {
    let store = stores.a;
    let project = unique_name("p");
    let mut handles = Vec::new();
    for _ in 0..4 {
        let (store, project) = (store.clone(), project.clone());
        handles.push(tokio::spawn(async move {
            store.create_sync(&new_sync(&project, "c7")).await
        }));
    }
    let mut created = Vec::new();
    let mut existing = Vec::new();
    for h in handles {
        match h.await.unwrap() {
            Ok(CreateSync::Created(s)) => created.push(s.sync_id),
            Ok(CreateSync::Exists(s)) => existing.push(s.sync_id),
            // A loser may also see the guard before the winner's sync is readable: never a second sync.
            Err(PortError::Conflict(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(created.len(), 1, "created {created:?}");
    assert!(existing.iter().all(|id| *id == created[0]));
    assert_eq!(store.list_syncs(&project).await.unwrap().len(), 1);
}

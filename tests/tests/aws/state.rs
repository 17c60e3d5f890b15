use std::sync::Arc;
use std::time::Duration;

use audience_aws::DynamoStateStore;
use audience_core::identifiers::KeyKind;
use audience_core::model::{
    Advertiser, Cadence, ExportRef, IntegrationStatus, KeyMapping, OAuthState, RunLedger, RunState,
    RunTrigger, SnapshotPointer, SnapshotRef, SyncConfig, SyncState, WriteMode,
};
use audience_core::ports::memory::MemoryStateStore;
use audience_core::ports::update_sync_with;
use audience_core::ports::{
    BudgetOutcome, CommitOutcome, ConsumedState, CreateSync, LeaseOutcome, PortError, SaveMapping,
    StateStore,
};
use audience_sync_tests::{TestEnv, unique_name};
use chrono::{DateTime, Duration as CDuration, TimeZone, Utc};

async fn dynamo() -> Arc<dyn StateStore> {
    let env = TestEnv::new().await.expect("test env");
    Arc::new(DynamoStateStore::new(
        env.clients.dynamodb.clone(),
        env.table.clone(),
    ))
}

fn memory() -> Arc<dyn StateStore> {
    Arc::new(MemoryStateStore::new())
}

/// Each contract runs against the DynamoDB adapter (on moto) and the in-memory fake the engine's unit tests
/// use, so the fake cannot drift from the real semantics.
macro_rules! contract {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn dynamodb() {
                super::$name(super::dynamo().await).await
            }
            #[tokio::test]
            async fn memory() {
                super::$name(super::memory()).await
            }
        }
    };
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn new_sync(project: &str, cohort: &str) -> SyncConfig {
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
        tiktok_audience_id: None,
        audience_create_intent: None,
        schedule_name: None,
        committed: None,
        pending_export: None,
        last_run: None,
        tiktok_status: None,
        waiting_for_minimum: None,
        held_removals: 0,
        held_adds: 0,
        deferred: 0,
        used_export: false,
        warnings: vec![],
        created_at: t0(),
        updated_at: t0(),
        version: 0,
    }
}

fn pointer(exported_at: DateTime<Utc>, tag: &str) -> SnapshotPointer {
    SnapshotPointer {
        snapshot: SnapshotRef {
            key: format!("snap/{tag}"),
            version_id: Some(format!("v-{tag}")),
            etag: Some(format!("\"{tag}\"")),
            size: 22,
        },
        export: ExportRef {
            s3_key: format!("cohorts/abc_{tag}_existing.csv"),
            exported_at,
            etag: Some(format!("\"e-{tag}\"")),
            last_modified: None,
        },
        digests: 0,
        key_kind: KeyKind::Email,
        rule_version: 1,
        committed_at: t0(),
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
async fn mapping_once_saved_cannot_change(store: Arc<dyn StateStore>) {
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
async fn oauth_state_is_single_use_and_expires(store: Arc<dyn StateStore>) {
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

contract!(two_concurrent_lease_acquirers_exactly_one_wins);
async fn two_concurrent_lease_acquirers_exactly_one_wins(store: Arc<dyn StateStore>) {
    let project = unique_name("p");
    for round in 0..8 {
        let sync = new_sync(&project, &format!("c{round}"));
        store.create_sync(&sync).await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut handles = Vec::new();
        for holder in ["run-a", "run-b"] {
            let (store, barrier, project, sync_id) = (
                store.clone(),
                barrier.clone(),
                project.clone(),
                sync.sync_id.clone(),
            );
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                store
                    .acquire_lease(&project, &sync_id, holder, Duration::from_secs(60), t0())
                    .await
            }));
        }
        let mut outcomes = Vec::new();
        for h in handles {
            outcomes.push(h.await.unwrap().unwrap());
        }
        let winners: Vec<_> = outcomes
            .iter()
            .filter_map(|o| match o {
                LeaseOutcome::Acquired(l) => Some(l.holder.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        // The loser is told who holds it.
        let loser = outcomes.iter().find_map(|o| match o {
            LeaseOutcome::HeldBy(l) => Some(l.holder.clone()),
            _ => None,
        });
        assert_eq!(loser.as_deref(), Some(winners[0].as_str()), "round {round}");
    }
    // No lease on a sync that does not exist.
    assert!(matches!(
        store
            .acquire_lease(&project, "NOSUCHSYNC", "x", Duration::from_secs(5), t0())
            .await,
        Err(PortError::NotFound(_))
    ));
}

contract!(expired_lease_is_taken_over_and_renewed_only_by_its_holder);
async fn expired_lease_is_taken_over_and_renewed_only_by_its_holder(store: Arc<dyn StateStore>) {
    let project = unique_name("p");
    let sync = new_sync(&project, "c1");
    store.create_sync(&sync).await.unwrap();
    let id = &sync.sync_id;
    let ttl = Duration::from_secs(60);
    assert!(matches!(
        store
            .acquire_lease(&project, id, "a", ttl, t0())
            .await
            .unwrap(),
        LeaseOutcome::Acquired(_)
    ));
    // The holder may re-acquire (idempotent), another may not while it is unexpired.
    assert!(matches!(
        store
            .acquire_lease(&project, id, "a", ttl, t0())
            .await
            .unwrap(),
        LeaseOutcome::Acquired(_)
    ));
    match store
        .acquire_lease(&project, id, "b", ttl, t0() + CDuration::seconds(59))
        .await
        .unwrap()
    {
        LeaseOutcome::HeldBy(l) => {
            assert_eq!(l.holder, "a");
            assert_eq!(l.expires_at, t0() + CDuration::seconds(60));
        }
        other => panic!("{other:?}"),
    }
    // Only the holder renews.
    assert_eq!(
        store
            .renew_lease(&project, id, "b", ttl, t0())
            .await
            .unwrap(),
        None
    );
    let renewed = store
        .renew_lease(&project, id, "a", ttl, t0() + CDuration::seconds(30))
        .await
        .unwrap()
        .expect("holder renews");
    assert_eq!(renewed.expires_at, t0() + CDuration::seconds(90));
    // After expiry another takes it over.
    let late = t0() + CDuration::seconds(91);
    assert!(matches!(
        store
            .acquire_lease(&project, id, "b", ttl, late)
            .await
            .unwrap(),
        LeaseOutcome::Acquired(_)
    ));
    // The old holder can neither renew, nor release, nor commit.
    assert_eq!(
        store
            .renew_lease(&project, id, "a", ttl, late)
            .await
            .unwrap(),
        None
    );
    assert!(!store.release_lease(&project, id, "a").await.unwrap());
    assert_eq!(
        store
            .commit_snapshot(&project, id, "a", &pointer(t0(), "x"), late)
            .await
            .unwrap(),
        CommitOutcome::LeaseLost
    );
    // An expired lease cannot be renewed by its own holder either (someone may have taken it meanwhile).
    let much_later = late + CDuration::seconds(61);
    assert_eq!(
        store
            .renew_lease(&project, id, "b", ttl, much_later)
            .await
            .unwrap(),
        None
    );
    assert!(store.release_lease(&project, id, "b").await.unwrap());
    assert!(matches!(
        store
            .acquire_lease(&project, id, "c", ttl, late)
            .await
            .unwrap(),
        LeaseOutcome::Acquired(_)
    ));
}

contract!(snapshot_pointer_moves_only_under_lease_and_never_back);
async fn snapshot_pointer_moves_only_under_lease_and_never_back(store: Arc<dyn StateStore>) {
    let project = unique_name("p");
    let sync = new_sync(&project, "c1");
    store.create_sync(&sync).await.unwrap();
    let id = &sync.sync_id;
    let ttl = Duration::from_secs(60);
    let (e1, e2, e3) = (
        t0() - CDuration::hours(2),
        t0() - CDuration::hours(1),
        t0() + CDuration::minutes(1),
    );
    // Without the lease: refused.
    assert_eq!(
        store
            .commit_snapshot(&project, id, "r1", &pointer(e2, "2"), t0())
            .await
            .unwrap(),
        CommitOutcome::LeaseLost
    );
    store
        .acquire_lease(&project, id, "r1", ttl, t0())
        .await
        .unwrap();
    assert_eq!(
        store
            .commit_snapshot(&project, id, "r1", &pointer(e2, "2"), t0())
            .await
            .unwrap(),
        CommitOutcome::Committed
    );
    // An older export is stale, whoever holds the lease.
    assert_eq!(
        store
            .commit_snapshot(&project, id, "r1", &pointer(e1, "1"), t0())
            .await
            .unwrap(),
        CommitOutcome::Stale {
            committed_exported_at: e2
        }
    );
    let stored = store.get_sync(&project, id).await.unwrap().unwrap();
    assert_eq!(stored.committed, Some(pointer(e2, "2")));
    // The same export again (a re-run of it) is accepted; a newer one moves it forward.
    assert_eq!(
        store
            .commit_snapshot(&project, id, "r1", &pointer(e2, "2b"), t0())
            .await
            .unwrap(),
        CommitOutcome::Committed
    );
    assert_eq!(
        store
            .commit_snapshot(&project, id, "r1", &pointer(e3, "3"), t0())
            .await
            .unwrap(),
        CommitOutcome::Committed
    );
    assert_eq!(
        store
            .get_sync(&project, id)
            .await
            .unwrap()
            .unwrap()
            .committed,
        Some(pointer(e3, "3"))
    );
    // With an expired lease: refused even for a newer export.
    assert_eq!(
        store
            .commit_snapshot(
                &project,
                id,
                "r1",
                &pointer(e3 + CDuration::hours(1), "4"),
                t0() + CDuration::minutes(2)
            )
            .await
            .unwrap(),
        CommitOutcome::LeaseLost
    );

    // Pending exports: older than the committed one are not recorded; the newest pending one wins.
    let export = |at: DateTime<Utc>, tag: &str| pointer(at, tag).export;
    assert!(
        !store
            .set_pending_export(&project, id, &export(e1, "1"))
            .await
            .unwrap()
    );
    let p5 = export(e3 + CDuration::hours(2), "5");
    let p4 = export(e3 + CDuration::hours(1), "4");
    assert!(store.set_pending_export(&project, id, &p5).await.unwrap());
    assert!(!store.set_pending_export(&project, id, &p4).await.unwrap());
    assert_eq!(
        store
            .get_sync(&project, id)
            .await
            .unwrap()
            .unwrap()
            .pending_export,
        Some(p5.clone())
    );
    // Taken only under the lease, once.
    assert!(matches!(
        store
            .take_pending_export(&project, id, "intruder", t0())
            .await,
        Err(PortError::Conflict(_))
    ));
    assert_eq!(
        store
            .take_pending_export(&project, id, "r1", t0())
            .await
            .unwrap(),
        Some(p5)
    );
    assert_eq!(
        store
            .take_pending_export(&project, id, "r1", t0())
            .await
            .unwrap(),
        None
    );
}

contract!(sync_records_gsi_optimistic_updates_and_runs);
async fn sync_records_gsi_optimistic_updates_and_runs(store: Arc<dyn StateStore>) {
    let (p1, p2) = (unique_name("p"), unique_name("p"));
    let cohort = unique_name("c").replace('-', "");
    let a = new_sync(&p1, &cohort);
    let b = new_sync(&p2, &cohort);
    let other = new_sync(&p1, "othercohort");
    for s in [&a, &b, &other] {
        assert!(
            matches!(store.create_sync(s).await.unwrap(), CreateSync::Created(c) if c.version == 1)
        );
    }
    assert!(matches!(
        store.create_sync(&a).await,
        Err(PortError::Conflict(_))
    ));
    // Same (cohort, advertiser, write mode) in the same project under a new id: the existing one comes back.
    let mut again = new_sync(&p1, &cohort);
    again.cadence = Cadence::Daily;
    match store.create_sync(&again).await.unwrap() {
        CreateSync::Exists(existing) => assert_eq!(existing.sync_id, a.sync_id),
        other => panic!("{other:?}"),
    }
    // Another write mode is another sync.
    let mut streaming = new_sync(&p1, &cohort);
    streaming.write_mode = WriteMode::Streaming;
    assert!(matches!(
        store.create_sync(&streaming).await.unwrap(),
        CreateSync::Created(_)
    ));
    store.delete_sync(&p1, &streaming.sync_id).await.unwrap();
    let mut found: Vec<String> = store
        .syncs_for_cohort(&cohort)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.sync_id)
        .collect();
    found.sort();
    let mut want = vec![a.sync_id.clone(), b.sync_id.clone()];
    want.sort();
    assert_eq!(found, want);
    assert_eq!(store.list_syncs(&p1).await.unwrap().len(), 2);

    // Optimistic concurrency: two writers from the same version, the second is refused.
    let read = store.get_sync(&p1, &a.sync_id).await.unwrap().unwrap();
    assert_eq!(read.version, 1);
    let mut w1 = read.clone();
    w1.state = SyncState::Paused;
    let mut w2 = read.clone();
    w2.max_removal_ratio = 0.9;
    let stored = store.update_sync(&w1).await.unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(stored.state, SyncState::Paused);
    assert!(matches!(
        store.update_sync(&w2).await,
        Err(PortError::Conflict(_))
    ));
    // update_sync never touches the committed pointer (owned by commit_snapshot).
    store
        .acquire_lease(&p1, &a.sync_id, "r", Duration::from_secs(60), t0())
        .await
        .unwrap();
    store
        .commit_snapshot(&p1, &a.sync_id, "r", &pointer(t0(), "1"), t0())
        .await
        .unwrap();
    let mut w3 = store.get_sync(&p1, &a.sync_id).await.unwrap().unwrap();
    w3.committed = None;
    w3.progress.held_adds = 7;
    let stored = store.update_sync(&w3).await.unwrap();
    assert_eq!(stored.progress.held_adds, 7);
    assert_eq!(stored.committed, Some(pointer(t0(), "1")));

    // Runs: newest first, paged with a cursor.
    let mut ids = Vec::new();
    for i in 0..5u64 {
        let run = RunLedger {
            run_id: ulid::Ulid::from_parts(1_700_000_000_000 + i, 0).to_string(),
            sync_id: a.sync_id.clone(),
            project_id: p1.clone(),
            trigger: RunTrigger::Upload,
            source_export: Some(format!("cohorts/{cohort}_2026-03-01T12:0{i}_existing.csv")),
            state: RunState::Succeeded,
            reason: None,
            started_at: t0(),
            finished_at: Some(t0()),
            rows: 10 + i,
            valid: 10,
            unique: 10,
            duplicates: 0,
            skipped: [("invalid_email".to_string(), i)].into_iter().collect(),
            adds: Default::default(),
            removes: Default::default(),
            tiktok_calls: 1,
            tiktok_request_ids: vec![format!("req{i}")],
            checkpoint: Some(serde_json::json!({"batches_done": i})),
        };
        store.put_run(&run).await.unwrap();
        ids.push(run.run_id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let page = store
            .list_runs(&a.sync_id, 2, cursor.as_deref())
            .await
            .unwrap();
        assert!(page.runs.len() <= 2);
        seen.extend(page.runs.iter().map(|r| r.run_id.clone()));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    let one = store.get_run(&a.sync_id, &ids[0]).await.unwrap().unwrap();
    assert_eq!(one.checkpoint, Some(serde_json::json!({"batches_done": 4})));
    assert!(matches!(
        store.list_runs(&a.sync_id, 2, Some("bad cursor!")).await,
        Err(PortError::Invalid(_))
    ));

    // Deleting a sync removes its runs, and frees its (cohort, advertiser, mode).
    store.delete_sync(&p1, &a.sync_id).await.unwrap();
    assert!(store.get_sync(&p1, &a.sync_id).await.unwrap().is_none());
    assert!(store.get_run(&a.sync_id, &ids[0]).await.unwrap().is_none());
    store.delete_sync(&p1, &a.sync_id).await.unwrap();
    assert!(matches!(
        store.create_sync(&again).await.unwrap(),
        CreateSync::Created(_)
    ));
}

contract!(concurrent_creation_of_the_same_sync_makes_one);
async fn concurrent_creation_of_the_same_sync_makes_one(store: Arc<dyn StateStore>) {
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

contract!(daily_budget_allows_24_calls_per_utc_day);
async fn daily_budget_allows_24_calls_per_utc_day(store: Arc<dyn StateStore>) {
    let key = unique_name("sync");
    let day = t0();
    for i in 1..=24 {
        assert_eq!(
            store.try_consume_daily_call(&key, day, 24).await.unwrap(),
            BudgetOutcome::Granted { used: i }
        );
    }
    assert_eq!(
        store
            .try_consume_daily_call(&key, day + CDuration::hours(11), 24)
            .await
            .unwrap(),
        BudgetOutcome::Exhausted { used: 24 }
    );
    assert_eq!(
        store
            .daily_calls_used(&key, day.date_naive())
            .await
            .unwrap(),
        24
    );
    // The next UTC day starts over.
    let next = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
    assert_eq!(
        store.try_consume_daily_call(&key, next, 24).await.unwrap(),
        BudgetOutcome::Granted { used: 1 }
    );

    // Concurrent runners never overspend.
    let key2 = unique_name("sync");
    let mut handles = Vec::new();
    for _ in 0..30 {
        let (store, key2) = (store.clone(), key2.clone());
        handles.push(tokio::spawn(async move {
            store.try_consume_daily_call(&key2, day, 24).await
        }));
    }
    let mut granted = 0;
    for h in handles {
        if let BudgetOutcome::Granted { .. } = h.await.unwrap().unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, 24);
}

contract!(read_modify_write_survives_concurrent_edits);
async fn read_modify_write_survives_concurrent_edits(store: Arc<dyn StateStore>) {
    let project = unique_name("p");
    let sync = new_sync(&project, "c9");
    store.create_sync(&sync).await.unwrap();
    // Eight concurrent writers each bump a different counter: none of the increments is lost.
    let mut handles = Vec::new();
    for i in 0..8u64 {
        let (store, project, id) = (store.clone(), project.clone(), sync.sync_id.clone());
        handles.push(tokio::spawn(async move {
            update_sync_with(store.as_ref(), &project, &id, |s| {
                s.progress.held_adds += 1;
                s.progress.deferred += i;
            })
            .await
        }));
    }
    let mut ok = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => ok += 1,
            // Heavy contention may exhaust the retries: then the change is reported, not lost silently.
            Err(PortError::Conflict(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let stored = store
        .get_sync(&project, &sync.sync_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.progress.held_adds, ok,
        "every successful update is in the record"
    );
    assert!(ok >= 1);
    assert_eq!(stored.version, 1 + ok);
    assert!(matches!(
        update_sync_with(store.as_ref(), &project, "NOSUCH", |_| {}).await,
        Err(PortError::NotFound(_))
    ));
}

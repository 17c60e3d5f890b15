//! Sync records: creation, the GSI, settings written under an optimistic version, and the split between
//! settings (the API's) and progress (the engine's).

use std::sync::Arc;

use audience_core::model::{Cadence, Fence, SyncState, WriteMode};
use audience_core::ports::{
    CommitOutcome, CreateSync, FinishOutcome, PortError, StateStore, update_sync_with,
};
use audience_sync_tests::{TestEnv, unique_name};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Duration as CDuration;

use super::{ROUNDS, Stores, contract, export, fresh_sync, grant, new_sync, pointer, t0};

contract!(sync_records_gsi_and_optimistic_updates);
async fn sync_records_gsi_and_optimistic_updates(stores: Stores) {
    let store = stores.a;
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
    // A sync that is gone: a conflict too (re-read finds nothing).
    let mut gone = new_sync(&p1, "gone");
    gone.version = 1;
    assert!(matches!(
        store.update_sync(&gone).await,
        Err(PortError::Conflict(_))
    ));

    // Deleting a sync frees its (cohort, advertiser, mode).
    store.delete_sync(&p1, &a.sync_id).await.unwrap();
    assert!(store.get_sync(&p1, &a.sync_id).await.unwrap().is_none());
    store.delete_sync(&p1, &a.sync_id).await.unwrap();
    assert!(matches!(
        store.create_sync(&again).await.unwrap(),
        CreateSync::Created(_)
    ));
}

contract!(update_sync_never_writes_what_the_engine_owns);
async fn update_sync_never_writes_what_the_engine_owns(stores: Stores) {
    let store = stores.a;
    let s = fresh_sync(store.as_ref()).await;
    let (p, id) = (&s.project_id, &s.sync_id);
    let f = grant(store.as_ref(), &s, "run-1", t0()).await;
    let mut progress = s.progress.clone();
    progress.tiktok_audience_id = Some("900".into());
    progress.held_adds = 3;
    assert!(store.save_progress(p, id, &f, &progress).await.unwrap());
    assert_eq!(
        store
            .commit_snapshot(p, id, &f, &pointer(t0(), "1"), t0())
            .await
            .unwrap(),
        audience_core::ports::CommitOutcome::Committed
    );
    let pending = export(t0() + CDuration::hours(1), "2");
    assert!(store.set_pending_export(p, id, &pending).await.unwrap());

    // The API writes a copy whose engine-owned fields are all stale or blank.
    let mut stale = store.get_sync(p, id).await.unwrap().unwrap();
    stale.progress = Default::default();
    stale.committed = None;
    stale.pending_export = None;
    stale.max_removal_ratio = 0.25;
    let stored = store.update_sync(&stale).await.unwrap();
    assert_eq!(stored.max_removal_ratio, 0.25);
    assert_eq!(
        stored.progress, progress,
        "the answer carries the stored progress"
    );
    let read = store.get_sync(p, id).await.unwrap().unwrap();
    assert_eq!(read.progress, progress);
    assert_eq!(read.committed, Some(pointer(t0(), "1")));
    assert_eq!(read.pending_export, Some(pending));
    // And the lease is still the run's: its fenced writes go on.
    assert!(store.save_progress(p, id, &f, &progress).await.unwrap());
    assert!(matches!(
        store.acquire_lease(p, id, "other", super::TTL, t0()).await.unwrap(),
        audience_core::ports::LeaseOutcome::HeldBy(l) if l.fence == f.fence
    ));
    // save_progress leaves the settings alone (the version did not move either).
    assert_eq!(read.max_removal_ratio, 0.25);
    assert_eq!(read.version, stored.version);
}

// The engine's progress write and a user's edit at the same moment: both are kept (neither is conditional
// on the other, and neither writes the other's attributes).
contract!(save_progress_and_update_sync_concurrently_keep_both);
async fn save_progress_and_update_sync_concurrently_keep_both(stores: Stores) {
    for round in 0..ROUNDS {
        let s = fresh_sync(stores.a.as_ref()).await;
        let f = grant(stores.a.as_ref(), &s, "run", t0()).await;
        let read = stores
            .a
            .get_sync(&s.project_id, &s.sync_id)
            .await
            .unwrap()
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let engine = {
            let (store, barrier, s, f) = (stores.a.clone(), barrier.clone(), s.clone(), f.clone());
            tokio::spawn(async move {
                let mut progress = s.progress.clone();
                progress.tiktok_audience_id = Some(format!("aud-{round}"));
                progress.held_removals = round as u64 + 1;
                barrier.wait().await;
                store
                    .save_progress(&s.project_id, &s.sync_id, &f, &progress)
                    .await
            })
        };
        let api = {
            let (store, barrier, mut edit) = (stores.b.clone(), barrier.clone(), read.clone());
            tokio::spawn(async move {
                edit.state = SyncState::Paused;
                edit.min_create_size = 5000 + round as u64;
                barrier.wait().await;
                store.update_sync(&edit).await
            })
        };
        assert!(engine.await.unwrap().unwrap(), "round {round}");
        api.await.unwrap().unwrap();
        let got = stores
            .a
            .get_sync(&s.project_id, &s.sync_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.state, SyncState::Paused, "round {round}");
        assert_eq!(got.min_create_size, 5000 + round as u64, "round {round}");
        assert_eq!(
            got.progress.tiktok_audience_id,
            Some(format!("aud-{round}")),
            "round {round}"
        );
        assert_eq!(
            got.progress.held_removals,
            round as u64 + 1,
            "round {round}"
        );
    }
}

contract!(read_modify_write_survives_concurrent_edits);
async fn read_modify_write_survives_concurrent_edits(stores: Stores) {
    let s = fresh_sync(stores.a.as_ref()).await;
    // Eight concurrent writers (two clients) each bump the settings: none of the increments is lost.
    let mut handles = Vec::new();
    for i in 0..8u64 {
        let store = if i % 2 == 0 {
            stores.a.clone()
        } else {
            stores.b.clone()
        };
        let (project, id) = (s.project_id.clone(), s.sync_id.clone());
        handles.push(tokio::spawn(async move {
            update_sync_with(store.as_ref(), &project, &id, |s| s.min_create_size += 1).await
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
    let stored = stores
        .a
        .get_sync(&s.project_id, &s.sync_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.min_create_size,
        1000 + ok,
        "every successful update is in the record"
    );
    assert!(ok >= 1);
    assert_eq!(stored.version, 1 + ok);
    assert!(matches!(
        update_sync_with(stores.a.as_ref(), &s.project_id, "NOSUCH", |_| {}).await,
        Err(PortError::NotFound(_))
    ));
}

/// DynamoDB only: an item written before the settings/progress split (engine fields inside `rec_json`, no
/// `progress_json`) still reads with its audience id, and the first progress save moves them out.
#[tokio::test]
async fn a_sync_item_from_before_the_split_keeps_its_engine_fields() {
    let env = TestEnv::new().await.expect("env");
    let store =
        audience_aws::DynamoStateStore::new(env.clients.dynamodb.clone(), env.table.clone());
    let s = new_sync(&unique_name("p"), "legacy");
    let mut legacy = serde_json::to_value(&s).unwrap();
    let m = legacy.as_object_mut().unwrap();
    m.remove("progress");
    m.insert("tiktok_audience_id".into(), "777".into());
    m.insert("held_adds".into(), 4.into());
    m.insert("used_export".into(), true.into());
    let attr = |v: &str| AttributeValue::S(v.to_string());
    env.clients
        .dynamodb
        .put_item()
        .table_name(&env.table)
        .item("pk", attr(&format!("PROJECT#{}", s.project_id)))
        .item("sk", attr(&format!("SYNC#{}", s.sync_id)))
        .item("item_type", attr("sync"))
        .item("rec_json", attr(&legacy.to_string()))
        .item("ver_no", AttributeValue::N("3".into()))
        .item("lease_holder", attr("old-run"))
        .item("lease_until", AttributeValue::N("0".into()))
        .send()
        .await
        .unwrap();
    let got = store
        .get_sync(&s.project_id, &s.sync_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.progress.tiktok_audience_id.as_deref(), Some("777"));
    assert_eq!(got.progress.held_adds, 4);
    assert!(got.progress.used_export);
    assert_eq!(got.version, 3);
    // A lease from before fences (expired) is granted with fence 1.
    let f = grant(&store, &s, "new-run", t0()).await;
    assert_eq!(f.fence, 1);
    let mut progress = got.progress.clone();
    progress.held_adds = 0;
    assert!(
        store
            .save_progress(&s.project_id, &s.sync_id, &f, &progress)
            .await
            .unwrap()
    );
    let got = store
        .get_sync(&s.project_id, &s.sync_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.progress, progress);
}

contract!(snapshot_pointer_moves_only_under_the_fence_and_never_back);
async fn snapshot_pointer_moves_only_under_the_fence_and_never_back(stores: Stores) {
    let store = stores.a.as_ref();
    let s = fresh_sync(store).await;
    let (p, id) = (&s.project_id, &s.sync_id);
    let (e1, e2, e3) = (
        t0() - CDuration::hours(2),
        t0() - CDuration::hours(1),
        t0() + CDuration::minutes(1),
    );
    let nobody = Fence {
        holder: "r1".into(),
        fence: 1,
    };
    assert_eq!(
        store
            .commit_snapshot(p, id, &nobody, &pointer(e2, "2"), t0())
            .await
            .unwrap(),
        CommitOutcome::LeaseLost
    );
    let f = grant(store, &s, "r1", t0()).await;
    let commit =
        |ptr, f: Fence| async move { store.commit_snapshot(p, id, &f, &ptr, t0()).await.unwrap() };
    assert_eq!(
        commit(pointer(e2, "2"), f.clone()).await,
        CommitOutcome::Committed
    );
    // An older export is stale; the same export again and a newer one move it.
    assert_eq!(
        commit(pointer(e1, "1"), f.clone()).await,
        CommitOutcome::Stale {
            committed_exported_at: e2
        }
    );
    assert_eq!(
        store.get_sync(p, id).await.unwrap().unwrap().committed,
        Some(pointer(e2, "2"))
    );
    assert_eq!(
        commit(pointer(e2, "2b"), f.clone()).await,
        CommitOutcome::Committed
    );
    assert_eq!(
        commit(pointer(e3, "3"), f.clone()).await,
        CommitOutcome::Committed
    );
    // Once another run is granted the lease, the old fence commits nothing, even a newer export.
    let later = t0() + CDuration::minutes(2);
    let f2 = grant(store, &s, "r2", later).await;
    assert_eq!(
        store
            .commit_snapshot(p, id, &f, &pointer(e3 + CDuration::hours(1), "4"), later)
            .await
            .unwrap(),
        CommitOutcome::LeaseLost
    );
    assert_eq!(
        store.get_sync(p, id).await.unwrap().unwrap().committed,
        Some(pointer(e3, "3"))
    );
    // Pending exports: never older than the committed one; the newest pending one wins.
    assert!(
        !store
            .set_pending_export(p, id, &export(e1, "1"))
            .await
            .unwrap()
    );
    let p5 = export(e3 + CDuration::hours(2), "5");
    let p4 = export(e3 + CDuration::hours(1), "4");
    assert!(store.set_pending_export(p, id, &p5).await.unwrap());
    assert!(!store.set_pending_export(p, id, &p4).await.unwrap());
    assert_eq!(
        store.get_sync(p, id).await.unwrap().unwrap().pending_export,
        Some(p5.clone())
    );
    assert!(matches!(
        store.set_pending_export(p, "NOSUCH", &p5).await,
        Err(PortError::NotFound(_))
    ));
    assert_eq!(
        store.finish_lease(p, id, &f2).await.unwrap(),
        FinishOutcome::Pending(p5)
    );
}

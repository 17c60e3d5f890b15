//! Lease grants and fences: one holder at a time, fences that only grow (kept after a release), a
//! continuation's take-over won by exactly one delivery, and the fenced writes refusing every old fence.

use std::sync::Arc;

use audience_core::model::{Fence, RunState};
use audience_core::ports::{CommitOutcome, FinishOutcome, LeaseOutcome, PortError, StateStore};
use chrono::{DateTime, Duration as CDuration, Utc};
use tokio::sync::Barrier;

use super::{ROUNDS, Stores, TTL, contract, export, fresh_sync, grant, ledger, pointer, t0};

/// Every fenced write with `f`: whether each was accepted (renew, save_progress, put_run, commit).
async fn fenced_writes_accepted(
    store: &dyn StateStore,
    s: &audience_core::model::SyncConfig,
    f: &Fence,
    now: DateTime<Utc>,
) -> [bool; 4] {
    let (p, id) = (&s.project_id, &s.sync_id);
    let run = ledger(
        s,
        &ulid::Ulid::new().to_string(),
        RunState::Running,
        f.fence,
    );
    [
        store
            .renew_lease(p, id, f, TTL, now)
            .await
            .unwrap()
            .is_some(),
        store.save_progress(p, id, f, &s.progress).await.unwrap(),
        store.put_run(f, &run).await.unwrap(),
        store
            .commit_snapshot(p, id, f, &pointer(t0(), "x"), now)
            .await
            .unwrap()
            == CommitOutcome::Committed,
    ]
}

contract!(two_concurrent_lease_acquirers_exactly_one_wins);
async fn two_concurrent_lease_acquirers_exactly_one_wins(stores: Stores) {
    for round in 0..ROUNDS {
        let s = fresh_sync(stores.a.as_ref()).await;
        let barrier = Arc::new(Barrier::new(2));
        let mut handles = Vec::new();
        for (store, holder) in [(stores.a.clone(), "run-a"), (stores.b.clone(), "run-b")] {
            let (barrier, s) = (barrier.clone(), s.clone());
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                store
                    .acquire_lease(&s.project_id, &s.sync_id, holder, TTL, t0())
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
                LeaseOutcome::Acquired(l) => Some(l.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        assert_eq!(winners[0].fence, 1, "round {round}");
        // The loser is told who holds it, with the holder's fence.
        let loser = outcomes.iter().find_map(|o| match o {
            LeaseOutcome::HeldBy(l) => Some(l.clone()),
            _ => None,
        });
        assert_eq!(loser, Some(winners[0].clone()), "round {round}");
    }
    assert!(matches!(
        stores
            .a
            .acquire_lease("p", "NOSUCHSYNC", "x", TTL, t0())
            .await,
        Err(PortError::NotFound(_))
    ));
}

contract!(fences_only_grow_and_old_fences_are_refused);
async fn fences_only_grow_and_old_fences_are_refused(stores: Stores) {
    let store = stores.a.as_ref();
    let s = fresh_sync(store).await;
    let (p, id) = (&s.project_id, &s.sync_id);
    let f1 = grant(store, &s, "r", t0()).await;
    assert_eq!(f1.fence, 1);
    // Not even the holder itself is granted a live lease again (a continuation takes it over instead).
    match store
        .acquire_lease(p, id, "r", TTL, t0() + CDuration::seconds(59))
        .await
        .unwrap()
    {
        LeaseOutcome::HeldBy(l) => {
            assert_eq!((l.holder.as_str(), l.fence), ("r", 1));
            assert_eq!(l.expires_at, t0() + CDuration::seconds(60));
        }
        other => panic!("{other:?}"),
    }
    // Renewed by its fence, even once expired while nobody else was granted it.
    let late = t0() + CDuration::seconds(61);
    let renewed = store
        .renew_lease(p, id, &f1, TTL, late)
        .await
        .unwrap()
        .expect("renewed");
    assert_eq!(
        (renewed.fence, renewed.expires_at),
        (1, late + CDuration::seconds(60))
    );
    // Released: the fence stays behind, the next grant (the same holder name) gets the next one.
    assert!(store.release_lease(p, id, &f1).await.unwrap());
    assert!(!store.release_lease(p, id, &f1).await.unwrap());
    let f2 = grant(store, &s, "r", late).await;
    assert_eq!(f2.fence, 2);
    // The same holder name with the old fence is refused everything, the new fence everything allowed.
    assert_eq!(
        fenced_writes_accepted(store, &s, &f1, late).await,
        [false; 4]
    );
    assert!(!store.release_lease(p, id, &f1).await.unwrap());
    assert_eq!(
        store.finish_lease(p, id, &f1).await.unwrap(),
        FinishOutcome::Fenced
    );
    assert_eq!(
        fenced_writes_accepted(store, &s, &f2, late).await,
        [true; 4]
    );
    // Expired and granted to another: fence 3; every write of fence 2 refused, release included.
    let later = late + CDuration::seconds(121);
    let f3 = grant(store, &s, "other", later).await;
    assert_eq!(f3.fence, 3);
    assert_eq!(
        fenced_writes_accepted(store, &s, &f2, later).await,
        [false; 4]
    );
    assert!(!store.release_lease(p, id, &f2).await.unwrap());
    assert!(
        store
            .take_over_lease(p, id, &f2, TTL, later)
            .await
            .unwrap()
            .is_none()
    );
    // A forged fence (right number, other holder) is refused too.
    let forged = Fence {
        holder: "r".into(),
        fence: 3,
    };
    assert_eq!(
        fenced_writes_accepted(store, &s, &forged, later).await,
        [false; 4]
    );
    // The lease is still f3's.
    assert!(matches!(
        store.acquire_lease(p, id, "x", TTL, later).await.unwrap(),
        LeaseOutcome::HeldBy(l) if l.fence == 3 && l.holder == "other"
    ));
}

// Lambda delivers a continuation at least once: two deliveries of one take-over, exactly one wins.
contract!(take_over_from_one_fence_exactly_one_wins);
async fn take_over_from_one_fence_exactly_one_wins(stores: Stores) {
    for round in 0..ROUNDS {
        let s = fresh_sync(stores.a.as_ref()).await;
        let f = grant(stores.a.as_ref(), &s, "run", t0()).await;
        let barrier = Arc::new(Barrier::new(2));
        let mut handles = Vec::new();
        // The second delivery may come late, after the lease expired: still only one wins.
        for (store, at) in [
            (stores.a.clone(), t0()),
            (stores.b.clone(), t0() + CDuration::minutes(5)),
        ] {
            let (barrier, s, f) = (barrier.clone(), s.clone(), f.clone());
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                store
                    .take_over_lease(&s.project_id, &s.sync_id, &f, TTL, at)
                    .await
            }));
        }
        let mut won = Vec::new();
        for h in handles {
            if let Some(l) = h.await.unwrap().unwrap() {
                won.push(l);
            }
        }
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        assert_eq!(
            (won[0].fence, won[0].holder.as_str()),
            (2, "run"),
            "round {round}"
        );
        // The taken-over fence is dead; the winner's is live.
        let now = t0() + CDuration::seconds(1);
        assert!(
            stores
                .a
                .renew_lease(&s.project_id, &s.sync_id, &f, TTL, now)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            stores
                .a
                .renew_lease(&s.project_id, &s.sync_id, &won[0].fence(), TTL, now)
                .await
                .unwrap()
                .is_some()
        );
    }
}

contract!(late_take_over_after_release_is_refused);
async fn late_take_over_after_release_is_refused(stores: Stores) {
    let store = stores.a.as_ref();
    let s = fresh_sync(store).await;
    let (p, id) = (&s.project_id, &s.sync_id);
    // Expired with nobody granted since: the continuation may still take over.
    let f1 = grant(store, &s, "run", t0()).await;
    let much_later = t0() + CDuration::hours(1);
    let l2 = store
        .take_over_lease(p, id, &f1, TTL, much_later)
        .await
        .unwrap()
        .expect("taken over");
    assert_eq!(l2.fence, 2);
    // Released (the run ended): a late delivery of the continuation changes nothing.
    assert!(store.release_lease(p, id, &l2.fence()).await.unwrap());
    assert!(
        store
            .take_over_lease(p, id, &l2.fence(), TTL, much_later)
            .await
            .unwrap()
            .is_none()
    );
    // Finished (released through finish_lease): the same.
    let f3 = grant(store, &s, "run2", much_later).await;
    assert_eq!(
        store.finish_lease(p, id, &f3).await.unwrap(),
        FinishOutcome::Released
    );
    assert!(
        store
            .take_over_lease(p, id, &f3, TTL, much_later)
            .await
            .unwrap()
            .is_none()
    );
    // Another run granted in between: refused even though that one is gone again.
    let f4 = grant(store, &s, "run3", much_later).await;
    let f5 = grant(store, &s, "run4", much_later + CDuration::minutes(2)).await;
    assert_eq!(f5.fence, 5);
    assert!(
        store
            .take_over_lease(p, id, &f4, TTL, much_later)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .take_over_lease(p, "NOSUCH", &f5, TTL, much_later)
            .await
            .unwrap()
            .is_none()
    );
}

contract!(finish_lease_hands_a_pending_export_to_the_holder);
async fn finish_lease_hands_a_pending_export_to_the_holder(stores: Stores) {
    let store = stores.a.as_ref();
    let s = fresh_sync(store).await;
    let (p, id) = (&s.project_id, &s.sync_id);
    let f = grant(store, &s, "run", t0()).await;
    let e = export(t0(), "1");
    assert!(store.set_pending_export(p, id, &e).await.unwrap());
    // Someone else cannot take it.
    let intruder = Fence {
        holder: "x".into(),
        fence: f.fence,
    };
    assert_eq!(
        store.finish_lease(p, id, &intruder).await.unwrap(),
        FinishOutcome::Fenced
    );
    assert_eq!(
        store.finish_lease(p, id, &f).await.unwrap(),
        FinishOutcome::Pending(e)
    );
    // Taken, and the lease kept by the caller, who runs it next.
    assert!(
        store
            .get_sync(p, id)
            .await
            .unwrap()
            .unwrap()
            .pending_export
            .is_none()
    );
    assert!(matches!(
        store.acquire_lease(p, id, "y", TTL, t0()).await.unwrap(),
        LeaseOutcome::HeldBy(l) if l.fence == f.fence
    ));
    assert_eq!(
        store.finish_lease(p, id, &f).await.unwrap(),
        FinishOutcome::Released
    );
    assert_eq!(
        store.finish_lease(p, id, &f).await.unwrap(),
        FinishOutcome::Fenced
    );
    assert_eq!(grant(store, &s, "y", t0()).await.fence, f.fence + 1);
    assert_eq!(
        store.finish_lease(p, "NOSUCH", &f).await.unwrap(),
        FinishOutcome::Fenced
    );
}

// An export recorded as pending at the moment the holder finishes is either handed to the holder or stays
// pending for the next run: never dropped with the lease.
contract!(finish_lease_vs_concurrent_set_pending_export_never_loses_it);
async fn finish_lease_vs_concurrent_set_pending_export_never_loses_it(stores: Stores) {
    for round in 0..ROUNDS {
        let s = fresh_sync(stores.a.as_ref()).await;
        let (p, id) = (s.project_id.clone(), s.sync_id.clone());
        let f = grant(stores.a.as_ref(), &s, "run", t0()).await;
        let e = export(t0() + CDuration::minutes(round as i64), "new");
        let barrier = Arc::new(Barrier::new(2));
        let finish = {
            let (store, barrier, p, id, f) = (
                stores.a.clone(),
                barrier.clone(),
                p.clone(),
                id.clone(),
                f.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                store.finish_lease(&p, &id, &f).await
            })
        };
        let record = {
            let (store, barrier, p, id, e) = (
                stores.b.clone(),
                barrier.clone(),
                p.clone(),
                id.clone(),
                e.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                store.set_pending_export(&p, &id, &e).await
            })
        };
        let finished = finish.await.unwrap().unwrap();
        assert!(record.await.unwrap().unwrap(), "round {round}");
        let after = stores.a.get_sync(&p, &id).await.unwrap().unwrap();
        match finished {
            FinishOutcome::Released => {
                assert_eq!(
                    after.pending_export,
                    Some(e),
                    "round {round}: pending kept for the sweeper"
                );
                // Released for good: the fence can release nothing more.
                assert!(
                    !stores.a.release_lease(&p, &id, &f).await.unwrap(),
                    "round {round}"
                );
            }
            FinishOutcome::Pending(got) => {
                assert_eq!(got, e, "round {round}");
                assert_eq!(after.pending_export, None, "round {round}");
                // The holder kept the lease to run it.
                assert!(
                    stores.a.release_lease(&p, &id, &f).await.unwrap(),
                    "round {round}"
                );
            }
            FinishOutcome::Fenced => panic!("round {round}: the holder was fenced out"),
        }
    }
}

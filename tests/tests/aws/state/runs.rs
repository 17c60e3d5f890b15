//! Run ledgers: written only under the run's fence and while the sync exists, never rewritten once
//! finished, paged newest first; and the sweeper's query.

use std::collections::BTreeSet;
use std::sync::Arc;

use audience_core::model::{RunState, SyncConfig};
use audience_core::ports::{BudgetOutcome, PortError, StateStore};
use audience_sync_tests::unique_name;
use chrono::{DateTime, Duration as CDuration, TimeZone, Utc};
use tokio::sync::Barrier;

use super::{ROUNDS, Stores, contract, export, fresh_sync, grant, ledger, new_sync, t0};

contract!(a_finished_ledger_is_never_rewritten);
async fn a_finished_ledger_is_never_rewritten(stores: Stores) {
    let store = stores.a.as_ref();
    let s = fresh_sync(store).await;
    let f = grant(store, &s, "run", t0()).await;
    let run_id = ulid::Ulid::new().to_string();
    let mut run = ledger(&s, &run_id, RunState::Running, f.fence);
    assert!(store.put_run(&f, &run).await.unwrap());
    // Running: updated as the run goes.
    run.rows = 99;
    assert!(store.put_run(&f, &run).await.unwrap());
    run.state = RunState::Succeeded;
    assert!(store.put_run(&f, &run).await.unwrap());
    // Finished: a duplicate event's stub (or anything else) never replaces it, even under the live fence.
    for stub in [RunState::Skipped, RunState::Running, RunState::Failed] {
        let mut late = ledger(&s, &run_id, stub, f.fence);
        late.reason = Some("duplicate delivery".into());
        assert!(!store.put_run(&f, &late).await.unwrap(), "{stub:?}");
    }
    let stored = store.get_run(&s.sync_id, &run_id).await.unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.rows, stored.reason),
        (RunState::Succeeded, 99, None)
    );
    assert!(matches!(
        store
            .put_run(&f, &ledger(&s, "bad id!", RunState::Running, f.fence))
            .await,
        Err(PortError::Invalid(_))
    ));
}

contract!(runs_are_listed_newest_first_with_a_cursor);
async fn runs_are_listed_newest_first_with_a_cursor(stores: Stores) {
    let store = stores.a.as_ref();
    let s = fresh_sync(store).await;
    let f = grant(store, &s, "run", t0()).await;
    let mut ids = Vec::new();
    for i in 0..5u64 {
        let id = ulid::Ulid::from_parts(1_700_000_000_000 + i, 0).to_string();
        assert!(
            store
                .put_run(&f, &ledger(&s, &id, RunState::Succeeded, f.fence))
                .await
                .unwrap()
        );
        ids.push(id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let page = store
            .list_runs(&s.sync_id, 2, cursor.as_deref())
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
    assert_eq!(
        store.get_run(&s.sync_id, &ids[0]).await.unwrap(),
        Some(ledger(&s, &ids[0], RunState::Succeeded, f.fence))
    );
    assert!(matches!(
        store.list_runs(&s.sync_id, 2, Some("bad cursor!")).await,
        Err(PortError::Invalid(_))
    ));
    // Deleting the sync removes its runs.
    store.delete_sync(&s.project_id, &s.sync_id).await.unwrap();
    assert!(store.get_run(&s.sync_id, &ids[0]).await.unwrap().is_none());
    assert!(
        store
            .list_runs(&s.sync_id, 10, None)
            .await
            .unwrap()
            .runs
            .is_empty()
    );
}

contract!(put_run_after_delete_sync_writes_nothing);
async fn put_run_after_delete_sync_writes_nothing(stores: Stores) {
    let store = stores.a.as_ref();
    let s = fresh_sync(store).await;
    let f = grant(store, &s, "run", t0()).await;
    let (r1, r2) = (ulid::Ulid::new().to_string(), ulid::Ulid::new().to_string());
    assert!(
        store
            .put_run(&f, &ledger(&s, &r1, RunState::Running, f.fence))
            .await
            .unwrap()
    );
    store.delete_sync(&s.project_id, &s.sync_id).await.unwrap();
    // The run goes on writing under its (now dangling) fence: nothing lands, not even a new record.
    for id in [&r1, &r2] {
        assert!(
            !store
                .put_run(&f, &ledger(&s, id, RunState::Succeeded, f.fence))
                .await
                .unwrap()
        );
        assert!(store.get_run(&s.sync_id, id).await.unwrap().is_none());
    }
    assert!(
        !store
            .save_progress(&s.project_id, &s.sync_id, &f, &s.progress)
            .await
            .unwrap()
    );
    assert!(
        store
            .get_sync(&s.project_id, &s.sync_id)
            .await
            .unwrap()
            .is_none()
    );
    // A sync that never existed gets no ledger either.
    let never = new_sync(&unique_name("p"), "c");
    assert!(
        !store
            .put_run(&f, &ledger(&never, &r2, RunState::Running, f.fence))
            .await
            .unwrap()
    );
    assert!(store.get_run(&never.sync_id, &r2).await.unwrap().is_none());
}

// A delete racing a run's ledger write: whichever lands first, no run record outlives the sync.
contract!(delete_sync_racing_put_run_leaves_no_orphan);
async fn delete_sync_racing_put_run_leaves_no_orphan(stores: Stores) {
    for round in 0..ROUNDS {
        let s = fresh_sync(stores.a.as_ref()).await;
        let f = grant(stores.a.as_ref(), &s, "run", t0()).await;
        // Runs already there make the delete's query-and-remove take a while.
        for _ in 0..3 {
            let id = ulid::Ulid::new().to_string();
            assert!(
                stores
                    .a
                    .put_run(&f, &ledger(&s, &id, RunState::Succeeded, f.fence))
                    .await
                    .unwrap()
            );
        }
        let barrier = Arc::new(Barrier::new(2));
        let writer = {
            let (store, barrier, s, f) = (stores.b.clone(), barrier.clone(), s.clone(), f.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                for _ in 0..4 {
                    let id = ulid::Ulid::new().to_string();
                    store
                        .put_run(&f, &ledger(&s, &id, RunState::Running, f.fence))
                        .await?;
                }
                Ok::<_, PortError>(())
            })
        };
        barrier.wait().await;
        stores
            .a
            .delete_sync(&s.project_id, &s.sync_id)
            .await
            .unwrap();
        writer.await.unwrap().unwrap();
        let left = stores
            .a
            .list_runs(&s.sync_id, 100, None)
            .await
            .unwrap()
            .runs;
        assert!(
            left.is_empty(),
            "round {round}: orphan runs {:?}",
            left.iter().map(|r| &r.run_id).collect::<Vec<_>>()
        );
    }
}

async fn due(store: &dyn StateStore, now: DateTime<Utc>, limit: usize) -> BTreeSet<String> {
    let got = store.syncs_due(now, limit).await.unwrap();
    assert!(got.len() <= limit, "{got:?}");
    got.into_iter().map(|(_, s)| s).collect()
}

/// Sets the sync's next attempt under a lease granted at `granted_at`; releases it unless `keep`.
async fn set_next(
    store: &dyn StateStore,
    s: &SyncConfig,
    granted_at: DateTime<Utc>,
    at: Option<DateTime<Utc>>,
    keep: bool,
) {
    let f = grant(store, s, "run", granted_at).await;
    let mut p = store
        .get_sync(&s.project_id, &s.sync_id)
        .await
        .unwrap()
        .unwrap()
        .progress;
    p.next_attempt_at = at;
    assert!(
        store
            .save_progress(&s.project_id, &s.sync_id, &f, &p)
            .await
            .unwrap()
    );
    if !keep {
        assert!(
            store
                .release_lease(&s.project_id, &s.sync_id, &f)
                .await
                .unwrap()
        );
    }
}

contract!(syncs_due_are_those_with_work_and_a_free_lease);
async fn syncs_due_are_those_with_work_and_a_free_lease(stores: Stores) {
    let store = stores.a.as_ref();
    let now = t0() + CDuration::hours(1);
    // Created with a due next attempt: the scan's mirror is written at creation too.
    let mut created = new_sync(&unique_name("p"), "c");
    created.progress.next_attempt_at = Some(now);
    store.create_sync(&created).await.unwrap();
    let mut syncs = Vec::new();
    for _ in 0..7 {
        syncs.push(fresh_sync(store).await);
    }
    let [past, future, pending, leased, expired, _idle, cleared] = &syncs[..] else {
        unreachable!()
    };
    set_next(store, past, t0(), Some(now - CDuration::minutes(1)), false).await;
    set_next(
        store,
        future,
        t0(),
        Some(now + CDuration::seconds(1)),
        false,
    )
    .await;
    let e = export(t0(), "p");
    assert!(
        store
            .set_pending_export(&pending.project_id, &pending.sync_id, &e)
            .await
            .unwrap()
    );
    // Due, but its lease is live at `now`: another run is on it.
    set_next(store, leased, now, Some(now), true).await;
    // Due, and its lease (granted at t0 for 60 s) expired long ago: a run died holding it.
    set_next(store, expired, t0(), Some(now), true).await;
    // Due once, then cleared by the engine: the mirror goes with it.
    set_next(store, cleared, t0(), Some(now - CDuration::hours(1)), false).await;
    set_next(store, cleared, t0(), None, false).await;

    let want: BTreeSet<String> = [&created, past, pending, expired]
        .iter()
        .map(|s| s.sync_id.clone())
        .collect();
    assert_eq!(due(store, now, 100).await, want);
    // At most `limit`, all of them due.
    let two = due(store, now, 2).await;
    assert_eq!(two.len(), 2);
    assert!(two.is_subset(&want));
    assert!(due(store, now, 0).await.is_empty());
    // At t0 only the pending export is due (and the expired one's lease is still live).
    assert_eq!(
        due(store, t0(), 100).await,
        BTreeSet::from([pending.sync_id.clone()])
    );
    // The project ids come with the sync ids.
    let pairs = store.syncs_due(now, 100).await.unwrap();
    assert!(pairs.contains(&(past.project_id.clone(), past.sync_id.clone())));
}

contract!(daily_budget_allows_24_calls_per_utc_day);
async fn daily_budget_allows_24_calls_per_utc_day(stores: Stores) {
    let store = stores.a;
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

//! Retired syncs (a disconnect that keeps run history): the marker replaces the sync and its uniqueness
//! guard, the runs stay until the history is deleted, and markers are per project.

use audience_core::model::{RetiredSync, RunState};
use audience_core::ports::CreateSync;

use super::{Stores, contract, fresh_sync, grant, ledger, new_sync, t0};

contract!(a_retired_sync_keeps_its_runs_until_deleted);
async fn a_retired_sync_keeps_its_runs_until_deleted(stores: Stores) {
    let st = &stores.a;
    let s = fresh_sync(st.as_ref()).await;
    let fence = grant(st.as_ref(), &s, "h1", t0()).await;
    let run = ledger(
        &s,
        &ulid::Ulid::new().to_string(),
        RunState::Succeeded,
        fence.fence,
    );
    assert!(st.put_run(&fence, &run).await.unwrap());
    let other = fresh_sync(st.as_ref()).await;
    assert!(
        st.list_retired_syncs(&s.project_id)
            .await
            .unwrap()
            .is_empty()
    );

    let retired = RetiredSync::of(&s, t0());
    st.retire_sync(&retired).await.unwrap();
    // Idempotent: a retry after a failure half-way ends the same.
    stores.b.retire_sync(&retired).await.unwrap();
    assert!(
        st.get_sync(&s.project_id, &s.sync_id)
            .await
            .unwrap()
            .is_none()
    );
    let got = st
        .get_retired_sync(&s.project_id, &s.sync_id)
        .await
        .unwrap();
    assert_eq!(got.as_ref(), Some(&retired));
    assert!(
        st.get_retired_sync(&other.project_id, &s.sync_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        st.get_retired_sync(&s.project_id, "../x")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        st.list_retired_syncs(&s.project_id).await.unwrap(),
        vec![retired.clone()]
    );
    assert_eq!(
        st.list_runs(&s.sync_id, 10, None).await.unwrap().runs,
        vec![run]
    );
    let projects = st.projects_with_history().await.unwrap();
    assert!(projects.contains(&s.project_id));
    assert!(!projects.contains(&other.project_id));
    // The uniqueness guard went with the sync: the same cohort and advertiser make a new sync.
    let mut again = new_sync(&s.project_id, &s.cohort_id);
    again.advertiser_id = s.advertiser_id.clone();
    assert!(matches!(
        st.create_sync(&again).await.unwrap(),
        CreateSync::Created(_)
    ));
    // A fenced write of the retired sync is refused: no run lands after the retirement.
    let late = ledger(
        &s,
        &ulid::Ulid::new().to_string(),
        RunState::Succeeded,
        fence.fence,
    );
    assert!(!st.put_run(&fence, &late).await.unwrap());

    st.delete_retired_sync(&s.project_id, &s.sync_id)
        .await
        .unwrap();
    stores
        .b
        .delete_retired_sync(&s.project_id, &s.sync_id)
        .await
        .unwrap();
    assert!(
        st.get_retired_sync(&s.project_id, &s.sync_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        st.list_runs(&s.sync_id, 10, None)
            .await
            .unwrap()
            .runs
            .is_empty()
    );
    assert!(
        !st.projects_with_history()
            .await
            .unwrap()
            .contains(&s.project_id)
    );
    assert!(
        st.get_sync(&other.project_id, &other.sync_id)
            .await
            .unwrap()
            .is_some()
    );
}

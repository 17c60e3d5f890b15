//! Unmatched exports: one record per key (a repeat replaces it), newest first, limited, expired ones hidden.

use audience_core::cohort::naming::parse_export_key;
use audience_core::cohort::unmatched::UnmatchedExport;
use chrono::Duration as CDuration;

use super::{Stores, contract, t0};

contract!(unmatched_exports_one_per_key_newest_first);
async fn unmatched_exports_one_per_key_newest_first(stores: Stores) {
    let st = &stores.a;
    assert!(
        st.list_unmatched_exports(t0(), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let bad = parse_export_key("cohorts/notes.txt").unwrap_err();
    let m = UnmatchedExport::misnamed("cohorts/notes.txt", Some(10), &bad, t0());
    st.record_unmatched_export(&m).await.unwrap();
    // 150 distinct keys, then the misnamed one again (newer): 151 records, no more.
    for i in 0..150 {
        let key = format!("cohorts/c{i}_2026-03-01T12:00_existing.csv");
        let at = t0() + CDuration::seconds(i + 1);
        let u = UnmatchedExport::no_sync(&key, None, &format!("c{i}"), at);
        st.record_unmatched_export(&u).await.unwrap();
    }
    let again = UnmatchedExport::misnamed(
        "cohorts/notes.txt",
        Some(11),
        &bad,
        t0() + CDuration::hours(1),
    );
    stores.b.record_unmatched_export(&again).await.unwrap();
    let now = t0() + CDuration::hours(2);
    let list = st.list_unmatched_exports(now, 1000).await.unwrap();
    assert_eq!(list.len(), 151);
    assert_eq!(list[0], again);
    assert_eq!(list[1].key, "cohorts/c149_2026-03-01T12:00_existing.csv");
    assert_eq!(list[1].cohort_id.as_deref(), Some("c149"));
    assert_eq!(list[150].key, "cohorts/c0_2026-03-01T12:00_existing.csv");
    assert!(list.windows(2).all(|w| w[0].seen_at >= w[1].seen_at));
    assert_eq!(
        st.list_unmatched_exports(now, 100).await.unwrap().len(),
        100
    );
    // Past the retention only the refreshed one remains (DynamoDB's TTL is late: filtered on read).
    let late = t0() + CDuration::days(30) + CDuration::minutes(30);
    let left = st.list_unmatched_exports(late, 100).await.unwrap();
    assert_eq!(left, vec![again]);
}

//! `Adapters` wired from environment-style configuration, as a function does at cold start.

use std::collections::HashMap;

use audience_aws::{Adapters, Config};
use audience_core::ports::{CohortStore, StateStore};
use audience_sync_tests::{TestEnv, clients};

#[tokio::test]
async fn adapters_from_configuration() {
    let env = TestEnv::new().await.expect("env");
    let vars: HashMap<&str, String> = [
        ("TABLE_NAME", env.table.clone()),
        ("BUCKET_NAME", env.bucket.clone()),
        ("COHORT_PREFIX", "exports/".to_string()),
    ]
    .into_iter()
    .collect();
    let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let adapters = Adapters::new(&clients().await, &config).unwrap();
    // Without SYNC_RUNNER_ARN / SCHEDULER_ROLE_ARN there is nothing to schedule or invoke.
    assert!(adapters.schedules.is_none() && adapters.invoker.is_none());
    assert!(
        adapters
            .state
            .get_integration("p1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        adapters
            .cohorts
            .newest_existing_export("C1", None)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        adapters.cohorts.snapshot_key("p1", "S1", "R1-1"),
        "audience-sync/snapshots/p1/S1/R1-1.snapshot"
    );

    let missing = Config::from_lookup(|_| None).unwrap();
    assert!(Adapters::new(&clients().await, &missing).is_err());
}

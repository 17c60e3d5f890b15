use audience_aws::EventBridgeSchedules;
use audience_core::ports::{ScheduleRate, Schedules};
use audience_sync_tests::{ACCOUNT_ID, REGION, TestEnv};

#[tokio::test]
async fn schedule_create_update_disable_delete() {
    let env = TestEnv::new().await.expect("env");
    let target = format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:sync-runner");
    let role = format!("arn:aws:iam::{ACCOUNT_ID}:role/scheduler-invoke");
    let s = EventBridgeSchedules::new(
        env.clients.scheduler.clone(),
        env.schedule_group.clone(),
        &target,
        &role,
    );
    let sync_id = ulid::Ulid::new().to_string();
    assert!(s.get_schedule(&sync_id).await.unwrap().is_none());
    assert!(!s.set_schedule_enabled(&sync_id, false).await.unwrap());

    s.upsert_schedule("proj-1", &sync_id, ScheduleRate::Hourly, true)
        .await
        .unwrap();
    let got = s.get_schedule(&sync_id).await.unwrap().expect("created");
    assert_eq!(got.name, format!("sync-{sync_id}"));
    assert_eq!(got.expression, "rate(1 hour)");
    assert!(got.enabled);
    assert_eq!(
        got.input,
        format!(r#"{{"trigger":"schedule","project_id":"proj-1","sync_id":"{sync_id}"}}"#)
    );
    let input: serde_json::Value = serde_json::from_str(&got.input).unwrap();
    assert_eq!(
        input,
        serde_json::json!({"trigger": "schedule", "project_id": "proj-1", "sync_id": sync_id})
    );
    assert_eq!(got.target_arn, target);
    assert_eq!(got.role_arn, role);
    assert_eq!(got.flexible_window_minutes, Some(15));

    // Create-or-update: same name, new cadence.
    s.upsert_schedule("proj-1", &sync_id, ScheduleRate::Daily, true)
        .await
        .unwrap();
    let got = s.get_schedule(&sync_id).await.unwrap().unwrap();
    assert_eq!(got.expression, "rate(1 day)");
    assert_eq!(got.flexible_window_minutes, Some(60));

    // Disable keeps everything else.
    assert!(s.set_schedule_enabled(&sync_id, false).await.unwrap());
    let disabled = s.get_schedule(&sync_id).await.unwrap().unwrap();
    assert!(!disabled.enabled);
    assert_eq!(disabled.expression, "rate(1 day)");
    assert_eq!(disabled.input, got.input);
    assert_eq!(disabled.target_arn, target);
    assert_eq!(disabled.role_arn, role);
    assert!(s.set_schedule_enabled(&sync_id, true).await.unwrap());
    assert!(s.get_schedule(&sync_id).await.unwrap().unwrap().enabled);

    s.delete_schedule(&sync_id).await.unwrap();
    assert!(s.get_schedule(&sync_id).await.unwrap().is_none());
    s.delete_schedule(&sync_id).await.unwrap(); // missing is fine
}

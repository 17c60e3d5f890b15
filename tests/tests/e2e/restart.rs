//! With an external moto and an external sandbox, the stack can be stopped and started again (same `--name`)
//! without losing AWS's or TikTok's state: the same admin token and app, the integration still connected, and the
//! next export syncs only its delta against the committed snapshot.

use audience_sync_tests::local::exports::{Dirt, amplitude_export, users};
use chrono::{TimeZone, Utc};
use serde_json::json;
use tiktok_sandbox::{Sandbox, SandboxOptions};

use crate::support;

#[tokio::test]
async fn restart_keeps_aws_and_tiktok_state() {
    let sandbox = Sandbox::start(SandboxOptions {
        match_rate: 1.0,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    let name = support::stack_name();
    let flags = ["--tiktok-sandbox", sandbox.base_url.as_str()];
    let p = support::project();
    let cohort = support::cohort();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 25, 14, 0, 0).unwrap();
    let first = amplitude_export(&cohort, t0, &users(0..1_200), Dirt::NONE, false);

    let st = support::start_named(&name, &flags).await;
    assert_eq!(
        st.c.ready.tiktok_sandbox, sandbox.base_url,
        "the external sandbox is the one reported"
    );
    st.connect_with_email(&p).await;
    let sync = st
        .create_sync(
            &p,
            json!({"cohort_id": cohort, "advertiser_id": st.advertiser(), "cadence": "on_upload"}),
        )
        .await;
    let sid = sync["sync_id"].as_str().expect("sync_id").to_string();
    let k1 = st.upload(&first).await;
    assert_eq!(st.run_of(&p, &sid, &k1).await["state"], "succeeded");
    let before = st.c.ready.clone();
    drop(st);

    let st = support::start_named(&name, &flags).await;
    let after = &st.c.ready;
    assert_eq!(
        (
            &after.admin_token,
            &after.app_id,
            &after.bucket,
            &after.advertiser_ids
        ),
        (
            &before.admin_token,
            &before.app_id,
            &before.bucket,
            &before.advertiser_ids
        ),
        "a restarted stack keeps its secrets, app and bucket"
    );
    assert_eq!(st.integration(&p).await["status"], "connected");
    let second = amplitude_export(
        &cohort,
        t0 + chrono::Duration::hours(1),
        &users(30..1_250),
        Dirt::NONE,
        false,
    );
    let k2 = st.upload(&second).await;
    let r2 = st.run_of(&p, &sid, &k2).await;
    assert_eq!(r2["state"], "succeeded", "{r2}");
    assert_eq!(r2["adds"]["applied"], json!(50), "only the delta: {r2}");
    assert_eq!(r2["removes"]["applied"], json!(30), "only the delta: {r2}");
    st.assert_audience_is(&p, &sid, &second).await;
    let audiences =
        st.c.audiences_of(&st.advertiser())
            .await
            .expect("audiences");
    assert_eq!(
        audiences.len(),
        1,
        "one audience, not a new one after the restart"
    );
}

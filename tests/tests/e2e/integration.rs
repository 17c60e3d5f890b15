//! The integration's life: mapping immutability, disconnect and reconnect, a token revoked on TikTok's side,
//! and a cohort too small for a customer-file audience.

use std::time::Duration;

use audience_sync_tests::local::exports::{Dirt, amplitude_export, users};
use chrono::{TimeZone, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support;

#[tokio::test]
async fn mapping_is_immutable_until_disconnect() {
    let st = support::start(&[]).await;
    let p = support::project();
    let put = |body: Value| {
        let c = &st.c;
        let path = format!("/v1/projects/{p}/mapping");
        async move {
            c.api(Method::PUT, &path, Some(body))
                .await
                .expect("put mapping")
        }
    };
    let email = json!({"amplitude_property": "email", "tiktok_key": "EMAIL"});
    let phone =
        json!({"amplitude_property": "phone", "tiktok_key": "PHONE", "default_phone_region": "US"});

    let before = put(email.clone()).await;
    assert_eq!(
        (before.status, before.error_code()),
        (409, Some("not_connected")),
        "{}",
        before.body
    );

    st.c.connect(&p).await.expect("connect");
    assert_eq!(put(email.clone()).await.status, 201);
    assert_eq!(
        put(email.clone()).await.status,
        200,
        "the identical mapping again"
    );
    let same = put(json!({"amplitude_property": " Email ", "tiktok_key": "email"})).await;
    assert_eq!(
        same.status, 200,
        "the same mapping in another spelling: {}",
        same.body
    );
    let locked = put(phone.clone()).await;
    assert_eq!(
        (locked.status, locked.error_code()),
        (409, Some("mapping_locked")),
        "{}",
        locked.body
    );
    let integration = st.integration(&p).await;
    assert_eq!(
        integration["mapping"]["tiktok_key"], "EMAIL",
        "{integration}"
    );

    let gone =
        st.c.api(
            Method::DELETE,
            &format!("/v1/projects/{p}/integration"),
            None,
        )
        .await
        .expect("disconnect");
    assert_eq!(gone.status, 200, "{}", gone.body);
    st.c.connect(&p).await.expect("reconnect");
    assert_eq!(st.integration(&p).await["mapping"], Value::Null);
    assert_eq!(
        put(phone).await.status,
        201,
        "after a disconnect the key can change"
    );
}

#[tokio::test]
async fn disconnect_keeps_the_audience_and_reconnect_starts_clean() {
    let st = support::start(&[]).await;
    let p = support::project();
    let cohort = support::cohort();
    let sid = st.connected_on_upload_sync(&p, &cohort).await;
    let t0 = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap();
    let first = amplitude_export(&cohort, t0, &users(0..1_100), Dirt::NONE, false);
    let k1 = st.upload(&first).await;
    assert_eq!(st.run_of(&p, &sid, &k1).await["state"], "succeeded");
    let audience = st.sync(&p, &sid).await["tiktok_audience_id"]
        .as_str()
        .expect("audience")
        .to_string();

    let out =
        st.c.api(
            Method::DELETE,
            &format!("/v1/projects/{p}/integration"),
            None,
        )
        .await
        .expect("disconnect")
        .expect(200)
        .expect("200");
    assert_eq!(out["audiences_kept"], json!([audience]), "{out}");
    let i = st.integration(&p).await;
    assert_eq!(
        (
            i["status"].clone(),
            i["syncs"].clone(),
            i["mapping"].clone()
        ),
        (json!("not_connected"), json!(0), Value::Null),
        "{i}"
    );
    let missing =
        st.c.api(Method::GET, &format!("/v1/projects/{p}/syncs/{sid}"), None)
            .await
            .expect("get");
    assert_eq!(missing.status, 404);
    // TikTok keeps the audience, with its members.
    assert_eq!(
        st.c.audience_members(&audience).await.expect("members"),
        first.expected
    );
    // Disconnecting again is fine.
    let again =
        st.c.api(
            Method::DELETE,
            &format!("/v1/projects/{p}/integration"),
            None,
        )
        .await
        .expect("disconnect again");
    assert_eq!(again.status, 200, "{}", again.body);

    st.connect_with_email(&p).await;
    assert_eq!(st.integration(&p).await["status"], "connected");
    let sync2 = st
        .create_sync(
            &p,
            json!({"cohort_id": cohort, "advertiser_id": st.advertiser(), "cadence": "on_upload"}),
        )
        .await;
    let sid2 = sync2["sync_id"].as_str().expect("sync_id").to_string();
    assert_ne!(sid2, sid);
    let second = amplitude_export(
        &cohort,
        t0 + chrono::Duration::hours(1),
        &users(0..1_150),
        Dirt::NONE,
        false,
    );
    let k2 = st.upload(&second).await;
    let r = st.run_of(&p, &sid2, &k2).await;
    assert_eq!(r["state"], "succeeded", "{r}");
    // A new sync starts from nothing: the whole cohort is sent to a new audience.
    assert_eq!(r["adds"]["applied"], json!(second.expected.len()), "{r}");
    st.assert_audience_is(&p, &sid2, &second).await;
    assert_ne!(
        st.sync(&p, &sid2).await["tiktok_audience_id"],
        json!(audience)
    );
}

/// The user removes the app's access on TikTok: the next run fails with `reconnect_required`, the project's
/// schedules stop; a reconnect makes it `connected` again, the schedule resumes and the audience converges.
#[tokio::test]
async fn revoked_token_requires_reconnect_then_converges() {
    let st = support::start(&["--time-scale", "900"]).await;
    let p = support::project();
    let cohort = support::cohort();
    st.connect_with_email(&p).await;
    let sync = st
        .create_sync(
            &p,
            json!({"cohort_id": cohort, "advertiser_id": st.advertiser(), "cadence": "hourly"}),
        )
        .await;
    let sid = sync["sync_id"].as_str().expect("sync_id").to_string();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    let first = amplitude_export(&cohort, t0, &users(0..1_100), Dirt::NONE, false);
    let k1 = st.upload(&first).await;
    let r1 = st.run_of(&p, &sid, &k1).await;
    assert_eq!(r1["state"], "succeeded", "{r1}");

    st.c.revoke_tokens().await.expect("revoke");
    let second = amplitude_export(
        &cohort,
        t0 + chrono::Duration::hours(1),
        &users(0..1_250),
        Dirt::NONE,
        false,
    );
    let k2 = st.upload(&second).await;
    // The schedule runs the new export with the revoked token.
    let failed =
        st.c.wait_for_run(&p, &sid, Duration::from_secs(120), |r| {
            r["state"] == "failed"
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", support::log_tail(&st.log)));
    assert_eq!(failed["source_export"], json!(k2), "{failed}");
    let reason = failed["reason"].as_str().unwrap_or_default().to_lowercase();
    assert!(reason.contains("reconnect"), "{failed}");
    assert_eq!(st.integration(&p).await["status"], "reconnect_required");

    // Schedules are disabled: over three schedule periods no run is added. (A schedule that fired during the
    // failing run left a pending export, run right after it: let that settle before counting.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    let count = st.c.runs(&p, &sid).await.expect("runs").len();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let later = st.c.runs(&p, &sid).await.expect("runs");
    assert_eq!(
        later.len(),
        count,
        "no run while reconnect is required: {later:?}"
    );
    assert_eq!(
        st.c.audience_members(
            st.sync(&p, &sid).await["tiktok_audience_id"]
                .as_str()
                .expect("audience"),
        )
        .await
        .expect("members"),
        first.expected,
        "nothing was sent with the revoked token"
    );

    // The user reconnects hours later: TikTok has long processed the audience's create (the sandbox's
    // clock moves; `--time-scale` only speeds up schedules).
    st.c.sandbox_post("/_sandbox/clock", json!({"advance_ms": 6 * 3_600_000}))
        .await
        .expect("clock");
    let conn = st.c.connect(&p).await.expect("reconnect");
    assert_eq!(conn.callback_status, 200, "{}", conn.page_text);
    assert_eq!(st.integration(&p).await["status"], "connected");
    let done =
        st.c.wait_for_run(&p, &sid, Duration::from_secs(120), |r| {
            r["source_export"] == json!(k2) && r["state"] == "succeeded"
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", support::log_tail(&st.log)));
    assert_eq!(
        done["trigger"], "schedule",
        "the re-enabled schedule ran it: {done}"
    );
    st.assert_audience_is(&p, &sid, &second).await;
}

/// Customer-file mode below TikTok's 1,000 minimum: the run waits (with the count) and nothing reaches TikTok;
/// once the cohort grows, the audience is created with all of it.
#[tokio::test]
async fn too_few_users_waits_for_minimum() {
    let st = support::start(&[]).await;
    let p = support::project();
    let cohort = support::cohort();
    let sid = st.connected_on_upload_sync(&p, &cohort).await;
    let t0 = Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap();
    let small = amplitude_export(&cohort, t0, &users(0..300), Dirt::NONE, false);
    let k1 = st.upload(&small).await;
    let r1 = st.run_of(&p, &sid, &k1).await;
    assert_eq!(r1["state"], "waiting_for_minimum", "{r1}");
    let s = st.sync(&p, &sid).await;
    assert_eq!(s["waiting_for_minimum"], json!(300), "{s}");
    assert_eq!(s["tiktok_audience_id"], Value::Null, "{s}");
    assert!(
        st.c.audiences_of(&st.advertiser())
            .await
            .expect("audiences")
            .is_empty()
    );

    let grown = amplitude_export(
        &cohort,
        t0 + chrono::Duration::hours(1),
        &users(0..1_020),
        Dirt::NONE,
        false,
    );
    let k2 = st.upload(&grown).await;
    let r2 = st.run_of(&p, &sid, &k2).await;
    assert_eq!(r2["state"], "succeeded", "{r2}");
    st.assert_audience_is(&p, &sid, &grown).await;
}

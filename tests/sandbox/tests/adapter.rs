//! The sync engine's TikTok port (`AudienceApi`) through `AudienceAdapter` against the sandbox.

mod common;

use audience_core::digests::Digest;
use audience_core::identifiers::KeyKind;
use audience_core::sync::api::{ApiErrorKind, AudienceApi, FileAction, MappingAction};
use audience_tiktok::{AudienceAdapter, ExposeSecret};
use common::*;
use secrecy::SecretString;
use serde_json::json;

const ADV1: &str = "7100000000000000001";

fn to_digests(hex_digests: &[String]) -> Vec<Digest> {
    hex_digests
        .iter()
        .map(|h| {
            let mut b = [0u8; 32];
            hex::decode_to_slice(h, &mut b).expect("hex digest");
            Digest(b)
        })
        .collect()
}

#[tokio::test]
async fn adapter_runs_the_engine_operations() {
    let sb = sandbox().await;
    let client = client_for(&sb, 1000.0, 2);
    let token = connect(&sb, &client).await;
    let t = SecretString::from(token.expose_secret().to_string());
    let api = AudienceAdapter::new(client);
    let dir = tempfile::tempdir().unwrap();

    // Customer file: upload, create, append, remove, status.
    let base = digests(1600, "adapter");
    let f = write_lines(dir.path(), "base.csv", &base);
    let fp = api
        .upload_digest_file(&t, ADV1, KeyKind::Email, &f)
        .await
        .expect("upload");
    assert!(fp.request_id.is_some());
    let id = api
        .create_file_audience(
            &t,
            ADV1,
            "Cohort 1",
            KeyKind::Email,
            std::slice::from_ref(&fp.value),
        )
        .await
        .expect("create")
        .value;
    // Each edit waits for TikTok's processing of the previous one (runs hours apart).
    advance_clock(&sb, PROCESSING_MS).await;
    let more = write_lines(dir.path(), "more.csv", &digests(100, "more"));
    let fp_more = api
        .upload_digest_file(&t, ADV1, KeyKind::Email, &more)
        .await
        .unwrap()
        .value;
    api.update_file_audience(
        &t,
        ADV1,
        &id,
        FileAction::Append,
        std::slice::from_ref(&fp_more),
    )
    .await
    .expect("append");
    advance_clock(&sb, PROCESSING_MS).await;
    api.update_file_audience(
        &t,
        ADV1,
        &id,
        FileAction::Remove,
        std::slice::from_ref(&fp_more),
    )
    .await
    .expect("remove");
    advance_clock(&sb, PROCESSING_MS).await;
    let log = requests(&sb).await;
    let actions: Vec<_> = log
        .iter()
        .filter(|e| e["path"] == "/open_api/v1.3/dmp/custom_audience/update/")
        .map(|e| e["action"].clone())
        .collect();
    assert_eq!(actions, vec![json!("APPEND"), json!("REMOVE")]);
    let view = api
        .audience_status(&t, ADV1, &id)
        .await
        .expect("status")
        .value
        .expect("known");
    assert_eq!(view.name, "Cohort 1");
    assert!(view.is_valid);
    assert_eq!(view.cover_num, Some(matched(&base, 0.7) as u64));
    assert_eq!(
        api.audience_status(&t, ADV1, "404")
            .await
            .expect("unknown is not an error")
            .value,
        None
    );

    // Not editable: removing everything would leave fewer than 1,000 matched users.
    let e = api
        .update_file_audience(
            &t,
            ADV1,
            &id,
            FileAction::Remove,
            std::slice::from_ref(&fp.value),
        )
        .await
        .expect_err("too small");
    assert_eq!((e.kind, e.code), (ApiErrorKind::NotEditable, Some(40002)));

    // Streaming: a long name is cut by TikTok and still found by name; mapping with domain digests.
    let long = format!("Amplitude cohort {}", "x".repeat(80));
    let sid = api
        .create_stream_audience(&t, ADV1, &long)
        .await
        .expect("stream create")
        .value;
    advance_clock(&sb, NOT_READY_MS).await;
    let found = api
        .find_audiences_by_name(&t, ADV1, &long)
        .await
        .expect("find")
        .value;
    assert_eq!(found, vec![sid.clone()]);
    let found = api
        .find_audiences_by_name(&t, ADV1, "Cohort 1")
        .await
        .unwrap()
        .value;
    assert_eq!(found, vec![id.clone()]);
    let ds = digests(30, "stream");
    api.stream_mapping(
        &t,
        ADV1,
        &sid,
        KeyKind::Gaid,
        MappingAction::Add,
        &to_digests(&ds),
    )
    .await
    .expect("map");
    api.stream_mapping(
        &t,
        ADV1,
        &sid,
        KeyKind::Gaid,
        MappingAction::Delete,
        &to_digests(&ds[..10]),
    )
    .await
    .expect("unmap");
    let a = get_json(&sb, &format!("/_sandbox/audiences/{sid}")).await;
    assert_eq!(a["members"].as_array().unwrap().len(), 20);
    let captured = get_json(&sb, "/_sandbox/captured").await;
    let mapping = captured
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "/open_api/v1.3/segment/mapping/")
        .unwrap()
        .clone();
    assert_eq!(
        mapping["body"]["fields"]["id_schema"],
        json!(["AAID_SHA256"])
    );

    // Error kinds the engine acts on.
    set_faults(&sb, json!({"rate": 1.0, "codes": [50000]})).await;
    let e = api
        .find_audiences_by_name(&t, ADV1, "x")
        .await
        .expect_err("server errors");
    assert_eq!(e.kind, ApiErrorKind::GaveUp);
    set_faults(&sb, json!({"drop_after_apply_rate": 1.0})).await;
    let e = api
        .create_stream_audience(&t, ADV1, "lost")
        .await
        .expect_err("dropped");
    assert_eq!(e.kind, ApiErrorKind::OutcomeUnknown);
    clear_faults(&sb).await;
    // Malformed lines do not reject a file (TikTok reports them later); an empty file is rejected.
    let bad = write_lines(dir.path(), "bad.csv", &[]);
    let e = api
        .upload_digest_file(&t, ADV1, KeyKind::Email, &bad)
        .await
        .expect_err("rejected");
    assert_eq!((e.kind, e.code), (ApiErrorKind::FileRejected, Some(40906)));
    post_json(
        &sb,
        "/_sandbox/tokens/revoke",
        json!({"app_id": sb.app_id()}),
    )
    .await;
    let e = api
        .audience_status(&t, ADV1, &id)
        .await
        .expect_err("revoked");
    assert_eq!(
        (e.kind, e.code),
        (ApiErrorKind::ReconnectRequired, Some(40105))
    );
    assert!(e.request_id.is_some());

    // Counters: every request the sandbox saw, and the retries of the faulted calls.
    let c = api.counters();
    let sent = requests(&sb)
        .await
        .iter()
        .filter(|e| e["path"].as_str().unwrap().starts_with("/open_api/"))
        .count() as u64;
    assert_eq!(c.calls, sent);
    assert_eq!(
        c.retries, 1,
        "the 50000 call was retried once (2 attempts); the dropped create was not"
    );
}

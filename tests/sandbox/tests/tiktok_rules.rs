//! TikTok's audience rules, each on by default and checked over real HTTP: the processing window after an
//! edit, streaming readiness and the allow-list, file limits and expiry, malformed lines reported in the
//! history, and audience expiry. Limits, codes, optional fields and scopes are in `tiktok_rules_api.rs`.

mod common;

use common::raw_api::*;
use common::*;
use serde_json::json;
use tiktok_sandbox::{
    MSG_EXPIRED, MSG_NOT_READY, MSG_PROCESSING, MSG_TOO_SMALL, NotEditable, Rules, SandboxOptions,
    not_editable_cause,
};

const DAY_MS: i64 = 86_400_000;

fn message(v: &serde_json::Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn audiences_process_for_6_hours_after_each_edit() {
    assert_eq!(Rules::default().processing_ms, PROCESSING_MS);
    let sb = sandbox().await;
    let token = token_of(&sb).await;
    let base = digests(1600, "proc");
    let id = created_id(&sb, &token, &[upload_ok(&sb, &token, &base).await]).await;
    // Processing: not valid, no size yet, and edits answer 40002 with TikTok's processing message.
    let (d, _) = get_audience(&sb, &token, &id).await;
    assert_eq!(
        (d["is_valid"].clone(), d["cover_num"].clone()),
        (json!(false), json!(0))
    );
    let more = upload_ok(&sb, &token, &digests(300, "proc-more")).await;
    let r = update_files(&sb, &token, &id, "APPEND", std::slice::from_ref(&more)).await;
    assert_eq!((code(&r), message(&r)), (40002, MSG_PROCESSING));
    assert_eq!(not_editable_cause(message(&r)), NotEditable::Processing);
    advance_clock(&sb, PROCESSING_MS - 1_000).await;
    let r = update_files(&sb, &token, &id, "REMOVE", std::slice::from_ref(&more)).await;
    assert_eq!(code(&r), 40002, "any action, until the window ends: {r}");
    advance_clock(&sb, 1_000).await;
    let m1 = matched(&base, 0.7);
    let (d, _) = get_audience(&sb, &token, &id).await;
    assert_eq!(
        (d["is_valid"].clone(), d["cover_num"].clone()),
        (json!(true), json!(m1))
    );

    // An update starts a new window: the previous size shows until it is processed.
    let r = update_files(&sb, &token, &id, "APPEND", std::slice::from_ref(&more)).await;
    assert_eq!(code(&r), 0, "{r}");
    let (d, _) = get_audience(&sb, &token, &id).await;
    assert_eq!(
        (d["is_valid"].clone(), d["cover_num"].clone()),
        (json!(false), json!(m1))
    );
    let rename = api_post(
        &sb,
        Some(&token),
        "dmp/custom_audience/update/",
        json!({"advertiser_id": ADV1, "custom_audience_id": id, "custom_audience_name": "n"}),
    )
    .await
    .1;
    assert_eq!(code(&rename), 40002, "a rename is an update too: {rename}");
    advance_clock(&sb, PROCESSING_MS).await;
    let mut all = base.clone();
    all.extend(digests(300, "proc-more"));
    let (d, _) = get_audience(&sb, &token, &id).await;
    assert_eq!(d["cover_num"], json!(matched(&all, 0.7)));

    // The size rule keeps its own 40002 message, so a client can tell the two apart.
    let everything = upload_ok(&sb, &token, &all).await;
    let r = update_files(&sb, &token, &id, "REMOVE", &[everything]).await;
    assert_eq!(code(&r), 40002);
    assert!(message(&r).starts_with(MSG_TOO_SMALL), "{r}");
    assert_eq!(not_editable_cause(message(&r)), NotEditable::TooSmall);
    assert_ne!(MSG_TOO_SMALL, MSG_PROCESSING);

    // The window is configurable per sandbox.
    let (s, _) = post_json(&sb, "/_sandbox/rules", json!({"processing_ms": 60_000})).await;
    assert_eq!(s, 200);
    let r = update_files(&sb, &token, &id, "APPEND", std::slice::from_ref(&more)).await;
    assert_eq!(code(&r), 0, "{r}");
    advance_clock(&sb, 60_000).await;
    let (d, _) = get_audience(&sb, &token, &id).await;
    assert_eq!(d["is_valid"], true, "processed after the configured minute");
}

#[tokio::test]
async fn a_new_streaming_audience_is_not_ready_for_90_seconds() {
    assert_eq!(Rules::default().streaming_not_ready_ms, NOT_READY_MS);
    let sb = sandbox().await;
    let token = token_of(&sb).await;
    let sid = create_stream_audience(&sb, &token, "fresh").await;
    let ds = digests(3, "ready");
    let r = map_users(&sb, &token, &sid, &ds).await;
    assert_eq!((code(&r), message(&r)), (40201, MSG_NOT_READY));
    advance_clock(&sb, NOT_READY_MS - 1_000).await;
    assert_eq!(code(&map_users(&sb, &token, &sid, &ds).await), 40201);
    advance_clock(&sb, 1_000).await;
    assert_eq!(code(&map_users(&sb, &token, &sid, &ds).await), 0);
    let a = get_json(&sb, &format!("/_sandbox/audiences/{sid}")).await;
    assert_eq!(
        a["members"].as_array().map(Vec::len),
        Some(3),
        "refused mappings applied nothing"
    );
}

#[tokio::test]
async fn apps_not_allow_listed_for_streaming_get_40118() {
    let sb = sandbox().await;
    // A second app with the same advertiser and scopes, not allow-listed (the default for a new app).
    let app = json!({"app_id": "plain", "secret": "plain-secret", "redirect_uris": ["http://127.0.0.1:*"],
        "advertisers": [{"advertiser_id": ADV1, "advertiser_name": "One"}], "scopes": [30, 31]});
    assert_eq!(post_json(&sb, "/_sandbox/apps", app.clone()).await.0, 200);
    let c = client_for(&sb, 1000.0, 1);
    let auth = consent_code(&sb, &c, "plain").await;
    let (_, g) = api_post(
        &sb,
        None,
        "oauth2/access_token/",
        json!({"app_id": "plain", "secret": "plain-secret", "auth_code": auth}),
    )
    .await;
    let t = g["data"]["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let (_, r) = api_post(
        &sb,
        Some(&t),
        "segment/audience/",
        json!({"advertiser_id": ADV1, "action": "create", "custom_audience_name": "x"}),
    )
    .await;
    assert_eq!(code(&r), 40118, "{r}");
    let default_token = token_of(&sb).await;
    let sid = create_stream_audience(&sb, &default_token, "allowed").await;
    advance_clock(&sb, NOT_READY_MS).await;
    assert_eq!(
        code(&map_users(&sb, &t, &sid, &digests(1, "a")).await),
        40118
    );
    // Customer files are not gated.
    let fp = upload_ok(&sb, &t, &digests(2, "plain")).await;
    assert_eq!(fp.len(), 16);
    // The flag is per app: allow-listing the app opens the streaming API.
    let mut allowed = app;
    allowed["streaming_allowed"] = json!(true);
    post_json(&sb, "/_sandbox/apps", allowed).await;
    let auth = consent_code(&sb, &c, "plain").await;
    let (_, g) = api_post(
        &sb,
        None,
        "oauth2/access_token/",
        json!({"app_id": "plain", "secret": "plain-secret", "auth_code": auth}),
    )
    .await;
    let t2 = g["data"]["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(code(&map_users(&sb, &t2, &sid, &digests(1, "a")).await), 0);
}

#[tokio::test]
async fn files_over_50_mb_are_40907() {
    let limit = Rules::default().max_file_bytes;
    assert_eq!(limit, 50 * 1024 * 1024);
    let sb = sandbox().await;
    let token = token_of(&sb).await;
    // The size is checked before the signature, so the (unmatched) signature does not matter here.
    let big = vec![b'a'; limit as usize + 1];
    let r = upload_with(&sb, &token, "EMAIL_SHA256", big, Some("0".repeat(32)), &[]).await;
    assert_eq!(code(&r), 40907, "{r}");
    million_digests_go_up_in_files_under_50_mb(&sb, &token).await;
    // Configurable: with a 200-byte limit, 3 lines (195 bytes) pass and 4 do not.
    post_json(&sb, "/_sandbox/rules", json!({"max_file_bytes": 200})).await;
    let ds = digests(4, "size");
    assert_eq!(
        code(&upload_with(&sb, &token, "EMAIL_SHA256", lines(&ds[..3]), None, &[]).await),
        0
    );
    assert_eq!(
        code(&upload_with(&sb, &token, "EMAIL_SHA256", lines(&ds), None, &[]).await),
        40907
    );
}

/// Issue 12 (13): audience_core's planner and writer against the limit, read strictly (50,000,000 bytes, not
/// 50 MiB). 1M digests as one 65 MB file (the old default) are refused; planned, even by a caller asking
/// for every digest in one file, they become files of at most 50 MB that TikTok takes in one create.
async fn million_digests_go_up_in_files_under_50_mb(
    sb: &tiktok_sandbox::RunningSandbox,
    token: &str,
) {
    use audience_core::digests::Digest;
    use audience_core::sync::batches::{
        DEFAULT_DIGESTS_PER_FILE, MAX_FILE_BYTES, MAX_FILES_PER_CALL, plan_file_calls,
        write_digest_file,
    };
    post_json(
        sb,
        "/_sandbox/rules",
        json!({"max_file_bytes": MAX_FILE_BYTES}),
    )
    .await;
    let hex = digests(1_000_000, "million");
    let one_file = lines(&hex);
    assert_eq!(one_file.len(), 65_000_000);
    let r = upload_with(
        sb,
        token,
        "EMAIL_SHA256",
        one_file,
        Some("0".repeat(32)),
        &[],
    )
    .await;
    assert_eq!(code(&r), 40907, "one 65 MB file: {r}");
    let ds: Vec<Digest> = hex.iter().filter_map(|h| Digest::from_hex(h)).collect();
    assert_eq!(ds.len(), hex.len());
    drop(hex);
    let dir = tempfile::tempdir().expect("tmp");
    for asked in [DEFAULT_DIGESTS_PER_FILE, usize::MAX] {
        let calls = plan_file_calls(ds.len(), asked, 50, MAX_FILES_PER_CALL);
        assert_eq!(calls.len(), 1, "one create carries them all");
        assert_eq!(calls[0].files.len(), 2, "asked {asked} per file");
        let mut paths = Vec::new();
        for (i, f) in calls[0].files.iter().enumerate() {
            let p = write_digest_file(dir.path(), &format!("m{i}"), &ds[f.clone()]).expect("write");
            let bytes = std::fs::read(&p).expect("read back");
            assert!(bytes.len() <= MAX_FILE_BYTES, "{} bytes", bytes.len());
            let env = upload_with(sb, token, "EMAIL_SHA256", bytes, None, &[]).await;
            assert_eq!(code(&env), 0, "file {i} of {asked} per file: {env}");
            paths.push(
                env["data"]["file_path"]
                    .as_str()
                    .expect("file_path")
                    .to_string(),
            );
        }
        created_id(sb, token, &paths).await;
    }
    post_json(
        sb,
        "/_sandbox/rules",
        json!({"max_file_bytes": 50 * 1024 * 1024}),
    )
    .await;
}

#[tokio::test]
async fn an_audience_uses_at_most_500_files_over_its_life() {
    assert_eq!(Rules::default().max_files_per_audience, 500);
    let sb = sandbox().await;
    let token = token_of(&sb).await;
    let mut paths = Vec::new();
    for i in 0..500 {
        // Distinct contents make distinct uploads; 1,600 users ride in the first file.
        let ds = if i == 0 {
            digests(1600, "files")
        } else {
            digests(1, &format!("f{i}"))
        };
        paths.push(upload_ok(&sb, &token, &ds).await);
    }
    let id = created_id(&sb, &token, &paths).await;
    advance_clock(&sb, PROCESSING_MS).await;
    // Files it already used do not count again; a 501st does.
    let r = update_files(&sb, &token, &id, "APPEND", &paths[..2]).await;
    assert_eq!(code(&r), 0, "{r}");
    advance_clock(&sb, PROCESSING_MS).await;
    let extra = upload_ok(&sb, &token, &digests(1, "extra")).await;
    let r = update_files(&sb, &token, &id, "APPEND", &[extra]).await;
    assert_eq!(code(&r), 40911, "{r}");
}

#[tokio::test]
async fn uploaded_file_paths_expire_after_7_days() {
    assert_eq!(Rules::default().file_ttl_ms, 7 * DAY_MS);
    let sb = sandbox().await;
    let token = token_of(&sb).await;
    let old = upload_ok(&sb, &token, &digests(1600, "ttl")).await;
    advance_clock(&sb, 7 * DAY_MS - 1_000).await;
    let id = created_id(&sb, &token, std::slice::from_ref(&old)).await;
    advance_clock(&sb, PROCESSING_MS).await;
    let r = update_files(&sb, &token, &id, "APPEND", std::slice::from_ref(&old)).await;
    assert_eq!(code(&r), 40910, "{r}");
    assert_eq!(
        code(&create_file_audience(&sb, &token, &[old]).await),
        40910
    );
    let fresh = upload_ok(&sb, &token, &digests(1600, "ttl")).await;
    assert_eq!(
        code(&update_files(&sb, &token, &id, "APPEND", &[fresh]).await),
        0
    );
}

#[tokio::test]
async fn empty_files_are_40906_and_other_calculate_types_40909() {
    let sb = sandbox().await;
    let token = token_of(&sb).await;
    assert_eq!(
        code(&upload_with(&sb, &token, "EMAIL_SHA256", vec![], None, &[]).await),
        40906
    );
    assert_eq!(
        code(&upload_with(&sb, &token, "EMAIL_SHA256", b"\n\r\n".to_vec(), None, &[]).await),
        40906
    );
    let phone = upload_with(
        &sb,
        &token,
        "PHONE_SHA256",
        lines(&digests(2, "ph")),
        None,
        &[],
    )
    .await;
    let fp = phone["data"]["file_path"]
        .as_str()
        .expect("path")
        .to_string();
    assert_eq!(code(&create_file_audience(&sb, &token, &[fp]).await), 40909);
}

#[tokio::test]
async fn malformed_lines_are_reported_in_the_audience_history() {
    let sb = sandbox().await;
    let token = token_of(&sb).await;
    let good = digests(1500, "hist");
    let mut rows = good.clone();
    rows.insert(2, "someone@example.com".into());
    rows.insert(10, good[0].to_uppercase());
    rows.push("abc".into());
    let env = upload_with(&sb, &token, "EMAIL_SHA256", lines(&rows), None, &[]).await;
    assert_eq!(code(&env), 0, "TikTok accepts the file: {env}");
    let fp = env["data"]["file_path"].as_str().expect("path").to_string();
    let id = created_id(&sb, &token, std::slice::from_ref(&fp)).await;
    let (_, history) = get_audience(&sb, &token, &id).await;
    let h = &history[0];
    assert_eq!(h["action"], "CREATE");
    let msg = h["msg"].as_str().expect("msg");
    assert!(msg.contains("3 of 1503 lines"), "{msg}");
    assert!(msg.contains("lines 3, 11, 1503"), "{msg}");
    for key in ["action_detail", "editor", "opt_time"] {
        assert!(h[key].is_string(), "{key} in {h}");
    }
    let a = get_json(&sb, &format!("/_sandbox/audiences/{id}")).await;
    assert_eq!(
        a["members"].as_array().map(Vec::len),
        Some(1500),
        "the rest is used"
    );
}

#[tokio::test]
async fn audiences_expire_after_12_months_without_edits() {
    assert_eq!(Rules::default().audience_ttl_ms, 365 * DAY_MS);
    let sb = sandbox().await;
    let token = token_of(&sb).await;
    let id = created_id(
        &sb,
        &token,
        &[upload_ok(&sb, &token, &digests(1600, "exp")).await],
    )
    .await;
    let sid = create_stream_audience(&sb, &token, "exp").await;
    advance_clock(&sb, 300 * DAY_MS).await;
    let (d, _) = get_audience(&sb, &token, &id).await;
    assert_eq!(
        (d["is_valid"].clone(), d["is_expiring"].clone()),
        (json!(true), json!(false))
    );
    advance_clock(&sb, 6 * DAY_MS).await;
    let (d, _) = get_audience(&sb, &token, &id).await;
    assert_eq!(
        (d["is_valid"].clone(), d["is_expiring"].clone()),
        (json!(true), json!(true)),
        "within 60 days"
    );
    advance_clock(&sb, 59 * DAY_MS).await;
    let (d, _) = get_audience(&sb, &token, &id).await;
    assert_eq!(d["is_valid"], false, "expired: {d}");
    let expired_at = d["expired_time"]
        .as_str()
        .expect("expired_time")
        .to_string();
    let now = chrono::Utc::now() + chrono::Duration::days(365);
    assert!(
        expired_at <= now.format("%Y-%m-%d %H:%M:%S").to_string(),
        "{expired_at}"
    );
    // Edits are refused with 40002 and TikTok's expiry message; only delete is allowed.
    let fresh = upload_ok(&sb, &token, &digests(1600, "exp2")).await;
    let r = update_files(&sb, &token, &id, "APPEND", &[fresh]).await;
    assert_eq!((code(&r), message(&r)), (40002, MSG_EXPIRED));
    assert_eq!(not_editable_cause(message(&r)), NotEditable::Expired);
    let r = map_users(&sb, &token, &sid, &digests(1, "late")).await;
    assert_eq!((code(&r), message(&r)), (40002, MSG_EXPIRED));
    let (_, r) = api_post(
        &sb,
        Some(&token),
        "dmp/custom_audience/delete/",
        json!({"advertiser_id": ADV1, "custom_audience_ids": [id]}),
    )
    .await;
    assert_eq!(code(&r), 0, "{r}");
}

#[tokio::test]
async fn an_edit_restarts_the_expiry_clock() {
    let sb = sandbox_with(SandboxOptions {
        qps: 10_000,
        rules: no_minute_limits(),
        ..Default::default()
    })
    .await;
    let token = token_of(&sb).await;
    let id = created_id(
        &sb,
        &token,
        &[upload_ok(&sb, &token, &digests(1600, "keep")).await],
    )
    .await;
    advance_clock(&sb, 200 * DAY_MS).await;
    let fresh = upload_ok(&sb, &token, &digests(1600, "keep2")).await;
    assert_eq!(
        code(&update_files(&sb, &token, &id, "APPEND", &[fresh]).await),
        0
    );
    advance_clock(&sb, 200 * DAY_MS).await;
    let (d, _) = get_audience(&sb, &token, &id).await;
    assert_eq!(d["is_valid"], true, "200 days after the last edit: {d}");
}

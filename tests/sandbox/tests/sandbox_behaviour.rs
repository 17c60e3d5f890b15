//! The sandbox's documented behaviours, each checked over real HTTP with plain requests (no client logic
//! in between), so that the sandbox itself is pinned down independently of the client.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{Value, json};
use tiktok_sandbox::SandboxOptions;

const ADV1: &str = "7100000000000000001";
const ADV2: &str = "7100000000000000002";

fn md5_hex(b: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(b))
}

/// Uploads bytes as a customer file by hand; returns the envelope.
async fn upload_raw(
    sb: &tiktok_sandbox::RunningSandbox,
    token: &str,
    adv: &str,
    calc: &str,
    name: &str,
    bytes: Vec<u8>,
    signature: Option<String>,
) -> Value {
    let sig = signature.unwrap_or_else(|| md5_hex(&bytes));
    let form = reqwest::multipart::Form::new()
        .text("advertiser_id", adv.to_string())
        .text("calculate_type", calc.to_string())
        .text("file_signature", sig)
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
        );
    let r = raw()
        .post(format!(
            "{}/open_api/v1.3/dmp/custom_audience/file/upload/",
            sb.base_url
        ))
        .header("Access-Token", token)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    r.json().await.expect("upload envelope")
}

fn lines(ds: &[String]) -> Vec<u8> {
    let mut s = ds.join("\n");
    s.push('\n');
    s.into_bytes()
}

async fn token_for(sb: &tiktok_sandbox::RunningSandbox) -> String {
    use audience_tiktok::ExposeSecret;
    let c = client_for(sb, 1000.0, 1);
    connect(sb, &c).await.expose_secret().to_string()
}

async fn file_path(
    sb: &tiktok_sandbox::RunningSandbox,
    token: &str,
    adv: &str,
    ds: &[String],
) -> String {
    let env = upload_raw(sb, token, adv, "EMAIL_SHA256", "a.csv", lines(ds), None).await;
    assert_eq!(code(&env), 0, "{env}");
    env["data"]["file_path"]
        .as_str()
        .expect("file_path")
        .to_string()
}

async fn create(
    sb: &tiktok_sandbox::RunningSandbox,
    token: &str,
    adv: &str,
    name: &str,
    paths: &[String],
) -> Value {
    api_post(
        sb,
        Some(token),
        "dmp/custom_audience/create/",
        json!({"advertiser_id": adv, "custom_audience_name": name, "calculate_type": "EMAIL_SHA256", "file_paths": paths}),
    )
    .await
    .1
}

async fn update(
    sb: &tiktok_sandbox::RunningSandbox,
    token: &str,
    id: &str,
    action: Option<&str>,
    paths: &[String],
) -> Value {
    let mut body = json!({"advertiser_id": ADV1, "custom_audience_id": id, "file_paths": paths});
    if let Some(a) = action {
        body["action"] = json!(a);
    }
    api_post(sb, Some(token), "dmp/custom_audience/update/", body)
        .await
        .1
}

async fn inspect(sb: &tiktok_sandbox::RunningSandbox, id: &str) -> Value {
    get_json(sb, &format!("/_sandbox/audiences/{id}")).await
}

fn redirect_query(resp: &reqwest::Response) -> HashMap<String, String> {
    let loc = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location");
    url::Url::parse(loc)
        .expect("url")
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn consent_approve_deny_and_unregistered_redirect() {
    let sb = sandbox().await;
    let auth = format!("{}/portal/auth", sb.base_url);
    let ok = raw()
        .get(&auth)
        .query(&[
            ("app_id", sb.app_id()),
            ("state", "xyz 1"),
            ("redirect_uri", "http://127.0.0.1:8080/cb?x=1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 302);
    let q = redirect_query(&ok);
    assert_eq!(q["state"], "xyz 1");
    assert_eq!(q["x"], "1", "the redirect URI's own query is kept");
    assert!(q["auth_code"].len() >= 16);
    assert!(
        ok.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("http://127.0.0.1:8080/cb?")
    );

    let (s, _) = post_json(&sb, "/_sandbox/consent", json!({"mode": "deny"})).await;
    assert_eq!(s, 200);
    let denied = raw()
        .get(&auth)
        .query(&[
            ("app_id", sb.app_id()),
            ("state", "s2"),
            ("redirect_uri", "http://127.0.0.1:1/cb"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 302);
    let q = redirect_query(&denied);
    assert_eq!(q.get("error").map(String::as_str), Some("access_denied"));
    assert_eq!(q["state"], "s2");
    assert!(!q.contains_key("auth_code") && !q.contains_key("code"));

    for bad in ["https://evil.example/cb", "http://localhost:1/cb"] {
        let r = raw()
            .get(&auth)
            .query(&[
                ("app_id", sb.app_id()),
                ("state", "s"),
                ("redirect_uri", bad),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{bad} is not registered");
    }
    let r = raw()
        .get(&auth)
        .query(&[("app_id", "nope"), ("redirect_uri", "http://127.0.0.1:1/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "unknown app");

    let log = requests(&sb).await;
    let statuses: Vec<i64> = log
        .iter()
        .filter(|e| e["path"] == "/portal/auth")
        .map(|e| e["http_status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, vec![302, 302, 400, 400, 400]);
}

#[tokio::test]
async fn auth_code_is_single_use_and_expires_after_an_hour() {
    let sb = sandbox().await;
    let c = client_for(&sb, 1000.0, 1);
    let exchange = |code: String| {
        let sb = &sb;
        async move {
            api_post(
                sb,
                None,
                "oauth2/access_token/",
                json!({"app_id": sb.app_id(), "secret": sb.secret(), "auth_code": code}),
            )
            .await
            .1
        }
    };
    let code1 = consent_code(&sb, &c, sb.app_id()).await;
    let first = exchange(code1.clone()).await;
    assert_eq!(code(&first), 0, "{first}");
    assert!(first["data"]["access_token"].is_string());
    assert_eq!(
        first["data"]["advertiser_ids"],
        json!([ADV1, ADV2]),
        "ids are JSON strings"
    );
    assert_eq!(first["data"]["scope"], json!([30, 31, 100]));
    assert_eq!(code(&exchange(code1).await), 40110, "second use");

    let code2 = consent_code(&sb, &c, sb.app_id()).await;
    let (s, _) = post_json(&sb, "/_sandbox/clock", json!({"advance_ms": 3_600_000})).await;
    assert_eq!(s, 200);
    assert_eq!(
        code(&exchange(code2).await),
        40110,
        "expired after one hour"
    );

    let code3 = consent_code(&sb, &c, sb.app_id()).await;
    post_json(&sb, "/_sandbox/clock", json!({"advance_ms": 3_599_000})).await;
    assert_eq!(
        code(&exchange(code3).await),
        0,
        "still valid just under one hour"
    );

    let code4 = consent_code(&sb, &c, sb.app_id()).await;
    let wrong = api_post(
        &sb,
        None,
        "oauth2/access_token/",
        json!({"app_id": sb.app_id(), "secret": "wrong", "auth_code": code4}),
    )
    .await
    .1;
    assert_eq!(code(&wrong), 40101, "a wrong app secret is TikTok's 40101");
    assert_eq!(code(&exchange("not-a-code".into()).await), 40110);
}

#[tokio::test]
async fn tokens_are_bound_to_app_advertisers_and_scopes() {
    let sb = sandbox().await;
    let token = token_for(&sb).await;
    let q = [("advertiser_id", ADV1), ("custom_audience_ids", "[\"1\"]")];
    // Missing and unknown tokens.
    assert_eq!(
        code(&api_get(&sb, None, "dmp/custom_audience/get/", &q).await.1),
        40104
    );
    assert_eq!(
        code(
            &api_get(&sb, Some(""), "dmp/custom_audience/get/", &q)
                .await
                .1
        ),
        40104
    );
    assert_eq!(
        code(&api_get(&sb, Some("bogus"), "user/info/", &[]).await.1),
        40105
    );
    // An advertiser the token does not cover.
    let (_, r) = api_get(
        &sb,
        Some(&token),
        "dmp/custom_audience/list/",
        &[("advertiser_id", "999")],
    )
    .await;
    assert_eq!(code(&r), 40106);
    // Every answer is an envelope with HTTP 200.
    let (s, r) = api_get(&sb, Some(&token), "user/info/", &[]).await;
    assert_eq!((s, code(&r)), (200, 0));
    assert!(r["request_id"].is_string());

    // A second app granted only scope 30 (read): writes answer 40001, reads work.
    let app2 = json!({"app_id": "app-two", "secret": "s2", "redirect_uris": ["http://127.0.0.1:*"],
        "advertisers": [{"advertiser_id": "555", "advertiser_name": "Five"}], "scopes": [30]});
    assert_eq!(post_json(&sb, "/_sandbox/apps", app2).await.0, 200);
    let c = client_for(&sb, 1000.0, 1);
    let code2 = consent_code(&sb, &c, "app-two").await;
    let g = api_post(
        &sb,
        None,
        "oauth2/access_token/",
        json!({"app_id": "app-two", "secret": "s2", "auth_code": code2}),
    )
    .await
    .1;
    let t2 = g["data"]["access_token"].as_str().unwrap().to_string();
    assert_eq!(g["data"]["advertiser_ids"], json!(["555"]));
    let (_, r) = api_get(
        &sb,
        Some(&t2),
        "dmp/custom_audience/list/",
        &[("advertiser_id", "555")],
    )
    .await;
    assert_eq!(code(&r), 0);
    let (_, r) = api_post(
        &sb,
        Some(&t2),
        "segment/audience/",
        json!({"advertiser_id": "555", "action": "create", "custom_audience_name": "x"}),
    )
    .await;
    assert_eq!(code(&r), 40001, "scope 31 not granted");
    // The other app's token does not cover the default app's advertisers.
    let (_, r) = api_get(
        &sb,
        Some(&t2),
        "dmp/custom_audience/list/",
        &[("advertiser_id", ADV1)],
    )
    .await;
    assert_eq!(code(&r), 40106);

    // oauth2/advertiser/get/ lists what the token covers; it needs the right app and secret.
    let (_, r) = api_get(
        &sb,
        Some(&token),
        "oauth2/advertiser/get/",
        &[("app_id", sb.app_id()), ("secret", sb.secret())],
    )
    .await;
    assert_eq!(
        r["data"]["list"],
        json!([
        {"advertiser_id": ADV1, "advertiser_name": "Sandbox Advertiser One"},
        {"advertiser_id": ADV2, "advertiser_name": "Sandbox Advertiser Two"}])
    );
    let (_, r) = api_get(
        &sb,
        Some(&t2),
        "oauth2/advertiser/get/",
        &[("app_id", sb.app_id()), ("secret", sb.secret())],
    )
    .await;
    assert_eq!(code(&r), 40105, "token of another app");

    // The advertiser withdrew access: every token of the app stops working (40105).
    let (s, r) = post_json(
        &sb,
        "/_sandbox/tokens/revoke",
        json!({"app_id": sb.app_id()}),
    )
    .await;
    assert_eq!((s, r["revoked"].as_i64()), (200, Some(1)));
    assert_eq!(
        code(&api_get(&sb, Some(&token), "user/info/", &[]).await.1),
        40105
    );
    assert_eq!(
        code(&api_get(&sb, Some(&t2), "user/info/", &[]).await.1),
        0,
        "other apps unaffected"
    );

    // oauth2/revoke_token/ revokes one token.
    let r = api_post(
        &sb,
        None,
        "oauth2/revoke_token/",
        json!({"app_id": "app-two", "secret": "s2", "access_token": t2}),
    )
    .await
    .1;
    assert_eq!(code(&r), 0);
    assert_eq!(
        code(&api_get(&sb, Some(&t2), "user/info/", &[]).await.1),
        40105
    );
}

#[tokio::test]
async fn app_rate_limit_is_a_sliding_window() {
    let sb = sandbox_with(SandboxOptions {
        qps: 3,
        ..Default::default()
    })
    .await;
    let token = token_for(&sb).await; // one request (the exchange) counts for the app
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(code(&api_get(&sb, Some(&token), "user/info/", &[]).await.1));
    }
    assert_eq!(
        codes.iter().filter(|c| **c == 0).count(),
        2,
        "{codes:?}: 3 per window, one used by the exchange"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == 40100).count(),
        4,
        "{codes:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1050)).await;
    assert_eq!(
        code(&api_get(&sb, Some(&token), "user/info/", &[]).await.1),
        0,
        "window slid"
    );
    let log = requests(&sb).await;
    let served: Vec<u64> = log
        .iter()
        .filter(|e| e["app_id"] == sb.app_id() && e["code"] != 40100 && e["path"] != "/portal/auth")
        .map(|e| e["ts_ms"].as_u64().unwrap())
        .collect();
    assert!(max_in_window(&served) <= 3);
}

#[tokio::test]
async fn file_upload_checks() {
    let sb = sandbox().await;
    let token = token_for(&sb).await;
    let ds = digests(5, "f");
    let ok = upload_raw(&sb, &token, ADV1, "EMAIL_SHA256", "a.csv", lines(&ds), None).await;
    assert_eq!(code(&ok), 0);
    assert_eq!(ok["data"]["file_path"].as_str().unwrap().len(), 16);
    let txt = upload_raw(&sb, &token, ADV1, "EMAIL_SHA256", "a.TXT", lines(&ds), None).await;
    assert_eq!(code(&txt), 0, ".txt accepted");
    let bad_sig = upload_raw(
        &sb,
        &token,
        ADV1,
        "EMAIL_SHA256",
        "a.csv",
        lines(&ds),
        Some("0".repeat(32)),
    )
    .await;
    assert_eq!(code(&bad_sig), 40900);
    let bad_suffix = upload_raw(
        &sb,
        &token,
        ADV1,
        "EMAIL_SHA256",
        "a.json",
        lines(&ds),
        None,
    )
    .await;
    assert_eq!(code(&bad_suffix), 40908);
    let upper: Vec<String> = ds.iter().map(|d| d.to_uppercase()).collect();
    assert_eq!(
        code(
            &upload_raw(
                &sb,
                &token,
                ADV1,
                "EMAIL_SHA256",
                "a.csv",
                lines(&upper),
                None
            )
            .await
        ),
        0,
        "malformed lines do not reject the file (tiktok_rules checks the history report)"
    );
    let raw_email = vec!["someone@example.com".to_string()];
    assert_eq!(
        code(
            &upload_raw(
                &sb,
                &token,
                ADV1,
                "EMAIL_SHA256",
                "a.csv",
                lines(&raw_email),
                None
            )
            .await
        ),
        0
    );
    let md5s: Vec<String> = (0..3).map(|i| md5_hex(format!("{i}").as_bytes())).collect();
    assert_eq!(
        code(
            &upload_raw(
                &sb,
                &token,
                ADV1,
                "PHONE_SHA256",
                "a.csv",
                lines(&md5s),
                None
            )
            .await
        ),
        0
    );
    assert_eq!(
        code(&upload_raw(&sb, &token, ADV1, "IDFA_MD5", "a.csv", lines(&md5s), None).await),
        0
    );
    assert_eq!(
        code(&upload_raw(&sb, &token, ADV1, "EMAIL_SHA256", "a.csv", vec![], None).await),
        40906
    );
    assert_eq!(
        code(&upload_raw(&sb, &token, ADV1, "NOT_A_TYPE", "a.csv", lines(&ds), None).await),
        40000
    );

    // The file_path belongs to the uploading advertiser.
    let fp = ok["data"]["file_path"].as_str().unwrap().to_string();
    let r = create(&sb, &token, ADV2, "other", std::slice::from_ref(&fp)).await;
    assert_eq!(code(&r), 40905);
    let r = create(&sb, &token, ADV1, "mine", &[fp]).await;
    assert_eq!(code(&r), 0);
    // The log counts a file's ids and gives its batch identity.
    let log = requests(&sb).await;
    let first_upload = log
        .iter()
        .find(|e| e["path"] == "/open_api/v1.3/dmp/custom_audience/file/upload/")
        .unwrap();
    assert_eq!(first_upload["ids"], 5);
    assert_eq!(first_upload["advertiser_id"], ADV1);
    assert_eq!(
        first_upload["ids_sha256"].as_str().unwrap(),
        tiktok_sandbox::engine::ids_sha256(&ds)
    );
}

#[tokio::test]
async fn audiences_match_rate_size_and_edit_rules() {
    let sb = sandbox().await;
    let token = token_for(&sb).await;
    // 1,300 digests match about 910 (< 1,000): the audience is created but shows size 0.
    let base = digests(1300, "a");
    let m_base = matched(&base, 0.7);
    assert!(m_base < 1000 && m_base > 800, "{m_base}");
    let fp = file_path(&sb, &token, ADV1, &base).await;
    let r = create(&sb, &token, ADV1, "Same name", std::slice::from_ref(&fp)).await;
    assert_eq!(code(&r), 0);
    let id = r["data"]["custom_audience_id"]
        .as_str()
        .expect("id is a string")
        .to_string();
    let a = inspect(&sb, &id).await;
    assert_eq!(a["audience"]["cover_num"], 0);
    assert_eq!(a["audience"]["is_valid"], false);
    assert_eq!(a["audience"]["type"], "Customer File");
    assert_eq!(a["members"].as_array().unwrap().len(), 1300);
    let mut sorted = base.clone();
    sorted.sort();
    assert_eq!(
        a["members"],
        json!(sorted),
        "members: every held digest, sorted"
    );

    // Names are not unique: a second create makes a second audience.
    let r2 = create(&sb, &token, ADV1, "Same name", std::slice::from_ref(&fp)).await;
    assert_ne!(
        r2["data"]["custom_audience_id"],
        r["data"]["custom_audience_id"]
    );

    // Matching is decided by the digest, so it is stable and close to the rate.
    let big = digests(4000, "m");
    let share = matched(&big, 0.7) as f64 / 4000.0;
    assert!((0.66..0.74).contains(&share), "{share}");
    assert_eq!(matched(&big, 0.7), matched(&big, 0.7));

    // Hours later (the create's processing is over), an APPEND that brings the matched count to >= 1,000
    // succeeds; once processed, cover_num is the matched count.
    advance_clock(&sb, PROCESSING_MS).await;
    let extra = digests(300, "b");
    let fp_extra = file_path(&sb, &token, ADV1, &extra).await;
    let r = update(
        &sb,
        &token,
        &id,
        Some("APPEND"),
        std::slice::from_ref(&fp_extra),
    )
    .await;
    let mut all = base.clone();
    all.extend(extra.clone());
    let m_all = matched(&all, 0.7);
    assert!(m_all >= 1000, "{m_all}");
    assert_eq!(code(&r), 0, "{r}");
    advance_clock(&sb, PROCESSING_MS).await;
    let a = inspect(&sb, &id).await;
    assert_eq!(a["audience"]["cover_num"], m_all);
    assert_eq!(a["audience"]["is_valid"], true);

    // REMOVE that would go below 1,000 matched: 40002, nothing changes.
    let r = update(
        &sb,
        &token,
        &id,
        Some("REMOVE"),
        std::slice::from_ref(&fp_extra),
    )
    .await;
    assert_eq!(code(&r), 40002);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .starts_with(tiktok_sandbox::MSG_TOO_SMALL),
        "{r}"
    );
    assert_eq!(
        inspect(&sb, &id).await["members"].as_array().unwrap().len(),
        1600
    );
    // APPEND that stays under 1,000 on a small audience: 40002.
    let small = file_path(&sb, &token, ADV1, &digests(10, "s")).await;
    let r_small = create(&sb, &token, ADV1, "small", std::slice::from_ref(&small)).await;
    let small_id = r_small["data"]["custom_audience_id"]
        .as_str()
        .unwrap()
        .to_string();
    advance_clock(&sb, PROCESSING_MS).await;
    let r = update(
        &sb,
        &token,
        &small_id,
        Some("APPEND"),
        std::slice::from_ref(&small),
    )
    .await;
    assert_eq!(code(&r), 40002);

    // update with file_paths and no action replaces (TikTok's default).
    let replacement = digests(2000, "r");
    let fp_r = file_path(&sb, &token, ADV1, &replacement).await;
    let r = update(&sb, &token, &id, None, std::slice::from_ref(&fp_r)).await;
    assert_eq!(code(&r), 0);
    let a = inspect(&sb, &id).await;
    let mut want = replacement.clone();
    want.sort();
    assert_eq!(a["members"], json!(want));
    // The log shows the action as sent: null when omitted.
    let log = requests(&sb).await;
    let updates: Vec<&Value> = log
        .iter()
        .filter(|e| e["path"] == "/open_api/v1.3/dmp/custom_audience/update/")
        .collect();
    assert_eq!(updates.last().unwrap()["action"], Value::Null);
    assert_eq!(updates[0]["action"], "APPEND");
    assert_eq!(updates[0]["audience_id"], id.as_str());
    assert_eq!(updates[0]["file_paths"], json!([fp_extra]));
    assert_eq!(updates[0]["applied"], true);
    assert_eq!(updates[1]["applied"], false);

    // Unknown audience: 40007.
    assert_eq!(
        code(
            &update(
                &sb,
                &token,
                "123",
                Some("APPEND"),
                std::slice::from_ref(&fp_r)
            )
            .await
        ),
        40007
    );
    // Wrong calculate_type file for the audience.
    let phone = upload_raw(
        &sb,
        &token,
        ADV1,
        "PHONE_SHA256",
        "p.csv",
        lines(&digests(3, "p")),
        None,
    )
    .await;
    let fp_phone = phone["data"]["file_path"].as_str().unwrap().to_string();
    advance_clock(&sb, PROCESSING_MS).await;
    assert_eq!(
        code(&update(&sb, &token, &id, Some("APPEND"), &[fp_phone]).await),
        40909
    );
}

#[tokio::test]
async fn per_audience_daily_budget_of_24_calls() {
    // Processing off: TikTok's 6 h window allows 4 edits a day, so the 24-call budget is only reachable
    // without it; this test studies the budget.
    let sb = sandbox_with(SandboxOptions {
        qps: 10_000,
        rules: tiktok_sandbox::Rules {
            processing_ms: 0,
            ..no_minute_limits()
        },
        ..Default::default()
    })
    .await;
    let token = token_for(&sb).await;
    let fp = file_path(&sb, &token, ADV1, &digests(1600, "d")).await;
    let r = create(&sb, &token, ADV1, "daily", std::slice::from_ref(&fp)).await;
    let id = r["data"]["custom_audience_id"]
        .as_str()
        .unwrap()
        .to_string();
    // create counted as 1; 23 updates fit.
    for i in 0..23 {
        assert_eq!(
            code(&update(&sb, &token, &id, Some("APPEND"), std::slice::from_ref(&fp)).await),
            0,
            "call {i}"
        );
    }
    assert_eq!(
        code(&update(&sb, &token, &id, Some("APPEND"), std::slice::from_ref(&fp)).await),
        40016
    );
    // Another audience has its own budget.
    let r = create(&sb, &token, ADV1, "other", std::slice::from_ref(&fp)).await;
    assert_eq!(code(&r), 0);
    // The next UTC day resets it.
    post_json(&sb, "/_sandbox/clock", json!({"advance_ms": 86_400_000})).await;
    assert_eq!(
        code(&update(&sb, &token, &id, Some("APPEND"), std::slice::from_ref(&fp)).await),
        0
    );
}

#[tokio::test]
async fn streaming_audiences_and_mappings() {
    let sb = sandbox().await;
    let token = token_for(&sb).await;
    let long = "n".repeat(90);
    let (_, r) = api_post(
        &sb,
        Some(&token),
        "segment/audience/",
        json!({"advertiser_id": ADV1, "action": "create", "custom_audience_name": long}),
    )
    .await;
    assert_eq!(code(&r), 0);
    let sid = r["data"]["audience_id"]
        .as_str()
        .expect("string id")
        .to_string();
    // A new streaming audience is ready after TikTok's not-ready window.
    advance_clock(&sb, NOT_READY_MS).await;
    let ds = digests(3, "s");
    let batch: Vec<Value> = ds
        .iter()
        .map(|d| json!([{"id": d, "audience_ids": [sid]}]))
        .collect();
    let body = json!({"advertiser_ids": [ADV1], "action": "add", "id_schema": ["EMAIL_SHA256"], "batch_data": batch});
    let (_, r) = api_post(&sb, Some(&token), "segment/mapping/", body.clone()).await;
    assert_eq!(
        code(&r),
        0,
        "streaming audiences accept mappings below 1,000"
    );
    let a = inspect(&sb, &sid).await;
    assert_eq!(
        a["audience"]["name"].as_str().unwrap().len(),
        70,
        "names over 70 chars are cut"
    );
    assert!(a["audience"]["name"].as_str().unwrap().ends_with("..."));
    assert_eq!(a["audience"]["type"], "Partner");
    assert_eq!(a["members"].as_array().unwrap().len(), 3);

    // Multi-key users: positions follow id_schema, {} for a missing one.
    let phone = digests(1, "phone");
    let body2 = json!({"advertiser_ids": [ADV1], "action": "add", "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"],
        "batch_data": [[{}, {"id": phone[0], "audience_ids": [sid]}]]});
    assert_eq!(
        code(
            &api_post(&sb, Some(&token), "segment/mapping/", body2)
                .await
                .1
        ),
        0
    );
    assert_eq!(
        inspect(&sb, &sid).await["members"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // It appears in list/ and get/ like the others.
    let (_, l) = api_get(
        &sb,
        Some(&token),
        "dmp/custom_audience/list/",
        &[("advertiser_id", ADV1)],
    )
    .await;
    assert_eq!(l["data"]["list"][0]["type"], "Partner");
    let ids = format!("[\"{sid}\"]");
    let (_, g) = api_get(
        &sb,
        Some(&token),
        "dmp/custom_audience/get/",
        &[("advertiser_id", ADV1), ("custom_audience_ids", &ids)],
    )
    .await;
    assert_eq!(
        g["data"]["list"][0]["audience_details"]["audience_id"],
        sid.as_str()
    );

    // More than 10,000 users: 40011, nothing applied.
    let many = digests(10_001, "many");
    let batch: Vec<Value> = many
        .iter()
        .map(|d| json!([{"id": d, "audience_ids": [sid]}]))
        .collect();
    let (_, r) = api_post(&sb, Some(&token), "segment/mapping/", json!({"advertiser_ids": [ADV1], "action": "add", "id_schema": ["EMAIL_SHA256"], "batch_data": batch})).await;
    assert_eq!(code(&r), 40011);
    // Unknown and foreign audiences: 40007.
    let unknown = json!({"advertiser_ids": [ADV1], "action": "add", "id_schema": ["EMAIL_SHA256"], "batch_data": [[{"id": ds[0], "audience_ids": ["42"]}]]});
    assert_eq!(
        code(
            &api_post(&sb, Some(&token), "segment/mapping/", unknown)
                .await
                .1
        ),
        40007
    );
    let (_, r) = api_post(
        &sb,
        Some(&token),
        "segment/audience/",
        json!({"advertiser_id": ADV2, "action": "create", "custom_audience_name": "two"}),
    )
    .await;
    let foreign_id = r["data"]["audience_id"].as_str().unwrap().to_string();
    let foreign = json!({"advertiser_ids": [ADV1], "action": "add", "id_schema": ["EMAIL_SHA256"], "batch_data": [[{"id": ds[0], "audience_ids": [foreign_id]}]]});
    assert_eq!(
        code(
            &api_post(&sb, Some(&token), "segment/mapping/", foreign)
                .await
                .1
        ),
        40007
    );
    // delete removes; the log carries the first advertiser and audience, the id count and batch identity.
    let del = json!({"advertiser_ids": [ADV1], "action": "delete", "id_schema": ["EMAIL_SHA256"], "batch_data": [[{"id": ds[0], "audience_ids": [sid]}]]});
    assert_eq!(
        code(&api_post(&sb, Some(&token), "segment/mapping/", del).await.1),
        0
    );
    assert_eq!(
        inspect(&sb, &sid).await["members"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let log = requests(&sb).await;
    let first = log
        .iter()
        .find(|e| e["path"] == "/open_api/v1.3/segment/mapping/")
        .unwrap();
    assert_eq!(first["advertiser_id"], ADV1);
    assert_eq!(first["audience_id"], sid.as_str());
    assert_eq!(first["action"], "add");
    assert_eq!(first["ids"], 3);
    assert_eq!(
        first["ids_sha256"].as_str().unwrap(),
        tiktok_sandbox::engine::ids_sha256(&ds)
    );
    let too_many = log.iter().find(|e| e["code"] == 40011).unwrap();
    assert_eq!(
        (too_many["ids"].as_u64(), &too_many["applied"]),
        (Some(10_001), &json!(false))
    );
    // segment delete.
    let (_, r) = api_post(
        &sb,
        Some(&token),
        "segment/audience/",
        json!({"advertiser_id": ADV1, "action": "delete", "delete_audience_id": sid}),
    )
    .await;
    assert_eq!(code(&r), 0);
    let gone = raw()
        .get(format!("{}/_sandbox/audiences/{sid}", sb.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 404, "deleted");
}

#[tokio::test]
async fn at_most_400_audiences_per_advertiser() {
    let sb = sandbox().await;
    let token = token_for(&sb).await;
    for i in 0..400 {
        let (_, r) = api_post(&sb, Some(&token), "segment/audience/", json!({"advertiser_id": ADV2, "action": "create", "custom_audience_name": format!("a{i}")})).await;
        assert_eq!(code(&r), 0);
    }
    let (_, r) = api_post(
        &sb,
        Some(&token),
        "segment/audience/",
        json!({"advertiser_id": ADV2, "action": "create", "custom_audience_name": "one too many"}),
    )
    .await;
    assert_eq!(code(&r), 40002);
    assert!(r["message"].as_str().unwrap().contains("400"), "{r}");
    let fp = file_path(&sb, &token, ADV2, &digests(5, "x")).await;
    let r = create(&sb, &token, ADV2, "file", &[fp]).await;
    assert_eq!(code(&r), 40002);
    // The other advertiser is unaffected.
    let (_, r) = api_post(
        &sb,
        Some(&token),
        "segment/audience/",
        json!({"advertiser_id": ADV1, "action": "create", "custom_audience_name": "ok"}),
    )
    .await;
    assert_eq!(code(&r), 0);
    // /_sandbox/audiences?advertiser_id filters.
    let all = get_json(&sb, &format!("/_sandbox/audiences?advertiser_id={ADV2}")).await;
    assert_eq!(all.as_array().unwrap().len(), 400);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|a| a["audience"]["owner_id"] == ADV2 && a["members"].is_array())
    );
}

#[tokio::test]
async fn faults_codes_http_drops_paths_and_reset() {
    let sb = sandbox().await;
    let token = token_for(&sb).await;
    // Every request on one path answered with an injected code, not applied.
    set_faults(&sb, json!({"rate": 1.0, "codes": [50000], "paths": ["/open_api/v1.3/segment/audience/"], "seed": 7})).await;
    let body = json!({"advertiser_id": ADV1, "action": "create", "custom_audience_name": "f"});
    let (s, r) = api_post(&sb, Some(&token), "segment/audience/", body.clone()).await;
    assert_eq!((s, code(&r)), (200, 50000));
    assert_eq!(
        code(&api_get(&sb, Some(&token), "user/info/", &[]).await.1),
        0,
        "other paths unaffected"
    );
    assert!(
        get_json(&sb, "/_sandbox/audiences")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );

    // HTTP errors come without an envelope.
    set_faults(&sb, json!({"rate": 1.0, "http_errors": [502]})).await;
    let r = raw()
        .get(format!("{}/open_api/v1.3/user/info/", sb.base_url))
        .header("Access-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 502);
    assert!(r.text().await.unwrap().contains("<html>"));

    // Drops: before apply nothing happens; after apply the audience exists but no answer arrives.
    set_faults(&sb, json!({"drop_before_apply_rate": 1.0})).await;
    let dropped = raw()
        .post(format!("{}/open_api/v1.3/segment/audience/", sb.base_url))
        .header("Access-Token", &token)
        .json(&body)
        .send()
        .await;
    let got_body = match dropped {
        Ok(r) => r.bytes().await.is_ok(),
        Err(_) => false,
    };
    assert!(!got_body, "drop_before gives no complete response");
    assert!(
        get_json(&sb, "/_sandbox/audiences")
            .await
            .as_array()
            .unwrap()
            .is_empty(),
        "not applied"
    );
    set_faults(&sb, json!({"drop_after_apply_rate": 1.0})).await;
    let dropped = raw()
        .post(format!("{}/open_api/v1.3/segment/audience/", sb.base_url))
        .header("Access-Token", &token)
        .json(&body)
        .send()
        .await;
    let got_body = match dropped {
        Ok(r) => r.bytes().await.is_ok(),
        Err(_) => false,
    };
    assert!(!got_body, "drop_after gives no complete response");
    assert_eq!(
        get_json(&sb, "/_sandbox/audiences")
            .await
            .as_array()
            .unwrap()
            .len(),
        1,
        "applied"
    );

    // Latency is applied.
    set_faults(&sb, json!({"latency_ms": 50})).await;
    let t = std::time::Instant::now();
    api_get(&sb, Some(&token), "user/info/", &[]).await;
    assert!(t.elapsed() >= std::time::Duration::from_millis(50));

    // Invalid fault settings are refused.
    assert_eq!(
        post_json(&sb, "/_sandbox/faults", json!({"rate": 2.0, "codes": [1]}))
            .await
            .0,
        400
    );
    assert_eq!(
        post_json(&sb, "/_sandbox/faults", json!({"rate": 0.5}))
            .await
            .0,
        400
    );
    assert_eq!(
        post_json(&sb, "/_sandbox/faults", json!({"bogus": 1}))
            .await
            .0,
        400
    );

    let log = requests(&sb).await;
    let faults: Vec<(Value, Value, Value, Value)> = log
        .iter()
        .filter(|e| e["fault"] != Value::Null)
        .map(|e| {
            (
                e["fault"].clone(),
                e["http_status"].clone(),
                e["code"].clone(),
                e["applied"].clone(),
            )
        })
        .collect();
    assert_eq!(
        faults,
        vec![
            (json!("code"), json!(200), json!(50000), json!(false)),
            (json!("http"), json!(502), Value::Null, json!(false)),
            (json!("drop_before"), Value::Null, Value::Null, json!(false)),
            (json!("drop_after"), Value::Null, json!(0), json!(true)),
        ]
    );
    // Every log line has exactly the documented fields; controls are not logged.
    let keys: Vec<&str> = vec![
        "action",
        "advertiser_id",
        "app_id",
        "applied",
        "audience_id",
        "code",
        "fault",
        "file_paths",
        "http_status",
        "ids",
        "ids_sha256",
        "method",
        "path",
        "ts_ms",
    ];
    for e in &log {
        let mut k: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort();
        assert_eq!(k, keys);
        let p = e["path"].as_str().unwrap();
        assert!(p.starts_with("/open_api/") || p == "/portal/auth", "{p}");
        assert!(e["ts_ms"].as_u64().unwrap() > 1_600_000_000_000);
    }

    // Reset clears audiences, tokens, faults and the log; keeps the default app.
    set_faults(&sb, json!({"rate": 1.0, "codes": [50000]})).await;
    assert_eq!(post_json(&sb, "/_sandbox/reset", json!({})).await.0, 200);
    assert!(requests(&sb).await.is_empty());
    assert!(
        get_json(&sb, "/_sandbox/audiences")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        code(&api_get(&sb, Some(&token), "user/info/", &[]).await.1),
        40105,
        "tokens cleared"
    );
    let fresh = token_for(&sb).await; // the default app still works, and no fault fires
    assert_eq!(
        code(&api_get(&sb, Some(&fresh), "user/info/", &[]).await.1),
        0
    );
}

#[tokio::test]
async fn fault_rate_is_a_share_and_seeded() {
    let sb = sandbox().await;
    let token = token_for(&sb).await;
    set_faults(
        &sb,
        json!({"rate": 0.3, "codes": [40100, 50000], "http_errors": [429, 502], "seed": 42}),
    )
    .await;
    let mut outcomes = Vec::new();
    for _ in 0..200 {
        let r = raw()
            .get(format!("{}/open_api/v1.3/user/info/", sb.base_url))
            .header("Access-Token", &token)
            .send()
            .await
            .unwrap();
        outcomes.push(r.status().as_u16());
    }
    let log = requests(&sb).await;
    let faulted = log.iter().filter(|e| e["fault"] != Value::Null).count();
    assert!((30..=90).contains(&faulted), "{faulted} of 200 at rate 0.3");
    let kinds: std::collections::BTreeSet<String> = log
        .iter()
        .filter(|e| e["fault"] != Value::Null)
        .map(|e| format!("{}/{}", e["http_status"], e["code"]))
        .collect();
    assert_eq!(
        kinds.len(),
        4,
        "all of codes ∪ http_errors occur: {kinds:?}"
    );
    // Same seed, same sequence.
    post_json(&sb, "/_sandbox/reset", json!({})).await;
    let token = token_for(&sb).await;
    set_faults(
        &sb,
        json!({"rate": 0.3, "codes": [40100, 50000], "http_errors": [429, 502], "seed": 42}),
    )
    .await;
    let mut again = Vec::new();
    for _ in 0..200 {
        let r = raw()
            .get(format!("{}/open_api/v1.3/user/info/", sb.base_url))
            .header("Access-Token", &token)
            .send()
            .await
            .unwrap();
        again.push(r.status().as_u16());
    }
    assert_eq!(outcomes, again);
}

#[tokio::test]
async fn ids_are_strings_and_responses_fit_the_contract() {
    let sb = sandbox().await;
    let token = token_for(&sb).await;
    let c = contract();
    let mut problems = Vec::new();
    let fp_env = upload_raw(
        &sb,
        &token,
        ADV1,
        "EMAIL_SHA256",
        "a.csv",
        lines(&digests(1500, "c")),
        None,
    )
    .await;
    problems.extend(check_response(
        &c,
        "/dmp/custom_audience/file/upload/",
        &fp_env,
    ));
    let fp = fp_env["data"]["file_path"].as_str().unwrap().to_string();
    let cr = create(&sb, &token, ADV1, "contract", &[fp]).await;
    problems.extend(check_response(&c, "/dmp/custom_audience/create/", &cr));
    let id = cr["data"]["custom_audience_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, r) = api_post(
        &sb,
        Some(&token),
        "segment/audience/",
        json!({"advertiser_id": ADV1, "action": "create", "custom_audience_name": "p"}),
    )
    .await;
    problems.extend(check_response(&c, "/segment/audience/", &r));
    let ids = json!([id]).to_string();
    let (_, g) = api_get(
        &sb,
        Some(&token),
        "dmp/custom_audience/get/",
        &[
            ("advertiser_id", ADV1),
            ("custom_audience_ids", &ids),
            ("history_size", "5"),
        ],
    )
    .await;
    problems.extend(check_response(&c, "/dmp/custom_audience/get/", &g));
    let (_, l) = api_get(
        &sb,
        Some(&token),
        "dmp/custom_audience/list/",
        &[("advertiser_id", ADV1), ("page", "1"), ("page_size", "1")],
    )
    .await;
    problems.extend(check_response(&c, "/dmp/custom_audience/list/", &l));
    assert_eq!(
        l["data"]["page_info"],
        json!({"page": 1, "page_size": 1, "total_number": 2, "total_page": 2})
    );
    let advs = json!([ADV1, ADV2]).to_string();
    let (_, a) = api_get(
        &sb,
        Some(&token),
        "advertiser/info/",
        &[("advertiser_ids", &advs)],
    )
    .await;
    problems.extend(check_response(&c, "/advertiser/info/", &a));
    let (_, u) = api_get(&sb, Some(&token), "user/info/", &[]).await;
    problems.extend(check_response(&c, "/user/info/", &u));
    let (_, o) = api_get(
        &sb,
        Some(&token),
        "oauth2/advertiser/get/",
        &[("app_id", sb.app_id()), ("secret", sb.secret())],
    )
    .await;
    problems.extend(check_response(&c, "/oauth2/advertiser/get/", &o));
    let (_, d) = api_post(
        &sb,
        Some(&token),
        "dmp/custom_audience/delete/",
        json!({"advertiser_id": ADV1, "custom_audience_ids": [id]}),
    )
    .await;
    problems.extend(check_response(&c, "/dmp/custom_audience/delete/", &d));
    assert_eq!(code(&d), 0);
    // Errors are envelopes too.
    let (s, e) = api_get(
        &sb,
        Some(&token),
        "dmp/custom_audience/get/",
        &[("advertiser_id", ADV1), ("custom_audience_ids", &ids)],
    )
    .await;
    assert_eq!((s, code(&e)), (200, 40007));
    problems.extend(check_response(&c, "/dmp/custom_audience/get/", &e));
    assert!(problems.is_empty(), "{problems:#?}");

    // The sandbox refuses requests outside the contract (so client tests against it mean something).
    let bad = [
        json!({"advertiser_id": 7100000000000000001u64, "custom_audience_name": "x", "calculate_type": "EMAIL_SHA256", "file_paths": ["aaaaaaaaaaaaaaaa"]}),
        json!({"advertiser_id": ADV1, "custom_audience_name": "", "calculate_type": "EMAIL_SHA256", "file_paths": ["aaaaaaaaaaaaaaaa"]}),
        json!({"advertiser_id": ADV1, "custom_audience_name": "x".repeat(129), "calculate_type": "EMAIL_SHA256", "file_paths": ["aaaaaaaaaaaaaaaa"]}),
        json!({"advertiser_id": ADV1, "custom_audience_name": "x", "calculate_type": "EMAIL", "file_paths": ["aaaaaaaaaaaaaaaa"]}),
        json!({"advertiser_id": ADV1, "custom_audience_name": "x", "calculate_type": "EMAIL_SHA256", "file_paths": []}),
        json!({"advertiser_id": ADV1, "custom_audience_name": "x", "calculate_type": "EMAIL_SHA256", "file_paths": ["short"]}),
        json!({"advertiser_id": ADV1, "custom_audience_name": "x", "calculate_type": "EMAIL_SHA256", "file_paths": ["aaaaaaaaaaaaaaaa"], "retention_in_days": 400}),
        json!({"advertiser_id": ADV1, "custom_audience_name": "x", "calculate_type": "EMAIL_SHA256", "file_paths": ["aaaaaaaaaaaaaaaa"], "audience_ids": ["1"]}),
    ];
    for b in bad {
        let (_, r) = api_post(&sb, Some(&token), "dmp/custom_audience/create/", b.clone()).await;
        assert_eq!(code(&r), 40000, "{b}");
    }
    let (_, r) = api_get(
        &sb,
        Some(&token),
        "dmp/custom_audience/list/",
        &[("advertiser_id", ADV1), ("page_size", "101")],
    )
    .await;
    assert_eq!(code(&r), 40000);
    let (_, r) = api_get(
        &sb,
        Some(&token),
        "dmp/custom_audience/get/",
        &[("advertiser_id", ADV1), ("custom_audience_ids", "1,2")],
    )
    .await;
    assert_eq!(
        code(&r),
        40000,
        "custom_audience_ids must be a JSON array string"
    );
    let (_, r) = api_post(&sb, Some(&token), "dmp/custom_audience/update/", json!({"advertiser_id": ADV1, "custom_audience_id": "1", "file_paths": ["aaaaaaaaaaaaaaaa"], "action": "ADD"})).await;
    assert_eq!(code(&r), 40000);
}

#[tokio::test]
async fn binary_prints_ready_line_and_serves() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tiktok-sandbox"))
        .args([
            "--port",
            "0",
            "--qps",
            "3",
            "--match-rate",
            "0.5",
            "--fault-rate",
            "1.0",
            "--fault-codes",
            "502,40200",
            "--seed",
            "9",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tiktok-sandbox");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .expect("ready line");
    let ready: Value = serde_json::from_str(line.trim()).expect("ready line is JSON");
    assert!(
        line.starts_with("{\"listening\":\"http://127.0.0.1:"),
        "{line}"
    );
    assert!(
        line.contains("\",\"app_id\":\"") && line.ends_with("]}\n"),
        "key order as documented: {line}"
    );
    let mut keys: Vec<&String> = ready.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        vec!["advertiser_ids", "app_id", "listening", "secret"]
    );
    let base = ready["listening"].as_str().unwrap().to_string();
    assert!(
        base.starts_with("http://127.0.0.1:") && !base.ends_with(":0"),
        "{base}"
    );
    assert_eq!(ready["advertiser_ids"].as_array().unwrap().len(), 2);
    assert!(ready["app_id"].is_string() && ready["secret"].is_string());
    // The fault flags are active: codes below 600 are HTTP statuses.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let r = raw()
            .get(format!("{base}/open_api/v1.3/user/info/"))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        let body = r.text().await.unwrap();
        seen.insert(if s == 200 {
            serde_json::from_str::<Value>(&body).unwrap()["code"]
                .as_i64()
                .unwrap()
        } else {
            s as i64
        });
    }
    assert_eq!(seen, [502i64, 40200].into_iter().collect());
    let faults = raw()
        .get(format!("{base}/_sandbox/faults"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(faults["http_errors"], json!([502]));
    assert_eq!(faults["codes"], json!([40200]));
    // Default app: scopes 30 and 31, redirect URIs http://127.0.0.1:*.
    let r = raw()
        .get(format!("{base}/portal/auth"))
        .query(&[
            ("app_id", ready["app_id"].as_str().unwrap()),
            ("state", "s"),
            ("redirect_uri", "http://127.0.0.1:4567/x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    // --qps: the app's requests (attributed by the app_id in the body) are held to 3 per window; the
    // rate check comes before fault injection, so refusals show as un-faulted 40100.
    let app_id = ready["app_id"].as_str().unwrap().to_string();
    for _ in 0..8 {
        raw()
            .post(format!("{base}/open_api/v1.3/oauth2/access_token/"))
            .json(&json!({"app_id": app_id, "secret": "x", "auth_code": "y"}))
            .send()
            .await
            .unwrap();
    }
    let log: Vec<Value> = raw()
        .get(format!("{base}/_sandbox/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mine: Vec<&Value> = log
        .iter()
        .filter(|e| e["app_id"] == app_id.as_str() && e["path"] != "/portal/auth")
        .collect();
    assert_eq!(mine.len(), 8);
    assert!(
        mine.iter()
            .any(|e| e["code"] == 40100 && e["fault"].is_null()),
        "{mine:?}"
    );
    let served: Vec<u64> = mine
        .iter()
        .filter(|e| e["code"] != 40100)
        .map(|e| e["ts_ms"].as_u64().unwrap())
        .collect();
    assert!(max_in_window(&served) <= 3);
    child.kill().await.expect("kill");
}

#[tokio::test]
async fn match_rate_option_decides_matched_share() {
    for (rate, want_valid) in [(1.0, true), (0.0, false)] {
        let sb = sandbox_with(SandboxOptions {
            qps: 10_000,
            match_rate: rate,
            ..Default::default()
        })
        .await;
        let token = token_for(&sb).await;
        let fp = file_path(&sb, &token, ADV1, &digests(1000, "rate")).await;
        let r = create(&sb, &token, ADV1, "m", &[fp]).await;
        let id = r["data"]["custom_audience_id"]
            .as_str()
            .unwrap()
            .to_string();
        advance_clock(&sb, PROCESSING_MS).await;
        let a = inspect(&sb, &id).await;
        assert_eq!(a["audience"]["is_valid"], want_valid);
        assert_eq!(
            a["audience"]["cover_num"],
            if want_valid { 1000 } else { 0 }
        );
    }
}

#[tokio::test]
async fn default_app_matches_the_issue() {
    let sb = sandbox().await;
    assert_eq!(sb.app.scopes, vec![30, 31, 100]);
    assert!(sb.app.streaming_allowed);
    assert_eq!(sb.app.advertiser_get_scope, Some(100));
    assert_eq!(sb.app.redirect_uris, vec!["http://127.0.0.1:*".to_string()]);
    assert_eq!(
        sb.advertiser_ids(),
        vec![ADV1.to_string(), ADV2.to_string()]
    );
    let line: Value = serde_json::from_str(&sb.ready_line()).unwrap();
    assert_eq!(line["listening"], sb.base_url.as_str());
    // Same seed, same secret; different seed, different secret.
    assert_eq!(tiktok_sandbox::default_app(1).secret, sb.secret());
    assert_ne!(tiktok_sandbox::default_app(2).secret, sb.secret());
}

//! TikTok's API-level rules over real HTTP: per-minute and per-advertiser limits, 40101 for a wrong
//! secret, HTTP 404 for unknown routes, 40007 messages, the optional fields TikTok accepts, hierarchical
//! scopes and `advertiser_get_scope`, and that every rule is on by default (options, binary).

mod common;

use common::raw_api::*;
use common::*;
use serde_json::{Value, json};
use tiktok_sandbox::{Rules, SandboxOptions};

#[tokio::test]
async fn an_app_gets_600_requests_a_minute() {
    assert_eq!(Rules::default().qpm, 600);
    // A high per-second tier, so that only the minute window binds (TikTok's 10/s never exceeds 600/min).
    let sb = sandbox_with(SandboxOptions {
        qps: 10_000,
        ..Default::default()
    })
    .await;
    let token = token_of(&sb).await;
    // The exchange counted for the app: 599 more fit in the minute, then 40100.
    let mut codes = Vec::new();
    for _ in 0..601 {
        codes.push(code(&api_get(&sb, Some(&token), "user/info/", &[]).await.1));
    }
    assert!(codes[..599].iter().all(|c| *c == 0), "{:?}", &codes[..599]);
    assert_eq!(&codes[599..], &[40100, 40100]);
    let log = requests(&sb).await;
    let refused = log.iter().filter(|e| e["code"] == 40100).count();
    assert_eq!(refused, 2, "refused requests are logged and not counted");
}

#[tokio::test]
async fn an_advertiser_limit_answers_40133() {
    assert!(Rules::default().advertiser_qpm > 0, "on by default");
    let rules = Rules {
        advertiser_qpm: 5,
        ..Rules::default()
    };
    let sb = sandbox_with(SandboxOptions {
        qps: 10_000,
        rules,
        ..Default::default()
    })
    .await;
    let token = token_of(&sb).await;
    let list = |adv: &'static str| {
        let (sb, token) = (&sb, token.clone());
        async move {
            code(
                &api_get(
                    sb,
                    Some(&token),
                    "dmp/custom_audience/list/",
                    &[("advertiser_id", adv)],
                )
                .await
                .1,
            )
        }
    };
    for _ in 0..5 {
        assert_eq!(list(ADV1).await, 0);
    }
    assert_eq!(list(ADV1).await, 40133);
    assert_eq!(list(ADV2).await, 0, "per advertiser");
    assert_eq!(
        code(&api_get(&sb, Some(&token), "user/info/", &[]).await.1),
        0,
        "calls without an advertiser pass"
    );
}

#[tokio::test]
async fn a_wrong_app_secret_is_40101() {
    let sb = sandbox().await;
    let c = client_for(&sb, 1000.0, 1);
    let auth = consent_code(&sb, &c, sb.app_id()).await;
    let (_, r) = api_post(
        &sb,
        None,
        "oauth2/access_token/",
        json!({"app_id": sb.app_id(), "secret": "wrong", "auth_code": auth}),
    )
    .await;
    assert_eq!(code(&r), 40101, "{r}");
    let token = token_of(&sb).await;
    let (_, r) = api_get(
        &sb,
        Some(&token),
        "oauth2/advertiser/get/",
        &[("app_id", sb.app_id()), ("secret", "wrong")],
    )
    .await;
    assert_eq!(code(&r), 40101, "{r}");
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_are_http_404() {
    let sb = sandbox_with(SandboxOptions {
        qps: 1,
        ..Default::default()
    })
    .await;
    let token = token_of(&sb).await;
    let url = |p: &str| format!("{}/open_api/v1.3/{p}", sb.base_url);
    let cases = [
        raw().get(url("dmp/custom_audience/nope/")),
        raw().get(url("dmp/custom_audience/create/")),
        raw().post(url("dmp/custom_audience/get/")).json(&json!({})),
    ];
    for rb in cases {
        let r = rb
            .header("Access-Token", &token)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 404);
        let body = r.text().await.unwrap_or_default();
        assert!(
            serde_json::from_str::<Value>(&body).is_err(),
            "no envelope: {body}"
        );
    }
    // They never reached the limiter: with 1 request a second, a real call still passes.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(
        code(&api_get(&sb, Some(&token), "user/info/", &[]).await.1),
        0
    );
    let log = requests(&sb).await;
    assert_eq!(
        log.iter()
            .filter(|e| e["http_status"] == 404 && e["code"].is_null())
            .count(),
        3
    );
}

#[tokio::test]
async fn not_found_says_whether_the_audience_or_a_file_is_missing() {
    let sb = sandbox().await;
    let token = token_of(&sb).await;
    let missing_file = "aaaaaaaaaaaaaaaa".to_string();
    let r = create_file_audience(&sb, &token, std::slice::from_ref(&missing_file)).await;
    assert_eq!(code(&r), 40007);
    let m = r["message"].as_str().unwrap_or_default();
    assert!(m.contains("file") && m.contains("does not exist"), "{m}");
    let fp = upload_ok(&sb, &token, &digests(1600, "nf")).await;
    let r = update_files(&sb, &token, "123", "APPEND", &[fp]).await;
    assert_eq!(code(&r), 40007);
    let m = r["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("audience") && m.contains("does not exist"),
        "{m}"
    );
}

#[tokio::test]
async fn tiktoks_optional_fields_are_accepted() {
    let sb = sandbox().await;
    let token = token_of(&sb).await;
    let up = upload_with(
        &sb,
        &token,
        "EMAIL_SHA256",
        lines(&digests(2, "opt")),
        None,
        &[
            ("file_name", "cohort.csv"),
            ("context_info", "{\"app_id\":\"1\"}"),
            ("name", "n"),
        ],
    )
    .await;
    assert_eq!(code(&up), 0, "{up}");
    let c = client_for(&sb, 1000.0, 1);
    let auth = consent_code(&sb, &c, sb.app_id()).await;
    let (_, g) = api_post(&sb, None, "oauth2/access_token/",
        json!({"app_id": sb.app_id(), "secret": sb.secret(), "auth_code": auth, "return_advertiser_ids": true})).await;
    assert_eq!(code(&g), 0, "{g}");
    assert_eq!(g["data"]["advertiser_ids"], json!([ADV1, ADV2]));
    let (_, r) = api_post(&sb, Some(&token), "segment/audience/",
        json!({"advertiser_id": ADV1, "action": "create", "custom_audience_name": "typed", "id_type": "EMAIL_SHA256"})).await;
    assert_eq!(code(&r), 0, "{r}");
    let sid = r["data"]["audience_id"].as_str().expect("id").to_string();
    // Streaming delete names the audience delete_audience_id; `audience_id` is not TikTok's field.
    let (_, r) = api_post(
        &sb,
        Some(&token),
        "segment/audience/",
        json!({"advertiser_id": ADV1, "action": "delete", "audience_id": sid}),
    )
    .await;
    assert_eq!(code(&r), 40000, "{r}");
    let (_, r) = api_post(
        &sb,
        Some(&token),
        "segment/audience/",
        json!({"advertiser_id": ADV1, "action": "delete", "delete_audience_id": sid}),
    )
    .await;
    assert_eq!(code(&r), 0, "{r}");
    let log = requests(&sb).await;
    assert_eq!(
        log.last().map(|e| e["audience_id"].clone()),
        Some(json!(sid))
    );
}

/// Registers an app with these scopes and `advertiser_get_scope`, and returns a token of it.
async fn token_with(
    sb: &tiktok_sandbox::RunningSandbox,
    id: &str,
    scopes: Value,
    adv_get: Value,
) -> String {
    let app = json!({"app_id": id, "secret": "s3cret", "redirect_uris": ["http://127.0.0.1:*"],
        "advertisers": [{"advertiser_id": ADV1, "advertiser_name": "One"}], "scopes": scopes,
        "advertiser_get_scope": adv_get});
    assert_eq!(post_json(sb, "/_sandbox/apps", app).await.0, 200);
    let c = client_for(sb, 1000.0, 1);
    let auth = consent_code(sb, &c, id).await;
    let (_, g) = api_post(
        sb,
        None,
        "oauth2/access_token/",
        json!({"app_id": id, "secret": "s3cret", "auth_code": auth}),
    )
    .await;
    assert_eq!(
        g["data"]["scope"], scopes,
        "the token lists the app's scopes"
    );
    g["data"]["access_token"]
        .as_str()
        .expect("token")
        .to_string()
}

#[tokio::test]
async fn scope_3_covers_30_and_31_and_advertiser_get_needs_its_scope() {
    let sb = sandbox().await;
    let t = token_with(&sb, "parent", json!([3]), json!(100)).await;
    let fp = upload_ok(&sb, &t, &digests(1600, "sc")).await;
    let id = created_id(&sb, &t, &[fp]).await;
    let (d, _) = get_audience(&sb, &t, &id).await;
    assert_eq!(
        d["audience_id"],
        json!(id),
        "3 grants read (30) and write (31)"
    );
    let adv_get = |t: String, app: &'static str| {
        let sb = &sb;
        async move {
            code(
                &api_get(
                    sb,
                    Some(&t),
                    "oauth2/advertiser/get/",
                    &[("app_id", app), ("secret", "s3cret")],
                )
                .await
                .1,
            )
        }
    };
    assert_eq!(adv_get(t, "parent").await, 40001, "100 not granted");
    let t = token_with(&sb, "full", json!([3, 100]), json!(100)).await;
    assert_eq!(adv_get(t, "full").await, 0);
    let t = token_with(&sb, "unset", json!([30]), Value::Null).await;
    assert_eq!(
        adv_get(t.clone(), "unset").await,
        0,
        "no scope required when unset"
    );
    let (_, r) = api_post(
        &sb,
        Some(&t),
        "segment/audience/",
        json!({"advertiser_id": ADV1, "action": "create", "custom_audience_name": "x"}),
    )
    .await;
    assert_eq!(code(&r), 40001, "30 alone does not write");
}

#[tokio::test]
async fn every_rule_is_on_by_default_in_options_and_binary() {
    let want = json!({"processing_ms": 21_600_000i64, "streaming_not_ready_ms": 90_000, "max_file_bytes": 52_428_800,
        "max_files_per_audience": 500, "file_ttl_ms": 604_800_000i64, "audience_ttl_ms": 31_536_000_000i64,
        "qpm": 600, "advertiser_qpm": 600});
    assert_eq!(
        serde_json::to_value(SandboxOptions::default().rules).unwrap(),
        want
    );
    let sb = sandbox_with(SandboxOptions::default()).await;
    assert_eq!(get_json(&sb, "/_sandbox/rules").await, want);
    assert!(
        sb.app.streaming_allowed,
        "the default app is allow-listed so streaming tests work"
    );
    assert_eq!(sb.app.advertiser_get_scope, Some(100));

    use tokio::io::AsyncBufReadExt;
    for (args, processing) in [
        (vec![], json!(21_600_000i64)),
        (vec!["--rules", r#"{"processing_ms":0}"#], json!(0)),
    ] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tiktok-sandbox"))
            .args(["--port", "0"])
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().expect("stdout");
        let line = tokio::io::BufReader::new(out)
            .lines()
            .next_line()
            .await
            .expect("read")
            .expect("ready line");
        let ready: Value = serde_json::from_str(&line).expect("ready JSON");
        let base = ready["listening"].as_str().expect("listening").to_string();
        let rules: Value = raw()
            .get(format!("{base}/_sandbox/rules"))
            .send()
            .await
            .expect("rules")
            .json()
            .await
            .expect("JSON");
        assert_eq!(rules["processing_ms"], processing);
        assert_eq!(rules["qpm"], 600);
        child.kill().await.expect("kill");
    }
}

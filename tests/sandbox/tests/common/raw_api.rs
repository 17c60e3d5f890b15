//! Plain-HTTP audience calls for the rule tests (no client logic in between).

use serde_json::{Value, json};
use tiktok_sandbox::RunningSandbox;

use super::{api_get, api_post, client_for, code, connect};

pub const ADV1: &str = "7100000000000000001";
pub const ADV2: &str = "7100000000000000002";

pub fn md5_hex(b: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(b))
}

/// One digest a line, newline-terminated.
pub fn lines(ds: &[String]) -> Vec<u8> {
    let mut s = ds.join("\n");
    s.push('\n');
    s.into_bytes()
}

/// A working token of the default app, as a plain string.
pub async fn token_of(sb: &RunningSandbox) -> String {
    use audience_tiktok::ExposeSecret;
    let c = client_for(sb, 1000.0, 1);
    connect(sb, &c).await.expose_secret().to_string()
}

/// `file/upload/` with the given extra text fields; `signature` defaults to the bytes' MD5.
pub async fn upload_with(
    sb: &RunningSandbox,
    token: &str,
    calc: &str,
    bytes: Vec<u8>,
    signature: Option<String>,
    extra: &[(&str, &str)],
) -> Value {
    let sig = signature.unwrap_or_else(|| md5_hex(&bytes));
    let mut form = reqwest::multipart::Form::new()
        .text("advertiser_id", ADV1.to_string())
        .text("calculate_type", calc.to_string())
        .text("file_signature", sig);
    for (k, v) in extra {
        form = form.text(k.to_string(), v.to_string());
    }
    let form = form.part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name("ids.csv"),
    );
    super::raw()
        .post(format!(
            "{}/open_api/v1.3/dmp/custom_audience/file/upload/",
            sb.base_url
        ))
        .header("Access-Token", token)
        .multipart(form)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("upload envelope")
}

/// Uploads EMAIL_SHA256 digests for ADV1 and returns the file path.
pub async fn upload_ok(sb: &RunningSandbox, token: &str, ds: &[String]) -> String {
    let env = upload_with(sb, token, "EMAIL_SHA256", lines(ds), None, &[]).await;
    assert_eq!(code(&env), 0, "{env}");
    env["data"]["file_path"].as_str().expect("file_path").into()
}

pub async fn create_file_audience(sb: &RunningSandbox, token: &str, paths: &[String]) -> Value {
    api_post(
        sb,
        Some(token),
        "dmp/custom_audience/create/",
        json!({"advertiser_id": ADV1, "custom_audience_name": "rules", "calculate_type": "EMAIL_SHA256", "file_paths": paths}),
    )
    .await
    .1
}

/// Creates an audience that must succeed; returns its id.
pub async fn created_id(sb: &RunningSandbox, token: &str, paths: &[String]) -> String {
    let r = create_file_audience(sb, token, paths).await;
    assert_eq!(code(&r), 0, "{r}");
    r["data"]["custom_audience_id"].as_str().expect("id").into()
}

pub async fn update_files(
    sb: &RunningSandbox,
    token: &str,
    id: &str,
    action: &str,
    paths: &[String],
) -> Value {
    api_post(
        sb,
        Some(token),
        "dmp/custom_audience/update/",
        json!({"advertiser_id": ADV1, "custom_audience_id": id, "action": action, "file_paths": paths}),
    )
    .await
    .1
}

/// `get/` for one audience: (audience_details, audience_history).
pub async fn get_audience(sb: &RunningSandbox, token: &str, id: &str) -> (Value, Value) {
    let ids = format!("[\"{id}\"]");
    let (_, r) = api_get(
        sb,
        Some(token),
        "dmp/custom_audience/get/",
        &[("advertiser_id", ADV1), ("custom_audience_ids", &ids)],
    )
    .await;
    assert_eq!(code(&r), 0, "{r}");
    let item = &r["data"]["list"][0];
    (
        item["audience_details"].clone(),
        item["audience_history"].clone(),
    )
}

pub async fn create_stream_audience(sb: &RunningSandbox, token: &str, name: &str) -> String {
    let (_, r) = api_post(
        sb,
        Some(token),
        "segment/audience/",
        json!({"advertiser_id": ADV1, "action": "create", "custom_audience_name": name}),
    )
    .await;
    assert_eq!(code(&r), 0, "{r}");
    r["data"]["audience_id"].as_str().expect("id").into()
}

pub async fn map_users(sb: &RunningSandbox, token: &str, aud: &str, ds: &[String]) -> Value {
    let batch: Vec<Value> = ds
        .iter()
        .map(|d| json!([{"id": d, "audience_ids": [aud]}]))
        .collect();
    api_post(
        sb,
        Some(token),
        "segment/mapping/",
        json!({"advertiser_ids": [ADV1], "action": "add", "id_schema": ["EMAIL_SHA256"], "batch_data": batch}),
    )
    .await
    .1
}

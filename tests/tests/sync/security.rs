//! After real runs (including a failed read, a revoked token and a preview), nothing the project wrote —
//! DynamoDB items, snapshots and reports in S3, log lines — holds a raw identifier or the TikTok token.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use audience_core::model::{Cadence, WriteMode};
use audience_core::ports::{StateStore, TokenVault};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::fixture::{World, emails};

/// Every log line of this test binary (tracing, all levels).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Capture {
    static LOGS: OnceLock<Capture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let c = Capture::default();
        let writer = c.clone();
        // our crates at their most verbose; dependencies at info (their internals are not our log lines)
        let filter = tracing_subscriber::EnvFilter::new(
            "info,audience_core=trace,audience_app=trace,audience_tiktok=trace,audience_aws=trace",
        );
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(move || writer.clone())
            .try_init();
        c
    })
}

/// Every `@`-word of the text, lowercased: how a raw email would show up, whatever quoting surrounds it.
fn at_words(text: &str) -> std::collections::HashSet<String> {
    let stop = |c: char| c.is_whitespace() || "\"',;<>()[]{}\\".contains(c);
    let mut out = std::collections::HashSet::new();
    for (i, _) in text.match_indices('@') {
        let start = text[..i].rfind(stop).map_or(0, |p| p + 1);
        let end = text[i..].find(stop).map_or(text.len(), |p| i + p);
        out.insert(text[start..end].to_lowercase());
    }
    out
}

fn assert_clean(what: &str, text: &str, raw: &[String], token: &str) {
    let words = at_words(text);
    let leaked = raw
        .iter()
        .filter(|r| words.iter().any(|w| w.contains(&r.to_lowercase())))
        .count();
    assert_eq!(leaked, 0, "{what} holds {leaked} raw identifiers");
    assert!(!text.contains(token), "{what} holds the TikTok token");
}

#[tokio::test]
async fn nothing_written_holds_a_raw_identifier_or_the_token() {
    let logs = logs();
    let w = World::new().await;
    let token = w
        .adapters
        .vault
        .get_connection(&w.project)
        .await
        .expect("vault")
        .expect("conn")
        .access_token;
    let token = token.expose_secret().to_string();
    let cohort = format!("c{}", ulid::Ulid::new().to_string().to_lowercase());
    let sync = w
        .create_sync(&cohort, Cadence::OnUpload, WriteMode::CustomerFile)
        .await;
    let mut raw = emails(0..1600);
    raw.push("not-an-email-but-personal@".into());
    let k = w.upload(&cohort, "2026-11-20T10:00", &raw).await;
    w.handle(w.s3_event(&k)).await;
    // a file without a header row: its "headers" are identifiers and must not be echoed anywhere
    let headless: String = emails(5000..5100)
        .iter()
        .map(|e| format!("{e},x\n"))
        .collect();
    let k2 = w
        .put(
            &format!("cohorts/{cohort}_2026-11-21T10:00_existing.csv"),
            headless.into_bytes(),
        )
        .await;
    w.handle(w.s3_event(&k2)).await;
    raw.extend(emails(5000..5100));
    // a preview and a revoked token
    w.adapters
        .state
        .put_preview(&audience_core::model::PreviewRecord {
            preview_id: "pv1".into(),
            project_id: w.project.clone(),
            s3_key: k.clone(),
            sync_id: None,
            state: audience_core::model::PreviewState::Running,
            report: None,
            error: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        })
        .await
        .expect("preview");
    w.handle(
        json!({"trigger": "preview", "project_id": w.project, "preview_id": "pv1", "s3_key": k}),
    )
    .await;
    w.revoke().await;
    let k3 = w
        .upload(&cohort, "2026-11-22T10:00", &emails(0..1700))
        .await;
    w.handle(w.s3_event(&k3)).await;
    raw.extend(emails(1600..1700));
    assert!(w.sync(&sync.sync_id).await.progress.last_run.is_some());

    // every DynamoDB item
    let mut items = String::new();
    let mut start = None;
    loop {
        let page = w
            .env
            .clients
            .dynamodb
            .scan()
            .table_name(&w.env.table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        for item in page.items() {
            items.push_str(&format!("{item:?}\n"));
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    assert!(
        items.contains(&sync.sync_id),
        "the scan saw the project's items"
    );
    assert_clean("a DynamoDB item", &items, &raw, &token);

    // every object the project wrote (snapshots, reports), not the customer's exports
    let s3 = &w.env.clients.s3;
    let mut seen = 0;
    for prefix in [
        w.config.snapshot_prefix.clone(),
        w.config.report_prefix.clone(),
    ] {
        let listed = s3
            .list_object_versions()
            .bucket(&w.env.bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("list");
        for v in listed.versions() {
            let (Some(key), Some(version)) = (v.key(), v.version_id()) else {
                continue;
            };
            let body = s3
                .get_object()
                .bucket(&w.env.bucket)
                .key(key)
                .version_id(version)
                .send()
                .await
                .expect("get");
            let bytes = body.body.collect().await.expect("body").into_bytes();
            assert_clean(
                &format!("object {key}"),
                &String::from_utf8_lossy(&bytes),
                &raw,
                &token,
            );
            seen += 1;
        }
    }
    assert!(seen >= 4, "snapshots and reports were scanned ({seen})");

    // every log line
    let text = String::from_utf8_lossy(&logs.0.lock().expect("logs")).to_string();
    assert!(text.contains("sync run"), "the run log lines were captured");
    assert_clean("a log line", &text, &raw, &token);
}

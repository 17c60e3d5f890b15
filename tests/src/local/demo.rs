//! `audience-sync-local --demo`: the story a newcomer sees, told through the stack's public surfaces only
//! (HTTP API, S3 uploads, the sandbox's view of TikTok). Returns whether the sandbox audience ended equal to the
//! cohort.

use std::collections::BTreeSet;
use std::io::Write;

use anyhow::{Context, Result, anyhow};
use chrono::{Duration as ChronoDuration, Timelike, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use super::Ready;
use super::client::StackClient;
use super::exports::{Dirt, amplitude_export, users};

fn n(v: &Value, field: &str) -> u64 {
    v.get(field).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

/// A URL without its query (OAuth states and codes are not for the screen), and the query's parameter names.
fn without_query(url: &str) -> String {
    match url.split_once('?') {
        None => url.to_string(),
        Some((base, q)) => {
            let names: Vec<String> = q
                .split('&')
                .filter_map(|p| p.split('=').next())
                .map(|name| format!("{name}=…"))
                .collect();
            format!("{base}?{}", names.join("&"))
        }
    }
}

fn grouped(x: u64) -> String {
    let d = x.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ledger_lines(run: &Value) -> Vec<String> {
    let skipped = run
        .get("skipped")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {}", v.as_u64().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let adds = run.get("adds").cloned().unwrap_or(Value::Null);
    let removes = run.get("removes").cloned().unwrap_or(Value::Null);
    vec![
        format!(
            "run {} (trigger {}): {}{}",
            s(run, "run_id"),
            s(run, "trigger"),
            s(run, "state"),
            run.get("reason")
                .and_then(Value::as_str)
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        format!(
            "  rows {}, valid {}, unique {}, duplicates {}; skipped: {}",
            grouped(n(run, "rows")),
            grouped(n(run, "valid")),
            grouped(n(run, "unique")),
            grouped(n(run, "duplicates")),
            if skipped.is_empty() {
                "none".into()
            } else {
                skipped
            }
        ),
        format!(
            "  adds: {} planned, {} applied; removes: {} planned, {} applied; {} TikTok calls",
            grouped(n(&adds, "planned")),
            grouped(n(&adds, "applied")),
            grouped(n(&removes, "planned")),
            grouped(n(&removes, "applied")),
            n(run, "tiktok_calls")
        ),
    ]
}

pub async fn run(ready: &Ready, out: &mut impl Write) -> Result<bool> {
    let c = StackClient::new(ready.clone()).await?;
    let tag: String = ulid::Ulid::new().to_string().to_lowercase()[20..].to_string();
    let project = format!("demo-{tag}");
    let cohort = format!("c{tag}");
    macro_rules! say {
        ($($t:tt)*) => {{ writeln!(out, $($t)*)?; out.flush()?; }};
    }

    say!("== audience-sync, locally: an Amplitude cohort becomes a TikTok custom audience");
    say!(
        "   (real handlers on moto at {}; TikTok is the sandbox at {})",
        ready.aws_endpoint,
        ready.tiktok_sandbox
    );

    say!("\n1. Connect TikTok for Amplitude project {project}");
    let connected = c.connect(&project).await?;
    say!(
        "   authorization URL: {}",
        without_query(&connected.authorization_url)
    );
    say!(
        "   TikTok consent (sandbox): approved, redirected to {}",
        without_query(&connected.redirected_to)
    );
    let page: String = connected.page_text.chars().take(240).collect();
    say!(
        "   callback page (HTTP {}): {page}",
        connected.callback_status
    );
    if connected.callback_status != 200 {
        return Err(anyhow!("the OAuth callback failed"));
    }

    let integration = c
        .get(&format!("/v1/projects/{project}/integration"))
        .await?;
    let advertisers = integration
        .get("advertisers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    say!(
        "\n2. Ad accounts authorized (integration {}):",
        s(&integration, "status")
    );
    for a in &advertisers {
        say!("   {}  {}", s(a, "advertiser_id"), s(a, "advertiser_name"));
    }
    let advertiser = advertisers
        .first()
        .map(|a| s(a, "advertiser_id").to_string())
        .ok_or_else(|| anyhow!("no advertiser authorized"))?;
    say!("   chosen: {advertiser}");

    let mapping = c
        .api(
            Method::PUT,
            &format!("/v1/projects/{project}/mapping"),
            Some(json!({"amplitude_property": "email", "tiktok_key": "EMAIL"})),
        )
        .await?;
    say!(
        "\n3. Mapping saved (HTTP {}): Amplitude property \"email\" → TikTok EMAIL (SHA-256)",
        mapping.status
    );
    mapping.expect(201)?;

    let sync = c
        .api(
            Method::POST,
            &format!("/v1/projects/{project}/syncs"),
            Some(json!({"cohort_id": cohort, "advertiser_id": advertiser, "cadence": "on_upload"})),
        )
        .await?
        .expect(201)?;
    let sync_id = s(&sync, "sync_id").to_string();
    say!(
        "\n4. Sync created: cohort {cohort} → advertiser {advertiser}, cadence {}, write mode {} (sync {sync_id})",
        s(&sync, "cadence"),
        s(&sync, "write_mode")
    );

    // Amplitude exports on the hour; the demo's three exports are 6 h apart, TikTok's processing window.
    let now = Utc::now()
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .unwrap_or_else(Utc::now);
    let first = amplitude_export(
        &cohort,
        now - ChronoDuration::hours(12),
        &users(0..5_000),
        Dirt::USUAL,
        false,
    );
    let key1 = c.upload(&first.file_name, first.bytes.clone()).await?;
    let skipped: u64 = first.skipped.values().sum();
    say!(
        "\n5. Amplitude writes its export: s3://{}/{key1}\n   {} rows: {} users, {} repeated in other spellings, {} pre-hashed, {} empty or invalid",
        ready.bucket,
        grouped(first.rows),
        grouped(5_000),
        Dirt::USUAL.duplicates,
        Dirt::USUAL.prehashed,
        skipped
    );
    let run1 = c.wait_for_export_run(&project, &sync_id, &key1).await?;
    say!("   the S3 event started the sync-runner:");
    for l in ledger_lines(&run1) {
        say!("   {l}");
    }
    let ok1 = audience_report(&c, &project, &sync_id, out, &first.expected).await?;
    say!(
        "   TikTok now processes the audience for hours: not valid and no matched size yet, and edits wait."
    );
    hours_pass(&c, out).await?;
    audience_report(&c, &project, &sync_id, out, &first.expected).await?;
    say!(
        "   (TikTok matches uploaded users to its accounts within 24-48 h and an audience is usable from 1,000"
    );
    say!(
        "   matched users; the sandbox matched {:.0} % of them)",
        100.0 * match_share(&c, &project, &sync_id, first.expected.len()).await
    );

    let second = amplitude_export(
        &cohort,
        now - ChronoDuration::hours(6),
        &users(250..5_400),
        Dirt::USUAL,
        true,
    );
    let key2 = c.upload(&second.file_name, second.bytes.clone()).await?;
    say!(
        "\n6. The next export (gzip): 250 users left the cohort, 400 joined: s3://{}/{key2}",
        ready.bucket
    );
    let run2 = c.wait_for_export_run(&project, &sync_id, &key2).await?;
    for l in ledger_lines(&run2) {
        say!("   {l}");
    }
    audience_report(&c, &project, &sync_id, out, &second.expected).await?;
    say!(
        "   TikTok takes one edit per processing window: what it refused meanwhile is held for the next run."
    );
    hours_pass(&c, out).await?;

    // The next export carries the same cohort: its run applies what the previous one held.
    let third = amplitude_export(&cohort, now, &users(250..5_400), Dirt::USUAL, true);
    let key3 = c.upload(&third.file_name, third.bytes.clone()).await?;
    say!(
        "\n7. Amplitude's next export (the cohort did not change): s3://{}/{key3}",
        ready.bucket
    );
    let run3 = c.wait_for_export_run(&project, &sync_id, &key3).await?;
    for l in ledger_lines(&run3) {
        say!("   {l}");
    }
    audience_report(&c, &project, &sync_id, out, &third.expected).await?;
    hours_pass(&c, out).await?;
    let ok2 = audience_report(&c, &project, &sync_id, out, &third.expected).await?;

    say!(
        "\n8. Check: the TikTok audience holds exactly the cohort's {} digests: {}",
        grouped(third.expected.len() as u64),
        if ok2 { "yes" } else { "NO" }
    );
    Ok(ok1 && ok2)
}

/// Six hours pass on the sandbox's logical clock (TikTok's processing window; the demo cannot wait them).
async fn hours_pass(c: &StackClient, out: &mut impl Write) -> Result<()> {
    c.sandbox_post("/_sandbox/clock", json!({"advance_ms": 6 * 3_600_000}))
        .await?;
    writeln!(
        out,
        "   ... 6 hours later (the demo moves the sandbox's clock: POST /_sandbox/clock) ..."
    )?;
    out.flush()?;
    Ok(())
}

/// The share of the audience's members TikTok matched (`cover_num` / members), as TikTok shows it now.
async fn match_share(c: &StackClient, project: &str, sync_id: &str, members: usize) -> f64 {
    let Ok(sync) = c
        .get(&format!("/v1/projects/{project}/syncs/{sync_id}"))
        .await
    else {
        return 0.0;
    };
    let Some(audience_id) = sync.get("tiktok_audience_id").and_then(Value::as_str) else {
        return 0.0;
    };
    let Ok(details) = c.audience_details(audience_id).await else {
        return 0.0;
    };
    let cover = n(&details, "cover_num");
    if members == 0 {
        0.0
    } else {
        cover as f64 / members as f64
    }
}

/// Prints the audience as the sandbox (TikTok) sees it; returns whether its members are `expected`.
async fn audience_report(
    c: &StackClient,
    project: &str,
    sync_id: &str,
    out: &mut impl Write,
    expected: &BTreeSet<String>,
) -> Result<bool> {
    let sync = c
        .get(&format!("/v1/projects/{project}/syncs/{sync_id}"))
        .await?;
    let audience_id = sync
        .get("tiktok_audience_id")
        .and_then(Value::as_str)
        .context("the sync has no TikTok audience")?
        .to_string();
    let members = c.audience_members(&audience_id).await?;
    let details = c.audience_details(&audience_id).await?;
    writeln!(
        out,
        "   TikTok audience {audience_id} \"{}\": {} members in the sandbox, {} matched to TikTok users (cover_num), valid: {}",
        s(&details, "name"),
        grouped(members.len() as u64),
        grouped(n(&details, "cover_num")),
        details
            .get("is_valid")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    )?;
    out.flush()?;
    Ok(&members == expected)
}

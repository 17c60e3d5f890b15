//! End-to-end benchmark: an Amplitude-style export of N users in moto's S3, the real engine and AWS adapters,
//! the TikTok sandbox as its own process over real HTTP.
//!
//! ```text
//! cargo build --release -p tiktok-sandbox -p audience-sync-tests --bin tiktok-sandbox --bin bench-e2e
//! target/release/bench-e2e [USERS=1000000] [--streaming USERS (default min(USERS, 1M))] [--qps 10] [--out FILE]
//!     [--memory-mb 512 (the run's digest budget)] [--first-only (no resync)]
//! ```
//!
//! Runs (1) the first customer-file sync of USERS, (2) a 1 %-churn resync (1 % of users leave, as many
//! join), (3) a first streaming sync. For each: per-stage wall time (from a timeline of the engine's S3 and
//! TikTok calls), the same stages timed directly on the domain functions, peak RSS of this process (VmHWM,
//! reset before each run), and the TikTok requests per action with ids per request from the sandbox's log.
//! It needs the moto venv (MOTO_PYTHON or the workspace `.venv`) or AWS_ENDPOINT_URL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use audience_aws::{Adapters, Config, DynamoRateGate};
use audience_core::cohort::reader::{find_column, open_maybe_gzip, scan_cohort};
use audience_core::digests::merge::diff_counts;
use audience_core::digests::snapshot::SnapshotReader;
use audience_core::digests::{Sorted, SortedWriter, Sorter, Spill};
use audience_core::model::{
    Advertiser, Cadence, KeyMapping, RunLedger, RunState, SyncConfig, SyncState, WriteMode,
};
use audience_core::ports::memory::RecordingInvoker;
use audience_core::ports::{CohortStore, CreateSync, StateStore, TikTokConnection, TokenVault};
use audience_core::sync::engine::Outcome;
use audience_core::sync::{Deps, Engine, EngineSettings, RunnerInput};
use audience_core::{KeyKind, Normalizer};
use audience_sync_tests::bench::rate::{self, StampingGate};
use audience_sync_tests::bench::{
    SandboxProcess, Stages, TimedApi, TimedStore, Timeline, achieved_rate, requests_by_action,
    sandbox_bin, stages, write_export,
};
use audience_sync_tests::{TestEnv, memory, moto_endpoint, unique_name};
use audience_tiktok::{AppSecret, AudienceAdapter, ClientConfig, ExposeSecret, TikTokClient};
use chrono::Utc;
use serde_json::{Value, json};

struct Args {
    users: u64,
    streaming: u64,
    qps: u32,
    out: Option<String>,
    /// The run's digest memory budget (MB); beyond it, digests are sorted in files in the work dir.
    memory_mb: u64,
    /// Only the first sync (no resync).
    first_only: bool,
    /// Only the many-syncs scenario: this many streaming syncs of `users` each, run at once.
    syncs: usize,
    /// The app-wide gate's jitter allowance (ms); default the runner's.
    gate_allowance_ms: Option<u64>,
}

fn args() -> Result<Args> {
    let mut users = 1_000_000u64;
    let mut streaming = None;
    let mut qps = 10u32;
    let mut out = None;
    let mut syncs = 0;
    let mut memory_mb = 512;
    let mut first_only = false;
    let mut gate_allowance_ms = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--streaming" => streaming = Some(it.next().context("--streaming N")?.parse()?),
            "--qps" => qps = it.next().context("--qps N")?.parse()?,
            "--out" => out = Some(it.next().context("--out FILE")?),
            "--memory-mb" => memory_mb = it.next().context("--memory-mb MB")?.parse()?,
            "--first-only" => first_only = true,
            "--syncs" => syncs = it.next().context("--syncs K")?.parse()?,
            "--gate-allowance-ms" => {
                gate_allowance_ms = Some(it.next().context("--gate-allowance-ms MS")?.parse()?)
            }
            n => {
                users = n
                    .replace('_', "")
                    .parse()
                    .with_context(|| format!("users: {n}"))?
            }
        }
    }
    Ok(Args {
        users,
        streaming: streaming.unwrap_or(users.min(1_000_000)),
        qps,
        out,
        syncs,
        memory_mb,
        first_only,
        gate_allowance_ms,
    })
}

/// The domain functions timed directly on the same S3 object (not inside the engine).
#[derive(Debug, Default)]
struct Direct {
    read: Duration,
    read_normalize_hash: Duration,
    sort_dedupe: Duration,
    base_load: Duration,
    diff: Duration,
    rows: u64,
    unique: u64,
    adds: u64,
    removes: u64,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

struct Bench {
    env: TestEnv,
    sandbox: SandboxProcess,
    adapters: Adapters,
    engine: Arc<Engine>,
    timeline: Timeline,
    project: String,
    work: tempfile::TempDir,
    engine_spill: Spill,
    gate: Arc<StampingGate>,
    dynamo_gate: DynamoRateGate,
}

impl Bench {
    async fn new(a: &Args) -> Result<Bench> {
        let (qps, memory_mb) = (a.qps, a.memory_mb);
        let _ = moto_endpoint();
        let env = TestEnv::new().await?;
        let sandbox = SandboxProcess::start(&sandbox_bin()?, qps)?;
        let mut vars: HashMap<&str, String> = HashMap::new();
        vars.insert("TABLE_NAME", env.table.clone());
        vars.insert("BUCKET_NAME", env.bucket.clone());
        vars.insert("COHORT_PREFIX", "cohorts".into());
        vars.insert("SECRET_PREFIX", env.secret_prefix.clone());
        vars.insert("SCHEDULE_GROUP", env.schedule_group.clone());
        vars.insert(
            "SYNC_RUNNER_ARN",
            "arn:aws:lambda:us-east-1:123456789012:function:sync-runner".into(),
        );
        vars.insert(
            "SCHEDULER_ROLE_ARN",
            "arn:aws:iam::123456789012:role/scheduler".into(),
        );
        vars.insert("TIKTOK_HOST", sandbox.base_url.clone());
        vars.insert("TIKTOK_RATE", qps.to_string());
        let config = Config::from_lookup(|k| vars.get(k).cloned())?;
        let adapters = Adapters::new(&env.clients, &config)?;
        let allowance = a.gate_allowance_ms.map_or(
            audience_aws::DEFAULT_JITTER_ALLOWANCE,
            Duration::from_millis,
        );
        let dynamo_gate = DynamoRateGate::with_jitter_allowance(
            env.clients.dynamodb.clone(),
            env.table.clone(),
            "tiktok",
            config.tiktok_rate,
            allowance,
        );
        let gate = Arc::new(StampingGate::new(Arc::new(dynamo_gate.clone())));
        let client = TikTokClient::new(ClientConfig {
            host: config.tiktok_host.clone(),
            rate_per_second: config.tiktok_rate * audience_tiktok::TIER_SHARE,
            rate_gate: Some(gate.clone()),
            ..ClientConfig::default()
        })?;
        let timeline = Timeline::default();
        let work = tempfile::tempdir()?;
        let engine_spill = Spill::from_budget(memory_mb << 20, work.path().to_path_buf());
        let engine = Arc::new(Engine::new(
            Deps {
                state: adapters.state.clone(),
                vault: adapters.vault.clone(),
                cohorts: Arc::new(TimedStore {
                    inner: adapters.cohorts.clone(),
                    timeline: timeline.clone(),
                }),
                schedules: adapters.schedules.clone().context("schedules")?,
                invoker: Arc::new(RecordingInvoker::new()),
                tiktok: Arc::new(TimedApi {
                    inner: Arc::new(AudienceAdapter::new(client.clone())),
                    timeline: timeline.clone(),
                }),
                clock: Arc::new(audience_core::ports::SystemClock),
            },
            EngineSettings {
                work_dir: work.path().to_path_buf(),
                reader: audience_core::cohort::reader::ReaderLimits {
                    spill: engine_spill.clone(),
                    ..Default::default()
                },
                ..EngineSettings::default()
            },
        ));
        let project = unique_name("bench");
        // Connect: consent, code exchange, token stored, integration connected, email mapping saved.
        let code = sandbox.consent_code().await?;
        let grant = client
            .exchange_auth_code(
                &sandbox.app_id,
                &AppSecret::new(sandbox.secret.clone()),
                &code,
            )
            .await?
            .data;
        let conn = TikTokConnection {
            access_token: grant.access_token.expose_secret().to_string().into(),
            advertiser_ids: grant.advertiser_ids.clone(),
            scope_ids: grant.scope.iter().map(|s| *s as u32).collect(),
            connected_at: Utc::now(),
        };
        adapters.vault.put_connection(&project, &conn).await?;
        let advertisers: Vec<Advertiser> = grant
            .advertiser_ids
            .iter()
            .map(|a| Advertiser {
                advertiser_id: a.clone(),
                advertiser_name: format!("adv {a}"),
            })
            .collect();
        adapters
            .state
            .record_connection(&project, &advertisers, &conn.scope_ids, Utc::now())
            .await?;
        let mapping = KeyMapping {
            amplitude_property: "email".into(),
            tiktok_key: KeyKind::Email,
            default_phone_region: None,
        };
        adapters
            .state
            .save_mapping(&project, &mapping, Utc::now())
            .await?;
        Ok(Bench {
            env,
            sandbox,
            adapters,
            engine,
            timeline,
            project,
            work,
            engine_spill,
            gate,
            dynamo_gate,
        })
    }

    async fn create_sync(&self, cohort: &str, mode: WriteMode) -> Result<SyncConfig> {
        let now = Utc::now();
        let sync = SyncConfig {
            schedule_name: None,
            sync_id: ulid::Ulid::new().to_string(),
            project_id: self.project.clone(),
            cohort_id: cohort.to_string(),
            advertiser_id: self.sandbox.advertiser_ids[0].clone(),
            cadence: Cadence::OnUpload,
            write_mode: mode,
            state: SyncState::Active,
            audience_name: Some(format!("Bench {cohort}")),
            max_removal_ratio: 0.5,
            min_create_size: 1000,
            committed: None,
            pending_export: None,
            warnings: vec![],
            created_at: now,
            updated_at: now,
            version: 0,
            progress: Default::default(),
        };
        Ok(match self.adapters.state.create_sync(&sync).await? {
            CreateSync::Created(s) | CreateSync::Exists(s) => s,
        })
    }

    /// Generates and uploads an export; returns (key, bytes, upload time).
    async fn upload(
        &self,
        cohort: &str,
        stamp: &str,
        users: std::ops::Range<u64>,
    ) -> Result<(String, u64, Duration)> {
        let path = self.work.path().join(format!("{cohort}-{stamp}.csv"));
        let size = write_export(&path, users)?;
        let key = format!("cohorts/{cohort}_{stamp}_existing.csv");
        let t = Instant::now();
        let body = aws_sdk_s3::primitives::ByteStream::from_path(&path).await?;
        self.env
            .clients
            .s3
            .put_object()
            .bucket(&self.env.bucket)
            .key(&key)
            .body(body)
            .send()
            .await
            .context("put export")?;
        let took = t.elapsed();
        std::fs::remove_file(&path)?;
        Ok((key, size, took))
    }

    /// The stages timed directly on the domain functions, reading the same object from S3.
    async fn direct(&self, key: &str, sync: &SyncConfig) -> Result<Direct> {
        let mut d = Direct::default();
        // read only: gunzip/BOM + CSV + column lookup, the identifier bytes touched, nothing normalized
        let body = self.adapters.cohorts.open(key).await?.body;
        let (read, rows) = tokio::task::spawn_blocking(move || -> Result<(Duration, u64)> {
            let t = Instant::now();
            let input = open_maybe_gzip(body, false)?;
            let mut rdr = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .buffer_capacity(256 * 1024)
                .from_reader(input);
            let mut rec = csv::ByteRecord::new();
            if !rdr.read_byte_record(&mut rec)? {
                bail!("empty export");
            }
            let col = find_column(&rec, "email")?;
            let (mut rows, mut bytes) = (0u64, 0u64);
            while rdr.read_byte_record(&mut rec)? {
                rows += 1;
                bytes += rec.get(col).map_or(0, |v| v.len() as u64);
            }
            std::hint::black_box(bytes);
            Ok((t.elapsed(), rows))
        })
        .await??;
        d.read = read;
        d.rows = rows;
        // the reader as the engine runs it: read + normalize + hash into a Vec
        let body = self.adapters.cohorts.open(key).await?.body;
        let spill = self.engine_spill.clone();
        let (took, sorter) = tokio::task::spawn_blocking(move || -> Result<_> {
            let n = Normalizer::new(KeyKind::Email, None)?;
            let t = Instant::now();
            let mut sorter = Sorter::new(&spill, 1);
            let mut failed = None;
            scan_cohort(open_maybe_gzip(body, false)?, "email", &n, |x| {
                if failed.is_none() {
                    failed = sorter.push(x).err();
                }
            })?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            Ok((t.elapsed(), sorter))
        })
        .await??;
        d.read_normalize_hash = took;
        let t = Instant::now();
        let (set, _) = tokio::task::spawn_blocking(move || sorter.finish()).await??;
        d.sort_dedupe = t.elapsed();
        d.unique = set.len() as u64;
        // the base: the committed snapshot, as the engine loads it
        let base = match (&sync.committed, &sync.progress.tiktok_audience_id) {
            (Some(p), Some(_)) => {
                let t = Instant::now();
                let body = self.adapters.cohorts.open_snapshot(&p.snapshot).await?.body;
                let spill = self.engine_spill.clone();
                let set = tokio::task::spawn_blocking(move || -> Result<Sorted> {
                    let r = SnapshotReader::open(std::io::BufReader::with_capacity(1 << 20, body))?;
                    let mut w = SortedWriter::new(&spill);
                    for x in r {
                        w.push(x?)?;
                    }
                    Ok(w.finish()?)
                })
                .await??;
                d.base_load = t.elapsed();
                set
            }
            _ => Sorted::empty(),
        };
        let t = Instant::now();
        let (adds, removes) =
            tokio::task::spawn_blocking(move || diff_counts(base.iter()?, set.iter()?)).await??;
        d.diff = t.elapsed();
        d.adds = adds;
        d.removes = removes;
        Ok(d)
    }

    async fn sync(&self, id: &str) -> Result<SyncConfig> {
        self.adapters
            .state
            .get_sync(&self.project, id)
            .await?
            .context("sync exists")
    }

    /// One engine run on an S3 event for `key`, with its timeline, peak RSS and TikTok requests.
    async fn run(&self, label: &str, sync_id: &str, key: &str, direct: Direct) -> Result<Value> {
        let log_before = self.sandbox.requests().await?.len();
        let rss_before = memory::rss_kib().unwrap_or(0);
        let reset = memory::reset_peak();
        let event = json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": self.env.bucket}, "object": {"key": key.replace(':', "%3A")}}}]});
        let input = RunnerInput::parse(&event)?;
        self.timeline.reset();
        let t = Instant::now();
        let out = self.engine.handle(input, None).await?;
        let total = t.elapsed();
        let peak = memory::peak_rss_kib().unwrap_or(0);
        let st: Stages = stages(&self.timeline.events(), total);
        match out.as_slice() {
            [
                Outcome::Run {
                    state: RunState::Succeeded,
                    ..
                },
            ] => {}
            other => bail!("{label}: {other:?}"),
        }
        let sync = self.sync(sync_id).await?;
        let ledger: RunLedger = sync.progress.last_run.clone().context("ledger")?;
        let log = self.sandbox.requests().await?;
        let by_action = requests_by_action(&log[log_before..]);
        let stages_json = json!({
            "setup_ms": ms(st.setup), "read_normalize_hash_ms": ms(st.read_normalize_hash),
            "sort_base_diff_ms": ms(st.sort_base_diff), "of_which_base_snapshot_ms": ms(st.base_snapshot),
            "apply_ms": ms(st.apply), "of_which_in_tiktok_calls_ms": ms(st.in_tiktok_calls),
            "commit_ms": ms(st.commit), "of_which_snapshot_upload_ms": ms(st.snapshot_upload),
            "finish_ms": ms(st.finish), "total_ms": ms(st.total),
        });
        let direct_json = json!({
            "read_ms": ms(direct.read),
            "normalize_hash_ms": ms(direct.read_normalize_hash.saturating_sub(direct.read)),
            "read_normalize_hash_ms": ms(direct.read_normalize_hash),
            "sort_dedupe_ms": ms(direct.sort_dedupe), "base_load_ms": ms(direct.base_load),
            "diff_ms": ms(direct.diff), "rows": direct.rows, "unique": direct.unique,
            "adds": direct.adds, "removes": direct.removes,
        });
        let requests: Value = by_action
            .iter()
            .map(|(k, (n, ids, max))| {
                (
                    k.clone(),
                    json!({"requests": n, "ids": ids, "max_ids_per_request": max,
                           "ids_per_request": if *n > 0 { *ids as f64 / *n as f64 } else { 0.0 }}),
                )
            })
            .collect::<serde_json::Map<String, Value>>()
            .into();
        let r = json!({
            "scenario": label,
            "rows": ledger.rows, "unique": ledger.unique,
            "adds_applied": ledger.adds.applied, "removes_applied": ledger.removes.applied,
            "tiktok_calls": ledger.tiktok_calls,
            "audience_cover_num": sync.progress.tiktok_status.as_ref().and_then(|s| s.cover_num),
            "engine_stages": stages_json, "direct_stages": direct_json,
            "rss_before_kib": rss_before, "peak_rss_kib": peak, "peak_was_reset": reset,
            "tiktok_requests": requests,
            "sandbox_peak_rss_kib": self.sandbox.peak_rss_kib(),
        });
        eprintln!("{}", serde_json::to_string_pretty(&r)?);
        if direct.adds != ledger.adds.applied || direct.removes != ledger.removes.applied {
            bail!(
                "{label}: the engine applied +{} -{}, the direct diff says +{} -{}",
                ledger.adds.applied,
                ledger.removes.applied,
                direct.adds,
                direct.removes
            );
        }
        Ok(r)
    }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default();
    json!({"cpu": cpu, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "memory": mem})
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = args()?;
    let b = Bench::new(&a).await?;
    if a.syncs > 0 {
        return many_syncs(&b, &a).await;
    }
    let mut results = Vec::new();
    let n = a.users;
    let churn = (n / 100).max(1);

    // (1) first customer-file sync of N users
    let cohort = format!("c{}", ulid::Ulid::new().to_string().to_lowercase());
    let sync = b.create_sync(&cohort, WriteMode::CustomerFile).await?;
    let (k1, size1, up1) = b.upload(&cohort, "2026-11-20T10:00", 0..n).await?;
    eprintln!(
        "export 1: {n} users, {size1} bytes, uploaded to moto in {:.1} s",
        up1.as_secs_f64()
    );
    let d = b.direct(&k1, &b.sync(&sync.sync_id).await?).await?;
    let mut r = b
        .run("customer_file first sync", &sync.sync_id, &k1, d)
        .await?;
    r["export_bytes"] = json!(size1);
    results.push(r);

    // (2) 1 %-churn resync: the first 1 % leave, as many new users join
    if !a.first_only {
        let (k2, size2, _) = b
            .upload(&cohort, "2026-11-21T10:00", churn..n + churn)
            .await?;
        let d = b.direct(&k2, &b.sync(&sync.sync_id).await?).await?;
        let mut r = b
            .run("customer_file 1 % churn resync", &sync.sync_id, &k2, d)
            .await?;
        r["export_bytes"] = json!(size2);
        results.push(r);
    }

    // (3) first streaming sync
    if a.streaming > 0 {
        let cohort = format!("c{}", ulid::Ulid::new().to_string().to_lowercase());
        let sync = b.create_sync(&cohort, WriteMode::Streaming).await?;
        let (k3, size3, _) = b
            .upload(&cohort, "2026-11-20T10:00", 0..a.streaming)
            .await?;
        let d = b.direct(&k3, &b.sync(&sync.sync_id).await?).await?;
        let mut r = b.run("streaming first sync", &sync.sync_id, &k3, d).await?;
        r["export_bytes"] = json!(size3);
        results.push(r);
    }

    let report = json!({
        "machine": machine(), "users": n, "streaming_users": a.streaming, "qps": a.qps,
        "engine_settings": format!("{:?}", EngineSettings::default()), "memory_mb": a.memory_mb,
        "results": results,
    });
    let out = a.out.unwrap_or_else(|| format!("bench-e2e-{n}.json"));
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", serde_json::to_string(&report)?);
    eprintln!("written to {out}");
    Ok(())
}

/// `--syncs K`: K streaming syncs of `users` each run at once (as K Lambda invocations would, each with its
/// own lease), sharing the app's rate through the DynamoDB gate. Reports the rate TikTok saw against the
/// configured one.
async fn many_syncs(b: &Bench, a: &Args) -> Result<()> {
    let mut keys = Vec::new();
    for _ in 0..a.syncs {
        let cohort = format!("c{}", ulid::Ulid::new().to_string().to_lowercase());
        let sync = b.create_sync(&cohort, WriteMode::Streaming).await?;
        let (key, _, _) = b.upload(&cohort, "2026-11-20T10:00", 0..a.users).await?;
        keys.push((sync.sync_id, key));
    }
    let before = b.sandbox.requests().await?.len();
    let released_before = b.gate.stamps().len();
    let t = Instant::now();
    // Each run is its own task (as each would be its own Lambda process), so one run's CPU work never keeps
    // another from being polled when its slot comes.
    let runs: Vec<_> = keys
        .iter()
        .map(|(_, key)| {
            let event = json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": b.env.bucket}, "object": {"key": key.replace(':', "%3A")}}}]});
            let engine = b.engine.clone();
            tokio::spawn(async move {
                let input = RunnerInput::parse(&event)?;
                engine.handle(input, None).await.map_err(anyhow::Error::from)
            })
        })
        .collect();
    let outcomes = futures::future::join_all(runs).await;
    let wall = t.elapsed();
    let mut succeeded = 0;
    for o in outcomes {
        if let [
            Outcome::Run {
                state: RunState::Succeeded,
                ..
            },
        ] = o??.as_slice()
        {
            succeeded += 1;
        }
    }
    let log = b.sandbox.requests().await?;
    let log = &log[before..];
    let (busiest, mean, n) = achieved_rate(log);
    let released = b.gate.stamps().split_off(released_before);
    // The Marketing API requests (those the gate spaced) by receive time, as `achieved_rate` counts them.
    let mut by_time: Vec<(u64, Option<&str>)> = log
        .iter()
        .filter(|e| e.path.starts_with("/open_api/") && !e.path.contains("oauth2"))
        .map(|e| (e.ts_ms, e.audience_id.as_deref()))
        .collect();
    by_time.sort_by_key(|r| r.0);
    let received: Vec<u64> = by_time.iter().map(|r| r.0).collect();
    let contended = rate::contended_rate(&by_time);
    let report = json!({
        "machine": machine(), "syncs": a.syncs, "users_per_sync": a.users, "succeeded": succeeded,
        "configured_qps": a.qps, "tiktok_requests": n, "wall_s": wall.as_secs_f64(),
        "gate_allowance_ms": a.gate_allowance_ms
            .unwrap_or(audience_aws::DEFAULT_JITTER_ALLOWANCE.as_millis() as u64),
        "mean_requests_per_s": mean, "busiest_second": busiest,
        "mean_share_of_configured": mean / a.qps as f64,
        "contended_requests_per_s": contended,
        "contended_share_of_configured": contended.map(|c| c / a.qps as f64),
        "rejected_40100": log.iter().filter(|e| e.code == Some(40100)).count(),
        "released_by_gate": released.len(),
        "busiest_second_released": rate::busiest(&released, 1_000_000),
        "release_to_receive_ms_min_p50_p99_max": rate::delivery_ms(&released, &received),
        "gate": b.dynamo_gate.stats(),
        "received_per_second": rate::per_second(&received),
        // Every request TikTok saw, in order: what made a burst, or stretched the tail of the run.
        "requests": log,
    });
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| format!("bench-rate-{}x{}.json", a.syncs, a.users));
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", serde_json::to_string(&report)?);
    if succeeded != a.syncs {
        bail!("{succeeded} of {} syncs succeeded", a.syncs);
    }
    Ok(())
}

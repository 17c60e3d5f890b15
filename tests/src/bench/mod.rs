//! Support for the end-to-end benchmark (`src/bin/bench-e2e.rs`): an Amplitude-style export generator, port
//! decorators that time every TikTok and S3 call of an engine run (a timeline, so the run splits into
//! stages without touching the engine), and a TikTok sandbox run as its own process (so its memory never
//! counts in the engine's peak RSS).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use audience_core::KeyKind;
use audience_core::digests::Digest;
use audience_core::model::SnapshotRef;
use audience_core::ports::{CohortStore, ExportObject, ObjectMeta, ObjectReader, PortError};
use audience_core::sync::api::{
    Ack, ApiError, AudienceApi, AudienceView, CallCounters, FileAction, MappingAction,
};
use secrecy::SecretString;
use serde::Deserialize;

pub mod rate;

/// Writes an Amplitude `existing` export of the users `range`: `Amplitude ID,User ID,email,country`, the email
/// in mixed case (so normalization has work to do). Returns the file size in bytes.
pub fn write_export(path: &Path, range: std::ops::Range<u64>) -> Result<u64> {
    let f = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    w.write_all(b"Amplitude ID,User ID,email,country\n")?;
    const COUNTRIES: [&str; 5] = ["US", "DE", "FR", "GB", "JP"];
    for i in range {
        writeln!(
            w,
            "{},u{i},User{i}.Name@Example{}.com,{}",
            100_000_000_000 + i,
            i % 97,
            COUNTRIES[(i % 5) as usize]
        )?;
    }
    w.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// One timed port call, relative to [`Timeline::start`].
#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    pub start: Duration,
    pub end: Duration,
}

/// The port calls of a run, in order. `reset` before each run.
#[derive(Clone)]
pub struct Timeline {
    inner: Arc<Mutex<(Instant, Vec<Event>)>>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            inner: Arc::new(Mutex::new((Instant::now(), Vec::new()))),
        }
    }
}

impl Timeline {
    pub fn reset(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g = (Instant::now(), Vec::new());
    }

    pub fn start(&self) -> Instant {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    pub fn events(&self) -> Vec<Event> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    fn record(&self, name: &'static str, start: Instant, end: Instant) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let t0 = g.0;
        g.1.push(Event {
            name,
            start: start.saturating_duration_since(t0),
            end: end.saturating_duration_since(t0),
        });
    }

    async fn time<T>(&self, name: &'static str, f: impl std::future::Future<Output = T>) -> T {
        let s = Instant::now();
        let r = f.await;
        self.record(name, s, Instant::now());
        r
    }
}

/// An object body that records, as one event, the span from its first read to the read that hit the end.
struct TimedBody {
    inner: Box<dyn Read + Send>,
    name: &'static str,
    timeline: Timeline,
    first: Option<Instant>,
    done: bool,
}

impl Read for TimedBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let now = Instant::now();
        let first = *self.first.get_or_insert(now);
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.done {
            self.done = true;
            self.timeline.record(self.name, first, Instant::now());
        }
        Ok(n)
    }
}

/// [`CohortStore`] decorator: times every call, and the streaming of export and snapshot bodies.
pub struct TimedStore {
    pub inner: Arc<dyn CohortStore>,
    pub timeline: Timeline,
}

impl TimedStore {
    fn wrap(&self, r: ObjectReader, name: &'static str) -> ObjectReader {
        ObjectReader {
            meta: r.meta,
            body: Box::new(TimedBody {
                inner: r.body,
                name,
                timeline: self.timeline.clone(),
                first: None,
                done: false,
            }),
        }
    }
}

#[async_trait::async_trait]
impl CohortStore for TimedStore {
    async fn newest_existing_export(
        &self,
        c: &str,
        seen: Option<&str>,
    ) -> Result<Option<ExportObject>, PortError> {
        self.timeline
            .time(
                "s3.newest_export",
                self.inner.newest_existing_export(c, seen),
            )
            .await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, PortError> {
        self.timeline.time("s3.head", self.inner.head(key)).await
    }
    async fn open(&self, key: &str) -> Result<ObjectReader, PortError> {
        let r = self.timeline.time("s3.open", self.inner.open(key)).await?;
        Ok(self.wrap(r, "export.stream"))
    }
    async fn put_snapshot(
        &self,
        p: &str,
        s: &str,
        name: &str,
        file: &Path,
    ) -> Result<SnapshotRef, PortError> {
        self.timeline
            .time("s3.put_snapshot", self.inner.put_snapshot(p, s, name, file))
            .await
    }
    async fn delete_snapshot(&self, snapshot: &SnapshotRef) -> Result<(), PortError> {
        self.inner.delete_snapshot(snapshot).await
    }
    async fn delete_run_report(&self, p: &str, s: &str, r: &str) -> Result<(), PortError> {
        self.inner.delete_run_report(p, s, r).await
    }
    async fn open_snapshot(&self, snapshot: &SnapshotRef) -> Result<ObjectReader, PortError> {
        let r = self
            .timeline
            .time("s3.open_snapshot", self.inner.open_snapshot(snapshot))
            .await?;
        Ok(self.wrap(r, "snapshot.stream"))
    }
    async fn put_run_report(
        &self,
        p: &str,
        s: &str,
        r: &str,
        report: &serde_json::Value,
    ) -> Result<String, PortError> {
        self.timeline
            .time(
                "s3.put_run_report",
                self.inner.put_run_report(p, s, r, report),
            )
            .await
    }
    async fn put_preview_report(
        &self,
        p: &str,
        id: &str,
        report: &serde_json::Value,
    ) -> Result<String, PortError> {
        self.inner.put_preview_report(p, id, report).await
    }
    async fn get_report(&self, key: &str) -> Result<Option<serde_json::Value>, PortError> {
        self.inner.get_report(key).await
    }
    async fn delete_sync_objects(&self, p: &str, s: &str) -> Result<(), PortError> {
        self.inner.delete_sync_objects(p, s).await
    }
    async fn delete_project_objects(&self, p: &str) -> Result<(), PortError> {
        self.inner.delete_project_objects(p).await
    }
}

/// [`AudienceApi`] decorator: times every TikTok call (retries included, as the engine sees it).
pub struct TimedApi {
    pub inner: Arc<dyn AudienceApi>,
    pub timeline: Timeline,
}

#[async_trait::async_trait]
impl AudienceApi for TimedApi {
    async fn upload_digest_file(
        &self,
        t: &SecretString,
        a: &str,
        k: KeyKind,
        file: &Path,
    ) -> Result<Ack<String>, ApiError> {
        self.timeline
            .time(
                "tiktok.upload",
                self.inner.upload_digest_file(t, a, k, file),
            )
            .await
    }
    async fn create_file_audience(
        &self,
        t: &SecretString,
        a: &str,
        name: &str,
        k: KeyKind,
        paths: &[String],
    ) -> Result<Ack<String>, ApiError> {
        self.timeline
            .time(
                "tiktok.create",
                self.inner.create_file_audience(t, a, name, k, paths),
            )
            .await
    }
    async fn update_file_audience(
        &self,
        t: &SecretString,
        a: &str,
        id: &str,
        action: FileAction,
        paths: &[String],
    ) -> Result<Ack<()>, ApiError> {
        self.timeline
            .time(
                "tiktok.update",
                self.inner.update_file_audience(t, a, id, action, paths),
            )
            .await
    }
    async fn create_stream_audience(
        &self,
        t: &SecretString,
        a: &str,
        name: &str,
    ) -> Result<Ack<String>, ApiError> {
        self.timeline
            .time(
                "tiktok.segment_create",
                self.inner.create_stream_audience(t, a, name),
            )
            .await
    }
    async fn stream_mapping(
        &self,
        t: &SecretString,
        a: &str,
        id: &str,
        k: KeyKind,
        action: MappingAction,
        digests: &[Digest],
    ) -> Result<Ack<()>, ApiError> {
        self.timeline
            .time(
                "tiktok.mapping",
                self.inner.stream_mapping(t, a, id, k, action, digests),
            )
            .await
    }
    async fn find_audiences_by_name(
        &self,
        t: &SecretString,
        a: &str,
        name: &str,
    ) -> Result<Ack<Vec<String>>, ApiError> {
        self.timeline
            .time("tiktok.find", self.inner.find_audiences_by_name(t, a, name))
            .await
    }
    async fn audience_status(
        &self,
        t: &SecretString,
        a: &str,
        id: &str,
    ) -> Result<Ack<Option<AudienceView>>, ApiError> {
        self.timeline
            .time("tiktok.status", self.inner.audience_status(t, a, id))
            .await
    }
    fn counters(&self) -> CallCounters {
        self.inner.counters()
    }
}

/// Stage boundaries of one engine run, from its timeline (all relative to the run's start).
#[derive(Debug, Clone, Default)]
pub struct Stages {
    /// Lease, sync and integration reads, export head: until the export starts streaming.
    pub setup: Duration,
    /// The export streamed from S3 through gunzip/CSV/normalize/hash (one pass, interleaved).
    pub read_normalize_hash: Duration,
    /// From the export's end to the first TikTok call: sort/dedupe, base snapshot load, diff, guards, ledger.
    pub sort_base_diff: Duration,
    /// Of which: the base snapshot streamed from S3 and decoded.
    pub base_snapshot: Duration,
    /// First TikTok write to the end of the last one (files written, uploaded, create/update or mappings).
    pub apply: Duration,
    /// Of which: time inside TikTok calls.
    pub in_tiktok_calls: Duration,
    /// After the last write: snapshot written and uploaded, state committed, until the status read-back.
    pub commit: Duration,
    /// Of which: the snapshot upload to S3.
    pub snapshot_upload: Duration,
    /// Status read-back, ledger, report, sync saved.
    pub finish: Duration,
    pub total: Duration,
}

pub fn stages(events: &[Event], total: Duration) -> Stages {
    let find = |n: &str| events.iter().find(|e| e.name == n);
    let writes: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.name.starts_with("tiktok.") && !matches!(e.name, "tiktok.status" | "tiktok.find")
        })
        .collect();
    let export = find("export.stream");
    let export_start = export.map(|e| e.start).unwrap_or_default();
    let export_end = export.map(|e| e.end).unwrap_or_default();
    let first_write = writes.first().map(|e| e.start).unwrap_or(export_end);
    let last_write = writes.last().map(|e| e.end).unwrap_or(first_write);
    let status = find("tiktok.status").map(|e| e.start).unwrap_or(total);
    Stages {
        setup: export_start,
        read_normalize_hash: export_end.saturating_sub(export_start),
        sort_base_diff: first_write.saturating_sub(export_end),
        base_snapshot: find("snapshot.stream")
            .map(|e| e.end.saturating_sub(e.start))
            .unwrap_or_default(),
        apply: last_write.saturating_sub(first_write),
        in_tiktok_calls: writes.iter().map(|e| e.end.saturating_sub(e.start)).sum(),
        commit: status.saturating_sub(last_write),
        snapshot_upload: find("s3.put_snapshot")
            .map(|e| e.end.saturating_sub(e.start))
            .unwrap_or_default(),
        finish: total.saturating_sub(status),
        total,
    }
}

/// A TikTok sandbox in its own process (`tiktok-sandbox --port 0`), killed on drop.
pub struct SandboxProcess {
    child: Child,
    pub base_url: String,
    pub app_id: String,
    pub secret: String,
    pub advertiser_ids: Vec<String>,
    pub http: reqwest::Client,
}

#[derive(Deserialize)]
struct Ready {
    listening: String,
    app_id: String,
    secret: String,
    advertiser_ids: Vec<String>,
}

/// One line of the sandbox's request log (the fields the bench reads).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct LogEntry {
    /// When the sandbox received it (ms since the epoch).
    #[serde(default)]
    pub ts_ms: u64,
    pub path: String,
    #[serde(default)]
    pub audience_id: Option<String>,
    pub action: Option<String>,
    pub ids: usize,
    pub code: Option<i64>,
    pub applied: bool,
}

/// The request rate TikTok saw: (most requests in any 1-second window, mean requests/s from the first to
/// the last one, count). Over the Marketing API requests only (not OAuth).
pub fn achieved_rate(log: &[LogEntry]) -> (usize, f64, usize) {
    let mut ts: Vec<u64> = log
        .iter()
        .filter(|e| e.path.starts_with("/open_api/") && !e.path.contains("oauth2"))
        .map(|e| e.ts_ms)
        .collect();
    ts.sort_unstable();
    let most = rate::busiest(&ts, 1000);
    let mean = match (ts.first(), ts.last()) {
        (Some(a), Some(b)) if b > a => (ts.len() - 1) as f64 * 1000.0 / (b - a) as f64,
        _ => 0.0,
    };
    (most, mean, ts.len())
}

impl SandboxProcess {
    pub fn start(bin: &Path, qps: u32) -> Result<SandboxProcess> {
        let mut child = Command::new(bin)
            .args([
                "--port",
                "0",
                "--qps",
                &qps.to_string(),
                "--match-rate",
                "1.0",
                // Two TikTok rules off, both for engine v1, which this bench measures as it is: its
                // resync sends APPEND and REMOVE in one run (TikTok processes for hours after each edit:
                // 40002), and its first streaming run maps right after creating the audience (40201 for
                // ~90 s). Every other rule (50 MB files, rate windows, file expiry, ...) stays on.
                "--rules",
                r#"{"processing_ms":0,"streaming_not_ready_ms":0}"#,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let stdout = child.stdout.take().context("sandbox stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let ready: Ready = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                bail!("sandbox ready line {line:?}: {e}");
            }
        };
        Ok(SandboxProcess {
            child,
            base_url: ready.listening,
            app_id: ready.app_id,
            secret: ready.secret,
            advertiser_ids: ready.advertiser_ids,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        })
    }

    /// Consent as the advertiser would give it: the auth code from the redirect.
    pub async fn consent_code(&self) -> Result<String> {
        let url = format!(
            "{}/portal/auth?app_id={}&state=s&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb",
            self.base_url, self.app_id
        );
        let resp = self.http.get(url).send().await?;
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("no redirect")?
            .to_string();
        let url = url::Url::parse(&location)?;
        url.query_pairs()
            .find(|(k, _)| k == "auth_code")
            .map(|(_, v)| v.to_string())
            .context("no auth_code")
    }

    pub async fn requests(&self) -> Result<Vec<LogEntry>> {
        Ok(self
            .http
            .get(format!("{}/_sandbox/requests", self.base_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Resident memory of the sandbox process (KiB), for the record.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        s.lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// TikTok requests of a run grouped by endpoint and action: (requests, ids carried, max ids in one).
pub fn requests_by_action(log: &[LogEntry]) -> BTreeMap<String, (usize, usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for e in log.iter().filter(|e| e.path.starts_with("/open_api/")) {
        let endpoint = e
            .path
            .trim_start_matches("/open_api/v1.3/")
            .trim_end_matches('/');
        let key = match &e.action {
            Some(a) => format!("{endpoint} {a}"),
            None => endpoint.to_string(),
        };
        let entry = out.entry(key).or_default();
        entry.0 += 1;
        entry.1 += e.ids;
        entry.2 = entry.2.max(e.ids);
    }
    out
}

/// The release sandbox binary next to this one (`target/release/tiktok-sandbox`), else `SANDBOX_BIN`.
pub fn sandbox_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SANDBOX_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe()?;
    let dir = me.parent().context("exe dir")?;
    let p = dir.join("tiktok-sandbox");
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "{} not found: build it with `cargo build --release -p tiktok-sandbox` or set SANDBOX_BIN",
        p.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ts_ms: u64) -> LogEntry {
        LogEntry {
            ts_ms,
            path: "/open_api/v1.3/segment/mapping/".into(),
            audience_id: None,
            action: Some("add".into()),
            ids: 1,
            code: Some(0),
            applied: true,
        }
    }

    #[test]
    fn the_busiest_second_and_the_mean_rate() {
        // 0, 100, ..., 900 ms, then 1,000 and 1,999: the window [1000, 2000) holds 2, [0, 1000) holds 10.
        let mut log: Vec<LogEntry> = (0..10).map(|i| at(i * 100)).collect();
        log.push(at(1999));
        log.push(at(1000));
        let mut oauth = at(5);
        oauth.path = "/open_api/v1.3/oauth2/access_token/".into();
        log.push(oauth);
        let (most, mean, n) = achieved_rate(&log);
        assert_eq!((most, n), (10, 12));
        assert!((mean - 11.0 * 1000.0 / 1999.0).abs() < 1e-9, "{mean}");
        assert_eq!(achieved_rate(&[]), (0, 0.0, 0));
    }
}

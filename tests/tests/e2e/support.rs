//! Each test starts its own `audience-sync-local` process (the binary, as a user runs it) on this test process's
//! moto, reads its ready line, and then talks to it as a user would: HTTP API, S3 uploads, the sandbox's
//! `/_sandbox/` controls. Nothing inside the stack is touched.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audience_sync_tests::local::Ready;
use audience_sync_tests::local::client::StackClient;
use audience_sync_tests::local::exports::Export;
use reqwest::Method;
use serde_json::{Value, json};

pub struct Stack {
    pub c: StackClient,
    pub log: PathBuf,
    child: Child,
    /// Lines the stack printed on stdout after its ready line.
    more_stdout: Arc<Mutex<Vec<String>>>,
}

/// The ready line has exactly the documented fields, in the documented order.
fn assert_documented_ready_line(line: &str) {
    let fields = [
        "api",
        "admin_token",
        "region",
        "bucket",
        "cohort_prefix",
        "aws_endpoint",
        "tiktok_sandbox",
        "app_id",
        "advertiser_ids",
    ];
    let v: Value = serde_json::from_str(line.trim()).expect("the ready line is JSON");
    let keys: Vec<&String> = v.as_object().expect("an object").keys().collect();
    assert_eq!(keys.len(), fields.len(), "ready line fields: {line}");
    let positions: Vec<usize> = fields
        .iter()
        .map(|f| {
            line.find(&format!("\"{f}\":"))
                .unwrap_or_else(|| panic!("{f} missing from the ready line {line}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "ready line fields out of order: {line}"
    );
    assert_eq!(v["region"], "us-east-1");
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The log is kept for a failed test (its path is in the test's output).
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// `--tiktok-rules` for a stack whose sandbox does not model TikTok's processing window (see each use).
pub const NO_PROCESSING: &str = r#"{"processing_ms":0}"#;

/// A stack name unique to this test (resources on the shared moto are named after it).
pub fn stack_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let u = ulid::Ulid::new().to_string().to_lowercase();
    format!("e2e-{}-{}", &u[16..], N.fetch_add(1, Ordering::Relaxed))
}

/// Starts a stack with extra flags. Must be called from the test's own thread: the stack is killed when that
/// thread ends (`PR_SET_PDEATHSIG`), so no stack outlives its test.
pub async fn start(extra: &[&str]) -> Stack {
    start_named(&stack_name(), extra).await
}

/// Starts a stack named `name`: the same name on the same moto finds the same resources.
pub async fn start_named(name: &str, extra: &[&str]) -> Stack {
    let moto = audience_sync_tests::moto_endpoint().to_string();
    let log = std::env::temp_dir().join(format!(
        "{name}-{}.log",
        ulid::Ulid::new().to_string().to_lowercase()
    ));
    let err = std::fs::File::create(&log).expect("stack log file");
    // AUDIENCE_SYNC_LOCAL_BIN: a copy of the binary, for loops run while the shared target dir is rebuilt.
    let bin = std::env::var_os("AUDIENCE_SYNC_LOCAL_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_audience-sync-local").into());
    let mut cmd = Command::new(bin);
    // Every digest matches a TikTok user: cohorts of ~1,000-1,500 stay above TikTok's 1,000-matched minimum for
    // edits, so removals are applied rather than held (holding is the engine's integration tests' subject).
    cmd.args(["--serve", "--name", name, "--match-rate", "1"])
        .args(extra)
        .env("AWS_ENDPOINT_URL", &moto)
        .env("RUST_LOG", "info,aws_config=warn,aws_smithy_runtime=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err);
    // The stack dies with this test's thread.
    audience_sync_tests::moto::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().expect("spawning audience-sync-local");
    let stdout = child.stdout.take().expect("stdout");
    eprintln!("stack {name}: log {}", log.display());
    // The ready line, read on a thread so a stack that never gets ready fails the test instead of hanging it.
    // The thread keeps reading: anything more on stdout (there must be nothing in --serve mode) is kept.
    let (tx, rx) = std::sync::mpsc::channel();
    let more = Arc::new(Mutex::new(Vec::new()));
    let more_lines = more.clone();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next().unwrap_or_else(|| Ok(String::new())));
        for l in lines.map_while(Result::ok) {
            more_lines.lock().unwrap_or_else(|p| p.into_inner()).push(l);
        }
    });
    let line = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(120)))
        .await
        .expect("join")
        .unwrap_or_else(|_| panic!("no ready line from the stack; log: {}", log_tail(&log)))
        .expect("reading the ready line");
    assert_documented_ready_line(&line);
    let ready: Ready = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
        panic!(
            "ready line {line:?} is not the documented JSON: {e}; log: {}",
            log_tail(&log)
        )
    });
    let c = StackClient::new(ready).await.expect("client");
    Stack {
        c,
        log,
        child,
        more_stdout: more,
    }
}

pub fn log_tail(log: &PathBuf) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let start = s.len().saturating_sub(4000);
    s.get(start..).unwrap_or("").to_string()
}

/// A project id unique to the test.
pub fn project() -> String {
    let u = ulid::Ulid::new().to_string().to_lowercase();
    format!("proj-{}", &u[14..])
}

/// A cohort id unique to the test (Amplitude's ids have no `_`).
pub fn cohort() -> String {
    let u = ulid::Ulid::new().to_string().to_lowercase();
    format!("c{}", &u[16..])
}

impl Stack {
    /// Lines printed on stdout after the ready line (none in `--serve` mode).
    pub fn stdout_after_ready(&self) -> Vec<String> {
        self.more_stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Connects the project through the consent flow and saves the email mapping.
    pub async fn connect_with_email(&self, project: &str) {
        let conn = self.c.connect(project).await.expect("connect");
        assert_eq!(
            conn.callback_status, 200,
            "callback page: {}",
            conn.page_text
        );
        let m = self
            .c
            .api(
                Method::PUT,
                &format!("/v1/projects/{project}/mapping"),
                Some(json!({"amplitude_property": "email", "tiktok_key": "EMAIL"})),
            )
            .await
            .expect("mapping");
        assert_eq!(m.status, 201, "{}", m.body);
    }

    pub fn advertiser(&self) -> String {
        self.c.ready.advertiser_ids[0].clone()
    }

    /// A connected project (email mapping) with one `on_upload` sync of `cohort` on the first advertiser;
    /// returns the sync id.
    pub async fn connected_on_upload_sync(&self, project: &str, cohort: &str) -> String {
        self.connect_with_email(project).await;
        let body = json!({"cohort_id": cohort, "advertiser_id": self.advertiser(), "cadence": "on_upload"});
        let sync = self.create_sync(project, body).await;
        sync["sync_id"].as_str().expect("sync_id").to_string()
    }

    /// Creates a sync; returns its JSON (201 expected).
    pub async fn create_sync(&self, project: &str, body: Value) -> Value {
        self.c
            .api(
                Method::POST,
                &format!("/v1/projects/{project}/syncs"),
                Some(body),
            )
            .await
            .expect("create sync")
            .expect(201)
            .expect("201")
    }

    pub async fn sync(&self, project: &str, sync_id: &str) -> Value {
        self.c
            .get(&format!("/v1/projects/{project}/syncs/{sync_id}"))
            .await
            .expect("get sync")
    }

    pub async fn integration(&self, project: &str) -> Value {
        self.c
            .get(&format!("/v1/projects/{project}/integration"))
            .await
            .expect("get integration")
    }

    pub async fn upload(&self, e: &Export) -> String {
        self.c
            .upload(&e.file_name, e.bytes.clone())
            .await
            .expect("upload")
    }

    /// The finished run of an export.
    pub async fn run_of(&self, project: &str, sync_id: &str, key: &str) -> Value {
        match self.c.wait_for_export_run(project, sync_id, key).await {
            Ok(r) => r,
            Err(e) => panic!("{e:#}\nstack log: {}", log_tail(&self.log)),
        }
    }

    /// The TikTok audience of a sync must hold exactly `e`'s digests.
    pub async fn assert_audience_is(&self, project: &str, sync_id: &str, e: &Export) {
        let s = self.sync(project, sync_id).await;
        let audience = s["tiktok_audience_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no audience on {s}"))
            .to_string();
        let members = self.c.audience_members(&audience).await.expect("members");
        assert_eq!(members.len(), e.expected.len(), "audience size");
        assert!(
            members == e.expected,
            "audience members differ from the cohort"
        );
    }
}

/// A run's ledger must account for every row of the export it read.
pub fn assert_ledger_matches(run: &Value, e: &Export) {
    assert_eq!(run["rows"], json!(e.rows), "rows: {run}");
    assert_eq!(run["valid"], json!(e.valid), "valid: {run}");
    assert_eq!(run["unique"], json!(e.expected.len()), "unique: {run}");
    assert_eq!(
        run["duplicates"],
        json!(e.duplicates()),
        "duplicates: {run}"
    );
    let skipped: std::collections::BTreeMap<String, u64> =
        serde_json::from_value(run["skipped"].clone()).expect("skipped map");
    let nonzero: std::collections::BTreeMap<String, u64> =
        skipped.into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(nonzero, e.skipped, "skipped by reason: {run}");
}

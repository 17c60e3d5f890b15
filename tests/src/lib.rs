//! Shared test support: the moto server harness and the local stack ([`local`], binary `audience-sync-local`).
//!
//! - [`moto_endpoint`] ([`moto`]): `AWS_ENDPOINT_URL` when set (an external moto, e.g. the local stack's), else
//!   moto started once per test process on a free port by `tests/moto/atomic_moto.py` (DynamoDB made atomic).
//!   The server dies with the test process, however it ends, and leaves no files behind.
//! - [`sdk_config`] / [`clients`]: SDK clients pointed at it with fake credentials and a fixed region.
//! - [`unique_name`]: resource names unique per test, so tests run in parallel against one server.
//! - [`TestEnv`]: a fresh table, bucket and schedule group, provisioned as the SAM template does.
//! - [`RecordingServer`]: a tiny HTTP server that records requests (e.g. Lambda `Invoke`, which moto cannot run).

pub mod bench;
pub mod local;
pub mod moto;

pub use moto::{find_moto_python, moto_endpoint};

/// The engine on an in-process TikTok sandbox's clock: moving the sandbox's clock (hours of TikTok
/// processing, a lease's expiry) moves the engine's too.
pub struct SandboxClock(pub tiktok_sandbox::Shared);

impl audience_core::ports::Clock for SandboxClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let ms = self.0.lock().now_ms();
        chrono::DateTime::from_timestamp_millis(ms).unwrap_or_else(chrono::Utc::now)
    }
}

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use audience_aws::{AwsClients, provision};
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, Region};

/// Region given to the SDK (moto accepts any).
pub const REGION: &str = "us-east-1";
/// moto's default account id, for ARNs.
pub const ACCOUNT_ID: &str = "123456789012";

/// SDK configuration for an endpoint, with fake credentials and a fixed region.
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "moto-harness",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// SDK configuration pointed at moto. Build it per test: SDK clients hold connections bound to the runtime
/// that made them, and each `#[tokio::test]` has its own runtime.
pub async fn sdk_config() -> SdkConfig {
    sdk_config_for(moto_endpoint()).await
}

pub async fn clients() -> AwsClients {
    AwsClients::from_sdk_config(&sdk_config().await)
}

/// A lowercase name unique across tests and test processes: `<prefix>-<ulid>` (valid as a table, bucket,
/// secret, schedule group or id; at least 3 characters as AWS requires of tables).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // The counter keeps names distinct even within one millisecond of one process.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{}{n}",
        ulid::Ulid::new().to_string().to_lowercase()
    )
}

/// A fresh set of resources for one test.
pub struct TestEnv {
    pub clients: AwsClients,
    pub table: String,
    pub bucket: String,
    pub schedule_group: String,
    /// A prefix for secret names, unique to this test.
    pub secret_prefix: String,
}

impl TestEnv {
    pub async fn new() -> Result<TestEnv> {
        let clients = clients().await;
        let table = unique_name("tbl");
        let bucket = unique_name("bkt");
        let schedule_group = unique_name("grp");
        provision::create_table(&clients.dynamodb, &table).await?;
        provision::create_bucket(&clients.s3, &bucket).await?;
        provision::create_schedule_group(&clients.scheduler, &schedule_group).await?;
        Ok(TestEnv {
            clients,
            table,
            bucket,
            schedule_group,
            secret_prefix: unique_name("sec"),
        })
    }
}

/// One HTTP request as received by [`RecordingServer`].
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 server that records each request and answers with a fixed status and body (for APIs moto
/// cannot serve, like an asynchronous Lambda `Invoke`). Runs on its own thread; one request per connection.
pub struct RecordingServer {
    pub endpoint: String,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl RecordingServer {
    pub fn start(status: u16, body: &'static str) -> Result<RecordingServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        std::thread::Builder::new()
            .name("recording-server".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    if let Ok(req) = read_request(&mut stream) {
                        recorded.lock().unwrap_or_else(|p| p.into_inner()).push(req);
                        let resp = format!(
                            "HTTP/1.1 {status} Recorded\r\nContent-Type: application/json\r\n\
                             x-amzn-RequestId: recorded-0001\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(resp.as_bytes());
                    }
                }
            })?;
        Ok(RecordingServer { endpoint, requests })
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn read_request(stream: &mut TcpStream) -> Result<RecordedRequest> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed before the headers ended");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            bail!("headers too large");
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok(RecordedRequest {
        method,
        path,
        headers,
        body,
    })
}

/// Peak resident memory of this process so far (`VmHWM`, KiB), and a way to reset it (Linux `clear_refs`).
pub mod memory {
    /// `VmHWM` in KiB.
    pub fn peak_rss_kib() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// `VmRSS` in KiB.
    pub fn rss_kib() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// Resets the peak to the current RSS; `false` when the kernel does not allow it.
    pub fn reset_peak() -> bool {
        std::fs::write("/proc/self/clear_refs", "5").is_ok()
    }
}

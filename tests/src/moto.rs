//! The one way this repository starts moto: `tests/moto/atomic_moto.py` (moto's server with every DynamoDB
//! request serialized, because bare moto lets two concurrent conditional writes both succeed), run by the
//! Python of a venv that has `moto[server]==5.2.5`. Tests, the local stack, the demo and the benchmarks all get
//! their endpoint from [`moto_endpoint`].
//!
//! The server is killed when the test process ends, however it ends (`PR_SET_PDEATHSIG`), and its log lives in
//! an unlinked temporary file, so a run leaves nothing behind in the temp directory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// The launcher, compiled in so a built binary (e.g. `audience-sync-local`) needs no source tree.
const LAUNCHER: &str = include_str!("../moto/atomic_moto.py");

static MOTO: OnceLock<std::result::Result<String, String>> = OnceLock::new();

/// The endpoint of the moto server for this process (starting one if needed): `AWS_ENDPOINT_URL` when set,
/// else the launcher on a free port. Panics with the reason when none can be had: every AWS test needs it.
pub fn moto_endpoint() -> &'static str {
    let res = MOTO.get_or_init(|| {
        if let Some(url) = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        {
            return Ok(url.trim().trim_end_matches('/').to_string());
        }
        start_moto().map_err(|e| format!("{e:#}"))
    });
    match res {
        Ok(url) => url,
        Err(e) => panic!("no moto server: {e}"),
    }
}

/// The Python that runs the launcher: `MOTO_PYTHON`, else the workspace venv (`.venv/bin/python`, created by
/// `make venv`). It must import `moto` (checked when the server starts).
pub fn find_moto_python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MOTO_PYTHON").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("MOTO_PYTHON={} is not a file", p.display());
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.is_file() {
        return Ok(venv);
    }
    bail!(
        "no Python with moto: set MOTO_PYTHON, or run `make venv` (creates .venv with 'moto[server]==5.2.5'), \
         or set AWS_ENDPOINT_URL to a moto started by tests/moto/atomic_moto.py"
    )
}

/// Starts the launcher on `port` as a child of the calling thread. `ATOMIC_MOTO_DISABLE=1` in this process's
/// environment passes through and serves bare moto (to show the contract test failing without the lock).
fn spawn_launcher(port: u16, launch_id: &str, log: &File) -> Result<Child> {
    let python = find_moto_python()?;
    let mut cmd = Command::new(&python);
    cmd.arg("-c")
        .arg(LAUNCHER)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("ATOMIC_MOTO_ID", launch_id)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?);
    die_with_parent(&mut cmd);
    cmd.spawn()
        .with_context(|| format!("spawning {}", python.display()))
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

fn start_moto() -> Result<String> {
    let mut last_err = anyhow!("not started");
    // A free port can be taken between probing and moto binding it: try a few.
    for _ in 0..3 {
        let port = free_port()?;
        // Unlinked at creation: nothing to clean up, and still readable for the error below.
        let mut log = tempfile::tempfile().context("creating moto's log file")?;
        // Other test processes pick free ports too: only an answer carrying this id proves the port is ours.
        let launch_id = ulid::Ulid::new().to_string();
        if let Err(e) = spawn_supervised(port, &launch_id, &log) {
            last_err = e;
            continue;
        }
        match wait_until_answers(port, &launch_id, Duration::from_secs(60)) {
            Ok(()) => return Ok(format!("http://127.0.0.1:{port}")),
            Err(e) => last_err = e.context(format!("moto's log:\n{}", log_tail(&mut log))),
        }
    }
    Err(last_err)
}

fn log_tail(log: &mut File) -> String {
    let mut text = String::new();
    let _ = log.seek(SeekFrom::Start(0));
    let _ = log.read_to_string(&mut text);
    let start = text.len().saturating_sub(2000);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

/// Spawns moto from a thread that lives as long as the process: `PR_SET_PDEATHSIG` fires when the spawning
/// *thread* exits, so it must not be a test's thread. The thread waits on the child (reaping it).
fn spawn_supervised(port: u16, launch_id: &str, log: &File) -> Result<()> {
    let (tx, rx) = mpsc::channel::<Result<()>>();
    let log = log.try_clone()?;
    let launch_id = launch_id.to_string();
    std::thread::Builder::new()
        .name(format!("moto-{port}"))
        .spawn(move || match spawn_launcher(port, &launch_id, &log) {
            Ok(mut child) => {
                let _ = tx.send(Ok(()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        })
        .context("starting the moto supervisor thread")?;
    rx.recv().context("moto supervisor thread ended")?
}

/// The child gets SIGKILL when the thread that spawned it ends (with the process, for the supervisor thread).
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Waits until the launcher started with `launch_id` answers on `port`. Another server there (a port taken
/// by another process in between) is an error, so the caller tries another port.
fn wait_until_answers(port: u16, launch_id: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let req = format!(
                "GET /_launcher/id HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
            );
            let mut answer = String::new();
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/")
            {
                if answer.ends_with(launch_id) {
                    return Ok(());
                }
                bail!("port {port} is served by another process");
            }
        }
        if Instant::now() > deadline {
            bail!("moto did not answer on port {port} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

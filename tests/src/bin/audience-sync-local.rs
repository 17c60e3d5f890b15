//! `audience-sync-local`: audience-sync on one machine, without an AWS account or a TikTok app. The real
//! handlers on moto, against the TikTok sandbox, driven through the same HTTP routes, S3 uploads and schedules
//! as in production (see `tests/src/local/mod.rs`).
//!
//! When ready it prints exactly one JSON line on stdout:
//! `{"api","admin_token","region","bucket","cohort_prefix","aws_endpoint","tiktok_sandbox","app_id","advertiser_ids"}`.
//! Logs go to stderr (`RUST_LOG`, default `info`). The sync-runner prints its CloudWatch EMF lines on stdout, as
//! Lambda wants them; here the process's stdout is pointed at stderr so they join the logs, and the ready line
//! and the demo story go to the original stdout.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use audience_sync_tests::local::{Stack, StackOptions, demo};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "audience-sync-local",
    about = "audience-sync on moto and the TikTok sandbox: the API, the sync-runner, S3 events and schedules"
)]
struct Args {
    /// Serve until stopped (Ctrl-C or SIGTERM); nothing more on stdout after the ready line. The default.
    #[arg(long, conflicts_with = "demo")]
    serve: bool,
    /// After the ready line, tell the demo story on stdout and exit (0 only if the TikTok audience ends equal
    /// to the cohort).
    #[arg(long)]
    demo: bool,
    /// Port of the HTTP API on 127.0.0.1 (0: a free port).
    #[arg(long, default_value_t = 0)]
    api_port: u16,
    /// Port of the sync-runner's Lambda Invoke API on 127.0.0.1 (0: a free port).
    #[arg(long, default_value_t = 0)]
    lambda_port: u16,
    /// Schedule time passes N times faster (schedules only; leases and expiries keep real time).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Use this TikTok sandbox (scheme://host:port) instead of starting one; the stack registers its app there.
    #[arg(long, value_name = "URL")]
    tiktok_sandbox: Option<String>,
    /// The TikTok host the functions call (scheme://host:port, no path), e.g. a proxy in front of the sandbox.
    #[arg(long, value_name = "URL")]
    tiktok_api_base: Option<String>,
    /// Names the resources; the same name on the same moto (AWS_ENDPOINT_URL) finds them again after a restart.
    #[arg(long, default_value = "audience-sync-local")]
    name: String,
    /// Where exports land in the bucket ("" = the bucket root).
    #[arg(long, default_value = "cohorts")]
    cohort_prefix: String,
    /// Requests per second per app the in-process sandbox admits (TikTok's basic tier: 10); also the
    /// functions' TIKTOK_RATE.
    #[arg(long, default_value_t = 10)]
    tiktok_qps: u32,
    /// Share of digests the in-process sandbox matches to TikTok users.
    #[arg(long, default_value_t = 0.7)]
    match_rate: f64,
    /// The sync-runner's timeout in seconds (each invocation's deadline, as Lambda's).
    #[arg(long, default_value_t = 900)]
    runner_timeout: u64,
    /// Seconds a run's lease on its sync lasts without renewal (default 180, as in production: a live run
    /// renews it every 45 s; a killed run's sync is free again after it and the sweeper resumes the work).
    #[arg(long, default_value_t = 180)]
    lease_seconds: u64,
    /// The in-process sandbox's TikTok rules as JSON, e.g. '{"processing_ms":0}' to switch one off; missing
    /// keys keep TikTok's behaviour (every rule on).
    #[arg(long, value_name = "JSON")]
    tiktok_rules: Option<String>,
    /// Seconds between sweeps (the template's sweeper schedule, every 5 minutes there): each resumes syncs
    /// whose run died or left work for later once their lease expired. 0: no sweeper.
    #[arg(long, default_value_t = 5)]
    sweep_seconds: u64,
    /// POST failure notifications (failed runs, reconnect_required, guard holds; Slack-compatible JSON) to
    /// this URL, as the template's FailureNotifications=on does with its secret.
    #[arg(long, value_name = "URL")]
    notification_webhook: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,aws_config=warn,aws_smithy_runtime=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let args = Args::parse();
    let out = match own_stdout() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("audience-sync-local: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("audience-sync-local: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args, out)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("audience-sync-local: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps the original stdout for the ready line and the demo, and sends everything else printed on stdout
/// (the runner's EMF metric lines) to stderr.
fn own_stdout() -> anyhow::Result<File> {
    let original = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stdout")?;
    // SAFETY: dup2 on the process's own standard descriptors; nothing has been written to stdout yet.
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(std::io::Error::last_os_error()).context("pointing stdout at stderr");
    }
    Ok(File::from(original))
}

async fn run(args: Args, mut out: File) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.match_rate) {
        anyhow::bail!("--match-rate must be within [0, 1]");
    }
    let tiktok_rules = match &args.tiktok_rules {
        Some(j) => serde_json::from_str(j).context("--tiktok-rules is not valid rules JSON")?,
        None => tiktok_sandbox::Rules::default(),
    };
    let stack = Stack::start(StackOptions {
        name: args.name,
        api_port: args.api_port,
        lambda_port: args.lambda_port,
        time_scale: args.time_scale,
        tiktok_sandbox: args.tiktok_sandbox,
        tiktok_api_base: args.tiktok_api_base,
        cohort_prefix: args.cohort_prefix,
        tiktok_qps: args.tiktok_qps,
        match_rate: args.match_rate,
        runner_timeout: Duration::from_secs(args.runner_timeout),
        lease_ttl: Duration::from_secs(args.lease_seconds),
        tiktok_rules,
        sweep_every: Some(Duration::from_secs(args.sweep_seconds)),
        notification_webhook: args.notification_webhook,
    })
    .await?;
    writeln!(out, "{}", stack.ready.line())?;
    out.flush()?;
    if args.demo {
        let ok = demo::run(&stack.ready, &mut out).await;
        stack.shutdown(Duration::from_secs(30)).await;
        return match ok {
            Ok(true) => Ok(ExitCode::SUCCESS),
            Ok(false) => {
                eprintln!("audience-sync-local: the TikTok audience does not equal the cohort");
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e.context("demo")),
        };
    }
    wait_for_stop().await?;
    tracing::info!("stopping");
    stack.shutdown(Duration::from_secs(60)).await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_stop() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

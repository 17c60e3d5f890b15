//! `tiktok-sandbox --port P [--qps N] [--match-rate R] [--fault-rate R --fault-codes C,..] [--seed S] [--rules JSON]`
//! Prints one JSON line when ready: `{"listening":"http://127.0.0.1:P","app_id":..,"secret":..,"advertiser_ids":[..]}`.

use std::io::Write;

use anyhow::{Context, bail};
use clap::Parser;
use tiktok_sandbox::{FaultConfig, Rules, Sandbox, SandboxOptions};

#[derive(Parser, Debug)]
#[command(
    name = "tiktok-sandbox",
    about = "A local TikTok Marketing API sandbox over real HTTP"
)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long)]
    port: u16,
    /// Requests per app in any sliding 1,000 ms window.
    #[arg(long, default_value_t = 10)]
    qps: u32,
    /// Share of digests that match a TikTok user.
    #[arg(long, default_value_t = 0.7)]
    match_rate: f64,
    /// Share of requests answered with one of --fault-codes and not applied.
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Comma-separated codes: below 600 an HTTP status (no envelope), otherwise a TikTok envelope code.
    #[arg(long, value_delimiter = ',')]
    fault_codes: Vec<i64>,
    /// Seeds the default app's secret and the fault dice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// TikTok's rules as JSON (`{"processing_ms":0}` turns one off); missing keys keep TikTok's defaults.
    #[arg(long)]
    rules: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.match_rate) {
        bail!("--match-rate must be within [0, 1]");
    }
    if args.fault_rate > 0.0 && args.fault_codes.is_empty() {
        bail!("--fault-rate needs --fault-codes");
    }
    let mut faults = FaultConfig {
        rate: args.fault_rate,
        seed: Some(args.seed),
        ..Default::default()
    };
    for c in args.fault_codes {
        if c < 600 {
            faults
                .http_errors
                .push(u16::try_from(c).context("fault code out of range")?);
        } else {
            faults.codes.push(c);
        }
    }
    let rules: Rules = match &args.rules {
        Some(j) => serde_json::from_str(j).context("--rules is not valid rules JSON")?,
        None => Rules::default(),
    };
    let opts = SandboxOptions {
        port: args.port,
        qps: args.qps,
        match_rate: args.match_rate,
        faults,
        seed: args.seed,
        default_app: None,
        rules,
    };
    let sandbox = Sandbox::start(opts).await.context("starting the sandbox")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", sandbox.ready_line())?;
        out.flush()?;
    }
    wait_for_stop().await?;
    sandbox.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM (how a local stack or a test harness stops it).
async fn wait_for_stop() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

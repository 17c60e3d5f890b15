//! `audience-sync`: check identifiers and cohort files locally, before anything is pushed to TikTok.
//!
//! Exit codes: 0 success, 1 a failure with a one-line reason on stderr, 2 bad usage.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use audience_core::cohort::reader::{ReaderLimits, digest_reader_with};
use audience_core::cohort::{CohortDigests, parse_export_key};
use audience_core::digests::merge::diff_counts;
use audience_core::digests::snapshot::{SnapshotReader, write_sorted};
use audience_core::digests::{SortedWriter, Spill};
use audience_core::report::PreviewReport;
use audience_core::{KeyKind, Normalizer};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "audience-sync",
    version,
    about = "Hash identifiers and preview Amplitude cohort files the way audience-sync sends them to TikTok"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read raw values from stdin, one per line; print one line per input line: the SHA-256 hex digest or
    /// `skip:<reason>`.
    Hash {
        /// email | phone | idfa | gaid (any case)
        #[arg(long, value_parser = parse_key)]
        key: KeyKind,
        /// Default phone region (ISO 3166-1 alpha-2) for numbers written without `+`.
        #[arg(long)]
        region: Option<String>,
    },
    /// Stream a cohort file (CSV or gzip CSV; `-` for stdin) and report what a sync would send.
    Preview {
        /// The cohort file, or `-` for stdin.
        file: String,
        /// email | phone | idfa | gaid (any case)
        #[arg(long, value_parser = parse_key)]
        key: KeyKind,
        /// The header of the identifier column (matched case-insensitively, blanks trimmed).
        #[arg(long)]
        column: String,
        /// Default phone region for numbers written without `+`.
        #[arg(long)]
        region: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// A snapshot of what the audience holds: adds and removes are reported against it.
        #[arg(long)]
        previous: Option<PathBuf>,
        /// Write the file's digest set as a snapshot to this path.
        #[arg(long)]
        write_snapshot: Option<PathBuf>,
        /// Threads that read, hash and sort (0: every core; the counts are the same for every value).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Digests held in memory (MB); beyond it they are sorted in files under the system temp dir
        /// (`TMPDIR`), as the runner does.
        #[arg(long, default_value_t = 512)]
        memory_mb: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn parse_key(s: &str) -> Result<KeyKind, String> {
    s.parse::<KeyKind>().map_err(|e| e.to_string())
}

fn normalizer(key: KeyKind, region: Option<&str>) -> Result<Normalizer, ExitCode> {
    Normalizer::new(key, region).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Hash { key, region } => {
            let n = match normalizer(key, region.as_deref()) {
                Ok(n) => n,
                Err(code) => return code,
            };
            hash(&n, io::stdin().lock(), io::stdout().lock())
        }
        Command::Preview {
            file,
            key,
            column,
            region,
            format,
            previous,
            write_snapshot,
            threads,
            memory_mb,
        } => {
            let n = match normalizer(key, region.as_deref()) {
                Ok(n) => n,
                Err(code) => return code,
            };
            let limits = ReaderLimits {
                threads,
                spill: Spill::from_budget(memory_mb << 20, std::env::temp_dir()),
                ..ReaderLimits::default()
            };
            preview(
                &Input {
                    file: &file,
                    n: &n,
                    column: &column,
                    limits: &limits,
                },
                format,
                previous.as_deref(),
                write_snapshot.as_deref(),
            )
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes joined, so scripts can show it as is.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

/// One output line per input line; `\n` or `\r\n` ends a line and is not part of the value.
fn hash(n: &Normalizer, mut input: impl BufRead, output: impl Write) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, output);
    let mut line = Vec::with_capacity(256);
    let mut hexbuf = [0u8; 64];
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        match n.digest_field(&line) {
            Ok(d) => {
                d.encode_hex(&mut hexbuf);
                out.write_all(&hexbuf)?;
            }
            Err(r) => {
                out.write_all(b"skip:")?;
                out.write_all(r.as_str().as_bytes())?;
            }
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn progress(len: Option<u64>) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let pb = match len {
        Some(l) if l > 8 << 20 => ProgressBar::new(l),
        _ => return None,
    };
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        pb.set_style(style);
    }
    Some(pb)
}

/// The file to read and how.
struct Input<'a> {
    file: &'a str,
    n: &'a Normalizer,
    column: &'a str,
    limits: &'a ReaderLimits,
}

fn read_input(input: &Input<'_>, gzip_name: bool) -> anyhow::Result<CohortDigests> {
    let Input {
        file,
        n,
        column,
        limits,
    } = *input;
    let (source, len): (Box<dyn Read + Send>, Option<u64>) = if file == "-" {
        (Box::new(io::stdin()), None)
    } else {
        let f = File::open(file).with_context(|| format!("cannot open {file}"))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let pb = progress(len);
    let source: Box<dyn Read + Send> = match &pb {
        Some(pb) => Box::new(pb.wrap_read(source)),
        None => source,
    };
    let read = digest_reader_with(source, gzip_name, column, n, limits)
        .with_context(|| format!("cannot read {file}"))?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    Ok(read)
}

fn preview(
    input: &Input<'_>,
    format: Format,
    previous: Option<&Path>,
    write_to: Option<&Path>,
) -> anyhow::Result<()> {
    let (file, n, column) = (input.file, input.n, input.column);
    let name = if file == "-" {
        None
    } else {
        parse_export_key(file).ok()
    };
    let gzip_name = file.to_ascii_lowercase().ends_with(".gz");
    // Read the previous snapshot first: a wrong one should fail before a long read.
    let base = match previous {
        None => None,
        Some(p) => {
            let f =
                File::open(p).with_context(|| format!("cannot open snapshot {}", p.display()))?;
            let reader = SnapshotReader::open(io::BufReader::new(f))
                .map_err(|e| anyhow!("snapshot {}: {e}", p.display()))?;
            reader
                .header()
                .check_compatible(n.kind())
                .map_err(|e| anyhow!("snapshot {} cannot be compared: {e}", p.display()))?;
            let mut w = SortedWriter::new(&input.limits.spill);
            for d in reader {
                w.push(d.map_err(|e| anyhow!("snapshot {}: {e}", p.display()))?)?;
            }
            Some(w.finish()?)
        }
    };
    let read = read_input(input, gzip_name)?;
    let mut report = PreviewReport::new(&read, name.as_ref(), n.kind(), column);
    if let Some(base) = &base {
        let (adds, removes) = diff_counts(base.iter()?, read.set.iter()?)?;
        report.adds = Some(adds);
        report.removes = Some(removes);
    }
    if let Some(path) = write_to {
        let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        write_sorted(BufWriter::new(f), n.kind(), &read.set)
            .map_err(|e| anyhow!("cannot write snapshot {}: {e}", path.display()))?;
    }
    let mut out = io::stdout().lock();
    match format {
        Format::Json => {
            serde_json::to_writer(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Text => out.write_all(report.to_text().as_bytes())?,
    }
    Ok(())
}

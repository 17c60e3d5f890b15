//! Throughput of the identifier pipeline on a generated cohort of 1M email rows (override with
//! BENCH_ROWS). Two paths: normalize+hash alone, and the whole file → CSV → digests → sorted set path.
//! Results and how to reproduce them: BENCHMARKS.md.

use std::hint::black_box;
use std::io::Write;

use audience_core::cohort::reader::{ReaderLimits, digest_reader_with};
use audience_core::{KeyKind, Normalizer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn rows() -> usize {
    std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Realistic dirt: mixed case, some `+tags`, surrounding blanks, a few invalid and empty values.
fn raw_email(i: usize) -> String {
    match i % 50 {
        0 => String::new(),
        1 => format!("not-an-email-{i}"),
        2 => format!("  User.{i}+promo@Example.COM "),
        _ => format!("user.{i}@example{}.com", i % 97),
    }
}

fn bench(c: &mut Criterion) {
    let n = rows();
    let emails: Vec<String> = (0..n).map(raw_email).collect();
    let norm = Normalizer::new(KeyKind::Email, None).expect("no region");

    let mut g = c.benchmark_group("email");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    // The floor: SHA-256 of already-normalized values (tells how much the normalizer itself costs).
    let normalized: Vec<Vec<u8>> = emails
        .iter()
        .map(|e| e.trim().to_lowercase().into_bytes())
        .collect();
    g.bench_function("sha256-only", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for e in &normalized {
                acc += audience_core::identifiers::sha256_for_bench(black_box(e)).0[0] as u64;
            }
            black_box(acc)
        })
    });
    g.bench_function("normalize+hash", |b| {
        b.iter(|| {
            let mut ok = 0u64;
            for e in &emails {
                if let Ok(d) = norm.digest_field(black_box(e.as_bytes())) {
                    ok += d.0[0] as u64;
                }
            }
            black_box(ok)
        })
    });

    // The whole path from a file on disk, as the runner reads an export: three columns like Amplitude's.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c1_2024-01-01T00:00_existing.csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        writeln!(f, "Amplitude ID,User ID,email").expect("write");
        for (i, e) in emails.iter().enumerate() {
            writeln!(f, "{},user-{},{}", 100_000_000 + i, i, e).expect("write");
        }
    }
    // One thread, and every core (`threads: 0`, the runner's and the CLI's default).
    for (name, threads) in [
        ("file->sorted-set/1-thread", 1),
        ("file->sorted-set/all-cores", 0),
    ] {
        let limits = ReaderLimits {
            threads,
            ..ReaderLimits::default()
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let f = std::fs::File::open(&path).expect("open");
                let r = digest_reader_with(f, false, "email", &norm, &limits).expect("read");
                black_box(r.set.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

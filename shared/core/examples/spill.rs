//! The bounded-memory path's stages on N random digests, timed one by one (BENCHMARKS.md "Bounded memory").
//!
//! ```text
//! cargo run --release -p audience-core --example spill -- [N=10000000] [MEMORY_MB=512]
//! ```

use std::time::Instant;

use audience_core::digests::merge::{self, changes};
use audience_core::digests::{Digest, Sorted, Sorter, Spill};
use audience_core::identifiers::sha256_for_bench;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let mb: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
    let dir = tempfile::tempdir()?;
    let spill = Spill::from_budget(mb << 20, dir.path().to_path_buf());
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    println!("{n} digests, budget {mb} MB: {spill:?}, {threads} threads");
    let digest = |i: u64| -> Digest { sha256_for_bench(&i.to_le_bytes()) };

    let t = Instant::now();
    let mut s = Sorter::new(&spill, threads);
    for i in 0..n {
        s.push(digest(i))?;
    }
    let hashed = t.elapsed();
    let t = Instant::now();
    let (cohort, _) = s.finish()?;
    println!(
        "hash + collect {hashed:?}; sort/spill/merge {:?} (on disk: {})",
        t.elapsed(),
        cohort.on_disk()
    );

    // A base with 1 % churn: the first 1 % gone, as many new ones.
    let mut s = Sorter::new(&spill, threads);
    for i in n / 100..n + n / 100 {
        s.push(digest(i))?;
    }
    let (base, _) = s.finish()?;
    let t = Instant::now();
    let c = changes(&base, &Sorted::empty(), &cohort, &spill)?;
    println!(
        "changes {:?}: {} adds, {} removes",
        t.elapsed(),
        c.adds.len(),
        c.removes.len()
    );
    let t = Instant::now();
    let k = merge::count(cohort.iter()?)?;
    println!("stream the cohort once {:?} ({k})", t.elapsed());
    let t = Instant::now();
    let k = merge::count(merge::apply(
        base.iter()?,
        c.adds.iter()?,
        c.removes.iter()?,
    )?)?;
    println!("new snapshot merge {:?} ({k})", t.elapsed());
    Ok(())
}

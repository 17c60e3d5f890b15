//! Seeded histories of the real engine (issue 12's proof). `SIM_SEED=n` replays one seed; `SIM_SEEDS=n`
//! runs seeds 0..n (default 1,000, both write modes); `SIM_FAULTS=none|crash|lost|all` picks the faults
//! (default: all, with every tenth seed fault-free). Faults on means StateStore crashes and lost answers,
//! and TikTok throttling (40100), 5xx and lost answers.
use audience_core::model::WriteMode;
use audience_sim::faults::FaultRates;

fn named(name: &str) -> FaultRates {
    match name {
        "crash" => FaultRates {
            crash: 0.02,
            lost: 0.0,
        },
        "lost" => FaultRates {
            crash: 0.0,
            lost: 0.05,
        },
        "all" => FaultRates {
            crash: 0.02,
            lost: 0.05,
        },
        _ => FaultRates::default(),
    }
}

fn rates_for(seed: u64, chosen: Option<&str>) -> FaultRates {
    match chosen {
        Some(name) => named(name),
        None if seed.is_multiple_of(10) => FaultRates::default(),
        None => named("all"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn sim() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED")],
        Err(_) => (0..std::env::var("SIM_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000))
            .collect(),
    };
    let chosen = std::env::var("SIM_FAULTS").ok();
    let mut failed = Vec::new();
    let count = seeds.len();
    for seed in seeds {
        let mode = if seed.is_multiple_of(2) {
            WriteMode::CustomerFile
        } else {
            WriteMode::Streaming
        };
        let rates = rates_for(seed, chosen.as_deref());
        if let Err(e) = audience_sim::history::run(seed, mode, rates).await {
            println!(
                "FAIL seed {seed} ({mode:?}, {rates:?}): {e}\n  replay: SIM_SEED={seed} SIM_FAULTS={} cargo test -p audience-sim --test sim -- --nocapture",
                chosen.as_deref().unwrap_or(if seed.is_multiple_of(10) {
                    "none"
                } else {
                    "all"
                })
            );
            failed.push(seed);
        }
    }
    println!(
        "{count} histories, {} with invariant violations",
        failed.len()
    );
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}

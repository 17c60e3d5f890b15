//! Seeded histories of the real engine. `SIM_SEED=n` replays one seed; `SIM_SEEDS=n` runs n seeds.
use audience_core::model::WriteMode;
use audience_sim::faults::FaultRates;

#[tokio::test(flavor = "current_thread")]
async fn sim() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED")],
        Err(_) => (0..std::env::var("SIM_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4))
            .collect(),
    };
    // SIM_FAULTS=crash|lost|all turns the StateStore faults on (default: the fault-free smoke set).
    let rates = match std::env::var("SIM_FAULTS").as_deref() {
        Ok("crash") => FaultRates {
            crash: 0.02,
            lost: 0.0,
        },
        Ok("lost") => FaultRates {
            crash: 0.0,
            lost: 0.05,
        },
        Ok("all") => FaultRates {
            crash: 0.02,
            lost: 0.05,
        },
        _ => FaultRates::default(),
    };
    let mut failed = Vec::new();
    for seed in seeds {
        let mode = if seed % 2 == 0 {
            WriteMode::CustomerFile
        } else {
            WriteMode::Streaming
        };
        println!("seed {seed} ({mode:?})");
        if let Err(e) = audience_sim::history::run(seed, mode, rates).await {
            println!(
                "FAIL seed {seed}: {e}\n  replay: SIM_SEED={seed} cargo test -p audience-sim --test sim -- --nocapture"
            );
            failed.push(seed);
        }
    }
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}

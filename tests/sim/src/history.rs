//! One seeded history (WIP: fault-free smoke shape only): exports change over time, each delivered as an
//! S3 event to an invocation run under the gate; then the audience is compared with the newest export.

use std::collections::BTreeSet;
use std::sync::Arc;

use audience_core::model::{Cadence, WriteMode};
use audience_core::sync::RunnerInput;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::faults::{FaultRates, Faults};
use crate::scheduler::{Gate, INVOCATION, VirtualClock};
use crate::world::{World, digest_of, export_csv, export_key};

/// The one place the engine's deadline is computed (issue 12 moves it to the virtual clock).
fn deadline(_clock: &VirtualClock) -> Option<std::time::Instant> {
    None
}

fn s3_event(key: &str) -> serde_json::Value {
    json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "b"}, "object": {"key": key.replace(':', "%3A")}}}]})
}

/// Runs one history; `Err` lists the invariant violations.
pub async fn run(seed: u64, mode: WriteMode, rates: FaultRates) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = chrono::DateTime::from_timestamp(1_800_000_000, 0).ok_or("time")?;
    let gate = Gate::new(seed);
    let faults = Faults::new(seed, gate.clone(), rates);
    let world = Arc::new(World::new(seed, faults, start).await?);
    gate.set_clock(world.clock.clone());
    let sync = world
        .create_sync("01SIMSYNC0000000000000000A", Cadence::OnUpload, mode)
        .await?;
    let mut members: BTreeSet<u32> = (0..1_600).collect();
    let exports = rng.random_range(2..5);
    let mut inv = 0u64;
    for _ in 0..exports {
        for _ in 0..rng.random_range(0..200) {
            let u = rng.random_range(0..2_000);
            if !members.remove(&u) {
                members.insert(u);
            }
        }
        world
            .clock
            .advance(chrono::Duration::hours(rng.random_range(1..8)));
        let key = export_key(
            &world.cohort,
            audience_core::ports::Clock::now(&*world.clock),
        );
        world.cohorts.put_object(&key, export_csv(&members));
        inv += 1;
        gate.started(inv);
        let w = world.clone();
        let g = gate.clone();
        let input = RunnerInput::parse(&s3_event(&key)).map_err(|e| e.to_string())?;
        tokio::spawn(INVOCATION.scope(inv, async move {
            let _ = w.engine.handle(input, deadline(&w.clock)).await;
            g.finished(inv);
        }));
        gate.drain().await?;
    }
    let expected: BTreeSet<String> = members
        .iter()
        .map(|m| digest_of(&format!("user{m}@example.com")))
        .collect::<Result<_, _>>()?;
    let tag = format!("[as:{}]", sync.sync_id);
    let mut v = crate::invariants::state_checks(&world, &sync.sync_id).await;
    let st = world.sandbox.shared().lock();
    let auds: Vec<_> = st
        .audiences
        .values()
        .filter(|a| a.name.contains(&tag))
        .collect();
    if auds.len() != 1 {
        v.push(format!("one audience per sync: found {}", auds.len()));
    }
    if let Some(a) = auds.first() {
        let extra = a.members.difference(&expected).count();
        let missing = expected.difference(&a.members).count();
        if extra + missing > 0 {
            v.push(format!(
                "audience != newest export: {extra} extra, {missing} missing"
            ));
        }
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(v.join("; "))
    }
}

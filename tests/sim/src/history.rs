//! One seeded history: exports change over time and arrive as S3 events; every payload the engine sends
//! itself (continuations, pending exports, recreation, the sweeper's resumes) is delivered once, twice or
//! late; a failed invocation is retried twice (Lambda's async retry); the user pauses, resumes and edits
//! guards mid-run; TikTok loses answers and throttles. Then faults stop, time passes, the sweeper comes, and
//! the invariants are checked.

use std::collections::BTreeSet;
use std::sync::Arc;

use audience_core::model::{Cadence, SyncState, WriteMode};
use audience_core::ports::{Clock, StateStore, update_sync_with};
use audience_core::sync::RunnerInput;
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use tiktok_sandbox::FaultConfig;

use crate::faults::{FaultRates, Faults};
use crate::scheduler::{Gate, INVOCATION, VirtualClock};
use crate::world::{World, digest_of, export_csv, export_key};

/// The one place the engine's deadline is computed: sometimes short, so runs continue elsewhere.
fn deadline(clock: &VirtualClock, rng: &mut ChaCha8Rng, w: &World) -> Option<DateTime<Utc>> {
    if rng.random_bool(0.3) {
        let margin = w.engine.settings().deadline_margin.as_secs() as i64;
        Some(clock.now() + chrono::Duration::seconds(margin + rng.random_range(5..120)))
    } else {
        None
    }
}

fn s3_event(key: &str) -> Value {
    json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "b"}, "object": {"key": key.replace(':', "%3A")}}}]})
}

/// TikTok on a bad day: a share of requests answered 40100 or 5xx, or applied and then the answer lost.
fn tiktok_faults(seed: u64, on: bool) -> FaultConfig {
    if !on {
        return FaultConfig::default();
    }
    FaultConfig {
        rate: 0.05,
        codes: vec![40100, 50000],
        http_errors: vec![502],
        drop_after_apply_rate: 0.05,
        seed: Some(seed),
        ..FaultConfig::default()
    }
}

struct Driver {
    world: Arc<World>,
    gate: Arc<Gate>,
    faults: Arc<Faults>,
    rng: ChaCha8Rng,
    next: u64,
    /// Payloads delivered later than they were sent.
    late: Vec<Value>,
}

impl Driver {
    /// Starts one invocation of `input` under the gate; a failed one is retried up to twice.
    fn spawn(&mut self, payload: Value) {
        let deadline = deadline(&self.world.clock, &mut self.rng, &self.world);
        self.next += 1;
        let id = self.next;
        self.gate.started(id);
        let (w, g) = (self.world.clone(), self.gate.clone());
        tokio::spawn(INVOCATION.scope(id, async move {
            if let Ok(input) = RunnerInput::parse(&payload)
                && w.engine.handle(input, deadline).await.is_err()
            {
                w.retries
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(payload);
            }
            g.finished(id);
        }));
    }

    /// Runs everything started to its end.
    async fn drain(&self) -> Result<(), String> {
        self.gate.drain().await
    }

    /// Delivers what the engine asked for: each payload once or twice, some later; Lambda's retries.
    async fn deliver(&mut self, rounds: usize) -> Result<(), String> {
        for _ in 0..rounds {
            let mut batch: Vec<Value> = std::mem::take(&mut *self.world.outbox());
            batch.extend(std::mem::take(&mut *self.world.take_retries()));
            if self.rng.random_bool(0.5) {
                batch.append(&mut self.late);
            }
            if batch.is_empty() {
                return Ok(());
            }
            for p in batch {
                match self.rng.random_range(0..10) {
                    0 => self.late.push(p),
                    1 | 2 => {
                        // A duplicate delivery, at the same time.
                        self.spawn(p.clone());
                        self.spawn(p);
                    }
                    _ => self.spawn(p),
                }
            }
            self.drain().await?;
        }
        Ok(())
    }

    /// A user's edit through the API's path (never faulted: the user's request is not under test).
    async fn edit(&mut self, sync_id: &str) -> Result<(), String> {
        let st = self.world.state.clone();
        let p = self.world.project.clone();
        match self.rng.random_range(0..3) {
            0 => {
                update_sync_with(&*st, &p, sync_id, |s| s.state = SyncState::Paused)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            1 => {
                update_sync_with(&*st, &p, sync_id, |s| s.state = SyncState::Active)
                    .await
                    .map_err(|e| e.to_string())?;
                // The API starts a run on resume.
                self.spawn(json!({"trigger": "manual", "project_id": p, "sync_id": sync_id}));
            }
            _ => {
                let r = [0.5, 0.9][self.rng.random_range(0..2)];
                update_sync_with(&*st, &p, sync_id, |s| s.max_removal_ratio = r)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Faults off, the sync active and its guards open; hours pass and the sweeper comes until quiet.
    async fn quiesce(&mut self, sync_id: &str) -> Result<(), String> {
        self.faults.stop();
        self.world
            .sandbox
            .shared()
            .lock()
            .set_faults(FaultConfig::default());
        let (st, p) = (self.world.state.clone(), self.world.project.clone());
        update_sync_with(&*st, &p, sync_id, |s| {
            s.state = SyncState::Active;
            s.max_removal_ratio = 1.0;
        })
        .await
        .map_err(|e| e.to_string())?;
        self.late.clear();
        self.spawn(json!({"trigger": "manual", "project_id": p, "sync_id": sync_id}));
        self.drain().await?;
        for _ in 0..12 {
            self.deliver(10).await?;
            self.world.clock.advance(chrono::Duration::hours(7));
            self.spawn(json!({"trigger": "sweep"}));
            self.drain().await?;
        }
        self.deliver(10).await
    }
}

/// Runs one history; `Err` lists the invariant violations.
pub async fn run(seed: u64, mode: WriteMode, rates: FaultRates) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = DateTime::from_timestamp(1_800_000_000, 0).ok_or("time")?;
    let gate = Gate::new(seed);
    let faults = Faults::new(seed, gate.clone(), rates);
    let world = Arc::new(World::new(seed, faults.clone(), start).await?);
    gate.set_clock(world.clock.clone());
    let sync = world
        .create_sync("01SIMSYNC0000000000000000A", Cadence::OnUpload, mode)
        .await?;
    let tiktok_bad = rates.crash > 0.0 || rates.lost > 0.0;
    world
        .sandbox
        .shared()
        .lock()
        .set_faults(tiktok_faults(seed, tiktok_bad));
    let mut members: BTreeSet<u32> = (0..2_000).collect();
    let mut d = Driver {
        world: world.clone(),
        gate: gate.clone(),
        faults,
        rng: ChaCha8Rng::seed_from_u64(seed ^ 0xd17e),
        next: 0,
        late: Vec::new(),
    };
    for _ in 0..rng.random_range(2..6) {
        for _ in 0..rng.random_range(0..250) {
            let u = rng.random_range(0..2_400);
            if !members.remove(&u) {
                members.insert(u);
            }
        }
        world
            .clock
            .advance(chrono::Duration::minutes(rng.random_range(10..600)));
        let key = export_key(&world.cohort, world.clock.now());
        world.cohorts.put_object(&key, export_csv(&members));
        // Sometimes S3 delivers the event twice.
        d.spawn(s3_event(&key));
        if rng.random_bool(0.2) {
            d.spawn(s3_event(&key));
        }
        if rng.random_bool(0.3) {
            d.edit(&sync.sync_id).await?;
        }
        if rng.random_bool(0.3) {
            d.spawn(json!({"trigger": "sweep"}));
        }
        d.drain().await?;
        d.deliver(3).await?;
    }
    d.quiesce(&sync.sync_id).await?;
    check(&world, &sync.sync_id, &members).await
}

async fn check(world: &World, sync_id: &str, members: &BTreeSet<u32>) -> Result<(), String> {
    let expected: BTreeSet<String> = members
        .iter()
        .map(|m| digest_of(&format!("user{m}@example.com")))
        .collect::<Result<_, _>>()?;
    let tag = format!("[as:{sync_id}]");
    let mut v = crate::invariants::state_checks(world, sync_id).await;
    let s = world
        .state
        .get_sync(&world.project, sync_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("sync gone")?;
    let p = &s.progress;
    // TikTok's size rule may hold changes for ever (an audience under 1,000 matched users takes no edit):
    // then the difference must be exactly what the sync shows as held.
    let size_hold = p
        .last_run
        .as_ref()
        .and_then(|l| l.reason.as_deref())
        .is_some_and(|r| r.contains("fewer than 1000 matched"));
    if (p.held_adds + p.held_removals > 0 && !size_hold) || p.deferred > 0 || p.uncertain.is_some()
    {
        v.push(format!(
            "still owed after quiescence: held {}+{}, deferred {}, uncertain {:?} ({:?})",
            p.held_adds,
            p.held_removals,
            p.deferred,
            p.uncertain.as_ref().map(|u| u.digests),
            p.last_run.as_ref().map(|l| (l.state, l.reason.clone()))
        ));
    }
    if std::env::var("SIM_DEBUG").is_ok()
        && let Ok(page) = world.state.list_runs(sync_id, 100, None).await
    {
        {
            for r in page.runs.iter().rev() {
                println!(
                    "  run {} {:?} {:?} adds {:?} removes {:?} unc {}/{} {:?}",
                    r.run_id,
                    r.trigger,
                    r.state,
                    r.adds,
                    r.removes,
                    r.uncertain_resent,
                    r.uncertain_left,
                    r.reason
                );
            }
        }
    }
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
        let members: std::collections::BTreeSet<String> =
            a.members.iter().map(hex::encode).collect();
        let extra = members.difference(&expected).count();
        let missing = expected.difference(&members).count();
        let held = (p.held_removals as usize, p.held_adds as usize);
        if (extra, missing) != held || (extra + missing > 0 && !size_hold) {
            v.push(format!(
                "audience != newest export: {extra} extra, {missing} missing (held {held:?})"
            ));
        }
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(v.join("; "))
    }
}

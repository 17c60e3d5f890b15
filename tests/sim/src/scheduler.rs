//! The seeded scheduler: every port call of every invocation waits at [`Gate::step`]; the driver lets exactly
//! one waiting invocation proceed at a time, chosen by the seed. Between two gate points only one invocation
//! runs, so the interleaving (and each fault decision) is the seed's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tiktok_sandbox::Shared;
use tokio::sync::{Notify, oneshot};

use audience_core::ports::Clock;

tokio::task_local! {
    /// The invocation a port call belongs to (unset for the harness's own reads).
    pub static INVOCATION: u64;
}

/// The invocation id of the current task, if it is one.
pub fn current() -> Option<u64> {
    INVOCATION.try_with(|i| *i).ok()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Virtual time for the engine (`Deps.clock`) that also drives the sandbox's logical clock.
pub struct VirtualClock {
    now: Mutex<DateTime<Utc>>,
    sandbox: Shared,
}

impl VirtualClock {
    pub fn new(start: DateTime<Utc>, sandbox: Shared) -> VirtualClock {
        VirtualClock {
            now: Mutex::new(start),
            sandbox,
        }
    }

    /// Moves virtual time forward; the sandbox's clock moves by the same amount (its processing windows,
    /// not-ready windows and UTC day follow the simulation).
    pub fn advance(&self, d: chrono::Duration) {
        if d <= chrono::Duration::zero() {
            return;
        }
        *lock(&self.now) += d;
        self.sandbox.lock().advance_clock(d.num_milliseconds());
    }

    pub fn advance_to(&self, t: DateTime<Utc>) {
        let now = self.now();
        self.advance(t - now);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.now)
    }
}

struct GateState {
    /// Invocations running (not waiting at the gate, not finished).
    running: usize,
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
    live: BTreeSet<u64>,
}

/// Where invocations wait for their turn.
pub struct Gate {
    state: Mutex<GateState>,
    changed: Notify,
    /// Set once the world (and its clock) exists.
    clock: Mutex<Option<Arc<VirtualClock>>>,
    rng: Mutex<ChaCha8Rng>,
}

/// The driver saw no progress for this long (real time): an invocation is stuck outside the gate.
pub const HANG: Duration = Duration::from_secs(60);

impl Gate {
    pub fn new(seed: u64) -> Arc<Gate> {
        Arc::new(Gate {
            state: Mutex::new(GateState {
                running: 0,
                waiting: BTreeMap::new(),
                live: BTreeSet::new(),
            }),
            changed: Notify::new(),
            clock: Mutex::new(None),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x6a7e)),
        })
    }

    pub fn set_clock(&self, clock: Arc<VirtualClock>) {
        *lock(&self.clock) = Some(clock);
    }

    /// A new invocation starts running (call before spawning it).
    pub fn started(&self, id: u64) {
        let mut st = lock(&self.state);
        st.running += 1;
        st.live.insert(id);
    }

    /// The invocation ended (returned, failed or crashed).
    pub fn finished(&self, id: u64) {
        {
            let mut st = lock(&self.state);
            st.running = st.running.saturating_sub(1);
            st.live.remove(&id);
        }
        self.changed.notify_one();
    }

    /// Called before every port call of an invocation: waits until the scheduler picks it. Each step also
    /// lets 0-3 virtual seconds pass (the call's duration).
    pub async fn step(&self) {
        let Some(id) = current() else { return };
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.state);
            st.running = st.running.saturating_sub(1);
            st.waiting.insert(id, tx);
        }
        self.changed.notify_one();
        // A dropped sender (the driver gave up) lets the call go on: the run is then abandoned anyway.
        let _ = rx.await;
    }

    /// Waits until no invocation is running (all wait at the gate or finished). `Err` after [`HANG`].
    pub async fn settle(&self) -> Result<(), String> {
        loop {
            if lock(&self.state).running == 0 {
                return Ok(());
            }
            if tokio::time::timeout(HANG, self.changed.notified())
                .await
                .is_err()
            {
                return Err(format!(
                    "no progress for {HANG:?}: an invocation is stuck outside the gate"
                ));
            }
        }
    }

    /// How many invocations wait at the gate.
    pub fn waiting(&self) -> usize {
        lock(&self.state).waiting.len()
    }

    pub fn live(&self) -> usize {
        lock(&self.state).live.len()
    }

    /// Lets one waiting invocation (the seed's pick) make its next call. `false` when none waits.
    pub fn release_one(&self) -> bool {
        let pick = {
            let mut st = lock(&self.state);
            if st.waiting.is_empty() {
                return false;
            }
            let n = lock(&self.rng).random_range(0..st.waiting.len());
            let key = st.waiting.keys().nth(n).copied();
            let tx = key.and_then(|k| st.waiting.remove(&k));
            if tx.is_some() {
                st.running += 1;
            }
            tx
        };
        let ms = lock(&self.rng).random_range(0..3_000);
        if let Some(c) = lock(&self.clock).clone() {
            c.advance(chrono::Duration::milliseconds(ms));
        }
        match pick {
            Some(tx) => {
                // The receiver is gone only if its task was dropped: count it as finished.
                if tx.send(()).is_err() {
                    let mut st = lock(&self.state);
                    st.running = st.running.saturating_sub(1);
                }
                true
            }
            None => false,
        }
    }

    /// Runs every live invocation to its end, one step at a time.
    pub async fn drain(&self) -> Result<(), String> {
        loop {
            self.settle().await?;
            if !self.release_one() {
                return Ok(());
            }
        }
    }
}

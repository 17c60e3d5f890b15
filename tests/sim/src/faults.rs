//! Seeded faults at the port boundary: a crash stops an invocation at a call (that call and every later call
//! of the invocation fail), a lost answer applies a write and then reports an error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scheduler::{Gate, current, lock};
use audience_core::ports::PortError;

/// Probabilities per port call (0 = off).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// The invocation dies at this call.
    pub crash: f64,
    /// A write is applied and its answer lost.
    pub lost: f64,
}

pub enum Decision {
    Go,
    Fail,
    Lost,
}

pub struct Faults {
    gate: Arc<Gate>,
    rng: Mutex<ChaCha8Rng>,
    rates: Mutex<FaultRates>,
    crashed: Mutex<BTreeSet<u64>>,
    /// Invocations that never fail (the API's edits: the user's request is not under test).
    exempt: Mutex<BTreeSet<u64>>,
    /// Injected faults by kind and port call.
    injected: Mutex<BTreeMap<String, u64>>,
}

impl Faults {
    pub fn new(seed: u64, gate: Arc<Gate>, rates: FaultRates) -> Arc<Faults> {
        Arc::new(Faults {
            gate,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0xfa17)),
            rates: Mutex::new(rates),
            crashed: Mutex::new(BTreeSet::new()),
            exempt: Mutex::new(BTreeSet::new()),
            injected: Mutex::new(BTreeMap::new()),
        })
    }

    /// Stops injecting (the quiesce phase).
    pub fn stop(&self) {
        *lock(&self.rates) = FaultRates::default();
    }

    pub fn exempt(&self, invocation: u64) {
        lock(&self.exempt).insert(invocation);
    }

    /// Whether the invocation crashed (its error is the crash, not the engine's).
    pub fn crashed(&self, invocation: u64) -> bool {
        lock(&self.crashed).contains(&invocation)
    }

    pub fn injected(&self) -> BTreeMap<String, u64> {
        lock(&self.injected).clone()
    }

    fn count(&self, kind: &str, op: &str) {
        *lock(&self.injected)
            .entry(format!("{kind}:{op}"))
            .or_default() += 1;
    }

    /// The gate, then the seed's decision for this call.
    pub async fn before(&self, op: &str, write: bool) -> Decision {
        self.gate.step().await;
        let Some(id) = current() else {
            return Decision::Go;
        };
        if self.crashed(id) {
            return Decision::Fail;
        }
        if lock(&self.exempt).contains(&id) {
            return Decision::Go;
        }
        let rates = *lock(&self.rates);
        let (crash, lost) = {
            let mut rng = lock(&self.rng);
            (rng.random_bool(rates.crash), rng.random_bool(rates.lost))
        };
        if crash {
            lock(&self.crashed).insert(id);
            self.count("crash", op);
            return Decision::Fail;
        }
        if write && lost {
            self.count("lost", op);
            return Decision::Lost;
        }
        Decision::Go
    }
}

pub fn crash_error(op: &str) -> PortError {
    PortError::Unavailable {
        service: "sim",
        message: format!("invocation crashed at {op}"),
    }
}

pub fn lost_error(op: &str) -> PortError {
    PortError::Unavailable {
        service: "sim",
        message: format!("{op}: applied, answer lost"),
    }
}

/// One decorated port call returning `Result<_, PortError>`.
#[macro_export]
macro_rules! port_call {
    ($faults:expr, $op:literal, $write:expr, $call:expr) => {{
        match $faults.before($op, $write).await {
            $crate::faults::Decision::Fail => Err($crate::faults::crash_error($op)),
            $crate::faults::Decision::Go => $call.await,
            $crate::faults::Decision::Lost => match $call.await {
                Ok(_) => Err($crate::faults::lost_error($op)),
                Err(e) => Err(e),
            },
        }
    }};
}

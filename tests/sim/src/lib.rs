//! Deterministic simulation of the sync engine (issue 12, "Proof: deterministic simulation"): a seeded
//! scheduler interleaves invocations of the real engine on the in-memory ports against the TikTok sandbox,
//! with seeded faults; after each history the invariants are checked.

pub mod faults;
pub mod history;
pub mod invariants;
pub mod scheduler;
pub mod state;
pub mod world;

//! The ledger of a run: how its numbers must add up, and the figures it logs.

use crate::model::{ChangeCounts, RunLedger};

/// Checks the identities every finished ledger satisfies:
/// rows = valid + Σ skipped; valid = unique + duplicates; planned = applied + held + deferred.
pub fn reconcile(run: &RunLedger) -> Result<(), String> {
    let skipped: u64 = run.skipped.values().sum();
    if run.rows != run.valid + skipped {
        return Err(format!(
            "rows {} != valid {} + skipped {}",
            run.rows, run.valid, skipped
        ));
    }
    if run.valid != run.unique + run.duplicates {
        return Err(format!(
            "valid {} != unique {} + duplicates {}",
            run.valid, run.unique, run.duplicates
        ));
    }
    for (name, c) in [("adds", &run.adds), ("removes", &run.removes)] {
        if !balanced(c) {
            return Err(format!(
                "{name}: planned {} != applied {} + held {} + deferred {}",
                c.planned, c.applied, c.held, c.deferred
            ));
        }
    }
    Ok(())
}

/// Unfinished runs (failed mid-way) may have planned changes neither applied, held nor deferred: those are
/// simply planned again by the next run. Finished-clean runs balance exactly.
pub fn balanced(c: &ChangeCounts) -> bool {
    c.planned == c.applied + c.held + c.deferred
}

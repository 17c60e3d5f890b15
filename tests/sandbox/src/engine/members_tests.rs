//! `Members` against a `BTreeSet` model, across the pending/merged boundary.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const RATE: f64 = 0.7;

/// Digests from a small space (first two bytes random), so that adds and removes collide often.
fn digest(rng: &mut StdRng) -> Digest {
    let mut d = [0u8; 32];
    d[0] = rng.random();
    d[1] = rng.random();
    d[2] = rng.random_range(0..4);
    d
}

fn sorted(rng: &mut StdRng, n: usize) -> Vec<Digest> {
    let s: BTreeSet<Digest> = (0..n).map(|_| digest(rng)).collect();
    s.into_iter().collect()
}

fn check(m: &Members, model: &BTreeSet<Digest>) {
    let got: Vec<&Digest> = m.iter().collect();
    let want: Vec<&Digest> = model.iter().collect();
    assert_eq!(got, want);
    assert_eq!(m.len(), model.len());
    let limit = match_limit(RATE);
    let matched = model.iter().filter(|d| matches(d, limit)).count();
    assert_eq!(m.matched(RATE), matched);
    // another rate is counted on the fly
    let half = model
        .iter()
        .filter(|d| matches(d, match_limit(0.5)))
        .count();
    assert_eq!(m.matched(0.5), half);
}

#[test]
fn streaming_changes_match_a_set_through_merges() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut m = Members::new(RATE);
    let mut model = BTreeSet::new();
    for round in 0..30 {
        for _ in 0..10_000 {
            let d = digest(&mut rng);
            if rng.random_bool(0.7) {
                assert_eq!(m.insert(d), model.insert(d));
            } else {
                assert_eq!(m.remove(&d), model.remove(&d));
            }
        }
        m.settle();
        if round % 5 == 0 {
            check(&m, &model);
        }
    }
    check(&m, &model);
    m.compact();
    check(&m, &model);
}

#[test]
fn file_edits_small_and_large_match_a_set() {
    let mut rng = StdRng::seed_from_u64(11);
    let start = sorted(&mut rng, 200_000);
    let mut model: BTreeSet<Digest> = start.iter().copied().collect();
    let mut m = Members::from_sorted(start, RATE);
    check(&m, &model);
    for n in [50, 5_000, 150_000, 400_000] {
        let inc = sorted(&mut rng, n);
        let inc_set: BTreeSet<Digest> = inc.iter().copied().collect();
        let both = model.intersection(&inc_set).count();
        let both_matched = model
            .intersection(&inc_set)
            .filter(|d| matches(d, match_limit(RATE)))
            .count();
        assert_eq!(m.overlap(&inc), (both, both_matched));
        m.append(&inc);
        model.extend(inc.iter().copied());
        check(&m, &model);
        let gone = sorted(&mut rng, n);
        m.remove_all(&gone);
        for d in &gone {
            model.remove(d);
        }
        check(&m, &model);
    }
    let inc = sorted(&mut rng, 1_000);
    m.replace(inc.clone());
    check(&m, &inc.into_iter().collect());
}

#[test]
fn merge_into_and_retain_absent_keep_order() {
    let mut base = vec![[1; 32], [4; 32], [9; 32]];
    merge_into(&mut base, &[[0; 32], [5; 32], [10; 32]]);
    assert_eq!(
        base,
        vec![[0; 32], [1; 32], [4; 32], [5; 32], [9; 32], [10; 32]]
    );
    retain_absent(&mut base, &[[0; 32], [3; 32], [9; 32], [10; 32]]);
    assert_eq!(base, vec![[1; 32], [4; 32], [5; 32]]);
}

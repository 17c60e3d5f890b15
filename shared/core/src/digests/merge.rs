//! Streaming set operations on sorted digest streams: the diff, a run's changes and the snapshot after a
//! run are linear merges, so they need no memory beyond their inputs' read buffers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;

use super::Digest;
use super::sorted::{DigestIter, Sorted, SortedWriter, Spill};

/// A stream and its current digest.
struct Head {
    it: DigestIter,
    cur: Option<Digest>,
}

impl Head {
    fn new(mut it: DigestIter) -> io::Result<Head> {
        let cur = it.next().transpose()?;
        Ok(Head { it, cur })
    }

    fn advance(&mut self) -> io::Result<()> {
        let next = self.it.next().transpose()?;
        if let (Some(a), Some(b)) = (self.cur, next)
            && a >= b
        {
            return Err(io::Error::other(
                "a digest stream is not strictly increasing",
            ));
        }
        self.cur = next;
        Ok(())
    }

    /// Whether the stream holds `d`, moving past everything below it (`d` must not decrease between calls).
    fn has(&mut self, d: Digest) -> io::Result<bool> {
        while self.cur.is_some_and(|c| c < d) {
            self.advance()?;
        }
        Ok(self.cur == Some(d))
    }
}

/// `(base ∪ adds) \ removes`, streamed: the snapshot after a run applied `adds` and `removes`.
pub fn apply(base: DigestIter, adds: DigestIter, removes: DigestIter) -> io::Result<DigestIter> {
    let (mut b, mut a, mut r) = (Head::new(base)?, Head::new(adds)?, Head::new(removes)?);
    let mut failed = false;
    Ok(Box::new(std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let step = (|| loop {
            let next = match (b.cur, a.cur) {
                (None, None) => return Ok(None),
                (Some(x), None) => x,
                (None, Some(y)) => y,
                (Some(x), Some(y)) => x.min(y),
            };
            if b.cur == Some(next) {
                b.advance()?;
            }
            if a.cur == Some(next) {
                a.advance()?;
            }
            if !r.has(next)? {
                return Ok(Some(next));
            }
        })();
        failed = step.is_err();
        step.transpose()
    })))
}

/// `a ∪ b`, streamed.
pub fn union(a: DigestIter, b: DigestIter) -> io::Result<DigestIter> {
    apply(a, b, Box::new(std::iter::empty()))
}

/// How many digests a stream has (it is read to the end).
pub fn count(it: DigestIter) -> io::Result<u64> {
    let mut n = 0;
    for d in it {
        d?;
        n += 1;
    }
    Ok(n)
}

/// How many digests `current` has that `base` lacks (adds), and the reverse (removes), streamed.
pub fn diff_counts(base: DigestIter, current: DigestIter) -> io::Result<(u64, u64)> {
    let (mut b, mut c) = (Head::new(base)?, Head::new(current)?);
    let (mut adds, mut removes) = (0, 0);
    loop {
        match (b.cur, c.cur) {
            (None, None) => return Ok((adds, removes)),
            (Some(x), Some(y)) if x == y => {
                b.advance()?;
                c.advance()?;
            }
            (Some(x), Some(y)) if x < y => {
                removes += 1;
                b.advance()?;
            }
            (Some(_), None) => {
                removes += 1;
                b.advance()?;
            }
            _ => {
                adds += 1;
                c.advance()?;
            }
        }
    }
}

/// What a run sends: the cohort's diff against the base, and every uncertain digest the cohort's way.
#[derive(Debug, Clone)]
pub struct ChangeLists {
    /// In the cohort and not in the base, or uncertain (APPEND again: idempotent on TikTok).
    pub adds: Sorted,
    /// Not in the cohort and in the base or uncertain.
    pub removes: Sorted,
    /// The removal guard's measure: in the base and not in the cohort (uncertain re-sends excluded).
    pub cohort_removes: u64,
}

/// One three-way merge of base, uncertain and cohort.
pub fn changes(
    base: &Sorted,
    uncertain: &Sorted,
    cohort: &Sorted,
    spill: &Spill,
) -> io::Result<ChangeLists> {
    if base.is_empty() && uncertain.is_empty() {
        // A first sync sends the cohort as it is: no copy.
        return Ok(ChangeLists {
            adds: cohort.clone(),
            removes: Sorted::empty(),
            cohort_removes: 0,
        });
    }
    let (mut b, mut u, mut c) = (
        Head::new(base.iter()?)?,
        Head::new(uncertain.iter()?)?,
        Head::new(cohort.iter()?)?,
    );
    let (mut adds, mut removes) = (SortedWriter::new(spill), SortedWriter::new(spill));
    let mut cohort_removes = 0;
    while let Some(next) = [b.cur, u.cur, c.cur].into_iter().flatten().min() {
        let take = |h: &mut Head| -> io::Result<bool> {
            let here = h.cur == Some(next);
            if here {
                h.advance()?;
            }
            Ok(here)
        };
        let (in_b, in_u, in_c) = (take(&mut b)?, take(&mut u)?, take(&mut c)?);
        if in_c && (!in_b || in_u) {
            adds.push(next)?;
        } else if !in_c {
            removes.push(next)?;
            cohort_removes += u64::from(in_b);
        }
    }
    Ok(ChangeLists {
        adds: adds.finish()?,
        removes: removes.finish()?,
        cohort_removes,
    })
}

/// Merges sorted runs (each duplicate-free) into one list; returns it and the digests found in more than
/// one run.
pub fn merge_runs(runs: Vec<Sorted>, spill: &Spill) -> io::Result<(Sorted, u64)> {
    let mut heads = Vec::with_capacity(runs.len());
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (i, r) in runs.iter().enumerate() {
        let h = Head::new(r.iter()?)?;
        if let Some(d) = h.cur {
            heap.push(Reverse((d, i)));
        }
        heads.push(h);
    }
    let mut out = SortedWriter::new(spill);
    let (mut last, mut dups) = (None, 0u64);
    while let Some(Reverse((d, i))) = heap.pop() {
        if last == Some(d) {
            dups += 1;
        } else {
            out.push(d)?;
            last = Some(d);
        }
        let h = &mut heads[i];
        h.advance()?;
        if let Some(n) = h.cur {
            heap.push(Reverse((n, i)));
        }
    }
    Ok((out.finish()?, dups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digests::{DigestSet, diff};
    use proptest::prelude::*;

    fn dg(n: u8) -> Digest {
        Digest([n; 32])
    }

    fn spills() -> [Spill; 2] {
        let mut tiny = Spill::never();
        tiny.list_max = 2;
        [Spill::never(), tiny]
    }

    fn list(v: &[u8], spill: &Spill) -> Sorted {
        let set = DigestSet::from_unsorted(v.iter().map(|b| dg(*b)).collect()).0;
        SortedWriter::collect(spill, Sorted::from_set(set).iter().unwrap()).unwrap()
    }

    fn ids(s: &Sorted) -> Vec<u8> {
        s.iter().unwrap().map(|d| d.unwrap().0[0]).collect()
    }

    #[test]
    fn uncertain_digests_go_the_cohorts_way() {
        for spill in spills() {
            // base {1,2,3}; cohort {2,3,4}; uncertain {3,4,5,6}: 5 and 6 left the cohort (remove), 3 and 4
            // are in it (add again).
            let c = changes(
                &list(&[1, 2, 3], &spill),
                &list(&[3, 4, 5, 6], &spill),
                &list(&[2, 3, 4], &spill),
                &spill,
            )
            .unwrap();
            assert_eq!(ids(&c.adds), vec![3, 4]);
            assert_eq!(ids(&c.removes), vec![1, 5, 6]);
            assert_eq!(c.cohort_removes, 1);
        }
    }

    #[test]
    fn a_stream_out_of_order_is_an_error() {
        let bad: DigestIter = Box::new(vec![Ok(dg(2)), Ok(dg(1))].into_iter());
        let r: io::Result<Vec<Digest>> = apply(
            bad,
            Box::new(std::iter::empty()),
            Box::new(std::iter::empty()),
        )
        .unwrap()
        .collect();
        assert!(r.is_err());
        let mut w = SortedWriter::new(&Spill::never());
        w.push(dg(2)).unwrap();
        assert!(w.push(dg(2)).is_err());
    }

    proptest! {
        #[test]
        fn streamed_operations_equal_the_in_memory_ones(
            a in proptest::collection::vec(0u8..40, 0..60),
            b in proptest::collection::vec(0u8..40, 0..60),
            u in proptest::collection::vec(0u8..40, 0..20),
            cut in 1usize..7,
        ) {
            for spill in spills() {
                let (base, cur, unc) = (list(&a, &spill), list(&b, &spill), list(&u, &spill));
                let (bs, cs, us) = (base.to_set().unwrap(), cur.to_set().unwrap(), unc.to_set().unwrap());
                let d = diff(bs.as_slice(), cs.as_slice());
                let c = changes(&base, &unc, &cur, &spill).unwrap();
                prop_assert_eq!(c.cohort_removes, d.removes.len() as u64);
                prop_assert_eq!(
                    diff_counts(base.iter().unwrap(), cur.iter().unwrap()).unwrap(),
                    (d.adds.len() as u64, d.removes.len() as u64)
                );
                let want_adds: Vec<Digest> = cs.as_slice().iter()
                    .filter(|x| !bs.contains(x) || us.contains(x)).copied().collect();
                prop_assert_eq!(c.adds.to_set().unwrap().into_vec(), want_adds);
                let want_removes: Vec<Digest> = bs.apply(us.as_slice(), &[]).as_slice().iter()
                    .filter(|x| !cs.contains(x)).copied().collect();
                prop_assert_eq!(c.removes.to_set().unwrap().into_vec(), want_removes);
                // The snapshot after applying the diff is the cohort.
                let after = SortedWriter::collect(&spill, apply(
                    base.iter().unwrap(),
                    Sorted::from_set(DigestSet::from_sorted_unique(d.adds.clone()).unwrap()).iter().unwrap(),
                    Sorted::from_set(DigestSet::from_sorted_unique(d.removes.clone()).unwrap()).iter().unwrap(),
                ).unwrap()).unwrap();
                prop_assert!(after == cur);
                // Runs cut anywhere merge back to the set, with the cross-run duplicates counted.
                let mut runs = Vec::new();
                let mut in_runs = 0u64;
                for part in b.chunks(cut) {
                    let r = list(part, &spill);
                    in_runs += r.len() as u64;
                    runs.push(r);
                }
                let (merged, dups) = merge_runs(runs, &spill).unwrap();
                prop_assert!(merged == cur);
                prop_assert_eq!(dups, in_runs - cur.len() as u64);
                // Ranges stream the same digests as the in-memory slice.
                let n = cur.len();
                let ranges = [0..n / 3, n / 2..n];
                let got: Vec<Digest> = cur.iter_ranges(&ranges).unwrap().map(|x| x.unwrap()).collect();
                let want: Vec<Digest> = ranges.iter().flat_map(|r| cs.as_slice()[r.clone()].to_vec()).collect();
                prop_assert_eq!(got, want);
                prop_assert_eq!(cur.range(n / 2..n).unwrap(), cs.as_slice()[n / 2..n].to_vec());
            }
        }
    }
}

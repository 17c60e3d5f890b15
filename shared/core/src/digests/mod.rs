//! Digests: the 32-byte SHA-256 values that are all we ever keep of an identifier, their deduplicated
//! sorted set, the diff between two sets and the snapshot format that records what an audience holds.

pub mod merge;
pub mod snapshot;
pub mod sorted;
pub mod sorter;

pub use sorted::{DigestIter, Sorted, SortedWriter, Spill};
pub use sorter::Sorter;

use std::fmt;

/// A SHA-256 digest of a normalized identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Ord for Digest {
    /// The bytes' order, compared as two big-endian u128 halves: much cheaper than `memcmp`, and the
    /// streaming merges compare several times per digest.
    #[inline]
    fn cmp(&self, other: &Digest) -> std::cmp::Ordering {
        let half = |d: &Digest, i: usize| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&d.0[i..i + 16]);
            u128::from_be_bytes(b)
        };
        half(self, 0)
            .cmp(&half(other, 0))
            .then_with(|| half(self, 16).cmp(&half(other, 16)))
    }
}

impl PartialOrd for Digest {
    #[inline]
    fn partial_cmp(&self, other: &Digest) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Digest {
    /// Lowercase hex, the form TikTok expects in files and mappings.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Writes the 64 lowercase hex digits into `out` without allocating.
    pub fn encode_hex(&self, out: &mut [u8; 64]) {
        // Infallible: the buffer is exactly twice the input length.
        let _ = hex::encode_to_slice(self.0, out);
    }

    pub fn from_hex(s: &str) -> Option<Digest> {
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return None;
        }
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        self.encode_hex(&mut buf);
        // hex output is ASCII
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A sorted, duplicate-free set of digests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DigestSet {
    sorted: Vec<Digest>,
}

impl DigestSet {
    /// Sorts and dedupes; returns the set and how many duplicates were dropped.
    pub fn from_unsorted(mut v: Vec<Digest>) -> (DigestSet, u64) {
        let before = v.len();
        // Comparing the first 16 bytes as one big-endian u128 is much cheaper than memcmp, and for SHA-256
        // values it nearly always decides; the full compare breaks the (astronomically rare) ties.
        v.sort_unstable_by(|a, b| prefix(a).cmp(&prefix(b)).then_with(|| a.0.cmp(&b.0)));
        v.dedup();
        let dups = (before - v.len()) as u64;
        (DigestSet { sorted: v }, dups)
    }

    /// `from_unsorted` on `threads` threads, in place (no extra memory), an MSD radix sort: SHA-256 spreads
    /// digests evenly, so splitting on the leading bits halves the work. With two or more threads the slice
    /// is first split on its top bit (one streaming two-pointer pass, the only sequential step) and each half
    /// goes on with half the threads; on one thread, a slice is partitioned by its first byte (American flag
    /// sort) and each bucket sorted within the cache (`sort_bucket`). Faster than a comparison sort on one
    /// thread too.
    pub fn from_unsorted_par(mut v: Vec<Digest>, threads: usize) -> (DigestSet, u64) {
        // Below this, threads cost more than they save.
        const MIN_PARALLEL: usize = 1 << 16;
        if v.len() < MIN_PARALLEL {
            return DigestSet::from_unsorted(v);
        }
        let before = v.len();
        sort_split(&mut v, threads.max(1), 0);
        v.dedup();
        let dups = (before - v.len()) as u64;
        (DigestSet { sorted: v }, dups)
    }

    /// From a vector the caller guarantees strictly increasing (e.g. a verified snapshot).
    pub fn from_sorted_unique(v: Vec<Digest>) -> Result<DigestSet, NotSorted> {
        if v.windows(2).any(|w| w[0] >= w[1]) {
            return Err(NotSorted);
        }
        Ok(DigestSet { sorted: v })
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    pub fn as_slice(&self) -> &[Digest] {
        &self.sorted
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.sorted.binary_search(d).is_ok()
    }

    pub fn into_vec(self) -> Vec<Digest> {
        self.sorted
    }

    /// `self + adds - removes`, all sorted: the snapshot after a run applied `adds` and `removes`.
    pub fn apply(&self, adds: &[Digest], removes: &[Digest]) -> DigestSet {
        let merged = merge_union(&self.sorted, adds);
        let mut out = Vec::with_capacity(merged.len());
        let mut r = removes.iter().peekable();
        for d in merged {
            while r.peek().is_some_and(|x| **x < d) {
                r.next();
            }
            if r.peek().is_some_and(|x| **x == d) {
                continue;
            }
            out.push(d);
        }
        DigestSet { sorted: out }
    }
}

/// Sorts `v`, whose digests share the top `bit` bits of their first byte, on `threads` threads.
fn sort_split(v: &mut [Digest], threads: usize, bit: u32) {
    if threads <= 1 || bit >= 8 || v.len() < 1 << 14 {
        let ends = partition_by_byte(v, 0);
        for b in split_buckets(v, &ends) {
            sort_bucket(b, 1);
        }
        return;
    }
    let mid = partition_by_bit(v, bit);
    let (low, high) = v.split_at_mut(mid);
    let half = threads / 2;
    std::thread::scope(|s| {
        s.spawn(|| sort_split(low, half, bit + 1));
        sort_split(high, threads - half, bit + 1);
    });
}

/// Two-pointer partition on bit `bit` (from the top) of the first byte: the digests with it clear first.
/// Returns where the ones with it set begin.
fn partition_by_bit(v: &mut [Digest], bit: u32) -> usize {
    let mask = 0x80u8 >> bit;
    let (mut i, mut j) = (0, v.len());
    loop {
        while i < j && v[i].0[0] & mask == 0 {
            i += 1;
        }
        while i < j && v[j - 1].0[0] & mask != 0 {
            j -= 1;
        }
        if i >= j {
            return i;
        }
        v.swap(i, j - 1);
        i += 1;
        j -= 1;
    }
}

/// American flag sort step on byte `k`: reorders `v` so digests are grouped by that byte, ascending (in
/// place); returns each bucket's end.
#[inline]
fn partition_by_byte(v: &mut [Digest], k: usize) -> [usize; 256] {
    let mut counts = [0usize; 256];
    for d in v.iter() {
        counts[d.0[k] as usize] += 1;
    }
    let mut ends = [0usize; 256];
    let mut next = [0usize; 256];
    let mut at = 0;
    for b in 0..256 {
        next[b] = at;
        at += counts[b];
        ends[b] = at;
    }
    for b in 0..256 {
        while next[b] < ends[b] {
            let t = v[next[b]].0[k] as usize;
            if t == b {
                next[b] += 1;
            } else {
                v.swap(next[b], next[t]);
                next[t] += 1;
            }
        }
    }
    ends
}

/// Sorts a bucket whose digests share their first `level` bytes: large ones are partitioned again by the
/// next byte (in place, and now within the cache), so the comparison sort only ever sees small slices. At 3M
/// digests a first-byte bucket holds ~12k and a second-byte one ~46: the comparisons per digest drop from ~14
/// to ~6.
fn sort_bucket(b: &mut [Digest], level: usize) {
    const RADIX_ABOVE: usize = 512;
    if b.len() <= RADIX_ABOVE || level >= 8 {
        b.sort_unstable_by(|x, y| prefix(x).cmp(&prefix(y)).then_with(|| x.0.cmp(&y.0)));
        return;
    }
    let ends = partition_by_byte(b, level);
    for sub in split_buckets(b, &ends) {
        sort_bucket(sub, level + 1);
    }
}

/// The 256 buckets of a partitioned slice.
fn split_buckets<'a>(mut v: &'a mut [Digest], ends: &[usize; 256]) -> Vec<&'a mut [Digest]> {
    let mut out = Vec::with_capacity(256);
    let mut start = 0;
    for &end in ends {
        let (bucket, rest) = v.split_at_mut(end - start);
        out.push(bucket);
        v = rest;
        start = end;
    }
    out
}

fn prefix(d: &Digest) -> u128 {
    let mut p = [0u8; 16];
    p.copy_from_slice(&d.0[..16]);
    u128::from_be_bytes(p)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("digests are not strictly increasing")]
pub struct NotSorted;

fn merge_union(a: &[Digest], b: &[Digest]) -> Vec<Digest> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// What must be added to and removed from `base` to reach `current`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub adds: Vec<Digest>,
    pub removes: Vec<Digest>,
}

/// Linear merge of two sorted sets.
pub fn diff(base: &[Digest], current: &[Digest]) -> Diff {
    let mut d = Diff::default();
    let (mut i, mut j) = (0, 0);
    while i < base.len() && j < current.len() {
        match base[i].cmp(&current[j]) {
            std::cmp::Ordering::Less => {
                d.removes.push(base[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                d.adds.push(current[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    d.removes.extend_from_slice(&base[i..]);
    d.adds.extend_from_slice(&current[j..]);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dg(n: u8) -> Digest {
        Digest([n; 32])
    }

    #[test]
    fn the_bucket_sort_gives_the_plain_sort_on_every_thread_count() {
        // SHA-256 values (evenly spread), duplicates, and a crowded first byte (uneven buckets).
        // 300k: first-byte buckets of ~1,000, so they are partitioned again by the second byte. The crowded
        // ones share 12 bytes (the radix stops at 8 and compares) or differ only in their last byte.
        let mut v: Vec<Digest> = (0u32..300_000)
            .map(|i| crate::identifiers::sha256_for_bench(&(i % 280_000).to_le_bytes()))
            .collect();
        v.extend((0u8..200).map(|i| {
            let mut d = [7u8; 32];
            d[31] = i;
            Digest(d)
        }));
        v.extend((0u32..3_000).map(|i| {
            let mut d = [9u8; 32];
            d[12..16].copy_from_slice(&(i % 2_000).to_be_bytes());
            d[31] = (i % 2_000 % 7) as u8;
            Digest(d)
        }));
        let want = DigestSet::from_unsorted(v.clone());
        assert_eq!(want.1, 20_000 + 1_000);
        for threads in [0, 1, 2, 3, 8] {
            assert!(
                DigestSet::from_unsorted_par(v.clone(), threads) == want,
                "{threads}"
            );
        }
        // Every digest with the same first byte: each split on a top bit leaves one side empty.
        let same: Vec<Digest> = v[..100_000]
            .iter()
            .map(|d| {
                let mut d = *d;
                d.0[0] = 0xA5;
                d
            })
            .collect();
        let want = DigestSet::from_unsorted(same.clone());
        for threads in [1, 2, 5] {
            assert!(
                DigestSet::from_unsorted_par(same.clone(), threads) == want,
                "{threads}"
            );
        }
    }

    proptest! {
        #[test]
        fn digests_order_as_their_bytes(a in proptest::array::uniform32(0u8..4), b in proptest::array::uniform32(0u8..4)) {
            prop_assert_eq!(Digest(a).cmp(&Digest(b)), a.cmp(&b));
        }
    }

    #[test]
    fn dedupe_counts_duplicates() {
        let (s, dups) = DigestSet::from_unsorted(vec![dg(3), dg(1), dg(3), dg(2), dg(1)]);
        assert_eq!(s.as_slice(), &[dg(1), dg(2), dg(3)]);
        assert_eq!(dups, 2);
    }

    #[test]
    fn diff_finds_adds_and_removes() {
        let d = diff(&[dg(1), dg(2), dg(4)], &[dg(2), dg(3), dg(4), dg(5)]);
        assert_eq!(d.adds, vec![dg(3), dg(5)]);
        assert_eq!(d.removes, vec![dg(1)]);
        assert_eq!(diff(&[], &[dg(1)]).adds, vec![dg(1)]);
        assert_eq!(diff(&[dg(1)], &[]).removes, vec![dg(1)]);
    }

    #[test]
    fn hex_round_trip() {
        let d = Digest([0xab; 32]);
        assert_eq!(d.to_hex(), "ab".repeat(32));
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(format!("{d}"), d.to_hex());
        assert_eq!(Digest::from_hex("zz"), None);
    }

    #[test]
    fn from_sorted_unique_rejects_disorder() {
        assert!(DigestSet::from_sorted_unique(vec![dg(2), dg(1)]).is_err());
        assert!(DigestSet::from_sorted_unique(vec![dg(1), dg(1)]).is_err());
        assert!(DigestSet::from_sorted_unique(vec![dg(1), dg(2)]).is_ok());
    }

    proptest! {
        #[test]
        fn diff_then_apply_reaches_current(a in proptest::collection::vec(0u8..40, 0..60),
                                           b in proptest::collection::vec(0u8..40, 0..60)) {
            let (base, _) = DigestSet::from_unsorted(a.into_iter().map(dg).collect());
            let (cur, _) = DigestSet::from_unsorted(b.into_iter().map(dg).collect());
            let d = diff(base.as_slice(), cur.as_slice());
            prop_assert_eq!(base.apply(&d.adds, &d.removes), cur.clone());
            for x in &d.adds { prop_assert!(!base.contains(x) && cur.contains(x)); }
            for x in &d.removes { prop_assert!(base.contains(x) && !cur.contains(x)); }
        }
    }
}

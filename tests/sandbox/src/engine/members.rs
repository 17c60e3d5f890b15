//! An audience's members, cheap at 50M: an ascending `Vec` of 32-byte digests (32 B a member) plus small
//! sets of changes not merged yet, and the matched count kept as members come and go (reads never scan).
//!
//! Streaming mappings (≤ 10,000 ids a request) and small file edits go to the pending sets in
//! O(m log n); they are merged into the vector in place once they reach an eighth of it (bounded), so each
//! change costs amortized O(1) copies and an edit never holds a second copy of the audience. Large file
//! edits merge directly, in place.

use std::collections::BTreeSet;
use std::iter::Peekable;

use super::digest::{Digest, count_matched, match_limit, matches};

/// Pending changes are merged once they exceed an eighth of the vector, clamped to these.
const MIN_PENDING: usize = 1 << 16;
const MAX_PENDING: usize = 1 << 21;

#[derive(Debug, Clone, Default)]
pub struct Members {
    /// Ascending and distinct.
    base: Vec<Digest>,
    /// Added since the last merge; none is in `base`.
    added: BTreeSet<Digest>,
    /// Removed since the last merge; all are in `base`.
    removed: BTreeSet<Digest>,
    /// Members below `limit` (see `digest::matches`).
    matched: usize,
    limit: f64,
}

impl Members {
    pub fn new(match_rate: f64) -> Self {
        Members {
            limit: match_limit(match_rate),
            ..Default::default()
        }
    }

    /// Members from ascending, distinct digests.
    pub fn from_sorted(base: Vec<Digest>, match_rate: f64) -> Self {
        let limit = match_limit(match_rate);
        Members {
            matched: count_matched(&base, limit),
            base,
            limit,
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.base.len() + self.added.len() - self.removed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Matched members at `match_rate` (counted on the fly only if the rate is not the one they were made
    /// with).
    pub fn matched(&self, match_rate: f64) -> usize {
        let limit = match_limit(match_rate);
        if limit == self.limit {
            return self.matched;
        }
        self.iter().filter(|d| matches(d, limit)).count()
    }

    fn in_base(&self, d: &Digest) -> bool {
        self.base.binary_search(d).is_ok()
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.added.contains(d) || (self.in_base(d) && !self.removed.contains(d))
    }

    /// Adds a digest; false when it already was a member.
    pub fn insert(&mut self, d: Digest) -> bool {
        // Back into `base` if it was removed since the merge, else new to `added`.
        if !self.removed.remove(&d) && (self.in_base(&d) || !self.added.insert(d)) {
            return false;
        }
        if matches(&d, self.limit) {
            self.matched += 1;
        }
        true
    }

    /// Removes a digest; false when it was not a member.
    pub fn remove(&mut self, d: &Digest) -> bool {
        if !self.added.remove(d) && (!self.in_base(d) || !self.removed.insert(*d)) {
            return false;
        }
        if matches(d, self.limit) {
            self.matched -= 1;
        }
        true
    }

    fn pending(&self) -> usize {
        self.added.len() + self.removed.len()
    }

    fn pending_room(&self) -> usize {
        (self.base.len() / 8).clamp(MIN_PENDING, MAX_PENDING)
    }

    /// Merges the pending changes once they are many.
    pub fn settle(&mut self) {
        if self.pending() > self.pending_room() {
            self.compact();
        }
    }

    /// Merges the pending changes into `base`, in place.
    fn compact(&mut self) {
        if !self.removed.is_empty() {
            let removed: Vec<Digest> = std::mem::take(&mut self.removed).into_iter().collect();
            retain_absent(&mut self.base, &removed);
        }
        if !self.added.is_empty() {
            let added: Vec<Digest> = std::mem::take(&mut self.added).into_iter().collect();
            merge_into(&mut self.base, &added);
        }
    }

    /// How many of `inc` (ascending, distinct) are members, and how many of those match.
    pub fn overlap(&self, inc: &[Digest]) -> (usize, usize) {
        let count = |it: &mut dyn Iterator<Item = &Digest>| {
            it.fold((0, 0), |(n, m), d| {
                (n + 1, m + matches(d, self.limit) as usize)
            })
        };
        if self.pending() == 0 && inc.len() > self.base.len() / 16 {
            // Comparable sizes: one merge pass beats a search per digest.
            return count(&mut Intersect::new(&self.base, inc));
        }
        count(&mut inc.iter().filter(|d| self.contains(d)))
    }

    /// APPEND: adds `inc` (ascending, distinct).
    pub fn append(&mut self, inc: &[Digest]) {
        if self.pending() + inc.len() <= self.pending_room() {
            for d in inc {
                self.insert(*d);
            }
            return self.settle();
        }
        self.compact();
        let new: Vec<Digest> = Difference::new(inc, &self.base).copied().collect();
        self.matched += count_matched(&new, self.limit);
        merge_into(&mut self.base, &new);
    }

    /// REMOVE: removes `inc` (ascending, distinct).
    pub fn remove_all(&mut self, inc: &[Digest]) {
        if self.pending() + inc.len() <= self.pending_room() {
            for d in inc {
                self.remove(d);
            }
            return self.settle();
        }
        self.compact();
        retain_absent(&mut self.base, inc);
        self.matched = count_matched(&self.base, self.limit);
    }

    /// REPLACE: the members become `inc` (ascending, distinct).
    pub fn replace(&mut self, inc: Vec<Digest>) {
        let limit = self.limit;
        *self = Members {
            matched: count_matched(&inc, limit),
            base: inc,
            limit,
            ..Default::default()
        };
    }

    /// All members, ascending.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            base: self.base.iter().peekable(),
            added: self.added.iter().peekable(),
            removed: self.removed.iter().peekable(),
        }
    }
}

/// Drops from `base` (ascending) every digest in `gone` (ascending), in place.
fn retain_absent(base: &mut Vec<Digest>, gone: &[Digest]) {
    let mut g = gone.iter().peekable();
    base.retain(|d| {
        while g.next_if(|r| *r < d).is_some() {}
        g.next_if(|r| *r == d).is_none()
    });
}

/// Merges `add` (ascending, none in `base`) into `base` (ascending), in place from the back.
fn merge_into(base: &mut Vec<Digest>, add: &[Digest]) {
    let n = base.len();
    base.reserve_exact(add.len());
    base.resize(n + add.len(), [0; 32]);
    let (mut i, mut j) = (n, add.len());
    for k in (0..base.len()).rev() {
        if j == 0 {
            break;
        }
        if i > 0 && base[i - 1] > add[j - 1] {
            base[k] = base[i - 1];
            i -= 1;
        } else {
            base[k] = add[j - 1];
            j -= 1;
        }
    }
}

/// Digests in both ascending slices.
struct Intersect<'a> {
    a: &'a [Digest],
    b: &'a [Digest],
}

impl<'a> Intersect<'a> {
    fn new(a: &'a [Digest], b: &'a [Digest]) -> Self {
        Intersect { a, b }
    }
}

impl<'a> Iterator for Intersect<'a> {
    type Item = &'a Digest;
    fn next(&mut self) -> Option<&'a Digest> {
        while let (Some(x), Some(y)) = (self.a.first(), self.b.first()) {
            match x.cmp(y) {
                std::cmp::Ordering::Less => self.a = &self.a[1..],
                std::cmp::Ordering::Greater => self.b = &self.b[1..],
                std::cmp::Ordering::Equal => {
                    self.a = &self.a[1..];
                    self.b = &self.b[1..];
                    return Some(x);
                }
            }
        }
        None
    }
}

/// Digests of the first ascending slice that are not in the second.
struct Difference<'a> {
    a: std::slice::Iter<'a, Digest>,
    b: Peekable<std::slice::Iter<'a, Digest>>,
}

impl<'a> Difference<'a> {
    fn new(a: &'a [Digest], b: &'a [Digest]) -> Self {
        Difference {
            a: a.iter(),
            b: b.iter().peekable(),
        }
    }
}

impl<'a> Iterator for Difference<'a> {
    type Item = &'a Digest;
    fn next(&mut self) -> Option<&'a Digest> {
        for x in self.a.by_ref() {
            while self.b.next_if(|y| *y < x).is_some() {}
            if self.b.peek() != Some(&x) {
                return Some(x);
            }
        }
        None
    }
}

/// The members in ascending order: `base` without `removed`, merged with `added`.
pub struct Iter<'a> {
    base: Peekable<std::slice::Iter<'a, Digest>>,
    added: Peekable<std::collections::btree_set::Iter<'a, Digest>>,
    removed: Peekable<std::collections::btree_set::Iter<'a, Digest>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Digest;
    fn next(&mut self) -> Option<&'a Digest> {
        loop {
            let b = match (self.base.peek(), self.added.peek()) {
                (Some(b), Some(a)) if a < b => return self.added.next(),
                (Some(_), _) => self.base.next()?,
                (None, _) => return self.added.next(),
            };
            while self.removed.next_if(|r| *r < b).is_some() {}
            if self.removed.next_if(|r| *r == b).is_none() {
                return Some(b);
            }
        }
    }
}

#[cfg(test)]
#[path = "members_tests.rs"]
mod tests;

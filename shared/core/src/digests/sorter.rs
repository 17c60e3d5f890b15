//! External sort of a cohort's digests: they are collected up to the spill's sort buffer, each full buffer
//! is sorted (on every core) and written as a run, and the runs are merged at the end. Under the buffer
//! nothing touches the disk.

use std::io;

use super::merge::merge_runs;
use super::sorted::{Sorted, SortedWriter, Spill};
use super::{Digest, DigestSet};

/// Runs merged at once (and files open while sorting).
const MAX_RUNS: usize = 64;

pub struct Sorter {
    spill: Spill,
    threads: usize,
    buf: Vec<Digest>,
    runs: Vec<Sorted>,
    /// Duplicates dropped inside runs.
    dups: u64,
}

impl Sorter {
    pub fn new(spill: &Spill, threads: usize) -> Sorter {
        Sorter {
            spill: spill.clone(),
            threads,
            buf: Vec::new(),
            runs: Vec::new(),
            dups: 0,
        }
    }

    pub fn push(&mut self, d: Digest) -> io::Result<()> {
        if self.buf.len() == self.buf.capacity() {
            self.grow()?;
        }
        self.buf.push(d);
        Ok(())
    }

    /// `push` of each, copied in blocks as the buffer allows (a parallel reader hands over whole chunks).
    pub fn extend(&mut self, mut ds: &[Digest]) -> io::Result<()> {
        while !ds.is_empty() {
            if self.buf.len() == self.buf.capacity() {
                self.grow()?;
            }
            let room = (self.buf.capacity() - self.buf.len()).min(ds.len());
            self.buf.extend_from_slice(&ds[..room]);
            ds = &ds[room..];
        }
        Ok(())
    }

    /// Doubles the buffer up to the sort buffer (never past it: `Vec`'s own growth could double a nearly
    /// full budget), and writes a run when it is full.
    fn grow(&mut self) -> io::Result<()> {
        let max = self.spill.sort_buffer.max(1);
        if self.buf.len() >= max {
            return self.write_run();
        }
        let want = (self.buf.capacity() * 2).max(4096).min(max);
        self.buf.reserve_exact(want - self.buf.len());
        Ok(())
    }

    fn write_run(&mut self) -> io::Result<()> {
        let full = std::mem::take(&mut self.buf);
        let (set, dups) = DigestSet::from_unsorted_par(full, self.threads);
        self.dups += dups;
        let mut to_disk = self.spill.clone();
        to_disk.list_max = 0;
        self.runs.push(SortedWriter::to_disk(&to_disk, &set)?);
        if self.runs.len() >= MAX_RUNS {
            // Each run holds a file open: merge them into one before there are too many.
            let (one, across) = merge_runs(std::mem::take(&mut self.runs), &to_disk)?;
            self.dups += across;
            self.runs.push(one);
        }
        // The buffer is reused for the next run.
        let mut again = set.into_vec();
        again.clear();
        self.buf = again;
        Ok(())
    }

    /// The sorted, duplicate-free list and how many duplicates were dropped.
    pub fn finish(mut self) -> io::Result<(Sorted, u64)> {
        if self.runs.is_empty() {
            let (set, dups) =
                DigestSet::from_unsorted_par(std::mem::take(&mut self.buf), self.threads);
            return Ok((SortedWriter::from_set(&self.spill, set)?, dups));
        }
        if !self.buf.is_empty() {
            self.write_run()?;
        }
        // The buffer is no longer needed while merging.
        self.buf = Vec::new();
        let (list, across) = merge_runs(std::mem::take(&mut self.runs), &self.spill)?;
        Ok((list, self.dups + across))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_sorts_equal_the_in_memory_sort() {
        let v: Vec<Digest> = (0u32..50_000)
            .map(|i| crate::identifiers::sha256_for_bench(&(i % 37_000).to_le_bytes()))
            .collect();
        let (want, want_dups) = DigestSet::from_unsorted(v.clone());
        let dir = tempfile::tempdir().unwrap();
        for (sort_buffer, list_max) in [
            (usize::MAX, usize::MAX),
            (5_000, 1_000),
            (700, 1),
            (50_000, 10),
        ] {
            let spill = Spill {
                dir: dir.path().to_path_buf(),
                sort_buffer,
                list_max,
            };
            let mut s = Sorter::new(&spill, 2);
            s.extend(&v[..20_000]).unwrap();
            for d in &v[20_000..] {
                s.push(*d).unwrap();
            }
            let (got, dups) = s.finish().unwrap();
            assert_eq!(dups, want_dups, "{sort_buffer}/{list_max}");
            assert_eq!(got.on_disk(), want.len() > list_max);
            assert_eq!(got.to_set().unwrap(), want);
        }
        drop(dir);
    }

    #[test]
    fn spilled_files_are_removed_with_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill {
            dir: dir.path().to_path_buf(),
            sort_buffer: 100,
            list_max: 10,
        };
        let mut s = Sorter::new(&spill, 1);
        for i in 0u32..1_000 {
            s.push(crate::identifiers::sha256_for_bench(&i.to_le_bytes()))
                .unwrap();
        }
        let (list, _) = s.finish().unwrap();
        // The runs are gone after the merge; the merged list is the only file.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(list);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

//! Sorted, duplicate-free digest lists that live in memory while small and in a file of raw 32-byte digests
//! (in the work dir, Lambda's `/tmp`) once over the memory budget, so a run's memory does not grow with the
//! cohort. Lists are read by streaming or by index range (a TikTok batch); the file goes with the last clone.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use tempfile::TempPath;

use super::{Digest, DigestSet};

/// A stream of digests read from a list (or merged from several).
pub type DigestIter = Box<dyn Iterator<Item = io::Result<Digest>> + Send>;

const IO_BUF: usize = 256 * 1024;

/// How much of a run's digests may be in memory, and where the rest goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spill {
    pub dir: PathBuf,
    /// The sorter's buffer, in digests: beyond it, sorted runs go to disk and are merged.
    pub sort_buffer: usize,
    /// The most digests one list keeps in memory; a larger one is written to a file.
    pub list_max: usize,
}

impl Spill {
    /// A run holds the sorter's buffer while reading, and afterwards at most six lists (cohort, base,
    /// uncertain, adds, removes, a commit's result): the budget is split so neither phase passes it.
    pub fn from_budget(budget_bytes: u64, dir: PathBuf) -> Spill {
        let digests = (budget_bytes / 32).max(12) as usize;
        Spill {
            dir,
            sort_buffer: digests / 2,
            list_max: digests / 6,
        }
    }

    /// Everything in memory (tests and tools that hold small sets).
    pub fn never() -> Spill {
        Spill {
            dir: std::env::temp_dir(),
            sort_buffer: usize::MAX,
            list_max: usize::MAX,
        }
    }
}

impl Default for Spill {
    /// 512 MB of digests, in the system temp dir.
    fn default() -> Spill {
        Spill::from_budget(512 << 20, std::env::temp_dir())
    }
}

#[derive(Clone)]
pub struct Sorted(Repr);

#[derive(Clone)]
enum Repr {
    Mem(Arc<Vec<Digest>>),
    Disk(Arc<DiskList>),
}

struct DiskList {
    path: TempPath,
    file: File,
    len: usize,
}

impl Sorted {
    pub fn empty() -> Sorted {
        Sorted(Repr::Mem(Arc::new(Vec::new())))
    }

    pub fn from_set(set: DigestSet) -> Sorted {
        Sorted(Repr::Mem(Arc::new(set.into_vec())))
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Mem(v) => v.len(),
            Repr::Disk(d) => d.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn on_disk(&self) -> bool {
        matches!(self.0, Repr::Disk(_))
    }

    /// The digests at `r` (a batch); out of bounds is an error.
    pub fn range(&self, r: Range<usize>) -> io::Result<Vec<Digest>> {
        if r.start > r.end || r.end > self.len() {
            return Err(io::Error::other(format!(
                "range {r:?} outside a list of {}",
                self.len()
            )));
        }
        match &self.0 {
            Repr::Mem(v) => Ok(v[r].to_vec()),
            Repr::Disk(d) => {
                let mut bytes = vec![0u8; r.len() * 32];
                d.file.read_exact_at(&mut bytes, r.start as u64 * 32)?;
                Ok(bytes
                    .chunks_exact(32)
                    .map(|c| {
                        let mut a = [0u8; 32];
                        a.copy_from_slice(c);
                        Digest(a)
                    })
                    .collect())
            }
        }
    }

    /// Every digest, in order.
    pub fn iter(&self) -> io::Result<DigestIter> {
        self.iter_ranges(std::slice::from_ref(&(0..self.len())))
    }

    /// The digests of increasing, non-overlapping `ranges`, in order (so the stream is sorted).
    pub fn iter_ranges(&self, ranges: &[Range<usize>]) -> io::Result<DigestIter> {
        let mut rs: Vec<Range<usize>> = ranges.iter().filter(|r| !r.is_empty()).cloned().collect();
        if rs.windows(2).any(|w| w[0].end > w[1].start) || rs.iter().any(|r| r.end > self.len()) {
            return Err(io::Error::other("ranges not increasing or out of bounds"));
        }
        rs.reverse();
        match &self.0 {
            Repr::Mem(v) => Ok(Box::new(MemIter {
                v: v.clone(),
                ranges: rs,
                at: 0..0,
            })),
            Repr::Disk(d) => Ok(Box::new(DiskIter::new(File::open(&d.path)?, rs))),
        }
    }

    /// The whole list in memory (small lists, tests and tools).
    pub fn to_set(&self) -> io::Result<DigestSet> {
        let v = self.range(0..self.len())?;
        DigestSet::from_sorted_unique(v).map_err(io::Error::other)
    }
}

impl std::fmt::Debug for Sorted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = if self.on_disk() { "disk" } else { "memory" };
        write!(f, "Sorted({} digests in {place})", self.len())
    }
}

impl PartialEq for Sorted {
    /// Same digests (an unreadable list equals nothing).
    fn eq(&self, other: &Sorted) -> bool {
        if self.len() != other.len() {
            return false;
        }
        let (Ok(a), Ok(b)) = (self.iter(), other.iter()) else {
            return false;
        };
        a.zip(b)
            .all(|(x, y)| matches!((x, y), (Ok(x), Ok(y)) if x == y))
    }
}

struct MemIter {
    v: Arc<Vec<Digest>>,
    /// Still to visit, last first.
    ranges: Vec<Range<usize>>,
    at: Range<usize>,
}

impl Iterator for MemIter {
    type Item = io::Result<Digest>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(i) = self.at.next() {
                return Some(Ok(self.v[i]));
            }
            self.at = self.ranges.pop()?;
        }
    }
}

/// Reads blocks of digests with `pread` (no per-digest reader calls).
struct DiskIter {
    file: File,
    block: Vec<u8>,
    /// The index of the block's first digest, and how many it holds.
    block_start: usize,
    block_len: usize,
    ranges: Vec<Range<usize>>,
    at: Range<usize>,
}

const BLOCK: usize = 8192;

impl DiskIter {
    fn new(file: File, ranges: Vec<Range<usize>>) -> DiskIter {
        DiskIter {
            file,
            block: vec![0u8; BLOCK * 32],
            block_start: 0,
            block_len: 0,
            ranges,
            at: 0..0,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let n = self.at.len().min(BLOCK);
        self.file
            .read_exact_at(&mut self.block[..n * 32], self.at.start as u64 * 32)?;
        self.block_start = self.at.start;
        self.block_len = n;
        Ok(())
    }
}

impl Iterator for DiskIter {
    type Item = io::Result<Digest>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.at.is_empty() {
            self.at = self.ranges.pop()?;
        }
        let i = self.at.start;
        if (i < self.block_start || i >= self.block_start + self.block_len)
            && let Err(e) = self.fill()
        {
            self.at = 0..0;
            self.ranges.clear();
            return Some(Err(e));
        }
        let off = (i - self.block_start) * 32;
        let mut a = [0u8; 32];
        a.copy_from_slice(&self.block[off..off + 32]);
        self.at.start += 1;
        Some(Ok(Digest(a)))
    }
}

/// Builds a list from strictly increasing digests: in memory up to `list_max`, then in a file.
pub struct SortedWriter {
    spill: Spill,
    mem: Vec<Digest>,
    disk: Option<(BufWriter<File>, TempPath)>,
    len: usize,
    last: Option<Digest>,
}

impl SortedWriter {
    pub fn new(spill: &Spill) -> SortedWriter {
        SortedWriter {
            spill: spill.clone(),
            mem: Vec::new(),
            disk: None,
            len: 0,
            last: None,
        }
    }

    pub fn push(&mut self, d: Digest) -> io::Result<()> {
        if self.last.is_some_and(|l| l >= d) {
            return Err(io::Error::other("digests not strictly increasing"));
        }
        self.last = Some(d);
        self.len += 1;
        if self.disk.is_none() && self.mem.len() >= self.spill.list_max {
            self.move_to_disk()?;
        }
        match &mut self.disk {
            Some((w, _)) => w.write_all(&d.0),
            None => {
                self.mem.push(d);
                Ok(())
            }
        }
    }

    fn move_to_disk(&mut self) -> io::Result<()> {
        std::fs::create_dir_all(&self.spill.dir)?;
        let (file, path) = tempfile::Builder::new()
            .prefix("digests-")
            .tempfile_in(&self.spill.dir)?
            .into_parts();
        let mut w = BufWriter::with_capacity(IO_BUF, file);
        for d in std::mem::take(&mut self.mem) {
            w.write_all(&d.0)?;
        }
        self.disk = Some((w, path));
        Ok(())
    }

    pub fn finish(self) -> io::Result<Sorted> {
        match self.disk {
            None => Ok(Sorted(Repr::Mem(Arc::new(self.mem)))),
            Some((w, path)) => {
                let mut file = w.into_inner().map_err(|e| e.into_error())?;
                file.flush()?;
                file.seek(SeekFrom::Start(0))?;
                Ok(Sorted(Repr::Disk(Arc::new(DiskList {
                    path,
                    file,
                    len: self.len,
                }))))
            }
        }
    }

    /// A whole sorted set at once: in memory up to `list_max`, else in a file.
    pub fn from_set(spill: &Spill, set: DigestSet) -> io::Result<Sorted> {
        if set.len() <= spill.list_max {
            return Ok(Sorted::from_set(set));
        }
        SortedWriter::to_disk(spill, &set)
    }

    /// A set written to a file in large blocks. It is sorted and unique by construction: no digest is
    /// compared again.
    pub fn to_disk(spill: &Spill, set: &DigestSet) -> io::Result<Sorted> {
        let mut w = SortedWriter::new(spill);
        w.move_to_disk()?;
        let Some((file, _)) = &mut w.disk else {
            return Err(io::Error::other("spill file not opened"));
        };
        let mut block = Vec::with_capacity(IO_BUF);
        for chunk in set.as_slice().chunks(IO_BUF / 32) {
            block.clear();
            for d in chunk {
                block.extend_from_slice(&d.0);
            }
            file.write_all(&block)?;
        }
        w.len = set.len();
        w.last = set.as_slice().last().copied();
        w.finish()
    }

    /// Writes a sorted stream to a list.
    pub fn collect(spill: &Spill, it: DigestIter) -> io::Result<Sorted> {
        let mut w = SortedWriter::new(spill);
        for d in it {
            w.push(d?)?;
        }
        w.finish()
    }
}

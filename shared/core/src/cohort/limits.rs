//! What the cohort reader accepts at most, and the `Read` wrapper that enforces the byte bounds.
//!
//! Memory does not grow with the file's size (records are parsed in bounded memory, see `records.rs`), but
//! each valid row costs a 32-byte digest until the set is deduplicated, and every byte costs time in a
//! 15-minute Lambda: a few MB of gzip that expand to tens of GB would exhaust both. So the CSV bytes are
//! bounded absolutely and, for gzip, relative to the compressed bytes read.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: u64 = 1 << 30;

/// The ratio is checked only past this many decompressed bytes: a tiny file (a header and a few blank
/// lines) can compress far better than 200x and is harmless.
pub const RATIO_GRACE_BYTES: u64 = 4 * MIB as u64;

use crate::digests::Spill;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderLimits {
    /// A data record with more bytes than this (as in the file: quotes, delimiters and its line break
    /// included) is skipped as `malformed_row` without being held in memory. 64 KiB: an Amplitude row is an
    /// id, a user id and a few properties (~100 B); 10,000 short columns still fit.
    pub max_record_bytes: usize,
    /// The header row is refused above this (a file whose first line is MBs long is not a cohort export).
    pub max_header_bytes: usize,
    /// CSV bytes read at most (after gunzip; a plain file's own bytes). 16 GiB: twice the ~7.5 GB of the
    /// largest cohort the biggest runner holds (~75M users at ~100 B per row).
    pub max_decompressed_bytes: u64,
    /// gzip only: decompressed bytes per compressed byte read at most, checked once past
    /// `RATIO_GRACE_BYTES` (4 MiB) of output. Cohort CSVs of distinct ids
    /// compress 2.5-4x; deflate's ceiling is ~1,030x (reached by repeated bytes, i.e. a bomb). 200x leaves a
    /// 50x margin for real files and caps what a small file may cost at 200 times its size.
    pub max_compression_ratio: u64,
    /// Threads that parse, normalize, hash and sort (0: every core the process has; 1: one thread, no
    /// chunking). The counts and the set are the same for every value.
    pub threads: usize,
    /// Bytes per chunk handed to a parsing thread (cut at a record boundary). Each thread holds about two.
    pub chunk_bytes: usize,
    /// How many digests stay in memory, and the work dir the rest is sorted in (the whole run's lists use
    /// it too).
    pub spill: Spill,
}

impl Default for ReaderLimits {
    fn default() -> Self {
        ReaderLimits {
            max_record_bytes: 64 * KIB,
            max_header_bytes: MIB,
            max_decompressed_bytes: 16 * GIB,
            max_compression_ratio: 200,
            threads: 0,
            chunk_bytes: MIB,
            spill: Spill::default(),
        }
    }
}

impl ReaderLimits {
    /// `threads`, with 0 resolved to the cores available (Lambda: its vCPUs).
    pub fn resolved_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Why the bytes were cut off. Travels inside an `io::Error` from the wrapper to the reader.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SizeLimit {
    #[error(
        "the file's CSV is over {} MiB (the reader's max_decompressed_bytes): refused before reading it all",
        limit / MIB as u64
    )]
    Decompressed { limit: u64 },
    #[error(
        "the gzip expands more than {ratio}x ({} MiB from {} KiB compressed; the reader's \
         max_compression_ratio): refused as a likely gzip bomb",
        decompressed / MIB as u64,
        compressed / KIB as u64
    )]
    Ratio {
        ratio: u64,
        decompressed: u64,
        compressed: u64,
    },
}

/// Counts the bytes read through it (the compressed side of a gzip), for `Bounded`'s ratio.
pub(crate) struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R> Counted<R> {
    pub fn new(inner: R) -> (Self, Arc<AtomicU64>) {
        let count = Arc::new(AtomicU64::new(0));
        (
            Counted {
                inner,
                count: Arc::clone(&count),
            },
            count,
        )
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Fails the read once the bytes through it pass `max`, or (with `compressed`) pass `ratio` times the
/// compressed bytes read so far. The compressed side is read ahead through a buffer, so the ratio seen is
/// never above the true one: a genuine file is not refused for read-ahead.
pub(crate) struct Bounded<R> {
    inner: R,
    read: u64,
    max: u64,
    ratio: u64,
    compressed: Option<Arc<AtomicU64>>,
}

impl<R> Bounded<R> {
    pub fn new(inner: R, limits: &ReaderLimits, compressed: Option<Arc<AtomicU64>>) -> Self {
        Bounded {
            inner,
            read: 0,
            max: limits.max_decompressed_bytes,
            ratio: limits.max_compression_ratio,
            compressed,
        }
    }

    fn check(&self) -> Result<(), SizeLimit> {
        if self.read > self.max {
            return Err(SizeLimit::Decompressed { limit: self.max });
        }
        if let Some(c) = &self.compressed {
            let compressed = c.load(Ordering::Relaxed);
            if self.read > RATIO_GRACE_BYTES && self.read > self.ratio.saturating_mul(compressed) {
                return Err(SizeLimit::Ratio {
                    ratio: self.ratio,
                    decompressed: self.read,
                    compressed,
                });
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Never hand out more than one byte past the cap, so the error comes before the bytes are used.
        let room = self.max.saturating_sub(self.read).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        self.check()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(n)
    }
}

/// The limit an `io::Error` from `Bounded` carries, if it is one.
pub(crate) fn size_limit(e: &io::Error) -> Option<SizeLimit> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<SizeLimit>())
        .cloned()
}

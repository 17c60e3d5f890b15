//! The read path on every core: the data records after the header are cut into chunks at record
//! boundaries, each chunk is parsed, normalized and hashed on a worker thread, and the parts are added up in
//! file order.
//!
//! Where to cut: after a `\n` where the quotes seen since the chunk's start are balanced. That guess is
//! cheap (memchr) but not always csv_core's view (a `"` inside an unquoted field is data), so it is checked:
//! a chunk's parse must end at a record boundary. One that ends inside a quoted field was cut inside a
//! record; from that chunk on, the file is read on one thread, as if never chunked. A stretch with no
//! boundary within `4 × chunk_bytes + max_record_bytes` (a huge record, bare-CR line ends) goes the same
//! way. So the rows, skips and digests are always the one-thread reader's.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Cursor, Read};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use super::error::ReadError;
use super::limits::ReaderLimits;
use super::reader::{BUF, ReadStats, scan_records};
use super::records::Records;
use crate::digests::{Digest, Sorter};
use crate::identifiers::Normalizer;

struct Chunk {
    index: usize,
    bytes: Vec<u8>,
}

/// A parsed chunk: its counts and digests, and whether it ended at a record boundary.
struct Parsed {
    index: usize,
    bytes: Vec<u8>,
    stats: ReadStats,
    digests: Vec<Digest>,
    clean: bool,
}

/// Digests and counts of the records of `input` (positioned after the header), on `threads` workers.
pub(crate) fn digest_records<R: Read>(
    input: BufReader<R>,
    col: usize,
    normalizer: &Normalizer,
    limits: &ReaderLimits,
    threads: usize,
    sink: &mut Sorter,
) -> Result<ReadStats, ReadError> {
    let chunk = limits.chunk_bytes.max(1);
    let splitter = Splitter {
        input,
        pending: Vec::new(),
        chunk,
        max_pending: chunk
            .saturating_mul(4)
            .saturating_add(limits.max_record_bytes),
        eof: false,
    };
    std::thread::scope(|scope| {
        let (work_tx, work_rx) = sync_channel::<Chunk>(threads);
        let work_rx = Arc::new(Mutex::new(work_rx));
        let (done_tx, done_rx) = channel::<Parsed>();
        for _ in 0..threads {
            let (rx, tx) = (work_rx.clone(), done_tx.clone());
            let limit = limits.max_record_bytes;
            scope.spawn(move || worker(&rx, &tx, col, normalizer, limit));
        }
        drop(done_tx);
        let mut c = Coordinator {
            work_tx,
            done_rx,
            in_flight: 0,
            max_in_flight: threads * 2,
            next_index: 0,
            stats: ReadStats::default(),
            sink,
            free: Vec::new(),
        };
        // Dropping the coordinator closes the work channel: the workers end, the scope joins them.
        c.run(splitter, col, normalizer, limits.max_record_bytes)
    })
}

fn worker(
    rx: &Mutex<Receiver<Chunk>>,
    tx: &std::sync::mpsc::Sender<Parsed>,
    col: usize,
    normalizer: &Normalizer,
    limit: usize,
) {
    loop {
        // The lock is held only while waiting for the next chunk.
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(chunk) = next else { return };
        let mut records = Records::new(chunk.bytes.as_slice(), limit);
        let mut stats = ReadStats::default();
        let mut digests = Vec::with_capacity(chunk.bytes.len() / 48);
        // A slice never fails to read.
        let clean = scan_records(&mut records, col, normalizer, &mut stats, &mut |d| {
            digests.push(d)
        })
        .unwrap_or(false);
        let parsed = Parsed {
            index: chunk.index,
            bytes: chunk.bytes,
            stats,
            digests,
            clean,
        };
        if tx.send(parsed).is_err() {
            return;
        }
    }
}

struct Coordinator<'s> {
    work_tx: SyncSender<Chunk>,
    done_rx: Receiver<Parsed>,
    in_flight: usize,
    max_in_flight: usize,
    next_index: usize,
    stats: ReadStats,
    sink: &'s mut Sorter,
    free: Vec<Vec<u8>>,
}

impl Coordinator<'_> {
    fn run<R: Read>(
        &mut self,
        mut splitter: Splitter<R>,
        col: usize,
        normalizer: &Normalizer,
        limit: usize,
    ) -> Result<ReadStats, ReadError> {
        let mut waiting: BTreeMap<usize, Parsed> = BTreeMap::new();
        let mut expect = 0;
        let mut splitting = true;
        loop {
            while splitting && self.in_flight < self.max_in_flight {
                match splitter.next_chunk(self.free.pop().unwrap_or_default())? {
                    Cut::Chunk(bytes) => self.send(bytes)?,
                    // No boundary in reach, or the end: what is left is read on this thread.
                    Cut::NoBoundary | Cut::End => splitting = false,
                }
            }
            if self.in_flight == 0 {
                break;
            }
            let parsed = self.recv()?;
            waiting.insert(parsed.index, parsed);
            while let Some(p) = waiting.remove(&expect) {
                expect += 1;
                if p.clean {
                    self.stats.add(&p.stats);
                    self.sink.extend(&p.digests)?;
                    self.free.push(p.bytes);
                    continue;
                }
                // Cut inside a record: this chunk and every later one are read again, in order, on one
                // thread, followed by what the splitter has not handed out.
                let mut later: Vec<Parsed> = std::mem::take(&mut waiting).into_values().collect();
                while self.in_flight > 0 {
                    later.push(self.recv()?);
                }
                later.sort_by_key(|l| l.index);
                let mut again = p.bytes;
                for l in later {
                    again.extend_from_slice(&l.bytes);
                }
                return self.sequential(again, splitter, col, normalizer, limit);
            }
        }
        self.sequential(Vec::new(), splitter, col, normalizer, limit)
    }

    fn send(&mut self, bytes: Vec<u8>) -> Result<(), ReadError> {
        let chunk = Chunk {
            index: self.next_index,
            bytes,
        };
        self.work_tx
            .send(chunk)
            .map_err(|_| io::Error::other("a reader thread ended early"))?;
        self.next_index += 1;
        self.in_flight += 1;
        Ok(())
    }

    fn recv(&mut self) -> Result<Parsed, ReadError> {
        let p = self
            .done_rx
            .recv()
            .map_err(|_| io::Error::other("a reader thread ended early"))?;
        self.in_flight -= 1;
        Ok(p)
    }

    /// `prefix`, the splitter's pending bytes and the rest of the input, as the one-thread reader reads them.
    fn sequential<R: Read>(
        &mut self,
        prefix: Vec<u8>,
        splitter: Splitter<R>,
        col: usize,
        normalizer: &Normalizer,
        limit: usize,
    ) -> Result<ReadStats, ReadError> {
        let rest = Cursor::new(prefix)
            .chain(Cursor::new(splitter.pending))
            .chain(splitter.input);
        let mut records = Records::new(BufReader::with_capacity(BUF, rest), limit);
        let mut stats = std::mem::take(&mut self.stats);
        let mut failed = None;
        let clean = scan_records(&mut records, col, normalizer, &mut stats, &mut |d| {
            if failed.is_none() {
                failed = self.sink.push(d).err();
            }
        })?;
        if let Some(e) = failed {
            return Err(ReadError::Io(e));
        }
        if !clean {
            return Err(ReadError::UnclosedQuote {
                row: stats.rows + 1,
            });
        }
        Ok(stats)
    }
}

enum Cut {
    Chunk(Vec<u8>),
    /// `max_pending` bytes without a boundary: the rest is not chunked.
    NoBoundary,
    /// Everything was handed out, except possibly a last part without a line break (left pending).
    End,
}

struct Splitter<R> {
    input: R,
    /// Read, not handed out yet; starts at a record boundary (as far as the cuts so far were right).
    pending: Vec<u8>,
    chunk: usize,
    max_pending: usize,
    eof: bool,
}

impl<R: Read> Splitter<R> {
    /// The next chunk of about `chunk` bytes, ending at a guessed record boundary; `out` is a free buffer.
    fn next_chunk(&mut self, mut out: Vec<u8>) -> io::Result<Cut> {
        loop {
            if self.pending.len() >= self.chunk || self.eof {
                if let Some(cut) = last_boundary(&self.pending) {
                    // The tail moves to `out`, which then becomes the pending buffer: the chunk is not copied.
                    out.clear();
                    out.extend_from_slice(&self.pending[cut..]);
                    std::mem::swap(&mut out, &mut self.pending);
                    out.truncate(cut);
                    return Ok(Cut::Chunk(out));
                }
                if self.eof {
                    return Ok(Cut::End);
                }
                if self.pending.len() >= self.max_pending {
                    return Ok(Cut::NoBoundary);
                }
            }
            self.fill()?;
        }
    }

    /// Appends up to `chunk` more bytes; sets `eof` at the end of the input. `read_to_end` reads into the
    /// spare capacity (a file's reads do not zero it first) and retries interrupted reads.
    fn fill(&mut self) -> io::Result<()> {
        let start = self.pending.len();
        // Exact growth: a stretch without a boundary costs `max_pending`, not the next power of two.
        self.pending.reserve_exact(self.chunk);
        let got = match (&mut self.input)
            .take(self.chunk as u64)
            .read_to_end(&mut self.pending)
        {
            Ok(n) => n,
            Err(e) => {
                self.pending.truncate(start);
                return Err(e);
            }
        };
        // Fewer bytes than asked: `read_to_end` stopped at the end of the input.
        if got < self.chunk {
            self.eof = true;
        }
        Ok(())
    }
}

/// Just past the last `\n` at which the quotes since the start are balanced (`None`: no such line break).
fn last_boundary(buf: &[u8]) -> Option<usize> {
    // Most exports quote nothing: then it is simply the last line break.
    if memchr::memchr(b'"', buf).is_none() {
        return memchr::memrchr(b'\n', buf).map(|i| i + 1);
    }
    let mut open = false;
    let mut last = None;
    for i in memchr::memchr2_iter(b'"', b'\n', buf) {
        if buf[i] == b'"' {
            open = !open;
        } else if !open {
            last = Some(i + 1);
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_follow_balanced_quotes() {
        assert_eq!(last_boundary(b"a\nb\nc"), Some(4));
        assert_eq!(last_boundary(b"\"a\nb\"\nc"), Some(6));
        assert_eq!(last_boundary(b"\"a\nb"), None);
        assert_eq!(last_boundary(b"abc"), None);
        // An escaped quote toggles twice.
        assert_eq!(last_boundary(b"\"a\"\"\n\"\nx"), Some(7));
    }
}

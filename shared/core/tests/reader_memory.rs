//! Issue 12: one 400 MB line took the old reader to 531 MB. A record over the limit must be counted and
//! skipped in bounded memory: measured here with a counting global allocator (the peak of live heap bytes
//! while reading), not with a clock. One test in this binary, so no other test's allocations mix in.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use audience_core::cohort::reader::{ReaderLimits, digest_reader_with};
use audience_core::{KeyKind, Normalizer, SkipReason};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

const MIB: usize = 1 << 20;

/// `head`, then `body_len` bytes of `fill`, then `tail`: made as it is read, so the test holds none of it.
struct Lazy {
    parts: [Vec<u8>; 2],
    body_left: usize,
    fill: u8,
    stage: usize,
    pos: usize,
}

impl Lazy {
    fn new(head: &[u8], fill: u8, body_len: usize, tail: &[u8]) -> Self {
        Lazy {
            parts: [head.to_vec(), tail.to_vec()],
            body_left: body_len,
            fill,
            stage: 0,
            pos: 0,
        }
    }
}

impl Read for Lazy {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.stage {
                0 | 2 => {
                    let part = &self.parts[self.stage / 2];
                    if self.pos < part.len() {
                        let n = buf.len().min(part.len() - self.pos);
                        buf[..n].copy_from_slice(&part[self.pos..self.pos + n]);
                        self.pos += n;
                        return Ok(n);
                    }
                    if self.stage == 2 {
                        return Ok(0);
                    }
                    self.stage = 1;
                    self.pos = 0;
                }
                _ => {
                    if self.body_left == 0 {
                        self.stage = 2;
                        continue;
                    }
                    let n = buf.len().min(self.body_left);
                    buf[..n].fill(self.fill);
                    self.body_left -= n;
                    return Ok(n);
                }
            }
        }
    }
}

/// Peak live heap bytes above the level before `f` ran.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// A gzip of a 1 MiB member of `fill`, to be repeated: a long line from a small compressed file.
fn gzip_member(fill: u8) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&vec![fill; MIB]).unwrap_or_default();
    e.finish().unwrap_or_default()
}

#[test]
fn a_long_record_is_counted_and_skipped_in_bounded_memory() {
    let email = Normalizer::new(KeyKind::Email, None).expect("normalizer");
    // 64 MiB in one record whose identifier is valid (the notes column makes it long), between good rows.
    let head = b"email,notes\na@b.co,x\nc@d.co,";
    let tail = b"\ne@f.co,y\n";
    let plain = Lazy::new(head, b'n', 64 * MIB, tail);
    let one = ReaderLimits {
        threads: 1,
        ..ReaderLimits::default()
    };
    let (read, peak) = peak_during(|| digest_reader_with(plain, false, "email", &email, &one));
    assert!(
        peak < 4 * MIB,
        "reading a 64 MiB record peaked at {peak} bytes"
    );
    let read = read.expect("read");
    assert_eq!(read.stats.rows, 3);
    // On two threads a constant is added, whatever the record's length: a stretch without a boundary (up to
    // 4 chunks and a record limit, plus the chunk being read) and the chunks in flight (2 per thread).
    let two = ReaderLimits {
        threads: 2,
        ..ReaderLimits::default()
    };
    let plain = Lazy::new(head, b'n', 64 * MIB, tail);
    let (read, peak) = peak_during(|| digest_reader_with(plain, false, "email", &email, &two));
    assert!(
        peak < 4 * MIB + 8 * two.chunk_bytes,
        "reading a 64 MiB record on two threads peaked at {peak} bytes"
    );
    let read = read.expect("read");
    assert_eq!(read.stats.rows, 3);
    assert_eq!(read.stats.valid, 2);
    assert_eq!(read.stats.skipped(SkipReason::MalformedRow), 1);

    // The same from gzip (64 concatenated members of 1 MiB, ~64 KiB compressed) with the ratio limit off,
    // as the 400 MB line in 400 KB: the record limit alone keeps memory small.
    let member = gzip_member(b'n');
    let mut gz = Vec::new();
    let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
    e.write_all(head).expect("gzip head");
    e.finish().expect("gzip head");
    for _ in 0..64 {
        gz.extend_from_slice(&member);
    }
    let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
    e.write_all(tail).expect("gzip tail");
    e.finish().expect("gzip tail");
    let no_ratio = ReaderLimits {
        max_compression_ratio: u64::MAX,
        threads: 1,
        ..ReaderLimits::default()
    };
    let gz_len = gz.len();
    let (read, peak) = peak_during(move || {
        digest_reader_with(std::io::Cursor::new(gz), true, "email", &email, &no_ratio)
    });
    let read = read.expect("read");
    assert_eq!(read.stats.valid, 2);
    assert_eq!(read.stats.skipped(SkipReason::MalformedRow), 1);
    // the compressed file itself was allocated before; `peak` counts only what reading it added
    assert!(
        peak < 4 * MIB,
        "reading a 64 MiB record from {gz_len} bytes of gzip peaked at {peak} bytes"
    );
}

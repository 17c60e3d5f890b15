//! Streaming cohort reader: (gzip) CSV → identifier column → digests, counting every skip by reason.
//! Reads over `std::io::Read`, never the whole file nor a whole record in memory (only the resulting
//! digests are kept), within `ReaderLimits`.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Chain, Cursor, Read};

use flate2::bufread::MultiGzDecoder;
use serde::Serialize;

pub use super::error::ReadError;
use super::limits::{Bounded, Counted};
pub use super::limits::{ReaderLimits, SizeLimit};
use super::records::{Next, Records};
use crate::digests::{Digest, Sorted, Sorter};
use crate::identifiers::{Normalizer, SkipReason, is_blank};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const UTF8_BOM: [u8; 3] = [0xef, 0xbb, 0xbf];
/// Read buffer. 64 KiB stays in the L2 cache between the copy into it and the parse: 256 KiB was 5 % slower
/// end to end on one core (BENCHMARKS.md).
pub(crate) const BUF: usize = 64 * 1024;
/// The compressed side's buffer: it reads ahead of the decoder, and the ratio limit lets through up to
/// `max_compression_ratio` times this much before it can see a bomb.
const GZ_BUF: usize = 64 * 1024;

/// Row counts of one read. Identity: `rows = valid + Σ skipped`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub rows: u64,
    pub valid: u64,
    skipped: [u64; SkipReason::ALL.len()],
}

impl ReadStats {
    /// Adds another part's counts (a chunk of a parallel read).
    pub(crate) fn add(&mut self, other: &ReadStats) {
        self.rows += other.rows;
        self.valid += other.valid;
        for (a, b) in self.skipped.iter_mut().zip(other.skipped) {
            *a += b;
        }
    }

    pub fn skip(&mut self, reason: SkipReason) {
        self.skipped[reason.index()] += 1;
    }

    pub fn skipped(&self, reason: SkipReason) -> u64 {
        self.skipped[reason.index()]
    }

    pub fn total_skipped(&self) -> u64 {
        self.skipped.iter().sum()
    }

    /// Only the reasons that occurred, by their code.
    pub fn skipped_map(&self) -> BTreeMap<String, u64> {
        SkipReason::ALL
            .into_iter()
            .filter(|r| self.skipped(*r) > 0)
            .map(|r| (r.as_str().to_string(), self.skipped(r)))
            .collect()
    }

    /// Share of rows that were `malformed_row` (0 for an empty file).
    pub fn malformed_ratio(&self) -> f64 {
        if self.rows == 0 {
            0.0
        } else {
            self.skipped(SkipReason::MalformedRow) as f64 / self.rows as f64
        }
    }
}

/// The outcome of reading a whole cohort file.
#[derive(Clone, Debug)]
pub struct CohortDigests {
    /// In memory, or on disk beyond `ReaderLimits::spill`.
    pub set: Sorted,
    pub stats: ReadStats,
    /// `valid - unique`: identical digests sent once.
    pub duplicates: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub rows: u64,
    pub valid: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub skipped: BTreeMap<String, u64>,
}

impl CohortDigests {
    pub fn counts(&self) -> Counts {
        Counts {
            rows: self.stats.rows,
            valid: self.stats.valid,
            unique: self.set.len() as u64,
            duplicates: self.duplicates,
            skipped: self.stats.skipped_map(),
        }
    }
}

/// A reader that is either plain or gzip-decoded, with a UTF-8 BOM removed.
pub type CohortInput = Chain<Cursor<Vec<u8>>, Box<dyn Read + Send + 'static>>;

/// Reads up to `n` bytes into a prefix (short reads from network streams are retried until EOF).
fn read_prefix<R: Read>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Opens a raw object stream with the default limits (see `open_maybe_gzip_with`).
pub fn open_maybe_gzip<R: Read + Send + 'static>(
    raw: R,
    name_says_gzip: bool,
) -> io::Result<CohortInput> {
    open_maybe_gzip_with(raw, name_says_gzip, &ReaderLimits::default())
}

/// Opens a raw object stream: gunzips when the name says `.gz` or the bytes start with the gzip magic
/// (concatenated gzip members are read whole), and drops a leading UTF-8 BOM. The bytes handed out are
/// bounded by `limits` (absolute, and for gzip by ratio): past them a read fails with a `SizeLimit`.
pub fn open_maybe_gzip_with<R: Read + Send + 'static>(
    mut raw: R,
    name_says_gzip: bool,
    limits: &ReaderLimits,
) -> io::Result<CohortInput> {
    let magic = read_prefix(&mut raw, 2)?;
    // A `.gz` name on plain bytes then fails with gzip's own "invalid header" error: a clear read error.
    let is_gzip = name_says_gzip || magic.as_slice() == GZIP_MAGIC;
    let rejoined = Cursor::new(magic).chain(raw);
    let mut decoded: Box<dyn Read + Send + 'static> = if is_gzip {
        // Counted under the buffer: the compressed count runs ahead of what was decoded, never behind.
        let (counted, compressed) = Counted::new(rejoined);
        let gz = MultiGzDecoder::new(BufReader::with_capacity(GZ_BUF, counted));
        Box::new(Bounded::new(gz, limits, Some(compressed)))
    } else {
        Box::new(Bounded::new(rejoined, limits, None))
    };
    let mut prefix = read_prefix(&mut decoded, 3)?;
    if prefix.as_slice() == UTF8_BOM {
        prefix.clear();
    }
    Ok(Cursor::new(prefix).chain(decoded))
}

/// Finds the identifier column: case-insensitive, blank-trimmed header match on `wanted`.
pub fn find_column(headers: &csv::ByteRecord, wanted: &str) -> Result<usize, ReadError> {
    let want = wanted.trim_matches(is_blank).to_lowercase();
    let names: Vec<String> = headers
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .trim_matches(is_blank)
                .to_string()
        })
        .collect();
    let positions: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, h)| h.to_lowercase() == want)
        .map(|(i, _)| i)
        .collect();
    match positions.len() {
        1 => Ok(positions[0]),
        0 => Err(ReadError::ColumnNotFound {
            wanted: wanted.to_string(),
            headers: names,
        }),
        _ => Err(ReadError::AmbiguousColumn {
            wanted: wanted.to_string(),
            positions,
        }),
    }
}

/// Streams every row's identifier through `normalizer` and hands each outcome to `sink`, with the default
/// limits. Returns the row statistics; a read error ends the scan (the caller must discard what it collected).
pub fn scan_cohort<R: Read>(
    input: R,
    column: &str,
    normalizer: &Normalizer,
    sink: impl FnMut(Digest),
) -> Result<ReadStats, ReadError> {
    scan_cohort_with(input, column, normalizer, &ReaderLimits::default(), sink)
}

/// `scan_cohort` with explicit limits: a record over `max_record_bytes` is `malformed_row` (never held in
/// memory), a quote open at end of file or a header over `max_header_bytes` is a `ReadError`. One thread
/// (`digest_cohort_with` uses `limits.threads`).
pub fn scan_cohort_with<R: Read>(
    input: R,
    column: &str,
    normalizer: &Normalizer,
    limits: &ReaderLimits,
    mut sink: impl FnMut(Digest),
) -> Result<ReadStats, ReadError> {
    let (mut records, col) = open_records(input, column, limits)?;
    let mut stats = ReadStats::default();
    if !scan_records(&mut records, col, normalizer, &mut stats, &mut sink)? {
        return Err(ReadError::UnclosedQuote {
            row: stats.rows + 1,
        });
    }
    Ok(stats)
}

/// The header read and the identifier column found; the records after it, at the data records' limit.
fn open_records<R: Read>(
    input: R,
    column: &str,
    limits: &ReaderLimits,
) -> Result<(Records<BufReader<R>>, usize), ReadError> {
    let mut records = Records::new(
        BufReader::with_capacity(BUF, input),
        limits.max_header_bytes,
    );
    let headers = read_header(&mut records, limits)?;
    let col = find_column(&headers, column)?;
    records.set_limit(limits.max_record_bytes);
    Ok((records, col))
}

/// Every record to the end of the input: each row counted in `stats`, each digest to `sink`. `Ok(false)`:
/// the input ended inside a quoted field (the caller decides whether that is an error: for a chunk of a
/// parallel read it means the chunk was not cut at a record boundary).
pub(crate) fn scan_records<R: io::BufRead>(
    records: &mut Records<R>,
    col: usize,
    normalizer: &Normalizer,
    stats: &mut ReadStats,
    sink: &mut impl FnMut(Digest),
) -> io::Result<bool> {
    // Holds at most `max_record_bytes`: pieces stop once a record is over the limit.
    let mut value = Vec::new();
    loop {
        value.clear();
        let rec = match records.next(|i, piece| {
            if i == col {
                value.extend_from_slice(piece);
            }
        })? {
            Next::Record(r) => r,
            Next::End => return Ok(true),
            Next::UnclosedQuote => return Ok(false),
        };
        stats.rows += 1;
        let outcome = if rec.too_long || rec.fields <= col {
            Err(SkipReason::MalformedRow)
        } else {
            normalizer.digest_field(&value)
        };
        match outcome {
            Ok(d) => {
                stats.valid += 1;
                sink(d);
            }
            Err(r) => stats.skip(r),
        }
    }
}

/// The first record, every field kept (bounded by `max_header_bytes`).
fn read_header<R: io::BufRead>(
    records: &mut Records<R>,
    limits: &ReaderLimits,
) -> Result<csv::ByteRecord, ReadError> {
    let mut headers = csv::ByteRecord::new();
    let mut cur = Vec::new();
    let next = records.next(|i, piece| {
        while headers.len() < i {
            headers.push_field(&cur);
            cur.clear();
        }
        cur.extend_from_slice(piece);
    })?;
    match next {
        Next::End => Err(ReadError::Empty),
        Next::UnclosedQuote => Err(ReadError::UnclosedQuote { row: 0 }),
        Next::Record(r) if r.too_long => Err(ReadError::HeaderTooLong {
            limit: limits.max_header_bytes,
        }),
        Next::Record(r) => {
            while headers.len() < r.fields {
                headers.push_field(&cur);
                cur.clear();
            }
            Ok(headers)
        }
    }
}

/// Reads a whole (already opened) cohort into a deduplicated sorted digest set.
pub fn digest_cohort<R: Read>(
    input: R,
    column: &str,
    normalizer: &Normalizer,
) -> Result<CohortDigests, ReadError> {
    digest_cohort_with(input, column, normalizer, &ReaderLimits::default())
}

/// `digest_cohort` within `limits`.
pub fn digest_cohort_with<R: Read>(
    input: R,
    column: &str,
    normalizer: &Normalizer,
    limits: &ReaderLimits,
) -> Result<CohortDigests, ReadError> {
    let threads = limits.resolved_threads();
    let mut sorter = Sorter::new(&limits.spill, threads);
    let stats = if threads > 1 {
        let (records, col) = open_records(input, column, limits)?;
        super::parallel::digest_records(
            records.into_inner(),
            col,
            normalizer,
            limits,
            threads,
            &mut sorter,
        )?
    } else {
        let mut failed = None;
        let stats = scan_cohort_with(input, column, normalizer, limits, |d| {
            if failed.is_none() {
                failed = sorter.push(d).err();
            }
        })?;
        if let Some(e) = failed {
            return Err(ReadError::Io(e));
        }
        stats
    };
    let (set, duplicates) = sorter.finish().map_err(ReadError::Io)?;
    Ok(CohortDigests {
        set,
        stats,
        duplicates,
    })
}

/// Opens (gunzip/BOM) and digests a byte source with the default limits (`ReaderLimits::default()`).
pub fn digest_reader<R: Read + Send + 'static>(
    raw: R,
    name_says_gzip: bool,
    column: &str,
    normalizer: &Normalizer,
) -> Result<CohortDigests, ReadError> {
    digest_reader_with(
        raw,
        name_says_gzip,
        column,
        normalizer,
        &ReaderLimits::default(),
    )
}

/// Opens (gunzip/BOM) and digests a byte source within `limits`; the engine and the CLI read through here.
pub fn digest_reader_with<R: Read + Send + 'static>(
    raw: R,
    name_says_gzip: bool,
    column: &str,
    normalizer: &Normalizer,
    limits: &ReaderLimits,
) -> Result<CohortDigests, ReadError> {
    let input = open_maybe_gzip_with(raw, name_says_gzip, limits)?;
    digest_cohort_with(input, column, normalizer, limits)
}

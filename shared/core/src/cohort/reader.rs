//! Streaming cohort reader: (gzip) CSV → identifier column → digests, counting every skip by reason.
//! Reads over `std::io::Read`, never the whole file in memory (only the resulting digests are kept).

use std::collections::BTreeMap;
use std::io::{self, BufReader, Chain, Cursor, Read};

use flate2::bufread::MultiGzDecoder;
use serde::Serialize;

use crate::digests::{Digest, DigestSet};
use crate::identifiers::{Normalizer, SkipReason, is_blank};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const UTF8_BOM: [u8; 3] = [0xef, 0xbb, 0xbf];
const BUF: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the file is empty: it has no header row")]
    Empty,
    #[error(
        "no column matches {wanted:?}; the file's headers are: {}",
        list_headers(headers)
    )]
    ColumnNotFound {
        wanted: String,
        headers: Vec<String>,
    },
    #[error("{} columns match {wanted:?} (columns {}); the file must have exactly one", positions.len(), list_positions(positions))]
    AmbiguousColumn {
        wanted: String,
        positions: Vec<usize>,
    },
    /// The file could not be read whole (I/O error, truncated or corrupt gzip): nothing read may be used.
    #[error("the file could not be read whole: {0}")]
    Io(#[from] io::Error),
}

/// An error names at most this many headers, each cut to this many characters: a file whose first line is
/// junk or one 10 MB line must still give a short error (it is logged and stored in the run's ledger, a
/// DynamoDB item of at most 400 KB).
const SHOWN_HEADERS: usize = 20;
const SHOWN_HEADER_CHARS: usize = 40;

fn list_headers(h: &[String]) -> String {
    if h.is_empty() {
        return "(none)".to_string();
    }
    let mut shown: Vec<String> = h
        .iter()
        .take(SHOWN_HEADERS)
        .map(|s| show_header(s))
        .collect();
    if h.len() > SHOWN_HEADERS {
        shown.push(format!("and {} more", h.len() - SHOWN_HEADERS));
    }
    shown.join(", ")
}

/// A "header" with an `@` or 7+ digits is a value (the file has no header row): never echoed, since error
/// messages are logged and stored and must not carry a raw identifier.
fn show_header(s: &str) -> String {
    if s.contains('@') || s.bytes().filter(u8::is_ascii_digit).count() >= 7 {
        return "<a value, not a header: is the header row missing?>".to_string();
    }
    let cut: String = s.chars().take(SHOWN_HEADER_CHARS).collect();
    if cut.len() < s.len() {
        format!("{cut:?}...")
    } else {
        format!("{s:?}")
    }
}

fn list_positions(p: &[usize]) -> String {
    p.iter()
        .map(|i| (i + 1).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn csv_to_io(e: csv::Error) -> ReadError {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => ReadError::Io(e),
        other => ReadError::Io(io::Error::other(format!("{other:?}"))),
    }
}

/// Row counts of one read. Identity: `rows = valid + Σ skipped`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub rows: u64,
    pub valid: u64,
    skipped: [u64; SkipReason::ALL.len()],
}

impl ReadStats {
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
    pub set: DigestSet,
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

/// Opens a raw object stream: gunzips when the name says `.gz` or the bytes start with the gzip magic
/// (concatenated gzip members are read whole), and drops a leading UTF-8 BOM.
pub fn open_maybe_gzip<R: Read + Send + 'static>(
    mut raw: R,
    name_says_gzip: bool,
) -> io::Result<CohortInput> {
    let magic = read_prefix(&mut raw, 2)?;
    // A `.gz` name on plain bytes then fails with gzip's own "invalid header" error: a clear read error.
    let is_gzip = name_says_gzip || magic.as_slice() == GZIP_MAGIC;
    let rejoined = Cursor::new(magic).chain(raw);
    let mut decoded: Box<dyn Read + Send + 'static> = if is_gzip {
        Box::new(MultiGzDecoder::new(BufReader::with_capacity(BUF, rejoined)))
    } else {
        Box::new(rejoined)
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

/// Streams every row's identifier through `normalizer` and hands each outcome to `sink`.
/// Returns the row statistics; a read error ends the scan (the caller must discard what it collected).
pub fn scan_cohort<R: Read>(
    input: R,
    column: &str,
    normalizer: &Normalizer,
    mut sink: impl FnMut(Digest),
) -> Result<ReadStats, ReadError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(BUF)
        .from_reader(input);
    let mut rec = csv::ByteRecord::new();
    if !rdr.read_byte_record(&mut rec).map_err(csv_to_io)? {
        return Err(ReadError::Empty);
    }
    let col = find_column(&rec, column)?;
    let mut stats = ReadStats::default();
    let mut ends_in_break = false;
    while rdr.read_byte_record(&mut rec).map_err(csv_to_io)? {
        stats.rows += 1;
        // A quote never closed swallows the rest of the file, line breaks included, into the last field of
        // the last record. The csv crate ends such a field at EOF without an error; caught below.
        ends_in_break = rec
            .get(rec.len().saturating_sub(1))
            .is_some_and(|f| matches!(f.last(), Some(b'\n' | b'\r')));
        let outcome = match rec.get(col) {
            Some(v) => normalizer.digest_field(v),
            None => Err(SkipReason::MalformedRow),
        };
        match outcome {
            Ok(d) => {
                stats.valid += 1;
                sink(d);
            }
            Err(r) => stats.skip(r),
        }
    }
    if ends_in_break {
        // Counting it as one malformed row would silently drop every row after the quote (and a sync would
        // remove those users): the file is refused whole.
        return Err(ReadError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a quoted value opened in row {} is never closed (unbalanced quote): the rest of the file \
                 would be read as one value",
                stats.rows
            ),
        )));
    }
    Ok(stats)
}

/// Reads a whole (already opened) cohort into a deduplicated sorted digest set.
pub fn digest_cohort<R: Read>(
    input: R,
    column: &str,
    normalizer: &Normalizer,
) -> Result<CohortDigests, ReadError> {
    let mut all = Vec::new();
    let stats = scan_cohort(input, column, normalizer, |d| all.push(d))?;
    let (set, duplicates) = DigestSet::from_unsorted(all);
    Ok(CohortDigests {
        set,
        stats,
        duplicates,
    })
}

/// Convenience for tests and tools: opens (gunzip/BOM) and digests a byte source.
pub fn digest_reader<R: Read + Send + 'static>(
    raw: R,
    name_says_gzip: bool,
    column: &str,
    normalizer: &Normalizer,
) -> Result<CohortDigests, ReadError> {
    let input = open_maybe_gzip(raw, name_says_gzip)?;
    digest_cohort(input, column, normalizer)
}

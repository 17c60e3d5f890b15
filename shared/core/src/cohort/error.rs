//! Why a cohort file could not be read. Messages are logged and stored in the run's ledger: short, and
//! never a raw identifier.

use std::io;

use super::limits::{SizeLimit, size_limit};

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
    /// A quote opened in data row `row` (0: the header) runs to the end of the file. Read leniently, every
    /// row after it would vanish into one value (and a sync would remove those users): refused whole.
    #[error(
        "a quoted value opened in {} is never closed (unbalanced quote): the rest of the file would be read \
         as one value",
        row_name(*row)
    )]
    UnclosedQuote { row: u64 },
    #[error(
        "the header row is over {} KiB (the reader's max_header_bytes): is this a CSV cohort export?",
        limit / 1024
    )]
    HeaderTooLong { limit: usize },
    /// Too many bytes, absolutely or for a gzip of its size: refused before memory or time runs out.
    #[error("{0}")]
    TooLarge(SizeLimit),
    /// The file could not be read whole (I/O error, truncated or corrupt gzip): nothing read may be used.
    #[error("the file could not be read whole: {0}")]
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        match size_limit(&e) {
            Some(limit) => ReadError::TooLarge(limit),
            None => ReadError::Io(e),
        }
    }
}

fn row_name(row: u64) -> String {
    if row == 0 {
        "the header row".to_string()
    } else {
        format!("row {row}")
    }
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

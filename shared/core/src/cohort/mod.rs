//! Cohort files: Amplitude's export naming and the streaming CSV reader.

mod error;
mod limits;
pub mod listing;
pub mod naming;
mod parallel;
pub mod reader;
mod records;
pub mod unmatched;

pub use naming::{
    DiffType, ExportName, KeyMismatch, NamingError, decode_s3_event_key, parse_export_key,
};
pub use reader::{
    CohortDigests, ReadError, ReadStats, ReaderLimits, SizeLimit, digest_cohort, open_maybe_gzip,
};

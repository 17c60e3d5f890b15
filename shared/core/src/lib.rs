//! Domain of audience-sync. The data path, one module per step:
//! cohort file (`cohort`) → identifiers (`identifiers`) → digests and their diff (`digests`) → preview
//! report (`report`). No AWS SDK and no HTTP here: those sit behind the traits in `ports`.

pub mod cohort;
pub mod digests;
pub mod identifiers;
pub mod model;
pub mod notify;
pub mod ports;
pub mod report;
pub mod sync;

pub use digests::{Diff, Digest, DigestSet, diff};
pub use identifiers::{KeyKind, Normalizer, RULE_VERSION, SkipReason};

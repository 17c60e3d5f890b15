//! The TikTok rules a sandbox enforces, each configurable and on by default (`Rules::default()` is how
//! TikTok behaves), and the messages a client can match to tell the causes of one code apart.

use serde::{Deserialize, Serialize};

/// Per-sandbox rule settings (`SandboxOptions::rules`, `--rules JSON`, `POST /_sandbox/rules`). Missing
/// fields take their defaults; a duration, size or count of 0 turns that rule off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Logical ms a customer-file audience is processing after a create or a file update.
    pub processing_ms: i64,
    /// Logical ms a new streaming audience refuses mappings.
    pub streaming_not_ready_ms: i64,
    /// Largest customer file accepted by `file/upload/`, in bytes.
    pub max_file_bytes: u64,
    /// Distinct file paths an audience may reference over its life.
    pub max_files_per_audience: usize,
    /// Logical ms an uploaded `file_path` stays usable.
    pub file_ttl_ms: i64,
    /// Logical ms without an edit after which an audience expires.
    pub audience_ttl_ms: i64,
    /// Requests per app in any sliding 60 s window (real time, like the per-second window).
    pub qpm: u32,
    /// Requests per advertiser (all apps together) in any sliding 60 s window.
    pub advertiser_qpm: u32,
}

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

impl Default for Rules {
    fn default() -> Self {
        Rules {
            processing_ms: 6 * HOUR_MS,
            streaming_not_ready_ms: 90_000,
            max_file_bytes: 50 * 1024 * 1024,
            max_files_per_audience: 500,
            file_ttl_ms: 7 * DAY_MS,
            audience_ttl_ms: 365 * DAY_MS,
            qpm: 600,
            advertiser_qpm: 600,
        }
    }
}

/// 40002 on an audience edit while TikTok processes the previous one (TikTok's return-code text).
pub const MSG_PROCESSING: &str =
    "The audience is currently being updated or under processing, please try again later";
/// 40002 on an edit that would leave fewer than 1,000 matched users (details follow after ": ").
pub const MSG_TOO_SMALL: &str = "The audience size is too small (fewer than 1000 matched users)";
/// 40002 on an edit of an expired audience (only `delete` is allowed).
pub const MSG_EXPIRED: &str = "The audience has expired and can only be deleted";
/// 40201 on a mapping to a streaming audience created moments ago.
pub const MSG_NOT_READY: &str = "The audience is not ready yet, please try again later";

/// Why TikTok refused an audience edit with 40002, read from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotEditable {
    Processing,
    TooSmall,
    Expired,
    Other,
}

/// Tells the 40002 causes apart by their message (TikTok uses one code for all of them).
pub fn not_editable_cause(message: &str) -> NotEditable {
    if message.starts_with(MSG_PROCESSING) {
        NotEditable::Processing
    } else if message.starts_with(MSG_TOO_SMALL) {
        NotEditable::TooSmall
    } else if message.starts_with(MSG_EXPIRED) {
        NotEditable::Expired
    } else {
        NotEditable::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_40002_messages_are_told_apart() {
        assert_eq!(not_editable_cause(MSG_PROCESSING), NotEditable::Processing);
        assert_eq!(
            not_editable_cause(&format!("{MSG_TOO_SMALL}: 12 after APPEND")),
            NotEditable::TooSmall
        );
        assert_eq!(not_editable_cause(MSG_EXPIRED), NotEditable::Expired);
        assert_eq!(
            not_editable_cause("The number of audiences has reached the limit"),
            NotEditable::Other
        );
    }

    #[test]
    fn rules_parse_partially_and_refuse_unknown_keys() {
        let r: Rules = serde_json::from_str(r#"{"processing_ms":0}"#).unwrap();
        assert_eq!(r.processing_ms, 0);
        assert_eq!(r.qpm, Rules::default().qpm);
        assert!(serde_json::from_str::<Rules>(r#"{"nope":1}"#).is_err());
    }
}

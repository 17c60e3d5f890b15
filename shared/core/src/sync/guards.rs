//! The guards a run passes before any TikTok call. Each refusal leaves the audience untouched and gives the
//! run a state and a reason.

use crate::cohort::ReadStats;
use crate::model::{RunState, WriteMode};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardSettings {
    /// Share of `malformed_row` rows above which the export is refused (default 1 %).
    pub max_malformed_ratio: f64,
    /// Share of the audience a run may remove without review (default 0.5).
    pub max_removal_ratio: f64,
    /// Customer-file audiences are created only from this many digests (default 1,000).
    pub min_create_size: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Proceed,
    Refuse { state: RunState, reason: String },
}

pub struct GuardInput<'a> {
    pub stats: &'a ReadStats,
    pub unique: u64,
    pub base_len: u64,
    pub removes: u64,
    pub write_mode: WriteMode,
    pub audience_exists: bool,
}

pub fn check(input: &GuardInput<'_>, s: &GuardSettings) -> Verdict {
    let malformed = input.stats.malformed_ratio();
    if malformed > s.max_malformed_ratio {
        return Verdict::Refuse {
            state: RunState::Failed,
            reason: format!(
                "{:.2} % of the export's rows are malformed (limit {:.2} %): the file looks broken \
                 (unbalanced quote, wrong delimiter or encoding); the audience was left unchanged",
                malformed * 100.0,
                s.max_malformed_ratio * 100.0
            ),
        };
    }
    if input.base_len > 0 {
        let ratio = input.removes as f64 / input.base_len as f64;
        if ratio > s.max_removal_ratio {
            return Verdict::Refuse {
                state: RunState::HeldForReview,
                reason: format!(
                    "this export would remove {} of the audience's {} users ({:.1} %, above the sync's \
                     max_removal_ratio of {:.1} %); raise max_removal_ratio on the sync to apply it",
                    input.removes,
                    input.base_len,
                    ratio * 100.0,
                    s.max_removal_ratio * 100.0
                ),
            };
        }
    }
    if input.write_mode == WriteMode::CustomerFile
        && !input.audience_exists
        && input.unique < s.min_create_size
    {
        return Verdict::Refuse {
            state: RunState::WaitingForMinimum,
            reason: format!(
                "the cohort has {} unique identifiers; a customer-file audience is created from {} \
                 (TikTok needs 1,000 matched users)",
                input.unique, s.min_create_size
            ),
        };
    }
    Verdict::Proceed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SkipReason;

    fn settings() -> GuardSettings {
        GuardSettings {
            max_malformed_ratio: 0.01,
            max_removal_ratio: 0.5,
            min_create_size: 1000,
        }
    }

    fn stats(rows: u64, malformed: u64) -> ReadStats {
        let mut s = ReadStats::default();
        s.rows = rows;
        s.valid = rows - malformed;
        for _ in 0..malformed {
            s.skip(SkipReason::MalformedRow);
        }
        s
    }

    fn input(stats: &ReadStats) -> GuardInput<'_> {
        GuardInput {
            stats,
            unique: 5000,
            base_len: 0,
            removes: 0,
            write_mode: WriteMode::CustomerFile,
            audience_exists: true,
        }
    }

    #[test]
    fn malformed_share() {
        let ok = stats(1000, 10);
        assert_eq!(check(&input(&ok), &settings()), Verdict::Proceed);
        let bad = stats(1000, 11);
        assert!(matches!(
            check(&input(&bad), &settings()),
            Verdict::Refuse {
                state: RunState::Failed,
                ..
            }
        ));
    }

    #[test]
    fn removal_ratio() {
        let s = stats(10, 0);
        let mut i = input(&s);
        i.base_len = 1000;
        i.removes = 500;
        assert_eq!(check(&i, &settings()), Verdict::Proceed);
        i.removes = 501;
        assert!(matches!(
            check(&i, &settings()),
            Verdict::Refuse {
                state: RunState::HeldForReview,
                ..
            }
        ));
    }

    #[test]
    fn minimum_only_for_new_customer_file_audiences() {
        let s = stats(10, 0);
        let mut i = input(&s);
        i.unique = 999;
        i.audience_exists = false;
        assert!(matches!(
            check(&i, &settings()),
            Verdict::Refuse {
                state: RunState::WaitingForMinimum,
                ..
            }
        ));
        i.audience_exists = true;
        assert_eq!(check(&i, &settings()), Verdict::Proceed);
        i.audience_exists = false;
        i.write_mode = WriteMode::Streaming;
        assert_eq!(check(&i, &settings()), Verdict::Proceed);
    }
}

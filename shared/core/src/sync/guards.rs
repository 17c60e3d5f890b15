//! The guards a run passes before any TikTok call. Each refusal leaves the audience untouched and gives the
//! run a state and a reason.

use crate::cohort::ReadStats;
use crate::model::{RunState, WriteMode};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GuardSettings {
    /// Share of `malformed_row` rows above which the export is refused (default 1 %).
    pub max_malformed_ratio: f64,
    /// Share of the audience a run may remove without review (default 0.5).
    pub max_removal_ratio: f64,
    /// Customer-file audiences are created only from this many digests (default 1,000).
    pub min_create_size: u64,
}

impl Default for GuardSettings {
    /// A new sync's guards: what a run applies when the user set nothing (the CLI and previews use these).
    fn default() -> Self {
        GuardSettings {
            max_malformed_ratio: crate::sync::engine::DEFAULT_MAX_MALFORMED_RATIO,
            max_removal_ratio: crate::model::DEFAULT_MAX_REMOVAL_RATIO,
            min_create_size: crate::model::DEFAULT_MIN_CREATE_SIZE,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Proceed,
    /// `guard`: which guard refused (`malformed_rows`, `no_usable_identifiers`, `max_removal_ratio`,
    /// `min_create_size`).
    Refuse {
        guard: &'static str,
        state: RunState,
        reason: String,
    },
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
            guard: "malformed_rows",
            state: RunState::Failed,
            reason: format!(
                "{:.2} % of the export's rows are malformed (limit {:.2} %): the file looks broken \
                 (unbalanced quote, wrong delimiter or encoding); the audience was left unchanged",
                malformed * 100.0,
                s.max_malformed_ratio * 100.0
            ),
        };
    }
    // Rows, but not one usable identifier (all MD5, phones without a region, the wrong column): the file
    // is wrong for this mapping, not a cohort that will grow; an existing audience must not be emptied.
    if input.stats.rows > 0 && input.unique == 0 {
        let reasons: Vec<String> = input
            .stats
            .skipped_map()
            .into_iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        return Verdict::Refuse {
            guard: "no_usable_identifiers",
            state: RunState::Failed,
            reason: format!(
                "none of the export's {} rows has a usable identifier for this mapping (skipped: {}); \
                 check the mapped property, the key type and (for phones) the default region; the audience \
                 was left unchanged",
                input.stats.rows,
                reasons.join(", ")
            ),
        };
    }
    if input.base_len > 0 {
        let ratio = input.removes as f64 / input.base_len as f64;
        if ratio > s.max_removal_ratio {
            return Verdict::Refuse {
                guard: "max_removal_ratio",
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
            guard: "min_create_size",
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
    fn rows_without_one_usable_identifier_fail_even_for_a_new_audience() {
        let mut s = ReadStats::default();
        s.rows = 50;
        for _ in 0..50 {
            s.skip(SkipReason::UnsupportedHash);
        }
        let mut i = input(&s);
        i.unique = 0;
        i.audience_exists = false;
        match check(&i, &settings()) {
            Verdict::Refuse {
                guard,
                state,
                reason,
            } => {
                assert_eq!((guard, state), ("no_usable_identifiers", RunState::Failed));
                assert!(reason.contains("unsupported_hash 50"), "{reason}");
            }
            v => panic!("{v:?}"),
        }
        // An empty export (no rows) is a cohort that emptied: the removal guard decides.
        let empty = ReadStats::default();
        let mut i = input(&empty);
        i.unique = 0;
        assert_eq!(check(&i, &settings()), Verdict::Proceed);
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

//! TikTok batches: the diff cut into what one TikTok call carries.
//! - customer files: digests as lowercase hex, one per line, in files of bounded size; at most
//!   `files_per_call` file paths per create/update call;
//! - streaming: at most 10,000 digests per `segment/mapping` request.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::digests::Digest;

/// TikTok's documented maximum of users per `segment/mapping` request.
pub const MAX_MAPPING_BATCH: usize = 10_000;
/// TikTok allows 1-500 file paths per call and recommends fewer than 50.
pub const DEFAULT_FILES_PER_CALL: usize = 50;
/// TikTok documents at most 50 MB per customer file (40907 above it). Read as 50,000,000 bytes, the stricter
/// of 50 x 10^6 and 50 MiB, so a file is under the limit whichever TikTok means.
pub const MAX_FILE_BYTES: usize = 50_000_000;
/// One line of a customer file: 64 lowercase hex characters and `\n`.
pub const DIGEST_LINE_BYTES: usize = 65;
/// The most digests one file may carry: 769,230 lines, 49,999,950 bytes. Every planned and written file is
/// held to it, whatever a caller asks for.
pub const MAX_DIGESTS_PER_FILE: usize = MAX_FILE_BYTES / DIGEST_LINE_BYTES;
/// 500k digests, a 32.5 MB file: a third under the limit (a margin for however TikTok counts a MB and for
/// a shorter upload to retry), and still few files: a 10M-user first sync is 20 files in one create, far
/// within the 500 file paths an audience may use over its life (40911).
pub const DEFAULT_DIGESTS_PER_FILE: usize = 500_000;

// Checked at compile time: a full file is within TikTok's limit, one more line would not be, and the default
// is within the cap.
const _: () = assert!(MAX_DIGESTS_PER_FILE * DIGEST_LINE_BYTES <= MAX_FILE_BYTES);
const _: () = assert!((MAX_DIGESTS_PER_FILE + 1) * DIGEST_LINE_BYTES > MAX_FILE_BYTES);
const _: () = assert!(DEFAULT_DIGESTS_PER_FILE <= MAX_DIGESTS_PER_FILE);

/// Digests per file for a size in bytes (at least one line, at most `MAX_FILE_BYTES`).
pub fn digests_per_file_for_bytes(file_bytes: usize) -> usize {
    (file_bytes / DIGEST_LINE_BYTES).clamp(1, MAX_DIGESTS_PER_FILE)
}

/// One TikTok call's worth of a sorted change list: `range` indexes the adds or removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallBatch {
    pub range: Range<usize>,
    /// For customer files: the sub-ranges that become one file each.
    pub files: Vec<Range<usize>>,
}

/// TikTok's hard limit of file paths in one create/update call.
pub const MAX_FILES_PER_CALL: usize = 500;

/// Plans customer-file calls over `len` digests, files of `digests_per_file` (held to
/// `MAX_DIGESTS_PER_FILE`, so no file is over `MAX_FILE_BYTES`). `first_call_files` lets a create carry more files than
/// later calls: an audience created small and grown by APPENDs is refused (40002) while its matched count
/// is under 1,000, so the whole initial cohort goes into the create whenever TikTok's 500 paths allow.
pub fn plan_file_calls(
    len: usize,
    digests_per_file: usize,
    files_per_call: usize,
    first_call_files: usize,
) -> Vec<CallBatch> {
    let per_file = digests_per_file.clamp(1, MAX_DIGESTS_PER_FILE);
    let per_call = files_per_call.clamp(1, MAX_FILES_PER_CALL);
    let first = first_call_files.clamp(per_call, MAX_FILES_PER_CALL);
    let files: Vec<Range<usize>> = (0..len)
        .step_by(per_file)
        .map(|s| s..(s + per_file).min(len))
        .collect();
    let (head, tail) = files.split_at(first.min(files.len()));
    std::iter::once(head)
        .filter(|h| !h.is_empty())
        .chain(tail.chunks(per_call))
        .map(|group| CallBatch {
            range: group[0].start..group[group.len() - 1].end,
            files: group.to_vec(),
        })
        .collect()
}

/// Plans streaming calls over `len` digests.
pub fn plan_mapping_calls(len: usize, batch: usize) -> Vec<CallBatch> {
    let batch = batch.clamp(1, MAX_MAPPING_BATCH);
    (0..len)
        .step_by(batch)
        .map(|s| CallBatch {
            range: s..(s + batch).min(len),
            files: Vec::new(),
        })
        .collect()
}

/// Writes digests as a TikTok customer file (`.csv`, no header, one lowercase hex digest per line). Refuses
/// more than `MAX_DIGESTS_PER_FILE` digests: TikTok would refuse the file (40907).
pub fn write_digest_file(dir: &Path, name: &str, digests: &[Digest]) -> io::Result<PathBuf> {
    if digests.len() > MAX_DIGESTS_PER_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} digests make a {} byte customer file; TikTok takes at most {MAX_FILE_BYTES} \
                 ({MAX_DIGESTS_PER_FILE} digests)",
                digests.len(),
                digests.len() * DIGEST_LINE_BYTES
            ),
        ));
    }
    let path = dir.join(format!("{name}.csv"));
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&path)?);
    let mut line = [0u8; DIGEST_LINE_BYTES];
    line[64] = b'\n';
    for d in digests {
        let (hex, _) = line.split_at_mut(64);
        let hex: &mut [u8; 64] = hex
            .try_into()
            .map_err(|_| io::Error::other("buffer size"))?;
        d.encode_hex(hex);
        w.write_all(&line)?;
    }
    w.flush()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_calls_cover_everything_once() {
        let calls = plan_file_calls(1050, 100, 3, 3);
        assert_eq!(calls.len(), 4);
        assert_eq!(calls[0].range, 0..300);
        assert_eq!(calls[0].files, vec![0..100, 100..200, 200..300]);
        assert_eq!(calls[3].range, 900..1050);
        assert_eq!(calls[3].files, vec![900..1000, 1000..1050]);
        assert!(plan_file_calls(0, 100, 3, 3).is_empty());
        // a create carries up to 500 files at once
        let create = plan_file_calls(1050, 100, 3, MAX_FILES_PER_CALL);
        assert_eq!(create.len(), 1);
        assert_eq!(create[0].files.len(), 11);
        let big = plan_file_calls(600 * 10, 10, 50, MAX_FILES_PER_CALL);
        assert_eq!(
            big.iter().map(|c| c.files.len()).collect::<Vec<_>>(),
            vec![500, 50, 50]
        );
        // one call for a 1 %-churn resync of 10M users with the defaults
        assert_eq!(
            plan_file_calls(100_000, DEFAULT_DIGESTS_PER_FILE, DEFAULT_FILES_PER_CALL, 1).len(),
            1
        );
        // and one create for a 10M first sync
        assert_eq!(
            plan_file_calls(
                10_000_000,
                DEFAULT_DIGESTS_PER_FILE,
                DEFAULT_FILES_PER_CALL,
                MAX_FILES_PER_CALL
            )
            .len(),
            1
        );
    }

    proptest::proptest! {
        /// Whatever a caller asks for, every planned file is at most 50 MB, the files cover the list once
        /// in order, and no call carries more than 500 paths.
        #[test]
        fn planned_files_never_exceed_50_mb(
            len in 0usize..3_000_000,
            per_file in proptest::prop_oneof![
                0usize..2_000_000,
                proptest::strategy::Just(usize::MAX),
                proptest::strategy::Just(MAX_DIGESTS_PER_FILE + 1),
            ],
            per_call in 0usize..1_000,
            first in 0usize..1_000,
        ) {
            let calls = plan_file_calls(len, per_file, per_call, first);
            let mut next = 0;
            for c in &calls {
                proptest::prop_assert!(!c.files.is_empty() && c.files.len() <= MAX_FILES_PER_CALL);
                for f in &c.files {
                    proptest::prop_assert_eq!(f.start, next);
                    proptest::prop_assert!(!f.is_empty());
                    proptest::prop_assert!(f.len() * DIGEST_LINE_BYTES <= MAX_FILE_BYTES);
                    next = f.end;
                }
            }
            proptest::prop_assert_eq!(next, len);
        }
    }

    #[test]
    fn the_file_size_limit_is_50_mb_of_lines() {
        assert_eq!(MAX_DIGESTS_PER_FILE, 769_230);
        assert_eq!(DEFAULT_DIGESTS_PER_FILE * DIGEST_LINE_BYTES, 32_500_000);
        assert_eq!(
            digests_per_file_for_bytes(50 * 1024 * 1024),
            MAX_DIGESTS_PER_FILE
        );
        assert_eq!(digests_per_file_for_bytes(650), 10);
        assert_eq!(digests_per_file_for_bytes(0), 1);
        // the old default (1M per file, 65 MB) is cut into two files
        let calls = plan_file_calls(1_000_000, 1_000_000, DEFAULT_FILES_PER_CALL, 1);
        assert_eq!(
            calls[0].files,
            vec![0..MAX_DIGESTS_PER_FILE, MAX_DIGESTS_PER_FILE..1_000_000]
        );
    }

    #[test]
    fn a_file_over_the_limit_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let many = vec![Digest([7; 32]); MAX_DIGESTS_PER_FILE + 1];
        let e = write_digest_file(dir.path(), "big", &many).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(!dir.path().join("big.csv").exists());
        let p = write_digest_file(dir.path(), "max", &many[..MAX_DIGESTS_PER_FILE]).unwrap();
        let len = std::fs::metadata(p).unwrap().len() as usize;
        assert_eq!(len, MAX_DIGESTS_PER_FILE * DIGEST_LINE_BYTES);
        assert!(len <= MAX_FILE_BYTES);
    }

    #[test]
    fn mapping_calls_never_exceed_10k() {
        let calls = plan_mapping_calls(25_001, 50_000);
        assert_eq!(
            calls.iter().map(|c| c.range.len()).collect::<Vec<_>>(),
            vec![10_000, 10_000, 5_001]
        );
    }

    #[test]
    fn digest_file_is_hex_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_digest_file(dir.path(), "f", &[Digest([0xab; 32]), Digest([1; 32])]).unwrap();
        let text = std::fs::read_to_string(p).unwrap();
        assert_eq!(text, format!("{}\n{}\n", "ab".repeat(32), "01".repeat(32)));
    }
}

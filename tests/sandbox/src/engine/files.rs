//! Customer files: `file/upload/` and resolving `file_paths` for create/update.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use super::digest::{Digest, encode, hex_width, sort_dedup};
use super::scan::{ScannedFile, scan_file};
use super::validate::check_file_paths;
use super::{Outcome, Reject, SCOPE_AUDIENCE_WRITE, State, codes, random_hex, reject};

/// `calculate_type` values accepted by `file/upload/` (TikTok's DmpCalculateType enum).
pub const UPLOAD_CALCULATE_TYPES: &[&str] = &[
    "EMAIL_SHA256",
    "FIRST_MD5",
    "FIRST_SHA256",
    "GAID_MD5",
    "GAID_SHA256",
    "IDFA_MD5",
    "IDFA_SHA256",
    "MAID_MD5",
    "MAID_SHA256",
    "MULTIPLE_TYPES",
    "PHONE_SHA256",
];

/// Multipart text fields TikTok accepts on upload (`file` is the file part).
const UPLOAD_FIELDS: &[&str] = &[
    "advertiser_id",
    "file_signature",
    "calculate_type",
    "name",
    "file_name",
    "context_info",
];

/// How many failed line numbers a history message lists.
const LISTED_FAILURES: usize = 10;

/// A parsed `file/upload/` multipart form.
#[derive(Debug, Clone, Default)]
pub struct UploadForm {
    pub fields: BTreeMap<String, String>,
    pub file: Option<UploadedPart>,
}

#[derive(Debug, Clone)]
pub struct UploadedPart {
    pub file_name: String,
    pub bytes: bytes::Bytes,
}

#[derive(Debug, Clone)]
pub struct UploadedFile {
    pub advertiser_id: String,
    pub calculate_type: String,
    /// The lines that fit `calculate_type`, decoded, ascending and distinct (shared with the log's work
    /// outside the state lock).
    pub digests: Arc<Vec<Digest>>,
    /// Non-blank lines in the file.
    pub lines: usize,
    /// 1-based numbers (among non-blank lines) of the lines that did not fit: TikTok accepts the file and
    /// reports these in the audience's history once the file is used.
    pub failed_lines: Vec<usize>,
    pub uploaded_ms: i64,
}

/// Digests of the referenced files, and what to report about lines that failed.
pub(crate) struct Resolved {
    /// Ascending, distinct.
    pub digests: Vec<Digest>,
    pub failures: Vec<String>,
}

/// What the log records of a create/update's files: the distinct digests of those that exist. When they
/// share one width, the files' digests, for `union_of` outside the lock (the handler then gets that
/// union); else hex strings.
pub enum FileIds {
    Files {
        files: Vec<Arc<Vec<Digest>>>,
        width: usize,
    },
    Hex(Vec<String>),
}

/// The union of files' digests; the engine's files are ascending one after the other, so this is
/// usually one copy and no sort.
pub fn union_of(files: &[Arc<Vec<Digest>>]) -> Vec<Digest> {
    let mut all = Vec::with_capacity(files.iter().map(|f| f.len()).sum());
    for f in files {
        all.extend_from_slice(f);
    }
    sort_dedup(&mut all);
    all
}

/// Whether a line fits a `calculate_type`: 64 lowercase hex for `*_SHA256`, 32 for `*_MD5`.
pub fn fits_calculate_type(line: &str, calculate_type: &str) -> bool {
    let want = if calculate_type.ends_with("_SHA256") {
        64
    } else if calculate_type.ends_with("_MD5") {
        32
    } else {
        return false;
    };
    line.len() == want
        && line
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Non-blank lines (CRLF tolerated); bytes that are not UTF-8 are replaced, so such lines fail to fit.
/// (`scan_file` reads uploads the same way without a `String` per line.)
pub fn file_lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn form_field(form: &UploadForm, name: &str) -> Result<String, Reject> {
    form.fields
        .get(name)
        .cloned()
        .ok_or_else(|| reject(codes::INVALID_PARAMS, format!("{name} is required")))
}

impl State {
    pub fn upload(&mut self, token: Option<&str>, form: &UploadForm) -> Outcome {
        self.upload_scanned(token, form, None)
    }

    /// `upload` with the file already read by `scan_file` (off the lock); `None` reads it here.
    pub fn upload_scanned(
        &mut self,
        token: Option<&str>,
        form: &UploadForm,
        scan: Option<ScannedFile>,
    ) -> Outcome {
        self.try_upload(token, form, scan)
            .unwrap_or_else(Outcome::from)
    }

    fn try_upload(
        &mut self,
        token: Option<&str>,
        form: &UploadForm,
        scan: Option<ScannedFile>,
    ) -> Result<Outcome, Reject> {
        if let Some(f) = form
            .fields
            .keys()
            .find(|k| !UPLOAD_FIELDS.contains(&k.as_str()))
        {
            return Err(reject(codes::INVALID_PARAMS, format!("unknown field {f}")));
        }
        let advertiser_id = form_field(form, "advertiser_id")?;
        self.authorize(
            token,
            std::slice::from_ref(&advertiser_id),
            Some(SCOPE_AUDIENCE_WRITE),
        )?;
        let signature = form_field(form, "file_signature")?;
        let calculate_type = form_field(form, "calculate_type")?;
        let Some(file) = &form.file else {
            return Err(reject(codes::INVALID_PARAMS, "file is required"));
        };
        if !UPLOAD_CALCULATE_TYPES.contains(&calculate_type.as_str()) {
            return Err(reject(
                codes::INVALID_PARAMS,
                format!("calculate_type {calculate_type} is not a valid enum value"),
            ));
        }
        let lower = file.file_name.to_ascii_lowercase();
        if !(lower.ends_with(".csv") || lower.ends_with(".txt")) {
            return Err(reject(
                codes::FILE_SUFFIX,
                "file suffix must be .csv or .txt",
            ));
        }
        let max = self.rules.max_file_bytes;
        if max > 0 && file.bytes.len() as u64 > max {
            return Err(reject(
                codes::FILE_TOO_LARGE,
                format!(
                    "The file is too large: {} bytes; at most {max} are allowed",
                    file.bytes.len()
                ),
            ));
        }
        let scan = match scan {
            Some(s) if s.calculate_type == calculate_type => s,
            _ => scan_file(&file.bytes, &calculate_type),
        };
        if !scan.md5_hex.eq_ignore_ascii_case(signature.trim()) {
            return Err(reject(
                codes::FILE_SIGNATURE,
                "file_signature does not match the file's MD5",
            ));
        }
        if calculate_type == "MULTIPLE_TYPES" {
            return Err(reject(
                codes::FILE_CALCULATE_TYPE,
                "MULTIPLE_TYPES files are not supported by the sandbox",
            ));
        }
        if scan.lines == 0 {
            return Err(reject(codes::FILE_EMPTY, "The file is empty"));
        }
        let file_path = random_hex(8);
        self.files.insert(
            file_path.clone(),
            UploadedFile {
                advertiser_id,
                calculate_type,
                digests: Arc::new(scan.digests),
                lines: scan.lines,
                failed_lines: scan.failed_lines,
                uploaded_ms: self.now_ms(),
            },
        );
        Ok(Outcome::ok(serde_json::json!({ "file_path": file_path })))
    }

    /// Resolves `file_paths` for an advertiser and a calculate_type into the union of their digests;
    /// `union` is that union when the caller has it already (`file_ids` over the same paths).
    pub(crate) fn resolve_files(
        &self,
        advertiser_id: &str,
        calculate_type: &str,
        paths: &[String],
        union: Option<Vec<Digest>>,
    ) -> Result<Resolved, Reject> {
        check_file_paths(paths)?;
        let now = self.now_ms();
        let ttl = self.rules.file_ttl_ms;
        let mut failures = Vec::new();
        for p in paths {
            let Some(f) = self.files.get(p) else {
                return Err(reject(
                    codes::NOT_FOUND,
                    format!("The file {p} does not exist"),
                ));
            };
            if f.advertiser_id != advertiser_id {
                return Err(reject(
                    codes::FILE_FOREIGN,
                    format!("file_path {p} belongs to another advertiser"),
                ));
            }
            if ttl > 0 && now >= f.uploaded_ms + ttl {
                return Err(reject(
                    codes::FILE_EXPIRED,
                    format!("The file {p} has expired; upload it again"),
                ));
            }
            if f.calculate_type != calculate_type {
                return Err(reject(
                    codes::FILE_CALCULATE_TYPE,
                    format!(
                        "file_path {p} has calculate_type {} but {calculate_type} is required",
                        f.calculate_type
                    ),
                ));
            }
            if !f.failed_lines.is_empty() {
                failures.push(failure_note(p, f));
            }
        }
        // Every path exists now, so the caller's union (of the files that exist) is this one.
        let digests = union.unwrap_or_else(|| {
            let files: Vec<_> = self.files_once(paths).map(|f| f.digests.clone()).collect();
            union_of(&files)
        });
        Ok(Resolved { digests, failures })
    }

    /// The referenced files that exist, each once, in the order given.
    fn files_once<'a>(&'a self, paths: &'a [String]) -> impl Iterator<Item = &'a UploadedFile> {
        let mut seen = HashSet::new();
        paths
            .iter()
            .filter(move |p| seen.insert(p.as_str()))
            .filter_map(|p| self.files.get(p))
    }

    /// The distinct digests of the given files (for the log's batch identity).
    pub fn file_ids(&self, paths: &[String]) -> FileIds {
        let widths: BTreeSet<usize> = self
            .files_once(paths)
            .map(|f| hex_width(&f.calculate_type).unwrap_or(64))
            .collect();
        if widths.len() <= 1 {
            let width = widths.first().copied().unwrap_or(64);
            let files = self.files_once(paths).map(|f| f.digests.clone()).collect();
            return FileIds::Files { files, width };
        }
        // Files of several widths (a request TikTok refuses with 40909): hex strings, sorted as text.
        let set: BTreeSet<String> = self
            .files_once(paths)
            .flat_map(|f| {
                let w = hex_width(&f.calculate_type).unwrap_or(64);
                f.digests.iter().map(move |d| encode(d, w))
            })
            .collect();
        FileIds::Hex(set.into_iter().collect())
    }
}

/// "file X: 2 of 1002 lines could not be parsed as EMAIL_SHA256 (lines 3, 7)".
fn failure_note(path: &str, f: &UploadedFile) -> String {
    let listed: Vec<String> = f
        .failed_lines
        .iter()
        .take(LISTED_FAILURES)
        .map(|n| n.to_string())
        .collect();
    let more = if f.failed_lines.len() > LISTED_FAILURES {
        ", ..."
    } else {
        ""
    };
    format!(
        "file {path}: {} of {} lines could not be parsed as {} (lines {}{more})",
        f.failed_lines.len(),
        f.lines,
        f.calculate_type,
        listed.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calculate_type_lines() {
        let sha = "a".repeat(64);
        assert!(fits_calculate_type(&sha, "EMAIL_SHA256"));
        assert!(!fits_calculate_type(&"A".repeat(64), "EMAIL_SHA256"));
        assert!(!fits_calculate_type(&"a".repeat(63), "PHONE_SHA256"));
        assert!(fits_calculate_type(&"0".repeat(32), "IDFA_MD5"));
        assert!(!fits_calculate_type(&sha, "IDFA_MD5"));
        assert!(!fits_calculate_type(&sha, "MULTIPLE_TYPES"));
    }

    #[test]
    fn file_lines_skip_blank_and_crlf() {
        assert_eq!(file_lines(b"a\r\nb\n\nc"), vec!["a", "b", "c"]);
        assert_eq!(
            file_lines(&[0xff, b'\n', b'a']).len(),
            2,
            "non-UTF-8 bytes stay a line"
        );
    }
}

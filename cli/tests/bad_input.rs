//! Issue 8's bad-input corpus (`tests/corpus/bad-input/`) through the binary as a user runs it:
//! `audience-sync preview FILE --key K --column C --format json` gives exactly the manifest's counts (exit 0)
//! or a one-line `error: ...` with the manifest's fragment (exit 1), never a panic.

#[path = "../../tests/corpus/bad-input/generated.rs"]
mod generated;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/bad-input")
}

fn manifest() -> Value {
    let text =
        std::fs::read_to_string(corpus_dir().join("expected.json")).expect("read expected.json");
    serde_json::from_str(&text).expect("expected.json is JSON")
}

fn check(entry: &Value, path: &Path, max_msg: usize) -> Result<(), String> {
    let s = |k: &str| entry.get(k).and_then(Value::as_str);
    let expect = &entry["expect"];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_audience-sync"));
    cmd.arg("preview")
        .arg(path)
        .args(["--key", s("key").unwrap_or("email")])
        .args(["--column", s("column").unwrap_or("email")])
        .args(["--format", "json"]);
    if let Some(r) = s("region") {
        cmd.args(["--region", r]);
    }
    let out = cmd.output().map_err(|e| format!("spawn: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    match expect.get("error").and_then(Value::as_str) {
        None => {
            if code != Some(0) {
                return Err(format!("exit {code:?}, stderr {:.300}", stderr.to_string()));
            }
            let report: Value =
                serde_json::from_slice(&out.stdout).map_err(|e| format!("stdout JSON: {e}"))?;
            let got = json!({
                "rows": report["rows"], "valid": report["valid"], "unique": report["unique"],
                "duplicates": report["duplicates"], "skipped": report["skipped"],
            });
            if &got != expect {
                return Err(format!("counts {got}, expected {expect}"));
            }
            if let Some(name) = entry.get("name") {
                let got = json!({
                    "cohort_id": report["cohort_id"], "difftype": report["difftype"],
                    "exported_at": report["exported_at"], "routing_key": report["routing_key"],
                });
                let want = if name.is_null() {
                    json!({"cohort_id": null, "difftype": null, "exported_at": null, "routing_key": null})
                } else {
                    name.clone()
                };
                if got != want {
                    return Err(format!("name fields {got}, expected {want}"));
                }
            }
            Ok(())
        }
        Some(_) => {
            if code != Some(1) {
                return Err(format!(
                    "exit {code:?} (expected 1), stderr {:.300}",
                    stderr.to_string()
                ));
            }
            if !out.stdout.is_empty() {
                return Err("a failed preview printed a report".into());
            }
            let line = stderr.trim_end_matches('\n');
            let mut problems = Vec::new();
            if line.contains('\n') || !line.starts_with("error: ") {
                problems.push("not one `error: ...` line".to_string());
            }
            let want = expect["message"].as_str().unwrap_or_default();
            if !line.contains(want) {
                problems.push(format!("lacks {want:?}"));
            }
            for ex in expect
                .get("message_excludes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if line.contains(ex.as_str().unwrap_or_default()) {
                    problems.push(format!("echoes the raw value {ex}"));
                }
            }
            // the CLI adds "error: cannot read <path>: " in front of the reader's message
            let limit = max_msg + 64 + path.as_os_str().len();
            if line.len() > limit {
                problems.push(format!("{} bytes (limit {limit})", line.len()));
            }
            if problems.is_empty() {
                Ok(())
            } else {
                let shown: String = line.chars().take(300).collect();
                Err(format!("{}; stderr starts {shown:?}", problems.join("; ")))
            }
        }
    }
}

#[test]
fn preview_gives_the_manifest_outcome_for_every_corpus_file() {
    let m = manifest();
    let max = m["max_error_message_bytes"].as_u64().expect("limit") as usize;
    let tmp = tempfile::tempdir().expect("tmp");
    let mut checked = 0;
    let mut failures = Vec::new();
    for e in m["files"].as_array().expect("files") {
        let file = e["file"].as_str().expect("file");
        checked += 1;
        if let Err(err) = check(e, &corpus_dir().join(file), max) {
            failures.push(format!("{file} ({}): {err}", e["key"]));
        }
    }
    for e in m["generated"].as_array().expect("generated") {
        let file = e["file"].as_str().expect("file");
        let path = generated::write(tmp.path(), file).expect("generate");
        checked += 1;
        if let Err(err) = check(e, &path, max) {
            failures.push(format!("{file}: {err}"));
        }
    }
    assert!(checked >= 30, "only {checked} cases");
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `-` reads stdin: the same outcome for a committed file piped in (gzip detected by its magic bytes).
#[test]
fn preview_from_stdin_matches_the_file_outcome() {
    for (file, rows) in [("gzip-not-named.csv", 200), ("crlf.csv", 4)] {
        let bytes = std::fs::read(corpus_dir().join(file)).expect("corpus file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_audience-sync"))
            .args([
                "preview", "-", "--key", "email", "--column", "email", "--format", "json",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(&bytes).expect("write");
        }
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{file}");
        let report: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(report["rows"], rows, "{file}");
    }
}

//! The `audience-sync` binary, run as a user runs it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_audience-sync"))
}

fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn preview_json(path: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "preview",
        path.to_str().unwrap(),
        "--key",
        "email",
        "--column",
        "email",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn hash_prints_one_line_per_input_line() {
    let input = "  Jane.Doe+ads@Example.com \r\n+ads@example.com\n\nd41d8cd98f00b204e9800998ecf8427e\nbad\rvalue\nlast@x.com";
    let o = run_with_stdin(&["hash", "--key", "EMAIL"], input.as_bytes());
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d\n\
         skip:invalid_email\n\
         skip:empty\n\
         skip:unsupported_hash\n\
         skip:malformed_row\n\
         a2888ae6ed8e019d543c1c8b315b11f1eb48379780da510316ffe5460113db75\n"
    );
}

#[test]
fn hash_phone_region_and_bytes_checks() {
    let mut input = b"(415) 555-2671\n0044 7911 123456\n\xff\xfe\n".to_vec();
    input.extend_from_slice(format!("{}\n", "1".repeat(1025)).as_bytes());
    let o = run_with_stdin(&["hash", "--key", "phone", "--region", "us"], &input);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        "cb6880e416769253645cb9c6b8989154bf66a56a77fc14c81fb1019663cbb928\n\
         20b18ac9de7b3aad174961827d8e451c410af9aedfd1d699927f4b29b81aa1fa\n\
         skip:malformed_row\n\
         skip:malformed_row\n"
    );
    let o = run_with_stdin(
        &["hash", "--key", "Idfa"],
        b"6d92078a82464ba1a3be5e83dd7ac5ab\n",
    );
    assert_eq!(
        stdout(&o),
        "5d6a0a199fec9accf5d6e88aae77e9557472f0eac4bfa0ad29be71135ccf4552\n"
    );
    let o = run_with_stdin(
        &["hash", "--key", "gaid"],
        b"38400000-8CF0-11BD-B23E-10B96E40000D",
    );
    assert_eq!(
        stdout(&o),
        "d4181bb455a74b3bc8b37c75ac9b2c702eb6b9930bd040b861403b31ca85634d\n"
    );
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(
        run_with_stdin(&["hash", "--key", "mail"], b"")
            .status
            .code(),
        Some(2)
    );
    assert_eq!(run_with_stdin(&["hash"], b"").status.code(), Some(2));
    assert_eq!(
        run_with_stdin(&["hash", "--key", "phone", "--region", "ZZ"], b"")
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&["preview", "x.csv", "--key", "email"]).status.code(),
        Some(2)
    );
}

/// A hand-made Amplitude-style export with the usual dirt, and its exact counts.
fn dirty_export() -> Vec<u8> {
    let mut f = "\u{FEFF}Amplitude ID,User ID,\" Email \"\r\n"
        .as_bytes()
        .to_vec();
    let rows: &[&[u8]] = &[
        b"1,u1,jane@example.com\r\n",                 // valid
        b"2,u2,JANE@example.com\r\n",                 // valid, duplicate of 1
        b"3,u3,\"Doe+x@Example.com\"\r\n",            // valid (quoted)
        b"4,u4,\"a,b@c.com\"\r\n", // valid: comma inside quotes is part of the value
        b"5,u5,\r\n",              // empty
        b"6,u6,   \r\n",           // empty
        b"7,u7,not-an-email\r\n",  // invalid_email
        b"8,u8,d41d8cd98f00b204e9800998ecf8427e\r\n", // unsupported_hash
        b"9,u9\r\n",               // ragged: malformed_row
        b"10,u10,\xffbad@x.com\r\n", // non-UTF-8: malformed_row
        b"\r\n",                   // blank line: not a row
        b"11,u11,86E0B9E56C17CC4D12387E1949B85053FBE73BC3CE5A1188713A9D300CC6133D\r\n", // pre-hashed = jane.doe@example.com
        b"12,u12,jane.doe+promo@example.com\r\n", // valid, duplicate of 11
    ];
    for r in rows {
        f.extend_from_slice(r);
    }
    f
}

fn expected_dirty() -> Value {
    json!({"rows": 12, "valid": 6, "unique": 4, "duplicates": 2,
           "skipped": {"empty": 2, "invalid_email": 1, "unsupported_hash": 1, "malformed_row": 2}})
}

fn assert_counts(report: &Value, expected: &Value) {
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&report[k], v, "{k} in {report}");
    }
    let skipped: u64 = report["skipped"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        report["rows"].as_u64().unwrap(),
        report["valid"].as_u64().unwrap() + skipped,
        "rows = valid + skipped"
    );
}

#[test]
fn preview_json_exact_counts_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("abc123_2024-03-05T14:07_existing_prod.csv");
    std::fs::write(&plain, dirty_export()).unwrap();
    let r = preview_json(&plain, &[]);
    assert_counts(&r, &expected_dirty());
    assert_eq!(r["meets_tiktok_minimum"], false);
    assert_eq!(r["cohort_id"], "abc123");
    assert_eq!(r["difftype"], "existing");
    assert_eq!(r["exported_at"], "2024-03-05T14:07:00Z");
    assert_eq!(r["routing_key"], "prod");
    assert!(r.get("adds").is_none());

    let gz = dir
        .path()
        .join("abc123_2024-03-05T14-07-09_existing.csv.gz");
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(&dirty_export()).unwrap();
    std::fs::write(&gz, e.finish().unwrap()).unwrap();
    let r = preview_json(&gz, &[]);
    assert_counts(&r, &expected_dirty());
    assert_eq!(r["exported_at"], "2024-03-05T14:07:09Z");
    assert_eq!(r["routing_key"], Value::Null);

    let other = dir.path().join("my cohort.csv");
    std::fs::write(&other, dirty_export()).unwrap();
    let r = preview_json(&other, &[]);
    assert_counts(&r, &expected_dirty());
    assert_eq!(r["cohort_id"], Value::Null);
    assert_eq!(r["exported_at"], Value::Null);
}

#[test]
fn preview_from_stdin_and_text_format() {
    let o = run_with_stdin(
        &[
            "preview", "-", "--key", "EMAIL", "--column", "EMAIL", "--format", "json",
        ],
        &dirty_export(),
    );
    assert!(o.status.success());
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_counts(&r, &expected_dirty());
    // Its malformed rows are above a run's 1 % limit: the CLI says what the run would say.
    assert_eq!(r["verdict"]["outcome"], "would_refuse");
    assert_eq!(r["verdict"]["guard"], "malformed_rows");
    assert_eq!(r["verdict"]["state"], "failed");
    let o = run_with_stdin(
        &["preview", "-", "--key", "email", "--column", "email"],
        &dirty_export(),
    );
    let text = stdout(&o);
    assert!(
        text.contains("unique")
            && text.contains("malformed_row")
            && text.contains("would refuse this file (guard malformed_rows, run state failed)"),
        "{text}"
    );
}

#[test]
fn preview_meets_minimum_at_1000_unique() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c_2024-01-01T00:00_existing.csv");
    let mut body = String::from("email\n");
    for i in 0..1000 {
        body.push_str(&format!("user{i}@example.com\n"));
    }
    std::fs::write(&p, &body).unwrap();
    assert_eq!(preview_json(&p, &[])["meets_tiktok_minimum"], true);
    body.truncate(body.rfind("user999").unwrap());
    std::fs::write(&p, &body).unwrap();
    assert_eq!(preview_json(&p, &[])["meets_tiktok_minimum"], false);
}

#[test]
fn previous_snapshot_gives_exact_adds_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("c_2024-01-01T00:00_existing.csv");
    let second = dir.path().join("c_2024-01-02T00:00_existing.csv");
    let snap = dir.path().join("snap.bin");
    let mut a = String::from("id,email\n");
    for i in 0..100 {
        a.push_str(&format!("{i},u{i}@x.com\n"));
    }
    std::fs::write(&first, &a).unwrap();
    let r = preview_json(&first, &["--write-snapshot", snap.to_str().unwrap()]);
    assert_eq!(r["unique"], 100);
    // second export: users 0..10 left, 100..125 joined, 5 duplicates of staying users
    let mut b = String::from("id,email\n");
    for i in 10..125 {
        b.push_str(&format!("{i},U{i}@X.com\n"));
    }
    for i in 50..55 {
        b.push_str(&format!("{i},u{i}@x.com\n"));
    }
    std::fs::write(&second, &b).unwrap();
    let r = preview_json(&second, &["--previous", snap.to_str().unwrap()]);
    assert_eq!(r["adds"], 25);
    assert_eq!(r["removes"], 10);
    assert_eq!(r["duplicates"], 5);

    // a snapshot of another key kind is an error with a one-line reason
    let phone_snap = dir.path().join("phone.bin");
    let o = run_with_stdin(
        &[
            "preview",
            "-",
            "--key",
            "phone",
            "--region",
            "US",
            "--column",
            "p",
            "--write-snapshot",
            phone_snap.to_str().unwrap(),
        ],
        b"p\n4155552671\n",
    );
    assert!(o.status.success());
    let o = run(&[
        "preview",
        second.to_str().unwrap(),
        "--key",
        "email",
        "--column",
        "email",
        "--previous",
        phone_snap.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("PHONE") && err.contains("EMAIL"), "{err}");
}

#[test]
fn failures_exit_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.csv");
    std::fs::write(&p, "amplitude_id,user_id,mail\n1,2,a@b.co\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "preview".into(),
                dir.path().join("missing.csv").to_str().unwrap().into(),
                "--key".into(),
                "email".into(),
                "--column".into(),
                "email".into(),
            ],
            "cannot open",
        ),
        (
            vec![
                "preview".into(),
                p.to_str().unwrap().into(),
                "--key".into(),
                "email".into(),
                "--column".into(),
                "email".into(),
            ],
            "\"mail\"",
        ),
    ];
    for (args, needle) in cases {
        let o = bin().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
    std::fs::write(&p, "Email,email\n1,2\n").unwrap();
    let o = run(&[
        "preview",
        p.to_str().unwrap(),
        "--key",
        "email",
        "--column",
        "EMAIL",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 columns match"));
    // truncated gzip
    let gz = dir.path().join("t.csv.gz");
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(b"email\n").unwrap();
    for i in 0..2000 {
        e.write_all(format!("u{i}@x.com\n").as_bytes()).unwrap();
    }
    let bytes = e.finish().unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&[
        "preview",
        gz.to_str().unwrap(),
        "--key",
        "email",
        "--column",
        "email",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("could not be read whole"));
}

/// The walk-through's files: all-MD5 emails and phones without a region have no usable identifier. The CLI
/// must not say "wait until the cohort grows" (a run fails them, for the same guard).
#[test]
fn files_without_a_usable_identifier_are_refused_as_a_run_would() {
    let dir = tempfile::tempdir().unwrap();
    let md5 = dir.path().join("md5.csv");
    let mut body = String::from("email\n");
    for i in 0..40 {
        body.push_str(&format!("{:032x}\n", 0xabcdef_u128 * (i + 1)));
    }
    std::fs::write(&md5, body).unwrap();
    let r = preview_json(&md5, &[]);
    assert_eq!(r["unique"], 0);
    assert_eq!(r["verdict"]["guard"], "no_usable_identifiers", "{r}");
    assert_eq!(r["verdict"]["state"], "failed");

    let phones = dir.path().join("phones.csv");
    std::fs::write(&phones, "phone\n2025550143\n(202) 555-0178\n2025550199\n").unwrap();
    let o = run(&[
        "preview",
        phones.to_str().unwrap(),
        "--key",
        "phone",
        "--column",
        "phone",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["verdict"]["guard"], "no_usable_identifiers", "{r}");
    let text = stdout(&run(&[
        "preview",
        phones.to_str().unwrap(),
        "--key",
        "phone",
        "--column",
        "phone",
    ]));
    assert!(
        !text.contains("grows") && text.contains("no_usable_identifiers"),
        "{text}"
    );
}

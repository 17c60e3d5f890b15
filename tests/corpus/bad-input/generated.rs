//! The corpus files too big to commit, made at test time. Included with `#[path]` by both
//! `tests/tests/bad_input.rs` and `cli/tests/bad_input.rs`, so the two read identical bytes.

use std::path::{Path, PathBuf};

const MIB: usize = 1 << 20;

/// The bytes of a generated corpus file, by its name in `expected.json` (`generated`).
pub fn bytes(name: &str) -> Option<Vec<u8>> {
    Some(match name {
        // 10 MiB, no line break at all: the whole file is one header field.
        "single-line-10mb.csv" => vec![b'a'; 10 * MIB],
        "long-line-10mb-value.csv" => {
            let mut v = b"email\n".to_vec();
            v.extend(std::iter::repeat_n(b'x', 10 * MIB));
            v.extend_from_slice(b"@x.com\nb@x.com\n");
            v
        }
        "single-line-10mb-fields.csv" => {
            let mut v = b"email,User ID\n".to_vec();
            while v.len() < 10 * MIB {
                v.extend_from_slice(b"a@x.com,");
            }
            v.push(b'\n');
            v
        }
        "ten-thousand-columns.csv" => {
            let mut header: Vec<String> = (0..9_999).map(|i| format!("c{i}")).collect();
            header.push("email".into());
            let mut s = header.join(",");
            s.push('\n');
            for r in 0..3 {
                // ~50 KB rows: under the reader's 64 KiB record limit (`long-record-valid-id.csv` is over)
                let mut row: Vec<String> = (0..9_999).map(|i| format!("{i}")).collect();
                row.push(format!("user{r}@example.com"));
                s.push_str(&row.join(","));
                s.push('\n');
            }
            s.into_bytes()
        }
        "ten-thousand-columns-no-match.csv" => {
            let header: Vec<String> = (0..10_000).map(|i| format!("column number {i}")).collect();
            let mut s = header.join(",");
            s.push('\n');
            s.push_str(&vec!["v"; 10_000].join(","));
            s.push('\n');
            s.into_bytes()
        }
        "long-record-valid-id.csv" => {
            let mut v = b"email,notes\na@x.com,short\nb@x.com,".to_vec();
            v.extend(std::iter::repeat_n(b'n', 100 * 1024));
            v.extend_from_slice(b"\nc@x.com,short\n");
            v
        }
        // gzip members concatenated (read as one stream): ~1 KiB each for 1 MiB of one byte
        "gzip-bomb.csv.gz" => {
            let mut v = gzip(b"email,blob\na@x.com,\"");
            let member = gzip(&vec![b'z'; MIB]);
            for _ in 0..300 {
                v.extend_from_slice(&member);
            }
            v
        }
        "gzip-long-line.csv.gz" => {
            let mut v = gzip(b"email\n");
            let member = gzip(&vec![b'x'; MIB]);
            for _ in 0..100 {
                v.extend_from_slice(&member);
            }
            v.extend(gzip(b"@x.com\nb@x.com\n"));
            v
        }
        _ => return None,
    })
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // writing to a Vec cannot fail
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

/// Writes a generated file into `dir` and returns its path.
pub fn write(dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let data =
        bytes(name).ok_or_else(|| std::io::Error::other(format!("no generator for {name}")))?;
    let path = dir.join(name);
    std::fs::write(&path, data)?;
    Ok(path)
}

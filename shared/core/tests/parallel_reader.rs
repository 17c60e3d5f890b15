//! The reader on several threads gives exactly what the one-thread reader gives (rows, valid, every skip
//! reason, duplicates, the set, and the same error), whatever the chunk size, on files made to cut badly:
//! quoted line breaks, stray quotes inside unquoted fields, CRLF, blank lines, records over the limit, rows
//! short of the column, no final line break, a quote left open at the end.

use audience_core::cohort::reader::{ReaderLimits, digest_reader_with};
use audience_core::{KeyKind, Normalizer};
use proptest::prelude::*;

fn row() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (0u32..400).prop_map(|i| format!("{i},u{i}@example.com")),
        1 => (0u32..400).prop_map(|i| format!("{i},\"  U{i}@Example.com\"")),
        1 => (0u32..50).prop_map(|i| format!("{i},\"line\nbreak{i}@x.co\"")),
        1 => (0u32..50).prop_map(|i| format!("{i},\"a\"\"b{i}@x.co\"")),
        1 => (0u32..50).prop_map(|i| format!("x\"{i},u{i}@example.com")),
        1 => (0u32..50).prop_map(|i| format!("\"{i}\nq\",v{i}@example.com")),
        1 => Just(String::new()),
        1 => (0u32..50).prop_map(|i| format!("only{i}")),
        1 => (0u32..50).prop_map(|i| format!("{i},not-an-email")),
        1 => (40usize..120).prop_map(|n| format!("1,{}@x.co", "l".repeat(n))),
    ]
}

fn file() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(row(), 0..120),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(rows, crlf, final_break, open_quote)| {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut s = format!("id,email{eol}");
            for (i, r) in rows.iter().enumerate() {
                s.push_str(r);
                if i + 1 < rows.len() || final_break {
                    s.push_str(eol);
                }
            }
            if open_quote {
                s.push_str("9,\"never closed@x.co\n1,a@b.co\n");
            }
            s.into_bytes()
        })
}

fn read(bytes: &[u8], threads: usize, chunk_bytes: usize) -> String {
    let limits = ReaderLimits {
        threads,
        chunk_bytes,
        max_record_bytes: 96,
        ..ReaderLimits::default()
    };
    let n = Normalizer::new(KeyKind::Email, None).unwrap();
    match digest_reader_with(
        std::io::Cursor::new(bytes.to_vec()),
        false,
        "email",
        &n,
        &limits,
    ) {
        Ok(r) => format!(
            "{:?} {:?} {} {:?}",
            r.stats,
            r.counts(),
            r.duplicates,
            r.set.to_set()
        ),
        Err(e) => format!("error {e:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]
    #[test]
    fn every_thread_count_and_chunk_size_reads_the_same(
        f in file(),
        threads in 2usize..5,
        chunk in prop_oneof![1usize..16, 16usize..200, Just(1 << 20)],
    ) {
        prop_assert_eq!(read(&f, threads, chunk), read(&f, 1, chunk));
    }
}

/// Enough rows for many chunks and the parallel sort (which starts at 65,536 digests).
#[test]
fn a_large_file_reads_the_same_on_every_thread_count() {
    let mut s = String::from("Amplitude ID,User ID,email\n");
    for i in 0..150_000u32 {
        match i % 40 {
            0 => s.push_str(&format!("{i},u{i},\n")),
            1 => s.push_str(&format!("{i},u{i},\"Dup{}@Example.com\"\n", i % 1000)),
            2 => s.push_str(&format!("{i},\"u\n{i}\",quoted{i}@x.co\n")),
            _ => s.push_str(&format!("{i},u{i}, user.{i}+tag@example.com\n")),
        }
    }
    let f = s.into_bytes();
    let one = read(&f, 1, 1 << 20);
    for (threads, chunk) in [(2, 4096), (3, 100_000), (2, 1 << 20), (8, 777)] {
        assert!(
            read(&f, threads, chunk) == one,
            "threads {threads}, chunk {chunk}"
        );
    }
}

//! The streaming reader on hand-made Amplitude-style files, with exact counts.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use audience_core::cohort::reader::{
    ReadError, ReaderLimits, SizeLimit, digest_reader, digest_reader_with,
};
use audience_core::{KeyKind, Normalizer, SkipReason};
use flate2::Compression;
use flate2::write::GzEncoder;

fn email() -> Normalizer {
    Normalizer::new(KeyKind::Email, None).unwrap()
}

fn read(bytes: &[u8], column: &str) -> Result<audience_core::cohort::CohortDigests, ReadError> {
    digest_reader(
        std::io::Cursor::new(bytes.to_vec()),
        false,
        column,
        &email(),
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn bom_crlf_quotes_header_spelling() {
    let file = "\u{FEFF}Amplitude ID,User ID,  EMAIL \r\n\
                1,u1,jane@example.com\r\n\
                2,u2,\"Jane@Example.com\"\r\n\
                3,u3,\"doe, john\"\r\n\
                4,u4,\"multi\nline@x.com\"\r\n\
                \r\n\
                5,u5,\r\n\
                6,u6\r\n\
                7,u7,d41d8cd98f00b204e9800998ecf8427e\r\n";
    let r = read(file.as_bytes(), "email").unwrap();
    assert_eq!(r.stats.rows, 7, "blank line is not a row");
    assert_eq!(r.stats.valid, 2);
    assert_eq!(r.set.len(), 1);
    assert_eq!(r.duplicates, 1);
    assert_eq!(r.stats.skipped(SkipReason::InvalidEmail), 1);
    assert_eq!(
        r.stats.skipped(SkipReason::MalformedRow),
        2,
        "embedded newline and short row"
    );
    assert_eq!(r.stats.skipped(SkipReason::Empty), 1);
    assert_eq!(r.stats.skipped(SkipReason::UnsupportedHash), 1);
    assert_eq!(r.stats.rows, r.stats.valid + r.stats.total_skipped());
}

/// Amplitude's S3 cohort page lists the columns with a leading blank (` amplitudeID`, ` userID`, then one
/// per property): the configured name still finds its column, by trimmed, case-insensitive match.
#[test]
fn amplitude_headers_with_leading_spaces() {
    let file = " amplitudeID, userID, email\n\
                101,u1,jane@example.com\n\
                102, u2, john@example.com\n\
                103,u3,\n";
    let r = read(file.as_bytes(), "email").unwrap();
    assert_eq!(r.stats.rows, 3);
    assert_eq!(
        r.stats.valid, 2,
        "a value after ', ' is trimmed like its header"
    );
    assert_eq!(r.set.len(), 2);
    assert_eq!(r.stats.skipped(SkipReason::Empty), 1);
    // The id columns are found the same way (a property named like Amplitude's spelling).
    let ids = " amplitudeID, userID, email\n101,a@x.com,b@x.com\n";
    assert_eq!(read(ids.as_bytes(), "userID").unwrap().stats.valid, 1);
    assert_eq!(read(ids.as_bytes(), " USERID ").unwrap().stats.valid, 1);
}

#[test]
fn gzip_by_magic_and_by_name() {
    let plain = b"amplitude_id,email\n1,a@b.co\n2,c@d.co\n";
    let gz = gzip(plain);
    let by_magic =
        digest_reader(std::io::Cursor::new(gz.clone()), false, "email", &email()).unwrap();
    assert_eq!(by_magic.set.len(), 2);
    let by_name = digest_reader(std::io::Cursor::new(gz.clone()), true, "email", &email()).unwrap();
    assert_eq!(by_name.set, by_magic.set);
    // concatenated gzip members are read whole
    let mut two = gzip(b"amplitude_id,email\n1,a@b.co\n");
    two.extend(gzip(b"2,c@d.co\n"));
    let multi = digest_reader(std::io::Cursor::new(two), true, "email", &email()).unwrap();
    assert_eq!(multi.set, by_magic.set);
    // a BOM inside the gzip is dropped too
    let bom = gzip("\u{FEFF}email\nx@y.co\n".as_bytes());
    assert_eq!(
        digest_reader(std::io::Cursor::new(bom), true, "email", &email())
            .unwrap()
            .stats
            .valid,
        1
    );
}

#[test]
fn truncated_or_fake_gzip_is_a_read_error() {
    let mut body = String::from("email\n");
    for i in 0..5000 {
        body.push_str(&format!("user{i}@example.com\n"));
    }
    let gz = gzip(body.as_bytes());
    let cut = &gz[..gz.len() / 2];
    match digest_reader(std::io::Cursor::new(cut.to_vec()), true, "email", &email()) {
        Err(ReadError::Io(_)) => {}
        other => panic!("expected a read error, got {other:?}"),
    }
    // a .gz name on plain text: gzip's own error, not silently read
    assert!(matches!(
        digest_reader(
            std::io::Cursor::new(b"email\na@b.co\n".to_vec()),
            true,
            "email",
            &email()
        ),
        Err(ReadError::Io(_))
    ));
}

#[test]
fn column_errors_name_the_headers() {
    let e = read(b"amplitude_id,user_id,mail\n1,2,a@b.co\n", "email").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ReadError::ColumnNotFound { .. }));
    assert!(
        msg.contains("\"amplitude_id\"") && msg.contains("\"mail\""),
        "{msg}"
    );
    let e = read(b"email,Email \n1,2\n", "EMAIL").unwrap_err();
    assert!(
        matches!(e, ReadError::AmbiguousColumn { ref positions, .. } if positions == &vec![0, 1]),
        "{e}"
    );
    assert!(matches!(read(b"", "email"), Err(ReadError::Empty)));
    assert!(matches!(read(b"\n\n", "email"), Err(ReadError::Empty)));
    let header_only = read(b"email\n", "email").unwrap();
    assert_eq!(header_only.stats.rows, 0);
}

#[test]
fn non_utf8_long_and_ragged_values() {
    let mut file = b"id,email,extra\n1,\xff\xfe@x.com,z\n2,ok@x.com\n3\n".to_vec();
    file.extend_from_slice(format!("4,{}@x.com,z\n", "a".repeat(2000)).as_bytes());
    // non-UTF-8 in another column does not matter: only the identifier column is decoded
    file.extend_from_slice(b"5,other@x.com,\xff\n");
    let r = read(&file, "email").unwrap();
    assert_eq!(r.stats.rows, 5);
    assert_eq!(r.stats.valid, 2, "ragged row 2 still has the column");
    assert_eq!(r.stats.skipped(SkipReason::MalformedRow), 3);
}

#[test]
fn unbalanced_quote_is_a_read_error() {
    // The quote swallows every later row into one value: counted as one malformed row it would pass the
    // malformed-ratio guard in a big file and those users would be removed, so the whole file is refused.
    let mut file = String::from("id,email\n1,a@b.co\n2,\"broken@x.com\n");
    for i in 0..100 {
        file.push_str(&format!("{i},u{i}@x.com\n"));
    }
    let e = read(file.as_bytes(), "email").unwrap_err();
    assert!(matches!(e, ReadError::UnclosedQuote { row: 2 }), "{e}");
    assert!(
        e.to_string().contains("opened in row 2 is never closed"),
        "{e}"
    );
}

/// Issue 12: the quote opened in row 600 of 1,000 and the file has no final line break. The old reader saw
/// 600 rows (1 malformed) and a sync removed the other 400 users.
#[test]
fn unbalanced_quote_without_a_final_line_break_is_a_read_error() {
    let mut file = String::from("id,email");
    for i in 1..=1000 {
        let q = if i == 600 { "\"" } else { "" };
        file.push_str(&format!("\n{i},{q}user{i}@example.com"));
    }
    for (name, bytes) in [
        ("plain", file.clone().into_bytes()),
        ("gzip", gzip(file.as_bytes())),
    ] {
        let e = read(&bytes, "email").unwrap_err();
        assert!(
            matches!(e, ReadError::UnclosedQuote { row: 600 }),
            "{name}: {e}"
        );
    }
    // the quote opened in the header
    let e = read(b"id,\"email\n1,a@b.co\n", "email").unwrap_err();
    assert!(matches!(e, ReadError::UnclosedQuote { row: 0 }), "{e}");
    assert!(e.to_string().contains("the header row"), "{e}");
}

/// A record over the limit is counted malformed even when its identifier is fine: the other columns make
/// it; the rows around it are read as usual.
#[test]
fn a_record_over_the_limit_is_malformed() {
    let mut file = b"email,notes\na@b.co,short\nc@d.co,".to_vec();
    file.extend(std::iter::repeat_n(b'n', 64 * 1024));
    file.extend_from_slice(b"\ne@f.co,\"quoted\nnotes\"\n");
    let r = read(&file, "email").unwrap();
    assert_eq!(r.stats.rows, 3);
    assert_eq!(r.stats.valid, 2);
    assert_eq!(r.stats.skipped(SkipReason::MalformedRow), 1);
    // the limit is configurable; exactly at the limit is within it
    let limits = |max_record_bytes| ReaderLimits {
        max_record_bytes,
        ..ReaderLimits::default()
    };
    let small = b"email\na@b.co\nccccc@d.co\n".to_vec();
    let with = |l: &ReaderLimits| {
        digest_reader_with(
            std::io::Cursor::new(small.clone()),
            false,
            "email",
            &email(),
            l,
        )
        .unwrap()
    };
    assert_eq!(with(&limits(7)).stats.valid, 1, "a@b.co\\n is 7 bytes");
    assert_eq!(with(&limits(11)).stats.valid, 2);
    assert_eq!(with(&limits(6)).stats.valid, 0);
    // a header over its own limit is refused
    let mut long_header = b"email,".to_vec();
    long_header.extend(std::iter::repeat_n(b'h', (1 << 20) + 1));
    long_header.extend_from_slice(b"\na@b.co,x\n");
    let e = read(&long_header, "email").unwrap_err();
    assert!(matches!(e, ReadError::HeaderTooLong { .. }), "{e}");
}

/// A gzip bomb: a header member, then `members` copies of one member of 1 MiB of 'z' (~1 KiB compressed),
/// all inside one quoted value. Generated as it is read: the test holds nothing big.
struct Bomb {
    member: Vec<u8>,
    current: Vec<u8>,
    pos: usize,
    left: usize,
    served: Arc<AtomicU64>,
}

impl Bomb {
    fn new(members: usize) -> (Self, Arc<AtomicU64>) {
        let served = Arc::new(AtomicU64::new(0));
        let bomb = Bomb {
            member: gzip(&vec![b'z'; 1 << 20]),
            current: gzip(b"email,blob\na@b.co,\""),
            pos: 0,
            left: members,
            served: Arc::clone(&served),
        };
        (bomb, served)
    }
}

impl Read for Bomb {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.current.len() {
            if self.left == 0 {
                return Ok(0);
            }
            self.left -= 1;
            self.current = self.member.clone();
            self.pos = 0;
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        self.served.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn a_gzip_bomb_is_refused_by_its_ratio_after_reading_little() {
    // 100,000 members: ~100 GiB decompressed from ~100 MB
    let (bomb, served) = Bomb::new(100_000);
    let e = digest_reader(bomb, true, "email", &email()).unwrap_err();
    match &e {
        ReadError::TooLarge(SizeLimit::Ratio { ratio, .. }) => assert_eq!(*ratio, 200),
        other => panic!("expected the ratio limit, got {other}"),
    }
    assert!(e.to_string().contains("gzip bomb"), "{e}");
    let served = served.load(Ordering::Relaxed);
    assert!(
        served < 1 << 20,
        "read {served} compressed bytes before refusing"
    );
}

#[test]
fn the_absolute_cap_holds_for_plain_and_gzip() {
    let limits = ReaderLimits {
        max_decompressed_bytes: 1 << 20,
        ..ReaderLimits::default()
    };
    let mut file = b"email\n".to_vec();
    while file.len() < (1 << 20) + 100 {
        file.extend_from_slice(b"someone@example.com\n");
    }
    for (name, bytes) in [("plain", file.clone()), ("gzip", gzip(&file))] {
        let e = digest_reader_with(
            std::io::Cursor::new(bytes),
            false,
            "email",
            &email(),
            &limits,
        )
        .unwrap_err();
        assert!(
            matches!(e, ReadError::TooLarge(SizeLimit::Decompressed { limit }) if limit == 1 << 20),
            "{name}: {e}"
        );
        assert!(e.to_string().contains("max_decompressed_bytes"), "{e}");
    }
    // exactly at the cap is read whole
    file.truncate(1 << 20);
    let at_cap = digest_reader_with(
        std::io::Cursor::new(file),
        false,
        "email",
        &email(),
        &limits,
    );
    assert!(at_cap.is_ok(), "{at_cap:?}");
}

#[test]
fn streams_from_a_slow_reader() {
    // a reader that hands out one byte at a time (network-like short reads), gzip included
    struct OneByte(std::io::Cursor<Vec<u8>>);
    impl Read for OneByte {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(1);
            self.0.read(&mut buf[..n])
        }
    }
    let gz = gzip("\u{FEFF}email\na@b.co\nc@d.co\n".as_bytes());
    let r = digest_reader(OneByte(std::io::Cursor::new(gz)), false, "email", &email()).unwrap();
    assert_eq!(r.set.len(), 2);
}

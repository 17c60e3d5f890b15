//! CSV records with bounded memory, over `csv_core` (the csv crate's own parser, so quoting, CR/LF/CRLF
//! endings and blank lines are read exactly as before).
//!
//! Why not `csv::Reader`: it grows one `ByteRecord` to hold a whole record, so a 400 MB line costs 400 MB,
//! and it ends a quote left open at end of file without a word. Here `csv_core` writes each field into a
//! small scratch buffer that is handed to the caller piece by piece and reused; once a record's bytes pass
//! the limit nothing more of it is handed out (it is still parsed to its end, so the next record starts at
//! the right place). Memory: the scratch buffer plus whatever the caller keeps (at most the limit).

use std::io::{self, BufRead};

use csv_core::{ReadFieldResult, Reader};

/// Unescaped field bytes are handed out in pieces of at most this size.
const SCRATCH: usize = 16 * 1024;

/// One record's shape once parsed to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// Number of fields (an empty line is not a record).
    pub fields: usize,
    /// Its bytes in the file passed the limit: its fields were handed out only up to there.
    pub too_long: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    Record(Record),
    /// The input ended inside a quoted field: everything after the opening quote would be one value.
    UnclosedQuote,
    End,
}

/// Where the current record is.
#[derive(Default)]
struct Progress {
    /// A byte other than a line break was read (blank lines before a record do not count towards it).
    started: bool,
    bytes: usize,
    field: usize,
    too_long: bool,
}

impl Progress {
    /// Accounts for one `read_field` call that consumed `consumed` and wrote `out`.
    fn step(
        &mut self,
        consumed: &[u8],
        out: &[u8],
        res: ReadFieldResult,
        limit: usize,
        field: &mut impl FnMut(usize, &[u8]),
    ) -> Option<Next> {
        if self.started {
            self.bytes += consumed.len();
        } else if let Some(p) = consumed.iter().position(|b| !matches!(b, b'\r' | b'\n')) {
            self.started = true;
            self.bytes += consumed.len() - p;
        }
        if self.bytes > limit {
            self.too_long = true;
        }
        if !self.too_long && !out.is_empty() {
            field(self.field, out);
        }
        match res {
            ReadFieldResult::InputEmpty | ReadFieldResult::OutputFull => None,
            ReadFieldResult::Field { record_end } => {
                self.field += 1;
                if !record_end {
                    return None;
                }
                let r = Record {
                    fields: self.field,
                    too_long: self.too_long,
                };
                *self = Progress::default();
                Some(Next::Record(r))
            }
            ReadFieldResult::End => Some(Next::End),
        }
    }
}

pub(crate) struct Records<R> {
    input: R,
    core: Reader,
    out: Box<[u8]>,
    limit: usize,
    rec: Progress,
    /// The end-of-input probe was fed (see `finish`).
    probed: bool,
    /// Quote-free lines are split without csv_core (see `fast_line`); off only to test the two agree.
    fast: bool,
}

impl<R: BufRead> Records<R> {
    /// `limit`: a record with more bytes than this (quotes, delimiters and its line break included) is
    /// `too_long`.
    pub fn new(input: R, limit: usize) -> Self {
        Records {
            input,
            core: Reader::new(),
            out: vec![0u8; SCRATCH].into_boxed_slice(),
            limit,
            rec: Progress::default(),
            probed: false,
            fast: true,
        }
    }

    /// Every record through csv_core (the reference the fast path is tested against).
    #[cfg(test)]
    fn slow(mut self) -> Self {
        self.fast = false;
        self
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// The input, positioned after the last record returned (its buffered bytes included). Call only
    /// right after a record: the next byte starts a record, or is the `\n` of a `\r\n` (a blank line then).
    pub fn into_inner(self) -> R {
        self.input
    }

    /// Parses the next record; `field(i, piece)` receives field `i`'s unescaped bytes in order, in pieces,
    /// for as long as the record is within the limit (an empty field gets no call).
    pub fn next(&mut self, mut field: impl FnMut(usize, &[u8])) -> io::Result<Next> {
        loop {
            let buf = match self.input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(self.finish(&mut field));
            }
            // Only between records (csv_core has consumed at most line breaks since the last one).
            if self.fast
                && !self.rec.started
                && self.rec.field == 0
                && let Some((used, rec)) = fast_line(buf, self.limit, &mut field)
            {
                self.input.consume(used);
                match rec {
                    Some(r) => return Ok(Next::Record(r)),
                    None => continue,
                }
            }
            let (res, nin, nout) = self.core.read_field(buf, &mut self.out);
            let done = self
                .rec
                .step(&buf[..nin], &self.out[..nout], res, self.limit, &mut field);
            self.input.consume(nin);
            if let Some(n) = done {
                return Ok(n);
            }
        }
    }

    /// At end of input. `csv_core` would close an open quoted field silently, so first a line break is fed
    /// as a probe: inside a quoted field it is copied as data (one byte out, no field end) - the quote was
    /// never closed. Anywhere else it ends the last record (as end of input would) or is a blank line.
    fn finish(&mut self, field: &mut impl FnMut(usize, &[u8])) -> Next {
        if !self.probed {
            self.probed = true;
            let (res, _, nout) = self.core.read_field(b"\n", &mut self.out);
            if res == ReadFieldResult::InputEmpty && nout > 0 {
                return Next::UnclosedQuote;
            }
            if let Some(n) = self.rec.step(&[], &[], res, self.limit, field) {
                return n;
            }
        }
        loop {
            let (res, _, nout) = self.core.read_field(&[], &mut self.out);
            if let Some(n) = self
                .rec
                .step(&[], &self.out[..nout], res, self.limit, field)
            {
                return n;
            }
        }
    }
}

/// A whole line at the start of `buf` with no `"` and no `\r` but one before its `\n`: its fields are what
/// lie between the commas, as csv_core would give them. `(bytes consumed, record)`; record `None`: a blank
/// line (skipped, as csv_core skips it). `None`: not such a line (no `\n` in the buffer yet, a quote, a lone
/// CR): csv_core reads it. The record's byte count is csv_core's: up to its terminator's first byte.
fn fast_line(
    buf: &[u8],
    limit: usize,
    field: &mut impl FnMut(usize, &[u8]),
) -> Option<(usize, Option<Record>)> {
    let nl = memchr::memchr(b'\n', buf)?;
    let mut line = &buf[..nl];
    if let Some(p) = memchr::memchr2(b'"', b'\r', line) {
        if p + 1 != line.len() || line[p] != b'\r' {
            return None;
        }
        line = &line[..p];
    }
    if line.is_empty() {
        return Some((nl + 1, None));
    }
    let too_long = line.len() + 1 > limit;
    let mut fields = 0;
    let mut start = 0;
    for end in memchr::memchr_iter(b',', line).chain(std::iter::once(line.len())) {
        if !too_long && end > start {
            field(fields, &line[start..end]);
        }
        fields += 1;
        start = end + 1;
    }
    Some((nl + 1, Some(Record { fields, too_long })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record with its fields' bytes as handed out.
    type Parsed = Vec<(Record, Vec<Vec<u8>>)>;

    /// Every record, the whole input in one buffer.
    fn all(input: &[u8], limit: usize) -> (Parsed, Next) {
        all_with(input, limit, input.len().max(1), true)
    }

    /// Whether the input ends inside a quoted field, by the quoting rules alone (an independent oracle).
    fn ends_in_quote(input: &[u8]) -> bool {
        #[derive(PartialEq)]
        enum S {
            Start,
            Plain,
            Quoted,
            QuoteInQuoted,
        }
        let mut s = S::Start;
        for &b in input {
            let sep = matches!(b, b',' | b'\r' | b'\n');
            s = match s {
                S::Start if b == b'"' => S::Quoted,
                S::Start | S::Plain | S::QuoteInQuoted if sep => S::Start,
                S::Start | S::Plain => S::Plain,
                S::Quoted if b == b'"' => S::QuoteInQuoted,
                S::Quoted => S::Quoted,
                S::QuoteInQuoted if b == b'"' => S::Quoted,
                S::QuoteInQuoted => S::Plain,
            };
        }
        s == S::Quoted
    }

    proptest::proptest! {
        /// Without a limit, the records are exactly the csv crate's (the reader this replaces), and an open
        /// quote at the end is reported exactly when the quoting rules say so.
        #[test]
        fn same_records_as_the_csv_crate(
            input in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'b', b' ', b',', b'"', b'\n', b'\r']),
                0..120,
            )
        ) {
            let (recs, end) = all(&input, usize::MAX);
            proptest::prop_assert_eq!(end == Next::UnclosedQuote, ends_in_quote(&input));
            if end == Next::End {
                let mut rdr = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(&input[..]);
                let want: Vec<Vec<Vec<u8>>> = rdr
                    .byte_records()
                    .map(|r| r.map(|r| r.iter().map(<[u8]>::to_vec).collect()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                let got: Vec<Vec<Vec<u8>>> = recs
                    .into_iter()
                    .map(|(r, mut f)| {
                        f.resize(r.fields, Vec::new());
                        f
                    })
                    .collect();
                proptest::prop_assert_eq!(got, want);
            }
        }
    }

    /// Every record, through a reader of `cap` bytes (lines then span buffers), fast path on or off.
    fn all_with(input: &[u8], limit: usize, cap: usize, fast: bool) -> (Parsed, Next) {
        let reader = io::BufReader::with_capacity(cap, input);
        let mut r = Records::new(reader, limit);
        if !fast {
            r = r.slow();
        }
        let mut out = Vec::new();
        loop {
            let mut got: Vec<Vec<u8>> = Vec::new();
            let n = r
                .next(|i, piece| {
                    got.resize(got.len().max(i + 1), Vec::new());
                    got[i].extend_from_slice(piece);
                })
                .unwrap();
            match n {
                Next::Record(rec) => out.push((rec, got)),
                other => return (out, other),
            }
        }
    }

    proptest::proptest! {
        /// The quote-free fast path gives csv_core's records, lengths and limit flags, whatever the buffer.
        #[test]
        fn the_fast_path_agrees_with_csv_core(
            input in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'b', b' ', b',', b'"', b'\n', b'\n', b'\r']),
                0..160,
            ),
            limit in proptest::sample::select(vec![3usize, 6, 10, usize::MAX]),
            cap in proptest::sample::select(vec![1usize, 4, 17, 8192]),
        ) {
            let (fast, fast_end) = all_with(&input, limit, cap, true);
            let (slow, slow_end) = all_with(&input, limit, cap, false);
            proptest::prop_assert_eq!(fast_end, slow_end);
            // Pieces of a too-long record may stop at different places: only its shape must agree.
            proptest::prop_assert_eq!(fast.len(), slow.len());
            for (f, s) in fast.iter().zip(&slow) {
                proptest::prop_assert_eq!(f.0, s.0);
                if !f.0.too_long {
                    proptest::prop_assert_eq!(&f.1, &s.1);
                }
            }
        }
    }

    #[test]
    fn records_as_the_csv_crate_reads_them() {
        let (recs, end) = all(b"a,b\r\n\n\"x,\"\"y\"\"\",\r\rlast", 100);
        assert_eq!(end, Next::End);
        let shapes: Vec<usize> = recs.iter().map(|(r, _)| r.fields).collect();
        assert_eq!(shapes, vec![2, 2, 1]);
        assert_eq!(recs[1].1, vec![b"x,\"y\"".to_vec()]);
        assert_eq!(recs[2].1, vec![b"last".to_vec()]);
    }

    #[test]
    fn an_open_quote_at_end_of_input_is_reported_with_or_without_a_line_break() {
        for input in [&b"a\n\"b\nc"[..], b"a\n\"b\nc\n", b"a\n\"", b"a\n\"b\"\"\n"] {
            let (recs, end) = all(input, 100);
            assert_eq!(end, Next::UnclosedQuote, "{input:?}");
            assert_eq!(recs.len(), 1);
        }
        // closed quotes, a trailing CR, a trailing delimiter: ordinary ends
        for input in [
            &b"a\n\"b\"\"\""[..],
            b"a\n\"b\"\r",
            b"a\n\"b\",",
            b"a\n\n\r\n",
        ] {
            assert_eq!(all(input, 100).1, Next::End, "{input:?}");
        }
    }

    #[test]
    fn a_long_record_is_flagged_and_its_neighbours_are_intact() {
        let mut input = b"\n\nshort,1\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * SCRATCH));
        input.extend_from_slice(b",2\nnext,3\n");
        let (recs, end) = all(&input, 1000);
        assert_eq!(end, Next::End);
        assert_eq!(recs.len(), 3);
        assert!(
            !recs[0].0.too_long,
            "blank lines before a record do not count"
        );
        assert!(recs[1].0.too_long);
        assert!(recs[1].1.iter().map(Vec::len).sum::<usize>() <= 1000);
        assert_eq!(
            recs[2],
            (
                Record {
                    fields: 2,
                    too_long: false
                },
                vec![b"next".to_vec(), b"3".to_vec()]
            )
        );
        // the limit counts the record's own bytes: exactly at the limit is fine
        assert!(!all(b"abcd\n", 5).0[0].0.too_long);
        assert!(all(b"abcd\n", 4).0[0].0.too_long);
    }
}

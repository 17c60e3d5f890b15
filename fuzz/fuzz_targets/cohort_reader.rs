//! The streaming cohort reader on arbitrary bytes (plain or gzip, any key kind): never a panic, and every
//! successful read keeps its invariants.
#![no_main]

use std::io::Cursor;

use audience_core::cohort::reader::digest_reader;
use audience_core::{KeyKind, Normalizer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: key kind, region and whether the name says .gz; the rest is the file.
    let Some((&ctl, file)) = data.split_first() else {
        return;
    };
    let kind = KeyKind::ALL[(ctl & 3) as usize];
    let region = if ctl & 4 != 0 { Some("US") } else { None };
    let gzip_name = ctl & 8 != 0;
    // Short column names so the fuzzer can hit them; 16: a blank-padded, mixed-case one.
    let column = match ctl >> 4 {
        0..=9 => "email",
        10..=13 => "a",
        14 => " E ",
        _ => "",
    };
    let Ok(n) = Normalizer::new(kind, region) else {
        return;
    };
    if let Ok(read) = digest_reader(Cursor::new(file.to_vec()), gzip_name, column, &n) {
        let c = read.counts();
        let skipped: u64 = c.skipped.values().sum();
        assert_eq!(c.rows, c.valid + skipped, "rows = valid + skipped");
        assert!(c.unique <= c.valid);
        assert_eq!(c.duplicates, c.valid - c.unique);
        assert!(
            read.set.as_slice().windows(2).all(|w| w[0] < w[1]),
            "set sorted, unique"
        );
        assert!(
            c.skipped.values().all(|v| *v > 0),
            "only reasons that occurred"
        );
    }
});

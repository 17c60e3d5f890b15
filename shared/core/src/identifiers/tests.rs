//! Every rule and example of the normalization reference (rule version 1) as a test.

use super::*;
use proptest::prelude::*;

fn n(kind: KeyKind) -> Normalizer {
    Normalizer::new(kind, None).unwrap()
}

fn n_us(kind: KeyKind) -> Normalizer {
    Normalizer::new(kind, Some("US")).unwrap()
}

fn hex_digest(kind: &Normalizer, raw: &str) -> Result<String, SkipReason> {
    kind.digest(raw).map(|d| d.to_hex())
}

fn text(kind: &Normalizer, raw: &str) -> String {
    match kind.normalize(raw) {
        Ok(Normalized::Text(t)) => t,
        other => panic!("{raw:?}: expected text, got {other:?}"),
    }
}

// ---- the reference's example table ----

#[test]
fn example_email_plus_tag_and_case() {
    let e = n(KeyKind::Email);
    assert_eq!(
        text(&e, "  Jane.Doe+ads@Example.com "),
        "jane.doe@example.com"
    );
    assert_eq!(
        hex_digest(&e, "  Jane.Doe+ads@Example.com ").unwrap(),
        "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
    );
}

#[test]
fn example_email_nothing_before_at() {
    assert_eq!(
        hex_digest(&n(KeyKind::Email), "+ads@example.com"),
        Err(SkipReason::InvalidEmail)
    );
}

#[test]
fn example_phone_us_region() {
    let p = n_us(KeyKind::Phone);
    assert_eq!(text(&p, "(415) 555-2671"), "+14155552671");
    assert_eq!(
        hex_digest(&p, "(415) 555-2671").unwrap(),
        "cb6880e416769253645cb9c6b8989154bf66a56a77fc14c81fb1019663cbb928"
    );
}

#[test]
fn example_phone_00_any_region() {
    for p in [
        n(KeyKind::Phone),
        n_us(KeyKind::Phone),
        Normalizer::new(KeyKind::Phone, Some("de")).unwrap(),
    ] {
        assert_eq!(text(&p, "0044 7911 123456"), "+447911123456");
        assert_eq!(
            hex_digest(&p, "0044 7911 123456").unwrap(),
            "20b18ac9de7b3aad174961827d8e451c410af9aedfd1d699927f4b29b81aa1fa"
        );
    }
}

#[test]
fn example_idfa() {
    let i = n(KeyKind::Idfa);
    assert_eq!(
        text(&i, "6d92078a82464ba1a3be5e83dd7ac5ab"),
        "6D92078A-8246-4BA1-A3BE-5E83DD7AC5AB"
    );
    assert_eq!(
        hex_digest(&i, "6d92078a82464ba1a3be5e83dd7ac5ab").unwrap(),
        "5d6a0a199fec9accf5d6e88aae77e9557472f0eac4bfa0ad29be71135ccf4552"
    );
}

#[test]
fn example_gaid() {
    let g = n(KeyKind::Gaid);
    assert_eq!(
        text(&g, "38400000-8CF0-11BD-B23E-10B96E40000D"),
        "38400000-8cf0-11bd-b23e-10b96e40000d"
    );
    assert_eq!(
        hex_digest(&g, "38400000-8CF0-11BD-B23E-10B96E40000D").unwrap(),
        "d4181bb455a74b3bc8b37c75ac9b2c702eb6b9930bd040b861403b31ca85634d"
    );
}

#[test]
fn example_prehashed_passes_through_for_every_key() {
    let raw = "CB6880E416769253645CB9C6B8989154BF66A56A77FC14C81FB1019663CBB928";
    for k in KeyKind::ALL {
        let norm = n(k);
        assert_eq!(
            hex_digest(&norm, raw).unwrap(),
            "cb6880e416769253645cb9c6b8989154bf66a56a77fc14c81fb1019663cbb928",
            "{k}"
        );
        assert!(matches!(norm.normalize(raw), Ok(Normalized::PreHashed(_))));
        // with blanks around it, still a digest (step 1 trims first)
        assert_eq!(
            hex_digest(&norm, &format!("\u{FEFF} {raw}\t")).unwrap(),
            "cb6880e416769253645cb9c6b8989154bf66a56a77fc14c81fb1019663cbb928"
        );
    }
}

// ---- common steps ----

#[test]
fn blank_set_is_trimmed_and_empty_is_skipped() {
    for k in KeyKind::ALL {
        let norm = n(k);
        for blank in [
            "",
            " ",
            "\t\n\r",
            "\u{0B}\u{0C}",
            "\u{A0}",
            "\u{FEFF}",
            "\u{200B}",
            "\u{2060}",
            "\u{180E}",
            "\u{3000}\u{2028}\u{85}",
        ] {
            assert_eq!(norm.digest(blank), Err(SkipReason::Empty), "{k} {blank:?}");
        }
    }
    // the same blanks around an email are removed
    let e = n(KeyKind::Email);
    let base = e.digest("a@b.co").unwrap();
    for blank in [
        "\u{A0}", "\u{FEFF}", "\u{200B}", "\u{2060}", "\u{180E}", "\u{0B}", "\u{3000}",
    ] {
        assert_eq!(
            e.digest(&format!("{blank}a@b.co{blank}")).unwrap(),
            base,
            "{blank:?}"
        );
    }
    // a character that is not in the blank set is kept (U+200C zero-width non-joiner)
    assert_ne!(e.digest("\u{200C}a@b.co").ok(), Some(base));
}

#[test]
fn sha256_test_is_anchored() {
    let e = n(KeyKind::Email);
    let digest = "cb6880e416769253645cb9c6b8989154bf66a56a77fc14c81fb1019663cbb928";
    // 64 hex inside a longer string is not a digest: it is an (invalid) email
    assert_eq!(
        e.digest(&format!("x{digest}")),
        Err(SkipReason::InvalidEmail)
    );
    assert_eq!(
        e.digest(&format!("{digest}@a.co")).unwrap(),
        sha256(format!("{digest}@a.co").as_bytes())
    );
    // 63 or 65 hex digits are not digests either
    assert_eq!(e.digest(&digest[..63]), Err(SkipReason::InvalidEmail));
    // blanks inside break the digest form (steps 1-3 only trim the ends)
    let g = n(KeyKind::Gaid);
    assert_eq!(
        g.digest(&format!("{} {}", &digest[..32], &digest[32..])),
        Err(SkipReason::InvalidDeviceId)
    );
}

// ---- EMAIL ----

#[test]
fn email_md5_is_unsupported_hash() {
    let e = n(KeyKind::Email);
    assert_eq!(
        e.digest("d41d8cd98f00b204e9800998ecf8427e"),
        Err(SkipReason::UnsupportedHash)
    );
    assert_eq!(
        e.digest(" D41D8CD98F00B204E9800998ECF8427E "),
        Err(SkipReason::UnsupportedHash)
    );
}

#[test]
fn email_blanks_inside_are_removed() {
    let e = n(KeyKind::Email);
    assert_eq!(text(&e, "ja ne@exa\u{A0}mple.com"), "jane@example.com");
    assert_eq!(text(&e, "jane @ example.com"), "jane@example.com");
}

#[test]
fn email_unicode_lowercase_with_final_sigma() {
    let e = n(KeyKind::Email);
    // full-string lowercasing maps a word-final capital sigma to ς, not σ
    let t = text(&e, "ΟΔΟΣ@Example.GR");
    assert_eq!(t, "\u{3bf}\u{3b4}\u{3bf}\u{3c2}@example.gr");
    assert!(t.contains('\u{3c2}') && !t.ends_with('\u{3c3}'), "{t}");
    assert_eq!(text(&e, "ÄBC@BÜCHER.DE"), "äbc@bücher.de");
    // no punycode: the Unicode domain is hashed as is
    assert_eq!(
        e.digest("äbc@bücher.de").unwrap(),
        sha256("äbc@bücher.de".as_bytes())
    );
}

#[test]
fn email_plus_tag_only_in_local_part_and_only_from_first_plus() {
    let e = n(KeyKind::Email);
    assert_eq!(text(&e, "jane+a+b@x.com"), "jane@x.com");
    assert_eq!(text(&e, "jane@x+y.com"), "jane@x+y.com");
    // dots are kept
    assert_eq!(text(&e, "j.a.n.e@gmail.com"), "j.a.n.e@gmail.com");
}

#[test]
fn email_validity() {
    let e = n(KeyKind::Email);
    for bad in [
        "jane",
        "jane@",
        "@x.com",
        "jane@x",
        "jane@.x.com",
        "jane@x.com.",
        "jane@x..com",
        "a@b@c.com",
        "+@x.com",
        "jane@@x.com",
    ] {
        assert_eq!(e.digest(bad), Err(SkipReason::InvalidEmail), "{bad}");
    }
    // nothing else is checked: quotes, apostrophes, repeated dots before the @
    for ok in ["o'brien@x.ie", "\"q\"@x.com", "a..b@x.com", "a@b.c"] {
        assert!(e.digest(ok).is_ok(), "{ok}");
    }
}

// ---- PHONE ----

#[test]
fn phone_md5_is_unsupported_hash() {
    assert_eq!(
        n_us(KeyKind::Phone).digest("d41d8cd98f00b204e9800998ecf8427e"),
        Err(SkipReason::UnsupportedHash)
    );
}

#[test]
fn phone_needs_region_without_plus() {
    assert_eq!(
        n(KeyKind::Phone).digest("(415) 555-2671"),
        Err(SkipReason::InvalidPhone)
    );
    assert_eq!(text(&n(KeyKind::Phone), "+1 415 555 2671"), "+14155552671");
}

#[test]
fn phone_punctuation_and_extension() {
    let p = n_us(KeyKind::Phone);
    for raw in [
        "415.555.2671",
        "415-555-2671",
        "+1 (415) 555-2671",
        "+1-415-555-2671 ext. 12",
        "1 415 555 2671",
        "+1\u{A0}415\u{2009}555 2671",
    ] {
        assert_eq!(text(&p, raw), "+14155552671", "{raw}");
    }
    // separators right after the country code (the crate alone reads `+1415` as a country code)
    for raw in [
        "+1415-555-2671",
        "+1415.555.2671",
        "+1(415)555-2671",
        "+1/415/555/2671",
        "+1\u{2010}415\u{2010}555\u{2010}2671",
    ] {
        assert_eq!(text(&p, raw), "+14155552671", "{raw}");
    }
    // a (0) after the country code, as libphonenumber accepts it
    let uk = Normalizer::new(KeyKind::Phone, Some("GB")).unwrap();
    assert_eq!(text(&uk, "+44 (0) 7911 123456"), "+447911123456");
    assert_eq!(text(&uk, "07911 123456"), "+447911123456");
    assert_eq!(
        text(&n(KeyKind::Phone), "+44(0)7911.123.456"),
        "+447911123456"
    );
}

#[test]
fn phone_invalid_numbers() {
    let p = n_us(KeyKind::Phone);
    for bad in [
        "12",
        "abc",
        "+1 555",
        "+999 1234567",
        "555-0100-9999-9999",
        "0000000000",
        "+",
        "00",
    ] {
        assert_eq!(p.digest(bad), Err(SkipReason::InvalidPhone), "{bad}");
    }
}

#[test]
fn unknown_region_is_an_error() {
    assert!(Normalizer::new(KeyKind::Phone, Some("XX")).is_err());
    assert!(Normalizer::new(KeyKind::Phone, Some("us")).is_ok());
    assert!(Normalizer::new(KeyKind::Phone, Some("")).is_ok());
}

// ---- IDFA / GAID ----

#[test]
fn device_forms() {
    let i = n(KeyKind::Idfa);
    let g = n(KeyKind::Gaid);
    let hy = "6d92078a-8246-4ba1-a3be-5e83dd7ac5ab";
    assert_eq!(text(&i, hy), "6D92078A-8246-4BA1-A3BE-5E83DD7AC5AB");
    assert_eq!(text(&g, &hy.to_uppercase()), hy);
    assert_eq!(text(&g, "6d92078a82464ba1a3be5e83dd7ac5ab"), hy);
    assert_eq!(i.digest(hy), i.digest("6D92078A82464BA1A3BE5E83DD7AC5AB"));
    // IDFA and GAID of the same id give different digests (case differs)
    assert_ne!(i.digest(hy), g.digest(hy));
    for bad in [
        "{6d92078a-8246-4ba1-a3be-5e83dd7ac5ab}",
        "urn:uuid:6d92078a-8246-4ba1-a3be-5e83dd7ac5ab",
        "6d92078a8-246-4ba1-a3be-5e83dd7ac5ab",
        "6d92078a-8246-4ba1-a3be5e83dd7ac5ab",
        "6d92078a-8246-4ba1-a3be-5e83dd7ac5a",
        "6d92078a 8246 4ba1 a3be 5e83dd7ac5ab",
        "6d92078a-8246-4ba1-a3be-5e83dd7ac5ag",
        "6d92078a82464ba1a3be5e83dd7ac5a",
        "hello",
    ] {
        assert_eq!(i.digest(bad), Err(SkipReason::InvalidDeviceId), "{bad}");
        assert_eq!(g.digest(bad), Err(SkipReason::InvalidDeviceId), "{bad}");
    }
}

#[test]
fn device_all_zero_is_opted_out_and_md5_shape_is_a_device_id() {
    for k in [KeyKind::Idfa, KeyKind::Gaid] {
        let d = n(k);
        assert_eq!(
            d.digest("00000000-0000-0000-0000-000000000000"),
            Err(SkipReason::OptedOutDeviceId)
        );
        assert_eq!(
            d.digest("00000000000000000000000000000000"),
            Err(SkipReason::OptedOutDeviceId)
        );
        // 32 hex digits is a device id without hyphens, never unsupported_hash
        assert!(d.digest("d41d8cd98f00b204e9800998ecf8427e").is_ok());
    }
}

// ---- field-level checks ----

#[test]
fn malformed_field_values() {
    let e = n(KeyKind::Email);
    assert_eq!(e.digest_field(b"a@b.co\nc"), Err(SkipReason::MalformedRow));
    assert_eq!(e.digest_field(b"a@b.co\r"), Err(SkipReason::MalformedRow));
    assert_eq!(e.digest_field(b"a\xff@b.co"), Err(SkipReason::MalformedRow));
    let long = format!("{}@b.co", "a".repeat(1020));
    assert_eq!(
        e.digest_field(long.as_bytes()),
        Err(SkipReason::MalformedRow)
    );
    let just = format!("{}@b.co", "a".repeat(1019));
    assert_eq!(just.len(), 1024);
    assert!(e.digest_field(just.as_bytes()).is_ok());
    assert_eq!(e.digest_field(b"a@b.co"), e.digest("a@b.co"));
}

#[test]
fn key_kind_and_reason_names() {
    for k in KeyKind::ALL {
        assert_eq!(k.as_str().to_lowercase().parse::<KeyKind>().unwrap(), k);
        assert_eq!(KeyKind::from_code(k.code()), Some(k));
    }
    assert_eq!("Email".parse::<KeyKind>().unwrap(), KeyKind::Email);
    assert!("mail".parse::<KeyKind>().is_err());
    for r in SkipReason::ALL {
        assert_eq!(r.as_str().parse::<SkipReason>().unwrap(), r);
        assert_eq!(SkipReason::ALL[r.index()], r);
    }
}

// ---- properties ----

fn email_like() -> impl Strategy<Value = String> {
    "[ \\t\\r\\nA-Za-z0-9.+_'@\u{0B}-]{0,40}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The ASCII fast path and the Unicode reference path agree on every ASCII input.
    #[test]
    fn email_fast_path_equals_reference(s in email_like()) {
        let e = n(KeyKind::Email);
        let v = trim_blanks(&s);
        let reference = if v.is_empty() {
            Err(SkipReason::Empty)
        } else if let Some(d) = parse_sha256_hex(v) {
            Ok(d)
        } else {
            email::normalize_unicode(v).map(|t| sha256(t.as_bytes()))
        };
        prop_assert_eq!(e.digest(&s), reference);
    }

    /// The one-pass field path equals "line-break check, UTF-8, then the reference rule" on any bytes.
    #[test]
    fn email_field_path_equals_reference(s in "[ \\t\\r\\nA-Za-z0-9.+_'@\u{0B}\u{0C}é-]{0,70}") {
        let e = n(KeyKind::Email);
        let reference = if s.contains(['\n', '\r']) {
            Err(SkipReason::MalformedRow)
        } else {
            let v = trim_blanks(&s);
            if v.is_empty() {
                Err(SkipReason::Empty)
            } else if let Some(d) = parse_sha256_hex(v) {
                Ok(d)
            } else {
                email::normalize_unicode(v).map(|t| sha256(t.as_bytes()))
            }
        };
        prop_assert_eq!(e.digest_field(s.as_bytes()), reference);
    }

    /// The one-block SHA-256 equals the library's on every length.
    #[test]
    fn short_sha256_equals_library(v in proptest::collection::vec(any::<u8>(), 0..140)) {
        let lib: [u8; 32] = Sha256::digest(&v).into();
        prop_assert_eq!(sha256(&v).0, lib);
    }

    /// Feeding a digest back in gives the same digest (pre-hashed values are never hashed twice).
    #[test]
    fn idempotent_on_digests(s in "\\PC{0,40}", kind in 0usize..4) {
        let k = KeyKind::ALL[kind];
        let norm = Normalizer::new(k, Some("US")).unwrap();
        if let Ok(d) = norm.digest(&s) {
            prop_assert_eq!(norm.digest(&d.to_hex()), Ok(d));
            prop_assert_eq!(norm.digest(&d.to_hex().to_uppercase()), Ok(d));
        }
    }

    /// Normalizing the normalized text again changes nothing.
    #[test]
    fn normalization_is_idempotent(s in "\\PC{0,40}", kind in 0usize..4) {
        let k = KeyKind::ALL[kind];
        let norm = Normalizer::new(k, Some("US")).unwrap();
        if let Ok(Normalized::Text(t)) = norm.normalize(&s) {
            prop_assert_eq!(norm.normalize(&t), Ok(Normalized::Text(t.clone())));
        }
    }

    /// Emails and device ids are case-insensitive (the rule lowercases emails and fixes device id case).
    #[test]
    fn case_insensitive_where_the_rule_says(s in email_like(), dev in "[0-9a-fA-F]{32}") {
        let e = n(KeyKind::Email);
        prop_assert_eq!(e.digest(&s.to_uppercase()), e.digest(&s.to_lowercase()));
        for k in [KeyKind::Idfa, KeyKind::Gaid] {
            let d = n(k);
            prop_assert_eq!(d.digest(&dev.to_uppercase()), d.digest(&dev.to_lowercase()));
        }
    }

    /// No input panics, for any key, through the string and the byte entry points.
    #[test]
    fn never_panics(s in "\\PC{0,80}", bytes in proptest::collection::vec(any::<u8>(), 0..80), kind in 0usize..4) {
        let k = KeyKind::ALL[kind];
        for norm in [Normalizer::new(k, None).unwrap(), Normalizer::new(k, Some("GB")).unwrap()] {
            let _ = norm.digest(&s);
            let _ = norm.normalize(&s);
            let _ = norm.digest_field(&bytes);
        }
    }

    /// Phones: the same number in different punctuation gives one digest.
    #[test]
    fn phone_punctuation_is_irrelevant(area in 201u32..989, mid in 200u32..999, last in 0u32..9999) {
        let p = n_us(KeyKind::Phone);
        let a = p.digest(&format!("({area}) {mid}-{last:04}"));
        let b = p.digest(&format!("+1 {area}.{mid}.{last:04}"));
        prop_assert_eq!(a, b);
    }
}

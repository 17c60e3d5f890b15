//! Snapshot: what a TikTok audience holds as far as we know, as a versioned binary file.
//!
//! Layout (little-endian):
//! ```text
//! magic      6 bytes  "AUDSNP"
//! format     u16      FORMAT_VERSION
//! rule       u16      normalization rule version the digests were made with
//! key kind   u8       KeyKind::code
//! reserved   3 bytes  zero
//! count      u64      number of digests
//! digests    count × 32 bytes, strictly increasing
//! checksum   u32      CRC-32 of every byte before it
//! ```
//! Written and read as streams: a 10M-digest snapshot (320 MB) is never required whole in memory by the format.

use std::io::{self, Read, Write};

use super::{Digest, DigestSet, Sorted};
use crate::identifiers::{KeyKind, RULE_VERSION};

pub const MAGIC: &[u8; 6] = b"AUDSNP";
pub const FORMAT_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 22;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub format_version: u16,
    pub rule_version: u16,
    pub key_kind: KeyKind,
    pub count: u64,
}

impl SnapshotHeader {
    /// A snapshot made under another rule version or for another key kind must never be diffed against.
    pub fn check_compatible(&self, key_kind: KeyKind) -> Result<(), SnapshotError> {
        if self.rule_version != RULE_VERSION {
            return Err(SnapshotError::RuleVersionMismatch {
                found: self.rule_version,
                expected: RULE_VERSION,
            });
        }
        if self.key_kind != key_kind {
            return Err(SnapshotError::KeyKindMismatch {
                found: self.key_kind,
                expected: key_kind,
            });
        }
        Ok(())
    }

    /// Total size in bytes of a snapshot with this header.
    pub fn file_len(&self) -> u64 {
        HEADER_LEN as u64 + self.count * 32 + 4
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a snapshot file (bad magic)")]
    BadMagic,
    #[error("unsupported snapshot format version {0}")]
    UnsupportedFormat(u16),
    #[error("unknown key kind code {0} in snapshot")]
    UnknownKeyKind(u8),
    #[error("snapshot made with normalization rule version {found}, current is {expected}")]
    RuleVersionMismatch { found: u16, expected: u16 },
    #[error("snapshot holds {found} digests, the mapping is {expected}")]
    KeyKindMismatch { found: KeyKind, expected: KeyKind },
    #[error("snapshot is truncated")]
    Truncated,
    #[error("snapshot checksum mismatch")]
    ChecksumMismatch,
    #[error("snapshot digests are not strictly increasing")]
    NotSorted,
    #[error("snapshot has trailing bytes after its checksum")]
    TrailingBytes,
    #[error("snapshot writer got {got} digests, header said {declared}")]
    CountMismatch { declared: u64, got: u64 },
    #[error("snapshot I/O error: {0}")]
    Io(#[from] io::Error),
}

impl SnapshotError {
    /// True when the file is fine but was made for another rule version or key kind.
    pub fn is_incompatible(&self) -> bool {
        matches!(
            self,
            SnapshotError::RuleVersionMismatch { .. } | SnapshotError::KeyKindMismatch { .. }
        )
    }
}

/// Streaming writer: header first, digests one by one (strictly increasing), checksum at `finish`.
pub struct SnapshotWriter<W: Write> {
    w: W,
    crc: crc32fast::Hasher,
    declared: u64,
    written: u64,
    last: Option<Digest>,
}

impl<W: Write> SnapshotWriter<W> {
    pub fn new(mut w: W, key_kind: KeyKind, count: u64) -> Result<Self, SnapshotError> {
        let mut header = [0u8; HEADER_LEN];
        header[..6].copy_from_slice(MAGIC);
        header[6..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[8..10].copy_from_slice(&RULE_VERSION.to_le_bytes());
        header[10] = key_kind.code();
        header[14..22].copy_from_slice(&count.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        w.write_all(&header)?;
        Ok(SnapshotWriter {
            w,
            crc,
            declared: count,
            written: 0,
            last: None,
        })
    }

    pub fn push(&mut self, d: &Digest) -> Result<(), SnapshotError> {
        if self.last.is_some_and(|l| l >= *d) {
            return Err(SnapshotError::NotSorted);
        }
        if self.written == self.declared {
            return Err(SnapshotError::CountMismatch {
                declared: self.declared,
                got: self.written + 1,
            });
        }
        self.crc.update(&d.0);
        self.w.write_all(&d.0)?;
        self.written += 1;
        self.last = Some(*d);
        Ok(())
    }

    pub fn finish(mut self) -> Result<W, SnapshotError> {
        if self.written != self.declared {
            return Err(SnapshotError::CountMismatch {
                declared: self.declared,
                got: self.written,
            });
        }
        let sum = self.crc.finalize();
        self.w.write_all(&sum.to_le_bytes())?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Writes a whole set.
pub fn write_snapshot<W: Write>(
    w: W,
    key_kind: KeyKind,
    set: &DigestSet,
) -> Result<W, SnapshotError> {
    let mut sw = SnapshotWriter::new(w, key_kind, set.len() as u64)?;
    for d in set.as_slice() {
        sw.push(d)?;
    }
    sw.finish()
}

/// Writes a list that may be on disk, streamed.
pub fn write_sorted<W: Write>(w: W, key_kind: KeyKind, list: &Sorted) -> Result<W, SnapshotError> {
    let mut sw = SnapshotWriter::new(w, key_kind, list.len() as u64)?;
    for d in list.iter()? {
        sw.push(&d?)?;
    }
    sw.finish()
}

/// Streaming reader: validates the header at `open`, yields digests, verifies order, count and checksum
/// when the last digest has been read (`next` returns the error there; a caller that stops early must not
/// trust what it read).
pub struct SnapshotReader<R: Read> {
    r: R,
    header: SnapshotHeader,
    crc: crc32fast::Hasher,
    remaining: u64,
    last: Option<Digest>,
    done: bool,
}

fn read_exact_or_truncated<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), SnapshotError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            SnapshotError::Truncated
        } else {
            SnapshotError::Io(e)
        }
    })
}

impl<R: Read> SnapshotReader<R> {
    pub fn open(mut r: R) -> Result<Self, SnapshotError> {
        let mut h = [0u8; HEADER_LEN];
        read_exact_or_truncated(&mut r, &mut h)?;
        if &h[..6] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let format_version = u16::from_le_bytes([h[6], h[7]]);
        if format_version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedFormat(format_version));
        }
        let rule_version = u16::from_le_bytes([h[8], h[9]]);
        let key_kind = KeyKind::from_code(h[10]).ok_or(SnapshotError::UnknownKeyKind(h[10]))?;
        let mut count = [0u8; 8];
        count.copy_from_slice(&h[14..22]);
        let count = u64::from_le_bytes(count);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&h);
        Ok(SnapshotReader {
            r,
            header: SnapshotHeader {
                format_version,
                rule_version,
                key_kind,
                count,
            },
            crc,
            remaining: count,
            last: None,
            done: false,
        })
    }

    pub fn header(&self) -> SnapshotHeader {
        self.header
    }

    fn read_trailer(&mut self) -> Result<(), SnapshotError> {
        let mut sum = [0u8; 4];
        read_exact_or_truncated(&mut self.r, &mut sum)?;
        let expected = self.crc.clone().finalize();
        if u32::from_le_bytes(sum) != expected {
            return Err(SnapshotError::ChecksumMismatch);
        }
        let mut extra = [0u8; 1];
        match self.r.read(&mut extra) {
            Ok(0) => Ok(()),
            Ok(_) => Err(SnapshotError::TrailingBytes),
            Err(e) => Err(SnapshotError::Io(e)),
        }
    }

    /// Reads everything, verifying it, into a set. Capacity is taken from the header but bounded, so a
    /// corrupt count cannot make us allocate absurd memory up front.
    pub fn read_all(mut self) -> Result<(SnapshotHeader, DigestSet), SnapshotError> {
        let cap = self.header.count.min(1 << 20) as usize;
        let mut v = Vec::with_capacity(cap);
        for d in &mut self {
            v.push(d?);
        }
        let header = self.header;
        // Order was verified while reading.
        Ok((header, DigestSet { sorted: v }))
    }
}

impl<R: Read> Iterator for SnapshotReader<R> {
    type Item = Result<Digest, SnapshotError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.remaining == 0 {
            self.done = true;
            return self.read_trailer().err().map(Err);
        }
        let mut d = [0u8; 32];
        if let Err(e) = read_exact_or_truncated(&mut self.r, &mut d) {
            self.done = true;
            return Some(Err(e));
        }
        self.crc.update(&d);
        let d = Digest(d);
        if self.last.is_some_and(|l| l >= d) {
            self.done = true;
            return Some(Err(SnapshotError::NotSorted));
        }
        self.last = Some(d);
        self.remaining -= 1;
        Some(Ok(d))
    }
}

/// Reads and verifies a whole snapshot, refusing one of another rule version or key kind.
pub fn read_snapshot<R: Read>(r: R, key_kind: KeyKind) -> Result<DigestSet, SnapshotError> {
    let reader = SnapshotReader::open(r)?;
    reader.header().check_compatible(key_kind)?;
    reader.read_all().map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u32) -> DigestSet {
        let v = (0..n)
            .map(|i| crate::identifiers::sha256(&i.to_le_bytes()))
            .collect();
        DigestSet::from_unsorted(v).0
    }

    #[test]
    fn round_trip() {
        let s = set(1000);
        let bytes = write_snapshot(Vec::new(), KeyKind::Email, &s).unwrap();
        assert_eq!(bytes.len() as u64, HEADER_LEN as u64 + 1000 * 32 + 4);
        let back = read_snapshot(&bytes[..], KeyKind::Email).unwrap();
        assert_eq!(back, s);
        let empty = write_snapshot(Vec::new(), KeyKind::Gaid, &DigestSet::default()).unwrap();
        assert!(read_snapshot(&empty[..], KeyKind::Gaid).unwrap().is_empty());
    }

    #[test]
    fn other_key_kind_or_rule_is_reported_not_diffed() {
        let bytes = write_snapshot(Vec::new(), KeyKind::Phone, &set(3)).unwrap();
        let e = read_snapshot(&bytes[..], KeyKind::Email).unwrap_err();
        assert!(e.is_incompatible(), "{e}");
        let mut other_rule = bytes.clone();
        other_rule[8] = 9;
        let e = read_snapshot(&other_rule[..], KeyKind::Phone).unwrap_err();
        assert!(
            matches!(
                e,
                SnapshotError::RuleVersionMismatch {
                    found: 9,
                    expected: 1
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn corruption_is_detected() {
        let bytes = write_snapshot(Vec::new(), KeyKind::Email, &set(10)).unwrap();
        let mut flipped = bytes.clone();
        flipped[HEADER_LEN + 5] ^= 1;
        // a flipped bit either breaks the order or the checksum
        assert!(read_snapshot(&flipped[..], KeyKind::Email).is_err());
        let truncated = &bytes[..bytes.len() - 10];
        assert!(matches!(
            read_snapshot(truncated, KeyKind::Email),
            Err(SnapshotError::Truncated)
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            read_snapshot(&trailing[..], KeyKind::Email),
            Err(SnapshotError::TrailingBytes)
        ));
        assert!(matches!(
            read_snapshot(&b"nope"[..], KeyKind::Email),
            Err(SnapshotError::Truncated)
        ));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(matches!(
            read_snapshot(&magic[..], KeyKind::Email),
            Err(SnapshotError::BadMagic)
        ));
        let mut checksum = bytes;
        let n = checksum.len();
        checksum[n - 1] ^= 0xff;
        assert!(matches!(
            read_snapshot(&checksum[..], KeyKind::Email),
            Err(SnapshotError::ChecksumMismatch)
        ));
    }

    #[test]
    fn writer_enforces_order_and_count() {
        let mut w = SnapshotWriter::new(Vec::new(), KeyKind::Email, 2).unwrap();
        w.push(&Digest([2; 32])).unwrap();
        assert!(matches!(
            w.push(&Digest([1; 32])),
            Err(SnapshotError::NotSorted)
        ));
        let w = SnapshotWriter::new(Vec::new(), KeyKind::Email, 2).unwrap();
        assert!(matches!(
            w.finish(),
            Err(SnapshotError::CountMismatch { .. })
        ));
    }
}

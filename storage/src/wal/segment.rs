//! WAL segment file format and the binary record codec.
//!
//! A segment is `<data_dir>/wal/<seq:020>.wal`; sequence numbers only grow, so file-name
//! order is write order. Bytes on disk:
//!
//! ```text
//! segment := MAGIC("TOVWAL01", 8 bytes) frame*
//! frame   := len:u32 LE | crc32(payload):u32 LE | payload[len]
//! payload := kind:u8(=1 append) | str(tenant) | varint(n_streams) | stream*
//! stream  := varint(n_labels) | (str(name) str(value))* | varint(n_entries) | entry*
//! entry   := zigzag-varint(ts - previous ts of this stream, first one absolute)
//!            | str(line) | varint(n_metadata) | (str(name) str(value))*
//! str     := varint(byte length) | utf-8 bytes
//! ```
//!
//! Varints are unsigned LEB128. The encoding is deliberately plain (no JSON, no
//! compression) so an append costs about one copy of its lines. A frame whose length runs
//! past the end of the file or whose checksum fails marks a torn tail: replay stops there
//! and truncates the file.

use crate::model::{Entry, LabelSet, PushStream};

/// First bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"TOVWAL01";
/// Bytes of a frame header (length + crc).
pub const FRAME_HEADER: usize = 8;
/// Largest payload we accept when reading; longer means a corrupt length.
pub const MAX_PAYLOAD: usize = 1 << 30;
const KIND_APPEND: u8 = 1;

/// File name of segment `seq`.
pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

/// Parse a segment file name back to its sequence number.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

/// Encode one append as a complete frame (header included).
pub fn encode_append(tenant: &str, streams: &[PushStream]) -> Vec<u8> {
    let approx: usize = streams
        .iter()
        .map(|s| 64 + s.entries.iter().map(|e| e.line.len() + 12).sum::<usize>())
        .sum();
    let mut buf = Vec::with_capacity(FRAME_HEADER + 16 + tenant.len() + approx);
    buf.extend_from_slice(&[0u8; FRAME_HEADER]);
    buf.push(KIND_APPEND);
    put_str(&mut buf, tenant);
    put_varint(&mut buf, streams.len() as u64);
    for stream in streams {
        put_varint(&mut buf, stream.labels.len() as u64);
        for (k, v) in stream.labels.pairs() {
            put_str(&mut buf, k);
            put_str(&mut buf, v);
        }
        put_varint(&mut buf, stream.entries.len() as u64);
        let mut prev = 0i64;
        for entry in &stream.entries {
            let delta = entry.ts_ns.wrapping_sub(prev);
            prev = entry.ts_ns;
            put_varint(&mut buf, ((delta << 1) ^ (delta >> 63)) as u64);
            put_str(&mut buf, &entry.line);
            put_varint(&mut buf, entry.metadata.len() as u64);
            for (k, v) in &entry.metadata {
                put_str(&mut buf, k);
                put_str(&mut buf, v);
            }
        }
    }
    let payload_len = (buf.len() - FRAME_HEADER) as u32;
    let crc = crc32fast::hash(&buf[FRAME_HEADER..]);
    buf[0..4].copy_from_slice(&payload_len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(DecodeError("unexpected end of record"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint too long"))
    }

    /// A count that must be plausible for the remaining bytes (each item takes ≥ 1 byte),
    /// so a corrupt count cannot make us allocate gigabytes.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(DecodeError("count larger than record"));
        }
        Ok(n as usize)
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.varint()?;
        let end = self
            .pos
            .checked_add(usize::try_from(len).map_err(|_| DecodeError("string too long"))?)
            .filter(|&end| end <= self.buf.len())
            .ok_or(DecodeError("string runs past record"))?;
        let s = std::str::from_utf8(&self.buf[self.pos..end])
            .map_err(|_| DecodeError("invalid utf-8"))?;
        self.pos = end;
        Ok(s)
    }
}

/// Decode a payload written by [`encode_append`].
pub fn decode_append(payload: &[u8]) -> Result<(String, Vec<PushStream>), DecodeError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    if r.u8()? != KIND_APPEND {
        return Err(DecodeError("unknown record kind"));
    }
    let tenant = r.str()?.to_owned();
    let n_streams = r.count()?;
    let mut streams = Vec::with_capacity(n_streams);
    for _ in 0..n_streams {
        let n_labels = r.count()?;
        let mut pairs = Vec::with_capacity(n_labels);
        for _ in 0..n_labels {
            let k = r.str()?.to_owned();
            let v = r.str()?.to_owned();
            pairs.push((k, v));
        }
        let n_entries = r.count()?;
        let mut entries = Vec::with_capacity(n_entries);
        let mut prev = 0i64;
        for _ in 0..n_entries {
            let z = r.varint()?;
            let delta = ((z >> 1) as i64) ^ -((z & 1) as i64);
            let ts_ns = prev.wrapping_add(delta);
            prev = ts_ns;
            let line = r.str()?.to_owned();
            let n_meta = r.count()?;
            let mut metadata = Vec::with_capacity(n_meta);
            for _ in 0..n_meta {
                let k = r.str()?.to_owned();
                let v = r.str()?.to_owned();
                metadata.push((k, v));
            }
            entries.push(Entry {
                ts_ns,
                line,
                metadata,
            });
        }
        streams.push(PushStream {
            labels: LabelSet::new(pairs),
            entries,
        });
    }
    if r.pos != payload.len() {
        return Err(DecodeError("trailing bytes after record"));
    }
    Ok((tenant, streams))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<PushStream> {
        vec![PushStream {
            labels: LabelSet::new(vec![
                ("job".into(), "api".into()),
                ("env".into(), "prod".into()),
            ]),
            entries: vec![
                Entry {
                    ts_ns: 1_700_000_000_000_000_000,
                    line: "hello ünïcode".into(),
                    metadata: vec![("trace_id".into(), "abc".into())],
                },
                Entry {
                    ts_ns: 1_699_999_999_000_000_000,
                    line: String::new(),
                    metadata: vec![],
                },
                Entry {
                    ts_ns: -5,
                    line: "negative".into(),
                    metadata: vec![],
                },
            ],
        }]
    }

    #[test]
    fn append_round_trips() -> Result<(), DecodeError> {
        let frame = encode_append("tenant-a", &sample());
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - FRAME_HEADER);
        let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        assert_eq!(crc, crc32fast::hash(&frame[FRAME_HEADER..]));
        let (tenant, streams) = decode_append(&frame[FRAME_HEADER..])?;
        assert_eq!(tenant, "tenant-a");
        assert_eq!(streams, sample());
        Ok(())
    }

    #[test]
    fn truncated_payload_is_an_error_not_a_panic() {
        let frame = encode_append("t", &sample());
        for cut in FRAME_HEADER..frame.len() - 1 {
            assert!(
                decode_append(&frame[FRAME_HEADER..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("junk.wal"), None);
    }
}

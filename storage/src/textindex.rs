//! Trigram block filters: the needle index of compacted chunk files.
//!
//! LogQL's `|= "x"` is a case-sensitive substring test, so a word-token index cannot answer
//! it (`"mallory"` also matches inside `xmallory1`). Every line containing `x` contains every
//! 3-byte substring (trigram) of `x`, so a per-block set of the trigrams present is exact
//! for pruning: a block lacking one of the needle's trigrams holds no matching line.
//!
//! A block is [`BLOCK_ROWS`] consecutive rows of a chunk file. Rows are sorted by stream,
//! so a block covers a contiguous range of stream ids, recorded with its row range and
//! time range. Blocks span streams on purpose: per-stream blocks of a one-hour file are
//! small for all but the busiest streams, and small blocks have many distinct trigrams per
//! row (a filter per stream-hour cost 5 bytes per line at 1M lines a day). Each block
//! has a bloom filter of its distinct trigrams: up to 6 bits per trigram (about 6% false
//! positives per trigram; a needle has several) and at most 8 bits per row. A block whose
//! budget falls under 2 bits per trigram gets no filter and is always read. On the
//! standard workload the filters cost about 0.7 byte per line.
//!
//! The filter also holds the trigrams of structured metadata values, and a flag records
//! whether any line of the block has a backslash, so a *field* needle (`| json | k="v"`:
//! the line has `v` unless the encoder escaped it, or metadata `k` holds it) prunes exactly
//! too (see [`TextNeedle::or_escaped`]).
//!
//! The index of `<window>/<name>.parquet` is the object `<window>/<name>.tri`, written by the
//! compactor (flushed files are recent and small; they are scanned). Format, little-endian:
//! `"TVLTRI01"`, u32 block count, then per block: u64 min stream id, u64 max stream id,
//! u32 first row, u32 rows,
//! i64 min ts, i64 max ts, u32 flags (bit 0: a line has a backslash; bits 8–15: probes),
//! u32 filter words (0: no filter), the filter as u64 words.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::model::StreamId;

/// Rows per block, at most.
pub const BLOCK_ROWS: u32 = 8192;
const MAGIC: &[u8; 8] = b"TVLTRI01";
/// Filter bits per distinct trigram, at most.
const BITS_PER_TRIGRAM: usize = 6;
/// Filter bits per row, at most: small blocks of varied lines have many trigrams per row,
/// and a filter costing more than this is worth less than reading the block.
const BITS_PER_ROW: usize = 8;
/// Below this many bits per trigram a filter rejects too little: the block gets none and
/// is always read.
const MIN_BITS_PER_TRIGRAM: usize = 2;

/// Flag: some line of the block contains a backslash.
const FLAG_BACKSLASH: u32 = 1;
/// Bits 8..16 of the flags: the filter's probe count.
const PROBES_SHIFT: u32 = 8;

/// A byte string wanted rows contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextNeedle {
    /// The bytes (needles shorter than 3 bytes never prune).
    pub bytes: Vec<u8>,
    /// Rows whose line has a backslash may hold it escaped: blocks with such a line stay.
    pub or_escaped: bool,
}

impl TextNeedle {
    /// A substring every wanted line contains literally (`|= "x"`).
    pub fn literal(bytes: impl Into<Vec<u8>>) -> TextNeedle {
        TextNeedle {
            bytes: bytes.into(),
            or_escaped: false,
        }
    }
}

/// The index path of a chunk file path.
pub fn index_path(chunk_path: &str) -> String {
    let stem = chunk_path.strip_suffix(".parquet").unwrap_or(chunk_path);
    format!("{stem}.tri")
}

/// One block's filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Smallest stream id in the block (rows are sorted by stream).
    pub min_stream: StreamId,
    /// Largest stream id in the block.
    pub max_stream: StreamId,
    /// First row (0-based, in file order).
    pub first_row: u32,
    /// Rows.
    pub rows: u32,
    /// Smallest timestamp.
    pub min_ts: i64,
    /// Largest timestamp.
    pub max_ts: i64,
    flags: u32,
    bits: Vec<u64>,
}

impl Block {
    fn may_contain(&self, trigram: u32) -> bool {
        let m = self.bits.len() as u64 * 64;
        if m == 0 {
            // No filter: the block is always read.
            return true;
        }
        let k = u64::from((self.flags >> PROBES_SHIFT) & 0xff).max(1);
        probes(trigram, m, k).all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

fn probes(trigram: u32, m: u64, k: u64) -> impl Iterator<Item = u64> {
    let h = (u64::from(trigram) ^ 0x5bd1_e995).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let h1 = h >> 32;
    let h2 = (h & 0xffff_ffff) | 1;
    (0..k).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % m)
}

/// The trigrams of `s` (none when it is shorter than 3 bytes).
pub fn trigrams(s: &[u8]) -> Vec<u32> {
    let mut out: Vec<u32> = s.windows(3).map(trigram).collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[inline]
fn trigram(w: &[u8]) -> u32 {
    (u32::from(w[0]) << 16) | (u32::from(w[1]) << 8) | u32::from(w[2])
}

/// A chunk file's block filters, in row order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextIndex {
    /// Blocks, by first row.
    pub blocks: Vec<Block>,
}

impl TextIndex {
    /// Row ranges of blocks of `streams` (sorted) overlapping `[start, end)` whose filters
    /// hold every trigram of every needle. Needles shorter than 3 bytes do not prune.
    pub fn candidate_rows(
        &self,
        streams: &[StreamId],
        start: i64,
        end: i64,
        needles: &[TextNeedle],
    ) -> Vec<Range<u32>> {
        let grams: Vec<(bool, Vec<u32>)> = needles
            .iter()
            .map(|n| (n.or_escaped, trigrams(&n.bytes)))
            .collect();
        let mut out: Vec<Range<u32>> = Vec::new();
        for b in &self.blocks {
            let first = streams.partition_point(|&s| s < b.min_stream);
            let selected = streams.get(first).is_some_and(|&s| s <= b.max_stream);
            if b.min_ts >= end || b.max_ts < start || !selected {
                continue;
            }
            let escaped = b.flags & FLAG_BACKSLASH != 0;
            let keep = grams.iter().all(|(or_escaped, g)| {
                (*or_escaped && escaped) || g.iter().all(|&t| b.may_contain(t))
            });
            if !keep {
                continue;
            }
            let r = b.first_row..b.first_row + b.rows;
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }

    /// Approximate bytes held in memory.
    pub fn memory_size(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| b.bits.len() * 8 + std::mem::size_of::<Block>())
            .sum()
    }

    /// Serialise (format in the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.memory_size());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        for b in &self.blocks {
            out.extend_from_slice(&b.min_stream.to_le_bytes());
            out.extend_from_slice(&b.max_stream.to_le_bytes());
            out.extend_from_slice(&b.first_row.to_le_bytes());
            out.extend_from_slice(&b.rows.to_le_bytes());
            out.extend_from_slice(&b.min_ts.to_le_bytes());
            out.extend_from_slice(&b.max_ts.to_le_bytes());
            out.extend_from_slice(&b.flags.to_le_bytes());
            out.extend_from_slice(&(b.bits.len() as u32).to_le_bytes());
            for w in &b.bits {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    /// Parse; any inconsistency is [`Error::Corrupt`], never a panic.
    pub fn decode(path: &str, data: &[u8]) -> Result<TextIndex> {
        let corrupt = |detail: &str| Error::Corrupt {
            path: path.to_string(),
            detail: detail.to_string(),
        };
        let mut r = Reader { data, pos: 0 };
        if r.take(8).ok_or_else(|| corrupt("truncated header"))? != MAGIC {
            return Err(corrupt("not a trigram index"));
        }
        let n = r.u32().ok_or_else(|| corrupt("truncated header"))? as usize;
        let mut blocks = Vec::with_capacity(n.min(data.len() / 36));
        for _ in 0..n {
            let block = (|| {
                let min_stream = r.u64()?;
                let max_stream = r.u64()?;
                let first_row = r.u32()?;
                let rows = r.u32()?;
                let min_ts = r.u64()? as i64;
                let max_ts = r.u64()? as i64;
                let flags = r.u32()?;
                let words = r.u32()? as usize;
                let raw = r.take(words.checked_mul(8)?)?;
                let bits = raw
                    .chunks_exact(8)
                    .map(|c| {
                        let mut w = [0u8; 8];
                        w.copy_from_slice(c);
                        u64::from_le_bytes(w)
                    })
                    .collect();
                Some(Block {
                    min_stream,
                    max_stream,
                    first_row,
                    rows,
                    min_ts,
                    max_ts,
                    flags,
                    bits,
                })
            })()
            .ok_or_else(|| corrupt("truncated block"))?;
            blocks.push(block);
        }
        if r.pos != data.len() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(TextIndex { blocks })
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Some(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Option<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Some(u64::from_le_bytes(b))
    }
}

/// Builds a [`TextIndex`] from rows pushed in file order.
pub struct TextIndexBuilder {
    /// One bit per possible trigram (2^24 bits): which ones the open block has.
    seen: Vec<u64>,
    distinct: Vec<u32>,
    flags: u32,
    /// Open block: (min stream, max stream, first row, rows, min ts, max ts).
    open: Option<(StreamId, StreamId, u32, u32, i64, i64)>,
    blocks: Vec<Block>,
}

impl Default for TextIndexBuilder {
    fn default() -> Self {
        TextIndexBuilder {
            seen: vec![0; (1 << 24) / 64],
            distinct: Vec::new(),
            flags: 0,
            open: None,
            blocks: Vec::new(),
        }
    }
}

impl TextIndexBuilder {
    /// Add row `row` (rows must come in order, grouped by stream) with its line and the
    /// values of its structured metadata.
    pub fn push<'a>(
        &mut self,
        row: u32,
        stream: StreamId,
        ts: i64,
        line: &[u8],
        metadata_values: impl IntoIterator<Item = &'a [u8]>,
    ) {
        if matches!(&self.open, Some((_, _, _, rows, _, _)) if *rows >= BLOCK_ROWS) {
            self.close();
        }
        match &mut self.open {
            Some((lo, hi, _, rows, min, max)) => {
                *lo = (*lo).min(stream);
                *hi = (*hi).max(stream);
                *rows += 1;
                *min = (*min).min(ts);
                *max = (*max).max(ts);
            }
            None => self.open = Some((stream, stream, row, 1, ts, ts)),
        }
        if memchr::memchr(b'\\', line).is_some() {
            self.flags |= FLAG_BACKSLASH;
        }
        self.add(line);
        for v in metadata_values {
            self.add(v);
        }
    }

    fn add(&mut self, text: &[u8]) {
        for w in text.windows(3) {
            let g = trigram(w);
            let (word, bit) = ((g / 64) as usize, g % 64);
            if self.seen[word] & (1 << bit) == 0 {
                self.seen[word] |= 1 << bit;
                self.distinct.push(g);
            }
        }
    }

    fn close(&mut self) {
        let Some((min_stream, max_stream, first_row, rows, min_ts, max_ts)) = self.open.take()
        else {
            return;
        };
        let n = self.distinct.len();
        let budget = (n * BITS_PER_TRIGRAM).min(rows as usize * BITS_PER_ROW);
        let mut flags = std::mem::take(&mut self.flags);
        let mut bits = Vec::new();
        if n > 0 && budget >= n * MIN_BITS_PER_TRIGRAM {
            let words = budget.div_ceil(64);
            let m = words as u64 * 64;
            // The optimal probe count is (bits per trigram) · ln 2.
            let k = ((m as f64 / n as f64) * std::f64::consts::LN_2)
                .round()
                .clamp(1.0, 4.0) as u64;
            flags |= (k as u32) << PROBES_SHIFT;
            bits = vec![0u64; words];
            for &g in &self.distinct {
                for bit in probes(g, m, k) {
                    bits[(bit / 64) as usize] |= 1 << (bit % 64);
                }
            }
        }
        for &g in &self.distinct {
            self.seen[(g / 64) as usize] = 0;
        }
        self.distinct.clear();
        self.blocks.push(Block {
            min_stream,
            max_stream,
            first_row,
            rows,
            min_ts,
            max_ts,
            flags,
            bits,
        });
    }

    /// The finished index.
    pub fn finish(mut self) -> TextIndex {
        self.close();
        TextIndex {
            blocks: self.blocks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_without_a_needle_trigram_are_skipped_and_round_trip() -> Result<()> {
        let mut b = TextIndexBuilder::default();
        let mut row = 0;
        for i in 0..(BLOCK_ROWS + 1000) {
            let line = if i == 5 {
                "user=mallory action=DELETE".to_string()
            } else {
                format!("user=alice action=READ id={i}")
            };
            b.push(row, 1, i64::from(i), line.as_bytes(), []);
            row += 1;
        }
        // Stream 2 shares the second block with stream 1's last 1000 rows.
        b.push(
            row,
            2,
            7,
            br#"{"msg":"needle-7f3a9c in stream 2","user":"\u007a\u0071\u0078\u006a\u006b\u0077"}"#,
            [b"trace-abc".as_slice()],
        );
        for _ in 0..199 {
            row += 1;
            b.push(row, 2, 8, b"-", []);
        }
        let index = b.finish();
        assert_eq!(index.blocks.len(), 2);
        assert!(index.blocks.iter().all(|b| !b.bits.is_empty()));
        assert_eq!(
            (index.blocks[1].min_stream, index.blocks[1].max_stream),
            (1, 2)
        );
        let needle = |n: &str| vec![TextNeedle::literal(n.as_bytes())];
        let field = |n: &str| {
            vec![TextNeedle {
                bytes: n.as_bytes().to_vec(),
                or_escaped: true,
            }]
        };
        let second = BLOCK_ROWS..BLOCK_ROWS + 1200;
        // Metadata values are indexed; an escaped field value keeps its block.
        assert_eq!(
            index.candidate_rows(&[2], 0, 9, &needle("trace-abc")),
            vec![second.clone()]
        );
        assert!(index
            .candidate_rows(&[2], 0, 9, &needle("zqxjkw"))
            .is_empty());
        assert_eq!(
            index.candidate_rows(&[2], 0, 9, &field("zqxjkw")),
            vec![second.clone()]
        );
        assert!(index
            .candidate_rows(&[1], 0, 7, &field("zqxjkw"))
            .is_empty());
        assert_eq!(
            index.candidate_rows(&[1, 2], 0, i64::MAX, &needle("mallory")),
            vec![0..BLOCK_ROWS]
        );
        assert_eq!(
            index.candidate_rows(&[1, 2], 0, i64::MAX, &needle("needle-7f3a9c")),
            vec![second.clone()]
        );
        // Stream and time restrictions, and short needles that cannot prune.
        assert!(index
            .candidate_rows(&[3], 0, i64::MAX, &needle("user"))
            .is_empty());
        assert!(index
            .candidate_rows(&[1], i64::MAX - 1, i64::MAX, &needle("user"))
            .is_empty());
        assert_eq!(
            index.candidate_rows(&[1], i64::from(BLOCK_ROWS), i64::MAX, &needle("id")),
            vec![second]
        );
        let encoded = index.encode();
        assert_eq!(TextIndex::decode("x", &encoded)?, index);
        for cut in [0, 7, 12, 40, encoded.len() - 1] {
            assert!(TextIndex::decode("x", &encoded[..cut]).is_err());
        }

        // A few varied lines: a filter would cost more than reading them, so none.
        let mut small = TextIndexBuilder::default();
        small.push(0, 3, 8, b"a handful of quite varied words in one line", []);
        let small = small.finish();
        assert!(small.blocks[0].bits.is_empty());
        assert_eq!(
            small.candidate_rows(&[3], 0, 9, &needle("absent-thing")),
            vec![0..1]
        );
        Ok(())
    }

    #[test]
    fn every_line_s_trigrams_pass_its_block() {
        let lines = [
            "a",
            "ab",
            "abc",
            "{\"k\":\"v\"}",
            "ünïcödé line",
            "x y z 123",
        ];
        let mut b = TextIndexBuilder::default();
        for i in 0..300u32 {
            let l = lines[i as usize % lines.len()];
            b.push(i, 9, 0, l.as_bytes(), []);
        }
        let index = b.finish();
        assert!(!index.blocks[0].bits.is_empty());
        for l in lines {
            for w in l.as_bytes().windows(3) {
                assert_eq!(
                    index
                        .candidate_rows(&[9], 0, 1, &[TextNeedle::literal(w)])
                        .len(),
                    1,
                    "{l}"
                );
            }
        }
    }
}

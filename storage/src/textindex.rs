//! Trigram block filters: the needle index of compacted chunk files.
//!
//! LogQL's `|= "x"` is a case-sensitive substring test, so a word-token index cannot answer
//! it (`"mallory"` also matches inside `xmallory1`). Every line containing `x` contains every
//! 3-byte substring (trigram) of `x`, so a per-block set of the trigrams present is exact
//! for pruning: a block lacking one of the needle's trigrams holds no matching line.
//!
//! A block is at most [`BLOCK_ROWS`] consecutive rows of a chunk file; the compactor cuts
//! blocks where pages of the line column start ([`TextIndexBuilder::cut`]), so that reading
//! a block decompresses one page. Rows are grouped by stream
//! ([`crate::order`]), so a block covers a few streams, recorded as their id range (which
//! may include ids of streams elsewhere in the file: scans also restrict rows to the
//! selected streams' ranges), with its row range and time range. Blocks span streams on purpose: per-stream blocks of a one-hour file are
//! small for all but the busiest streams, and small blocks have many distinct trigrams per
//! row (a filter per stream-hour cost 5 bytes per line at 1M lines a day). Each block
//! has a bloom filter of its distinct trigrams: up to 6 bits per trigram (about 6% false
//! positives per trigram; a needle has several) and at most 8 bits per row. A block whose
//! budget falls under 2 bits per trigram gets no filter and is always read. On the
//! standard workload the filters cost about 0.3 byte per line.
//!
//! The filter also holds the trigrams of structured metadata values, and of every line
//! with a backslash also those of its unescaped form (see [`unescape`]), so a *field*
//! needle (`| json | k="v"`: the line has `v`, perhaps escaped, or metadata `k` holds it)
//! prunes exactly too. Version 1 and 2 indexes lack the unescaped forms: there a flag
//! records whether any line of the block has a backslash, and such blocks stay for field
//! needles (see [`TextNeedle::or_escaped`]).
//!
//! # Hex tokens
//! Trigrams made only of digits and `a`–`f` are left out (see [`trigrams`]), so a needle
//! that is an id (`5b2e9d41-c7a0-4f3e-a9d2-7f3a9c01e5d8`, a trace id) would prune by its
//! few other trigrams only, and the dashes of every UUID in a block put those in every
//! block. Each block therefore has a second filter, of its *hex tokens*: maximal runs of
//! `[0-9a-f]` at least [`MIN_TOKEN`] bytes long, in lines and metadata values (about one
//! byte per id). A run of the needle is certain to be a whole run of a matching line only
//! where the needle itself bounds it by other bytes: its inner runs always, its first and
//! last ones only when the needle's occurrence is bounded too ([`TextNeedle::bounded`]).
//! A parsed field value is: the JSON and logfmt parsers take values from between quotes,
//! `=`, `:`, `,`, brackets, blanks or the line's ends, and a metadata value is whole.
//! A plain `|= "<trace id>"` may sit inside a longer run, so it gets no token.
//!
//! # Format
//! The index of `<window>/<name>.parquet` is the object `<window>/<name>.tri`, written by the
//! compactor (flushed files are recent and small; they are scanned). Format, little-endian:
//! `"TVLTRI01"`, u32 block count, then per block: u64 min stream id, u64 max stream id,
//! u32 first row, u32 rows,
//! i64 min ts, i64 max ts, u32 flags (bit 0: a line has a backslash; bit 1: the block has a
//! token filter; bits 8–15: trigram probes; bits 16–23: token probes),
//! u32 filter words (0: no filter), the filter as u64 words; version 3 (`"TVLTRI03"`) then
//! has u32 token filter words and the token filter's words (no words and bit 1 set: the
//! block has no token). Version 2 and later then hold the file's [`MinuteCounts`]: u32
//! stream count, then per stream: varint stream id delta (from the previous stream), zigzag
//! varint first minute, varint minutes, and one varint row count per minute (0 for a minute
//! without rows). Versions 1 and 2 stay readable (no counts, no token filters).
//!
//! # Field statistics
//! A query such as `| json | duration_ms > 1000` keeps only rows whose parsed field passes a
//! numeric comparison, and no needle says which lines those are. With a field extractor
//! ([`crate::schema::FieldExtractor`], supplied by the query layer, which knows the
//! parsers) the compactor records per block, for every field name the extractor reports,
//! the smallest and largest numeric value and whether any row's value was not a number.
//! A block where every row's field is a number outside the wanted range, or where no row
//! has the field at all, holds no wanted row ([`FieldBound`]). Version 4 (`"TVLTRI04"`)
//! appends, after the minute counts: u32 name count, each name as u16 length and bytes,
//! then per block: u8 kind (0: no statistics; 1: every field of every row recorded; 2:
//! some names were past [`MAX_FIELD_NAMES`], so a name's absence proves nothing), u16
//! entry count, and per entry u16 name index, u8 (1: every value a number), f64 min,
//! f64 max.
//!
//! # Minute counts
//! `count_over_time` and `rate` without a pipeline only need how many rows each stream has
//! in each window. The sidecar keeps, per stream, the rows of every minute
//! `((m − 1)·60 s, m·60 s]` (Loki's windows are open on the left): a query whose windows
//! start and end on whole minutes sums them instead of reading the file. Mostly one byte
//! per stream-minute.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::model::StreamId;

/// Rows per block, at most.
pub const BLOCK_ROWS: u32 = 8192;
const MAGIC_V1: &[u8; 8] = b"TVLTRI01";
const MAGIC_V2: &[u8; 8] = b"TVLTRI02";
const MAGIC_V3: &[u8; 8] = b"TVLTRI03";
const MAGIC: &[u8; 8] = b"TVLTRI04";
/// Distinct field names a file's statistics track; rows' further names leave their blocks
/// without the proof of absence (kind 2).
pub const MAX_FIELD_NAMES: usize = 1024;
/// Shortest run of `[0-9a-f]` indexed as a hex token: shorter ones (`c7a0`, numbers) are
/// few enough to be in most blocks anyway.
pub const MIN_TOKEN: usize = 8;
/// Token filter bits per distinct token, at most (with 4 probes, about 6% false positives
/// per token).
const BITS_PER_TOKEN: usize = 6;
/// Token filter bits per row, at most: lines full of hashes would otherwise cost more than
/// the filter saves.
const TOKEN_BITS_PER_ROW: usize = 24;
/// Below this many bits per token the block gets no token filter (the tokens never prune
/// it).
const MIN_BITS_PER_TOKEN: usize = 3;
/// Nanoseconds per minute.
pub const MINUTE_NS: i64 = 60_000_000_000;
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
/// Flag: lines with a backslash were indexed unescaped too (version 3).
const FLAG_UNESCAPED: u32 = 4;
/// Flag: the block has a token filter (which may be empty: no token at all).
const FLAG_TOKENS: u32 = 2;
/// Bits 8..16 of the flags: the trigram filter's probe count.
const PROBES_SHIFT: u32 = 8;
/// Bits 16..24 of the flags: the token filter's probe count.
const TOKEN_PROBES_SHIFT: u32 = 16;

/// A byte string wanted rows contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextNeedle {
    /// The bytes (needles shorter than 3 bytes never prune).
    pub bytes: Vec<u8>,
    /// Rows whose line has a backslash may hold it escaped: blocks with such a line stay.
    pub or_escaped: bool,
    /// The occurrence that matters is preceded and followed by a byte outside `[0-9a-f]`
    /// (or the text's ends), so its first and last hex runs are whole tokens too.
    pub bounded: bool,
}

impl TextNeedle {
    /// A substring every wanted line contains literally (`|= "x"`).
    pub fn literal(bytes: impl Into<Vec<u8>>) -> TextNeedle {
        TextNeedle {
            bytes: bytes.into(),
            or_escaped: false,
            bounded: false,
        }
    }

    /// The value of a parsed field (`| json | k="v"`): in the line unless escaped, and
    /// bounded there (see the module doc).
    pub fn field(bytes: impl Into<Vec<u8>>) -> TextNeedle {
        TextNeedle {
            bytes: bytes.into(),
            or_escaped: true,
            bounded: true,
        }
    }

    /// A whole structured-metadata value (`| k="v"` before any parser, `k` not a stream
    /// label).
    pub fn metadata(bytes: impl Into<Vec<u8>>) -> TextNeedle {
        TextNeedle {
            bytes: bytes.into(),
            or_escaped: false,
            bounded: true,
        }
    }

    /// Hashes of the hex tokens every wanted line (or metadata value) has.
    pub fn tokens(&self) -> Vec<u64> {
        let b = &self.bytes;
        let mut out: Vec<u64> = hex_runs(b)
            .filter(|r| self.bounded || (r.start > 0 && r.end < b.len()))
            .filter_map(|r| b.get(r).map(token_hash))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[inline]
fn is_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

/// The maximal runs of `[0-9a-f]` in `s` at least [`MIN_TOKEN`] long.
fn hex_runs(s: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < s.len() {
            while i < s.len() && !is_hex(s[i]) {
                i += 1;
            }
            let start = i;
            while i < s.len() && is_hex(s[i]) {
                i += 1;
            }
            if i - start >= MIN_TOKEN {
                return Some(start..i);
            }
        }
        None
    })
}

/// `line` with the escapes of JSON strings and quoted logfmt values (`\"`, `\\`, `\/`,
/// `\b`, `\f`, `\n`, `\r`, `\t`, `\uXXXX` with surrogate pairs; a lone surrogate becomes
/// U+FFFD) replaced by what they stand for, left to right; anything else is kept as is.
/// A parsed value is then a substring of the result even when the encoder escaped it.
/// Hand-written: JSON libraries unescape one well-formed string, not a whole line that
/// may be logfmt, truncated or not JSON at all.
pub fn unescape(line: &[u8]) -> Vec<u8> {
    let hex4 = |at: usize| -> Option<u32> {
        let digits = std::str::from_utf8(line.get(at..at.checked_add(4)?)?).ok()?;
        u32::from_str_radix(digits, 16).ok()
    };
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        let next = line.get(i + 1).copied();
        if c != b'\\' || next.is_none() {
            out.push(c);
            i += 1;
            continue;
        }
        let simple = match next {
            Some(b'"') => Some(b'"'),
            Some(b'\\') => Some(b'\\'),
            Some(b'/') => Some(b'/'),
            Some(b'b') => Some(0x08),
            Some(b'f') => Some(0x0c),
            Some(b'n') => Some(b'\n'),
            Some(b'r') => Some(b'\r'),
            Some(b't') => Some(b'\t'),
            _ => None,
        };
        if let Some(d) = simple {
            out.push(d);
            i += 2;
            continue;
        }
        let Some(hi) = (next == Some(b'u')).then(|| hex4(i + 2)).flatten() else {
            out.push(c);
            i += 1;
            continue;
        };
        let mut len = 6;
        let mut cp = hi;
        if (0xd800..0xdc00).contains(&hi) {
            let lo = (line.get(i + 6..i + 8) == Some(b"\\u".as_slice()))
                .then(|| hex4(i + 8))
                .flatten()
                .filter(|lo| (0xdc00..0xe000).contains(lo));
            match lo {
                Some(lo) => {
                    cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                    len = 12;
                }
                None => cp = 0xfffd,
            }
        } else if (0xdc00..0xe000).contains(&hi) {
            cp = 0xfffd;
        }
        let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        i += len;
    }
    out
}

/// A token's hash: FNV-1a, then a multiply-xorshift finalizer. Written to disk, so it must
/// never change (hand-written for that reason: library hashers do not promise stability).
fn token_hash(token: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in token {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The index path of a chunk file path.
pub fn index_path(chunk_path: &str) -> String {
    let stem = chunk_path.strip_suffix(".parquet").unwrap_or(chunk_path);
    format!("{stem}.tri")
}

/// One block's filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Smallest stream id in the block.
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
    token_bits: Vec<u64>,
    /// Field statistics (version 4, with a field extractor).
    fields: Option<BlockFields>,
}

/// A block's field statistics (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlockFields {
    /// Every field name of every row is among `stats` (none was past the name cap).
    complete: bool,
    /// By name index (into [`TextIndex::field_names`]): (every value a number, min bits,
    /// max bits). Bits of `f64`, so the block stays `Eq`.
    stats: Vec<(u16, bool, u64, u64)>,
}

/// A numeric comparison every wanted row's field satisfies: rows without the field, or
/// whose value is a number failing it, are not wanted (`| json | duration_ms > 1000`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldBound {
    /// The field (label) name, as the extractor reports it.
    pub name: String,
    /// The comparison.
    pub op: FieldOp,
    /// The literal it compares with.
    pub value: f64,
}

/// Comparisons [`FieldBound`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOp {
    /// `==`
    Eq,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl FieldBound {
    /// Whether some value in `[min, max]` passes.
    fn admits(&self, min: f64, max: f64) -> bool {
        let v = self.value;
        match self.op {
            FieldOp::Eq => min <= v && v <= max,
            FieldOp::Gt => max > v,
            FieldOp::Ge => max >= v,
            FieldOp::Lt => min < v,
            FieldOp::Le => min <= v,
        }
    }
}

impl Block {
    /// Whether a row of the block may pass `bound` (`names`: the file's field names).
    fn may_satisfy(&self, bound: &FieldBound, names: &[String]) -> bool {
        let Some(fields) = &self.fields else {
            return true;
        };
        let entry = names
            .iter()
            .position(|n| *n == bound.name)
            .and_then(|i| fields.stats.iter().find(|e| usize::from(e.0) == i));
        match entry {
            // No row has the field: none passes.
            None => !fields.complete,
            Some(&(_, numeric, min, max)) => {
                !numeric || bound.admits(f64::from_bits(min), f64::from_bits(max))
            }
        }
    }

    fn may_contain(&self, trigram: u32) -> bool {
        let m = self.bits.len() as u64 * 64;
        if m == 0 {
            // No filter: the block is always read.
            return true;
        }
        let k = u64::from((self.flags >> PROBES_SHIFT) & 0xff).max(1);
        probes(trigram_hash(trigram), m, k)
            .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    fn may_contain_token(&self, token: u64) -> bool {
        if self.flags & FLAG_TOKENS == 0 {
            // No token filter: tokens never prune the block.
            return true;
        }
        let m = self.token_bits.len() as u64 * 64;
        if m == 0 {
            // A token filter with no word: the block has no token at all.
            return false;
        }
        let k = u64::from((self.flags >> TOKEN_PROBES_SHIFT) & 0xff).max(1);
        probes(token, m, k).all(|bit| self.token_bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

/// Bit budget of a block's bloom filter.
#[derive(Clone, Copy)]
struct Budget {
    /// Bits per distinct item, at most.
    per_item: usize,
    /// Bits per row, at most.
    per_row: usize,
    /// Below this many bits per item there is no filter.
    min_per_item: usize,
}

/// The bloom filter of `hashes` (distinct) for a block of `rows` rows, with its probe
/// count; `None` when there is nothing to hold or the budget is too small to prune.
fn bloom(hashes: &[u64], rows: u32, budget: Budget) -> Option<(Vec<u64>, u32)> {
    let n = hashes.len();
    let bits_total = (n * budget.per_item).min(rows as usize * budget.per_row);
    if n == 0 || bits_total < n * budget.min_per_item {
        return None;
    }
    let words = bits_total.div_ceil(64);
    let m = words as u64 * 64;
    // The optimal probe count is (bits per item) · ln 2.
    let k = ((m as f64 / n as f64) * std::f64::consts::LN_2)
        .round()
        .clamp(1.0, 4.0) as u64;
    let mut bits = vec![0u64; words];
    for &h in hashes {
        for bit in probes(h, m, k) {
            bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }
    Some((bits, k as u32))
}

/// A trigram's filter hash (written to disk: never change it).
fn trigram_hash(trigram: u32) -> u64 {
    (u64::from(trigram) ^ 0x5bd1_e995).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Bloom probe positions of a 64-bit hash in a filter of `m` bits (double hashing).
fn probes(h: u64, m: u64, k: u64) -> impl Iterator<Item = u64> {
    let h1 = h >> 32;
    let h2 = (h & 0xffff_ffff) | 1;
    (0..k).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % m)
}

/// The indexed trigrams of `s` (none when it is shorter than 3 bytes): all but those made
/// only of digits and lowercase hex letters. Ids, hashes, numbers and timestamps fill every
/// block with nearly all 4,096 such trigrams, so they would prune nothing while taking
/// most of the filter's bits from the trigrams that do (`mallory`, `needle-`).
pub fn trigrams(s: &[u8]) -> Vec<u32> {
    let mut out: Vec<u32> = s.windows(3).filter(|w| indexed(w)).map(trigram).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether a trigram goes into the filters (see [`trigrams`]).
#[inline]
fn indexed(w: &[u8]) -> bool {
    !w.iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
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
    /// Rows per stream per minute (absent in version 1 indexes).
    pub counts: Option<MinuteCounts>,
    /// Names of the blocks' field statistics (version 4).
    pub field_names: Vec<String>,
}

/// The minute `((m − 1)·60 s, m·60 s]` holding `ts_ns`: `m = ⌈ts / 60 s⌉`.
pub fn minute_of(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(MINUTE_NS) + i64::from(ts_ns.rem_euclid(MINUTE_NS) != 0)
}

/// Rows of a file per stream per minute (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinuteCounts {
    /// By stream id: (stream, first minute, rows of each minute from the first).
    pub streams: Vec<(StreamId, i64, Vec<u32>)>,
}

impl MinuteCounts {
    /// Calls `f(stream, minute, rows)` for each non-empty minute of `streams` (sorted)
    /// inside `first..=last`.
    pub fn for_each(
        &self,
        streams: &[StreamId],
        first: i64,
        last: i64,
        mut f: impl FnMut(StreamId, i64, u32),
    ) {
        for (stream, start, rows) in &self.streams {
            if streams.binary_search(stream).is_err() {
                continue;
            }
            for (i, &n) in rows.iter().enumerate() {
                let m = start.saturating_add(i as i64);
                if n > 0 && m >= first && m <= last {
                    f(*stream, m, n);
                }
            }
        }
    }

    fn memory_size(&self) -> usize {
        self.streams.iter().map(|(_, _, r)| r.len() * 4 + 40).sum()
    }
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
        self.candidate_rows_with(streams, start, end, needles, &[])
    }

    /// [`Self::candidate_rows`] of blocks whose field statistics also let every bound
    /// pass.
    pub fn candidate_rows_with(
        &self,
        streams: &[StreamId],
        start: i64,
        end: i64,
        needles: &[TextNeedle],
        bounds: &[FieldBound],
    ) -> Vec<Range<u32>> {
        let grams: Vec<(bool, Vec<u32>, Vec<u64>)> = needles
            .iter()
            .map(|n| (n.or_escaped, trigrams(&n.bytes), n.tokens()))
            .collect();
        let mut out: Vec<Range<u32>> = Vec::new();
        for b in &self.blocks {
            let first = streams.partition_point(|&s| s < b.min_stream);
            let selected = streams.get(first).is_some_and(|&s| s <= b.max_stream);
            if b.min_ts >= end || b.max_ts < start || !selected {
                continue;
            }
            let escaped = b.flags & (FLAG_BACKSLASH | FLAG_UNESCAPED) == FLAG_BACKSLASH;
            let keep = grams.iter().all(|(or_escaped, g, tokens)| {
                (*or_escaped && escaped)
                    || (g.iter().all(|&t| b.may_contain(t))
                        && tokens.iter().all(|&t| b.may_contain_token(t)))
            });
            if !keep || !bounds.iter().all(|f| b.may_satisfy(f, &self.field_names)) {
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
        let counts = self.counts.as_ref().map_or(0, MinuteCounts::memory_size);
        self.blocks
            .iter()
            .map(|b| {
                (b.bits.len() + b.token_bits.len()) * 8
                    + b.fields.as_ref().map_or(0, |f| f.stats.len() * 24)
                    + std::mem::size_of::<Block>()
            })
            .sum::<usize>()
            + counts
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
            out.extend_from_slice(&(b.token_bits.len() as u32).to_le_bytes());
            for w in &b.token_bits {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        let empty = MinuteCounts::default();
        let counts = self.counts.as_ref().unwrap_or(&empty);
        out.extend_from_slice(&(counts.streams.len() as u32).to_le_bytes());
        let mut prev = 0;
        for (stream, first, rows) in &counts.streams {
            put_varint(&mut out, stream.wrapping_sub(prev));
            prev = *stream;
            put_varint(&mut out, ((first << 1) ^ (first >> 63)) as u64);
            put_varint(&mut out, rows.len() as u64);
            for &n in rows {
                put_varint(&mut out, u64::from(n));
            }
        }
        out.extend_from_slice(&(self.field_names.len() as u32).to_le_bytes());
        for n in &self.field_names {
            // Names are at most `u16::MAX` bytes (the builder skips longer ones).
            out.extend_from_slice(&(n.len() as u16).to_le_bytes());
            out.extend_from_slice(n.as_bytes());
        }
        for b in &self.blocks {
            match &b.fields {
                None => {
                    out.push(0);
                    out.extend_from_slice(&0u16.to_le_bytes());
                }
                Some(f) => {
                    out.push(if f.complete { 1 } else { 2 });
                    out.extend_from_slice(&(f.stats.len() as u16).to_le_bytes());
                    for &(name, numeric, min, max) in &f.stats {
                        out.extend_from_slice(&name.to_le_bytes());
                        out.push(u8::from(numeric));
                        out.extend_from_slice(&min.to_le_bytes());
                        out.extend_from_slice(&max.to_le_bytes());
                    }
                }
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
        let version = match r.take(8).ok_or_else(|| corrupt("truncated header"))? {
            m if m == MAGIC => 4,
            m if m == MAGIC_V3 => 3,
            m if m == MAGIC_V2 => 2,
            m if m == MAGIC_V1 => 1,
            _ => return Err(corrupt("not a trigram index")),
        };
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
                let bits = r.words()?;
                let token_bits = if version >= 3 { r.words()? } else { Vec::new() };
                // Older versions have no token filters.
                let flags = if version >= 3 {
                    flags
                } else {
                    flags & !FLAG_TOKENS
                };
                Some(Block {
                    min_stream,
                    max_stream,
                    first_row,
                    rows,
                    min_ts,
                    max_ts,
                    flags,
                    bits,
                    token_bits,
                    fields: None,
                })
            })()
            .ok_or_else(|| corrupt("truncated block"))?;
            blocks.push(block);
        }
        let counts = if version >= 2 {
            let truncated = || corrupt("truncated minute counts");
            let n = r.u32().ok_or_else(truncated)? as usize;
            let mut streams = Vec::with_capacity(n.min(data.len() / 3));
            let mut prev: u64 = 0;
            for _ in 0..n {
                let stream = prev.wrapping_add(r.varint().ok_or_else(truncated)?);
                prev = stream;
                let z = r.varint().ok_or_else(truncated)?;
                let first = ((z >> 1) as i64) ^ -((z & 1) as i64);
                let len =
                    usize::try_from(r.varint().ok_or_else(truncated)?).map_err(|_| truncated())?;
                // Each minute takes at least one byte: a larger count is a bad file.
                if len > data.len() - r.pos {
                    return Err(truncated());
                }
                let mut rows = Vec::with_capacity(len);
                for _ in 0..len {
                    let v = r.varint().ok_or_else(truncated)?;
                    rows.push(u32::try_from(v).map_err(|_| corrupt("minute count overflow"))?);
                }
                streams.push((stream, first, rows));
            }
            Some(MinuteCounts { streams })
        } else {
            None
        };
        let mut field_names = Vec::new();
        if version >= 4 {
            let truncated = || corrupt("truncated field statistics");
            let n = r.u32().ok_or_else(truncated)? as usize;
            if n > MAX_FIELD_NAMES {
                return Err(corrupt("too many field names"));
            }
            for _ in 0..n {
                let len = usize::from(r.u16().ok_or_else(truncated)?);
                let name = r.take(len).ok_or_else(truncated)?;
                let name =
                    std::str::from_utf8(name).map_err(|_| corrupt("field name not UTF-8"))?;
                field_names.push(name.to_string());
            }
            for b in &mut blocks {
                let kind = *r
                    .take(1)
                    .ok_or_else(truncated)?
                    .first()
                    .ok_or_else(truncated)?;
                let entries = usize::from(r.u16().ok_or_else(truncated)?);
                let mut stats = Vec::with_capacity(entries.min(n));
                for _ in 0..entries {
                    let name = r.u16().ok_or_else(truncated)?;
                    if usize::from(name) >= n {
                        return Err(corrupt("field name index out of range"));
                    }
                    let numeric = *r
                        .take(1)
                        .ok_or_else(truncated)?
                        .first()
                        .ok_or_else(truncated)?;
                    let min = r.u64().ok_or_else(truncated)?;
                    let max = r.u64().ok_or_else(truncated)?;
                    stats.push((name, numeric == 1, min, max));
                }
                b.fields = match kind {
                    0 => None,
                    1 | 2 => Some(BlockFields {
                        complete: kind == 1,
                        stats,
                    }),
                    _ => return Err(corrupt("unknown field statistics kind")),
                };
            }
        }
        if r.pos != data.len() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(TextIndex {
            blocks,
            counts,
            field_names,
        })
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
    fn u16(&mut self) -> Option<u16> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        Some(u16::from_le_bytes(b))
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
    /// A u32 word count, then that many u64 words.
    fn words(&mut self) -> Option<Vec<u64>> {
        let n = self.u32()? as usize;
        let raw = self.take(n.checked_mul(8)?)?;
        Some(
            raw.chunks_exact(8)
                .map(|c| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(c);
                    u64::from_le_bytes(w)
                })
                .collect(),
        )
    }
    /// LEB128, at most 10 bytes.
    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *self.take(1)?.first()?;
            v |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Builds a [`TextIndex`] from rows pushed in file order.
pub struct TextIndexBuilder {
    /// One bit per possible trigram (2^24 bits): which ones the open block has.
    seen: Vec<u64>,
    distinct: Vec<u32>,
    /// Hashes of the open block's hex tokens (deduplicated when it closes).
    tokens: Vec<u64>,
    flags: u32,
    /// Open block: (min stream, max stream, first row, rows, min ts, max ts).
    open: Option<(StreamId, StreamId, u32, u32, i64, i64)>,
    blocks: Vec<Block>,
    /// (stream, minute, rows) runs in push order.
    minutes: Vec<(StreamId, i64, u32)>,
    /// Field statistics, when enabled ([`Self::with_fields`]).
    fields: Option<FieldsBuilder>,
}

/// Field statistics being built: the file's names and the open block's values.
#[derive(Default)]
struct FieldsBuilder {
    names: Vec<String>,
    index: std::collections::HashMap<String, u16>,
    /// The open block's (name index, every value a number, min, max).
    open: Vec<(u16, bool, f64, f64)>,
    /// Where each name's entry is in `open` (`u32::MAX`: none yet), by name index.
    slot: Vec<u32>,
    /// A row of the open block had a name past the cap.
    incomplete: bool,
}

impl FieldsBuilder {
    fn add(&mut self, name: &str, value: Option<f64>) {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None if self.names.len() < MAX_FIELD_NAMES && name.len() <= usize::from(u16::MAX) => {
                let i = self.names.len() as u16;
                self.names.push(name.to_string());
                self.index.insert(name.to_string(), i);
                self.slot.push(u32::MAX);
                i
            }
            None => {
                self.incomplete = true;
                return;
            }
        };
        // NaN passes no comparison, but it is kept out of min/max by calling it "not a
        // number", which only makes the block harder to rule out.
        let value = value.filter(|v| !v.is_nan());
        let slot = &mut self.slot[usize::from(i)];
        if *slot == u32::MAX {
            *slot = self.open.len() as u32;
            let (min, max) = value.map_or((f64::INFINITY, f64::NEG_INFINITY), |v| (v, v));
            self.open.push((i, value.is_some(), min, max));
            return;
        }
        let e = &mut self.open[*slot as usize];
        match value {
            Some(v) => {
                e.2 = e.2.min(v);
                e.3 = e.3.max(v);
            }
            None => e.1 = false,
        }
    }

    /// The open block's statistics; starts the next block.
    fn close(&mut self) -> BlockFields {
        for e in &self.open {
            self.slot[usize::from(e.0)] = u32::MAX;
        }
        let mut stats: Vec<(u16, bool, u64, u64)> = self
            .open
            .drain(..)
            .map(|(i, numeric, min, max)| (i, numeric, min.to_bits(), max.to_bits()))
            .collect();
        stats.sort_unstable_by_key(|e| e.0);
        BlockFields {
            complete: !std::mem::take(&mut self.incomplete),
            stats,
        }
    }
}

impl Default for TextIndexBuilder {
    fn default() -> Self {
        TextIndexBuilder {
            seen: vec![0; (1 << 24) / 64],
            distinct: Vec::new(),
            tokens: Vec::new(),
            flags: 0,
            open: None,
            blocks: Vec::new(),
            minutes: Vec::new(),
            fields: None,
        }
    }
}

impl TextIndexBuilder {
    /// A builder that also keeps field statistics: after each [`Self::push`], the row's
    /// fields are given with [`Self::add_field`].
    pub fn with_fields() -> TextIndexBuilder {
        TextIndexBuilder {
            fields: Some(FieldsBuilder::default()),
            ..TextIndexBuilder::default()
        }
    }

    /// A field of the row pushed last: its value when it is a number, `None` otherwise.
    /// Ignored by a builder without field statistics.
    pub fn add_field(&mut self, name: &str, value: Option<f64>) {
        if let Some(f) = &mut self.fields {
            f.add(name, value);
        }
    }

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
        let minute = minute_of(ts);
        match self.minutes.last_mut() {
            Some((s, m, n)) if *s == stream && *m == minute => *n += 1,
            _ => self.minutes.push((stream, minute, 1)),
        }
        self.flags |= FLAG_UNESCAPED;
        if memchr::memchr(b'\\', line).is_some() {
            self.flags |= FLAG_BACKSLASH;
            let plain = unescape(line);
            self.add(&plain);
        }
        self.add(line);
        for v in metadata_values {
            self.add(v);
        }
    }

    fn add(&mut self, text: &[u8]) {
        for r in hex_runs(text) {
            if let Some(t) = text.get(r) {
                self.tokens.push(token_hash(t));
            }
        }
        for w in text.windows(3) {
            if !indexed(w) {
                continue;
            }
            let g = trigram(w);
            let (word, bit) = ((g / 64) as usize, g % 64);
            if self.seen[word] & (1 << bit) == 0 {
                self.seen[word] |= 1 << bit;
                self.distinct.push(g);
            }
        }
    }

    /// End the open block here: the next row starts a new one.
    pub fn cut(&mut self) {
        self.close();
    }

    fn close(&mut self) {
        let Some((min_stream, max_stream, first_row, rows, min_ts, max_ts)) = self.open.take()
        else {
            return;
        };
        let mut flags = std::mem::take(&mut self.flags);
        let trigrams = Budget {
            per_item: BITS_PER_TRIGRAM,
            per_row: BITS_PER_ROW,
            min_per_item: MIN_BITS_PER_TRIGRAM,
        };
        let hashes: Vec<u64> = self.distinct.iter().map(|&g| trigram_hash(g)).collect();
        let bits = match bloom(&hashes, rows, trigrams) {
            Some((bits, k)) => {
                flags |= k << PROBES_SHIFT;
                bits
            }
            None => Vec::new(),
        };
        for &g in &self.distinct {
            self.seen[(g / 64) as usize] = 0;
        }
        self.distinct.clear();
        let token_bits = self.token_filter(rows, &mut flags);
        let fields = self.fields.as_mut().map(FieldsBuilder::close);
        self.blocks.push(Block {
            min_stream,
            max_stream,
            first_row,
            rows,
            min_ts,
            max_ts,
            flags,
            bits,
            token_bits,
            fields,
        });
    }

    /// The open block's token filter, setting its flags; empties the token list.
    fn token_filter(&mut self, rows: u32, flags: &mut u32) -> Vec<u64> {
        self.tokens.sort_unstable();
        self.tokens.dedup();
        let budget = Budget {
            per_item: BITS_PER_TOKEN,
            per_row: TOKEN_BITS_PER_ROW,
            min_per_item: MIN_BITS_PER_TOKEN,
        };
        let mut bits = Vec::new();
        if self.tokens.is_empty() {
            *flags |= FLAG_TOKENS;
        } else if let Some((b, k)) = bloom(&self.tokens, rows, budget) {
            *flags |= FLAG_TOKENS | (k << TOKEN_PROBES_SHIFT);
            bits = b;
        }
        self.tokens.clear();
        bits
    }

    /// The finished index.
    pub fn finish(mut self) -> TextIndex {
        self.close();
        // Rows come grouped by stream and by time; sorting keeps any other order exact.
        let mut runs = std::mem::take(&mut self.minutes);
        runs.sort_unstable_by_key(|&(s, m, _)| (s, m));
        let mut streams: Vec<(StreamId, i64, Vec<u32>)> = Vec::new();
        for (stream, minute, n) in runs {
            match streams.last_mut() {
                Some((s, first, rows)) if *s == stream => {
                    let i = usize::try_from(minute - *first).unwrap_or(0);
                    if i >= rows.len() {
                        rows.resize(i + 1, 0);
                    }
                    rows[i] += n;
                }
                _ => streams.push((stream, minute, vec![n])),
            }
        }
        TextIndex {
            blocks: self.blocks,
            counts: Some(MinuteCounts { streams }),
            field_names: self.fields.map(|f| f.names).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field statistics: a block is ruled out where every row's field is a number outside
    /// the bound, or no row has the field; text values, rows past the name cap and files
    /// without statistics keep their blocks. The statistics survive encoding.
    #[test]
    fn field_statistics_rule_out_blocks() -> Result<()> {
        let mut b = TextIndexBuilder::with_fields();
        // Block 0: d in 1..=10. Block 1: d in 500..=950 and a text `s`. Block 2: no `d`.
        for row in 0..30u32 {
            b.push(row, 1, i64::from(row), b"x", []);
            match row / 10 {
                0 => b.add_field("d", Some(f64::from(row + 1))),
                1 => {
                    b.add_field("d", Some(f64::from(500 + (row - 10) * 50)));
                    b.add_field("s", if row == 15 { None } else { Some(1.0) });
                }
                _ => b.add_field("e", Some(f64::NAN)),
            }
            if row % 10 == 9 {
                b.cut();
            }
        }
        let index = TextIndex::decode("x", &b.finish().encode())?;
        assert_eq!(index.field_names, vec!["d", "s", "e"]);
        let rows = |name: &str, op: FieldOp, value: f64| {
            let bound = FieldBound {
                name: name.into(),
                op,
                value,
            };
            index.candidate_rows_with(&[1], 0, 100, &[], &[bound])
        };
        assert_eq!(rows("d", FieldOp::Gt, 1000.0), Vec::<Range<u32>>::new());
        assert_eq!(rows("d", FieldOp::Gt, 800.0), vec![10..20]);
        assert_eq!(rows("d", FieldOp::Ge, 10.0), vec![0..20]);
        assert_eq!(rows("d", FieldOp::Lt, 1.0), Vec::<Range<u32>>::new());
        assert_eq!(rows("d", FieldOp::Le, 1.0), vec![0..10]);
        assert_eq!(rows("d", FieldOp::Eq, 520.0), vec![10..20]);
        assert_eq!(
            rows("d", FieldOp::Eq, 530.0),
            vec![10..20],
            "inside the range"
        );
        // Text in `s` keeps its block; NaN counts as text.
        assert_eq!(rows("s", FieldOp::Gt, 5.0), vec![10..20]);
        assert_eq!(rows("e", FieldOp::Lt, 5.0), vec![20..30]);
        assert_eq!(rows("nowhere", FieldOp::Gt, 0.0), Vec::<Range<u32>>::new());

        // Names past the cap leave a block without the proof of absence.
        let mut b = TextIndexBuilder::with_fields();
        for row in 0..=MAX_FIELD_NAMES as u32 {
            b.push(row, 1, 0, b"x", []);
            b.add_field(&format!("f{row}"), Some(1.0));
        }
        let capped = TextIndex::decode("x", &b.finish().encode())?;
        let bound = |name: &str| FieldBound {
            name: name.into(),
            op: FieldOp::Gt,
            value: 5.0,
        };
        let all: Vec<Range<u32>> = std::iter::once(0..MAX_FIELD_NAMES as u32 + 1).collect();
        assert_eq!(
            capped.candidate_rows_with(&[1], 0, 1, &[], &[bound("late")]),
            all
        );
        assert_eq!(
            capped.candidate_rows_with(&[1], 0, 1, &[], &[bound("f3")]),
            Vec::<Range<u32>>::new()
        );

        // Without statistics nothing is ruled out: a builder without them.
        let mut b = TextIndexBuilder::default();
        b.push(0, 1, 0, b"x", []);
        b.add_field("d", Some(1.0));
        let plain = TextIndex::decode("x", &b.finish().encode())?;
        assert_eq!(
            plain.candidate_rows_with(&[1], 0, 1, &[], &[bound("d")]),
            vec![0..1]
        );
        // Nor in a version 3 index (written before them: no field section).
        let mut b = TextIndexBuilder::with_fields();
        b.push(0, 1, 0, b"x", []);
        b.add_field("d", Some(1.0));
        let v4 = b.finish().encode();
        let with = TextIndex::decode("x", &v4)?;
        assert!(with
            .candidate_rows_with(&[1], 0, 1, &[], &[bound("d")])
            .is_empty());
        // Names: 4 + (2 + 1); the block: kind, count, one 19-byte entry.
        let mut v3 = v4[..v4.len() - 7 - 3 - 19].to_vec();
        v3[..8].copy_from_slice(b"TVLTRI03");
        let old = TextIndex::decode("x", &v3)?;
        assert!(old.field_names.is_empty());
        assert_eq!(
            old.candidate_rows_with(&[1], 0, 1, &[], &[bound("d")]),
            vec![0..1]
        );
        Ok(())
    }

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
        let field = |n: &str| vec![TextNeedle::field(n.as_bytes())];
        let second = BLOCK_ROWS..BLOCK_ROWS + 1200;
        // Metadata values are indexed; an escaped field value is indexed unescaped.
        assert_eq!(
            index.candidate_rows(&[2], 0, 9, &needle("trace-abc")),
            vec![second.clone()]
        );
        // (A literal needle may now pass through the unescaped form: a false positive only.)
        assert!(index
            .candidate_rows(&[2], 0, 9, &needle("zqxjkwv"))
            .is_empty());
        assert_eq!(
            index.candidate_rows(&[2], 0, 9, &field("zqxjkw")),
            vec![second.clone()]
        );
        assert!(index
            .candidate_rows(&[1], 0, 7, &field("zqxjkw"))
            .is_empty());
        assert!(index
            .candidate_rows(&[2], 0, 9, &field("absent-value"))
            .is_empty());
        assert_eq!(
            index.candidate_rows(&[1, 2], 0, i64::MAX, &needle("mallory")),
            vec![0..BLOCK_ROWS]
        );
        assert_eq!(
            index.candidate_rows(&[1, 2], 0, i64::MAX, &needle("needle-7f3a9c")),
            vec![second.clone()]
        );
        // Trigrams of digits and hex letters only are not indexed: such a needle keeps
        // every block, a mixed one prunes by its other trigrams.
        assert_eq!(
            index.candidate_rows(&[1, 2], 0, i64::MAX, &needle("7f3a9c")),
            vec![0..BLOCK_ROWS + 1200]
        );
        assert_eq!(
            index.candidate_rows(&[1, 2], 0, i64::MAX, &needle("e-7f3a9c")),
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
    fn minute_counts_count_rows_per_left_open_minute_and_round_trip() -> Result<()> {
        let m = MINUTE_NS;
        let mut b = TextIndexBuilder::default();
        // Stream 4: two rows in minute 1 ((0, 60 s]: 60 s itself included), none in minute
        // 2, one in minute 3. Stream 9: one row at 0 (minute 0).
        let rows: [(StreamId, i64); 5] = [(4, 1), (4, m), (4, 2 * m + 1), (9, 0), (9, 0)];
        for (row, (stream, ts)) in rows.iter().enumerate() {
            b.push(row as u32, *stream, *ts, b"line", []);
        }
        let index = b.finish();
        let counts = index.counts.clone().unwrap_or_default();
        assert_eq!(counts.streams, vec![(4, 1, vec![2, 0, 1]), (9, 0, vec![2])]);
        let mut seen = Vec::new();
        counts.for_each(&[4], 2, 3, |s, minute, n| seen.push((s, minute, n)));
        assert_eq!(seen, vec![(4, 3, 1)]);
        assert_eq!(minute_of(-1), 0);
        assert_eq!(minute_of(-m), -1);
        let encoded = index.encode();
        assert_eq!(TextIndex::decode("x", &encoded)?, index);
        for cut in [encoded.len() - 1, encoded.len() - 3] {
            assert!(TextIndex::decode("x", &encoded[..cut]).is_err());
        }
        // Version 1 (no counts) stays readable.
        let mut v1 = b"TVLTRI01".to_vec();
        v1.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            TextIndex::decode("x", &v1)?,
            TextIndex {
                blocks: Vec::new(),
                counts: None,
                field_names: Vec::new(),
            }
        );
        Ok(())
    }

    /// Pseudo-random lowercase hex (a fixed LCG: the test is deterministic).
    fn hex(state: &mut u64, len: usize) -> String {
        (0..len)
            .map(|_| {
                *state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                char::from(b"0123456789abcdef"[(*state >> 60) as usize])
            })
            .collect()
    }

    #[test]
    fn hex_tokens_prune_ids_only_where_the_needle_bounds_them() -> Result<()> {
        let planted = "5b2e9d41-c7a0-4f3e-a9d2-7f3a9c01e5d8";
        let trace = "c10b73843ca5d6c0b92a1a9002b9d27d";
        let mut state = 7;
        let mut b = TextIndexBuilder::default();
        let mut written = Vec::new();
        // Block 0: random UUIDs, one of them planted, random trace ids in metadata.
        // Block 1: the same shape without the planted ones. Block 2: no hex token at all.
        for row in 0..3 * BLOCK_ROWS {
            let cid = if row == 77 {
                planted.to_string()
            } else {
                let mut parts = Vec::new();
                for len in [8, 4, 4, 4, 12] {
                    parts.push(hex(&mut state, len));
                }
                parts.join("-")
            };
            let meta = if row == 78 {
                trace.to_string()
            } else {
                hex(&mut state, 32)
            };
            if row >= 2 * BLOCK_ROWS {
                b.push(row, 1, 0, b"user=alice action=READ", []);
            } else {
                let line = format!(r#"{{"correlation_id":"{cid}","user":"bob"}}"#);
                b.push(row, 1, 0, line.as_bytes(), [meta.as_bytes()]);
                written.push(cid);
                written.push(meta);
            }
        }
        let index = b.finish();
        assert_eq!(index.blocks.len(), 3);
        let rows = |n: TextNeedle| index.candidate_rows(&[1], 0, 1, &[n]);
        let first = vec![Range {
            start: 0,
            end: BLOCK_ROWS,
        }];
        let all = vec![Range {
            start: 0,
            end: 3 * BLOCK_ROWS,
        }];
        // A field value is bounded: its first and last runs are tokens.
        assert_eq!(rows(TextNeedle::field(planted)), first);
        // (One token: block 1 may pass as a false positive, as it does here.)
        assert_eq!(
            rows(TextNeedle::field(trace)).first().map(|r| r.start),
            Some(0)
        );
        assert_eq!(
            rows(TextNeedle::field("deadbeef00")),
            Vec::<Range<u32>>::new()
        );
        // A literal's edge runs may continue in the line: no token, every block stays
        // (its trigrams are hex only).
        assert_eq!(rows(TextNeedle::literal("5b2e9d41")), all);
        assert_eq!(rows(TextNeedle::literal(trace)), all);
        // An inner run is a whole token.
        assert_eq!(rows(TextNeedle::literal("\"5b2e9d41-")), first);
        // About 6% false positives per absent token.
        let mut other = 12345;
        let passing = (0..1000)
            .filter(|_| {
                index.blocks[1].may_contain_token(token_hash(hex(&mut other, 12).as_bytes()))
            })
            .count();
        assert!((20..120).contains(&passing), "{passing}");
        // Every token of every block passes (no false negatives), and the index round-trips.
        let encoded = index.encode();
        assert_eq!(TextIndex::decode("x", &encoded)?, index);
        for (row, value) in written.iter().enumerate() {
            let found = rows(TextNeedle::field(value.as_str()));
            let block = (row / 2) as u32 / BLOCK_ROWS * BLOCK_ROWS;
            assert!(found.iter().any(|r| r.contains(&block)), "{value}");
        }
        Ok(())
    }

    #[test]
    fn version_2_indexes_have_no_token_filters() -> Result<()> {
        let mut b = TextIndexBuilder::default();
        b.push(0, 1, 0, br#"{"id":"0123456789abcdef"}"#, []);
        let mut index = b.finish();
        assert!(index.blocks[0].flags & FLAG_TOKENS != 0);
        let v4 = index.encode();
        // Rewrite as version 2: drop the token filter (its word count and words) and the
        // field statistics (no names, and a kind and entry count per block).
        let fields_start = v4.len() - 4 - 3 * index.blocks.len();
        let mut v2 = b"TVLTRI02".to_vec();
        v2.extend_from_slice(&v4[8..12]);
        let block_end = 12 + 48 + index.blocks[0].bits.len() * 8;
        v2.extend_from_slice(&v4[12..block_end]);
        v2.extend_from_slice(
            &v4[block_end + 4 + index.blocks[0].token_bits.len() * 8..fields_start],
        );
        let old = TextIndex::decode("x", &v2)?;
        assert_eq!(old.blocks[0].flags & FLAG_TOKENS, 0);
        let needle = [TextNeedle::field("fedcba9876543210")];
        assert_eq!(old.candidate_rows(&[1], 0, 1, &needle), vec![0..1]);
        assert!(index.candidate_rows(&[1], 0, 1, &needle).is_empty());
        index.blocks[0].flags &= !FLAG_TOKENS;
        index.blocks[0].token_bits.clear();
        assert_eq!(old, index);
        Ok(())
    }

    #[test]
    fn unescaping_decodes_json_and_logfmt_escapes_and_keeps_the_rest() {
        let cases: [(&[u8], &str); 7] = [
            (
                br#"{"m":"say \"hi\" \\ \/ \t"}"#,
                "{\"m\":\"say \"hi\" \\ / \t\"}",
            ),
            (br#"u=\u007a\u00e9\u4e2d"#, "u=zé中"),
            (br#"\ud83d\ude00 pair"#, "😀 pair"),
            (br#"\ud83d lone \ude00"#, "\u{fffd} lone \u{fffd}"),
            (br#"\q \u12 \"#, r#"\q \u12 \"#),
            (br#"a\\nb"#, r#"a\nb"#),
            (b"no escapes", "no escapes"),
        ];
        for (line, want) in cases {
            assert_eq!(String::from_utf8_lossy(&unescape(line)), want);
        }
        // Any bytes at all (truncated escapes, invalid UTF-8): no panic, never longer.
        const BYTES: &[u8] = b"\\\\u0dDf\"x\xff89";
        let mut state: u64 = 3;
        for len in 0..400 {
            let line: Vec<u8> = (0..len % 23)
                .map(|_| {
                    state = (state * 1_103_515_245 + 12_345) % (1 << 31);
                    BYTES[(state >> 16) as usize % BYTES.len()]
                })
                .collect();
            assert!(unescape(&line).len() <= line.len(), "{line:?}");
        }
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

//! Parquet chunk files: one per tenant per time window per flush, written from a frozen
//! head.
//!
//! Format: the logs schema ([`crate::schema`]), rows grouped by stream in
//! [`crate::order`] (a service's streams side by side), each stream's rows sorted by `ts`,
//! every column zstd-compressed at the configured level. The manifest records each
//! stream's first row and row count, so a scan reads exactly the selected streams' rows.
//! - `stream_id`: dictionary/RLE encoded.
//! - `ts`: `DELTA_BINARY_PACKED` (no dictionary); sorted within a stream, so page
//!   statistics prune time.
//! - `line`: `DELTA_LENGTH_BYTE_ARRAY` with dictionary off (log lines rarely repeat
//!   exactly, and a failed dictionary attempt costs memory and time): a page holds all
//!   lengths, then the lines back to back, so zstd sees text without a 4-byte length before
//!   each line (smaller, faster to decompress). Large pages for a better zstd ratio. Files
//!   of earlier versions hold lines plain; readers take both.
//! - `metadata`: map column, null when an entry has none; keys dictionary-encoded, values
//!   plain in small pages (see [`writer_properties`]).
//! - `line_flags`: null in flushed files; compacted files hold the classifier's value for
//!   every row (see [`crate::schema`]). Files written before the column existed lack it:
//!   scans read it as null, the compactor merges them as if it were.
//! - Page-level statistics with the column and offset index (the "page index") on, so
//!   DataFusion's Parquet reader can skip row groups and pages by timestamp. Key-value metadata `tovlog.format` (2: streams in
//!   [`crate::order`]; 1: in id order) and `tovlog.window_start_ns` identify the file.
//!
//! Needle search: the compactor writes a trigram block index beside each compacted file
//! (see [`crate::textindex`]); because rows are grouped by stream and service, blocks are
//! stream-local and their filters stay small and selective.

use std::collections::BTreeMap;
use std::sync::Arc;

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::config::ChunkConfig;
use crate::error::{Error, Result};
use crate::head::{BatchBuilder, Head};
use crate::manifest::StreamRange;
use crate::model::{LabelSet, StreamId};
use crate::order;
use crate::schema::{logs_schema, LINE, METADATA, STREAM_ID, TS};

/// Chunk format version written into the file's key-value metadata.
pub const FORMAT_VERSION: &str = "2";
/// Rows per Arrow batch handed to the Parquet writer (bounds the extra copy in memory).
const BATCH_ROWS: usize = 16 * 1024;

/// The rows of a frozen head, sorted: per stream (in [`crate::order`]) the entry indices
/// in ts order.
pub struct SortedHead {
    head: Arc<Head>,
    streams: Vec<(StreamId, Vec<u32>)>,
}

/// The rows of one time window: slices of [`SortedHead::streams`].
pub struct WindowPlan {
    /// Window start, ns.
    pub start_ns: i64,
    parts: Vec<(usize, std::ops::Range<usize>)>,
}

impl SortedHead {
    /// Sort a frozen head (streams in [`crate::order`], timestamps ascending within a
    /// stream).
    pub fn new(head: Arc<Head>) -> SortedHead {
        let mut streams: Vec<(StreamId, &LabelSet, Vec<u32>)> = head
            .streams()
            .map(|(id, s)| (id, s.labels.as_ref(), s.sorted_indices(i64::MIN, i64::MAX)))
            .collect();
        streams.sort_unstable_by(|a, b| order::compare((a.0, Some(a.1)), (b.0, Some(b.1))));
        let streams = streams.into_iter().map(|(id, _, idx)| (id, idx)).collect();
        SortedHead { head, streams }
    }

    /// Split the rows into windows of `window_ns`, in window order.
    pub fn windows(&self, window_ns: i64) -> Vec<WindowPlan> {
        let window_ns = window_ns.max(1);
        let mut windows: BTreeMap<i64, Vec<(usize, std::ops::Range<usize>)>> = BTreeMap::new();
        for (pos, (id, idx)) in self.streams.iter().enumerate() {
            let Some(stream) = self.head.stream(*id) else {
                continue;
            };
            let mut start = 0;
            while start < idx.len() {
                let w = stream.entry(idx[start]).ts.div_euclid(window_ns);
                let end = start
                    + idx[start..]
                        .partition_point(|&i| stream.entry(i).ts.div_euclid(window_ns) == w);
                windows
                    .entry(w.saturating_mul(window_ns))
                    .or_default()
                    .push((pos, start..end));
                start = end;
            }
        }
        windows
            .into_iter()
            .map(|(start_ns, parts)| WindowPlan { start_ns, parts })
            .collect()
    }

    /// Encode one window as a Parquet file; returns the bytes and per-stream statistics.
    /// CPU-heavy: run on a blocking thread.
    pub fn encode(&self, window: &WindowPlan, config: &ChunkConfig) -> Result<EncodedChunk> {
        let props = writer_properties(
            config.row_group_rows,
            config.zstd_level,
            config.line_page_bytes.0 as usize,
            window.start_ns,
        )?;
        let mut writer = ArrowWriter::try_new(Vec::new(), logs_schema(), Some(props))?;
        let mut stats = Vec::with_capacity(window.parts.len());
        let mut builder = BatchBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 160);
        let (mut min_ts, mut max_ts, mut rows) = (i64::MAX, i64::MIN, 0u64);
        let mut metadata_keys = crate::manifest::MetadataKeys::default();
        // Service groups and their rows in this window, to start a row group where a
        // large service starts (`order::starts_row_group`), as the compactor does.
        let places = order::places(window.parts.iter().map(|(pos, _)| {
            let id = self.streams[*pos].0;
            (id, self.head.stream(id).map(|s| s.labels.clone()))
        }));
        let group_of = |id: &StreamId| places.get(id).map_or(u32::MAX, |p| p.group);
        let mut group_rows: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
        for (pos, range) in &window.parts {
            *group_rows
                .entry(group_of(&self.streams[*pos].0))
                .or_default() += range.len() as u64;
        }
        let mut last_group: Option<u32> = None;
        for (pos, range) in &window.parts {
            let (id, idx) = &self.streams[*pos];
            let stream = self
                .head
                .stream(*id)
                .ok_or_else(|| Error::Internal(format!("stream {id} vanished from frozen head")))?;
            let group = group_of(id);
            if last_group.is_some_and(|g| g != group) {
                let next_rows = group_rows.get(&group).copied().unwrap_or(0);
                if order::starts_row_group(writer.in_progress_rows() + builder.rows(), next_rows) {
                    write_rows(&mut writer, &mut builder)?;
                    writer.flush()?;
                }
            }
            last_group = Some(group);
            let mut sr = StreamRange {
                id: *id,
                min_ts: i64::MAX,
                max_ts: i64::MIN,
                rows: 0,
                line_bytes: 0,
                first_row: Some(rows),
            };
            for &i in &idx[range.clone()] {
                let entry = stream.entry(i);
                sr.min_ts = sr.min_ts.min(entry.ts);
                sr.max_ts = sr.max_ts.max(entry.ts);
                sr.rows += 1;
                sr.line_bytes += entry.line.len() as u64;
                for (k, _) in entry.metadata.iter().flatten() {
                    metadata_keys.add(k);
                }
                builder.push(*id, entry)?;
                if builder.rows() >= BATCH_ROWS {
                    write_rows(&mut writer, &mut builder)?;
                }
            }
            min_ts = min_ts.min(sr.min_ts);
            max_ts = max_ts.max(sr.max_ts);
            rows += sr.rows;
            stats.push(sr);
        }
        write_rows(&mut writer, &mut builder)?;
        stats.sort_unstable_by_key(|s| s.id);
        // `into_inner` writes the footer (finishing twice is an error).
        let data = writer.into_inner()?;
        // Hashed here, from the bytes about to be written (see `crate::chain`).
        let sha256 = crate::chain::sha256_hex(&data);
        Ok(EncodedChunk {
            data,
            sha256,
            min_ts,
            max_ts,
            rows,
            streams: stats,
            metadata_keys: metadata_keys.finish(),
        })
    }
}

/// Write the builder's rows, if any, and leave it empty.
fn write_rows(writer: &mut ArrowWriter<Vec<u8>>, builder: &mut BatchBuilder) -> Result<()> {
    if builder.rows() > 0 {
        let full = std::mem::replace(
            builder,
            BatchBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 160),
        );
        writer.write(&full.finish()?)?;
    }
    Ok(())
}

/// One encoded chunk file.
pub struct EncodedChunk {
    /// The Parquet bytes.
    pub data: Vec<u8>,
    /// Lowercase hex SHA-256 of `data`.
    pub sha256: String,
    /// Smallest timestamp.
    pub min_ts: i64,
    /// Largest timestamp.
    pub max_ts: i64,
    /// Rows.
    pub rows: u64,
    /// Per-stream statistics with first rows, sorted by stream id.
    pub streams: Vec<StreamRange>,
    /// Distinct structured metadata keys (see [`crate::manifest::ChunkMeta::metadata_keys`]).
    pub metadata_keys: Option<Vec<String>>,
}

/// Page size of structured metadata values (see [`writer_properties`]).
const METADATA_VALUE_PAGE_BYTES: usize = 64 * 1024;

/// Writer settings of a chunk file (see the module doc); the compactor uses them too, with
/// its own level and page size.
pub(crate) fn writer_properties(
    row_group_rows: usize,
    zstd_level: i32,
    line_page_bytes: usize,
    window_start_ns: i64,
) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(zstd_level)?;
    let line = ColumnPath::from(LINE);
    let ts = ColumnPath::from(TS);
    let values = ColumnPath::new(vec![METADATA.into(), "entries".into(), "values".into()]);
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_dictionary_enabled(line.clone(), false)
        // Lengths apart from the text (not a 4-byte length before each line): zstd sees
        // the lines back to back, which compresses smaller and decompresses faster (fewer
        // sequences), and the reader validates a page's UTF-8 in one pass.
        .set_column_encoding(line.clone(), Encoding::DELTA_LENGTH_BYTE_ARRAY)
        .set_column_data_page_size_limit(line.clone(), line_page_bytes)
        // Metadata values are mostly unique (trace ids): a dictionary holds them all in one
        // page that any read of a row of the row group must decode (~1 MiB for a large
        // service), and skipping to a block inside a large plain page decodes every value
        // before it. Small plain pages bound both.
        .set_column_dictionary_enabled(values.clone(), false)
        .set_column_data_page_size_limit(values, METADATA_VALUE_PAGE_BYTES)
        .set_column_dictionary_enabled(ts.clone(), false)
        .set_column_encoding(ts, Encoding::DELTA_BINARY_PACKED)
        // Lines are long; min/max of a line column prunes nothing, keep the index small.
        .set_column_statistics_enabled(line, EnabledStatistics::None)
        .set_column_index_truncate_length(Some(64))
        // No `sorting_columns`: rows are grouped by stream in [`crate::order`], which no
        // column sorts by; each stream's rows are in `ts` order.
        .set_key_value_metadata(Some(vec![
            KeyValue::new("tovlog.format".into(), FORMAT_VERSION.to_string()),
            KeyValue::new("tovlog.window_start_ns".into(), window_start_ns.to_string()),
            KeyValue::new(
                "tovlog.sorted_by".into(),
                format!("{STREAM_ID} in {},{TS}", order::LOCALITY_LABELS.join("+")),
            ),
        ]))
        .build())
}

/// Rows of each row group of the Parquet file `data` (tests of the writers' row-group cuts).
#[cfg(test)]
pub(crate) fn row_group_rows(data: &[u8]) -> Result<Vec<i64>> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::copy_from_slice(data),
    )?;
    Ok(reader
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Entry, LabelSet, PushStream};
    use arrow::array::AsArray;
    use arrow::datatypes::{Int64Type, UInt64Type};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// One stream's entries encoded as one chunk file with the default config.
    fn encode_one_stream(entries: Vec<Entry>) -> Result<Bytes> {
        let mut head = Head::default();
        head.append(vec![PushStream {
            labels: LabelSet::new(vec![("job".into(), "a".into())]),
            entries,
        }]);
        let sorted = SortedHead::new(Arc::new(head));
        let windows = sorted.windows(i64::MAX);
        let chunk = sorted.encode(&windows[0], &ChunkConfig::default())?;
        Ok(Bytes::from(chunk.data))
    }

    /// Index of the leaf column at `path` (dotted) in a file's schema.
    fn leaf_column(meta: &parquet::file::metadata::ParquetMetaData, path: &str) -> Result<usize> {
        let columns = meta.file_metadata().schema_descr();
        (0..columns.num_columns())
            .find(|&c| columns.column(c).path().string() == path)
            .ok_or_else(|| Error::Internal(format!("no column {path}")))
    }

    #[test]
    fn windows_split_and_rows_come_back_sorted() -> Result<()> {
        let mut head = Head::default();
        let hour = 3_600_000_000_000i64;
        let mk = |job: &str, ts: &[i64]| PushStream {
            labels: LabelSet::new(vec![("job".into(), job.into())]),
            entries: ts
                .iter()
                .map(|&t| Entry {
                    ts_ns: t,
                    line: format!("line {t}"),
                    metadata: vec![],
                })
                .collect(),
        };
        head.append(vec![mk("b", &[hour + 5, 3, 1]), mk("a", &[2, hour + 1])]);
        let sorted = SortedHead::new(Arc::new(head));
        let windows = sorted.windows(hour);
        assert_eq!(
            windows.iter().map(|w| w.start_ns).collect::<Vec<_>>(),
            [0, hour]
        );
        let chunk = sorted.encode(&windows[0], &ChunkConfig::default())?;
        assert_eq!((chunk.rows, chunk.min_ts, chunk.max_ts), (3, 1, 3));
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(chunk.data))?.build()?;
        let mut got = Vec::new();
        for batch in reader {
            let batch = batch?;
            let ids = batch.column(0).as_primitive::<UInt64Type>();
            let ts = batch.column(1).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                got.push((ids.value(i), ts.value(i)));
            }
        }
        // Job "a" before job "b" whatever their ids; each stream's rows in time order.
        let id = |job: &str| LabelSet::new(vec![("job".into(), job.into())]).fingerprint();
        assert_eq!(got, vec![(id("a"), 2), (id("b"), 1), (id("b"), 3)]);
        // The manifest ranges (by id) say where each stream's rows are.
        let mut want = vec![(id("a"), Some(0), 1), (id("b"), Some(1), 2)];
        want.sort();
        let ranges: Vec<_> = chunk
            .streams
            .iter()
            .map(|s| (s.id, s.first_row, s.rows))
            .collect();
        assert_eq!(ranges, want);
        Ok(())
    }

    #[test]
    fn flushed_files_start_row_groups_where_a_large_service_starts() -> Result<()> {
        let mk = |job: &str, host: &str, n: i64| PushStream {
            labels: LabelSet::new(vec![
                ("job".into(), job.into()),
                ("host".into(), host.into()),
            ]),
            entries: (0..n)
                .map(|t| Entry {
                    ts_ns: t,
                    line: format!("{job} {t}"),
                    metadata: vec![],
                })
                .collect(),
        };
        let mut head = Head::default();
        head.append(vec![
            mk("d-small", "1", 30),
            mk("b-large", "1", 6_000),
            mk("c-large", "1", 9_000),
            mk("a-small", "1", 50),
            mk("b-large", "2", 6_000),
        ]);
        let sorted = SortedHead::new(Arc::new(head));
        let windows = sorted.windows(i64::MAX);
        let chunk = sorted.encode(&windows[0], &ChunkConfig::default())?;
        assert_eq!(row_group_rows(&chunk.data)?, vec![50, 12_000, 9_000, 30]);
        Ok(())
    }

    #[test]
    fn lines_are_stored_apart_from_their_lengths() -> Result<()> {
        let lines: Vec<String> = (0..5_000i64)
            .map(|t| format!("GET /api/{t} 200 é{}", "x".repeat((t % 300) as usize)))
            .collect();
        let data = encode_one_stream(
            lines
                .iter()
                .enumerate()
                .map(|(t, l)| Entry {
                    ts_ns: t as i64,
                    line: l.clone(),
                    metadata: vec![],
                })
                .collect(),
        )?;
        let meta = parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&data)?;
        let line = leaf_column(&meta, LINE)?;
        for group in meta.row_groups() {
            let encodings: Vec<Encoding> = group.column(line).encodings().collect();
            assert!(
                encodings.contains(&Encoding::DELTA_LENGTH_BYTE_ARRAY)
                    && !encodings.contains(&Encoding::PLAIN),
                "{encodings:?}"
            );
        }
        // And they read back as they were written.
        let reader = ParquetRecordBatchReaderBuilder::try_new(data)?.build()?;
        let mut got = Vec::new();
        for batch in reader {
            let batch = batch?;
            let col = batch
                .column_by_name(LINE)
                .ok_or_else(|| Error::Internal("no line column".into()))?;
            let col = col.as_string::<i32>();
            got.extend((0..batch.num_rows()).map(|i| col.value(i).to_owned()));
        }
        assert_eq!(got, lines);
        Ok(())
    }

    #[test]
    fn metadata_values_are_plain_in_small_pages() -> Result<()> {
        // Unique values, as trace ids are; every other row has none.
        let entries = (0..40_000i64)
            .map(|t| Entry {
                ts_ns: t,
                line: format!("line {t}"),
                metadata: if t % 2 == 0 {
                    vec![("trace_id".into(), format!("{:032x}", t * 7_919))]
                } else {
                    vec![]
                },
            })
            .collect();
        let meta = parquet::file::metadata::ParquetMetaDataReader::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required)
            .parse_and_finish(&encode_one_stream(entries)?)?;
        let (keys, values) = (
            leaf_column(&meta, "metadata.entries.keys")?,
            leaf_column(&meta, "metadata.entries.values")?,
        );
        let offsets = meta
            .offset_index()
            .ok_or_else(|| Error::Internal("no offset index".into()))?;
        for (g, group) in meta.row_groups().iter().enumerate() {
            let v = group.column(values);
            assert!(
                v.dictionary_page_offset().is_none(),
                "values have a dictionary"
            );
            // 20,000 values of 32 bytes (720 KB with lengths): pages of about 64 KiB.
            let pages = offsets[g][values].page_locations().len();
            assert!(
                pages >= 8,
                "{pages} pages in a group of {} rows",
                group.num_rows()
            );
            // Keys repeat: they keep their dictionary.
            assert!(group.column(keys).dictionary_page_offset().is_some());
        }
        Ok(())
    }
}

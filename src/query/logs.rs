//! Log queries: the first `limit` entries of `[start, end)` in the query direction,
//! across streams, deduplicated, grouped into result streams by final label set.
//!
//! Early termination works at two levels. The time range is read in windows starting at
//! the end the direction reads from (the first sized to hold a few pages' worth of rows of
//! the selected streams, each next one from the match density seen so far), and reading
//! stops as soon as the windows read hold `limit` entries: a `limit 100` query over a
//! week reads only the newest slice that has 100 matches. Inside a window a
//! DataFusion TopK sort (`SortExec` with `fetch`) keeps only the best `limit` rows, so
//! memory stays bounded however many lines match.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::SortOptions;
use arrow::datatypes::{Int64Type, UInt64Type};
use datafusion_physical_expr::expressions::col;
use datafusion_physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion_physical_optimizer::filter_pushdown::FilterPushdown;
use datafusion_physical_optimizer::PhysicalOptimizerRule;
use datafusion_physical_plan::sorts::sort::SortExec;
use datafusion_physical_plan::{collect, ExecutionPlan};
use serde_json::Value;

use tovlog_logql::ast::{LogExpr, Stage};
use tovlog_logql::pipeline::{LabelsBuilder, Pipeline};
use tovlog_storage::schema::{LINE, METADATA, STREAM_ID, TS};

use super::encode::{self, Categories, EncodedEntry, StreamResult};
use super::exec::{Interner, PipelineMode, StreamMap};
use super::plan::{
    build_scan, convert_matchers, datafusion_error, storage_error, QueryContext, ScanColumns,
    ScanSpec,
};
use super::stats::StatsCollector;
use super::{Direction, QueryError, QueryRequest};

/// The labels of one log entry after the pipeline, in Loki's categories.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct EntryLabels {
    /// Full label set (the entry's stream in the response), sorted by name.
    pub(super) labels: Vec<(String, String)>,
    /// Structured metadata part (categorize-labels only).
    pub(super) structured_metadata: Vec<(String, String)>,
    /// Parsed part (categorize-labels only).
    pub(super) parsed: Vec<(String, String)>,
}

/// One entry after the pipeline, with its labels resolved.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Row {
    /// Timestamp, ns.
    pub(super) ts: i64,
    /// The line after the pipeline.
    pub(super) line: String,
    /// Its labels.
    pub(super) labels: EntryLabels,
}

/// Run a log query.
pub(super) async fn run(
    qc: &QueryContext,
    log: &LogExpr,
    req: &QueryRequest,
    started: Instant,
) -> Result<Value, QueryError> {
    let rows = first_rows(qc, log, req).await?;
    let streams = group_streams(rows, req.categorize_labels);
    let entries: u64 = streams.iter().map(|s| s.entries.len() as u64).sum();
    let result = encode::streams_result(&streams, req.categorize_labels);
    let stats = qc.stats.snapshot(started.elapsed(), entries);
    Ok(encode::envelope(
        "streams",
        result,
        req.categorize_labels,
        &stats,
    ))
}

/// The first `req.limit` entries of `[start, end)` in the query direction, after the
/// pipeline, in output order (labels split into categories when `categorize_labels`).
pub(super) async fn first_rows(
    qc: &QueryContext,
    log: &LogExpr,
    req: &QueryRequest,
) -> Result<Vec<Row>, QueryError> {
    let pipeline =
        Arc::new(Pipeline::new(&log.pipeline).map_err(|e| QueryError::BadRequest(e.to_string()))?);
    let limit = req.limit as usize;
    let mut rows: Vec<Row> = Vec::new();
    if limit > 0 && req.end_ns > req.start_ns {
        let first = first_window_ns(qc, log, req, limit)?;
        let align = qc.storage.chunk_window_ns();
        let mut windows =
            Windows::new(req.start_ns, req.end_ns, req.direction, first).aligned_to(align);
        while let Some((ws, we)) = windows.next_window() {
            // Once matches were seen, a window is sized from their density, and likely
            // holds the last of them: it is read in pieces of whole chunk files from its
            // reading end, a couple at a time, so its far end is not read once the limit is
            // met. Before that the window is one read: it likely holds no match, and every
            // piece would cost a round of planning.
            let need = limit - rows.len();
            let cut = if rows.is_empty() {
                vec![(ws, we)]
            } else {
                pieces(ws, we, req.direction, align)
            };
            let mut reads = futures::stream::iter(cut)
                .map(|(ps, pe)| top_rows(qc, log, &pipeline, req, ps, pe, need))
                .buffered(CONCURRENT_PIECES);
            let mut n = 0;
            while let Some(found) = reads.next().await {
                let mut found = found?;
                n += found.len();
                // Pieces come in reading order, each sorted best first.
                found.truncate(limit - rows.len());
                rows.extend(found);
                if rows.len() >= limit {
                    break;
                }
            }
            if rows.len() >= limit {
                break;
            }
            windows.grow(n, limit - rows.len());
        }
    }
    Ok(rows)
}

/// Most pieces one window is read in (see [`pieces`]).
const MAX_PIECES: i64 = 12;
/// Pieces of a window read at the same time: the next one is read while the current one
/// is, and at most one is read in vain.
const CONCURRENT_PIECES: usize = 2;

/// `[ws, we)` cut at multiples of `align` into at most [`MAX_PIECES`] pieces of whole
/// cells, in reading order (newest first when reading backward).
fn pieces(ws: i64, we: i64, direction: Direction, align: i64) -> Vec<(i64, i64)> {
    if align <= 0 || we.saturating_sub(ws) <= align {
        return vec![(ws, we)];
    }
    // Cut points: the multiples of `align` strictly inside the window.
    let first = ws.div_euclid(align).saturating_add(1);
    let last = (we - 1).div_euclid(align);
    if last < first {
        return vec![(ws, we)];
    }
    // Saturating: a request may span the whole i64 range.
    let cells = last.saturating_sub(first).saturating_add(2);
    let per = cells.saturating_add(MAX_PIECES - 1) / MAX_PIECES;
    let bound = |j: i64| match j {
        0 => ws,
        j if j >= cells => we,
        j => first
            .saturating_add(j - 1)
            .saturating_mul(align)
            .clamp(ws, we),
    };
    let mut out = Vec::new();
    match direction {
        Direction::Backward => {
            let mut j = cells;
            while j > 0 {
                let lo = j.saturating_sub(per).max(0);
                out.push((bound(lo), bound(j)));
                j = lo;
            }
        }
        Direction::Forward => {
            let mut j = 0;
            while j < cells {
                let hi = j.saturating_add(per).min(cells);
                out.push((bound(j), bound(hi)));
                j = hi;
            }
        }
    }
    out
}

/// Rows the first window should hold: `limit` entries of a query that keeps every entry
/// are among its newest rows, a filtered query needs many rows per match. Reading is by
/// compressed page (thousands of rows), so fewer rows save nothing.
fn first_window_rows(log: &LogExpr, limit: usize) -> u64 {
    let filtered = log
        .pipeline
        .iter()
        .any(|s| matches!(s, Stage::LineFilter(_) | Stage::LabelFilter(_)));
    let limit = limit as u64;
    if filtered {
        limit.saturating_mul(64).max(65_536)
    } else {
        limit.saturating_mul(2).max(8_192)
    }
}

/// Length of the first window: the share of the range expected to hold
/// [`first_window_rows`] rows of the selected streams, from the storage's per-file row
/// counts (an estimate: a file counts whole when it overlaps; see
/// `Storage::estimate_rows`).
fn first_window_ns(
    qc: &QueryContext,
    log: &LogExpr,
    req: &QueryRequest,
    limit: usize,
) -> Result<i64, QueryError> {
    let matchers = convert_matchers(&log.selector)?;
    let mut ids: Vec<u64> = qc
        .storage
        .series(&qc.tenant, &matchers, req.start_ns, req.end_ns)
        .map_err(storage_error)?
        .iter()
        .map(|s| s.id)
        .collect();
    ids.sort_unstable();
    let rows = qc
        .storage
        .estimate_rows(&qc.tenant, &ids, req.start_ns, req.end_ns);
    let total = req.end_ns.saturating_sub(req.start_ns);
    let want = first_window_rows(log, limit);
    if rows <= want {
        return Ok(total);
    }
    Ok((total as f64 * want as f64 / rows as f64) as i64)
}

/// The time windows a log query reads, in reading order, starting at the end the
/// direction reads from. The first one is sized by the caller (at least a minute); each
/// next one is sized from the match density seen so far to hold the entries still
/// missing, and is at least twice the previous one, so sparse matches cost a handful of
/// scans.
#[derive(Debug)]
struct Windows {
    start_ns: i64,
    end_ns: i64,
    direction: Direction,
    /// Where the next window starts (backward: its exclusive end).
    cursor: i64,
    size: i64,
    /// Windows at least half this long end on its multiples (see [`Windows::aligned_to`]).
    align: i64,
}

impl Windows {
    const MIN_FIRST_NS: i64 = 60 * 1_000_000_000;

    fn new(start_ns: i64, end_ns: i64, direction: Direction, first_ns: i64) -> Windows {
        Windows {
            start_ns,
            end_ns,
            direction,
            cursor: match direction {
                Direction::Backward => end_ns,
                Direction::Forward => start_ns,
            },
            size: first_ns.max(Self::MIN_FIRST_NS),
            align: 0,
        }
    }

    /// Make windows of at least half of `align_ns` (the chunk files' time span) end on its
    /// multiples: a chunk file's compressed pages cover its whole span, so a window
    /// boundary inside a file would make two windows decompress the same pages.
    fn aligned_to(mut self, align_ns: i64) -> Windows {
        self.align = align_ns.max(0);
        self
    }

    fn next_window(&mut self) -> Option<(i64, i64)> {
        match self.direction {
            Direction::Backward if self.cursor > self.start_ns => {
                let mut lo = self.cursor.saturating_sub(self.size);
                if self.align > 0 && self.size >= self.align / 2 {
                    lo = lo.div_euclid(self.align).saturating_mul(self.align);
                }
                let lo = lo.max(self.start_ns);
                let w = (lo, self.cursor);
                self.cursor = lo;
                Some(w)
            }
            Direction::Forward if self.cursor < self.end_ns => {
                let mut hi = self.cursor.saturating_add(self.size);
                if self.align > 0 && self.size >= self.align / 2 {
                    let up = i64::from(hi.rem_euclid(self.align) != 0);
                    hi = hi
                        .div_euclid(self.align)
                        .saturating_add(up)
                        .saturating_mul(self.align);
                }
                let hi = hi.min(self.end_ns);
                let w = (self.cursor, hi);
                self.cursor = hi;
                Some(w)
            }
            _ => None,
        }
    }

    /// Size the next window after one of the current size yielded `found` entries with
    /// `missing` still wanted.
    fn grow(&mut self, found: usize, missing: usize) {
        let doubled = self.size.saturating_mul(2);
        let estimate = if found == 0 {
            self.size.saturating_mul(8)
        } else {
            // Half again as much as the density suggests, so one more window usually suffices.
            let f = self.size as f64 * missing as f64 / found as f64 * 1.5;
            if f >= i64::MAX as f64 {
                i64::MAX
            } else {
                f as i64
            }
        };
        self.size = doubled.max(estimate);
    }
}

/// Ordering of entries in the output: time in the query direction, then labels and
/// line so ties are deterministic (Loki breaks timestamp ties by labels too).
fn cmp_rows(a: &Row, b: &Row, direction: Direction) -> std::cmp::Ordering {
    let by_ts = match direction {
        Direction::Forward => a.ts.cmp(&b.ts),
        Direction::Backward => b.ts.cmp(&a.ts),
    };
    by_ts
        .then_with(|| a.labels.labels.cmp(&b.labels.labels))
        .then_with(|| a.line.cmp(&b.line))
}

/// The best `need` rows of one window, exactly: deduplicated and with timestamp ties at
/// the cut resolved (the TopK fetch grows until the cut is unambiguous).
async fn top_rows(
    qc: &QueryContext,
    log: &LogExpr,
    pipeline: &Arc<Pipeline>,
    req: &QueryRequest,
    start_ns: i64,
    end_ns: i64,
    need: usize,
) -> Result<Vec<Row>, QueryError> {
    // A few rows past `need`: the cut is certain when the row after it has another
    // timestamp, so one scan is usually enough (fetching exactly `need` never proves that).
    let mut fetch = need.saturating_add(need / 16).saturating_add(1);
    let deferred = pipeline.is_line_filter_only() || keeps_every_entry(&log.pipeline);
    loop {
        let Some((plan, streams)) = build_scan(
            qc,
            ScanSpec {
                log,
                pipeline: Arc::clone(pipeline),
                // When the pipeline cannot drop entries beyond its leading line filters,
                // the limit is decided on raw rows; otherwise PipelineExec drops what the
                // pipeline drops. Either way lines and labels are computed (in
                // `materialize`) only for the rows that survive the limit.
                mode: (!deferred).then_some(PipelineMode::Filter),
                interner: Interner::new(),
                columns: ScanColumns::All,
                start_ns,
                end_ns,
                minute_counts: None,
                metadata_names: None,
            },
        )
        .await?
        else {
            return Ok(Vec::new());
        };
        let schema = plan.schema();
        let ts = col(TS, &schema).map_err(datafusion_error)?;
        let ordering = LexOrdering::new([PhysicalSortExpr::new(
            ts,
            SortOptions {
                descending: req.direction == Direction::Backward,
                nulls_first: false,
            },
        )])
        .ok_or_else(|| QueryError::Internal("empty sort ordering".into()))?;
        let sort: Arc<dyn ExecutionPlan> =
            Arc::new(SortExec::new(ordering, plan).with_fetch(Some(fetch)));
        // Let the TopK's dynamic bound on `ts` reach the scan (through the line filter)
        // so chunks and row groups that cannot beat the current top rows are skipped.
        let sort = FilterPushdown::new_post_optimization()
            .optimize(sort, qc.task.session_config().options())
            .map_err(datafusion_error)?;
        let batches = collect(sort, Arc::clone(&qc.task))
            .await
            .map_err(datafusion_error)?;
        let fetched: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let post = (!pipeline.is_line_filter_only()).then_some(pipeline.as_ref());
        let mut rows = materialize(&batches, &streams, req.categorize_labels, post)?;
        rows.sort_by(|a, b| cmp_rows(a, b, req.direction));
        let boundary_ts = rows.last().map(|r| r.ts);
        let before = rows.len();
        rows.dedup_by(|later, earlier| {
            later.ts == earlier.ts
                && later.line == earlier.line
                && later.labels.labels == earlier.labels.labels
        });
        StatsCollector::add(&qc.stats.duplicates, (before - rows.len()) as u64);
        rows.truncate(need);
        let exact =
            fetched < fetch || (rows.len() == need && Some(rows[need - 1].ts) != boundary_ts);
        if exact {
            return Ok(rows);
        }
        fetch = fetch.saturating_mul(2);
    }
}

/// True when no stage after the leading line filters can drop an entry: no label filter,
/// and no line filter after a stage that rewrites the line (those that come earlier run
/// in the scan as leading filters). `drop`/`keep`, parsers and formatters never drop
/// entries in log queries.
fn keeps_every_entry(stages: &[Stage]) -> bool {
    let mut line_rewritten = false;
    for stage in stages {
        match stage {
            Stage::LabelFilter(_) => return false,
            Stage::LineFilter(_) if line_rewritten => return false,
            Stage::LineFormat(_) | Stage::Decolorize | Stage::Unpack => line_rewritten = true,
            _ => {}
        }
    }
    true
}

/// Turn the sorted rows of the limit into entries: run `post` (the pipeline beyond its
/// leading line filters, when there is one) for the final line and labels, or derive the
/// labels from the stream and its structured metadata.
fn materialize(
    batches: &[RecordBatch],
    streams: &StreamMap,
    categorize: bool,
    post: Option<&Pipeline>,
) -> Result<Vec<Row>, QueryError> {
    let internal = |what: &str| QueryError::Internal(format!("bad log batch: {what}"));
    let mut lb = LabelsBuilder::new();
    let mut rows = Vec::new();
    for batch in batches {
        let column = |name: &str| {
            batch
                .schema_ref()
                .index_of(name)
                .map(|i| batch.column(i))
                .map_err(|_| internal(name))
        };
        let ts = column(TS)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| internal(TS))?;
        let lines = column(LINE)?
            .as_string_opt::<i32>()
            .ok_or_else(|| internal(LINE))?;
        let sids = column(STREAM_ID)?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| internal(STREAM_ID))?;
        let metadata = column(METADATA).ok().and_then(|c| c.as_map_opt());
        for row in 0..batch.num_rows() {
            let mut line: Cow<'_, str> = Cow::Borrowed(lines.value(row));
            let entry_labels = {
                let Some(stream) = streams.0.get(&sids.value(row)) else {
                    continue;
                };
                let mut meta = Vec::new();
                if let Some(map) = metadata {
                    if map.is_valid(row) {
                        let entries = map.value(row);
                        if let (Some(k), Some(v)) = (
                            entries.column(0).as_string_opt::<i32>(),
                            entries.column(1).as_string_opt::<i32>(),
                        ) {
                            for j in 0..entries.len() {
                                let val = if v.is_valid(j) { v.value(j) } else { "" };
                                meta.push((k.value(j).to_owned(), val.to_owned()));
                            }
                        }
                    }
                }
                lb.reset(stream, &meta);
                if let Some(p) = post {
                    let raw = lines.value(row);
                    match p.process(ts.value(row), raw, &mut lb) {
                        Some(out) => line = Cow::Owned(out.into_owned()),
                        None => continue,
                    }
                }
                if categorize {
                    let c = lb.categorized();
                    EntryLabels {
                        labels: lb.labels(),
                        structured_metadata: c.structured_metadata,
                        parsed: c.parsed,
                    }
                } else {
                    EntryLabels {
                        labels: lb.labels(),
                        ..EntryLabels::default()
                    }
                }
            };
            rows.push(Row {
                ts: ts.value(row),
                line: line.into_owned(),
                labels: entry_labels,
            });
        }
    }
    Ok(rows)
}

/// Group ordered rows into result streams by final label set, keeping row order.
fn group_streams(rows: Vec<Row>, categorize: bool) -> Vec<StreamResult> {
    let mut index: HashMap<Vec<(String, String)>, usize> = HashMap::new();
    let mut streams: Vec<StreamResult> = Vec::new();
    let mut cat_index: Vec<HashMap<Categories, u32>> = Vec::new();
    for row in rows {
        let EntryLabels {
            labels,
            structured_metadata,
            parsed,
        } = row.labels;
        let si = match index.get(&labels) {
            Some(&i) => i,
            None => {
                let i = streams.len();
                index.insert(labels.clone(), i);
                streams.push(StreamResult {
                    labels,
                    ..StreamResult::default()
                });
                cat_index.push(HashMap::new());
                i
            }
        };
        let category = if categorize {
            let cats = Categories {
                structured_metadata,
                parsed,
            };
            let stream = &mut streams[si];
            *cat_index[si].entry(cats.clone()).or_insert_with(|| {
                stream.categories.push(cats);
                (stream.categories.len() - 1) as u32
            })
        } else {
            0
        };
        streams[si].entries.push(EncodedEntry {
            ts_ns: row.ts,
            line: row.line,
            category,
        });
    }
    streams
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60 * 1_000_000_000;

    #[test]
    fn entry_dropping_stages_are_recognised() {
        let keeps = |q: &str| match tovlog_logql::parse(q) {
            Ok(tovlog_logql::ast::Expr::Log(l)) => keeps_every_entry(&l.pipeline),
            other => panic!("not a log query: {other:?}"),
        };
        assert!(keeps(
            r#"{a="b"} |= "x" | json | drop __error__, __error_details__"#
        ));
        assert!(keeps(
            r#"{a="b"} | logfmt | line_format "{{.msg}}" | keep level"#
        ));
        assert!(keeps(r#"{a="b"} | json |= "x""#));
        assert!(!keeps(r#"{a="b"} | json | level="error""#));
        assert!(!keeps(r#"{a="b"} | line_format "{{.msg}}" |= "x""#));
        assert!(!keeps(r#"{a="b"} | decolorize != "x""#));
    }

    fn all_windows(start: i64, end: i64, d: Direction, found: usize) -> Vec<(i64, i64)> {
        let mut w = Windows::new(start, end, d, (end - start) / 64);
        let mut out = Vec::new();
        while let Some(x) = w.next_window() {
            out.push(x);
            w.grow(found, 100);
        }
        out
    }

    #[test]
    fn windows_cover_the_range_from_the_reading_end() {
        // Nothing found: 1/64, then ×8 each time.
        let w = all_windows(0, 128 * MIN, Direction::Backward, 0);
        assert_eq!(
            w,
            vec![
                (126 * MIN, 128 * MIN),
                (110 * MIN, 126 * MIN),
                (0, 110 * MIN)
            ]
        );
        let w = all_windows(0, 128 * MIN, Direction::Forward, 0);
        assert_eq!(
            w,
            vec![(0, 2 * MIN), (2 * MIN, 18 * MIN), (18 * MIN, 128 * MIN)]
        );
        // Short ranges are one window.
        assert_eq!(
            all_windows(0, MIN / 2, Direction::Backward, 0),
            vec![(0, MIN / 2)]
        );
        assert!(all_windows(10, 10, Direction::Forward, 0).is_empty());
        // Density-driven: 50 found in 2 minutes, 100 missing → 6 minutes next.
        let mut w = Windows::new(0, 128 * MIN, Direction::Backward, 2 * MIN);
        assert_eq!(w.next_window(), Some((126 * MIN, 128 * MIN)));
        w.grow(50, 100);
        assert_eq!(w.next_window(), Some((120 * MIN, 126 * MIN)));
        // A week: contiguous, no gaps, no overlap, few windows.
        let week = 7 * 24 * 60 * MIN;
        let w = all_windows(0, week, Direction::Backward, 1);
        assert_eq!(w[0].1, week);
        assert_eq!(w.last().unwrap().0, 0);
        assert!(w.len() <= 8, "{} windows", w.len());
        for pair in w.windows(2) {
            assert_eq!(pair[0].0, pair[1].1);
        }
    }

    #[test]
    fn wide_windows_end_on_chunk_file_boundaries() {
        let hour = 60 * MIN;
        let mut w =
            Windows::new(0, 5 * hour + 10 * MIN, Direction::Backward, 40 * MIN).aligned_to(hour);
        assert_eq!(w.next_window(), Some((4 * hour, 5 * hour + 10 * MIN)));
        w.grow(10, 10);
        assert_eq!(w.next_window(), Some((2 * hour, 4 * hour)));
        let mut w = Windows::new(10 * MIN, 5 * hour, Direction::Forward, 40 * MIN).aligned_to(hour);
        assert_eq!(w.next_window(), Some((10 * MIN, hour)));
        w.grow(10, 10);
        assert_eq!(w.next_window(), Some((hour, 3 * hour)));
        // Narrow windows are not widened.
        let mut w = Windows::new(0, 5 * hour, Direction::Backward, 5 * MIN).aligned_to(hour);
        assert_eq!(w.next_window(), Some((5 * hour - 5 * MIN, 5 * hour)));
    }

    #[test]
    fn pieces_cover_a_window_in_whole_files_from_its_reading_end() {
        let hour = 60 * MIN;
        // Three files and two partial ones: cut at every hour, newest first.
        let back = pieces(10 * MIN, 4 * hour + 5 * MIN, Direction::Backward, hour);
        assert_eq!(
            back,
            vec![
                (4 * hour, 4 * hour + 5 * MIN),
                (3 * hour, 4 * hour),
                (2 * hour, 3 * hour),
                (hour, 2 * hour),
                (10 * MIN, hour),
            ]
        );
        let mut fwd = pieces(10 * MIN, 4 * hour + 5 * MIN, Direction::Forward, hour);
        fwd.reverse();
        assert_eq!(fwd, back);
        // A window within one file, or without alignment, is one piece.
        assert_eq!(
            pieces(hour + MIN, 2 * hour, Direction::Backward, hour),
            vec![(hour + MIN, 2 * hour)]
        );
        assert_eq!(
            pieces(0, 9 * hour, Direction::Forward, 0),
            vec![(0, 9 * hour)]
        );
        // A long window: at most MAX_PIECES pieces of whole files, contiguous, in order.
        let week = 7 * 24 * hour;
        let p = pieces(0, week, Direction::Backward, hour);
        assert!(p.len() as i64 <= MAX_PIECES, "{} pieces", p.len());
        assert_eq!(p.first().map(|x| x.1), Some(week));
        assert_eq!(p.last().map(|x| x.0), Some(0));
        for pair in p.windows(2) {
            assert_eq!(pair[0].0, pair[1].1);
            assert_eq!(pair[1].1 % hour, 0);
        }
    }

    fn row(ts: i64, line: &str, job: &str) -> Row {
        Row {
            ts,
            line: line.into(),
            labels: EntryLabels {
                labels: vec![("job".into(), job.into())],
                ..EntryLabels::default()
            },
        }
    }

    #[test]
    fn ties_order_by_labels_in_both_directions() {
        let mut rows = [row(1, "b0", "b"), row(1, "a0", "a"), row(2, "a1", "a")];
        rows.sort_by(|a, b| cmp_rows(a, b, Direction::Forward));
        let lines: Vec<_> = rows.iter().map(|r| r.line.as_str()).collect();
        assert_eq!(lines, ["a0", "b0", "a1"]);
        rows.sort_by(|a, b| cmp_rows(a, b, Direction::Backward));
        let lines: Vec<_> = rows.iter().map(|r| r.line.as_str()).collect();
        assert_eq!(lines, ["a1", "a0", "b0"]);
    }

    #[test]
    fn grouping_keeps_order_and_shares_categories() {
        let mut r1 = row(3, "x", "a");
        r1.labels.structured_metadata = vec![("t".into(), "1".into())];
        let r2 = row(2, "y", "b");
        let mut r3 = row(1, "z", "a");
        r3.labels.structured_metadata = vec![("t".into(), "1".into())];
        let s = group_streams(vec![r1, r2, r3], true);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].entries.len(), 2);
        assert_eq!(s[0].entries[0].line, "x");
        assert_eq!(s[0].entries[1].line, "z");
        assert_eq!(s[0].categories.len(), 1);
        assert_eq!(s[0].entries[1].category, 0);
        assert_eq!(s[1].labels, vec![("job".to_owned(), "b".to_owned())]);
    }
}

//! `LineFilterExec`: the leading line filters of a pipeline, run over whole Arrow
//! `line` arrays directly above the storage scan. It also counts the lines and bytes
//! read, which is what `stats` reports as processed, and normalises the scan's string
//! encodings (a Parquet reader may hand out `Utf8View`/`LargeUtf8`) to the storage schema
//! the nodes above expect; `Utf8View` lines pass when the plan asks for them
//! ([`LineFilterExec::keeping_line_views`]).

use std::fmt;
use std::sync::Arc;

use arrow::array::BooleanBufferBuilder;
use arrow::array::{Array, AsArray, BooleanArray, MapArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion_common::config::ConfigOptions;
use datafusion_common::error::{DataFusionError, Result};
use datafusion_common::tree_node::TreeNodeRecursion;
use datafusion_execution::{SendableRecordBatchStream, TaskContext};
use datafusion_physical_expr::EquivalenceProperties;
use datafusion_physical_plan::filter_pushdown::{FilterDescription, FilterPushdownPhase};
use datafusion_physical_plan::stream::RecordBatchStreamAdapter;
use datafusion_physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
    ReplaceChildrenOptions,
};
use futures::StreamExt;

use tovlog_logql::pipeline::{FieldNeedle, FieldNeedleFinder, Pipeline};
use tovlog_storage::schema::{cast_batch, logs_schema, LINE, METADATA};

use super::lines::Lines;
use crate::query::stats::StatsCollector;

/// Field needles checked per row: `(label, value finder)`. A row is dropped when, for one
/// of them, its line lacks the value and has no backslash (so nothing is escaped) and its
/// structured metadata has no such key: the pipeline's label filter would drop it anyway
/// (see [`tovlog_logql::pipeline::FieldNeedle`]).
#[derive(Default)]
struct FieldPrefilter {
    needles: Vec<FieldNeedleFinder>,
    metadata_idx: Option<usize>,
}

impl FieldPrefilter {
    /// Whether row `i` may pass.
    fn keep(&self, line: &str, metadata: Option<&MapArray>, i: usize) -> bool {
        self.needles.iter().all(|n| {
            n.line_allows(line.as_bytes())
                || metadata.is_some_and(|m| {
                    m.is_valid(i)
                        && m.value(i)
                            .column(0)
                            .as_string_opt::<i32>()
                            .is_none_or(|keys| keys.iter().any(|k| k == Some(n.label.as_str())))
                })
        })
    }
}

/// Filters rows by the pipeline's leading line filters (pass-through when there are none).
pub struct LineFilterExec {
    input: Arc<dyn ExecutionPlan>,
    pipeline: Arc<Pipeline>,
    stats: Arc<StatsCollector>,
    line_idx: usize,
    fields: Arc<FieldPrefilter>,
    /// Output schema and properties when the scan's types differ from the storage schema.
    normalized: Option<(SchemaRef, Arc<PlanProperties>)>,
    /// `Utf8View` lines pass as they are.
    views: bool,
}

/// The scan schema with `line` as Utf8 (or Utf8View, when it is and `views` allows) and
/// `metadata` as the storage map type, or `None` when it already is.
pub(crate) fn normalized_schema(input: &SchemaRef, views: bool) -> Option<SchemaRef> {
    let storage = logs_schema();
    let mut changed = false;
    let fields: Vec<Field> = input
        .fields()
        .iter()
        .map(|f| {
            let want = match f.name().as_str() {
                LINE if views && f.data_type() == &DataType::Utf8View => None,
                LINE | METADATA => storage
                    .field_with_name(f.name())
                    .ok()
                    .map(|sf| sf.data_type().clone()),
                _ => None,
            };
            match want {
                Some(t) if &t != f.data_type() => {
                    changed = true;
                    Field::new(f.name(), t, f.is_nullable())
                }
                _ => f.as_ref().clone(),
            }
        })
        .collect();
    changed.then(|| Arc::new(Schema::new(fields)))
}

/// Cast `batch` to `schema` (same column names and order).
fn normalize_batch(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    Ok(cast_batch(&batch, schema)?)
}

/// The output schema and properties when `input`'s types need normalising.
fn normalization(
    input: &Arc<dyn ExecutionPlan>,
    views: bool,
) -> Option<(SchemaRef, Arc<PlanProperties>)> {
    normalized_schema(&input.schema(), views).map(|schema| {
        let props = input.properties();
        let props = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            props.partitioning.clone(),
            props.emission_type,
            props.boundedness,
        );
        (schema, Arc::new(props))
    })
}

impl fmt::Debug for LineFilterExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineFilterExec").finish_non_exhaustive()
    }
}

impl LineFilterExec {
    /// Wrap `input`, which must have a Utf8 `line` column.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        pipeline: Arc<Pipeline>,
        stats: Arc<StatsCollector>,
    ) -> Result<LineFilterExec, crate::query::QueryError> {
        let line_idx = input.schema().index_of(LINE).map_err(|e| {
            crate::query::QueryError::Internal(format!("scan has no line column: {e}"))
        })?;
        let normalized = normalization(&input, false);
        Ok(LineFilterExec {
            input,
            pipeline,
            stats,
            line_idx,
            fields: Arc::new(FieldPrefilter::default()),
            normalized,
            views: false,
        })
    }

    /// Pass `Utf8View` lines on as they are instead of copying them into `Utf8`: for
    /// nodes above that consume each batch at once (metric samples).
    pub fn keeping_line_views(mut self) -> Self {
        self.normalized = normalization(&self.input, true);
        self.views = true;
        self
    }

    /// Also drop rows that cannot satisfy these field needles. Needles whose label is a
    /// stream label must not be given (the stream label, not the line, decides). Without
    /// a metadata column in the input nothing is added: the check would not be exact.
    pub fn with_field_needles(mut self, needles: &[FieldNeedle]) -> Self {
        let Ok(metadata_idx) = self.input.schema().index_of(METADATA) else {
            return self;
        };
        self.fields = Arc::new(FieldPrefilter {
            needles: FieldNeedle::finders(needles),
            metadata_idx: Some(metadata_idx),
        });
        self
    }
}

impl DisplayAs for LineFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LineFilterExec: filters={}",
            !self.pipeline.leading_line_filters().is_empty()
        )
    }
}

/// Filter one batch; counts what was read.
fn filter_batch(
    batch: RecordBatch,
    line_idx: usize,
    pipeline: &Pipeline,
    fields: &FieldPrefilter,
    stats: &StatsCollector,
) -> Result<RecordBatch> {
    let lines = Lines::of(batch.column(line_idx))
        .ok_or_else(|| DataFusionError::Internal("line column is not a string".into()))?;
    StatsCollector::add(&stats.lines_scanned, batch.num_rows() as u64);
    StatsCollector::add(&stats.bytes_scanned, lines.value_bytes());
    let chain = pipeline.leading_line_filters();
    if chain.is_empty() && fields.needles.is_empty() {
        return Ok(batch);
    }
    let metadata = fields
        .metadata_idx
        .and_then(|i| batch.column(i).as_map_opt());
    let mut mask = BooleanBufferBuilder::new(lines.len());
    let mut kept = 0usize;
    for i in 0..lines.len() {
        let keep = lines.is_valid(i) && {
            let line = lines.value(i);
            chain.matches(line) && fields.keep(line, metadata, i)
        };
        kept += usize::from(keep);
        mask.append(keep);
    }
    if kept == batch.num_rows() {
        return Ok(batch);
    }
    let mask = BooleanArray::new(mask.finish(), None);
    Ok(filter_record_batch(&batch, &mask)?)
}

impl ExecutionPlan for LineFilterExec {
    fn name(&self) -> &str {
        "LineFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        // Same schema, partitioning and order as the scan: rows are only removed.
        match &self.normalized {
            Some((_, props)) => props,
            None => self.input.properties(),
        }
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "LineFilterExec has exactly one child".into(),
            ));
        }
        let mut node = LineFilterExec::try_new(
            children.swap_remove(0),
            Arc::clone(&self.pipeline),
            Arc::clone(&self.stats),
        )
        .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        if self.views {
            node = node.keeping_line_views();
        }
        node.fields = Arc::clone(&self.fields);
        Ok(Arc::new(node))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion_physical_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }

    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        // Rows are only removed, never changed: any filter above (e.g. the dynamic
        // timestamp bound of a TopK sort) holds the same below, where the scan can use
        // it to skip row groups.
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let target = self.normalized.as_ref().map(|(s, _)| Arc::clone(s));
        let schema = target.clone().unwrap_or_else(|| input.schema());
        let pipeline = Arc::clone(&self.pipeline);
        let stats = Arc::clone(&self.stats);
        let fields = Arc::clone(&self.fields);
        let line_idx = self.line_idx;
        let stream = input
            .map(move |batch| {
                // Filter first: only the lines kept are copied when views become Utf8.
                let batch = filter_batch(batch?, line_idx, &pipeline, &fields, &stats)?;
                match &target {
                    Some(t) => normalize_batch(batch, t),
                    None => Ok(batch),
                }
            })
            .filter(|b| futures::future::ready(!matches!(b, Ok(b) if b.num_rows() == 0)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        ArrayRef, Int64Array, MapArray, StringArray, StringViewArray, StructArray, UInt64Array,
    };
    use arrow::buffer::OffsetBuffer;
    use arrow::datatypes::DataType;
    use tovlog_logql::ast::{LineFilter, LineFilterOp, LineFilterValue, Stage};

    fn view_batch() -> RecordBatch {
        let entries = tovlog_storage::schema::metadata_entries_field();
        let DataType::Struct(fields) = entries.data_type().clone() else {
            unreachable!("map entries are a struct")
        };
        let keys: ArrayRef = Arc::new(StringArray::from(vec!["trace_id"]));
        let values: ArrayRef = Arc::new(StringArray::from(vec!["t1"]));
        let map = MapArray::new(
            entries,
            OffsetBuffer::new(vec![0, 1, 1, 1].into()),
            StructArray::new(fields, vec![keys, values], None),
            None,
            false,
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("stream_id", DataType::UInt64, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("line", DataType::Utf8View, false),
            Field::new("metadata", map.data_type().clone(), true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt64Array::from(vec![1, 1, 2])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringViewArray::from(vec![
                    "an error",
                    "fine",
                    "error again",
                ])),
                Arc::new(map),
            ],
        )
        .expect("batch")
    }

    /// `|= "error"`.
    fn error_filter() -> Pipeline {
        Pipeline::new(&[Stage::LineFilter(LineFilter {
            op: LineFilterOp::Contains,
            values: vec![LineFilterValue::Str("error".into())],
        })])
        .expect("pipeline")
    }

    #[test]
    fn view_lines_pass_when_allowed_and_filter_the_same() {
        let batch = view_batch();
        // The view batch's metadata already has the storage type: nothing to normalise.
        assert!(normalized_schema(&batch.schema(), true).is_none());
        let pipeline = error_filter();
        let stats = StatsCollector::new();
        let out =
            filter_batch(batch, 2, &pipeline, &FieldPrefilter::default(), &stats).expect("filter");
        let lines = out.column(2).as_string_view();
        assert_eq!(
            (0..out.num_rows())
                .map(|i| lines.value(i))
                .collect::<Vec<_>>(),
            ["an error", "error again"]
        );
        assert_eq!(
            stats
                .bytes_scanned
                .load(std::sync::atomic::Ordering::Relaxed),
            (8 + 4 + 11) as u64
        );
    }

    #[test]
    fn view_strings_are_normalised_and_filtered() {
        let batch = view_batch();
        let target = normalized_schema(&batch.schema(), false).expect("needs normalising");
        assert_eq!(
            target.field_with_name("line").unwrap().data_type(),
            &DataType::Utf8
        );
        assert!(normalized_schema(&target, false).is_none());
        let batch = normalize_batch(batch, &target).expect("cast");
        let pipeline = error_filter();
        let stats = StatsCollector::new();
        let out =
            filter_batch(batch, 2, &pipeline, &FieldPrefilter::default(), &stats).expect("filter");
        assert_eq!(out.num_rows(), 2);
        let lines = out.column(2).as_string::<i32>();
        assert_eq!(lines.value(0), "an error");
        assert_eq!(lines.value(1), "error again");
        assert_eq!(
            stats
                .lines_scanned
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
        assert_eq!(
            stats
                .bytes_scanned
                .load(std::sync::atomic::Ordering::Relaxed),
            (8 + 4 + 11) as u64
        );
    }

    #[test]
    fn field_needles_keep_lines_with_the_value_or_shadowing_metadata() {
        let batch = view_batch();
        let target = normalized_schema(&batch.schema(), false).expect("needs normalising");
        let batch = normalize_batch(batch, &target).expect("cast");
        let pipeline = Pipeline::new(&[]).expect("pipeline");
        let run = |label: &str, value: &str| {
            let fields = FieldPrefilter {
                needles: vec![FieldNeedle {
                    label: label.into(),
                    value: value.as_bytes().to_vec(),
                    json_value: false,
                }
                .finder()],
                metadata_idx: Some(3),
            };
            let out = filter_batch(batch.clone(), 2, &pipeline, &fields, &StatsCollector::new())
                .expect("filter");
            let lines = out.column(2).as_string::<i32>();
            (0..out.num_rows())
                .map(|i| lines.value(i).to_string())
                .collect::<Vec<_>>()
        };
        // The line has the value; or metadata has the label (row 0: trace_id).
        assert_eq!(run("user", "fine"), ["fine"]);
        assert_eq!(run("trace_id", "zzz"), ["an error"]);
        assert_eq!(run("user", "error"), ["an error", "error again"]);
        assert!(run("user", "absent").is_empty());
        let fields = FieldPrefilter {
            needles: vec![FieldNeedle {
                label: "user".into(),
                value: b"bob".to_vec(),
                json_value: false,
            }
            .finder()],
            metadata_idx: None,
        };
        assert!(fields.keep(r#"{"user":"\u0062ob"}"#, None, 0));
        assert!(!fields.keep(r#"{"user":"alice"}"#, None, 0));
    }

    #[test]
    fn parent_filters_pass_through_to_the_scan() {
        use datafusion_expr::Operator;
        use datafusion_physical_expr::expressions::{col, lit, BinaryExpr};
        use datafusion_physical_plan::empty::EmptyExec;
        use datafusion_physical_plan::filter_pushdown::PushedDown;

        let scan: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(logs_schema()));
        let node = LineFilterExec::try_new(
            scan,
            Arc::new(Pipeline::new(&[]).expect("pipeline")),
            StatsCollector::new(),
        )
        .expect("node");
        let ts = col("ts", &logs_schema()).expect("ts column");
        let filter: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(ts, Operator::Gt, lit(5_i64)));
        let desc = node
            .gather_filters_for_pushdown(
                FilterPushdownPhase::Post,
                vec![filter],
                &ConfigOptions::default(),
            )
            .expect("description");
        let per_child = desc.parent_filters();
        assert_eq!(per_child.len(), 1);
        assert!(matches!(per_child[0][0].discriminant, PushedDown::Yes));
    }
}

//! `LineFilterExec`: the leading line filters of a pipeline, run over whole Arrow
//! `line` arrays directly above the storage scan. It also counts the lines and bytes
//! read, which is what `stats` reports as processed.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::BooleanBufferBuilder;
use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::filter_pushdown::{FilterDescription, FilterPushdownPhase};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
    ReplaceChildrenOptions,
};
use futures::StreamExt;

use tovlog_logql::pipeline::Pipeline;
use tovlog_storage::schema::LINE;

use crate::query::stats::StatsCollector;

/// Filters rows by the pipeline's leading line filters (pass-through when there are none).
pub struct LineFilterExec {
    input: Arc<dyn ExecutionPlan>,
    pipeline: Arc<Pipeline>,
    stats: Arc<StatsCollector>,
    line_idx: usize,
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
        Ok(LineFilterExec {
            input,
            pipeline,
            stats,
            line_idx,
        })
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
    stats: &StatsCollector,
) -> Result<RecordBatch> {
    let lines = batch
        .column(line_idx)
        .as_string_opt::<i32>()
        .ok_or_else(|| DataFusionError::Internal("line column is not Utf8".into()))?;
    let offsets = lines.value_offsets();
    let bytes = (offsets[offsets.len() - 1] - offsets[0]) as u64;
    StatsCollector::add(&stats.lines_scanned, batch.num_rows() as u64);
    StatsCollector::add(&stats.bytes_scanned, bytes);
    let chain = pipeline.leading_line_filters();
    if chain.is_empty() {
        return Ok(batch);
    }
    let mut mask = BooleanBufferBuilder::new(lines.len());
    let mut kept = 0usize;
    if lines.null_count() == 0 {
        for i in 0..lines.len() {
            let keep = chain.matches(lines.value(i));
            kept += usize::from(keep);
            mask.append(keep);
        }
    } else {
        for i in 0..lines.len() {
            let keep = lines.is_valid(i) && chain.matches(lines.value(i));
            kept += usize::from(keep);
            mask.append(keep);
        }
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
        self.input.properties()
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
        let input = children.swap_remove(0);
        let line_idx = input.schema().index_of(LINE)?;
        Ok(Arc::new(LineFilterExec {
            input,
            pipeline: Arc::clone(&self.pipeline),
            stats: Arc::clone(&self.stats),
            line_idx,
        }))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::ChildrenPropertiesMode::Recompute,
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
        let schema = input.schema();
        let pipeline = Arc::clone(&self.pipeline);
        let stats = Arc::clone(&self.stats);
        let line_idx = self.line_idx;
        let stream = input
            .map(move |batch| filter_batch(batch?, line_idx, &pipeline, &stats))
            .filter(|b| futures::future::ready(!matches!(b, Ok(b) if b.num_rows() == 0)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

//! A caller's line predicate as a DataFusion [`PhysicalExpr`], so the Parquet reader can
//! evaluate it while decoding (row-filter pushdown): the other columns of a chunk file, the
//! structured metadata above all, are then decoded only for the rows that pass. The storage
//! layer does not know what the predicate means (LogQL line filters, for the query engine);
//! it only requires that dropping a row whose line fails it loses nothing the caller wants.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, BooleanBufferBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use datafusion_common::error::{DataFusionError, Result as DfResult};
use datafusion_expr::ColumnarValue;
use datafusion_physical_plan::PhysicalExpr;

/// Decides from a line alone whether a row may be wanted.
pub type LineMatch = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Told, once per batch, how many rows the predicate dropped and their line bytes (so a
/// caller's statistics still count every line read).
pub type OnRejected = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// A row predicate on the line column for [`super::LogsTable::with_line_predicate`].
#[derive(Clone)]
pub struct LinePredicate {
    /// Rows whose line fails it are not wanted...
    pub matches: LineMatch,
    /// ...unless their structured metadata has one of these keys: in files that may hold
    /// such a key the predicate is not applied.
    pub unless_metadata_keys: Vec<String>,
    /// Called with the rows and line bytes each evaluated batch dropped.
    pub on_rejected: Option<OnRejected>,
}

impl fmt::Debug for LinePredicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinePredicate")
            .field("unless_metadata_keys", &self.unless_metadata_keys)
            .finish_non_exhaustive()
    }
}

/// `matches(line)` over a batch, as a physical expression with the line column as child.
pub(crate) struct LineMatchExpr {
    line: Arc<dyn PhysicalExpr>,
    matches: LineMatch,
    on_rejected: Option<OnRejected>,
}

impl LineMatchExpr {
    pub(crate) fn new(line: Arc<dyn PhysicalExpr>, predicate: &LinePredicate) -> LineMatchExpr {
        LineMatchExpr {
            line,
            matches: Arc::clone(&predicate.matches),
            on_rejected: predicate.on_rejected.clone(),
        }
    }

    /// Append `matches` of each line to `out`; returns the dropped rows and bytes.
    fn eval<'a>(
        &self,
        lines: impl Iterator<Item = Option<&'a str>>,
        out: &mut BooleanBufferBuilder,
    ) -> (u64, u64) {
        let (mut rows, mut bytes) = (0u64, 0u64);
        for line in lines {
            let keep = line.is_some_and(|l| (self.matches)(l));
            if !keep {
                rows += 1;
                bytes += line.map_or(0, |l| l.len() as u64);
            }
            out.append(keep);
        }
        (rows, bytes)
    }
}

impl fmt::Debug for LineMatchExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tovlog_line_match({:?})", self.line)
    }
}

impl fmt::Display for LineMatchExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tovlog_line_match({})", self.line)
    }
}

// Identity is the closure's: two expressions are equal only when they share it.
impl PartialEq for LineMatchExpr {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.matches, &other.matches) && self.line.eq(&other.line)
    }
}

impl Eq for LineMatchExpr {}

impl Hash for LineMatchExpr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.matches) as *const () as usize).hash(state);
        self.line.hash(state);
    }
}

impl PhysicalExpr for LineMatchExpr {
    fn data_type(&self, _input_schema: &Schema) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, _input_schema: &Schema) -> DfResult<bool> {
        Ok(false)
    }

    fn evaluate(&self, batch: &RecordBatch) -> DfResult<ColumnarValue> {
        let array = self.line.evaluate(batch)?.into_array(batch.num_rows())?;
        let mut out = BooleanBufferBuilder::new(array.len());
        // The reader may hand out any string encoding.
        let (rows, bytes) = if let Some(lines) = array.as_string_view_opt() {
            self.eval(lines.iter(), &mut out)
        } else {
            let utf8;
            let lines = match array.as_string_opt::<i32>() {
                Some(l) => l,
                None => {
                    utf8 = cast(&array, &DataType::Utf8)?;
                    utf8.as_string_opt::<i32>().ok_or_else(|| {
                        DataFusionError::Internal("line column is not a string".into())
                    })?
                }
            };
            self.eval(lines.iter(), &mut out)
        };
        if let Some(f) = &self.on_rejected {
            if rows > 0 {
                f(rows, bytes);
            }
        }
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(
            out.finish(),
            None,
        ))))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.line]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> DfResult<Arc<dyn PhysicalExpr>> {
        let line = children
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("line match needs its column".into()))?;
        Ok(Arc::new(LineMatchExpr {
            line,
            matches: Arc::clone(&self.matches),
            on_rejected: self.on_rejected.clone(),
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tovlog_line_match(")?;
        self.line.fmt_sql(f)?;
        write!(f, ")")
    }
}

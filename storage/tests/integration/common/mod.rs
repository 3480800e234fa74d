//! Helpers shared by the storage integration tests.

use std::path::Path;

use tovlog_storage::{Entry, LabelSet, PushStream, StorageConfig};

/// Default settings on a data directory.
pub fn config(dir: &Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.to_path_buf(),
        ..StorageConfig::default()
    }
}

/// A label set from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    LabelSet::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// A pushed stream of `(ts, line)` entries without metadata.
pub fn push(pairs: &[(&str, &str)], entries: &[(i64, &str)]) -> PushStream {
    PushStream {
        labels: labels(pairs),
        entries: entries
            .iter()
            .map(|(ts, line)| Entry {
                ts_ns: *ts,
                line: line.to_string(),
                metadata: Vec::new(),
            })
            .collect(),
    }
}

/// The rows of `table` (the named `columns`, every column when empty), read through the
/// same scan plan the query engine executes.
pub async fn collect(
    storage: &tovlog_storage::Storage,
    table: &tovlog_storage::scan::LogsTable,
    columns: &[&str],
) -> tovlog_storage::Result<Vec<arrow::array::RecordBatch>> {
    let schema = table.schema();
    let projection = if columns.is_empty() {
        None
    } else {
        Some(
            columns
                .iter()
                .map(|c| schema.index_of(c))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    let plan = table.scan(2, projection.as_ref()).await?;
    Ok(datafusion_physical_plan::collect(plan, storage.task_context()).await?)
}

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

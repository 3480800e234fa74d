//! Storage configuration. Defaults live in the `Default` impls only.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Storage settings (the `storage:` section of the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Root data directory (WAL, indexes, local chunks). Default `./data`.
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
        }
    }
}

//! Recording rules' samples to Prometheus remote write 1.0 (protobuf + snappy).
//!
//! INTERFACE PLACEHOLDER: the types and signatures below are the contract between the rule
//! manager and the remote writer; the implementation replaces the bodies.

use std::{collections::BTreeMap, sync::Arc};

use super::config::RemoteWriteConfig;

/// One recorded sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Series labels including `__name__` (the rule's `record`) and the external labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
    /// Evaluation time, Unix milliseconds.
    pub timestamp_ms: i64,
}

/// Queues samples and sends them to every configured client with retries.
#[derive(Debug)]
pub struct RemoteWriter {
    _clients: usize,
}

impl RemoteWriter {
    /// `None` when remote write is disabled or has no client; starts the background senders.
    pub fn new(config: &RemoteWriteConfig) -> anyhow::Result<Option<Arc<RemoteWriter>>> {
        if !config.enabled || config.clients.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(RemoteWriter {
            _clients: config.clients.len(),
        })))
    }

    /// Queue one evaluation's samples without blocking.
    pub fn send(&self, samples: Vec<Sample>) {
        drop(samples);
    }

    /// Append this writer's metrics in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        let _ = out;
    }
}

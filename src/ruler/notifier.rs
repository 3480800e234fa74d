//! Alert notifications to Alertmanager (API v2).
//!
//! INTERFACE PLACEHOLDER: the types and signatures below are the contract between the rule
//! manager and the notifier; the implementation replaces the bodies.

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use super::RulerConfig;

/// One alert as sent to Alertmanager (`POST /api/v2/alerts`).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Labels, after templating, with the rule's and the external labels and `alertname`.
    pub labels: BTreeMap<String, String>,
    /// Annotations, after templating.
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing (`startsAt`).
    pub starts_at: SystemTime,
    /// Set for resolved alerts (`endsAt`); for firing alerts the notifier sends
    /// `evaluation time + 4 × max(resend_delay, group interval)` as Prometheus does.
    pub ends_at: Option<SystemTime>,
    /// Link back to the query (`generatorURL`).
    pub generator_url: String,
}

/// Sends alerts to every configured Alertmanager from a bounded queue.
#[derive(Debug)]
pub struct Notifier {
    _urls: Vec<String>,
}

impl Notifier {
    /// Build the notifier and start its background sender (needs a Tokio runtime).
    pub fn new(config: &RulerConfig) -> anyhow::Result<Arc<Notifier>> {
        Ok(Arc::new(Notifier {
            _urls: config.alertmanager_urls(),
        }))
    }

    /// Queue alerts without blocking; when the queue is full the oldest are dropped and counted.
    pub fn send(&self, alerts: Vec<Alert>) {
        drop(alerts);
    }

    /// Append this notifier's metrics in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        let _ = out;
    }
}

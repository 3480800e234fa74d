//! The ruler: LogQL alerting and recording rules evaluated in process, as Loki's ruler.
//!
//! ```text
//!  rule stores (local dir, object store) ─► groups ─► evaluation loop (instant queries through
//!  query::QueryEngine) ─► alert states ─► notifier (Alertmanager API v2)
//!                                       └► recorded samples ─► remote write (Prometheus 1.0)
//! ```

pub mod client_tls;
pub mod config;
pub mod group;
pub mod manager;
pub mod notifier;
pub mod remote_write;
pub mod state;
pub mod store;
pub mod template;

pub use config::RulerConfig;
pub use manager::Ruler;

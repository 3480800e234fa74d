//! tovlog: a log database that speaks Grafana Loki's API.
//!
//! ```text
//!  push (protobuf+snappy | JSON, gzip) ─► ingest (validate, limits) ─► storage: WAL ─► head ─► Parquet chunks
//!  LogQL ─► tovlog-logql (parse, validate) ─► query engine (DataFusion over head + chunks) ─► Loki JSON
//! ```
//!
//! The binary (`main.rs`) only calls [`cli::run`], which parses the command line and calls [`server::start`]; tests and
//! benchmarks start the same server in-process.

pub mod cli;
pub mod config;
pub mod erase;
pub mod ingest;
pub mod limits;
pub mod query;
pub mod ruler;
pub mod server;
pub mod tail;
pub mod telemetry;
pub mod verify;

pub use config::Config;

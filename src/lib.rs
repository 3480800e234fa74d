//! tovlog: a log database that speaks Grafana Loki's API.

pub mod query;

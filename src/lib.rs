//! tovlog: a log database that speaks Grafana Loki's API.

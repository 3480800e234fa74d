//! tovlog's integration tests: one binary (less linking on a 2-core CI) whose modules each start
//! real servers on loopback ports and talk real HTTP.

mod auth;
mod compare;
mod conformance;
mod crash;
mod crash_matrix;
mod dashboards;
mod deletes;
mod drilldown;
mod erase_crash;
mod limits;
mod logcli;
mod otlp;
mod patterns;
mod playbook;
mod push;
mod quarantine;
mod redact;
mod retention;
mod ruler;
mod ruler_e2e;
mod ruler_peers;
mod server;
mod sor;
mod store_outage;
mod tail;
mod tls;
mod verify;
mod wal_full;

//! tovlog's integration tests: one binary (less linking on a 2-core CI) whose modules each start
//! real servers on loopback ports and talk real HTTP.

mod compare;
mod conformance;
mod crash;
mod dashboards;
mod logcli;
mod push;
mod server;

//! Fuzz the query API's parameters: the input is a query string (`query=…&start=…&end=…&
//! step=…&limit=…&direction=…&time=…&since=…`) parsed as `query_range` and `query` parse it, with
//! Loki's time, duration and step rules. No input may panic or overflow.
#![no_main]

use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use tovlog::server::params::{self, Params};

const NOW_NS: i64 = 1_765_000_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let p = Params::collect(&Method::GET, Some(text), &HeaderMap::new(), &[]);
    if let Ok(r) = params::range_params(&p, NOW_NS) {
        assert!(r.start_ns <= r.end_ns && r.step_ns > 0 && r.limit > 0);
    }
    let _ = params::parse_time(p.get("time"), NOW_NS, "time");
    let _ = p.get("step").map(params::parse_step);
    // Drilldown's `since`, and every other duration of the API and the config.
    let _ = p.get("since").map(tovlog::config::duration::parse);
});

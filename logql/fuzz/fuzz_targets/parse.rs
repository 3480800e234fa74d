//! Fuzz the LogQL parser: no input may panic or hang, and every accepted query must
//! survive a format → parse round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tovlog_logql::{format::format, parse, parser::parse_expr};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = parse(query) else {
        return;
    };
    let text = format(&expr);
    // NaN and infinities (from folding `1/0`) print as Loki prints them and do not re-parse.
    if text.contains("NaN") || text.contains("Inf") {
        return;
    }
    match parse_expr(&text) {
        Ok(again) => assert_eq!(again, expr, "round trip of {query:?} through {text:?}"),
        Err(e) => panic!("formatted {text:?} (from {query:?}) does not parse: {e}"),
    }
});

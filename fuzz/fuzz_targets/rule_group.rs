//! Fuzz rule-group YAML as the ruler API and rule files take it (one group, or a file of
//! `groups:`). No input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tovlog::ruler::group::{parse_file, parse_group};

fuzz_target!(|data: &[u8]| {
    let _ = parse_group(data);
    let _ = parse_file(data);
});

//! Fuzz the configuration file: parse as YAML into the config and validate it. No input
//! may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = tovlog::Config::from_yaml(text) {
        let _ = config.validate();
    }
});

//! Fuzz the OTLP/HTTP logs decoders (protobuf and JSON, picked by the first byte) and the
//! mapping of a decoded request to streams. No input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tovlog::ingest::otlp::{decode, Format};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = if selector & 1 == 0 {
        Format::Protobuf
    } else {
        Format::Json
    };
    let _ = decode(body, format);
});

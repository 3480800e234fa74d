//! Fuzz the push body decoders: the first byte picks the `Content-Encoding` (none, gzip,
//! deflate) and the `Content-Type` (protobuf+snappy, JSON), the rest is the body. No input
//! may panic; whatever decodes must validate without panicking too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tovlog::ingest::decode::{decode, decompress};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let encoding = match selector & 0x3 {
        0 => None,
        1 => Some("gzip"),
        2 => Some("deflate"),
        _ => Some("identity"),
    };
    let content_type = if selector & 0x4 == 0 {
        Some("application/x-protobuf")
    } else {
        Some("application/json")
    };
    let Ok(plain) = decompress(body, encoding) else {
        return;
    };
    let body = plain.as_deref().unwrap_or(body);
    if let Ok(streams) = decode(body, content_type) {
        for s in &streams {
            if let tovlog::ingest::decode::RawLabels::Text(text) = &s.labels {
                let _ = tovlog::ingest::validate::parse_label_text(text);
            }
        }
    }
});

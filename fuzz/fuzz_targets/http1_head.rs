//! Any bytes as the start of an HTTP/1 request to the gateway: read, refused with a status, or
//! awaited (incomplete), never a panic; and a head that is read has one framing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((method, path, framing))) = gateway::read_request_head(data) {
        assert!(!method.is_empty() && path.starts_with('/'), "{method:?} {path:?}");
        assert!(framing == "none" || framing == "chunked" || framing.starts_with("length "), "{framing}");
    }
});

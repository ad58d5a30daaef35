//! The v3 JSON gateway's request decoder (`cairn_grpc_gateway::json::decode_request`):
//! a path under `/v3/` and a body, as a client sends them. Decoding never panics; a
//! decoded request writes back as JSON that decodes to the same message.
//!
//! Input: the path (e.g. `kv/range`), `\n`, then the body.
#![no_main]

use cairn_grpc_gateway::json::decode_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == b'\n');
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let Some(Ok((encoded, json))) = decode_request(&path, body) else {
        return;
    };
    // What the gateway decoded survives a round trip through its own JSON.
    match decode_request(&path, json.as_bytes()) {
        Some(Ok((again, _))) => assert_eq!(again, encoded, "{json}"),
        other => panic!("{json} does not decode again: {other:?}"),
    }
});

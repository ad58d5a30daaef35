//! The v2 keys API's decoders (`cairn_grpc_gateway::v2::params`): a request's method,
//! URL path, query string and form body, as a client sends them. Decoding never panics;
//! a decoded path is clean (absolute, no empty, `.` or `..` segment) and maps to v3 keys
//! that decode back to it.
//!
//! Input: a byte choosing the method, then the path, query and body separated by `\n`.
#![no_main]

use cairn_grpc_gateway::v2::keyspace;
use cairn_grpc_gateway::v2::params::{parse, Method};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let method = [Method::Get, Method::Put, Method::Post, Method::Delete][selector as usize % 4];
    let mut parts = rest.splitn(3, |b| *b == b'\n');
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let query = parts.next().map(String::from_utf8_lossy);
    let body = parts.next();
    let Ok(req) = parse(method, &path, query.as_deref(), body) else {
        return;
    };
    let clean = req.path.as_str();
    assert!(clean.starts_with('/'));
    assert!(req.path.is_root() || !clean.ends_with('/'));
    assert!(!clean
        .split('/')
        .skip(1)
        .any(|s| s == "." || s == ".." || (s.is_empty() && clean != "/")));
    // Only nodes up to MAX_DEPTH levels are ever written (the store refuses deeper
    // ones), so only their keys must decode back; a deeper path's key (its depth past
    // three digits) matches no node, as etcd finds no such key.
    if !req.path.is_root() && req.path.depth() <= keyspace::MAX_DEPTH {
        assert_eq!(
            keyspace::decode_key(&keyspace::file_key(&req.path)),
            Some((req.path.clone(), false))
        );
        assert_eq!(
            keyspace::decode_key(&keyspace::dir_key(&req.path)),
            Some((req.path.clone(), true))
        );
    }
});

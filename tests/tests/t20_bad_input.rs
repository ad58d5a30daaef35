//! Bad input gets etcd's exact gRPC code and message, and changes nothing.

use cairn_tests::etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
};
use cairn_tests::tonic::Code;
use cairn_tests::{assert_status, Server, ServerOpts};

const EMPTY_KEY: &str = "etcdserver: key is not provided";
const TOO_LARGE: &str = "etcdserver: request is too large";
const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";

/// etcd's default `--max-request-bytes`: 1.5 MiB.
const DEFAULT_MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024 / 2;
/// etcd lets gRPC receive messages up to the request limit plus this much.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Key, value, create revision, mod revision, version.
type Entry = (Vec<u8>, Vec<u8>, i64, i64, i64);

/// Every key with its value and revisions, and the store's revision.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    revision: i64,
    kvs: Vec<Entry>,
}

async fn snapshot(client: &mut Client) -> Snapshot {
    let resp = client
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .expect("range all keys");
    Snapshot {
        revision: resp.header().expect("header").revision(),
        kvs: resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key().to_vec(),
                    kv.value().to_vec(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version(),
                )
            })
            .collect(),
    }
}

/// A server holding a few keys (revisions 2..=4), and a client.
async fn seeded(opts: ServerOpts) -> (Server, Client) {
    let server = Server::start(opts);
    let mut client = server.client().await;
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
        client.put(key, value, None).await.expect("seed put");
    }
    (server, client)
}

/// The size of a `PutRequest{key, value}` on the wire.
fn put_request_len(key: usize, value: usize) -> usize {
    fn varint_len(mut n: usize) -> usize {
        let mut len = 1;
        while n >= 0x80 {
            n >>= 7;
            len += 1;
        }
        len
    }
    1 + varint_len(key) + key + 1 + varint_len(value) + value
}

fn grpc_too_large(message_len: usize, limit: usize) -> String {
    format!("grpc: received message larger than max ({message_len} vs. {limit})")
}

#[tokio::test]
async fn empty_key_is_rejected() {
    let (_server, mut client) = seeded(ServerOpts::new()).await;
    let before = snapshot(&mut client).await;

    assert_status(
        client.put("", "v", None).await,
        Code::InvalidArgument,
        EMPTY_KEY,
    );
    assert_status(client.get("", None).await, Code::InvalidArgument, EMPTY_KEY);
    assert_status(
        client.delete("", None).await,
        Code::InvalidArgument,
        EMPTY_KEY,
    );
    assert_status(
        client
            .delete("", Some(DeleteOptions::new().with_prev_key()))
            .await,
        Code::InvalidArgument,
        EMPTY_KEY,
    );
    let txn = Txn::new().and_then([TxnOp::put("z", "1", None), TxnOp::put("", "2", None)]);
    assert_status(client.txn(txn).await, Code::InvalidArgument, EMPTY_KEY);
    let txn = Txn::new().or_else([TxnOp::get("", None)]);
    assert_status(client.txn(txn).await, Code::InvalidArgument, EMPTY_KEY);
    let txn = Txn::new().and_then([TxnOp::delete("", None)]);
    assert_status(client.txn(txn).await, Code::InvalidArgument, EMPTY_KEY);

    assert_eq!(snapshot(&mut client).await, before);
}

#[tokio::test]
async fn oversized_requests_default_limit() {
    let (_server, mut client) = seeded(ServerOpts::new()).await;
    let before = snapshot(&mut client).await;

    // Above --max-request-bytes but within gRPC's receive limit: etcd's own error.
    let value = vec![b'x'; 1_600_000];
    assert_status(
        client.put("big", value, None).await,
        Code::InvalidArgument,
        TOO_LARGE,
    );
    // The limit is on the whole request: two 1 MB puts in one txn.
    let txn = Txn::new().and_then([
        TxnOp::put("big1", vec![b'x'; 1_000_000], None),
        TxnOp::put("big2", vec![b'y'; 1_000_000], None),
    ]);
    assert_status(client.txn(txn).await, Code::InvalidArgument, TOO_LARGE);

    // Above gRPC's receive limit (request limit + 512 KiB): gRPC refuses it.
    let value = vec![b'x'; 3_000_000];
    assert_status(
        client.put("big", value, None).await,
        Code::ResourceExhausted,
        &grpc_too_large(
            put_request_len(3, 3_000_000),
            DEFAULT_MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES,
        ),
    );

    assert_eq!(snapshot(&mut client).await, before);

    // Just below the limit is fine.
    let value = vec![b'v'; 1_500_000];
    let resp = client
        .put("big", value.clone(), None)
        .await
        .expect("1.5 MB put");
    assert_eq!(
        resp.header().map(|h| h.revision()),
        Some(before.revision + 1)
    );
    let resp = client.get("big", None).await.unwrap();
    assert_eq!(resp.kvs()[0].value(), value.as_slice());
}

#[tokio::test]
async fn oversized_requests_custom_limit() {
    let (_server, mut client) =
        seeded(ServerOpts::new().arg("--max-request-bytes").arg("10000")).await;
    let before = snapshot(&mut client).await;

    assert_status(
        client.put("big", vec![b'x'; 10_001], None).await,
        Code::InvalidArgument,
        TOO_LARGE,
    );
    assert_status(
        client.put("big", vec![b'x'; 600_000], None).await,
        Code::ResourceExhausted,
        &grpc_too_large(put_request_len(3, 600_000), 10_000 + GRPC_OVERHEAD_BYTES),
    );
    assert_eq!(snapshot(&mut client).await, before);

    client
        .put("small", vec![b'x'; 9_000], None)
        .await
        .expect("9 KB put under a 10 KB limit");
}

fn puts(count: usize) -> Vec<TxnOp> {
    (0..count)
        .map(|i| TxnOp::put(format!("op{i:03}"), "v", None))
        .collect()
}

fn compares(count: usize) -> Vec<Compare> {
    (0..count)
        .map(|i| Compare::version(format!("op{i:03}"), CompareOp::Equal, 0))
        .collect()
}

#[tokio::test]
async fn too_many_txn_ops_default_limit() {
    let (_server, mut client) = seeded(ServerOpts::new()).await;
    let before = snapshot(&mut client).await;

    for txn in [
        Txn::new().and_then(puts(129)),
        Txn::new().or_else(puts(129)),
        Txn::new().when(compares(129)),
    ] {
        assert_status(client.txn(txn).await, Code::InvalidArgument, TOO_MANY_OPS);
    }
    assert_eq!(snapshot(&mut client).await, before);

    let txn = Txn::new()
        .when(compares(128))
        .and_then(puts(128))
        .or_else(puts(128));
    let resp = client.txn(txn).await.expect("128 ops per list are allowed");
    assert!(resp.succeeded());
    assert_eq!(resp.op_responses().len(), 128);
    assert_eq!(snapshot(&mut client).await.revision, before.revision + 1);
}

#[tokio::test]
async fn too_many_txn_ops_custom_limit() {
    let (_server, mut client) = seeded(ServerOpts::new().arg("--max-txn-ops").arg("4")).await;
    let before = snapshot(&mut client).await;
    assert_status(
        client.txn(Txn::new().and_then(puts(5))).await,
        Code::InvalidArgument,
        TOO_MANY_OPS,
    );
    assert_eq!(snapshot(&mut client).await, before);
    client
        .txn(Txn::new().and_then(puts(4)))
        .await
        .expect("4 ops under --max-txn-ops 4");
}

#[tokio::test]
async fn duplicate_keys_in_txn() {
    let (_server, mut client) = seeded(ServerOpts::new()).await;
    let before = snapshot(&mut client).await;

    let duplicates = [
        Txn::new().and_then([TxnOp::put("k", "1", None), TxnOp::put("k", "2", None)]),
        Txn::new().or_else([TxnOp::put("a", "1", None), TxnOp::put("a", "2", None)]),
        // A delete range covering a put key.
        Txn::new().and_then([
            TxnOp::put("b", "1", None),
            TxnOp::delete("a", Some(DeleteOptions::new().with_range("c"))),
        ]),
        // A nested txn writing a key of its parent.
        Txn::new().and_then([
            TxnOp::put("k", "1", None),
            TxnOp::txn(Txn::new().and_then([TxnOp::put("k", "2", None)])),
        ]),
    ];
    for txn in duplicates {
        let label = format!("{txn:?}");
        let result = client.txn(txn).await;
        assert!(result.is_err(), "{label}");
        assert_status(result, Code::InvalidArgument, DUPLICATE_KEY);
    }
    assert_eq!(snapshot(&mut client).await, before);

    // The same key in the two branches, or read twice, is fine.
    let txn = Txn::new()
        .and_then([
            TxnOp::put("k", "1", None),
            TxnOp::get("k", None),
            TxnOp::get("k", None),
        ])
        .or_else([TxnOp::put("k", "2", None)]);
    assert!(client.txn(txn).await.expect("txn").succeeded());
}

#[tokio::test]
async fn revisions_out_of_range() {
    let (_server, mut client) = seeded(ServerOpts::new()).await;
    client.compact(3, None).await.expect("compact");
    let before = snapshot(&mut client).await;
    assert_eq!(before.revision, 4);

    let at = |rev| Some(GetOptions::new().with_revision(rev));
    assert_status(client.get("a", at(2)).await, Code::OutOfRange, COMPACTED);
    assert_status(client.get("a", at(5)).await, Code::OutOfRange, FUTURE_REV);
    assert_status(
        client.get("a", at(1000)).await,
        Code::OutOfRange,
        FUTURE_REV,
    );
    let txn = Txn::new().and_then([TxnOp::put("z", "1", None), TxnOp::get("a", at(5))]);
    assert_status(client.txn(txn).await, Code::OutOfRange, FUTURE_REV);
    assert_status(client.compact(5, None).await, Code::OutOfRange, FUTURE_REV);
    assert_status(client.compact(3, None).await, Code::OutOfRange, COMPACTED);
    assert_eq!(snapshot(&mut client).await, before);

    let resp = client
        .get("a", at(3))
        .await
        .expect("the compacted revision itself");
    assert_eq!(resp.kvs()[0].value(), b"1");
    let resp = client.get("a", at(4)).await.expect("the current revision");
    assert_eq!(resp.kvs()[0].value(), b"1");
}

#[tokio::test]
async fn missing_key_or_lease_in_put() {
    let (_server, mut client) = seeded(ServerOpts::new()).await;
    let before = snapshot(&mut client).await;
    assert_status(
        client
            .put("nokey", "", Some(PutOptions::new().with_ignore_value()))
            .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        client
            .put("nokey", "v", Some(PutOptions::new().with_ignore_lease()))
            .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        client
            .put("a", "v", Some(PutOptions::new().with_lease(0x1234)))
            .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    assert_eq!(snapshot(&mut client).await, before);
}

#[tokio::test]
async fn value_or_lease_given_with_its_ignore_flag() {
    let (_server, mut client) = seeded(ServerOpts::new()).await;
    let before = snapshot(&mut client).await;
    assert_status(
        client
            .put("a", "v", Some(PutOptions::new().with_ignore_value()))
            .await,
        Code::InvalidArgument,
        "etcdserver: value is provided",
    );
    assert_status(
        client
            .put(
                "a",
                "",
                Some(PutOptions::new().with_lease(0x1234).with_ignore_lease()),
            )
            .await,
        Code::InvalidArgument,
        "etcdserver: lease is provided",
    );
    assert_eq!(snapshot(&mut client).await, before);
}

#[test]
fn oversized_put_through_etcdctl() {
    let server = Server::start(ServerOpts::new());
    // `etcdctl put <key>` reads the value from stdin.
    let value = "x".repeat(1_600_000);
    assert_eq!(
        server.etcdctl_with_stdin(&["put", "big"], &value).fail(),
        format!("Error: {TOO_LARGE}")
    );
    assert_eq!(server.etcdctl(&["get", "big"]).ok(), "");
    assert_eq!(
        server.etcdctl_with_stdin(&["put", "small"], "abc\n").ok(),
        "OK\n"
    );
    assert_eq!(server.etcdctl(&["get", "small"]).ok(), "small\nabc\n\n");
}

#[test]
fn an_unknown_flag_is_refused_with_etcds_message() {
    for (flag, named) in [
        ("--no-such-flag", "-no-such-flag"),
        ("--no-such-flag=3", "-no-such-flag"),
    ] {
        let mut server = Server::launch(ServerOpts::new().arg(flag));
        let status = server.wait_exit(std::time::Duration::from_secs(20));
        assert_eq!(status.code(), Some(2), "{flag}");
        let log = server.log_tail(1000);
        let line = format!("flag provided but not defined: {named}");
        assert!(log.lines().any(|l| l == line), "{flag}: {log}");
    }
}

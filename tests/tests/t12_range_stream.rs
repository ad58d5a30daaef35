//! What etcd 3.6 and 3.7 added to the API, through a raw gRPC client: `KV.RangeStream`
//! (3.7) and the new fields of Status, HashKV and Snapshot (3.6). The messages are
//! declared here from etcd's wire format (field numbers of `rpc.proto` and `kv.proto`),
//! not taken from cairn's generated code. Writes go through the `etcd-client` crate.
//!
//! etcd 3.4 has none of it: against it (`CAIRN_TEST_SERVER=etcd`) these tests check that
//! RangeStream is an unknown method there and that the new fields are absent.

use cairn_tests::etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use cairn_tests::tonic::codegen::http::uri::PathAndQuery;
use cairn_tests::tonic::transport::Channel;
use cairn_tests::tonic::{self, Code, Status, Streaming};
use cairn_tests::{server_kind, Server, ServerKind, ServerOpts};

/// etcd's messages, as much of them as these tests read.
mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub range_end: Vec<u8>,
        #[prost(int64, tag = "3")]
        pub limit: i64,
        #[prost(int64, tag = "4")]
        pub revision: i64,
        #[prost(int32, tag = "5")]
        pub sort_order: i32,
        #[prost(int32, tag = "6")]
        pub sort_target: i32,
        #[prost(bool, tag = "7")]
        pub serializable: bool,
        #[prost(bool, tag = "8")]
        pub keys_only: bool,
        #[prost(bool, tag = "9")]
        pub count_only: bool,
        #[prost(int64, tag = "10")]
        pub min_mod_revision: i64,
        #[prost(int64, tag = "11")]
        pub max_mod_revision: i64,
        #[prost(int64, tag = "12")]
        pub min_create_revision: i64,
        #[prost(int64, tag = "13")]
        pub max_create_revision: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        #[prost(uint64, tag = "1")]
        pub cluster_id: u64,
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
        #[prost(int64, tag = "3")]
        pub revision: i64,
        #[prost(uint64, tag = "4")]
        pub raft_term: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(int64, tag = "2")]
        pub create_revision: i64,
        #[prost(int64, tag = "3")]
        pub mod_revision: i64,
        #[prost(int64, tag = "4")]
        pub version: i64,
        #[prost(bytes = "vec", tag = "5")]
        pub value: Vec<u8>,
        #[prost(int64, tag = "6")]
        pub lease: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(message, repeated, tag = "2")]
        pub kvs: Vec<KeyValue>,
        #[prost(bool, tag = "3")]
        pub more: bool,
        #[prost(int64, tag = "4")]
        pub count: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DowngradeInfo {
        #[prost(bool, tag = "1")]
        pub enabled: bool,
        #[prost(string, tag = "2")]
        pub target_version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(int64, tag = "3")]
        pub db_size: i64,
        #[prost(string, tag = "11")]
        pub storage_version: String,
        #[prost(int64, tag = "12")]
        pub db_size_quota: i64,
        #[prost(message, optional, tag = "13")]
        pub downgrade_info: Option<DowngradeInfo>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HashKvRequest {
        #[prost(int64, tag = "1")]
        pub revision: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HashKvResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(uint32, tag = "2")]
        pub hash: u32,
        #[prost(int64, tag = "3")]
        pub compact_revision: i64,
        #[prost(int64, tag = "4")]
        pub hash_revision: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SnapshotResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(uint64, tag = "2")]
        pub remaining_bytes: u64,
        #[prost(bytes = "vec", tag = "3")]
        pub blob: Vec<u8>,
        #[prost(string, tag = "4")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DowngradeRequest {
        #[prost(int32, tag = "1")]
        pub action: i32,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DowngradeResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeStreamResponse {
        #[prost(message, optional, tag = "1")]
        pub range_response: Option<RangeResponse>,
    }
}

use wire::{RangeRequest, RangeResponse, RangeStreamResponse};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn range_of(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: range_end.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A channel with HTTP/2's default 64 KiB windows (hyper's client asks for 2 MiB): the
/// server can run only a few chunks ahead of what the test has read.
async fn channel(server: &Server) -> Channel {
    Channel::from_shared(server.client_url())
        .expect("url")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect")
}

async fn unary_range(channel: &Channel, req: RangeRequest) -> Result<RangeResponse, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<RangeRequest, RangeResponse>::default();
    let path = PathAndQuery::from_static("/etcdserverpb.KV/Range");
    Ok(grpc
        .unary(tonic::Request::new(req), path, codec)
        .await?
        .into_inner())
}

async fn range_stream(
    channel: &Channel,
    req: RangeRequest,
) -> Result<Streaming<RangeStreamResponse>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<RangeRequest, RangeStreamResponse>::default();
    let path = PathAndQuery::from_static("/etcdserverpb.KV/RangeStream");
    Ok(grpc
        .server_streaming(tonic::Request::new(req), path, codec)
        .await?
        .into_inner())
}

/// Every chunk of a stream, each checked for etcd's shape: only the last has the header,
/// `more` and `count`.
async fn chunks(stream: &mut Streaming<RangeStreamResponse>) -> Result<Vec<RangeResponse>, Status> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await? {
        out.push(
            chunk
                .range_response
                .expect("a chunk carries a range response"),
        );
    }
    let (_, rest) = out.split_last().expect("at least one chunk");
    for chunk in rest {
        assert_eq!(
            (chunk.header.is_some(), chunk.more, chunk.count),
            (false, false, 0),
            "a chunk before the last has only kvs"
        );
    }
    Ok(out)
}

fn merged(chunks: &[RangeResponse]) -> RangeResponse {
    let mut out = chunks.last().expect("at least one chunk").clone();
    out.kvs = chunks.iter().flat_map(|c| c.kvs.clone()).collect();
    out
}

/// Puts `n` keys `prefix%06d` with values of `value_len(i)` bytes, in txns of at most
/// 128 puts and about 40 kB (the tests run with a small --max-request-bytes).
async fn fill(client: &mut Client, prefix: &str, n: usize, value_len: impl Fn(usize) -> usize) {
    let mut ops = Vec::new();
    let mut bytes = 0;
    for i in 0..n {
        let value = vec![b'a' + (i % 26) as u8; value_len(i)];
        bytes += value.len() + 32;
        ops.push(TxnOp::put(format!("{prefix}{i:06}"), value, None));
        if ops.len() == 128 || bytes > 40_000 || i == n - 1 {
            client
                .txn(Txn::new().and_then(std::mem::take(&mut ops)))
                .await
                .expect("fill txn");
            bytes = 0;
        }
    }
}

fn etcd_has_no_range_stream(server: &Server) -> bool {
    if server_kind() != ServerKind::Etcd {
        return false;
    }
    runtime().block_on(async {
        let ch = channel(server).await;
        let err = match range_stream(&ch, range_of("a", "")).await {
            Ok(mut stream) => stream.message().await.expect_err("etcd 3.4 refuses it"),
            Err(e) => e,
        };
        assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    });
    true
}

#[test]
fn streamed_chunks_merge_to_the_unary_range() {
    let server = Server::start(ServerOpts::new().arg("--max-request-bytes").arg("65536"));
    if etcd_has_no_range_stream(&server) {
        return;
    }
    runtime().block_on(async {
        let mut client = Client::connect([server.client_url()], None).await.unwrap();
        fill(&mut client, "rs/", 3000, |i| (i * 53) % 2000).await;
        let early = client.get("rs/000000", None).await.unwrap();
        let early_rev = early.header().unwrap().revision();
        client.put("rs/000001", "rewritten", None).await.unwrap();
        client.put("zz", "outside", None).await.unwrap();
        let ch = channel(&server).await;
        let shapes = [
            range_of("rs/", "rs0"),
            range_of("rs/001000", "rs/002000"),
            range_of("rs/000042", ""),
            range_of("rs/none", ""),
            range_of("\0", "\0"),
            range_of("rs/002990", "\0"),
            RangeRequest {
                limit: 1000,
                ..range_of("rs/", "rs0")
            },
            RangeRequest {
                limit: 99_999,
                ..range_of("rs/", "rs0")
            },
            RangeRequest {
                keys_only: true,
                ..range_of("rs/", "rs0")
            },
            RangeRequest {
                count_only: true,
                ..range_of("rs/", "rs0")
            },
            RangeRequest {
                serializable: true,
                ..range_of("rs/", "rs0")
            },
            RangeRequest {
                revision: early_rev,
                ..range_of("rs/", "rs0")
            },
        ];
        for req in shapes {
            let unary = unary_range(&ch, req.clone()).await.unwrap();
            let mut stream = range_stream(&ch, req.clone()).await.unwrap();
            let parts = chunks(&mut stream).await.unwrap();
            let streamed = merged(&parts);
            assert_eq!(streamed.kvs.len(), unary.kvs.len(), "{req:?}");
            assert!(streamed.kvs == unary.kvs, "{req:?}: different key-values");
            assert_eq!(
                (
                    streamed.more,
                    streamed.count,
                    streamed.header.as_ref().unwrap().revision
                ),
                (
                    unary.more,
                    unary.count,
                    unary.header.as_ref().unwrap().revision
                ),
                "{req:?}"
            );
        }
        // About 3 MB of values come in chunks near --max-request-bytes.
        let mut stream = range_stream(&ch, range_of("rs/", "rs0")).await.unwrap();
        let parts = chunks(&mut stream).await.unwrap();
        assert!(parts.len() > 20, "{} chunks", parts.len());
        for part in &parts {
            let size = prost::Message::encoded_len(part);
            assert!(size <= 2 * 65536, "a chunk of {size} bytes");
        }
    });
}

#[test]
fn sorts_and_revision_filters_are_unimplemented() {
    let server = Server::start(ServerOpts::new());
    if etcd_has_no_range_stream(&server) {
        return;
    }
    runtime().block_on(async {
        let ch = channel(&server).await;
        let refused = [
            RangeRequest {
                sort_order: 1,
                ..range_of("a", "z")
            },
            RangeRequest {
                sort_target: 2,
                ..range_of("a", "z")
            },
            RangeRequest {
                min_mod_revision: 1,
                ..range_of("a", "z")
            },
            RangeRequest {
                max_create_revision: 5,
                ..range_of("a", "z")
            },
        ];
        for req in refused {
            let err = range_stream(&ch, req.clone()).await.expect_err("refused");
            assert_eq!(
                (err.code(), err.message()),
                (
                    Code::Unimplemented,
                    "etcdserver: range stream does not support sorting or revision filters"
                ),
                "{req:?}"
            );
        }
        // Bad input gets the unary Range's errors.
        let err = range_stream(&ch, range_of("", ""))
            .await
            .expect_err("refused");
        assert_eq!(
            (err.code(), err.message()),
            (Code::InvalidArgument, "etcdserver: key is not provided")
        );
        let err = range_stream(
            &ch,
            RangeRequest {
                revision: 1_000_000,
                ..range_of("a", "")
            },
        )
        .await
        .expect_err("refused");
        assert_eq!(
            (err.code(), err.message()),
            (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision"
            )
        );
    });
}

#[test]
fn the_revision_stays_pinned_and_a_compaction_mid_stream_ends_it() {
    let server = Server::start(ServerOpts::new().arg("--max-request-bytes").arg("65536"));
    if etcd_has_no_range_stream(&server) {
        return;
    }
    runtime().block_on(async {
        let mut client = Client::connect([server.client_url()], None).await.unwrap();
        // 4 MB: some 60 chunks, far more than the connection's buffers hold.
        fill(&mut client, "pin/", 4000, |_| 1000).await;
        let ch = channel(&server).await;
        let before = unary_range(&ch, range_of("pin/", "pin0")).await.unwrap();

        let mut stream = range_stream(&ch, range_of("pin/", "pin0")).await.unwrap();
        let first = stream.message().await.unwrap().unwrap();
        // Writes while the stream is open are not in it.
        fill(&mut client, "pin/", 4000, |_| 10).await;
        fill(&mut client, "pin/x", 100, |_| 10).await;
        let rest = chunks(&mut stream).await.unwrap();
        let mut all = vec![first.range_response.unwrap()];
        all.extend(rest);
        let streamed = merged(&all);
        assert!(streamed.kvs == before.kvs, "the stream saw later writes");
        assert_eq!(
            (streamed.count, streamed.header.unwrap().revision),
            (4000, before.header.unwrap().revision)
        );

        // A compaction past the pinned revision ends the stream with etcd's error.
        fill(&mut client, "cmp/", 4000, |_| 1000).await;
        let mut stream = range_stream(&ch, range_of("cmp/", "cmp0")).await.unwrap();
        stream.message().await.unwrap().unwrap();
        let rev = client.put("pin/000000", "later", None).await.unwrap();
        client
            .compact(rev.header().unwrap().revision(), None)
            .await
            .unwrap();
        let err = chunks(&mut stream).await.expect_err("the stream fails");
        assert_eq!(
            (err.code(), err.message()),
            (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            )
        );
    });
}

/// The growth of the server's resident memory allowed while it streams 400 MB: chunks of
/// --max-request-bytes (1.5 MiB), the connection's buffers, RocksDB's 16 MiB block cache
/// and its background compactions of what the test just wrote fit inside (measured: 40
/// to 80 MiB, a debug build; a unary Range of the same keys holds all 400 MB at once).
const STREAM_RSS_GROWTH_BOUND: u64 = 128 << 20;

#[test]
fn two_hundred_thousand_keys_of_2_kib_stream_in_bounded_memory() {
    let server = Server::start(ServerOpts::new());
    if etcd_has_no_range_stream(&server) {
        return;
    }
    let rt = runtime();
    rt.block_on(async {
        let mut client = Client::connect([server.client_url()], None).await.unwrap();
        fill(&mut client, "big/", 200_000, |_| 2048).await;
        // Nothing pending before measuring: the last write is readable.
        client
            .txn(Txn::new().when([Compare::version("big/199999", CompareOp::Equal, 1)]))
            .await
            .unwrap();
    });
    let ((keys, bytes), before, peak) = server.rss_during(|| {
        rt.block_on(async {
            let ch = channel(&server).await;
            let mut stream = range_stream(&ch, range_of("big/", "big0")).await.unwrap();
            let (mut keys, mut bytes, mut last) = (0usize, 0usize, None);
            while let Some(chunk) = stream.message().await.unwrap() {
                let chunk = chunk.range_response.unwrap();
                keys += chunk.kvs.len();
                bytes += chunk.kvs.iter().map(|kv| kv.value.len()).sum::<usize>();
                last = Some(chunk);
            }
            assert_eq!(last.unwrap().count, 200_000);
            (keys, bytes)
        })
    });
    assert_eq!((keys, bytes), (200_000, 200_000 * 2048));
    let growth = peak.saturating_sub(before);
    eprintln!(
        "streamed {} MiB; server RSS {} MiB before, {} MiB at the peak (+{} MiB)",
        bytes >> 20,
        before >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(
        growth < STREAM_RSS_GROWTH_BOUND,
        "RSS grew by {} MiB while streaming",
        growth >> 20
    );
}

async fn unary<Req, Resp>(channel: &Channel, path: &'static str, req: Req) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    Ok(grpc
        .unary(
            tonic::Request::new(req),
            PathAndQuery::from_static(path),
            codec,
        )
        .await?
        .into_inner())
}

#[test]
fn status_hash_kv_and_snapshot_carry_etcd_3_6_fields() {
    use wire::{Empty, HashKvRequest, HashKvResponse, SnapshotResponse, StatusResponse};
    let server = Server::start(
        ServerOpts::new()
            .arg("--quota-backend-bytes")
            .arg("1073741824"),
    );
    let cairn = server_kind() == ServerKind::Cairn;
    runtime().block_on(async {
        let mut client = Client::connect([server.client_url()], None).await.unwrap();
        for i in 0..5 {
            client.put(format!("f{i}"), "v", None).await.unwrap();
        }
        let ch = channel(&server).await;
        let status: StatusResponse = unary(&ch, "/etcdserverpb.Maintenance/Status", Empty {})
            .await
            .unwrap();
        assert_eq!(status.version, cairn_tests::expected_version());
        assert!(status.db_size > 0);
        let hash: HashKvResponse = unary(
            &ch,
            "/etcdserverpb.Maintenance/HashKV",
            HashKvRequest { revision: 0 },
        )
        .await
        .unwrap();
        let current = hash.header.as_ref().unwrap().revision;
        let mut grpc = tonic::client::Grpc::new(ch.clone());
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<Empty, SnapshotResponse>::default();
        let path = PathAndQuery::from_static("/etcdserverpb.Maintenance/Snapshot");
        let mut snapshot = grpc
            .server_streaming(tonic::Request::new(Empty {}), path, codec)
            .await
            .unwrap()
            .into_inner();
        let first = snapshot.message().await.unwrap().expect("a first chunk");
        if cairn {
            assert_eq!(
                (
                    status.storage_version.as_str(),
                    status.db_size_quota,
                    status.downgrade_info
                ),
                ("3.7.0", 1 << 30, Some(wire::DowngradeInfo::default()))
            );
            assert_eq!(hash.hash_revision, current);
            assert_eq!(first.version, "3.7.0");
        } else {
            // etcd 3.4 predates these fields.
            assert_eq!(
                (
                    status.storage_version.as_str(),
                    status.db_size_quota,
                    status.downgrade_info
                ),
                ("", 0, None)
            );
            assert_eq!((hash.hash_revision, first.version.as_str()), (0, ""));
        }
    });
}

#[test]
fn downgrade_answers_as_a_single_version_etcd_cluster() {
    use wire::{DowngradeRequest, DowngradeResponse};
    const PATH: &str = "/etcdserverpb.Maintenance/Downgrade";
    // etcd's actions: VALIDATE 0, ENABLE 1, CANCEL 2.
    let ask = |action: i32, version: &str| DowngradeRequest {
        action,
        version: version.into(),
    };
    let server = Server::start(ServerOpts::new());
    runtime().block_on(async {
        let ch = channel(&server).await;
        let call = |req: DowngradeRequest| {
            let ch = ch.clone();
            async move { unary::<_, DowngradeResponse>(&ch, PATH, req).await }
        };
        if server_kind() == ServerKind::Etcd {
            // etcd 3.4 predates the Downgrade RPC.
            let err = call(ask(0, "3.3.0")).await.expect_err("unknown there");
            assert_eq!(err.code(), Code::Unimplemented);
            return;
        }
        let ok = call(ask(0, "3.6.0")).await.unwrap();
        assert_eq!(ok.version, "3.7");
        for (req, code, message) in [
            (
                ask(0, "3.6"),
                Code::InvalidArgument,
                "etcdserver: wrong downgrade target version format",
            ),
            (
                ask(0, "3.5.0"),
                Code::InvalidArgument,
                "etcdserver: invalid downgrade target version",
            ),
            (
                ask(0, "3.7.0"),
                Code::InvalidArgument,
                "etcdserver: invalid downgrade target version",
            ),
            (
                ask(1, "banana"),
                Code::InvalidArgument,
                "etcdserver: wrong downgrade target version format",
            ),
            (
                ask(2, ""),
                Code::FailedPrecondition,
                "etcdserver: no inflight downgrade job",
            ),
            (ask(7, "3.6.0"), Code::Unknown, "etcdserver: unknown method"),
        ] {
            let err = call(req.clone()).await.expect_err("refused");
            assert_eq!((err.code(), err.message()), (code, message), "{req:?}");
        }
    });
}

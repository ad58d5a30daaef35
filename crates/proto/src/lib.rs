//! etcd's v3 API and cairn's internal messages, as Rust types.
//!
//! The `.proto` files in the workspace's `proto/` directory are ours but
//! wire-compatible with etcd 3.5: the same packages, services, methods,
//! messages, field numbers and enum values, so every etcd client can talk to
//! cairn. This crate compiles them with [protox](https://docs.rs/protox) (no
//! system `protoc`) into [prost] messages and [tonic] clients and servers. Every
//! protobuf `bytes` field is a [`bytes::Bytes`], so keys and values are shared,
//! not copied.
//!
//! | module | proto package | contents |
//! |---|---|---|
//! | [`mvccpb`] | `mvccpb` | `KeyValue`, `Event` |
//! | [`authpb`] | `authpb` | `User`, `Role`, `Permission` |
//! | [`etcdserverpb`] | `etcdserverpb` | the KV, Watch, Lease, Cluster, Maintenance and Auth services |
//! | [`v3lockpb`] | `v3lockpb` | the Lock service |
//! | [`v3electionpb`] | `v3electionpb` | the Election service |
//! | [`cairnpb`] | `cairnpb` | `InternalRequest`, the entry that travels through the Raft log |
//!
//! # Example
//!
//! ```
//! use cairn_proto::etcdserverpb::PutRequest;
//! use prost::Message;
//!
//! let put = PutRequest {
//!     key: "a".into(),
//!     value: "b".into(),
//!     lease: 5,
//!     ..Default::default()
//! };
//! let wire = put.encode_to_vec();
//! assert_eq!(wire, [0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 5]);
//! assert_eq!(PutRequest::decode(wire.as_slice()).unwrap(), put);
//! ```
#![deny(missing_docs)]

/// Key-value records and watch events (proto package `mvccpb`).
#[allow(missing_docs, clippy::all)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Users, roles and key permissions (proto package `authpb`).
#[allow(missing_docs, clippy::all)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// The etcd v3 gRPC services and their messages (proto package `etcdserverpb`).
#[allow(missing_docs, clippy::all)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// The distributed lock service (proto package `v3lockpb`).
#[allow(missing_docs, clippy::all)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// The leader election service (proto package `v3electionpb`).
#[allow(missing_docs, clippy::all)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// cairn's internal messages (proto package `cairnpb`).
#[allow(missing_docs, clippy::all)]
pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}

mod files;
pub use files::PROTO_FILES;

/// The encoded `google.protobuf.FileDescriptorSet` of every file of [`PROTO_FILES`] (with
/// imports and source info), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cairn_descriptor.bin"));

#[cfg(test)]
mod tests;

/// Every `.proto` file the crate generates code for, relative to the workspace's `proto/`
/// directory. The build script compiles exactly these; the one list serves both.
pub const PROTO_FILES: &[&str] = &[
    "etcd/mvccpb/kv.proto",
    "etcd/authpb/auth.proto",
    "etcd/etcdserverpb/rpc.proto",
    "etcd/v3lockpb/v3lock.proto",
    "etcd/v3electionpb/v3election.proto",
    "cairn/internal.proto",
    "cairn/peer.proto",
];

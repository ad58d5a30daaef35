//! The full names of etcd's services, as gRPC paths and metric labels spell them.

/// `etcdserverpb.KV`.
pub const KV: &str = "etcdserverpb.KV";
/// `etcdserverpb.Watch`.
pub const WATCH: &str = "etcdserverpb.Watch";
/// `etcdserverpb.Lease`.
pub const LEASE: &str = "etcdserverpb.Lease";
/// `etcdserverpb.Cluster`.
pub const CLUSTER: &str = "etcdserverpb.Cluster";
/// `etcdserverpb.Maintenance`.
pub const MAINTENANCE: &str = "etcdserverpb.Maintenance";
/// `etcdserverpb.Auth`.
pub const AUTH: &str = "etcdserverpb.Auth";

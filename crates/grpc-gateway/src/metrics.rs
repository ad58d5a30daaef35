//! The metrics the gateway records, under the names and help texts of go-grpc-prometheus
//! (which etcd serves), so that etcd's dashboards and alerts read them unchanged.
//! [`describe`] gives them their HELP lines; call it once the recorder is installed.

use tonic::Code;

/// RPCs started, by type, service and method.
pub const GRPC_SERVER_STARTED_TOTAL: &str = "grpc_server_started_total";
/// RPCs completed, by type, service, method and status code.
pub const GRPC_SERVER_HANDLED_TOTAL: &str = "grpc_server_handled_total";

/// Bytes of client requests received over gRPC (the encoded messages).
pub const CLIENT_GRPC_RECEIVED_BYTES_TOTAL: &str = "etcd_network_client_grpc_received_bytes_total";
/// Bytes of responses sent to clients over gRPC (the encoded messages).
pub const CLIENT_GRPC_SENT_BYTES_TOTAL: &str = "etcd_network_client_grpc_sent_bytes_total";

/// Counts a message received from a client.
pub fn client_received(message: &impl prost::Message) {
    metrics::counter!(CLIENT_GRPC_RECEIVED_BYTES_TOTAL).increment(message.encoded_len() as u64);
}

/// Counts a message sent to a client.
pub fn client_sent(message: &impl prost::Message) {
    metrics::counter!(CLIENT_GRPC_SENT_BYTES_TOTAL).increment(message.encoded_len() as u64);
}

/// Every RPC the gateway counts: its type, service and method.
pub const METHODS: &[(RpcType, &str, &str)] = {
    use crate::service_name::{AUTH, CLUSTER, KV, LEASE, MAINTENANCE, WATCH};
    use RpcType::{BidiStream as Bidi, ServerStream as Stream, Unary as U};
    &[
        (U, KV, "Range"),
        (Stream, KV, "RangeStream"),
        (U, KV, "Put"),
        (U, KV, "DeleteRange"),
        (U, KV, "Txn"),
        (U, KV, "Compact"),
        (Bidi, WATCH, "Watch"),
        (U, LEASE, "LeaseGrant"),
        (U, LEASE, "LeaseRevoke"),
        (Bidi, LEASE, "LeaseKeepAlive"),
        (U, LEASE, "LeaseTimeToLive"),
        (U, LEASE, "LeaseLeases"),
        (U, CLUSTER, "MemberAdd"),
        (U, CLUSTER, "MemberRemove"),
        (U, CLUSTER, "MemberUpdate"),
        (U, CLUSTER, "MemberList"),
        (U, CLUSTER, "MemberPromote"),
        (U, MAINTENANCE, "Alarm"),
        (U, MAINTENANCE, "Status"),
        (U, MAINTENANCE, "Defragment"),
        (U, MAINTENANCE, "Hash"),
        (U, MAINTENANCE, "HashKV"),
        (Stream, MAINTENANCE, "Snapshot"),
        (U, MAINTENANCE, "MoveLeader"),
        (U, MAINTENANCE, "Downgrade"),
        (U, AUTH, "AuthEnable"),
        (U, AUTH, "AuthDisable"),
        (U, AUTH, "AuthStatus"),
        (U, AUTH, "Authenticate"),
        (U, AUTH, "UserAdd"),
        (U, AUTH, "UserGet"),
        (U, AUTH, "UserList"),
        (U, AUTH, "UserDelete"),
        (U, AUTH, "UserChangePassword"),
        (U, AUTH, "UserGrantRole"),
        (U, AUTH, "UserRevokeRole"),
        (U, AUTH, "RoleAdd"),
        (U, AUTH, "RoleGet"),
        (U, AUTH, "RoleList"),
        (U, AUTH, "RoleDelete"),
        (U, AUTH, "RoleGrantPermission"),
        (U, AUTH, "RoleRevokePermission"),
    ]
};

/// Every status code, in grpc-go's order.
const CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

/// Describes every metric of this crate to the installed recorder, and registers the
/// counters of every method (and, handled, of every code) at zero, as etcd's
/// go-grpc-prometheus does when the server starts: a dashboard's `started - handled`
/// or an alert's error rate has data from the first scrape.
pub fn describe() {
    metrics::describe_counter!(
        CLIENT_GRPC_RECEIVED_BYTES_TOTAL,
        "The total number of bytes received from grpc clients."
    );
    metrics::describe_counter!(
        CLIENT_GRPC_SENT_BYTES_TOTAL,
        "The total number of bytes sent to grpc clients."
    );
    metrics::counter!(CLIENT_GRPC_RECEIVED_BYTES_TOTAL).increment(0);
    metrics::counter!(CLIENT_GRPC_SENT_BYTES_TOTAL).increment(0);
    for &(rpc, service, method) in METHODS {
        metrics::counter!(
            GRPC_SERVER_STARTED_TOTAL,
            "grpc_type" => rpc.label(),
            "grpc_service" => service,
            "grpc_method" => method,
        )
        .increment(0);
        for code in CODES {
            metrics::counter!(
                GRPC_SERVER_HANDLED_TOTAL,
                "grpc_type" => rpc.label(),
                "grpc_service" => service,
                "grpc_method" => method,
                "grpc_code" => code_name(code),
            )
            .increment(0);
        }
    }
    metrics::describe_counter!(
        GRPC_SERVER_STARTED_TOTAL,
        "Total number of RPCs started on the server."
    );
    metrics::describe_counter!(
        GRPC_SERVER_HANDLED_TOTAL,
        "Total number of RPCs completed on the server, regardless of success or failure."
    );
}

/// The shape of an RPC, as go-grpc-prometheus labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcType {
    /// One request, one response.
    Unary,
    /// Streams both ways.
    BidiStream,
    /// One request, a stream of responses.
    ServerStream,
}

impl RpcType {
    fn label(self) -> &'static str {
        match self {
            RpcType::Unary => "unary",
            RpcType::BidiStream => "bidi_stream",
            RpcType::ServerStream => "server_stream",
        }
    }
}

/// Counts an RPC that starts.
pub fn started(rpc: RpcType, service: &'static str, method: &'static str) {
    metrics::counter!(
        GRPC_SERVER_STARTED_TOTAL,
        "grpc_type" => rpc.label(),
        "grpc_service" => service,
        "grpc_method" => method,
    )
    .increment(1);
}

/// Counts an RPC that completed with `code`.
pub fn handled(rpc: RpcType, service: &'static str, method: &'static str, code: Code) {
    metrics::counter!(
        GRPC_SERVER_HANDLED_TOTAL,
        "grpc_type" => rpc.label(),
        "grpc_service" => service,
        "grpc_method" => method,
        "grpc_code" => code_name(code),
    )
    .increment(1);
}

/// The name grpc-go gives a status code (the `grpc_code` label).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

//! The metrics the gateway records, under the names and help texts of go-grpc-prometheus
//! (which etcd serves), so that etcd's dashboards and alerts read them unchanged.
//! [`describe`] gives them their HELP lines; call it once the recorder is installed.

use tonic::Code;

/// RPCs started, by type, service and method.
pub const GRPC_SERVER_STARTED_TOTAL: &str = "grpc_server_started_total";
/// RPCs completed, by type, service, method and status code.
pub const GRPC_SERVER_HANDLED_TOTAL: &str = "grpc_server_handled_total";

/// Describes every metric of this crate to the installed recorder.
pub fn describe() {
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

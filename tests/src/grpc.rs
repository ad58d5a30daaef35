//! Assertions on the gRPC errors clients see.

use etcd_client::Error;
use tonic::Code;

/// The gRPC status inside an `etcd-client` error; panics on any other kind of
/// error (transport, client-side validation), showing it.
pub fn grpc_status(err: &Error) -> &tonic::Status {
    match err {
        Error::GRpcStatus(status) => status,
        other => panic!("expected a gRPC status error, got {other:?}"),
    }
}

/// Asserts that `result` failed with exactly this gRPC code and message.
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, Error>, code: Code, message: &str) {
    let err = match result {
        Ok(value) => panic!("expected {code:?} {message:?}, got success: {value:?}"),
        Err(err) => err,
    };
    let status = grpc_status(&err);
    assert_eq!(
        (status.code(), status.message()),
        (code, message),
        "unexpected gRPC status: {status:?}"
    );
}

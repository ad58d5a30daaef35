//! etcd's v2 errors: a numeric code, its fixed message, a cause, and the HTTP status
//! etcd 3.4 answers them with (`{"errorCode":100,"message":"Key not found","cause":"/foo",
//! "index":7}`).

use axum::http::StatusCode;

/// One of etcd's v2 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 100
    KeyNotFound,
    /// 101
    TestFailed,
    /// 102
    NotFile,
    /// 104
    NotDir,
    /// 105
    NodeExist,
    /// 107
    RootReadOnly,
    /// 108
    DirNotEmpty,
    /// 110
    Unauthorized,
    /// 201
    PrevValueRequired,
    /// 202
    TtlNaN,
    /// 203
    IndexNaN,
    /// 209
    InvalidField,
    /// 210
    InvalidForm,
    /// 211
    RefreshValue,
    /// 212
    RefreshTtlRequired,
    /// 300
    RaftInternal,
    /// 401
    EventIndexCleared,
}

impl Code {
    /// The number etcd sends.
    pub fn number(self) -> u32 {
        match self {
            Code::KeyNotFound => 100,
            Code::TestFailed => 101,
            Code::NotFile => 102,
            Code::NotDir => 104,
            Code::NodeExist => 105,
            Code::RootReadOnly => 107,
            Code::DirNotEmpty => 108,
            Code::Unauthorized => 110,
            Code::PrevValueRequired => 201,
            Code::TtlNaN => 202,
            Code::IndexNaN => 203,
            Code::InvalidField => 209,
            Code::InvalidForm => 210,
            Code::RefreshValue => 211,
            Code::RefreshTtlRequired => 212,
            Code::RaftInternal => 300,
            Code::EventIndexCleared => 401,
        }
    }

    /// etcd's message for the code.
    pub fn message(self) -> &'static str {
        match self {
            Code::KeyNotFound => "Key not found",
            Code::TestFailed => "Compare failed",
            Code::NotFile => "Not a file",
            Code::NotDir => "Not a directory",
            Code::NodeExist => "Key already exists",
            Code::RootReadOnly => "Root is read only",
            Code::DirNotEmpty => "Directory not empty",
            Code::Unauthorized => "The request requires user authentication",
            Code::PrevValueRequired => "PrevValue is Required in POST form",
            Code::TtlNaN => "The given TTL in POST form is not a number",
            Code::IndexNaN => "The given index in POST form is not a number",
            Code::InvalidField => "Invalid field",
            Code::InvalidForm => "Invalid POST form",
            Code::RefreshValue => "Value provided on refresh",
            Code::RefreshTtlRequired => "A TTL must be provided on refresh",
            Code::RaftInternal => "Raft Internal Error",
            Code::EventIndexCleared => "The event in requested index is outdated and cleared",
        }
    }

    /// The HTTP status etcd answers the code with (400 unless listed).
    pub fn status(self) -> StatusCode {
        match self {
            Code::KeyNotFound => StatusCode::NOT_FOUND,
            Code::NotFile | Code::DirNotEmpty => StatusCode::FORBIDDEN,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::TestFailed | Code::NodeExist => StatusCode::PRECONDITION_FAILED,
            Code::RaftInternal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A v2 error: the code, its cause and the index it was seen at (0 for a request
/// refused before the store was read, as etcd does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {} ({cause}) [{index}]", code.number(), code.message())]
pub struct V2Error {
    /// What went wrong.
    pub code: Code,
    /// The key, the failed comparison or the field concerned.
    pub cause: String,
    /// The store's index when it happened.
    pub index: i64,
}

impl V2Error {
    /// An error with index 0 (set later by [`V2Error::at`] when the store was read).
    pub fn new(code: Code, cause: impl Into<String>) -> V2Error {
        V2Error {
            code,
            cause: cause.into(),
            index: 0,
        }
    }

    /// The same error seen at `index`.
    pub fn at(mut self, index: i64) -> V2Error {
        self.index = index;
        self
    }

    /// etcd's JSON body.
    pub fn body(&self) -> String {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            error_code: u32,
            message: &'a str,
            cause: &'a str,
            index: i64,
        }
        serde_json::to_string(&Body {
            error_code: self.code.number(),
            message: self.code.message(),
            cause: &self.cause,
            index: self.index,
        })
        .unwrap_or_default()
    }
}

impl From<crate::EtcdError> for V2Error {
    fn from(e: crate::EtcdError) -> V2Error {
        let status = tonic::Status::from(e);
        match status.code() {
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                V2Error::new(Code::Unauthorized, status.message())
            }
            _ => V2Error::new(Code::RaftInternal, status.message()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_statuses_are_etcds() {
        let e = V2Error::new(Code::KeyNotFound, "/foo").at(7);
        assert_eq!(
            e.body(),
            r#"{"errorCode":100,"message":"Key not found","cause":"/foo","index":7}"#
        );
        assert_eq!(e.code.status(), StatusCode::NOT_FOUND);
        assert_eq!(Code::NotDir.status(), StatusCode::BAD_REQUEST);
        assert_eq!(Code::EventIndexCleared.number(), 401);
        assert_eq!(Code::EventIndexCleared.status(), StatusCode::BAD_REQUEST);
    }
}

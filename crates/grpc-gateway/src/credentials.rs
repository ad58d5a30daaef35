//! Who is calling: the auth token a request carries (gRPC metadata `token`, as etcd's
//! clients send it, or the JSON gateway's `Authorization` header) and, on a TLS
//! connection with a verified client certificate, the certificate's common name. The
//! client router's middleware ([`layer`]) reads them from every request and runs the
//! handler with them as [`current`], so the server decides who may do what without the
//! services passing them along; streams capture them when they open ([`scope`] again
//! around the work they spawn).

use std::future::Future;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderMap;

/// A request's credentials, as the client sent them (nothing is checked here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The auth token (`token` metadata, else `Authorization`), if any; a value that is
    /// not text is kept empty so that it is refused rather than ignored.
    pub token: Option<String>,
    /// The common name of the client certificate verified on this TLS connection.
    pub common_name: Option<String>,
}

/// The metadata keys a token is read from, in order (etcd's `rpctypes.TokenFieldNameGRPC`
/// and the gateway's `Authorization`).
pub const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];

/// The common name of the client certificate a TLS connection verified (in each of its
/// requests' [`TlsConnectInfo`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCommonName(pub String);

/// What a TLS connection tells each of its requests (in their extensions): the TCP peer
/// and the common name of the client certificate it verified, if any.
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    /// The TCP connection's addresses.
    pub tcp: tonic::transport::server::TcpConnectInfo,
    /// The verified client certificate's common name.
    pub common_name: Option<PeerCommonName>,
}

impl Credentials {
    /// The credentials of a request with `headers` (gRPC metadata are HTTP/2 headers).
    pub fn from_headers(headers: &HeaderMap, common_name: Option<&PeerCommonName>) -> Self {
        let token = TOKEN_KEYS
            .iter()
            .find_map(|key| headers.get(*key))
            .map(|value| value.to_str().unwrap_or_default().to_owned());
        Credentials {
            token,
            common_name: common_name.map(|cn| cn.0.clone()),
        }
    }

    /// Whether the request carries nothing to identify its sender.
    pub fn is_anonymous(&self) -> bool {
        self.token.is_none() && self.common_name.is_none()
    }
}

tokio::task_local! {
    static CURRENT: Credentials;
}

/// The credentials of the request being served on this task (anonymous outside one).
pub fn current() -> Credentials {
    CURRENT.try_with(Clone::clone).unwrap_or_default()
}

/// Runs `work` with `credentials` as [`current`].
pub async fn scope<F: Future>(credentials: Credentials, work: F) -> F::Output {
    CURRENT.scope(credentials, work).await
}

/// Runs `work` (synchronous) with `credentials` as [`current`].
pub fn sync_scope<R>(credentials: Credentials, work: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(credentials, work)
}

/// The middleware of the client router: every request's handler runs with the request's
/// credentials as [`current`].
pub async fn layer(request: Request, next: Next) -> Response {
    let common_name = request
        .extensions()
        .get::<TlsConnectInfo>()
        .and_then(|tls| tls.common_name.as_ref());
    let credentials = Credentials::from_headers(request.headers(), common_name);
    scope(credentials, next.run(request)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_metadata_wins_over_authorization() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "b".parse().unwrap());
        assert_eq!(
            Credentials::from_headers(&headers, None).token.as_deref(),
            Some("b")
        );
        headers.insert("token", "a".parse().unwrap());
        let cn = PeerCommonName("alice".into());
        let creds = Credentials::from_headers(&headers, Some(&cn));
        assert_eq!(creds.token.as_deref(), Some("a"));
        assert_eq!(creds.common_name.as_deref(), Some("alice"));
        assert!(Credentials::default().is_anonymous());
    }

    #[tokio::test]
    async fn credentials_are_seen_inside_their_scope_only() {
        let creds = Credentials {
            token: Some("t".into()),
            common_name: None,
        };
        assert_eq!(scope(creds.clone(), async { current() }).await, creds);
        assert_eq!(sync_scope(creds.clone(), current), creds);
        assert_eq!(current(), Credentials::default());
    }
}

//! The TLS configurations a member dials with: its peers (raft), and the leader's
//! client port (requests only the leader can answer).

use std::sync::Arc;

use crate::config::Config;
use crate::error::ServerError;

/// The client side of peer TLS, when it is on: the peer CA as roots, this member's peer
/// certificate as its client certificate.
pub(crate) fn client_config(
    cfg: &Config,
) -> Result<Option<Arc<rustls::ClientConfig>>, ServerError> {
    let Some(files) = cfg.peer_tls()? else {
        return Ok(None);
    };
    // With --peer-auto-tls there is no CA: peers' self-signed certificates are taken.
    let ca = files.trusted_ca.as_deref();
    cairn_grpc_gateway::tls::client_config(ca, &files.cert, &files.key, &files.policy)
        .map(Some)
        .map_err(ServerError::PeerTls)
}

/// The client side of client TLS, for forwarding to a leader that serves clients over
/// TLS only: the client CA (`--trusted-ca-file`) as roots, or any certificate with
/// `--auto-tls`; this member's client-port certificate as its client certificate. None
/// without either: such a leader cannot be checked, and forwarding to it fails.
pub(crate) fn leader_client_config(
    cfg: &Config,
) -> Result<Option<Arc<rustls::ClientConfig>>, ServerError> {
    let Some(files) = cfg.client_tls()? else {
        return Ok(None);
    };
    if files.trusted_ca.is_none() && !cfg.auto_tls {
        return Ok(None);
    }
    let ca = files.trusted_ca.as_deref();
    cairn_grpc_gateway::tls::client_config(ca, &files.cert, &files.key, &files.policy)
        .map(Some)
        .map_err(ServerError::ClientTls)
}

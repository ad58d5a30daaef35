//! The TLS configuration a member dials its peers with.

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
    let ca = files.trusted_ca.as_deref().unwrap_or(&files.cert);
    cairn_grpc_gateway::tls::client_config(ca, &files.cert, &files.key, &files.policy)
        .map(Some)
        .map_err(ServerError::PeerTls)
}

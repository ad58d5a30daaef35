//! How raft messages leave this member.

use raft::eraftpb::Message;

/// Sends raft messages to peers. Delivery is best effort: raft retransmits what is lost.
/// Implementations must not block the Ready loop (queue and return).
pub trait Transport: Send + 'static {
    /// Queues `msgs` for their destinations (`msg.to`).
    fn send(&mut self, msgs: Vec<Message>);
}

/// The transport of a member without peers: there is nobody to send to.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            tracing::warn!(to = m.to, msg_type = ?m.get_msg_type(), "no transport to a peer; message dropped");
        }
    }
}

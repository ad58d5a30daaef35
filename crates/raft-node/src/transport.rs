//! How raft messages leave this member.

use raft::eraftpb::Message;

/// A state machine snapshot on its way to a follower, read as a byte stream.
pub type SnapshotData = Box<dyn std::io::Read + Send>;

/// What the transport learnt about a peer, reported back to raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// Messages to this member were lost (it is down or too slow): raft stops optimistic
    /// replication to it and probes instead.
    Unreachable(u64),
    /// A snapshot stream to `to` finished, successfully or not.
    SnapshotSent {
        /// The receiving member.
        to: u64,
        /// Whether the receiver has the whole snapshot.
        ok: bool,
    },
}

/// Sends raft messages to peers. Delivery is best effort: raft retransmits what is lost.
/// Implementations must not block the Ready loop (queue and return).
pub trait Transport: Send + 'static {
    /// Queues `msgs` for their destinations (`msg.to`).
    fn send(&mut self, msgs: Vec<Message>);

    /// Queues a snapshot message with the state machine data it describes. Returns false
    /// when the snapshot cannot be sent at all (raft is told at once).
    fn send_snapshot(&mut self, msg: Message, data: SnapshotData) -> bool {
        let _ = (msg, data);
        false
    }

    /// Events since the last call (polled by the Ready loop at least every tick).
    fn poll_events(&mut self) -> Vec<PeerEvent> {
        Vec::new()
    }
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

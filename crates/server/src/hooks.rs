//! What this member's parts learn from the apply loop, and the Watch service's view of
//! the member's watchers.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use cairn_grpc_gateway::api::{WatchApi, WatchResponses, WatchSession};
use cairn_proto::etcdserverpb::{ResponseHeader, WatchRequest};
use cairn_proto::mvccpb::Event;
use cairn_raft_node::NodeStatus;
use cairn_watch_server::{HeaderSource, WatchHub, WatchStream};

use crate::apply::ApplyHooks;

/// The apply hooks of a running member: applied events go to the watchers.
#[derive(Debug, Default)]
pub struct MemberHooks {
    watch: Option<Arc<WatchHub>>,
}

impl MemberHooks {
    /// Hooks feeding `watch` (if any) with every applied revision.
    pub fn new(watch: Option<Arc<WatchHub>>) -> Self {
        MemberHooks { watch }
    }
}

impl ApplyHooks for MemberHooks {
    fn on_events(&self, revision: i64, events: &[Event]) {
        if let Some(hub) = &self.watch {
            hub.notify(revision, events);
        }
    }

    fn on_restore(&self, revision: i64) {
        if let Some(hub) = &self.watch {
            hub.on_restore(revision);
        }
    }
}

/// Watch response headers: the member's ids and the raft term, which is known once the
/// raft node runs (the hub exists before it, to see the first applied entry).
#[derive(Debug)]
pub struct WatchHeaders {
    cluster_id: u64,
    member_id: u64,
    status: OnceLock<tokio::sync::watch::Receiver<NodeStatus>>,
}

impl WatchHeaders {
    /// Headers for member `member_id` of cluster `cluster_id`.
    pub fn new(cluster_id: u64, member_id: u64) -> Self {
        WatchHeaders {
            cluster_id,
            member_id,
            status: OnceLock::new(),
        }
    }

    /// Where the raft term comes from from now on.
    pub fn set_status(&self, status: tokio::sync::watch::Receiver<NodeStatus>) {
        let _ = self.status.set(status);
    }
}

impl HeaderSource for WatchHeaders {
    fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.status.get().map_or(0, |s| s.borrow().term),
        }
    }
}

/// The Watch service's handle on the member's [`WatchHub`].
#[derive(Debug)]
pub struct MemberWatch(pub Arc<WatchHub>);

struct Session(WatchStream);

#[async_trait]
impl WatchSession for Session {
    async fn handle(&mut self, request: WatchRequest) {
        self.0.handle(request).await;
    }
}

impl WatchApi for MemberWatch {
    fn open_stream(&self) -> (Box<dyn WatchSession>, WatchResponses) {
        let (stream, responses) = self.0.open_stream();
        (Box::new(Session(stream)), Box::pin(responses))
    }
}

//! The cluster's membership as the log built it: raft membership changes (whose context
//! names the member) and published attributes, kept in the `members` column family and in
//! memory, and the peer URLs the transport dials.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_mvcc_store::backend::CF_MEMBERS;
use cairn_mvcc_store::{Backend, BackendBatch, MvccError};
use cairn_proto::cairnpb::MemberChange;
use cairn_proto::etcdserverpb::Member;
use cairn_raft_node::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
use cairn_raft_node::PeerUrls;
use parking_lot::RwLock;
use prost::Message as _;

/// Key prefix of a member's record (then its id, big-endian).
pub(crate) const MEMBER_PREFIX: &[u8] = b"m/";
/// Key prefix of a removed member's id.
pub(crate) const REMOVED_PREFIX: &[u8] = b"r/";
/// The cluster id (the same on every member of a cluster).
pub(crate) const CLUSTER_ID_KEY: &[u8] = b"cluster_id";

fn member_key(id: u64) -> Vec<u8> {
    [MEMBER_PREFIX, &id.to_be_bytes()].concat()
}

fn removed_key(id: u64) -> Vec<u8> {
    [REMOVED_PREFIX, &id.to_be_bytes()].concat()
}

#[derive(Debug, Default, Clone)]
struct State {
    members: BTreeMap<u64, Member>,
}

/// What a membership change did, for the member that applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeEffect {
    /// Nothing that concerns this member in particular.
    None,
    /// This member was removed from the cluster: it must stop.
    RemovedSelf,
}

/// The replicated member list.
pub struct Membership {
    self_id: u64,
    state: RwLock<State>,
    urls: PeerUrls,
}

impl Membership {
    /// Loads the member list from `backend`; `urls` follows it.
    pub fn load(backend: &Backend, self_id: u64, urls: PeerUrls) -> Result<Arc<Self>, MvccError> {
        let m = Membership {
            self_id,
            state: RwLock::new(State::default()),
            urls,
        };
        m.reload(backend)?;
        Ok(Arc::new(m))
    }

    /// Reads the member list again (after a snapshot replaced the backend's content).
    pub fn reload(&self, backend: &Backend) -> Result<(), MvccError> {
        let mut state = State::default();
        for item in backend.scan_prefix(CF_MEMBERS, MEMBER_PREFIX)? {
            let (_, value) = item?;
            let member = Member::decode(&*value)
                .map_err(|e| MvccError::Corrupt(format!("member record: {e}")))?;
            state.members.insert(member.id, member);
        }
        for (id, m) in &state.members {
            if *id != self.self_id {
                self.urls.set(*id, m.peer_ur_ls.clone());
            }
        }
        *self.state.write() = state;
        Ok(())
    }

    /// Every member, sorted by id (etcd's order).
    pub fn list(&self) -> Vec<Member> {
        self.state.read().members.values().cloned().collect()
    }

    /// One member.
    pub fn get(&self, id: u64) -> Option<Member> {
        self.state.read().members.get(&id).cloned()
    }

    /// Applies a committed raft membership change; the records go into `batch`.
    pub fn apply_change(&self, change: &ConfChangeV2, batch: &mut BackendBatch) -> ChangeEffect {
        let context = MemberChange::decode(change.context.as_ref())
            .ok()
            .and_then(|c| c.member);
        let mut effect = ChangeEffect::None;
        let mut state = self.state.write();
        for single in change.get_changes() {
            let id = single.node_id;
            match single.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    let learner = single.get_change_type() == ConfChangeType::AddLearnerNode;
                    let member = match (state.members.get(&id), &context) {
                        // Promotion of a learner: everything else stays.
                        (Some(existing), _) => Member {
                            is_learner: learner,
                            ..existing.clone()
                        },
                        (None, Some(m)) => Member {
                            id,
                            is_learner: learner,
                            ..m.clone()
                        },
                        (None, None) => Member {
                            id,
                            is_learner: learner,
                            ..Default::default()
                        },
                    };
                    if id != self.self_id {
                        self.urls.set(id, member.peer_ur_ls.clone());
                    }
                    batch.put_cf(CF_MEMBERS, member_key(id), member.encode_to_vec());
                    state.members.insert(id, member);
                }
                ConfChangeType::RemoveNode => {
                    state.members.remove(&id);
                    self.urls.remove(id);
                    batch.delete_cf(CF_MEMBERS, member_key(id));
                    batch.put_cf(CF_MEMBERS, removed_key(id), []);
                    if id == self.self_id {
                        effect = ChangeEffect::RemovedSelf;
                    }
                }
            }
        }
        effect
    }

    /// Applies a member's published name and client URLs (ignored for an unknown member).
    pub fn apply_attributes(&self, attrs: &Member, batch: &mut BackendBatch) {
        let mut state = self.state.write();
        if let Some(m) = state.members.get_mut(&attrs.id) {
            m.name = attrs.name.clone();
            m.client_ur_ls = attrs.client_ur_ls.clone();
            batch.put_cf(CF_MEMBERS, member_key(attrs.id), m.encode_to_vec());
        }
    }

    /// Applies a MemberUpdate: new peer URLs for a member (ignored for an unknown member).
    pub fn apply_update(&self, update: &Member, batch: &mut BackendBatch) {
        let mut state = self.state.write();
        if let Some(m) = state.members.get_mut(&update.id) {
            m.peer_ur_ls = update.peer_ur_ls.clone();
            if update.id != self.self_id {
                self.urls.set(update.id, m.peer_ur_ls.clone());
            }
            batch.put_cf(CF_MEMBERS, member_key(update.id), m.encode_to_vec());
        }
    }
}

/// The context of a membership change entry naming `member`.
pub fn change_context(member: &Member) -> Vec<u8> {
    MemberChange {
        member: Some(member.clone()),
    }
    .encode_to_vec()
}

/// The raft membership change of `kind` for `member`, naming it in its context.
pub fn change(kind: ConfChangeType, member: &Member) -> ConfChangeV2 {
    let mut single = ConfChangeSingle::default();
    single.set_change_type(kind);
    single.node_id = member.id;
    let mut cc = ConfChangeV2::default();
    cc.mut_changes().push(single);
    cc.context = change_context(member).into();
    cc
}

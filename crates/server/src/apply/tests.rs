//! The apply state machine entry by entry, on a real backend in a temporary directory.

use std::sync::Arc;

use bytes::Bytes;
use cairn_grpc_gateway::EtcdError;
use cairn_lease_manager::{Lessor, ManualClock};
use cairn_mvcc_store::{Backend, KvStore};
use cairn_proto::cairnpb::{internal_request::Request, InternalRequest};
use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction, compare, request_op, AlarmMember, AlarmRequest, AlarmType,
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, Member,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use cairn_proto::mvccpb::{event::EventType, Event};
use cairn_raft_node::eraftpb::{ConfChangeType, ConfState};
use cairn_raft_node::{CommittedEntry, EntryKind, PeerUrls, ProposalId, StateMachine};
use parking_lot::Mutex;
use prost::Message as _;

use super::{Applied, Applier, ApplyHooks};
use crate::alarms::Alarms;
use crate::members::{self, Membership};

const SELF_ID: u64 = 1;

/// What the hooks saw: (revision, event type, key) per event.
#[derive(Default)]
struct Recorded(Mutex<Vec<(i64, i32, Bytes)>>);

impl ApplyHooks for Recorded {
    fn on_events(&self, revision: i64, events: &[Event]) {
        let mut seen = self.0.lock();
        for e in events {
            let key = e.kv.as_ref().map(|kv| kv.key.clone()).unwrap_or_default();
            seen.push((revision, e.r#type, key));
        }
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<KvStore>,
    hooks: Arc<Recorded>,
    lessor: Arc<Lessor>,
    members: Arc<Membership>,
    alarms: Arc<Alarms>,
    removed: tokio::sync::watch::Receiver<bool>,
    applier: Applier,
    next_index: u64,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path().join("db")).unwrap();
        let store = Arc::new(KvStore::open(backend.clone()).unwrap());
        let hooks = Arc::new(Recorded::default());
        let lessor = Arc::new(Lessor::new(1, Arc::new(ManualClock::new())));
        let members = Membership::load(&backend, SELF_ID, PeerUrls::default()).unwrap();
        let alarms = Arc::new(Alarms::load(&backend).unwrap());
        let (removed_tx, removed) = tokio::sync::watch::channel(false);
        let applier = Applier::new(store.clone(), hooks.clone())
            .with_lessor(lessor.clone())
            .with_members(members.clone(), removed_tx)
            .with_alarms(alarms.clone())
            .with_snapshots(dir.path().join("snap"));
        Fixture {
            _dir: dir,
            store,
            hooks,
            lessor,
            members,
            alarms,
            removed,
            applier,
            next_index: 1,
        }
    }

    fn index(&mut self) -> u64 {
        let index = self.next_index;
        self.next_index += 1;
        index
    }

    fn apply_kind(&mut self, kind: EntryKind<'_>) -> Result<Applied, cairn_raft_node::ApplyError> {
        let index = self.index();
        self.applier.apply(CommittedEntry {
            index,
            term: 1,
            proposal: None,
            kind,
        })
    }

    fn apply(&mut self, request: Request) -> Applied {
        let data = InternalRequest {
            id: 0,
            header: None,
            request: Some(request),
        }
        .encode_to_vec();
        self.apply_kind(EntryKind::Normal(&data)).expect("applied")
    }

    fn value(&self, key: &str) -> Option<Bytes> {
        let resp = self
            .store
            .range(&RangeRequest {
                key: Bytes::from(key.to_owned()),
                ..Default::default()
            })
            .unwrap();
        resp.kvs.first().map(|kv| kv.value.clone())
    }

    fn events(&self) -> Vec<(i64, i32, Bytes)> {
        std::mem::take(&mut *self.hooks.0.lock())
    }
}

fn put(key: &str, value: &str) -> Request {
    Request::Put(put_request(key, value, 0))
}

fn put_request(key: &str, value: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
        lease,
        ..Default::default()
    }
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(put_request(key, value, 0))),
    }
}

fn failed(applied: Applied) -> EtcdError {
    match applied {
        Applied::Failed(e) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn put_event(revision: i64, key: &str) -> (i64, i32, Bytes) {
    (revision, EventType::Put as i32, Bytes::from(key.to_owned()))
}

#[test]
fn a_put_writes_a_revision_tells_the_hooks_and_moves_the_index() {
    let mut f = Fixture::new();
    let Applied::Put(resp) = f.apply(put("a", "1")) else {
        panic!("not a put response")
    };
    assert_eq!(resp.header.map(|h| h.revision), Some(2));
    assert_eq!(f.value("a").as_deref(), Some(&b"1"[..]));
    assert_eq!(f.applier.applied_index(), 1);
    assert_eq!(f.events(), vec![put_event(2, "a")]);
}

#[test]
fn a_txn_applies_the_branch_its_compares_choose() {
    let mut f = Fixture::new();
    f.apply(put("a", "1"));
    let txn = |expected: &str| TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Value as i32,
            key: Bytes::from_static(b"a"),
            target_union: Some(compare::TargetUnion::Value(Bytes::from(
                expected.to_owned(),
            ))),
            ..Default::default()
        }],
        success: vec![put_op("then", "x")],
        failure: vec![put_op("else", "y")],
    };
    let Applied::Txn(resp) = f.apply(Request::Txn(txn("1"))) else {
        panic!("not a txn response")
    };
    assert!(resp.succeeded);
    let Applied::Txn(resp) = f.apply(Request::Txn(txn("nope"))) else {
        panic!("not a txn response")
    };
    assert!(!resp.succeeded);
    assert_eq!(f.value("then").as_deref(), Some(&b"x"[..]));
    assert_eq!(f.value("else").as_deref(), Some(&b"y"[..]));
    assert_eq!(f.store.current_revision(), 4);
    assert_eq!(f.applier.applied_index(), 3);
}

#[test]
fn client_errors_change_nothing_but_the_index() {
    let mut f = Fixture::new();
    f.apply(put("a", "1"));
    // A put naming a lease nobody granted, directly and inside a txn.
    assert_eq!(
        failed(f.apply(Request::Put(put_request("b", "2", 77)))),
        EtcdError::LeaseNotFound
    );
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put_request("b", "2", 77))),
        }],
        ..Default::default()
    };
    assert_eq!(failed(f.apply(Request::Txn(txn))), EtcdError::LeaseNotFound);
    // ignore_value on a key that does not exist: the store's own error.
    let ignore = PutRequest {
        key: Bytes::from_static(b"missing"),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(
        failed(f.apply(Request::Put(ignore))),
        EtcdError::KeyNotFound
    );
    assert_eq!(
        failed(f.apply(Request::Compaction(CompactionRequest {
            revision: 100,
            physical: false,
        }))),
        EtcdError::FutureRevision
    );
    assert_eq!(f.store.current_revision(), 2);
    assert_eq!(f.value("b"), None);
    assert_eq!(f.applier.applied_index(), 5);
    assert_eq!(f.events(), vec![put_event(2, "a")]);
}

#[test]
fn leases_are_granted_attached_and_revoked_with_their_keys() {
    let mut f = Fixture::new();
    let Applied::LeaseGrant(granted) =
        f.apply(Request::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 7 }))
    else {
        panic!("not a grant response")
    };
    assert_eq!((granted.id, granted.ttl), (7, 30));
    assert_eq!(
        failed(f.apply(Request::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 7 }))),
        EtcdError::LeaseExists
    );
    f.apply(Request::Put(put_request("a", "1", 7)));
    f.apply(Request::Put(put_request("b", "2", 7)));
    assert_eq!(
        f.lessor.time_to_live(7, true).map(|t| t.keys),
        Some(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")])
    );
    f.events();
    let Applied::LeaseRevoke(_) = f.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 7 }))
    else {
        panic!("not a revoke response")
    };
    assert!(!f.lessor.exists(7));
    assert_eq!((f.value("a"), f.value("b")), (None, None));
    // Both keys go in one revision.
    let delete = EventType::Delete as i32;
    assert_eq!(
        f.events(),
        vec![
            (4, delete, Bytes::from_static(b"a")),
            (4, delete, Bytes::from_static(b"b")),
        ]
    );
    assert_eq!(
        failed(f.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 7 }))),
        EtcdError::LeaseNotFound
    );
    assert_eq!(f.applier.applied_index(), 6);
}

#[test]
fn a_nospace_alarm_refuses_writes_that_grow_the_key_space() {
    let mut f = Fixture::new();
    f.apply(put("a", "1"));
    let alarm = |action: AlarmAction| {
        Request::Alarm(AlarmRequest {
            action: action as i32,
            member_id: 9,
            alarm: AlarmType::Nospace as i32,
        })
    };
    let raised = AlarmMember {
        member_id: 9,
        alarm: AlarmType::Nospace as i32,
    };
    let Applied::Alarm(resp) = f.apply(alarm(AlarmAction::Activate)) else {
        panic!("not an alarm response")
    };
    assert_eq!(resp.alarms, vec![raised]);
    assert!(f.alarms.no_space());
    assert_eq!(failed(f.apply(put("b", "2"))), EtcdError::NoSpace);
    assert_eq!(
        failed(f.apply(Request::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 8 }))),
        EtcdError::NoSpace
    );
    // Deletes free space: they pass.
    let Applied::DeleteRange(resp) = f.apply(Request::DeleteRange(DeleteRangeRequest {
        key: Bytes::from_static(b"a"),
        ..Default::default()
    })) else {
        panic!("not a delete response")
    };
    assert_eq!(resp.deleted, 1);
    let Applied::Alarm(resp) = f.apply(alarm(AlarmAction::Deactivate)) else {
        panic!("not an alarm response")
    };
    assert_eq!(resp.alarms, vec![raised]);
    let Applied::Put(_) = f.apply(put("b", "2")) else {
        panic!("writes pass again")
    };
}

#[test]
fn membership_entries_change_the_member_list() {
    let mut f = Fixture::new();
    let me = Member {
        id: SELF_ID,
        name: "a".into(),
        peer_ur_ls: vec!["http://a:2380".into()],
        ..Default::default()
    };
    let learner = Member {
        id: 2,
        peer_ur_ls: vec!["http://b:2380".into()],
        is_learner: true,
        ..Default::default()
    };
    for (kind, member) in [
        (ConfChangeType::AddNode, &me),
        (ConfChangeType::AddLearnerNode, &learner),
    ] {
        let change = members::change(kind, member);
        let Ok(Applied::Members(list)) = f.apply_kind(EntryKind::ConfChange {
            change,
            state: ConfState::default(),
        }) else {
            panic!("not a member list")
        };
        assert!(list.iter().any(|m| m.id == member.id));
    }
    assert!(f.members.get(2).is_some_and(|m| m.is_learner));
    // The learner publishes its name; then it is promoted.
    let attrs = Member {
        id: 2,
        name: "b".into(),
        client_ur_ls: vec!["http://b:2379".into()],
        ..Default::default()
    };
    let Applied::Members(_) = f.apply(Request::MemberAttributes(attrs)) else {
        panic!("not a member list")
    };
    let promote = members::change(ConfChangeType::AddNode, &learner);
    f.apply_kind(EntryKind::ConfChange {
        change: promote,
        state: ConfState::default(),
    })
    .unwrap();
    assert_eq!(
        f.members.get(2),
        Some(Member {
            id: 2,
            name: "b".into(),
            peer_ur_ls: vec!["http://b:2380".into()],
            client_ur_ls: vec!["http://b:2379".into()],
            is_learner: false,
        })
    );
    assert!(!*f.removed.borrow());
    // Removing this member tells it to stop.
    let remove = members::change(ConfChangeType::RemoveNode, &me);
    f.apply_kind(EntryKind::ConfChange {
        change: remove,
        state: ConfState::default(),
    })
    .unwrap();
    assert!(*f.removed.borrow());
    assert_eq!(f.members.list().len(), 1);
    assert_eq!(f.applier.applied_index(), 5);
}

#[test]
fn empty_and_rejected_entries_only_move_the_index() {
    let mut f = Fixture::new();
    f.apply(put("a", "1"));
    let Ok(Applied::Nothing) = f.apply_kind(EntryKind::Empty) else {
        panic!("an empty entry answers nothing")
    };
    let Ok(Applied::Nothing) = f.apply_kind(EntryKind::Rejected(ProposalId {
        proposer: 3,
        seq: 1,
    })) else {
        panic!("a rejected entry answers nothing")
    };
    assert_eq!(f.applier.applied_index(), 3);
    assert_eq!(f.store.current_revision(), 2);
    assert_eq!(f.events(), vec![put_event(2, "a")]);
}

#[test]
fn an_entry_this_member_cannot_read_stops_it() {
    let mut f = Fixture::new();
    f.apply(put("a", "1"));
    let garbage = [0xff_u8, 0xff, 0xff];
    let e = f.apply_kind(EntryKind::Normal(&garbage)).unwrap_err();
    assert!(e.0.contains("does not decode"), "{e}");
    // A request of a kind this version does not know decodes as no request at all.
    let unknown = InternalRequest {
        id: 0,
        header: None,
        request: None,
    }
    .encode_to_vec();
    let e = f.apply_kind(EntryKind::Normal(&unknown)).unwrap_err();
    assert!(e.0.contains("holds no request"), "{e}");
    // Neither moved the index: the member stops before it.
    assert_eq!(f.applier.applied_index(), 1);
    assert_eq!(f.store.current_revision(), 2);
}

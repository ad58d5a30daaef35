//! Wire-format and gRPC-path checks against hand-computed protobuf bytes.

use prost::Message;

use crate::cairnpb::{internal_request, InternalRequest};
use crate::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RangeResponse, ResponseHeader, WatchResponse,
};
use crate::mvccpb::{event::EventType, Event, KeyValue};

#[test]
fn put_request_bytes() {
    let put = PutRequest {
        key: "a".into(),
        value: "b".into(),
        lease: 5,
        ..Default::default()
    };
    let wire = put.encode_to_vec();
    // key: field 1 LEN; value: field 2 LEN; lease: field 3 varint.
    assert_eq!(wire, [0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 5]);
    assert_eq!(PutRequest::decode(wire.as_slice()).unwrap(), put);
}

#[test]
fn range_response_bytes() {
    let resp = RangeResponse {
        header: Some(ResponseHeader {
            revision: 7,
            ..Default::default()
        }),
        kvs: vec![KeyValue {
            key: "k".into(),
            mod_revision: 3,
            value: "v".into(),
            ..Default::default()
        }],
        more: true,
        count: 1,
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 2, 0x18, 7,                                   // header { revision: 7 }
        0x12, 8, 0x0a, 1, b'k', 0x18, 3, 0x2a, 1, b'v',     // kvs[0] { key, mod_revision, value }
        0x18, 1,                                            // more
        0x20, 1,                                            // count
    ];
    let wire = resp.encode_to_vec();
    assert_eq!(wire, expected);
    assert_eq!(RangeResponse::decode(wire.as_slice()).unwrap(), resp);
}

#[test]
fn negative_int64_is_ten_byte_varint() {
    let req = RangeRequest {
        revision: -1,
        ..Default::default()
    };
    let mut expected = vec![0x20];
    expected.extend_from_slice(&[0xff; 9]);
    expected.push(0x01);
    assert_eq!(req.encode_to_vec(), expected);
}

#[test]
fn compare_with_lease_and_range_end() {
    let cmp = Compare {
        result: CompareResult::NotEqual as i32,
        target: CompareTarget::Lease as i32,
        key: "k".into(),
        range_end: "z".into(),
        target_union: Some(TargetUnion::Lease(9)),
    };
    #[rustfmt::skip]
    let expected = [
        0x08, 3,             // result NOT_EQUAL
        0x10, 4,             // target LEASE
        0x1a, 1, b'k',       // key
        0x40, 9,             // lease (field 8, varint)
        0x82, 0x04, 1, b'z', // range_end (field 64, LEN: tag 514 = 0x82 0x04)
    ];
    assert_eq!(cmp.encode_to_vec(), expected);
}

#[test]
fn watch_response_events_field_11() {
    let resp = WatchResponse {
        watch_id: 2,
        events: vec![Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: "k".into(),
                ..Default::default()
            }),
            prev_kv: None,
        }],
        ..Default::default()
    };
    #[rustfmt::skip]
    let expected = [
        0x10, 2,                                  // watch_id
        0x5a, 7, 0x08, 1, 0x12, 3, 0x0a, 1, b'k', // events[0] (field 11) { type DELETE, kv { key } }
    ];
    assert_eq!(resp.encode_to_vec(), expected);
}

#[test]
fn internal_request_bytes() {
    let req = InternalRequest {
        id: 1,
        header: None,
        request: Some(internal_request::Request::Put(PutRequest {
            key: "a".into(),
            ..Default::default()
        })),
    };
    // id: field 1 varint; put: field 10 LEN (tag 0x52).
    let wire = req.encode_to_vec();
    assert_eq!(wire, [0x08, 1, 0x52, 3, 0x0a, 1, b'a']);
    assert_eq!(InternalRequest::decode(wire.as_slice()).unwrap(), req);
}

#[test]
fn bytes_fields_are_bytes() {
    let kv = KeyValue::default();
    let _: &bytes::Bytes = &kv.key;
    let _: &bytes::Bytes = &kv.value;
    let put = PutRequest::default();
    let _: &bytes::Bytes = &put.key;
}

#[test]
fn service_names() {
    use tonic::server::NamedService;

    use crate::etcdserverpb::{
        auth_server, cluster_server, kv_server, lease_server, maintenance_server, watch_server,
    };
    use crate::{v3electionpb::election_server, v3lockpb::lock_server};

    // `T` is unconstrained on `NamedService`, so any type will do here.
    assert_eq!(<kv_server::KvServer<()>>::NAME, "etcdserverpb.KV");
    assert_eq!(<watch_server::WatchServer<()>>::NAME, "etcdserverpb.Watch");
    assert_eq!(<lease_server::LeaseServer<()>>::NAME, "etcdserverpb.Lease");
    assert_eq!(
        <cluster_server::ClusterServer<()>>::NAME,
        "etcdserverpb.Cluster"
    );
    assert_eq!(
        <maintenance_server::MaintenanceServer<()>>::NAME,
        "etcdserverpb.Maintenance"
    );
    assert_eq!(<auth_server::AuthServer<()>>::NAME, "etcdserverpb.Auth");
    assert_eq!(<lock_server::LockServer<()>>::NAME, "v3lockpb.Lock");
    assert_eq!(
        <election_server::ElectionServer<()>>::NAME,
        "v3electionpb.Election"
    );
}

#[test]
fn grpc_method_paths() {
    let etcd = include_str!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    for path in [
        "/etcdserverpb.KV/Range",
        "/etcdserverpb.KV/Put",
        "/etcdserverpb.KV/DeleteRange",
        "/etcdserverpb.KV/Txn",
        "/etcdserverpb.KV/Compact",
        "/etcdserverpb.Watch/Watch",
        "/etcdserverpb.Lease/LeaseGrant",
        "/etcdserverpb.Lease/LeaseRevoke",
        "/etcdserverpb.Lease/LeaseKeepAlive",
        "/etcdserverpb.Lease/LeaseTimeToLive",
        "/etcdserverpb.Lease/LeaseLeases",
        "/etcdserverpb.Cluster/MemberAdd",
        "/etcdserverpb.Cluster/MemberRemove",
        "/etcdserverpb.Cluster/MemberUpdate",
        "/etcdserverpb.Cluster/MemberList",
        "/etcdserverpb.Cluster/MemberPromote",
        "/etcdserverpb.Maintenance/Alarm",
        "/etcdserverpb.Maintenance/Status",
        "/etcdserverpb.Maintenance/Defragment",
        "/etcdserverpb.Maintenance/Hash",
        "/etcdserverpb.Maintenance/HashKV",
        "/etcdserverpb.Maintenance/Snapshot",
        "/etcdserverpb.Maintenance/MoveLeader",
        "/etcdserverpb.Maintenance/Downgrade",
        "/etcdserverpb.Auth/AuthEnable",
        "/etcdserverpb.Auth/AuthDisable",
        "/etcdserverpb.Auth/AuthStatus",
        "/etcdserverpb.Auth/Authenticate",
        "/etcdserverpb.Auth/UserAdd",
        "/etcdserverpb.Auth/UserGet",
        "/etcdserverpb.Auth/UserList",
        "/etcdserverpb.Auth/UserDelete",
        "/etcdserverpb.Auth/UserChangePassword",
        "/etcdserverpb.Auth/UserGrantRole",
        "/etcdserverpb.Auth/UserRevokeRole",
        "/etcdserverpb.Auth/RoleAdd",
        "/etcdserverpb.Auth/RoleGet",
        "/etcdserverpb.Auth/RoleList",
        "/etcdserverpb.Auth/RoleDelete",
        "/etcdserverpb.Auth/RoleGrantPermission",
        "/etcdserverpb.Auth/RoleRevokePermission",
    ] {
        assert!(
            etcd.contains(&format!("\"{path}\"")),
            "missing gRPC path {path}"
        );
    }
    let lock = include_str!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
    for path in ["/v3lockpb.Lock/Lock", "/v3lockpb.Lock/Unlock"] {
        assert!(lock.contains(&format!("\"{path}\"")), "missing {path}");
    }
    let election = include_str!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    for path in [
        "/v3electionpb.Election/Campaign",
        "/v3electionpb.Election/Proclaim",
        "/v3electionpb.Election/Leader",
        "/v3electionpb.Election/Observe",
        "/v3electionpb.Election/Resign",
    ] {
        assert!(election.contains(&format!("\"{path}\"")), "missing {path}");
    }
}

#[test]
fn file_descriptor_set_is_present() {
    // A FileDescriptorSet is `repeated FileDescriptorProto file = 1`: starts with tag 0x0a.
    assert_eq!(crate::FILE_DESCRIPTOR_SET.first(), Some(&0x0a));
    let text = String::from_utf8_lossy(crate::FILE_DESCRIPTOR_SET);
    for name in crate::PROTO_FILES {
        assert!(text.contains(name), "descriptor set lacks {name}");
    }
}

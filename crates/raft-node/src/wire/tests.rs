use super::*;
use protobuf::{RepeatedField, SingularPtrField};
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfState, EntryType, MessageType,
    Snapshot, SnapshotMetadata,
};

fn entry(index: u64, kind: EntryType, data: &[u8]) -> Entry {
    let mut e = Entry::default();
    e.set_entry_type(kind);
    e.term = 7;
    e.index = index;
    e.data = data.to_vec().into();
    e.context = b"proposal context".to_vec().into();
    e
}

fn conf_state() -> ConfState {
    ConfState {
        voters: vec![1, 2, u64::MAX],
        learners: vec![4],
        voters_outgoing: vec![1, 2, 3],
        learners_next: vec![5],
        auto_leave: true,
        ..Default::default()
    }
}

/// Messages raft-rs sends, with every field of the schema set somewhere.
fn sample_messages() -> Vec<Message> {
    let mut append = Message::default();
    append.set_msg_type(MessageType::MsgAppend);
    append.to = 2;
    append.from = 1;
    append.term = 7;
    append.log_term = 6;
    append.index = 41;
    append.commit = 40;
    append.commit_term = 6;
    append.entries = RepeatedField::from_vec(vec![
        entry(42, EntryType::EntryNormal, b"put k v"),
        entry(
            43,
            EntryType::EntryConfChangeV2,
            &conf_change_v2().write_to_bytes().unwrap(),
        ),
        entry(44, EntryType::EntryNormal, b""),
    ]);

    let mut snapshot = Message::default();
    snapshot.set_msg_type(MessageType::MsgSnapshot);
    snapshot.to = 3;
    snapshot.from = 1;
    snapshot.term = 7;
    let meta = SnapshotMetadata {
        index: 40,
        term: 6,
        conf_state: SingularPtrField::some(conf_state()),
        ..Default::default()
    };
    let snap = Snapshot {
        data: b"snapshot data".to_vec().into(),
        metadata: SingularPtrField::some(meta),
        ..Default::default()
    };
    snapshot.snapshot = SingularPtrField::some(snap);

    let mut response = Message::default();
    response.set_msg_type(MessageType::MsgAppendResponse);
    response.reject = true;
    response.reject_hint = 12;
    response.request_snapshot = 9;
    response.deprecated_priority = 3;
    response.priority = -5;
    response.context = b"read index context".to_vec().into();

    vec![append, snapshot, response, Message::default()]
}

fn conf_change() -> ConfChange {
    let mut cc = ConfChange {
        id: 17,
        node_id: 0xdead_beef,
        context: b"member".to_vec().into(),
        ..Default::default()
    };
    cc.set_change_type(ConfChangeType::AddLearnerNode);
    cc
}

fn conf_change_v2() -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    cc.set_transition(ConfChangeTransition::Explicit);
    let changes = [
        (ConfChangeType::AddNode, 4),
        (ConfChangeType::RemoveNode, 1),
    ];
    cc.changes = RepeatedField::from_vec(
        changes
            .iter()
            .map(|&(kind, node_id)| {
                let mut single = ConfChangeSingle::default();
                single.set_change_type(kind);
                single.node_id = node_id;
                single
            })
            .collect(),
    );
    cc.context = b"joint".to_vec().into();
    cc
}

/// Offsets at which `bytes` (a message of `schema`) splits between two top-level fields.
fn field_boundaries(bytes: &[u8]) -> Vec<usize> {
    let mut cuts = vec![0];
    let mut pos = 0;
    while pos < bytes.len() {
        let tag = read_varint(bytes, &mut pos, "test").unwrap();
        match (tag & 7) as u8 {
            WIRE_VARINT => {
                read_varint(bytes, &mut pos, "test").unwrap();
            }
            WIRE_LEN => {
                read_len(bytes, &mut pos, "test").unwrap();
            }
            other => panic!("unexpected wire type {other}"),
        }
        cuts.push(pos);
    }
    cuts
}

/// Every cut of `bytes` either ends between two fields (a shorter valid message) or is
/// refused by `check`; nothing `check` accepts is refused by the parser.
fn assert_truncations_fail<M: protobuf::Message>(
    bytes: &[u8],
    check: fn(&[u8]) -> Result<(), WireError>,
) {
    let boundaries = field_boundaries(bytes);
    for cut in 0..bytes.len() {
        let prefix = &bytes[..cut];
        match check(prefix) {
            Ok(()) => {
                assert!(
                    boundaries.contains(&cut),
                    "cut at {cut} of {} accepted",
                    bytes.len()
                );
                M::parse_from_bytes(prefix).unwrap();
            }
            Err(e) => assert!(!boundaries.contains(&cut), "cut at {cut} refused: {e}"),
        }
    }
}

#[test]
fn messages_raft_writes_pass_and_parse_back() {
    for msg in sample_messages() {
        let bytes = msg.write_to_bytes().unwrap();
        assert_eq!(parse_message(&bytes).unwrap(), msg);
        for e in msg.get_entries() {
            assert_eq!(parse_entry(&e.write_to_bytes().unwrap()).unwrap(), *e);
        }
    }
    let cc = conf_change();
    assert_eq!(
        parse_conf_change(&cc.write_to_bytes().unwrap()).unwrap(),
        cc
    );
    let cc = conf_change_v2();
    assert_eq!(
        parse_conf_change_v2(&cc.write_to_bytes().unwrap()).unwrap(),
        cc
    );
    // A V1 conf change is what raft turns into a V2 one; both travel in entries.
    assert_eq!(parse_conf_change_v2(&[]).unwrap(), ConfChangeV2::default());
}

#[test]
fn every_truncation_fails_cleanly() {
    for msg in sample_messages() {
        assert_truncations_fail::<Message>(&msg.write_to_bytes().unwrap(), check_message);
    }
    let cc = conf_change().write_to_bytes().unwrap();
    assert_truncations_fail::<ConfChange>(&cc, check_conf_change);
    let cc = conf_change_v2().write_to_bytes().unwrap();
    assert_truncations_fail::<ConfChangeV2>(&cc, check_conf_change_v2);
    let e = entry(1, EntryType::EntryNormal, b"data")
        .write_to_bytes()
        .unwrap();
    assert_truncations_fail::<Entry>(&e, check_entry);
}

/// Start-group tags nested `depth` deep for `field`: what overflows `protobuf` 2's stack.
fn group_bomb(field: u64, depth: usize) -> Vec<u8> {
    let tag = (field << 3) | u64::from(WIRE_START_GROUP);
    let mut one = Vec::new();
    let mut t = tag;
    while t >= 0x80 {
        one.push((t as u8) | 0x80);
        t >>= 7;
    }
    one.push(t as u8);
    one.repeat(depth)
}

/// `body` as field `field` (length-delimited) of a message.
fn nested(field: u64, body: &[u8]) -> Vec<u8> {
    let mut out = vec![((field << 3) as u8) | WIRE_LEN];
    let mut len = body.len();
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(body);
    out
}

#[test]
fn a_nested_group_bomb_is_refused_at_every_level() {
    let bomb = group_bomb(99, 1 << 20);
    let refused = |result: Result<(), WireError>| {
        assert!(
            matches!(
                result,
                Err(WireError::Group {
                    field: 99,
                    wire_type: 3,
                    ..
                })
            ),
            "{result:?}"
        );
    };
    refused(check_message(&bomb));
    // After a valid field, inside an entry, and inside the snapshot's conf state.
    let mut after_field = vec![0x08, 0x03];
    after_field.extend_from_slice(&bomb);
    refused(check_message(&after_field));
    refused(check_message(&nested(7, &bomb)));
    refused(check_message(&nested(9, &nested(2, &nested(1, &bomb)))));
    refused(check_conf_change(&bomb));
    refused(check_conf_change_v2(&nested(2, &bomb)));
    refused(check_entry(&bomb));
    // An end-group tag alone, and a group under a known field number.
    assert!(matches!(
        check_message(&[0x0c]),
        Err(WireError::Group { wire_type: 4, .. })
    ));
    assert!(matches!(
        check_message(&[0x3b]),
        Err(WireError::Group { field: 7, .. })
    ));
    assert!(parse_message(&bomb).is_err());
}

#[test]
fn malformed_fields_get_their_own_errors() {
    // Eleven-byte varint, and a ten-byte one that overflows 64 bits.
    let mut long = vec![0x10];
    long.extend_from_slice(&[0xff; 10]);
    long.push(0x01);
    assert!(matches!(
        check_message(&long),
        Err(WireError::VarintOverflow { at: 1, .. })
    ));
    let mut overflow = vec![0x10];
    overflow.extend_from_slice(&[0xff; 9]);
    overflow.push(0x02);
    assert!(matches!(
        check_message(&overflow),
        Err(WireError::VarintOverflow { .. })
    ));
    let mut max = vec![0x10];
    max.extend_from_slice(&[0xff; 9]);
    max.push(0x01);
    assert_eq!(parse_message(&max).unwrap().to, u64::MAX);
    // A length running past the end, and one of 2^64 - 1.
    assert!(matches!(
        check_message(&[0x3a, 0x05, 0x08]),
        Err(WireError::Truncated { .. })
    ));
    let mut huge = vec![0x62];
    huge.extend_from_slice(&[0xff; 9]);
    huge.push(0x01);
    assert!(matches!(
        check_message(&huge),
        Err(WireError::Truncated { .. })
    ));
    // Field number 0, undefined wire types, known fields with the wrong wire type.
    assert!(matches!(
        check_message(&[0x00, 0x01]),
        Err(WireError::BadFieldNumber { field: 0, .. })
    ));
    assert!(matches!(
        check_message(&[0x0e]),
        Err(WireError::InvalidWireType { wire_type: 6, .. })
    ));
    assert!(matches!(
        check_message(&[0x0f]),
        Err(WireError::InvalidWireType { wire_type: 7, .. })
    ));
    assert!(matches!(
        check_message(&[0x38, 0x01]),
        Err(WireError::WrongWireType { field: 7, .. })
    ));
    assert!(matches!(
        check_message(&[0x12, 0x00]),
        Err(WireError::WrongWireType { field: 2, .. })
    ));
    assert!(matches!(
        check_message(&[0x61, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(WireError::WrongWireType { field: 12, .. })
    ));
    // A packed repeated field whose last varint is cut inside the packed bytes.
    let cs = nested(1, &[0x01, 0x80]);
    let meta = nested(1, &cs);
    let snap = nested(2, &meta);
    assert!(matches!(
        check_message(&nested(9, &snap)),
        Err(WireError::Truncated {
            message: "ConfState",
            ..
        })
    ));
}

#[test]
fn unknown_fields_of_plain_wire_types_pass() {
    let mut msg = sample_messages().remove(0).write_to_bytes().unwrap();
    // Field 100 as varint, fixed64, length-delimited and fixed32.
    msg.extend_from_slice(&[0xa0, 0x06, 0x2a]);
    msg.extend_from_slice(&[0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]);
    msg.extend_from_slice(&[0xa2, 0x06, 0x02, 0x0b, 0x0b]);
    msg.extend_from_slice(&[0xa5, 0x06, 1, 2, 3, 4]);
    let parsed = parse_message(&msg).unwrap();
    assert_eq!(parsed.get_entries().len(), 3);
    // A group tag hidden in an unknown length-delimited field is never parsed: it stays
    // opaque bytes, so it passes.
    check_message(&[0xa2, 0x06, 0x01, 0x0b]).unwrap();
}

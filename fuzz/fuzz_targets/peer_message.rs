//! What another member sends on the peer port: `cairnpb.RaftMessages` and
//! `SnapshotChunk` (prost), the raft messages inside them (the `wire` check, then
//! raft-rs's protobuf 2 parse), the conf changes and proposal ids their entries carry,
//! and a snapshot's proposal ledger. Nothing panics or overflows the stack, whatever
//! raft-rs itself encodes passes the check, and parsing that gives the same message.
#![no_main]

use cairn_proto::cairnpb::{RaftMessages, SnapshotChunk};
use cairn_raft_node::eraftpb::EntryType;
use cairn_raft_node::{wire, ProposalId, ProposalLedger};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use protobuf::Message as _;

fn raft_message(bytes: &[u8]) {
    let Ok(msg) = wire::parse_message(bytes) else {
        return;
    };
    let again = msg.write_to_bytes().expect("a parsed raft message encodes");
    let reparsed = wire::parse_message(&again).expect("raft-rs's own encoding passes the check");
    // protobuf 2 keeps unknown fields in a hash map (their order in an encoding varies) and
    // tells "none" from "an empty set": compare the known fields and the encoded size.
    assert_eq!(format!("{reparsed:?}"), format!("{msg:?}"));
    let size = reparsed.write_to_bytes().expect("it encodes again").len();
    assert_eq!(size, again.len());
    for entry in msg.get_entries() {
        let _ = ProposalId::from_context(&entry.context);
        match entry.get_entry_type() {
            EntryType::EntryConfChange => {
                let _ = wire::parse_conf_change(&entry.data);
            }
            EntryType::EntryConfChangeV2 => {
                let _ = wire::parse_conf_change_v2(&entry.data);
            }
            EntryType::EntryNormal => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    raft_message(data);
    let _ = wire::parse_entry(data);
    let _ = wire::parse_conf_change(data);
    let _ = wire::parse_conf_change_v2(data);
    let _ = ProposalLedger::decode(data);
    if let Ok(batch) = RaftMessages::decode(data) {
        for message in &batch.messages {
            raft_message(message);
        }
    }
    if let Ok(chunk) = SnapshotChunk::decode(data) {
        raft_message(&chunk.message);
    }
});

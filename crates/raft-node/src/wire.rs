//! A guard in front of the `protobuf` 2 parser for bytes other members send.
//!
//! raft-rs 0.7 decodes its messages with `protobuf` 2.28, whose parser follows unknown
//! *group* fields by recursion without a limit (RUSTSEC-2024-0437): a few hundred
//! kilobytes of nested start-group tags overflow the stack and abort the process. The
//! peer port takes bytes from anyone who can reach it, so every raft message, and every
//! conf change a committed entry carries, goes through this module first.
//!
//! The check walks the protobuf wire format with the schema of raft's `eraftpb.proto`
//! (`Message` → `entries: Entry`, `snapshot: Snapshot` → `metadata: SnapshotMetadata` →
//! `conf_state: ConfState`; `ConfChange`; `ConfChangeV2` → `changes: ConfChangeSingle`)
//! and refuses:
//! - group wire types (3 and 4) anywhere, and the undefined wire types 6 and 7;
//! - varints longer than ten bytes, lengths that run past their message, field number 0;
//! - a known field with a wire type its schema does not allow;
//! - nesting deeper than the schema's.
//!
//! Unknown fields of the other wire types are allowed (a newer raft may add fields);
//! `protobuf` keeps them as opaque bytes without looking inside. `bytes` fields are not
//! looked into either: those that are parsed later (an entry's conf change) are checked
//! when they are.
//!
//! ```
//! use cairn_raft_node::eraftpb::{Entry, Message, MessageType};
//! use cairn_raft_node::wire;
//! use protobuf::Message as _;
//!
//! let mut msg = Message::default();
//! msg.set_msg_type(MessageType::MsgAppend);
//! msg.set_entries(vec![Entry::default()].into());
//! let bytes = msg.write_to_bytes().unwrap();
//! assert_eq!(wire::parse_message(&bytes).unwrap(), msg);
//!
//! // A start-group tag (field 1, wire type 3) never reaches the parser.
//! assert!(wire::parse_message(&[0x0b; 100_000]).is_err());
//! ```

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, Message};

/// Why bytes were refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A group field (wire type 3 or 4): raft's schema has none, and `protobuf` 2 would
    /// recurse into it without a limit.
    #[error("group field {field} (wire type {wire_type}) in {message} at byte {at}")]
    Group {
        /// The message being read.
        message: &'static str,
        /// The field number of the tag.
        field: u64,
        /// 3 (start group) or 4 (end group).
        wire_type: u8,
        /// Offset of the tag within its message.
        at: usize,
    },
    /// Wire type 6 or 7, which protobuf does not define.
    #[error("invalid wire type {wire_type} in {message} at byte {at}")]
    InvalidWireType {
        /// The message being read.
        message: &'static str,
        /// The wire type found.
        wire_type: u8,
        /// Offset of the tag within its message.
        at: usize,
    },
    /// A known field with a wire type its schema does not allow.
    #[error("field {field} of {message} has wire type {wire_type} at byte {at}")]
    WrongWireType {
        /// The message being read.
        message: &'static str,
        /// The field number.
        field: u64,
        /// The wire type found.
        wire_type: u8,
        /// Offset of the tag within its message.
        at: usize,
    },
    /// A tag whose field number is 0 or above 2^29 - 1.
    #[error("bad field number {field} in {message} at byte {at}")]
    BadFieldNumber {
        /// The message being read.
        message: &'static str,
        /// The field number found.
        field: u64,
        /// Offset of the tag within its message.
        at: usize,
    },
    /// A varint of more than ten bytes, or one that overflows 64 bits.
    #[error("overlong varint in {message} at byte {at}")]
    VarintOverflow {
        /// The message being read.
        message: &'static str,
        /// Offset of the varint within its message.
        at: usize,
    },
    /// The bytes end inside a tag, a value or a length-delimited field.
    #[error("truncated {message} at byte {at}")]
    Truncated {
        /// The message being read.
        message: &'static str,
        /// Offset within the message where more bytes were needed.
        at: usize,
    },
    /// Sub-messages nested deeper than raft's schema allows (cannot happen while the
    /// walk follows the schema; kept as a guard if the schema ever becomes recursive).
    #[error("{message} nested deeper than {MAX_DEPTH} levels")]
    TooDeep {
        /// The message that would have been entered.
        message: &'static str,
    },
    /// The bytes passed the check but `protobuf` refused them.
    #[error("{message}: {reason}")]
    Protobuf {
        /// The message type.
        message: &'static str,
        /// `protobuf`'s error.
        reason: String,
    },
}

use Kind::{Bytes, RepeatedVarint, Varint};

/// How a field may be encoded.
#[derive(Clone, Copy)]
enum Kind {
    /// A varint (integers, bools, enums).
    Varint,
    /// Opaque length-delimited bytes (`bytes`, `string`).
    Bytes,
    /// A repeated integer: packed (length-delimited varints) or one varint per element.
    RepeatedVarint,
    /// A sub-message, length-delimited.
    Message(&'static Schema),
}

/// The fields of one message type: `(field number, kind)`.
struct Schema {
    name: &'static str,
    fields: &'static [(u64, Kind)],
}

impl Schema {
    fn kind(&self, field: u64) -> Option<Kind> {
        self.fields
            .iter()
            .find(|(number, _)| *number == field)
            .map(|(_, kind)| *kind)
    }
}

/// Message → Snapshot → SnapshotMetadata → ConfState: four levels.
const MAX_DEPTH: usize = 4;

static CONF_STATE: Schema = Schema {
    name: "ConfState",
    fields: &[
        (1, RepeatedVarint), // voters
        (2, RepeatedVarint), // learners
        (3, RepeatedVarint), // voters_outgoing
        (4, RepeatedVarint), // learners_next
        (5, Varint),         // auto_leave
    ],
};

static SNAPSHOT_METADATA: Schema = Schema {
    name: "SnapshotMetadata",
    fields: &[
        (1, Kind::Message(&CONF_STATE)), // conf_state
        (2, Varint),                     // index
        (3, Varint),                     // term
    ],
};

static SNAPSHOT: Schema = Schema {
    name: "Snapshot",
    fields: &[
        (1, Bytes),                             // data
        (2, Kind::Message(&SNAPSHOT_METADATA)), // metadata
    ],
};

static ENTRY: Schema = Schema {
    name: "Entry",
    fields: &[
        (1, Varint), // entry_type
        (2, Varint), // term
        (3, Varint), // index
        (4, Bytes),  // data
        (5, Varint), // sync_log
        (6, Bytes),  // context
    ],
};

static MESSAGE: Schema = Schema {
    name: "Message",
    fields: &[
        (1, Varint),                   // msg_type
        (2, Varint),                   // to
        (3, Varint),                   // from
        (4, Varint),                   // term
        (5, Varint),                   // log_term
        (6, Varint),                   // index
        (7, Kind::Message(&ENTRY)),    // entries
        (8, Varint),                   // commit
        (9, Kind::Message(&SNAPSHOT)), // snapshot
        (10, Varint),                  // reject
        (11, Varint),                  // reject_hint
        (12, Bytes),                   // context
        (13, Varint),                  // request_snapshot
        (14, Varint),                  // deprecated_priority
        (15, Varint),                  // commit_term
        (16, Varint),                  // priority
    ],
};

static CONF_CHANGE: Schema = Schema {
    name: "ConfChange",
    fields: &[
        (1, Varint), // id
        (2, Varint), // change_type
        (3, Varint), // node_id
        (4, Bytes),  // context
    ],
};

static CONF_CHANGE_SINGLE: Schema = Schema {
    name: "ConfChangeSingle",
    fields: &[
        (1, Varint), // change_type
        (2, Varint), // node_id
    ],
};

static CONF_CHANGE_V2: Schema = Schema {
    name: "ConfChangeV2",
    fields: &[
        (1, Varint),                             // transition
        (2, Kind::Message(&CONF_CHANGE_SINGLE)), // changes
        (3, Bytes),                              // context
    ],
};

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_START_GROUP: u8 = 3;
const WIRE_END_GROUP: u8 = 4;
const WIRE_FIXED32: u8 = 5;
const MAX_FIELD: u64 = (1 << 29) - 1;

/// Checks `bytes` as an `eraftpb.Message` without parsing it.
pub fn check_message(bytes: &[u8]) -> Result<(), WireError> {
    check(&MESSAGE, bytes, 1)
}

/// Checks `bytes` as an `eraftpb.Entry` without parsing it.
pub fn check_entry(bytes: &[u8]) -> Result<(), WireError> {
    check(&ENTRY, bytes, 1)
}

/// Checks `bytes` as an `eraftpb.ConfChange` without parsing it.
pub fn check_conf_change(bytes: &[u8]) -> Result<(), WireError> {
    check(&CONF_CHANGE, bytes, 1)
}

/// Checks `bytes` as an `eraftpb.ConfChangeV2` without parsing it.
pub fn check_conf_change_v2(bytes: &[u8]) -> Result<(), WireError> {
    check(&CONF_CHANGE_V2, bytes, 1)
}

/// A raft message another member sent: checked, then parsed.
pub fn parse_message(bytes: &[u8]) -> Result<Message, WireError> {
    check_message(bytes)?;
    Message::parse_from_bytes(bytes).map_err(|e| protobuf_error(&MESSAGE, e))
}

/// A raft entry (from a peer, or read back from the WAL): checked, then parsed.
pub fn parse_entry(bytes: &[u8]) -> Result<Entry, WireError> {
    check_entry(bytes)?;
    Entry::parse_from_bytes(bytes).map_err(|e| protobuf_error(&ENTRY, e))
}

/// The conf change a committed `EntryConfChange` carries: checked, then parsed.
pub fn parse_conf_change(bytes: &[u8]) -> Result<ConfChange, WireError> {
    check_conf_change(bytes)?;
    ConfChange::parse_from_bytes(bytes).map_err(|e| protobuf_error(&CONF_CHANGE, e))
}

/// The conf change a committed `EntryConfChangeV2` carries: checked, then parsed.
pub fn parse_conf_change_v2(bytes: &[u8]) -> Result<ConfChangeV2, WireError> {
    check_conf_change_v2(bytes)?;
    ConfChangeV2::parse_from_bytes(bytes).map_err(|e| protobuf_error(&CONF_CHANGE_V2, e))
}

fn protobuf_error(schema: &Schema, e: protobuf::ProtobufError) -> WireError {
    WireError::Protobuf {
        message: schema.name,
        reason: e.to_string(),
    }
}

/// Walks one message of type `schema` that fills `bytes` exactly.
fn check(schema: &'static Schema, bytes: &[u8], depth: usize) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::TooDeep {
            message: schema.name,
        });
    }
    let message = schema.name;
    let mut pos = 0;
    while pos < bytes.len() {
        let at = pos;
        let tag = read_varint(bytes, &mut pos, message)?;
        let field = tag >> 3;
        let wire_type = (tag & 7) as u8;
        match wire_type {
            WIRE_START_GROUP | WIRE_END_GROUP => {
                return Err(WireError::Group {
                    message,
                    field,
                    wire_type,
                    at,
                })
            }
            6 | 7 => {
                return Err(WireError::InvalidWireType {
                    message,
                    wire_type,
                    at,
                })
            }
            _ => {}
        }
        if field == 0 || field > MAX_FIELD {
            return Err(WireError::BadFieldNumber { message, field, at });
        }
        let wrong = || WireError::WrongWireType {
            message,
            field,
            wire_type,
            at,
        };
        match (schema.kind(field), wire_type) {
            (Some(Kind::Varint | Kind::RepeatedVarint) | None, WIRE_VARINT) => {
                read_varint(bytes, &mut pos, message)?;
            }
            (Some(Kind::Bytes) | None, WIRE_LEN) => {
                read_len(bytes, &mut pos, message)?;
            }
            (Some(Kind::RepeatedVarint), WIRE_LEN) => {
                let packed = read_len(bytes, &mut pos, message)?;
                let mut inner = 0;
                while inner < packed.len() {
                    read_varint(packed, &mut inner, message)?;
                }
            }
            (Some(Kind::Message(sub)), WIRE_LEN) => {
                let body = read_len(bytes, &mut pos, message)?;
                check(sub, body, depth + 1)?;
            }
            (None, WIRE_FIXED64) => skip(bytes, &mut pos, 8, message)?,
            (None, WIRE_FIXED32) => skip(bytes, &mut pos, 4, message)?,
            _ => return Err(wrong()),
        }
    }
    Ok(())
}

/// Reads a base-128 varint of at most ten bytes that fits 64 bits.
fn read_varint(bytes: &[u8], pos: &mut usize, message: &'static str) -> Result<u64, WireError> {
    let start = *pos;
    let mut value = 0u64;
    for i in 0..10 {
        let Some(&byte) = bytes.get(*pos) else {
            return Err(WireError::Truncated { message, at: *pos });
        };
        *pos += 1;
        // The tenth byte holds bit 63 only.
        if i == 9 && byte > 1 {
            return Err(WireError::VarintOverflow { message, at: start });
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::VarintOverflow { message, at: start })
}

/// Reads a length prefix and returns the bytes it covers.
fn read_len<'a>(
    bytes: &'a [u8],
    pos: &mut usize,
    message: &'static str,
) -> Result<&'a [u8], WireError> {
    let len = read_varint(bytes, pos, message)?;
    let start = *pos;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| start.checked_add(len))
        .filter(|end| *end <= bytes.len())
        .ok_or(WireError::Truncated { message, at: start })?;
    *pos = end;
    Ok(&bytes[start..end])
}

fn skip(bytes: &[u8], pos: &mut usize, n: usize, message: &'static str) -> Result<(), WireError> {
    if bytes.len() - *pos < n {
        return Err(WireError::Truncated { message, at: *pos });
    }
    *pos += n;
    Ok(())
}

#[cfg(test)]
mod tests;

//! `cairnpb.InternalRequest` (the payload of every normal raft entry, proposed by any
//! member) and `MemberChange` (a conf change's context) as prost decodes them: decoding
//! never panics, and what decodes re-encodes to the same message.
#![no_main]

use cairn_proto::cairnpb::{InternalRequest, MemberChange};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(msg) = M::decode(data) {
        let again =
            M::decode(msg.encode_to_vec().as_slice()).expect("a re-encoded message decodes");
        assert_eq!(again, msg);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<InternalRequest>(data);
    round_trip::<MemberChange>(data);
});

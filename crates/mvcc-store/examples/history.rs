//! The MVCC store on its own, as a reuser would drive it: puts, a compare-and-swap
//! transaction, reads of the past, the history a watcher replays, and a compaction.
//! Every write names the raft index it applies (here simply 1, 2, 3...), which the store
//! commits with it so that a replay after a crash applies each entry once.
//!
//! ```text
//! cargo run -p cairn-mvcc-store --example history
//! ```

use bytes::Bytes;
use cairn_mvcc_store::{validate_put, validate_txn, Backend, BackendBatch, KvStore, MvccError};
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use cairn_proto::mvccpb::event::EventType;

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
        ..Default::default()
    }
}

fn get(store: &KvStore, key: &str, revision: i64) -> Result<Option<String>, MvccError> {
    let response = store.range(&RangeRequest {
        key: Bytes::from(key.to_owned()),
        revision,
        ..Default::default()
    })?;
    Ok(response
        .kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = KvStore::open(Backend::open(dir.path())?)?;
    let mut index = 0;
    let mut next_index = || {
        index += 1;
        index
    };

    // Revisions 2 and 3: two versions of one key.
    for value in ["v1", "v2"] {
        let request = put("config/mode", value);
        validate_put(&request)?;
        store.put(next_index(), &request, BackendBatch::new())?;
    }

    // Revision 4: a compare-and-swap, as a lock or a leader election would use it:
    // only if config/mode is still at version 2, set it and delete config/old.
    let swap = TxnRequest {
        compare: vec![Compare {
            key: Bytes::from_static(b"config/mode"),
            result: CompareResult::Equal as i32,
            target: CompareTarget::Version as i32,
            target_union: Some(TargetUnion::Version(2)),
            ..Default::default()
        }],
        success: vec![
            RequestOp {
                request: Some(Request::RequestPut(put("config/mode", "v3"))),
            },
            RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: Bytes::from_static(b"config/old"),
                    ..Default::default()
                })),
            },
        ],
        failure: Vec::new(),
    };
    validate_txn(&swap, cairn_mvcc_store::DEFAULT_MAX_TXN_OPS)?;
    let outcome = store.txn(next_index(), &swap, BackendBatch::new())?;
    println!(
        "txn succeeded: {}, store at revision {}",
        outcome.response.succeeded, outcome.revision
    );

    // Every version stays readable until a compaction.
    for revision in [2, 3, 4] {
        println!(
            "config/mode at revision {revision}: {:?}",
            get(&store, "config/mode", revision)?
        );
    }

    // What a watcher created at revision 2 on the prefix config/ replays.
    let from_rev = 2;
    let events = store.events_between(
        from_rev,
        store.current_revision(),
        &Bytes::from_static(b"config/"),
        &Bytes::from_static(b"config0"),
        0,
    )?;
    for event in &events {
        let kv = event.kv.as_ref().ok_or("an event without its key-value")?;
        let kind = if event.r#type == EventType::Delete as i32 {
            "DELETE"
        } else {
            "PUT"
        };
        println!(
            "  revision {}: {kind} {} = {}",
            kv.mod_revision,
            String::from_utf8_lossy(&kv.key),
            String::from_utf8_lossy(&kv.value)
        );
    }

    // Compact: revisions below 4 are gone; reading them is etcd's compacted error.
    store.compact(
        next_index(),
        &CompactionRequest {
            revision: 4,
            physical: true,
        },
    )?;
    assert_eq!(get(&store, "config/mode", 3), Err(MvccError::Compacted));
    println!(
        "after compacting at 4: {:?}, current {:?}, hash {:08x}",
        get(&store, "config/mode", 3).err().map(|e| e.to_string()),
        get(&store, "config/mode", 0)?,
        store.hash_kv(0)?.hash
    );
    println!("applied raft index: {}", store.applied_index());
    Ok(())
}

//! Lease entries applied to the [`Lessor`] and the key space: a grant's record and a
//! revoke's deleted keys go into the batch of the entry's index; every applied revision
//! keeps the lessor's attached keys in step.
//!
//! Each function answers `Ok(Err(..))` for a client error (nothing changed but the
//! applied index) and `Err(..)` for the member's own fault, which stops it.

use cairn_grpc_gateway::EtcdError;
use cairn_lease_manager::{LeaseError, Lessor};
use cairn_mvcc_store::{BackendBatch, KvStore, MvccError, WriteOutcome};
use cairn_proto::etcdserverpb::{
    request_op, DeleteRangeRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    RequestOp, ResponseHeader, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::{event::EventType, Event};

use crate::client_error;
use crate::metrics;

/// A lessor error while applying an entry: the member's own fault stops it (as a store
/// fault does); anything else is the client's answer.
fn lease_error(e: LeaseError) -> Result<EtcdError, MvccError> {
    match e {
        LeaseError::Backend(e) => Err(e),
        LeaseError::Corrupt(what) => Err(MvccError::Corrupt(what)),
        e @ (LeaseError::NotFound
        | LeaseError::Exists
        | LeaseError::TtlTooLarge
        | LeaseError::NotPrimary) => Ok(client_error::lease(&e)),
    }
}

/// Applies a LeaseGrant entry: the lease record joins the applied index's batch.
pub(crate) fn apply_grant(
    store: &KvStore,
    lessor: &Lessor,
    index: u64,
    req: &LeaseGrantRequest,
) -> Result<Result<LeaseGrantResponse, EtcdError>, MvccError> {
    let mut batch = BackendBatch::new();
    match lessor.grant(req.id, req.ttl, &mut batch) {
        Ok(ttl) => {
            store.record_applied_with(index, batch)?;
            metrics::lease_granted(ttl);
            Ok(Ok(LeaseGrantResponse {
                header: Some(ResponseHeader {
                    revision: store.current_revision(),
                    ..Default::default()
                }),
                id: req.id,
                ttl,
                error: String::new(),
            }))
        }
        Err(e) => {
            let e = lease_error(e)?;
            store.record_applied(index)?;
            Ok(Err(e))
        }
    }
}

/// Applies a LeaseRevoke entry: every attached key is deleted in one revision, in the
/// same batch as the lease record's deletion.
pub(crate) fn apply_revoke(
    store: &KvStore,
    lessor: &Lessor,
    index: u64,
    req: &LeaseRevokeRequest,
) -> Result<Result<WriteOutcome<TxnResponse>, EtcdError>, MvccError> {
    let mut batch = BackendBatch::new();
    let keys = match lessor.revoke(req.id, &mut batch) {
        Ok(keys) => keys,
        Err(e) => {
            let e = lease_error(e)?;
            store.record_applied(index)?;
            return Ok(Err(e));
        }
    };
    let deletes = TxnRequest {
        success: keys
            .into_iter()
            .map(|key| RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key,
                        ..Default::default()
                    },
                )),
            })
            .collect(),
        ..Default::default()
    };
    let outcome = store.txn(index, &deletes, batch)?;
    metrics::lease_revoked();
    Ok(Ok(outcome))
}

/// Keeps the lessor's attached keys in step with one applied revision's events.
pub(crate) fn track_attachments(lessor: &Lessor, events: &[Event]) {
    for event in events {
        if let Some(prev) = &event.prev_kv {
            if prev.lease != 0 {
                lessor.detach(prev.lease, &prev.key);
            }
        }
        if event.r#type == EventType::Put as i32 {
            if let Some(kv) = &event.kv {
                if kv.lease != 0 {
                    lessor.attach(kv.lease, kv.key.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_lease_manager::ManualClock;
    use cairn_proto::mvccpb::KeyValue;
    use std::sync::Arc;

    fn kv(key: &str, lease: i64) -> KeyValue {
        KeyValue {
            key: bytes::Bytes::from(key.to_owned()),
            lease,
            ..Default::default()
        }
    }

    fn event(kind: EventType, kv: KeyValue, prev: Option<KeyValue>) -> Event {
        Event {
            r#type: kind as i32,
            kv: Some(kv),
            prev_kv: prev,
        }
    }

    fn keys(lessor: &Lessor, id: i64) -> Vec<bytes::Bytes> {
        lessor.time_to_live(id, true).expect("lease").keys
    }

    #[test]
    fn puts_attach_and_overwrites_and_deletes_detach() {
        let lessor = Lessor::new(2, Arc::new(ManualClock::new()));
        let mut batch = BackendBatch::new();
        lessor.grant(1, 10, &mut batch).unwrap();
        lessor.grant(2, 10, &mut batch).unwrap();
        track_attachments(
            &lessor,
            &[
                event(EventType::Put, kv("a", 1), None),
                event(EventType::Put, kv("b", 1), None),
            ],
        );
        assert_eq!(keys(&lessor, 1), vec!["a", "b"]);
        // "a" moves to lease 2; "b" is overwritten without a lease; then "a" is deleted.
        track_attachments(
            &lessor,
            &[event(EventType::Put, kv("a", 2), Some(kv("a", 1)))],
        );
        track_attachments(
            &lessor,
            &[event(EventType::Put, kv("b", 0), Some(kv("b", 1)))],
        );
        assert!(keys(&lessor, 1).is_empty());
        assert_eq!(keys(&lessor, 2), vec!["a"]);
        track_attachments(
            &lessor,
            &[event(EventType::Delete, kv("a", 0), Some(kv("a", 2)))],
        );
        assert!(keys(&lessor, 2).is_empty());
    }
}

//! etcd's Lock (`v3lockpb.Lock`) and Election (`v3electionpb.Election`) services: the
//! client-side recipes of etcd's `concurrency` package, run on the server over the
//! [`KvApi`] and [`WatchApi`] it already serves.
//!
//! Both are queues of keys under a prefix, one key per lease (`<name>/<lease in hex>`):
//! the key with the lowest create revision holds the lock or leads; the others wait for
//! the deletion of every key created before theirs. A lease that expires deletes its key,
//! so ownership ends with the client's liveness.

mod election;
mod lock;

use std::sync::Arc;

use bytes::Bytes;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest, WatchCreateRequest, WatchRequest,
};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::KeyValue;
use futures::StreamExt;

use crate::api::{KvApi, WatchApi};
use crate::error::EtcdError;
use crate::metrics::{self, RpcType};

/// The Lock and Election services over a server's KV and Watch.
#[derive(Clone)]
pub struct Recipes {
    kv: Arc<dyn KvApi>,
    watch: Arc<dyn WatchApi>,
}

impl Recipes {
    /// The services over `kv` and `watch`.
    pub fn new(kv: Arc<dyn KvApi>, watch: Arc<dyn WatchApi>) -> Self {
        Recipes { kv, watch }
    }

    /// The key-value of `prefix` created first (`first`) or last before
    /// `max_create_revision` (`!first`), with the read's header.
    async fn by_create_revision(
        &self,
        prefix: &Bytes,
        first: bool,
        max_create_revision: i64,
    ) -> Result<(ResponseHeader, Option<KeyValue>), EtcdError> {
        let resp: RangeResponse = self
            .kv
            .range(RangeRequest {
                key: prefix.clone(),
                range_end: prefix_end(prefix),
                limit: 1,
                sort_order: if first {
                    SortOrder::Ascend
                } else {
                    SortOrder::Descend
                } as i32,
                sort_target: SortTarget::Create as i32,
                max_create_revision,
                ..Default::default()
            })
            .await?;
        Ok((resp.header.unwrap_or_default(), resp.kvs.into_iter().next()))
    }

    /// Waits until no key of `prefix` created at or before `max_create_revision` is left
    /// (etcd's `waitDeletes`); the header of the read that found none.
    async fn wait_deletes(
        &self,
        prefix: &Bytes,
        max_create_revision: i64,
    ) -> Result<ResponseHeader, EtcdError> {
        loop {
            let (header, last) = self
                .by_create_revision(prefix, false, max_create_revision)
                .await?;
            let Some(kv) = last else { return Ok(header) };
            self.wait_delete(&kv.key, header.revision).await?;
        }
    }

    /// Waits for the deletion of `key`, watching from `revision`.
    async fn wait_delete(&self, key: &Bytes, revision: i64) -> Result<(), EtcdError> {
        let mut events = self
            .watch_from(key.clone(), Bytes::new(), revision + 1)
            .await?;
        while let Some(kv_event) = events.next().await {
            if kv_event.0 == EventType::Delete {
                return Ok(());
            }
        }
        Err(EtcdError::Internal("watch ended while waiting".into()))
    }

    /// The events of `[key, range_end)` from `start_revision`, as (type, key-value).
    async fn watch_from(
        &self,
        key: Bytes,
        range_end: Bytes,
        start_revision: i64,
    ) -> Result<impl futures::Stream<Item = (EventType, KeyValue)> + Send + 'static, EtcdError>
    {
        let (mut session, responses) = self.watch.open_stream();
        session
            .handle(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key,
                    range_end,
                    start_revision,
                    ..Default::default()
                })),
            })
            .await;
        // The session lives as long as the stream: dropping it ends the watcher.
        let events = responses
            .map(move |resp| {
                let _keep = &session;
                resp
            })
            .take_while(|resp| futures::future::ready(!resp.canceled))
            .flat_map(|resp| {
                futures::stream::iter(resp.events.into_iter().map(|ev| {
                    let kind = EventType::try_from(ev.r#type).unwrap_or(EventType::Put);
                    (kind, ev.kv.unwrap_or_default())
                }))
            });
        Ok(events)
    }

    /// Waits until `key`, created at `revision` in the queue `prefix`, is first: every
    /// key created before it is gone. If the request goes away meanwhile, the key is
    /// deleted; if the key's lease expired meanwhile, the turn never came
    /// ([`EtcdError::SessionExpired`]).
    async fn wait_turn(
        &self,
        prefix: &Bytes,
        key: &Bytes,
        revision: i64,
    ) -> Result<ResponseHeader, EtcdError> {
        let abandon = Abandon::new(self, key.clone());
        let header = self.wait_deletes(prefix, revision - 1).await?;
        let still = self.get(key).await?;
        abandon.keep();
        match still {
            Some(_) => Ok(header),
            None => Err(EtcdError::SessionExpired),
        }
    }

    /// Puts `key` (with `value` and `lease`) at the end of its queue unless this lease
    /// has it already: the key's create revision and, when it was there before, its
    /// key-value.
    async fn join_queue(
        &self,
        key: &Bytes,
        value: Bytes,
        lease: i64,
    ) -> Result<(i64, Option<KeyValue>), EtcdError> {
        let txn = self
            .kv
            .txn(TxnRequest {
                compare: vec![created_at(key, 0)],
                success: vec![RequestOp {
                    request: Some(Op::RequestPut(PutRequest {
                        key: key.clone(),
                        value,
                        lease,
                        ..Default::default()
                    })),
                }],
                failure: vec![RequestOp {
                    request: Some(Op::RequestRange(RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    })),
                }],
            })
            .await?;
        if txn.succeeded {
            return Ok((txn.header.map_or(0, |h| h.revision), None));
        }
        let existing = match txn.responses.into_iter().next().and_then(|r| r.response) {
            Some(OpResponse::ResponseRange(range)) => range.kvs.into_iter().next(),
            _ => None,
        };
        Ok((
            existing.as_ref().map_or(0, |kv| kv.create_revision),
            existing,
        ))
    }

    /// The key-value of `key`, if it exists.
    async fn get(&self, key: &Bytes) -> Result<Option<KeyValue>, EtcdError> {
        let resp = self
            .kv
            .range(RangeRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// Deletes `key` (giving up a lock or a candidacy).
    async fn delete(&self, key: Bytes) -> Result<ResponseHeader, EtcdError> {
        let resp = self
            .kv
            .delete_range(DeleteRangeRequest {
                key,
                ..Default::default()
            })
            .await?;
        Ok(resp.header.unwrap_or_default())
    }
}

/// One unary call of a recipe service, with the gRPC metrics.
async fn unary<T>(
    service: &'static str,
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, EtcdError>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    metrics::started(RpcType::Unary, service, method);
    let result = call.await;
    let code = result
        .as_ref()
        .map_or_else(EtcdError::code, |_| tonic::Code::Ok);
    metrics::handled(RpcType::Unary, service, method, code);
    result.map(tonic::Response::new).map_err(|e| match e {
        // etcd's recipes pass this one on as a plain error: code Unknown.
        EtcdError::LeaseNotFound => tonic::Status::unknown(e.to_string()),
        e => tonic::Status::from(e),
    })
}

/// `name/<lease in hex>`, the key a lease holds in a queue.
fn queue_key(prefix: &Bytes, lease: i64) -> Bytes {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key.into()
}

/// The queue's prefix: `name/`.
fn queue_prefix(name: &[u8]) -> Bytes {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix.into()
}

/// The end of the range of keys starting with `prefix` (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end.into();
        }
    }
    // Every byte is 0xff: to the end of the key space.
    Bytes::from_static(&[0])
}

/// `create_revision(key) == revision`.
fn created_at(key: &Bytes, revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
        ..Default::default()
    }
}

/// Deletes a queue key if the request that made it goes away before it returns (the
/// client cancelled while waiting), as etcd's recipes do.
struct Abandon {
    recipes: Option<Recipes>,
    key: Bytes,
}

impl Abandon {
    fn new(recipes: &Recipes, key: Bytes) -> Self {
        Abandon {
            recipes: Some(recipes.clone()),
            key,
        }
    }

    /// The wait succeeded: the key stays.
    fn keep(mut self) {
        self.recipes = None;
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(recipes) = self.recipes.take() {
            let key = self.key.clone();
            let credentials = crate::credentials::current();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let deleted = crate::credentials::scope(credentials, recipes.delete(key));
                    if let Err(e) = deleted.await {
                        tracing::warn!(error = %e, "could not delete an abandoned queue key");
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_prefixes_are_etcds() {
        let prefix = queue_prefix(b"my-lock");
        assert_eq!(&prefix[..], b"my-lock/");
        assert_eq!(
            &queue_key(&prefix, 0x694d7a6b1c3e0a05)[..],
            b"my-lock/694d7a6b1c3e0a05"
        );
        assert_eq!(&prefix_end(b"my-lock/")[..], b"my-lock0");
        assert_eq!(&prefix_end(&[b'a', 0xff])[..], b"b");
        assert_eq!(&prefix_end(&[0xff, 0xff])[..], &[0]);
    }
}

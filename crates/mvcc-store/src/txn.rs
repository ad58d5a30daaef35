//! One write request, computed before anything is written.
//!
//! A [`WriteTxn`] reads the index as of the last committed revision and keeps
//! its own changes in an overlay, so reads inside a txn see the txn's earlier
//! writes while the shared index stays untouched until the RocksDB batch is
//! committed. Every change of one request gets the same main revision and
//! increasing sub-revisions.
//!
//! The semantics follow etcd's `applierV3backend` (`Put`, `DeleteRange`,
//! `Range`, `Txn`, `applyCompare`/`compareKV`) and `storeTxnWrite`.

use std::collections::BTreeMap;
use std::iter::Peekable;

use bytes::Bytes;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::KeyValue;

use crate::backend::Backend;
use crate::error::MvccError;
use crate::key_index::{KeyRevision, TreeIndex};
use crate::key_range::KeyRange;
use crate::range;
use crate::revision::Revision;
use crate::stored::{load_kvs, Fields};

/// One change of a write request.
#[derive(Debug)]
pub(crate) struct Change {
    /// Where it goes in history.
    pub rev: Revision,
    /// The new key-value; for a deletion only the key and `mod_revision`
    /// (what a watcher gets).
    pub kv: KeyValue,
    /// Whether the change deletes the key.
    pub tombstone: bool,
    /// The key-value just before the change, if the key existed.
    pub prev: Option<KeyValue>,
}

/// Where a key-value of a read comes from.
enum Source {
    /// Committed, stored at this revision.
    Stored(Revision),
    /// Written earlier in this request.
    Pending(KeyValue),
}

/// The change set of one write request, over a read-only view of the index.
pub(crate) struct WriteTxn<'a> {
    backend: &'a Backend,
    tree: &'a TreeIndex,
    /// The revision committed before this request.
    begin_rev: i64,
    /// The compaction revision (-1 when none).
    compact_rev: i64,
    changes: Vec<Change>,
    /// Each key this request changed, with its new value (`None`: deleted).
    pending: BTreeMap<Bytes, Option<KeyValue>>,
}

impl<'a> WriteTxn<'a> {
    pub fn new(
        backend: &'a Backend,
        tree: &'a TreeIndex,
        begin_rev: i64,
        compact_rev: i64,
    ) -> Self {
        WriteTxn {
            backend,
            tree,
            begin_rev,
            compact_rev,
            changes: Vec::new(),
            pending: BTreeMap::new(),
        }
    }

    /// The changes, in order.
    pub fn into_changes(self) -> Vec<Change> {
        self.changes
    }

    /// The revision reads see now: the request's own once it changed anything.
    fn read_rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.begin_rev
        } else {
            self.begin_rev + 1
        }
    }

    /// The revision of the next change.
    fn next_rev(&self) -> Revision {
        Revision::new(self.begin_rev + 1, self.changes.len() as i64)
    }

    fn header(revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision,
            ..Default::default()
        })
    }

    /// The key-values of `keys` at `at_rev` in key order, at most `fetch_limit`
    /// of them (0: all; none if `count_only`), and how many keys there are.
    fn read(
        &self,
        keys: &KeyRange,
        at_rev: i64,
        fetch_limit: usize,
        count_only: bool,
    ) -> Result<(Vec<KeyValue>, i64), MvccError> {
        let wanted = |count: usize| !count_only && (fetch_limit == 0 || count < fetch_limit);
        let mut sources = Vec::new();
        let mut count = 0usize;
        if at_rev == self.begin_rev + 1 && !self.changes.is_empty() {
            let base = self.tree.range(keys, self.begin_rev);
            let pending = self.pending.range::<[u8], _>(keys.bounds());
            for source in merge(base.peekable(), pending.peekable()) {
                if wanted(count) {
                    sources.push(source);
                }
                count += 1;
            }
        } else {
            for (_, at) in self.tree.range(keys, at_rev) {
                if wanted(count) {
                    sources.push(Source::Stored(at.modified));
                }
                count += 1;
            }
        }
        let stored: Vec<Revision> = sources
            .iter()
            .filter_map(|s| match s {
                Source::Stored(rev) => Some(*rev),
                Source::Pending(_) => None,
            })
            .collect();
        let mut loaded = load_kvs(self.backend, None, &stored, Fields::All)?.into_iter();
        let kvs = sources
            .into_iter()
            .map(|s| match s {
                Source::Stored(_) => loaded
                    .next()
                    .ok_or_else(|| MvccError::Corrupt("short read".into())),
                Source::Pending(kv) => Ok(kv),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((kvs, count as i64))
    }

    /// The key-value of `key` as this request sees it now.
    fn get(&self, key: &Bytes) -> Result<Option<KeyValue>, MvccError> {
        if let Some(pending) = self.pending.get(key) {
            return Ok(pending.clone());
        }
        match self.tree.get(key, self.begin_rev) {
            Some(at) => Ok(load_kvs(self.backend, None, &[at.modified], Fields::All)?.pop()),
            None => Ok(None),
        }
    }

    /// etcd's Range inside a write: `revision` 0 reads this request's own
    /// writes.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        crate::metrics::count(crate::metrics::Op::Range);
        let plan = range::plan(req)?;
        let current = self.read_rev();
        let rev = range::resolve_revision(req.revision, current, self.compact_rev)?;
        let (kvs, count) = self.read(&plan.keys, rev, plan.fetch_limit, plan.count_only)?;
        range::finish(req, kvs, count, current)
    }

    /// etcd's Put.
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, MvccError> {
        crate::metrics::count(crate::metrics::Op::Put);
        let prev = self.get(&req.key)?;
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        let rev = self.next_rev();
        let kv = KeyValue {
            key: req.key.clone(),
            value: match (&prev, req.ignore_value) {
                (Some(prev), true) => prev.value.clone(),
                _ => req.value.clone(),
            },
            lease: match (&prev, req.ignore_lease) {
                (Some(prev), true) => prev.lease,
                _ => req.lease,
            },
            create_revision: prev.as_ref().map_or(rev.main, |p| p.create_revision),
            mod_revision: rev.main,
            version: prev.as_ref().map_or(0, |p| p.version) + 1,
        };
        self.pending.insert(req.key.clone(), Some(kv.clone()));
        let response = PutResponse {
            header: Self::header(rev.main),
            prev_kv: if req.prev_kv { prev.clone() } else { None },
        };
        self.changes.push(Change {
            rev,
            kv,
            tombstone: false,
            prev,
        });
        Ok(response)
    }

    /// etcd's DeleteRange. Deleting nothing changes nothing.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        crate::metrics::count(crate::metrics::Op::Delete);
        let keys = KeyRange::new(&req.key, &req.range_end);
        let (existing, _) = self.read(&keys, self.read_rev(), 0, false)?;
        let deleted = existing.len() as i64;
        for prev in &existing {
            let rev = self.next_rev();
            self.pending.insert(prev.key.clone(), None);
            self.changes.push(Change {
                rev,
                kv: KeyValue {
                    key: prev.key.clone(),
                    mod_revision: rev.main,
                    ..Default::default()
                },
                tombstone: true,
                prev: Some(prev.clone()),
            });
        }
        Ok(DeleteRangeResponse {
            header: Self::header(self.read_rev()),
            deleted,
            prev_kvs: if req.prev_kv { existing } else { Vec::new() },
        })
    }

    /// etcd's Txn: every compare of the whole tree (nested txns included) is
    /// evaluated first against the state before the txn, then the chosen
    /// branches are checked and applied in order.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        crate::metrics::count(crate::metrics::Op::Txn);
        let mut path = Vec::new();
        self.decide(req, &mut path)?;
        self.check(req, &path, &mut 0, &mut |txn, op| txn.check_put(op))?;
        self.check(req, &path, &mut 0, &mut |txn, op| txn.check_range(op))?;
        let mut response = self.apply(req, &path, &mut 0)?;
        response.header = Self::header(self.read_rev());
        Ok(response)
    }

    /// Appends, in preorder, whether each txn of the chosen path succeeds.
    fn decide(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<(), MvccError> {
        let mut succeeded = true;
        for compare in &req.compare {
            if !self.compare(compare)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        for op in branch(req, succeeded) {
            if let Some(Request::RequestTxn(nested)) = &op.request {
                self.decide(nested, path)?;
            }
        }
        Ok(())
    }

    /// Runs `check` on every non-txn op of the chosen path.
    fn check(
        &self,
        req: &TxnRequest,
        path: &[bool],
        at: &mut usize,
        check: &mut impl FnMut(&Self, &RequestOp) -> Result<(), MvccError>,
    ) -> Result<(), MvccError> {
        let succeeded = path[*at];
        *at += 1;
        for op in branch(req, succeeded) {
            match &op.request {
                Some(Request::RequestTxn(nested)) => self.check(nested, path, at, check)?,
                _ => check(self, op)?,
            }
        }
        Ok(())
    }

    /// etcd's checkPut: `ignore_value`/`ignore_lease` need the key to exist
    /// before the txn. (Whether the lease exists is the caller's check.)
    fn check_put(&self, op: &RequestOp) -> Result<(), MvccError> {
        if let Some(Request::RequestPut(put)) = &op.request {
            if (put.ignore_value || put.ignore_lease) && self.get(&put.key)?.is_none() {
                return Err(MvccError::KeyNotFound);
            }
        }
        Ok(())
    }

    /// etcd's checkRange: an explicit revision must lie between the compaction
    /// and the revision before the txn.
    fn check_range(&self, op: &RequestOp) -> Result<(), MvccError> {
        if let Some(Request::RequestRange(range)) = &op.request {
            if range.revision == 0 {
                return Ok(());
            }
            if range.revision > self.begin_rev {
                return Err(MvccError::FutureRevision);
            }
            if range.revision < self.compact_rev {
                return Err(MvccError::Compacted);
            }
        }
        Ok(())
    }

    fn apply(
        &mut self,
        req: &TxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> Result<TxnResponse, MvccError> {
        let succeeded = path[*at];
        *at += 1;
        let mut responses = Vec::new();
        for op in branch(req, succeeded) {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => Some(Response::ResponseRange(self.range(r)?)),
                Some(Request::RequestPut(r)) => Some(Response::ResponsePut(self.put(r)?)),
                Some(Request::RequestDeleteRange(r)) => {
                    Some(Response::ResponseDeleteRange(self.delete_range(r)?))
                }
                Some(Request::RequestTxn(r)) => {
                    Some(Response::ResponseTxn(self.apply(r, path, at)?))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        // A nested txn's header stays empty, as in etcd; the caller fills the
        // outermost one.
        Ok(TxnResponse {
            header: Some(ResponseHeader::default()),
            succeeded,
            responses,
        })
    }

    /// etcd's applyCompare: every key of the range must satisfy the compare;
    /// no key at all compares a zero key-value, except that a VALUE compare
    /// then fails.
    fn compare(&self, compare: &Compare) -> Result<bool, MvccError> {
        let keys = KeyRange::new(&compare.key, &compare.range_end);
        let (kvs, _) = self.read(&keys, self.read_rev(), 0, false)?;
        if kvs.is_empty() {
            if compare.target == CompareTarget::Value as i32 {
                return Ok(false);
            }
            return Ok(compare_kv(compare, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(compare, kv)))
    }
}

/// The ops a txn runs when its compares come out `succeeded`.
fn branch(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

/// etcd's compareKV. A target union of another kind than the target compares
/// against zero (or the empty value); an unknown target compares equal; an
/// unknown result holds.
fn compare_kv(compare: &Compare, kv: &KeyValue) -> bool {
    let number = |pick: fn(&TargetUnion) -> Option<i64>| {
        compare.target_union.as_ref().and_then(pick).unwrap_or(0)
    };
    let ordering = match CompareTarget::try_from(compare.target) {
        Ok(CompareTarget::Value) => {
            let value = match &compare.target_union {
                Some(TargetUnion::Value(v)) => v.as_ref(),
                _ => &[],
            };
            kv.value.as_ref().cmp(value)
        }
        Ok(CompareTarget::Version) => kv.version.cmp(&number(|u| match u {
            TargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&number(|u| match u {
            TargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&number(|u| match u {
            TargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&number(|u| match u {
            TargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
        Err(_) => std::cmp::Ordering::Equal,
    };
    match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => ordering.is_eq(),
        Ok(CompareResult::NotEqual) => ordering.is_ne(),
        Ok(CompareResult::Greater) => ordering.is_gt(),
        Ok(CompareResult::Less) => ordering.is_lt(),
        Err(_) => true,
    }
}

/// Merges the committed keys of a range with this request's changes, in key
/// order; a pending change wins over the committed key, a pending deletion
/// hides it.
fn merge<'b, 'p, B, P>(base: Peekable<B>, pending: Peekable<P>) -> impl Iterator<Item = Source>
where
    B: Iterator<Item = (&'b Bytes, KeyRevision)>,
    P: Iterator<Item = (&'p Bytes, &'p Option<KeyValue>)>,
{
    let mut base = base;
    let mut pending = pending;
    std::iter::from_fn(move || loop {
        let take_pending = match (base.peek(), pending.peek()) {
            (None, None) => return None,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some((b, _)), Some((p, _))) => {
                if b == p {
                    base.next();
                    true
                } else {
                    p < b
                }
            }
        };
        if take_pending {
            let (_, change) = pending.next()?;
            if let Some(kv) = change {
                return Some(Source::Pending(kv.clone()));
            }
        } else {
            let (_, at) = base.next()?;
            return Some(Source::Stored(at.modified));
        }
    })
}

#[cfg(test)]
mod tests;

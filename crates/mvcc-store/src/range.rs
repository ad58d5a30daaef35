//! What etcd does to a range's keys after reading them: revision filters,
//! sorting, limit, `keys_only` (etcd's `applierV3backend.Range`).
//!
//! The read itself (which keys, at which revision) belongs to the caller: the
//! store for a plain range, the write txn for a range inside a txn.

use std::cmp::Ordering;

use bytes::Bytes;
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use cairn_proto::mvccpb::KeyValue;

use crate::error::MvccError;
use crate::key_range::KeyRange;
use crate::stored::Fields;

/// How to read the keys of one range request.
#[derive(Debug)]
pub(crate) struct RangePlan {
    /// The keys asked for.
    pub keys: KeyRange,
    /// How many key-values to read at most, in key order (0: all). Reading one
    /// more than the limit tells whether there are more.
    pub fetch_limit: usize,
    /// Only the number of keys is wanted, no key-value.
    pub count_only: bool,
}

/// The sort a request asks for, checked.
fn sort_of(req: &RangeRequest) -> Result<(SortOrder, SortTarget), MvccError> {
    let order = SortOrder::try_from(req.sort_order).map_err(|_| MvccError::InvalidSortOption)?;
    let target = SortTarget::try_from(req.sort_target).map_err(|_| MvccError::InvalidSortOption)?;
    Ok((order, target))
}

/// Plans the read of `req`; refuses unknown sort options.
pub(crate) fn plan(req: &RangeRequest) -> Result<RangePlan, MvccError> {
    let (order, _) = sort_of(req)?;
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // Sorting or filtering needs every key before the limit can be applied.
    // A non-KEY target with order NONE does not count here: etcd reads
    // `limit + 1` keys in key order and sorts only those.
    let fetch_limit = if order != SortOrder::None || filtered || req.limit <= 0 {
        0
    } else {
        usize::try_from(req.limit)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    };
    Ok(RangePlan {
        keys: KeyRange::new(&req.key, &req.range_end),
        fetch_limit,
        count_only: req.count_only,
    })
}

/// The fields a plain range reads: no values for `keys_only`, unless it sorts by
/// them (etcd sorts first, then drops the values).
pub(crate) fn fields(req: &RangeRequest) -> Fields {
    if req.keys_only && req.sort_target != SortTarget::Value as i32 {
        Fields::WithoutValue
    } else {
        Fields::All
    }
}

/// Turns what was read into the response: `kvs` in key order as planned,
/// `count` the number of keys in the range, `revision` the header revision.
pub(crate) fn finish(
    req: &RangeRequest,
    mut kvs: Vec<KeyValue>,
    count: i64,
    revision: i64,
) -> Result<RangeResponse, MvccError> {
    let (mut order, target) = sort_of(req)?;
    if req.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= req.max_mod_revision);
    }
    if req.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= req.min_mod_revision);
    }
    if req.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= req.max_create_revision);
    }
    if req.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= req.min_create_revision);
    }
    // etcd: results come in key order, so only a non-KEY target with no
    // order gets an implicit ASCEND.
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    let compare = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    // Stable sorts: ties keep key order, as etcd's (insertion) sort does.
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(compare),
        SortOrder::Descend => kvs.sort_by(|a, b| compare(b, a)),
    }
    let mut more = false;
    if let Ok(limit) = usize::try_from(req.limit) {
        if limit > 0 && kvs.len() > limit {
            kvs.truncate(limit);
            more = true;
        }
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    Ok(RangeResponse {
        header: Some(ResponseHeader {
            revision,
            ..Default::default()
        }),
        kvs,
        more,
        count,
    })
}

/// The revision a read at `requested` reads, as etcd's `rangeKeys` decides:
/// `<= 0` is `current`; newer than `current` or older than the compaction
/// (`compacted`, -1 when none) fails.
pub(crate) fn resolve_revision(
    requested: i64,
    current: i64,
    compacted: i64,
) -> Result<i64, MvccError> {
    if requested > current {
        return Err(MvccError::FutureRevision);
    }
    let rev = if requested <= 0 { current } else { requested };
    if rev < compacted {
        return Err(MvccError::Compacted);
    }
    Ok(rev)
}

//! The checks etcd's gRPC layer makes before proposing a request (etcd's
//! `api/v3rpc/key.go`). Pure functions: a request they refuse never reaches
//! raft.

use std::collections::HashSet;

use bytes::Bytes;
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use crate::error::MvccError;

/// etcd's default for `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Checks a range: a key, and a known sort order and target.
pub fn validate_range(req: &RangeRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if SortOrder::try_from(req.sort_order).is_err()
        || SortTarget::try_from(req.sort_target).is_err()
    {
        return Err(MvccError::InvalidSortOption);
    }
    Ok(())
}

/// Checks a put: a key, no value with `ignore_value`, no lease with
/// `ignore_lease`.
pub fn validate_put(req: &PutRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

/// Checks a delete: a key.
pub fn validate_delete_range(req: &DeleteRangeRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// Checks a txn as etcd does:
///
/// - at most `max_txn_ops` compares, and at most that many ops in each
///   branch; a nested txn gets what its parent left (`max_txn_ops` minus the
///   parent's largest count) → [`MvccError::TooManyOps`];
/// - every compare and op has a key, every op is set (an empty op is
///   [`MvccError::KeyNotFound`]), every op passes its own check;
/// - within a branch (nested txns included) no key is put twice and no put
///   falls in a deleted range → [`MvccError::DuplicateKey`]. The two branches
///   of one nested txn may put the same key (only one runs). As in etcd, a
///   from-key delete (`range_end` `"\0"`) never conflicts, and a put in a
///   nested txn conflicts with deletes in earlier sibling txns but not later
///   ones.
pub fn validate_txn(req: &TxnRequest, max_txn_ops: usize) -> Result<(), MvccError> {
    check_txn(req, i64::try_from(max_txn_ops).unwrap_or(i64::MAX))?;
    // After the cheap checks, so that a huge txn is refused before the
    // quadratic one.
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

fn check_txn(req: &TxnRequest, max_txn_ops: i64) -> Result<(), MvccError> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len()) as i64;
    if ops > max_txn_ops {
        return Err(MvccError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        check_op(op, max_txn_ops - ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: i64) -> Result<(), MvccError> {
    match &op.request {
        Some(Request::RequestRange(r)) => validate_range(r),
        Some(Request::RequestPut(r)) => validate_put(r),
        Some(Request::RequestDeleteRange(r)) => validate_delete_range(r),
        Some(Request::RequestTxn(r)) => check_txn(r, max_txn_ops),
        None => Err(MvccError::KeyNotFound),
    }
}

/// A deleted interval `[start, end)`, compared bytewise.
struct Deleted {
    start: Bytes,
    end: Bytes,
}

fn any_deletes(deleted: &[Deleted], key: &[u8]) -> bool {
    deleted
        .iter()
        .any(|d| d.start.as_ref() <= key && key < d.end.as_ref())
}

/// etcd's checkIntervals: the keys put and the intervals deleted by `ops`,
/// or [`MvccError::DuplicateKey`] if they overlap.
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Bytes>, Vec<Deleted>), MvccError> {
    let mut deleted: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(if d.range_end.is_empty() {
                // A single key is the interval [key, key + "\0").
                let mut end = d.key.to_vec();
                end.push(0);
                Deleted {
                    start: d.key.clone(),
                    end: end.into(),
                }
            } else {
                // `range_end` "\0" gives [key, "\0"), which holds no key: etcd
                // does not see from-key deletes here.
                Deleted {
                    start: d.key.clone(),
                    end: d.range_end.clone(),
                }
            }),
            _ => None,
        })
        .collect();

    let mut puts: HashSet<Bytes> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let (puts_then, deleted_then) = check_intervals(&nested.success)?;
        let (puts_else, deleted_else) = check_intervals(&nested.failure)?;
        for key in &puts_then {
            if puts.contains(key) || any_deletes(&deleted, key) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in &puts_else {
            // The same key in both branches is fine: only one of them runs.
            if puts.contains(key) && !puts_then.contains(key) {
                return Err(MvccError::DuplicateKey);
            }
            if any_deletes(&deleted, key) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        deleted.extend(deleted_then);
        deleted.extend(deleted_else);
    }

    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else {
            continue;
        };
        if puts.contains(&put.key) || any_deletes(&deleted, &put.key) {
            return Err(MvccError::DuplicateKey);
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, deleted))
}

#[cfg(test)]
mod tests {
    use cairn_proto::etcdserverpb::Compare;

    use super::*;

    fn put(key: &'static str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.into(),
                value: "v".into(),
                ..Default::default()
            })),
        }
    }

    fn del(key: &'static str, range_end: &'static str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                ..Default::default()
            })),
        }
    }

    fn get(key: &'static str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: key.into(),
                ..Default::default()
            })),
        }
    }

    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    fn then(ops: Vec<RequestOp>) -> Result<(), MvccError> {
        validate_txn(
            &TxnRequest {
                compare: vec![],
                success: ops,
                failure: vec![],
            },
            DEFAULT_MAX_TXN_OPS,
        )
    }

    #[test]
    fn single_requests() {
        assert_eq!(
            validate_range(&RangeRequest::default()),
            Err(MvccError::EmptyKey)
        );
        let range = |order, target| RangeRequest {
            key: "a".into(),
            sort_order: order,
            sort_target: target,
            ..Default::default()
        };
        assert_eq!(validate_range(&range(2, 4)), Ok(()));
        assert_eq!(
            validate_range(&range(3, 0)),
            Err(MvccError::InvalidSortOption)
        );
        assert_eq!(
            validate_range(&range(0, 5)),
            Err(MvccError::InvalidSortOption)
        );

        let mut req = PutRequest::default();
        assert_eq!(validate_put(&req), Err(MvccError::EmptyKey));
        req.key = "a".into();
        assert_eq!(validate_put(&req), Ok(()));
        req.ignore_value = true;
        assert_eq!(validate_put(&req), Ok(()));
        req.value = "x".into();
        assert_eq!(validate_put(&req), Err(MvccError::ValueProvided));
        req.value = Bytes::new();
        req.ignore_lease = true;
        req.lease = 5;
        assert_eq!(validate_put(&req), Err(MvccError::LeaseProvided));

        assert_eq!(
            validate_delete_range(&DeleteRangeRequest::default()),
            Err(MvccError::EmptyKey)
        );
        assert_eq!(validate_delete_range(&del_req("a")), Ok(()));
    }

    fn del_req(key: &'static str) -> DeleteRangeRequest {
        DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        }
    }

    #[test]
    fn too_many_ops() {
        let txn = |compares: usize, success: Vec<RequestOp>, failure: Vec<RequestOp>| TxnRequest {
            compare: vec![
                Compare {
                    key: "a".into(),
                    ..Default::default()
                };
                compares
            ],
            success,
            failure,
        };
        let gets = |n| vec![get("a"); n];
        assert_eq!(validate_txn(&txn(0, gets(128), vec![]), 128), Ok(()));
        assert_eq!(
            validate_txn(&txn(0, gets(129), vec![]), 128),
            Err(MvccError::TooManyOps)
        );
        assert_eq!(
            validate_txn(&txn(0, vec![], gets(129)), 128),
            Err(MvccError::TooManyOps)
        );
        assert_eq!(
            validate_txn(&txn(129, vec![], vec![]), 128),
            Err(MvccError::TooManyOps)
        );
        // A nested txn may use what the parent's largest list leaves.
        let mut ops = gets(99);
        ops.push(nested(gets(28), vec![]));
        assert_eq!(validate_txn(&txn(0, ops, vec![]), 128), Ok(()));
        let mut ops = gets(99);
        ops.push(nested(gets(29), vec![]));
        assert_eq!(
            validate_txn(&txn(0, ops, vec![]), 128),
            Err(MvccError::TooManyOps)
        );
        assert_eq!(
            validate_txn(&txn(0, vec![get("a")], vec![]), 0),
            Err(MvccError::TooManyOps)
        );
    }

    #[test]
    fn empty_keys_and_empty_ops() {
        assert_eq!(then(vec![get("")]), Err(MvccError::EmptyKey));
        assert_eq!(then(vec![put("")]), Err(MvccError::EmptyKey));
        assert_eq!(then(vec![del("", "")]), Err(MvccError::EmptyKey));
        assert_eq!(
            then(vec![RequestOp { request: None }]),
            Err(MvccError::KeyNotFound)
        );
        assert_eq!(
            validate_txn(
                &TxnRequest {
                    compare: vec![Compare::default()],
                    success: vec![],
                    failure: vec![],
                },
                128
            ),
            Err(MvccError::EmptyKey)
        );
        // Nested checks apply too.
        assert_eq!(
            then(vec![nested(vec![], vec![get("")])]),
            Err(MvccError::EmptyKey)
        );
    }

    /// Each case was run against etcd 3.4.23; the expected outcome is what it
    /// answered.
    #[test]
    fn duplicate_keys_as_etcd_decides() {
        let dup = Err(MvccError::DuplicateKey);
        let cases: Vec<(&str, Vec<RequestOp>, Result<(), MvccError>)> = vec![
            ("put twice", vec![put("a"), put("a")], dup.clone()),
            ("put then delete", vec![put("a"), del("a", "")], dup.clone()),
            ("delete then put", vec![del("a", ""), put("a")], dup.clone()),
            (
                "put in deleted range",
                vec![del("a", "c"), put("b")],
                dup.clone(),
            ),
            ("put at range end", vec![del("a", "c"), put("c")], Ok(())),
            ("from-key delete", vec![del("a", "\0"), put("b")], Ok(())),
            ("delete all", vec![del("\0", "\0"), put("b")], Ok(())),
            (
                "overlapping deletes",
                vec![del("a", "c"), del("b", "")],
                Ok(()),
            ),
            ("range and put", vec![get("a"), put("a")], Ok(())),
            (
                "nested and outer put",
                vec![nested(vec![put("a")], vec![]), put("a")],
                dup.clone(),
            ),
            (
                "nested then and else",
                vec![nested(vec![put("a")], vec![put("a")])],
                Ok(()),
            ),
            (
                "nested put, outer delete",
                vec![nested(vec![put("a")], vec![]), del("a", "")],
                dup.clone(),
            ),
            (
                "nested delete, outer put",
                vec![nested(vec![del("a", "")], vec![]), put("a")],
                dup.clone(),
            ),
            (
                "nested put then, delete else",
                vec![nested(vec![put("a")], vec![del("a", "")])],
                Ok(()),
            ),
            (
                "two nested puts",
                vec![
                    nested(vec![put("a")], vec![]),
                    nested(vec![put("a")], vec![]),
                ],
                dup.clone(),
            ),
            (
                "nested delete before nested put",
                vec![
                    nested(vec![del("a", "")], vec![]),
                    nested(vec![put("a")], vec![]),
                ],
                dup.clone(),
            ),
            (
                "nested put before nested delete",
                vec![
                    nested(vec![put("a")], vec![]),
                    nested(vec![del("a", "")], vec![]),
                ],
                Ok(()),
            ),
            (
                "nested else put, outer put",
                vec![nested(vec![], vec![put("a")]), put("a")],
                dup.clone(),
            ),
            (
                "deeply nested put, outer put",
                vec![
                    nested(vec![nested(vec![put("a")], vec![])], vec![]),
                    put("a"),
                ],
                dup,
            ),
        ];
        for (name, ops, expected) in cases {
            assert_eq!(then(ops), expected, "{name}");
        }
        // The two top-level branches never conflict with each other.
        assert_eq!(
            validate_txn(
                &TxnRequest {
                    compare: vec![],
                    success: vec![put("a")],
                    failure: vec![put("a")],
                },
                128
            ),
            Ok(())
        );
    }
}

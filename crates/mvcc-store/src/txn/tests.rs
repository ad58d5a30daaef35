//! Txn semantics through the store. Where a test says "etcd answered", the
//! same txn was sent to etcd 3.4.23 and the expected values are its answers.

use bytes::Bytes;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::KeyValue;

use crate::test_util::*;
use crate::{BackendBatch, KvStore, MvccError, WriteOutcome};

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

fn txn(store: &KvStore, req: &TxnRequest) -> Result<WriteOutcome<TxnResponse>, MvccError> {
    store.txn(next_index(store), req, BackendBatch::new())
}

fn compare(key: &str, target: CompareTarget, result: CompareResult, union: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::new(),
        target_union: Some(union),
    }
}

fn when(compares: Vec<Compare>) -> TxnRequest {
    TxnRequest {
        compare: compares,
        success: vec![],
        failure: vec![],
    }
}

/// Whether a txn with these compares succeeds.
fn holds(store: &KvStore, compares: Vec<Compare>) -> bool {
    let outcome = txn(store, &when(compares)).unwrap();
    assert_eq!(outcome.events, vec![]);
    outcome.response.succeeded
}

fn range_response(revision: i64, kvs: Vec<KeyValue>) -> Option<Response> {
    let count = kvs.len() as i64;
    Some(Response::ResponseRange(RangeResponse {
        header: header(revision),
        kvs,
        more: false,
        count,
    }))
}

fn put_response(revision: i64, prev_kv: Option<KeyValue>) -> Option<Response> {
    Some(Response::ResponsePut(PutResponse {
        header: header(revision),
        prev_kv,
    }))
}

fn delete_response(revision: i64, deleted: i64, prev_kvs: Vec<KeyValue>) -> Option<Response> {
    Some(Response::ResponseDeleteRange(DeleteRangeResponse {
        header: header(revision),
        deleted,
        prev_kvs,
    }))
}

fn responses(list: Vec<Option<Response>>) -> Vec<ResponseOp> {
    list.into_iter()
        .map(|response| ResponseOp { response })
        .collect()
}

#[test]
fn nested_txn_reads_own_writes_as_etcd() {
    let (_dir, store) = new_store();
    put(&store, "a", "1");
    put(&store, "b", "2");
    put(&store, "c", "3");
    let req = TxnRequest {
        compare: vec![compare(
            "a",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value("1".into()),
        )],
        success: vec![
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    prev_kv: true,
                    ..put_req("d", "4")
                })),
            },
            op::get("d"),
            op::delete("zzz", ""),
            RequestOp {
                request: Some(Request::RequestTxn(TxnRequest {
                    // Evaluated before the outer put of "d".
                    compare: vec![compare(
                        "d",
                        CompareTarget::Version,
                        CompareResult::Equal,
                        TargetUnion::Version(0),
                    )],
                    success: vec![op::get("a")],
                    failure: vec![op::put("e", "5")],
                })),
            },
            op::range(RangeRequest {
                revision: 2,
                ..range_req("a", "")
            }),
            RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    prev_kv: true,
                    ..delete_req("b", "")
                })),
            },
        ],
        failure: vec![],
    };
    let outcome = txn(&store, &req).unwrap();
    // etcd answered exactly this; the nested txn's header stays empty.
    let expected = TxnResponse {
        header: header(5),
        succeeded: true,
        responses: responses(vec![
            put_response(5, None),
            range_response(5, vec![kv("d", "4", 5, 5, 1)]),
            delete_response(5, 0, vec![]),
            Some(Response::ResponseTxn(TxnResponse {
                header: Some(ResponseHeader::default()),
                succeeded: true,
                responses: responses(vec![range_response(5, vec![kv("a", "1", 2, 2, 1)])]),
            })),
            range_response(5, vec![kv("a", "1", 2, 2, 1)]),
            delete_response(5, 1, vec![kv("b", "2", 3, 3, 1)]),
        ]),
    };
    assert_eq!(outcome.response, expected);
    assert_eq!(outcome.revision, 5);
    assert_eq!(outcome.events.len(), 2);
    assert_eq!(keys(&range(&store, "\0", "\0")), ["a", "c", "d"]);
    // One revision, increasing sub-revisions.
    assert_eq!(
        &stored_revisions(&store)[3..],
        [(5, 0, false), (5, 1, true)]
    );
}

#[test]
fn headers_before_and_after_the_first_write() {
    let (_dir, store) = new_store();
    for k in ["a", "b", "c", "d"] {
        put(&store, k, "v");
    }
    // etcd answered: 5, 6, 6; the txn 6.
    let outcome = txn(
        &store,
        &TxnRequest {
            compare: vec![],
            success: vec![
                op::delete("nothing", ""),
                op::put("a", "9"),
                op::delete("nothing", ""),
            ],
            failure: vec![],
        },
    )
    .unwrap();
    assert_eq!(
        outcome.response,
        TxnResponse {
            header: header(6),
            succeeded: true,
            responses: responses(vec![
                delete_response(5, 0, vec![]),
                put_response(6, None),
                delete_response(6, 0, vec![]),
            ]),
        }
    );
}

#[test]
fn txn_without_writes_keeps_the_revision() {
    let (_dir, store) = new_store();
    put(&store, "a", "1");
    for req in [
        when(vec![]),
        TxnRequest {
            compare: vec![],
            success: vec![op::get("a")],
            failure: vec![],
        },
        TxnRequest {
            compare: vec![],
            success: vec![op::delete("nothing", "")],
            failure: vec![],
        },
    ] {
        let index = next_index(&store);
        let outcome = txn(&store, &req).unwrap();
        assert_eq!(outcome.revision, 2);
        assert_eq!(outcome.response.header, header(2));
        assert!(outcome.response.succeeded);
        assert_eq!(outcome.events, vec![]);
        assert_eq!(store.applied_index(), index);
    }
    assert_eq!(store.current_revision(), 2);
}

#[test]
fn one_revision_for_the_whole_txn() {
    let (_dir, store) = new_store();
    put(&store, "c", "1");
    let outcome = txn(
        &store,
        &TxnRequest {
            compare: vec![],
            success: vec![op::put("a", "1"), op::put("b", "1"), op::delete("c", "")],
            failure: vec![],
        },
    )
    .unwrap();
    assert_eq!(outcome.revision, 3);
    let revisions: Vec<i64> = outcome
        .events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(revisions, [3, 3, 3]);
    assert_eq!(
        stored_revisions(&store),
        [(2, 0, false), (3, 0, false), (3, 1, false), (3, 2, true)]
    );
    assert_eq!(store.current_revision(), 3);
}

#[test]
fn failure_branch_runs_when_a_compare_fails() {
    let (_dir, store) = new_store();
    put(&store, "a", "1");
    let req = TxnRequest {
        compare: vec![
            compare(
                "a",
                CompareTarget::Version,
                CompareResult::Equal,
                TargetUnion::Version(1),
            ),
            compare(
                "a",
                CompareTarget::Value,
                CompareResult::Equal,
                TargetUnion::Value("2".into()),
            ),
        ],
        success: vec![op::put("then", "x")],
        failure: vec![op::put("else", "y"), op::get("else")],
    };
    let outcome = txn(&store, &req).unwrap();
    assert_eq!(
        outcome.response,
        TxnResponse {
            header: header(3),
            succeeded: false,
            responses: responses(vec![
                put_response(3, None),
                range_response(3, vec![kv("else", "y", 3, 3, 1)]),
            ]),
        }
    );
    assert_eq!(get(&store, "then"), None);
}

#[test]
fn every_compare_target_and_result() {
    let (_dir, store) = new_store();
    store
        .put(
            1,
            &PutRequest {
                lease: 7,
                ..put_req("k", "a")
            },
            BackendBatch::new(),
        )
        .unwrap();
    store
        .put(
            2,
            &PutRequest {
                ignore_lease: true,
                ..put_req("k", "m")
            },
            BackendBatch::new(),
        )
        .unwrap();
    // k: create 2, mod 3, version 2, lease 7, value "m".
    let targets: Vec<(CompareTarget, [TargetUnion; 3])> = vec![
        (
            CompareTarget::Version,
            [
                TargetUnion::Version(1),
                TargetUnion::Version(2),
                TargetUnion::Version(3),
            ],
        ),
        (
            CompareTarget::Create,
            [
                TargetUnion::CreateRevision(1),
                TargetUnion::CreateRevision(2),
                TargetUnion::CreateRevision(3),
            ],
        ),
        (
            CompareTarget::Mod,
            [
                TargetUnion::ModRevision(2),
                TargetUnion::ModRevision(3),
                TargetUnion::ModRevision(4),
            ],
        ),
        (
            CompareTarget::Lease,
            [
                TargetUnion::Lease(6),
                TargetUnion::Lease(7),
                TargetUnion::Lease(8),
            ],
        ),
        (
            CompareTarget::Value,
            [
                TargetUnion::Value("l".into()),
                TargetUnion::Value("m".into()),
                TargetUnion::Value("n".into()),
            ],
        ),
    ];
    // Against a smaller, equal and greater operand.
    let results = [
        (CompareResult::Equal, [false, true, false]),
        (CompareResult::NotEqual, [true, false, true]),
        (CompareResult::Greater, [true, false, false]),
        (CompareResult::Less, [false, false, true]),
    ];
    for (target, operands) in &targets {
        for (result, expected) in &results {
            for (operand, expected) in operands.iter().zip(expected) {
                assert_eq!(
                    holds(
                        &store,
                        vec![compare("k", *target, *result, operand.clone())]
                    ),
                    *expected,
                    "{target:?} {result:?} {operand:?}"
                );
            }
        }
    }
    assert_eq!(store.current_revision(), 3);
}

#[test]
fn compares_on_missing_keys_use_zero_values_except_value() {
    let (_dir, store) = new_store();
    let on_missing =
        |target, result, union| holds(&store, vec![compare("nokey", target, result, union)]);
    use CompareResult::*;
    use CompareTarget::*;
    assert!(!on_missing(Value, Equal, TargetUnion::Value(Bytes::new())));
    assert!(!on_missing(Value, NotEqual, TargetUnion::Value("x".into())));
    assert!(on_missing(Version, Equal, TargetUnion::Version(0)));
    assert!(!on_missing(Version, Greater, TargetUnion::Version(0)));
    assert!(on_missing(Create, Equal, TargetUnion::CreateRevision(0)));
    assert!(on_missing(Mod, Less, TargetUnion::ModRevision(1)));
    assert!(on_missing(Lease, Equal, TargetUnion::Lease(0)));
}

#[test]
fn odd_compares_follow_etcd() {
    let (_dir, store) = new_store();
    put(&store, "k", "v");
    put(&store, "k", "v");
    // A union of another kind compares against zero.
    let mismatched = |result| {
        holds(
            &store,
            vec![compare(
                "k",
                CompareTarget::Version,
                result,
                TargetUnion::ModRevision(2),
            )],
        )
    };
    assert!(mismatched(CompareResult::Greater));
    assert!(!mismatched(CompareResult::Equal));
    let no_union = Compare {
        target_union: None,
        ..compare(
            "k",
            CompareTarget::Value,
            CompareResult::Greater,
            TargetUnion::Version(0),
        )
    };
    assert!(holds(&store, vec![no_union]));
    // An unknown result holds; an unknown target compares equal.
    let unknown_result = Compare {
        result: 9,
        ..compare(
            "k",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(99),
        )
    };
    assert!(holds(&store, vec![unknown_result]));
    let unknown_target = Compare {
        target: 9,
        ..compare(
            "k",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(99),
        )
    };
    assert!(holds(&store, vec![unknown_target]));
}

#[test]
fn range_compares_need_every_key() {
    let (_dir, store) = new_store();
    put(&store, "r1", "x");
    put(&store, "r2", "x");
    put(&store, "r2", "y");
    put(&store, "s", "z");
    let over = |key: &str, range_end: &str, target, result, union| {
        let mut c = compare(key, target, result, union);
        c.range_end = Bytes::copy_from_slice(range_end.as_bytes());
        holds(&store, vec![c])
    };
    use CompareResult::*;
    use CompareTarget::*;
    assert!(over("r", "s", Version, Greater, TargetUnion::Version(0)));
    assert!(!over("r", "s", Version, Equal, TargetUnion::Version(1)));
    assert!(over("r", "s", Value, Less, TargetUnion::Value("z".into())));
    assert!(!over("r", "t", Value, Less, TargetUnion::Value("z".into())));
    // From key: r2 and s.
    assert!(over(
        "r2",
        "\0",
        Create,
        Greater,
        TargetUnion::CreateRevision(2)
    ));
    assert!(!over(
        "r1",
        "\0",
        Create,
        Greater,
        TargetUnion::CreateRevision(2)
    ));
    // No key in the range: like a missing key.
    assert!(over("x", "y", Version, Equal, TargetUnion::Version(0)));
    assert!(!over(
        "x",
        "y",
        Value,
        Equal,
        TargetUnion::Value(Bytes::new())
    ));
}

#[test]
fn reads_inside_a_txn_see_its_own_writes() {
    let (_dir, store) = new_store();
    put(&store, "a", "1"); // 2
    put(&store, "b", "1"); // 3
    let outcome = txn(
        &store,
        &TxnRequest {
            compare: vec![],
            success: vec![
                op::put("a", "2"),
                op::delete("b", ""),
                op::put("c", "1"),
                op::range(range_req("\0", "\0")),
                op::range(RangeRequest {
                    revision: 3,
                    ..range_req("\0", "\0")
                }),
                op::range(RangeRequest {
                    count_only: true,
                    ..range_req("a", "z")
                }),
                op::range(RangeRequest {
                    limit: 1,
                    sort_order: 2,
                    ..range_req("a", "z")
                }),
            ],
            failure: vec![],
        },
    )
    .unwrap();
    let responses = &outcome.response.responses;
    assert_eq!(
        responses[3].response,
        range_response(4, vec![kv("a", "2", 2, 4, 2), kv("c", "1", 4, 4, 1)])
    );
    assert_eq!(
        responses[4].response,
        range_response(4, vec![kv("a", "1", 2, 2, 1), kv("b", "1", 3, 3, 1)])
    );
    assert_eq!(
        responses[5].response,
        Some(Response::ResponseRange(RangeResponse {
            header: header(4),
            kvs: vec![],
            more: false,
            count: 2,
        }))
    );
    assert_eq!(
        responses[6].response,
        Some(Response::ResponseRange(RangeResponse {
            header: header(4),
            kvs: vec![kv("c", "1", 4, 4, 1)],
            more: true,
            count: 2,
        }))
    );
    // The events carry the value each key had before the txn.
    assert_eq!(
        outcome
            .events
            .iter()
            .map(|e| e.prev_kv.clone())
            .collect::<Vec<_>>(),
        vec![
            Some(kv("a", "1", 2, 2, 1)),
            Some(kv("b", "1", 3, 3, 1)),
            None
        ]
    );
}

#[test]
fn a_refused_txn_changes_nothing() {
    let (_dir, store) = new_store();
    put(&store, "a", "1"); // 2
    put(&store, "a", "2"); // 3
    let index = store.applied_index();
    let refused = |success: Vec<RequestOp>, expected: MvccError| {
        let req = TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        };
        assert_eq!(txn(&store, &req), Err(expected));
        assert_eq!(store.current_revision(), 3);
        assert_eq!(store.applied_index(), index);
        assert_eq!(get(&store, "x"), None);
    };
    // Checked before anything runs, against the state before the txn.
    refused(
        vec![
            op::put("x", "1"),
            op::range(RangeRequest {
                revision: 4,
                ..range_req("a", "")
            }),
        ],
        MvccError::FutureRevision,
    );
    refused(
        vec![
            op::put("x", "1"),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    ignore_value: true,
                    ..put_req("x", "")
                })),
            },
        ],
        MvccError::KeyNotFound,
    );
    // Fails while running (a deleted key cannot keep its value).
    refused(
        vec![
            op::put("x", "1"),
            op::delete("a", ""),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    ignore_value: true,
                    ..put_req("a", "")
                })),
            },
        ],
        MvccError::KeyNotFound,
    );
    store
        .compact(
            next_index(&store),
            &CompactionRequest {
                revision: 3,
                physical: true,
            },
        )
        .unwrap();
    let index = store.applied_index();
    let req = TxnRequest {
        compare: vec![],
        success: vec![
            op::put("x", "1"),
            op::range(RangeRequest {
                revision: 2,
                ..range_req("a", "")
            }),
        ],
        failure: vec![],
    };
    assert_eq!(txn(&store, &req), Err(MvccError::Compacted));
    assert_eq!(store.applied_index(), index);
    // etcd answered: inside a txn a negative revision is below the compaction.
    let req = TxnRequest {
        compare: vec![],
        success: vec![op::range(RangeRequest {
            revision: -5,
            ..range_req("a", "")
        })],
        failure: vec![],
    };
    assert_eq!(txn(&store, &req), Err(MvccError::Compacted));
    // A bad range in the branch not taken is not checked.
    let req = TxnRequest {
        compare: vec![],
        success: vec![op::put("x", "1")],
        failure: vec![op::range(RangeRequest {
            revision: 99,
            ..range_req("a", "")
        })],
    };
    assert!(txn(&store, &req).is_ok());
    assert_eq!(get(&store, "x"), Some(kv("x", "1", 4, 4, 1)));
}

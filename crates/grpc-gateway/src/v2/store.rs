//! The v2 operations on the v3 KV and Lease services: each read is one read-only
//! transaction (every key it looks at, at one revision), each write one transaction
//! whose comparisons hold exactly what the read saw — the target, its ancestors — so a
//! concurrent change makes it fail and start again instead of breaking the tree.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use bytes::Bytes;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb::KeyValue;

use super::error::{Code, V2Error};
use super::keyspace::{self, NodePath};
use super::node::{Answer, Node};
use super::params::{KeyRequest, Method};
use crate::api::{KvApi, LeaseApi};

/// How often a write is tried again after a concurrent change.
const MAX_ATTEMPTS: usize = 16;

/// What a keys request answers.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// 200 or 201.
    pub status: StatusCode,
    /// The JSON answer.
    pub answer: Answer,
    /// The header of the store's answer (revision, term, cluster).
    pub header: pb::ResponseHeader,
}

/// The two v3 keys a path may be held under, as one read saw them.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The file's key-value.
    pub file: Option<KeyValue>,
    /// The directory marker's key-value.
    pub dir: Option<KeyValue>,
}

impl Seen {
    fn exists(&self) -> bool {
        self.file.is_some() || self.dir.is_some()
    }

    fn is_dir(&self) -> bool {
        self.dir.is_some()
    }

    fn kv(&self) -> Option<&KeyValue> {
        self.file.as_ref().or(self.dir.as_ref())
    }
}

/// Counters of `/v2/stats/store`, in etcd's order.
#[derive(Debug, Default)]
pub struct StoreStats {
    counters: [AtomicU64; 14],
    /// Requests waiting for a change.
    pub watchers: AtomicU64,
}

/// The names of [`StoreStats`]' counters.
pub const STAT_NAMES: [&str; 14] = [
    "getsSuccess",
    "getsFail",
    "setsSuccess",
    "setsFail",
    "deleteSuccess",
    "deleteFail",
    "updateSuccess",
    "updateFail",
    "createSuccess",
    "createFail",
    "compareAndSwapSuccess",
    "compareAndSwapFail",
    "compareAndDeleteSuccess",
    "compareAndDeleteFail",
];

impl StoreStats {
    /// Counts one operation (`get`, `set`, `delete`, `update`, `create`,
    /// `compareAndSwap`, `compareAndDelete`).
    pub fn record(&self, action: &str, ok: bool) {
        let base = match action {
            "get" => 0,
            "set" => 2,
            "delete" => 4,
            "update" => 6,
            "create" => 8,
            "compareAndSwap" => 10,
            "compareAndDelete" => 12,
            _ => return,
        };
        self.counters[base + usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as etcd's JSON (the `expireCount` is not kept: 0).
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (name, counter) in STAT_NAMES.iter().zip(&self.counters) {
            out.push_str(&format!("\"{name}\":{},", counter.load(Ordering::Relaxed)));
        }
        out.push_str(&format!(
            "\"expireCount\":0,\"watchers\":{}}}",
            self.watchers.load(Ordering::Relaxed)
        ));
        out
    }
}

/// The v2 store over the v3 services.
pub struct Store {
    kv: Arc<dyn KvApi>,
    lease: Arc<dyn LeaseApi>,
    /// The operation counters.
    pub stats: StoreStats,
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn range_op(key: Vec<u8>, range_end: Vec<u8>, revision: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            revision,
            ..Default::default()
        })),
    }
}

fn put_op(key: Vec<u8>, value: Vec<u8>, lease: i64, ignore_value: bool) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ignore_value,
            ..Default::default()
        })),
    }
}

fn delete_op(key: Vec<u8>, range_end: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                ..Default::default()
            },
        )),
    }
}

fn mod_is(key: Vec<u8>, seen: Option<&KeyValue>) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Mod as i32,
        key: key.into(),
        target_union: Some(pb::compare::TargetUnion::ModRevision(
            seen.map_or(0, |kv| kv.mod_revision),
        )),
        ..Default::default()
    }
}

/// The compare-failed cause etcd writes: `[prevValue != value]`, `[prevIndex != index]`
/// or both; `None` when the node matches.
fn compare_failure(req: &KeyRequest, kv: &KeyValue) -> Option<String> {
    let current = String::from_utf8_lossy(&kv.value);
    let value_bad = req.prev_value.as_deref().is_some_and(|pv| pv != current);
    let index_bad = req.prev_index != 0 && req.prev_index as i64 != kv.mod_revision;
    let value = format!("[{} != {current}]", req.prev_value.as_deref().unwrap_or(""));
    let index = format!("[{} != {}]", req.prev_index, kv.mod_revision);
    match (value_bad, index_bad) {
        (false, false) => None,
        (true, false) => Some(value),
        (false, true) => Some(index),
        (true, true) => Some(format!("{value} {index}")),
    }
}

/// The first problem on the way down to a node: a missing ancestor (100) or one that is
/// a file (104), as etcd's tree walk reports them.
fn walk(ancestors: &[NodePath], seen: &[Seen], rev: i64) -> Result<(), V2Error> {
    for (path, s) in ancestors.iter().zip(seen) {
        if s.file.is_some() {
            return Err(V2Error::new(Code::NotDir, path.as_str()).at(rev));
        }
        if !s.exists() {
            return Err(V2Error::new(Code::KeyNotFound, path.as_str()).at(rev));
        }
    }
    Ok(())
}

impl Store {
    /// A store on `kv` and `lease`.
    pub fn new(kv: Arc<dyn KvApi>, lease: Arc<dyn LeaseApi>) -> Store {
        Store {
            kv,
            lease,
            stats: StoreStats::default(),
        }
    }

    /// The current revision and the store's header.
    pub async fn current(&self) -> Result<pb::ResponseHeader, V2Error> {
        let resp = self
            .kv
            .range(pb::RangeRequest {
                key: Bytes::from_static(keyspace::ACTION_KEY),
                count_only: true,
                ..Default::default()
            })
            .await?;
        Ok(resp.header.unwrap_or_default())
    }

    /// Both keys of each path, at one revision.
    async fn read_paths(
        &self,
        paths: &[NodePath],
    ) -> Result<(pb::ResponseHeader, Vec<Seen>), V2Error> {
        let mut ops = Vec::with_capacity(paths.len() * 2);
        for path in paths {
            ops.push(range_op(keyspace::file_key(path), Vec::new(), 0));
            ops.push(range_op(keyspace::dir_key(path), Vec::new(), 0));
        }
        if ops.is_empty() {
            return Ok((self.current().await?, Vec::new()));
        }
        let resp = self
            .kv
            .txn(pb::TxnRequest {
                success: ops,
                ..Default::default()
            })
            .await?;
        let mut found = resp.responses.into_iter().map(|op| match op.response {
            Some(pb::response_op::Response::ResponseRange(r)) => r.kvs.into_iter().next(),
            _ => None,
        });
        let seen = paths
            .iter()
            .map(|_| Seen {
                file: found.next().flatten(),
                dir: found.next().flatten(),
            })
            .collect();
        Ok((resp.header.unwrap_or_default(), seen))
    }

    async fn range_at(&self, prefix: Vec<u8>, revision: i64) -> Result<Vec<KeyValue>, V2Error> {
        let end = keyspace::prefix_end(&prefix);
        let resp = self
            .kv
            .range(pb::RangeRequest {
                key: prefix.into(),
                range_end: end.into(),
                revision,
                ..Default::default()
            })
            .await?;
        Ok(resp.kvs)
    }

    /// Seconds left of a lease (0: none or gone).
    async fn ttl_of(&self, lease: i64) -> i64 {
        if lease == 0 {
            return 0;
        }
        match self
            .lease
            .lease_time_to_live(pb::LeaseTimeToLiveRequest {
                id: lease,
                keys: false,
            })
            .await
        {
            Ok(resp) if resp.ttl > 0 => resp.ttl,
            _ => 0,
        }
    }

    /// The node a key-value holds (with its value for a file, its TTL if leased).
    pub async fn node_of(&self, path: &NodePath, dir: bool, kv: &KeyValue) -> Node {
        let mut node = Node::new(path, dir, kv.mod_revision, kv.create_revision);
        if !dir {
            node = node.with_value(String::from_utf8_lossy(&kv.value).into_owned());
        }
        let ttl = self.ttl_of(kv.lease).await;
        node.with_ttl(ttl, now_nanos())
    }

    /// Answers a GET.
    pub async fn get(&self, req: &KeyRequest) -> Result<Outcome, V2Error> {
        let path = &req.path;
        let mut paths = path.ancestors();
        if !path.is_root() {
            paths.push(path.clone());
        }
        let (header, seen) = self.read_paths(&paths).await?;
        let rev = header.revision;
        let node = if path.is_root() {
            let mut root = Node::new(path, true, 0, 0);
            root.nodes = self.list(path, rev, req.recursive).await?;
            root
        } else {
            let above = paths.len() - 1;
            walk(&paths[..above], &seen[..above], rev)?;
            let target = seen.last().cloned().unwrap_or_default();
            match (&target.file, &target.dir) {
                (Some(kv), _) => self.node_of(path, false, kv).await,
                (None, Some(kv)) => {
                    let mut node = self.node_of(path, true, kv).await;
                    node.nodes = self.list(path, rev, req.recursive).await?;
                    node
                }
                (None, None) => unreachable_not_found(path, rev)?,
            }
        };
        Ok(Outcome {
            status: StatusCode::OK,
            answer: Answer {
                action: "get".into(),
                node,
                prev_node: None,
            },
            header,
        })
    }

    /// The children of `dir` at `rev`, sorted; their own children too if `recursive`.
    async fn list(&self, dir: &NodePath, rev: i64, recursive: bool) -> Result<Vec<Node>, V2Error> {
        let mut levels: Vec<Vec<(NodePath, bool, KeyValue)>> = Vec::new();
        let mut depth = dir.depth() + 1;
        loop {
            let kvs = self
                .range_at(keyspace::level_prefix(dir, depth), rev)
                .await?;
            let nodes: Vec<_> = kvs
                .into_iter()
                .filter_map(|kv| {
                    let (path, is_dir) = keyspace::decode_key(&kv.key)?;
                    (!path.is_hidden()).then_some((path, is_dir, kv))
                })
                .collect();
            if nodes.is_empty() || !recursive || depth > keyspace::MAX_DEPTH {
                levels.push(nodes);
                break;
            }
            levels.push(nodes);
            depth += 1;
        }
        // Build bottom-up: each level's nodes take their children from the level below.
        let mut below: Vec<Node> = Vec::new();
        for level in levels.into_iter().rev() {
            let mut built = Vec::with_capacity(level.len());
            for (path, is_dir, kv) in level {
                let mut node = self.node_of(&path, is_dir, &kv).await;
                if is_dir && recursive {
                    let (mine, rest): (Vec<Node>, Vec<Node>) =
                        below.into_iter().partition(|child| {
                            child
                                .key
                                .as_deref()
                                .and_then(|k| k.rsplit_once('/'))
                                .is_some_and(|(parent, _)| parent == path.as_str())
                        });
                    node.nodes = mine;
                    below = rest;
                }
                built.push(node);
            }
            built.sort_by(|a, b| a.key.cmp(&b.key));
            below = built;
        }
        Ok(below)
    }

    /// Answers a PUT or a POST.
    pub async fn write(&self, req: &KeyRequest) -> Result<Outcome, V2Error> {
        let in_order = req.method == Method::Post;
        if req.path.is_root() && !in_order {
            let header = self.current().await?;
            return Err(V2Error::new(Code::RootReadOnly, "/").at(header.revision));
        }
        if req.path.depth() >= keyspace::MAX_DEPTH {
            return Err(V2Error::new(Code::InvalidField, "key too deep"));
        }
        for _ in 0..MAX_ATTEMPTS {
            if let Some(outcome) = self.try_write(req, in_order).await? {
                return Ok(outcome);
            }
        }
        Err(V2Error::new(
            Code::RaftInternal,
            "too many concurrent changes, try again",
        ))
    }

    /// One attempt; `None` when the store changed between the read and the write.
    async fn try_write(
        &self,
        req: &KeyRequest,
        in_order: bool,
    ) -> Result<Option<Outcome>, V2Error> {
        let mut dirs = req.path.ancestors();
        if in_order && !req.path.is_root() {
            dirs.push(req.path.clone());
        }
        let mut paths = dirs.clone();
        if !in_order {
            paths.push(req.path.clone());
        }
        let (header, seen) = self.read_paths(&paths).await?;
        let rev = header.revision;
        let (target, current) = if in_order {
            (req.path.child(&format!("{:020}", rev + 1)), Seen::default())
        } else {
            (req.path.clone(), seen.last().cloned().unwrap_or_default())
        };
        let dir_seen = &seen[..dirs.len()];

        let compare = req.prev_value.is_some() || req.prev_index != 0;
        let action = if in_order || req.prev_exist == Some(false) {
            "create"
        } else if compare {
            "compareAndSwap"
        } else if req.prev_exist == Some(true) {
            "update"
        } else {
            "set"
        };
        // Operations on an existing node walk to it; creating ones make the way.
        if compare || req.prev_exist == Some(true) || req.refresh {
            walk(&dirs, dir_seen, rev)?;
            if !current.exists() {
                return Err(V2Error::new(Code::KeyNotFound, target.as_str()).at(rev));
            }
        } else if let Some((path, _)) = dirs.iter().zip(dir_seen).find(|(_, s)| s.file.is_some()) {
            return Err(V2Error::new(Code::NotDir, path.as_str()).at(rev));
        }
        match action {
            "create" if current.exists() => {
                return Err(V2Error::new(Code::NodeExist, target.as_str()).at(rev))
            }
            "compareAndSwap" => {
                let Some(kv) = &current.file else {
                    return Err(V2Error::new(Code::NotFile, target.as_str()).at(rev));
                };
                if let Some(cause) = compare_failure(req, kv) {
                    return Err(V2Error::new(Code::TestFailed, cause).at(rev));
                }
            }
            "update" if current.is_dir() && !req.value.is_empty() => {
                return Err(V2Error::new(Code::NotFile, target.as_str()).at(rev))
            }
            "set" if current.is_dir() => {
                return Err(V2Error::new(Code::NotFile, target.as_str()).at(rev))
            }
            _ => {}
        }
        let make_dir = if current.exists() && (action == "update" || req.refresh) {
            current.is_dir()
        } else {
            req.dir
        };

        let lease = match req.ttl {
            Some(ttl) if ttl > 0 => {
                let ttl = i64::try_from(ttl)
                    .map_err(|_| V2Error::new(Code::TtlNaN, "invalid value for \"ttl\""))?;
                self.lease
                    .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
                    .await?
                    .id
            }
            _ => 0,
        };

        let mut compares = Vec::new();
        let mut ops = Vec::new();
        for (path, s) in dirs.iter().zip(dir_seen) {
            compares.push(mod_is(keyspace::file_key(path), None));
            compares.push(mod_is(keyspace::dir_key(path), s.dir.as_ref()));
            if s.dir.is_none() {
                ops.push(put_op(keyspace::dir_key(path), Vec::new(), 0, false));
            }
        }
        compares.push(mod_is(keyspace::file_key(&target), current.file.as_ref()));
        compares.push(mod_is(keyspace::dir_key(&target), current.dir.as_ref()));
        let key = if make_dir {
            keyspace::dir_key(&target)
        } else {
            keyspace::file_key(&target)
        };
        let value = if make_dir {
            Vec::new()
        } else {
            req.value.clone().into_bytes()
        };
        if make_dir && current.file.is_some() {
            ops.push(delete_op(keyspace::file_key(&target), Vec::new()));
        }
        ops.push(put_op(key, value, lease, req.refresh));
        ops.push(put_op(
            keyspace::ACTION_KEY.to_vec(),
            keyspace::action_value(action, &target),
            0,
            false,
        ));

        let prev_node = match current.kv() {
            Some(kv) => Some(self.node_of(&target, current.is_dir(), kv).await),
            None => None,
        };
        let resp = self
            .kv
            .txn(pb::TxnRequest {
                compare: compares,
                success: ops,
                failure: Vec::new(),
            })
            .await;
        let resp = match resp {
            Ok(resp) => resp,
            Err(e) => {
                self.revoke(lease).await;
                return Err(e.into());
            }
        };
        if !resp.succeeded {
            self.revoke(lease).await;
            return Ok(None);
        }
        let header = resp.header.unwrap_or_default();
        let new_rev = header.revision;
        if let Some(old) = current.kv().map(|kv| kv.lease).filter(|l| *l != 0) {
            self.revoke(old).await;
        }
        // A put keeps the creation revision of the key it overwrites.
        let created = match (&current.file, &current.dir) {
            (Some(kv), _) if !make_dir => kv.create_revision,
            (_, Some(kv)) if make_dir => kv.create_revision,
            _ => new_rev,
        };
        let mut node = Node::new(&target, make_dir, new_rev, created);
        if !make_dir {
            let value = match (&req.refresh, current.file.as_ref()) {
                (true, Some(kv)) => String::from_utf8_lossy(&kv.value).into_owned(),
                _ => req.value.clone(),
            };
            node = node.with_value(value);
        }
        let node = node.with_ttl(
            req.ttl.unwrap_or(0).min(i64::MAX as u64) as i64,
            now_nanos(),
        );
        let status = if current.exists() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        Ok(Some(Outcome {
            status,
            answer: Answer {
                action: action.into(),
                node,
                prev_node,
            },
            header,
        }))
    }

    async fn revoke(&self, lease: i64) {
        if lease != 0 {
            if let Err(e) = self
                .lease
                .lease_revoke(pb::LeaseRevokeRequest { id: lease })
                .await
            {
                tracing::debug!(lease, error = %e, "v2: revoking a replaced node's lease");
            }
        }
    }

    /// Answers a DELETE.
    pub async fn delete(&self, req: &KeyRequest) -> Result<Outcome, V2Error> {
        if req.path.is_root() {
            let header = self.current().await?;
            return Err(V2Error::new(Code::RootReadOnly, "/").at(header.revision));
        }
        for _ in 0..MAX_ATTEMPTS {
            if let Some(outcome) = self.try_delete(req).await? {
                return Ok(outcome);
            }
        }
        Err(V2Error::new(
            Code::RaftInternal,
            "too many concurrent changes, try again",
        ))
    }

    async fn try_delete(&self, req: &KeyRequest) -> Result<Option<Outcome>, V2Error> {
        let path = &req.path;
        let mut paths = path.ancestors();
        paths.push(path.clone());
        let (header, seen) = self.read_paths(&paths).await?;
        let rev = header.revision;
        let above = paths.len() - 1;
        walk(&paths[..above], &seen[..above], rev)?;
        let current = seen.last().cloned().unwrap_or_default();
        let Some(kv) = current.kv().cloned() else {
            return Err(V2Error::new(Code::KeyNotFound, path.as_str()).at(rev));
        };
        let is_dir = current.is_dir();
        let compare = req.prev_value.is_some() || req.prev_index != 0;
        let action = if compare {
            if is_dir {
                return Err(V2Error::new(Code::NotFile, path.as_str()).at(rev));
            }
            if let Some(cause) = compare_failure(req, &kv) {
                return Err(V2Error::new(Code::TestFailed, cause).at(rev));
            }
            "compareAndDelete"
        } else {
            "delete"
        };
        let mut ops = Vec::new();
        if is_dir {
            if !req.dir && !req.recursive {
                return Err(V2Error::new(Code::NotFile, path.as_str()).at(rev));
            }
            let mut depth = path.depth() + 1;
            loop {
                let prefix = keyspace::level_prefix(path, depth);
                let end = keyspace::prefix_end(&prefix);
                let any = !self.range_at(prefix.clone(), rev).await?.is_empty();
                if any && !req.recursive {
                    return Err(V2Error::new(Code::DirNotEmpty, path.as_str()).at(rev));
                }
                // One level more than was seen, for children created meanwhile.
                ops.push(delete_op(prefix, end));
                if !any || depth > keyspace::MAX_DEPTH {
                    break;
                }
                depth += 1;
            }
        }
        let key = if is_dir {
            keyspace::dir_key(path)
        } else {
            keyspace::file_key(path)
        };
        ops.push(delete_op(key.clone(), Vec::new()));
        ops.push(put_op(
            keyspace::ACTION_KEY.to_vec(),
            keyspace::action_value(action, path),
            0,
            false,
        ));
        let prev_node = self.node_of(path, is_dir, &kv).await;
        let resp = self
            .kv
            .txn(pb::TxnRequest {
                compare: vec![mod_is(key, Some(&kv))],
                success: ops,
                failure: Vec::new(),
            })
            .await?;
        if !resp.succeeded {
            return Ok(None);
        }
        self.revoke(kv.lease).await;
        let header = resp.header.unwrap_or_default();
        Ok(Some(Outcome {
            status: StatusCode::OK,
            answer: Answer {
                action: action.into(),
                node: Node::new(path, is_dir, header.revision, kv.create_revision),
                prev_node: Some(prev_node),
            },
            header,
        }))
    }
}

fn unreachable_not_found(path: &NodePath, rev: i64) -> Result<Node, V2Error> {
    Err(V2Error::new(Code::KeyNotFound, path.as_str()).at(rev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(value: &str, rev: i64) -> KeyValue {
        KeyValue {
            value: Bytes::copy_from_slice(value.as_bytes()),
            mod_revision: rev,
            ..Default::default()
        }
    }

    fn req(query: &str) -> KeyRequest {
        super::super::params::parse(Method::Put, "/k", Some(query), None).unwrap()
    }

    #[test]
    fn compare_failures_read_as_etcds() {
        assert_eq!(
            compare_failure(&req("prevValue=nope"), &kv("baz", 5)).as_deref(),
            Some("[nope != baz]")
        );
        assert_eq!(
            compare_failure(&req("prevIndex=1"), &kv("baz", 5)).as_deref(),
            Some("[1 != 5]")
        );
        assert_eq!(
            compare_failure(&req("prevIndex=1&prevValue=q"), &kv("baz", 5)).as_deref(),
            Some("[q != baz] [1 != 5]")
        );
        assert_eq!(
            compare_failure(&req("prevIndex=5&prevValue=baz"), &kv("baz", 5)),
            None
        );
    }

    #[test]
    fn stats_are_written_in_etcds_order() {
        let stats = StoreStats::default();
        stats.record("get", true);
        stats.record("set", false);
        let json = stats.to_json();
        assert!(json.starts_with(r#"{"getsSuccess":1,"getsFail":0,"setsSuccess":0,"setsFail":1,"#));
        assert!(json.ends_with(r#""expireCount":0,"watchers":0}"#));
    }
}

//! `wait=true`: the first v2 change of a node (or below it, `recursive`) at or after
//! `waitIndex` (else after now), read from the v3 history through the Watch service.
//! Each revision is one v2 event: the [`ACTION_KEY`](super::keyspace::ACTION_KEY) of the
//! revision names the action and the node; a revision that deletes nodes without one
//! is a TTL expiry (`expire`).

use futures::StreamExt as _;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb::{event::EventType, Event};

use super::error::{Code, V2Error};
use super::keyspace::{self, NodePath};
use super::node::{Answer, Node};
use crate::api::WatchApi;

/// The node an event is about, as v2 shows it.
struct Change {
    path: NodePath,
    dir: bool,
    deleted: bool,
    node: Node,
    prev: Option<Node>,
}

fn change_of(event: &Event, revision: i64) -> Option<Change> {
    let kv = event.kv.as_ref()?;
    let (path, dir) = keyspace::decode_key(&kv.key)?;
    let deleted = event.r#type == EventType::Delete as i32;
    let prev = event.prev_kv.as_ref().map(|p| {
        let node = Node::new(&path, dir, p.mod_revision, p.create_revision);
        if dir {
            node
        } else {
            node.with_value(String::from_utf8_lossy(&p.value).into_owned())
        }
    });
    let node = if deleted {
        let created = event.prev_kv.as_ref().map_or(0, |p| p.create_revision);
        Node::new(&path, dir, revision, created)
    } else {
        let node = Node::new(&path, dir, kv.mod_revision, kv.create_revision);
        if dir {
            node
        } else {
            node.with_value(String::from_utf8_lossy(&kv.value).into_owned())
        }
    };
    Some(Change {
        path,
        dir,
        deleted,
        node,
        prev,
    })
}

/// The v2 event of one revision's v3 events, if it has one that `watched` (with
/// `recursive`) sees.
pub fn event_of(
    events: &[Event],
    revision: i64,
    watched: &NodePath,
    recursive: bool,
) -> Option<Answer> {
    let action = events.iter().find_map(|e| {
        let kv = e.kv.as_ref()?;
        (kv.key.as_ref() == keyspace::ACTION_KEY && e.r#type == EventType::Put as i32)
            .then(|| keyspace::decode_action(&kv.value))
            .flatten()
    });
    let changes = events.iter().filter_map(|e| change_of(e, revision));
    let sees = |path: &NodePath, deleted: bool| {
        path == watched
            || (recursive && path.is_within(watched))
            || (deleted && watched.is_within(path))
    };
    let (action, change) = match action {
        Some((action, path)) => {
            let deleting = action == "delete" || action == "compareAndDelete";
            let change = changes
                .filter(|c| c.path == path)
                .max_by_key(|c| c.deleted == deleting)?;
            (action, change)
        }
        None => (
            "expire".to_string(),
            changes
                .filter(|c| c.deleted)
                .find(|c| sees(&c.path, true))?,
        ),
    };
    if !sees(&change.path, change.deleted) {
        return None;
    }
    let _ = change.dir;
    // A refresh or a replaced node shows what it was.
    let prev_node = change.prev.filter(|_| change.deleted || action != "create");
    Some(Answer {
        action,
        node: change.node,
        prev_node,
    })
}

/// Waits for the first change `watched` sees from `start` on. `current` is the store's
/// revision when the request came (the index of the errors).
pub async fn wait(
    watch: &dyn WatchApi,
    watched: &NodePath,
    recursive: bool,
    start: i64,
    current: i64,
) -> Result<Answer, V2Error> {
    let (mut session, mut responses) = watch.open_stream();
    session
        .handle(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: keyspace::V2_RANGE.0.to_vec().into(),
                    range_end: keyspace::V2_RANGE.1.to_vec().into(),
                    start_revision: start,
                    prev_kv: true,
                    ..Default::default()
                },
            )),
        })
        .await;
    while let Some(resp) = responses.next().await {
        if resp.compact_revision != 0 {
            return Err(V2Error::new(
                Code::EventIndexCleared,
                format!(
                    "the requested history has been cleared [{}/{start}]",
                    resp.compact_revision
                ),
            )
            .at(current));
        }
        if resp.canceled {
            return Err(V2Error::new(Code::RaftInternal, resp.cancel_reason).at(current));
        }
        let mut from = 0;
        while from < resp.events.len() {
            let revision = resp.events[from]
                .kv
                .as_ref()
                .map_or(0, |kv| kv.mod_revision);
            let to = resp.events[from..]
                .iter()
                .position(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision) != revision)
                .map_or(resp.events.len(), |n| from + n);
            if let Some(answer) = event_of(&resp.events[from..to], revision, watched, recursive) {
                drop(session);
                return Ok(answer);
            }
            from = to;
        }
    }
    Err(V2Error::new(Code::RaftInternal, "the watch ended").at(current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use cairn_proto::mvccpb::KeyValue;

    fn event(key: Vec<u8>, value: &str, rev: i64, deleted: bool) -> Event {
        Event {
            r#type: if deleted {
                EventType::Delete as i32
            } else {
                EventType::Put as i32
            },
            kv: Some(KeyValue {
                key: key.into(),
                value: Bytes::copy_from_slice(value.as_bytes()),
                mod_revision: rev,
                create_revision: rev,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn a_revision_becomes_the_action_it_recorded() {
        let p = NodePath::clean("/a/b");
        let events = vec![
            event(keyspace::dir_key(&NodePath::clean("/a")), "", 7, false),
            event(keyspace::file_key(&p), "v", 7, false),
            event(keyspace::ACTION_KEY.to_vec(), "create /a/b", 7, false),
        ];
        let a = event_of(&events, 7, &NodePath::clean("/a"), true).unwrap();
        assert_eq!(
            a.to_json(),
            r#"{"action":"create","node":{"key":"/a/b","value":"v","modifiedIndex":7,"createdIndex":7}}"#
        );
        assert!(event_of(&events, 7, &NodePath::clean("/a"), false).is_none());
        assert!(event_of(&events, 7, &p, false).is_some());
    }

    #[test]
    fn deletions_without_an_action_are_expiries() {
        let p = NodePath::clean("/t");
        let events = vec![event(keyspace::file_key(&p), "", 9, true)];
        let a = event_of(&events, 9, &p, false).unwrap();
        assert_eq!(a.action, "expire");
        assert_eq!(a.node.modified_index, 9);
    }
}

//! Shaping events into etcd's watch responses: filters, `prev_kv`, size-bounded batches
//! and fragments.

use cairn_proto::etcdserverpb::WatchResponse;
use cairn_proto::mvccpb::{event::EventType, Event};
use prost::Message as _;

/// `cancel_reason` of a create request naming a watch id already in use on the stream.
pub const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// `cancel_reason` of a create request whose `range_end` is not after its `key`.
pub const EMPTY_WATCH_RANGE: &str = "mvcc: watcher range is empty";

/// What a watcher wants to see of an event.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EventShape {
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
}

impl EventShape {
    /// The event as this watcher sees it, or `None` if a filter drops it.
    pub fn apply(&self, event: &Event) -> Option<Event> {
        let is_put = event.r#type == EventType::Put as i32;
        if (is_put && self.no_put) || (!is_put && self.no_delete) {
            return None;
        }
        let mut event = event.clone();
        if !self.prev_kv {
            event.prev_kv = None;
        }
        Some(event)
    }
}

/// The revision an event happened at.
pub(crate) fn event_revision(event: &Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// Groups `events` (in revision order) into responses of whole revisions, each under
/// `max_bytes` unless one revision alone is larger. Returns each batch with its last
/// revision.
pub(crate) fn batches(events: Vec<Event>, max_bytes: usize) -> Vec<(Vec<Event>, i64)> {
    let mut out: Vec<(Vec<Event>, i64)> = Vec::new();
    let mut current: Vec<Event> = Vec::new();
    let mut current_bytes = 0;
    let mut last_rev = 0;
    for event in events {
        let rev = event_revision(&event);
        let size = event.encoded_len() + 2;
        if rev != last_rev {
            if !current.is_empty() && current_bytes + size > max_bytes {
                out.push((std::mem::take(&mut current), last_rev));
                current_bytes = 0;
            }
            last_rev = rev;
        }
        current_bytes += size;
        current.push(event);
    }
    if !current.is_empty() {
        out.push((current, last_rev));
    }
    out
}

/// etcd's fragmenting of a large response: when `response` is at least `max_bytes` and
/// has two or more events, it is split into several responses, each under `max_bytes`
/// (or holding a single event), with `fragment` set on all but the last.
pub fn fragment(response: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    if response.encoded_len() < max_bytes || response.events.len() < 2 {
        return vec![response];
    }
    let template = WatchResponse {
        events: Vec::new(),
        fragment: true,
        ..response.clone()
    };
    let base = template.encoded_len();
    let mut out = Vec::new();
    let mut current = template.clone();
    let mut size = base;
    for event in response.events {
        let event_size = event.encoded_len() + 1 + prost::length_delimiter_len(event.encoded_len());
        if !current.events.is_empty() && size + event_size >= max_bytes {
            out.push(std::mem::replace(&mut current, template.clone()));
            size = base;
        }
        size += event_size;
        current.events.push(event);
    }
    current.fragment = false;
    out.push(current);
    out
}

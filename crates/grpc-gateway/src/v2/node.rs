//! The JSON of v2 nodes and answers, field for field as etcd writes them.

use serde::Serialize;

use super::keyspace::NodePath;

/// One node as etcd's v2 JSON shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// The path (absent for the root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A file's value (absent for directories and deleted nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Set for directories.
    #[serde(skip_serializing_if = "is_false")]
    pub dir: bool,
    /// When a node with a TTL expires (RFC 3339, UTC, nanoseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    /// Seconds left before expiry.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: i64,
    /// A directory's children (listed ones only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Node>,
    /// The revision of the last change (absent for the root).
    #[serde(skip_serializing_if = "is_zero")]
    pub modified_index: i64,
    /// The revision of the creation (absent for the root).
    #[serde(skip_serializing_if = "is_zero")]
    pub created_index: i64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Node {
    /// A node at `path` with its indexes.
    pub fn new(path: &NodePath, dir: bool, modified: i64, created: i64) -> Node {
        Node {
            key: (!path.is_root()).then(|| path.to_string()),
            dir,
            modified_index: modified,
            created_index: created,
            ..Node::default()
        }
    }

    /// The node with its value.
    pub fn with_value(mut self, value: String) -> Node {
        self.value = Some(value);
        self
    }

    /// The node with a TTL of `ttl` seconds from now (`now_unix_nanos`).
    pub fn with_ttl(mut self, ttl: i64, now_unix_nanos: u128) -> Node {
        if ttl > 0 {
            self.ttl = ttl;
            let at = now_unix_nanos + (ttl as u128) * 1_000_000_000;
            self.expiration = Some(rfc3339_nanos(at));
        }
        self
    }
}

/// An answer of the keys API: `{"action", "node", "prevNode"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// `get`, `set`, `create`, `update`, `delete`, `compareAndSwap`, ...
    pub action: String,
    /// The node after the action.
    pub node: Node,
    /// The node before it, when it replaced or removed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<Node>,
}

impl Answer {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The time `unix_nanos` as Go's `time.RFC3339Nano` writes a UTC time
/// (`2026-12-05T10:57:30.30614165Z`: trailing zeros of the fraction dropped).
pub fn rfc3339_nanos(unix_nanos: u128) -> String {
    let secs = (unix_nanos / 1_000_000_000) as i64;
    let nanos = (unix_nanos % 1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_written_in_etcds_field_order() {
        let file = Node::new(&NodePath::clean("/nosql/foo"), false, 4, 4).with_value("bar".into());
        let answer = Answer {
            action: "set".into(),
            node: file,
            prev_node: None,
        };
        assert_eq!(
            answer.to_json(),
            r#"{"action":"set","node":{"key":"/nosql/foo","value":"bar","modifiedIndex":4,"createdIndex":4}}"#
        );
        let mut dir = Node::new(&NodePath::root(), true, 0, 0);
        dir.nodes
            .push(Node::new(&NodePath::clean("/a"), true, 3, 3));
        assert_eq!(
            serde_json::to_string(&dir).unwrap(),
            r#"{"dir":true,"nodes":[{"key":"/a","dir":true,"modifiedIndex":3,"createdIndex":3}]}"#
        );
    }

    #[test]
    fn expirations_are_go_rfc3339_nanos() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nanos(1_796_468_250_306_141_650),
            "2026-12-05T10:57:30.30614165Z"
        );
        let ttl = Node::default().with_ttl(5, 0);
        assert_eq!(ttl.expiration.as_deref(), Some("1970-01-01T00:00:05Z"));
    }
}

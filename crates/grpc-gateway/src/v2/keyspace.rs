//! Where v2 nodes live in the v3 key space.
//!
//! Every node is one v3 key under [`NODE_PREFIX`]: the node's depth (three digits), then
//! its path; a directory's key ends with `/` (a marker with an empty value), a file's does
//! not. Because the depth comes first, the children of a directory are exactly one v3
//! prefix range ([`children_prefix`]), and a file and a directory of the same path are two
//! different keys, never both present. Each v2 write also puts [`ACTION_KEY`] in the same
//! revision, saying what the write was (`set /a/b`), so that a watcher of the v3 history
//! can tell etcd's v2 actions apart; a revision with deletions and no action key is a TTL
//! expiry.

/// The prefix of every v2 node's v3 key.
pub const NODE_PREFIX: &[u8] = b"\0v2/";
/// The key each v2 write puts, in the same revision, with its action and path.
pub const ACTION_KEY: &[u8] = b"\0v2.act";
/// The start and end of the v3 range holding everything of v2 (nodes and action key).
pub const V2_RANGE: (&[u8], &[u8]) = (b"\0v2", b"\0v3");
/// The deepest path served: a write's transaction holds two operations per level.
pub const MAX_DEPTH: usize = 60;

/// A cleaned v2 path: `/` alone for the root, else `/seg/seg` without empty, `.` or `..`
/// segments (as Go's `path.Clean` makes it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodePath(String);

impl NodePath {
    /// Cleans `raw` (a decoded URL path below `/v2/keys`).
    pub fn clean(raw: &str) -> NodePath {
        let mut segments: Vec<&str> = Vec::new();
        for segment in raw.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => segments.push(s),
            }
        }
        NodePath(format!("/{}", segments.join("/")))
    }

    /// The root directory.
    pub fn root() -> NodePath {
        NodePath("/".to_string())
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The number of segments (0 for the root).
    pub fn depth(&self) -> usize {
        if self.is_root() {
            0
        } else {
            self.0.matches('/').count()
        }
    }

    /// `self/name`.
    pub fn child(&self, name: &str) -> NodePath {
        if self.is_root() {
            NodePath(format!("/{name}"))
        } else {
            NodePath(format!("{}/{name}", self.0))
        }
    }

    /// The proper ancestors below the root, outermost first (`/a`, `/a/b` for `/a/b/c`).
    pub fn ancestors(&self) -> Vec<NodePath> {
        let mut out = Vec::new();
        let mut end = 0;
        while let Some(pos) = self.0[end + 1..].find('/') {
            end += 1 + pos;
            out.push(NodePath(self.0[..end].to_string()));
        }
        out
    }

    /// Whether `self` is `other` or below it.
    pub fn is_within(&self, other: &NodePath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// Whether the last segment starts with `_` (etcd's hidden nodes, left out of
    /// listings).
    pub fn is_hidden(&self) -> bool {
        self.0
            .rsplit('/')
            .next()
            .is_some_and(|s| s.starts_with('_'))
    }
}

impl std::fmt::Display for NodePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn depth_prefix(depth: usize) -> Vec<u8> {
    let mut key = NODE_PREFIX.to_vec();
    key.extend_from_slice(format!("{depth:03}").as_bytes());
    key
}

/// The v3 key of the file at `path`.
pub fn file_key(path: &NodePath) -> Vec<u8> {
    let mut key = depth_prefix(path.depth());
    key.extend_from_slice(path.as_str().as_bytes());
    key
}

/// The v3 key of the directory marker at `path`.
pub fn dir_key(path: &NodePath) -> Vec<u8> {
    let mut key = file_key(path);
    key.push(b'/');
    key
}

/// The v3 prefix of the nodes at `depth` below `dir` (`depth` > `dir`'s depth).
pub fn level_prefix(dir: &NodePath, depth: usize) -> Vec<u8> {
    let mut key = depth_prefix(depth);
    key.extend_from_slice(dir.as_str().as_bytes());
    if !dir.is_root() {
        key.push(b'/');
    }
    key
}

/// The v3 prefix of `dir`'s children, files and directories.
pub fn children_prefix(dir: &NodePath) -> Vec<u8> {
    level_prefix(dir, dir.depth() + 1)
}

/// The end of the v3 range of keys starting with `prefix` (etcd's prefix range end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The node a v3 key holds: its path and whether it is a directory. `None` for keys
/// that are not v2 nodes.
pub fn decode_key(key: &[u8]) -> Option<(NodePath, bool)> {
    let rest = key.strip_prefix(NODE_PREFIX)?;
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let path = std::str::from_utf8(&rest[3..]).ok()?;
    match path.strip_suffix('/') {
        Some(dir) if !dir.is_empty() => Some((NodePath(dir.to_string()), true)),
        Some(_) => None,
        None if path.starts_with('/') => Some((NodePath(path.to_string()), false)),
        None => None,
    }
}

/// The value of [`ACTION_KEY`] for `action` on `path`.
pub fn action_value(action: &str, path: &NodePath) -> Vec<u8> {
    format!("{action} {path}").into_bytes()
}

/// The action and path an [`ACTION_KEY`] value names.
pub fn decode_action(value: &[u8]) -> Option<(String, NodePath)> {
    let text = std::str::from_utf8(value).ok()?;
    let (action, path) = text.split_once(' ')?;
    Some((action.to_string(), NodePath(path.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_as_go_cleans_them() {
        assert_eq!(NodePath::clean("").as_str(), "/");
        assert_eq!(NodePath::clean("/").as_str(), "/");
        assert_eq!(NodePath::clean("//a//b/").as_str(), "/a/b");
        assert_eq!(NodePath::clean("/a/./b/../c").as_str(), "/a/c");
        assert_eq!(NodePath::clean("/../..").as_str(), "/");
        assert_eq!(NodePath::clean("/a/b/c").depth(), 3);
        assert_eq!(NodePath::root().depth(), 0);
    }

    #[test]
    fn ancestors_and_containment() {
        let p = NodePath::clean("/a/b/c");
        let names: Vec<String> = p.ancestors().iter().map(|a| a.to_string()).collect();
        assert_eq!(names, ["/a", "/a/b"]);
        assert!(p.is_within(&NodePath::clean("/a")));
        assert!(p.is_within(&NodePath::root()));
        assert!(!NodePath::clean("/ab").is_within(&NodePath::clean("/a")));
        assert!(NodePath::clean("/a/_x").is_hidden());
    }

    #[test]
    fn a_listing_is_one_prefix_range_of_exactly_the_children() {
        let dir = NodePath::clean("/a");
        let prefix = children_prefix(&dir);
        assert!(file_key(&NodePath::clean("/a/b")).starts_with(&prefix));
        assert!(dir_key(&NodePath::clean("/a/c")).starts_with(&prefix));
        assert!(!file_key(&NodePath::clean("/a/b/c")).starts_with(&prefix));
        assert!(!file_key(&NodePath::clean("/ab")).starts_with(&prefix));
        assert!(file_key(&NodePath::clean("/x")).starts_with(&children_prefix(&NodePath::root())));
    }

    #[test]
    fn keys_decode_back() {
        let p = NodePath::clean("/a/b");
        assert_eq!(decode_key(&file_key(&p)), Some((p.clone(), false)));
        assert_eq!(decode_key(&dir_key(&p)), Some((p.clone(), true)));
        assert_eq!(decode_key(b"foo"), None);
        assert_eq!(decode_key(b"\0v2/xx"), None);
        assert_eq!(decode_key(ACTION_KEY), None);
        let v = action_value("set", &p);
        assert_eq!(decode_action(&v), Some(("set".to_string(), p)));
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }
}

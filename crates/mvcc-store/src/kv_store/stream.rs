//! A range read in chunks at one pinned revision: what etcd 3.7's `RangeStream` serves.
//!
//! [`KvStore::range_cursor`] resolves the revision and counts the matching keys once
//! (from the in-memory key index, no value read); each [`KvStore::next_range_chunk`]
//! reads the next keys in key order, about `max_bytes` of them, at that revision. The
//! server's memory holds one chunk at a time whatever the range's size, and a caller
//! that stops asking stops the reads. A compaction past the pinned revision fails the
//! next chunk with [`MvccError::Compacted`], as a unary read at that revision would.

use bytes::Bytes;
use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};

use super::KvStore;
use crate::error::MvccError;
use crate::key_range::KeyRange;
use crate::range;
use crate::stored::{load_kvs, Fields};

/// Keys read for the first chunk, before anything is known of their sizes.
const FIRST_CHUNK_KEYS: usize = 64;
/// The most keys one chunk reads, however small they are.
const MAX_CHUNK_KEYS: usize = 10_000;

/// Where a chunked range read stands; made by [`KvStore::range_cursor`].
#[derive(Debug, Clone)]
pub struct RangeCursor {
    /// The keys still to read (the request's range, then what is after the last key sent).
    keys: KeyRange,
    /// The pinned revision.
    revision: i64,
    /// The store's revision when the read began: the last chunk's header, as a unary
    /// Range's header has the current revision whatever revision it reads at.
    header_revision: i64,
    /// Matching keys at `revision`, counted once.
    count: i64,
    /// Key-values still to send under the request's limit.
    remaining: usize,
    /// Whether the limit cut the result short.
    more: bool,
    keys_only: bool,
    count_only: bool,
    /// Keys the next chunk reads.
    batch: usize,
    finished: bool,
}

impl RangeCursor {
    /// The revision every chunk is read at.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The number of keys in the range at [`RangeCursor::revision`].
    pub fn count(&self) -> i64 {
        self.count
    }

    /// Whether the last chunk was handed out.
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

impl KvStore {
    /// Starts a chunked read of `req` (key range, revision, limit, `keys_only`,
    /// `count_only`; sorting and revision filters are the caller's to refuse, they are
    /// ignored here): resolves the revision as a Range does and counts the keys once.
    pub fn range_cursor(&self, req: &RangeRequest) -> Result<RangeCursor, MvccError> {
        let keys = KeyRange::new(&req.key, &req.range_end);
        let state = self.state.read();
        let revision = range::resolve_revision(req.revision, state.current_rev, state.compact_rev)?;
        let count = state.tree.range(&keys, revision).count() as i64;
        let limit = usize::try_from(req.limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        Ok(RangeCursor {
            keys,
            revision,
            header_revision: state.current_rev,
            count,
            remaining: if req.count_only { 0 } else { limit },
            more: usize::try_from(count).unwrap_or(usize::MAX) > limit,
            keys_only: req.keys_only,
            count_only: req.count_only,
            batch: FIRST_CHUNK_KEYS,
            finished: false,
        })
    }

    /// The next chunk of `cursor`'s read, about `max_bytes` of key-values (at least
    /// one); `None` once the last chunk was returned. Only the last chunk has a header
    /// (with the store's revision when the read began; the caller fills the rest),
    /// `more` and `count`.
    pub fn next_range_chunk(
        &self,
        cursor: &mut RangeCursor,
        max_bytes: usize,
    ) -> Result<Option<RangeResponse>, MvccError> {
        if cursor.finished {
            return Ok(None);
        }
        let db = self.backend.db();
        let (revs, last_key, exhausted, snapshot) = {
            let state = self.state.read();
            if cursor.revision < state.compact_rev {
                return Err(MvccError::Compacted);
            }
            let want = cursor.batch.min(cursor.remaining);
            let mut found = state.tree.range(&cursor.keys, cursor.revision);
            let mut revs = Vec::with_capacity(want.min(MAX_CHUNK_KEYS));
            let mut last_key: Option<Bytes> = None;
            for (key, at) in found.by_ref().take(want) {
                revs.push(at.modified);
                last_key = Some(key.clone());
            }
            let exhausted = revs.len() == cursor.remaining || found.next().is_none();
            // Taken under the lock, as Range does: a compaction removes revisions only
            // after it published itself, so the snapshot has every one listed.
            let snapshot = (!revs.is_empty()).then(|| db.snapshot());
            (revs, last_key, exhausted, snapshot)
        };
        let fields = if cursor.keys_only {
            Fields::WithoutValue
        } else {
            Fields::All
        };
        let kvs = load_kvs(&self.backend, snapshot.as_ref(), &revs, fields)?;
        drop(snapshot);
        cursor.remaining -= kvs.len();
        let bytes: usize = kvs
            .iter()
            .map(|kv| kv.key.len() + kv.value.len() + 32)
            .sum();
        if !kvs.is_empty() {
            // The next chunk reads as many keys as fit `max_bytes` at this chunk's sizes.
            let per_key = (bytes / kvs.len()).max(1);
            cursor.batch = (max_bytes / per_key).clamp(1, MAX_CHUNK_KEYS);
        }
        if let (Some(last), KeyRange::Span { end, .. }) = (last_key, &cursor.keys) {
            // The smallest key after `last`.
            let mut next = last.to_vec();
            next.push(0);
            cursor.keys = KeyRange::Span {
                start: Bytes::from(next),
                end: end.clone(),
            };
        }
        let last = exhausted || cursor.count_only || matches!(cursor.keys, KeyRange::Key(_));
        let chunk = if last {
            cursor.finished = true;
            RangeResponse {
                header: Some(ResponseHeader {
                    revision: cursor.header_revision,
                    ..Default::default()
                }),
                kvs,
                more: cursor.more,
                count: cursor.count,
            }
        } else {
            RangeResponse {
                kvs,
                ..Default::default()
            }
        };
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::etcdserverpb::{CompactionRequest, PutRequest};

    use super::*;
    use crate::backend::BackendBatch;
    use crate::test_util::new_store;

    fn put(store: &KvStore, index: u64, key: &str, value: &[u8]) {
        let req = PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.to_vec().into(),
            ..Default::default()
        };
        store.put(index, &req, BackendBatch::new()).unwrap();
    }

    fn request(key: &str, range_end: &str) -> RangeRequest {
        RangeRequest {
            key: key.as_bytes().to_vec().into(),
            range_end: range_end.as_bytes().to_vec().into(),
            ..Default::default()
        }
    }

    /// Every chunk of `req`, each at most `max_bytes` (after the first).
    fn chunks(store: &KvStore, req: &RangeRequest, max_bytes: usize) -> Vec<RangeResponse> {
        let mut cursor = store.range_cursor(req).unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = store.next_range_chunk(&mut cursor, max_bytes).unwrap() {
            out.push(chunk);
        }
        assert!(cursor.is_finished());
        out
    }

    /// The chunks merged as a client merges them.
    fn merged(chunks: &[RangeResponse]) -> RangeResponse {
        let (last, rest) = chunks.split_last().expect("at least one chunk");
        for chunk in rest {
            assert_eq!(
                (chunk.header.is_some(), chunk.more, chunk.count),
                (false, false, 0)
            );
        }
        let mut out = last.clone();
        out.kvs = chunks.iter().flat_map(|c| c.kvs.clone()).collect();
        out
    }

    #[test]
    fn merged_chunks_equal_the_unary_range_for_every_shape() {
        let (_dir, store) = new_store();
        for i in 0..500u64 {
            let value = vec![b'v'; (i as usize * 37) % 700];
            put(&store, i + 1, &format!("k/{i:04}"), &value);
        }
        put(&store, 501, "k/0007", b"rewritten");
        put(&store, 502, "z", b"outside");
        let shapes = [
            request("k/", "k0"),
            request("k/0100", "k/0200"),
            request("k/0042", ""),
            request("k/nothing", ""),
            request("a", "b"),
            request("\0", "\0"),
            RangeRequest {
                limit: 123,
                ..request("k/", "k0")
            },
            RangeRequest {
                limit: 5000,
                ..request("k/", "k0")
            },
            RangeRequest {
                keys_only: true,
                ..request("k/", "k0")
            },
            RangeRequest {
                count_only: true,
                ..request("k/", "k0")
            },
            RangeRequest {
                revision: 250,
                ..request("k/", "k0")
            },
        ];
        for req in shapes {
            let unary = store.range(&req).unwrap();
            let parts = chunks(&store, &req, 4096);
            let streamed = merged(&parts);
            assert_eq!(streamed.kvs, unary.kvs, "{req:?}");
            assert_eq!(
                (streamed.more, streamed.count),
                (unary.more, unary.count),
                "{req:?}"
            );
            assert_eq!(streamed.header, unary.header, "{req:?}");
        }
        // Big ranges come in several chunks of about the budget.
        let parts = chunks(&store, &request("k/", "k0"), 4096);
        assert!(parts.len() > 10, "{} chunks", parts.len());
        for chunk in &parts[1..parts.len() - 1] {
            let bytes: usize = chunk
                .kvs
                .iter()
                .map(|kv| kv.key.len() + kv.value.len())
                .sum();
            assert!(bytes <= 3 * 4096, "{bytes} bytes in a chunk");
        }
    }

    #[test]
    fn the_revision_stays_pinned_and_a_compaction_past_it_fails_the_next_chunk() {
        let (_dir, store) = new_store();
        for i in 0..100u64 {
            put(&store, i + 1, &format!("k/{i:03}"), &[b'x'; 100]);
        }
        let req = request("k/", "k0");
        let before = store.range(&req).unwrap();
        let mut cursor = store.range_cursor(&req).unwrap();
        let first = store.next_range_chunk(&mut cursor, 1000).unwrap().unwrap();
        // Writes after the first chunk are not seen.
        for i in 0..100u64 {
            put(&store, 101 + i, &format!("k/{i:03}"), b"new");
        }
        put(&store, 201, "k/999", b"new key");
        let mut kvs = first.kvs;
        let mut last = None;
        while let Some(chunk) = store.next_range_chunk(&mut cursor, 1000).unwrap() {
            kvs.extend(chunk.kvs.clone());
            last = Some(chunk);
        }
        assert_eq!(kvs, before.kvs);
        assert_eq!(last.unwrap().count, 100);

        let mut cursor = store
            .range_cursor(&RangeRequest {
                revision: 150,
                ..req
            })
            .unwrap();
        store.next_range_chunk(&mut cursor, 1000).unwrap().unwrap();
        let compact = CompactionRequest {
            revision: 190,
            ..Default::default()
        };
        store.compact(202, &compact).unwrap();
        assert_eq!(
            store.next_range_chunk(&mut cursor, 1000),
            Err(MvccError::Compacted)
        );
    }
}

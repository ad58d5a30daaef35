//! etcd's backend file, the bbolt format, without RocksDB or anything else of cairn:
//! [`DbWriter`] writes a file of named buckets of sorted key-value pairs, streaming
//! (memory holds one page per bucket level, not the data), and [`DbReader`] reads one
//! back page by page. cairn uses it for etcd-format snapshots: a file etcd's own tools
//! (`etcdctl snapshot status`, `etcdutl snapshot restore`) take, and one etcd saved.
//!
//! The layout, as bbolt documents it (all integers little-endian, pages of
//! [`PAGE_SIZE`] bytes, a page that does not fit running on into `overflow` more):
//!
//! | page | what |
//! |---|---|
//! | 0, 1 | meta: magic, version 2, page size, the root bucket's page, the freelist's page, the page count, the transaction id, an FNV-1a checksum |
//! | 2 | the freelist (empty: every other page is in use) |
//! | 3.. | leaf and branch pages of each bucket's B+tree, then the root bucket's leaf, whose values are the buckets' headers |
//!
//! A page starts with a 16-byte header (id, flags, element count, overflow); a leaf's
//! elements are (flags, pos, key size, value size), a branch's (pos, key size, child
//! page), each `pos` counted from the element itself to its key.
//!
//! ```
//! use cairn_bbolt::{DbReader, DbWriter};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("db");
//! let mut writer = DbWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
//! let mut bucket = writer.bucket(b"key");
//! for i in 0..1000u32 {
//!     bucket.put(&i.to_be_bytes(), b"value").unwrap();
//! }
//! bucket.finish().unwrap();
//! writer.finish().unwrap();
//!
//! let reader = DbReader::open(std::fs::File::open(&path).unwrap()).unwrap();
//! assert_eq!(reader.buckets().unwrap(), vec![b"key".to_vec()]);
//! let mut n = 0u32;
//! reader.for_each(b"key", |k, v| {
//!     assert_eq!((k, v), (&n.to_be_bytes()[..], &b"value"[..]));
//!     n += 1;
//!     Ok(())
//! }).unwrap();
//! assert_eq!(n, 1000);
//! ```
#![deny(missing_docs)]

mod format;
mod read;
mod write;

pub use format::{BboltError, MAGIC, PAGE_SIZE, VERSION};
pub use read::DbReader;
pub use write::{BucketWriter, DbWriter};

#[cfg(test)]
mod tests;

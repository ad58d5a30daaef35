//! The snapshot archive, as the store uses it: the format lives in
//! [`cairn_snapshot_archive`] (no RocksDB there, so its decoder is tested and
//! fuzzed on its own); this module re-exports it with [`unpack`] failing
//! with the store's error type.
//!
//! A member ships its state by taking a [`Backend::checkpoint`](crate::Backend::checkpoint),
//! streaming it with an [`ArchiveReader`], and on the other side rebuilding
//! the directory with [`unpack`] before
//! [`KvStore::restore_from_checkpoint`](crate::KvStore::restore_from_checkpoint).

use std::io::Read;
use std::path::Path;

pub use cairn_snapshot_archive::{
    verify, ArchiveError, ArchiveReader, UnpackError, MAGIC, MAX_NAME_LEN, VERSION,
};

use crate::error::MvccError;

/// [`cairn_snapshot_archive::unpack`]: a rejected archive is
/// [`MvccError::Archive`], an I/O failure [`MvccError::Io`].
pub fn unpack(reader: impl Read, dir: &Path) -> Result<(), MvccError> {
    cairn_snapshot_archive::unpack(reader, dir).map_err(|err| match err {
        UnpackError::Archive(err) => MvccError::Archive(err),
        UnpackError::Io(msg) => MvccError::Io(msg),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use crate::{Backend, KvStore};

    #[test]
    fn a_store_travels_through_checkpoint_archive_unpack_and_restore() {
        let (_dir, source) = new_store();
        put(&source, "foo", "bar");
        put(&source, "foo", "baz");
        put(&source, "zoo", "1");
        let tmp = tempfile::tempdir().unwrap();
        let checkpoint = checkpoint(&source, &tmp, "checkpoint");

        let mut archive = Vec::new();
        std::io::copy(&mut ArchiveReader::new(&checkpoint).unwrap(), &mut archive).unwrap();
        let received = tmp.path().join("received");
        unpack(&archive[..], &received).unwrap();

        let target_dir = tempfile::tempdir().unwrap();
        let target = KvStore::open(Backend::open(target_dir.path()).unwrap()).unwrap();
        target.restore_from_checkpoint(&received).unwrap();
        assert_eq!(all_kvs(&target), all_kvs(&source));
        assert_eq!(target.current_revision(), 4);
        assert_eq!(target.hash_kv(0).unwrap(), source.hash_kv(0).unwrap());
    }
}

//! The format's numbers and the crate's error.

/// The page size cairn writes (etcd's on Linux); a reader takes the file's own.
pub const PAGE_SIZE: usize = 4096;
/// bbolt's magic number, in every meta page.
pub const MAGIC: u32 = 0xED0C_DAED;
/// The file format version bbolt writes.
pub const VERSION: u32 = 2;

pub(crate) const PAGE_HEADER: usize = 16;
pub(crate) const ELEMENT: usize = 16;
pub(crate) const BUCKET_HEADER: usize = 16;
pub(crate) const BRANCH_PAGE: u16 = 0x01;
pub(crate) const LEAF_PAGE: u16 = 0x02;
pub(crate) const META_PAGE: u16 = 0x04;
pub(crate) const FREELIST_PAGE: u16 = 0x10;
pub(crate) const BUCKET_LEAF: u32 = 0x01;

/// Why a file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BboltError {
    /// Reading or writing the file failed.
    #[error("bbolt file: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a bbolt file, or is damaged.
    #[error("not a valid bbolt file: {0}")]
    Invalid(String),
    /// Keys given out of order (they must be strictly increasing).
    #[error("keys out of order in bucket {0:?}")]
    Unsorted(String),
}

/// FNV-1a, 64 bits: the meta page's checksum.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    use std::hash::Hasher as _;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

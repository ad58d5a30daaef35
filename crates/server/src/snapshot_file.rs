//! The shape of a snapshot file in cairn's earlier format, which `cairn snapshot restore`
//! still reads (`Maintenance.Snapshot` now streams etcd's format, see
//! [`crate::etcd_snapshot`]): cairn's archive, zeros up to a 512-byte boundary, then a
//! 32-byte trailer naming the archive's length.

/// Marks the trailer ending a snapshot stream.
pub(crate) const TRAILER_MAGIC: &[u8; 16] = b"CAIRN-SNAP-TRAIL";
/// The trailer's length: etcd ends a snapshot with its 32-byte sha256 right after a
/// 512-byte boundary, and etcdctl refuses a download whose length is not of that shape.
pub(crate) const TRAILER_BYTES: u64 = 32;
/// The length of the archive at the start of a snapshot file of `file_len` bytes ending
/// in `trailer` (its last [`TRAILER_BYTES`]), or the whole file for a bare archive.
pub(crate) fn archive_len(file_len: u64, trailer: &[u8]) -> u64 {
    match trailer.strip_prefix(TRAILER_MAGIC.as_slice()) {
        Some(rest) if rest.len() >= 8 => {
            let mut len = [0u8; 8];
            len.copy_from_slice(&rest[..8]);
            u64::from_be_bytes(len).min(file_len)
        }
        _ => file_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trailer_names_the_archive_length() {
        let mut trailer = TRAILER_MAGIC.to_vec();
        trailer.extend_from_slice(&48_309u64.to_be_bytes());
        trailer.resize(TRAILER_BYTES as usize, 0);
        assert_eq!(archive_len(49_184, &trailer), 48_309);
        assert_eq!(archive_len(100, &[0u8; 32]), 100);
    }
}

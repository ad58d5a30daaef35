//! The shape of a snapshot file as `Maintenance.Snapshot` streams it and `cairn snapshot
//! restore` reads it: cairn's archive, zeros up to a 512-byte boundary, then a 32-byte
//! trailer naming the archive's length (etcdctl checks that a download ends with 32 bytes
//! after a sector boundary, where etcd puts its sha256).

/// Marks the trailer ending a snapshot stream.
pub(crate) const TRAILER_MAGIC: &[u8; 16] = b"CAIRN-SNAP-TRAIL";
/// The trailer's length: etcd ends a snapshot with its 32-byte sha256 right after a
/// 512-byte boundary, and etcdctl refuses a download whose length is not of that shape.
pub(crate) const TRAILER_BYTES: u64 = 32;
pub(crate) const SECTOR_BYTES: u64 = 512;

/// What follows an archive of `archive_len` bytes in a snapshot stream: zeros up to a
/// sector boundary, then the trailer (magic, the archive's length, zeros). The archive
/// carries its own checksum.
pub(crate) fn stream_tail(archive_len: u64) -> Vec<u8> {
    let padding = (SECTOR_BYTES - archive_len % SECTOR_BYTES) % SECTOR_BYTES;
    let mut tail = vec![0u8; padding as usize];
    tail.extend_from_slice(TRAILER_MAGIC);
    tail.extend_from_slice(&archive_len.to_be_bytes());
    tail.resize(padding as usize + TRAILER_BYTES as usize, 0);
    tail
}

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
    fn stream_tail_has_etcds_shape_and_names_the_archive_length() {
        for len in [0u64, 1, 479, 480, 511, 512, 48_309] {
            let tail = stream_tail(len);
            let file_len = len + tail.len() as u64;
            assert_eq!(file_len % SECTOR_BYTES, TRAILER_BYTES, "archive of {len}");
            let trailer = &tail[tail.len() - TRAILER_BYTES as usize..];
            assert_eq!(archive_len(file_len, trailer), len);
        }
        assert_eq!(archive_len(100, &[0u8; 32]), 100);
    }
}

//! The snapshot archive a leader streams to a follower, or a client restores from:
//! `verify` on any bytes, and `unpack` into a fresh directory when they verify (or when
//! the first input byte asks for it). Both agree on every archive error, a verified
//! archive unpacks to exactly the files it lists, and a refused one leaves nothing.
//! Bit 0 of the first byte appends a correct checksum, so that the fuzzer reaches the end
//! of the format. Set TMPDIR to a tmpfs (/dev/shm): unpacking fsyncs every file.
#![no_main]

use cairn_snapshot_archive::{unpack, verify, UnpackError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut archive = body.to_vec();
    if mode & 1 == 1 {
        let crc = crc32fast::hash(&archive);
        archive.extend_from_slice(&crc.to_be_bytes());
    }
    let verified = verify(&archive[..]);
    if verified.is_err() && mode & 2 == 0 {
        return;
    }
    let parent = tempfile::tempdir().expect("a temporary directory");
    let target = parent.path().join("out");
    let unpacked = unpack(&archive[..], &target);
    match (&verified, &unpacked) {
        (Ok(files), Ok(())) => {
            for (name, len) in files {
                let meta = std::fs::symlink_metadata(target.join(name)).expect("a listed file");
                assert!(meta.is_file() && meta.len() == *len, "{name}");
            }
            assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
        }
        // The file system may refuse what the format allows (a name component too long).
        (Ok(_), Err(UnpackError::Io(_))) => {}
        (Err(UnpackError::Archive(a)), Err(UnpackError::Archive(b))) => assert_eq!(a, b),
        (Err(UnpackError::Archive(_)), Err(UnpackError::Io(_))) => {}
        other => panic!("verify and unpack disagree: {other:?}"),
    }
    if unpacked.is_err() {
        let left: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
});

use std::io::Read;

use super::*;

/// An archive of `files` written by hand (so tests can make bad ones), with
/// a correct checksum.
fn archive_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    for (name, data) in files {
        out.push(TAG_FILE);
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(data.len() as u64).to_be_bytes());
        out.extend_from_slice(data);
    }
    out.push(TAG_END);
    with_checksum(out)
}

fn with_checksum(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    body
}

/// A directory with files at two depths, one empty and one large.
fn sample_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("CURRENT"), b"MANIFEST-000001\n").unwrap();
    std::fs::write(dir.path().join("empty"), b"").unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("000009.sst"), &big).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/nested"), b"inner").unwrap();
    dir
}

/// Every file under `dir`, by relative name.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    collect_files(dir, "", &mut files).unwrap();
    let mut out: Vec<_> = files
        .into_iter()
        .map(|f| (f.name, std::fs::read(f.path).unwrap()))
        .collect();
    out.sort();
    out
}

/// Reads all of `reader` in reads of at most `chunk` bytes.
fn read_in_chunks(mut reader: impl Read, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Unpacks `archive` into a fresh directory and returns the error, checking
/// that nothing at all was left behind.
fn unpack_err(archive: &[u8]) -> UnpackError {
    let parent = tempfile::tempdir().unwrap();
    let err = unpack(archive, &parent.path().join("out")).unwrap_err();
    let left: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(
        verify(archive).unwrap_err(),
        err,
        "verify disagrees with unpack"
    );
    err
}

#[test]
fn archive_round_trips_in_any_chunk_size() {
    let source = sample_dir();
    for chunk in [1, 7, 64 * 1024] {
        let reader = ArchiveReader::new(source.path()).unwrap();
        let len = reader.len();
        let archive = read_in_chunks(reader, chunk);
        assert_eq!(archive.len() as u64, len);
        assert_eq!(&archive[..8], b"CAIRNSNP");

        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("restored");
        unpack(&archive[..], &target).unwrap();
        assert_eq!(contents(&target), contents(source.path()));
        let listed: Vec<_> = contents(&target)
            .into_iter()
            .map(|(name, data)| (name, data.len() as u64))
            .collect();
        assert_eq!(verify(&archive[..]).unwrap(), listed);
        // Only the target: the staging directory is gone.
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
    }
}

#[test]
fn archive_layout_is_the_documented_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b"), b"22").unwrap();
    std::fs::write(dir.path().join("a"), b"1").unwrap();
    let archive = read_in_chunks(ArchiveReader::new(dir.path()).unwrap(), 4096);
    assert_eq!(archive, archive_of(&[("a", b"1"), ("b", b"22")]));
}

#[test]
fn an_empty_directory_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let archive = read_in_chunks(ArchiveReader::new(dir.path()).unwrap(), 3);
    assert_eq!(archive.len(), 17);
    let parent = tempfile::tempdir().unwrap();
    unpack(&archive[..], &parent.path().join("out")).unwrap();
    assert!(contents(&parent.path().join("out")).is_empty());
}

#[test]
fn every_truncation_is_rejected_and_leaves_nothing() {
    let archive = archive_of(&[("CURRENT", b"MANIFEST\n"), ("sub/x", b"abc")]);
    for len in 0..archive.len() {
        assert_eq!(
            unpack_err(&archive[..len]),
            UnpackError::Archive(ArchiveError::Truncated),
            "truncated to {len}"
        );
    }
}

#[test]
fn every_flipped_byte_is_rejected() {
    let archive = archive_of(&[("CURRENT", b"MANIFEST\n"), ("sub/x", b"abc")]);
    for at in 0..archive.len() {
        let mut bad = archive.clone();
        bad[at] ^= 0x20;
        assert!(
            matches!(unpack_err(&bad), UnpackError::Archive(_)),
            "flipped byte {at}"
        );
    }
}

#[test]
fn bad_headers_and_checksums_get_their_own_errors() {
    let good = archive_of(&[("a", b"data")]);

    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert_eq!(
        unpack_err(&bad_magic),
        UnpackError::Archive(ArchiveError::BadMagic)
    );

    let mut version = good[..good.len() - 4].to_vec();
    version[8..12].copy_from_slice(&2u32.to_be_bytes());
    assert_eq!(
        unpack_err(&with_checksum(version)),
        UnpackError::Archive(ArchiveError::UnsupportedVersion(2))
    );

    let mut body = good.clone();
    let data_at = good.len() - 4 - 1 - 4;
    body[data_at] = b'X';
    let computed = crc32fast::hash(&body[..body.len() - 4]);
    let stored = crc32fast::hash(&good[..good.len() - 4]);
    assert_eq!(
        unpack_err(&body),
        UnpackError::Archive(ArchiveError::ChecksumMismatch { stored, computed })
    );

    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        unpack_err(&trailing),
        UnpackError::Archive(ArchiveError::TrailingData)
    );

    let mut tag = good[..12].to_vec();
    tag.push(7);
    assert_eq!(
        unpack_err(&with_checksum(tag)),
        UnpackError::Archive(ArchiveError::BadTag(7))
    );

    assert_eq!(
        unpack_err(&archive_of(&[("a", b"1"), ("a", b"2")])),
        UnpackError::Archive(ArchiveError::DuplicateName("a".into()))
    );
    assert!(matches!(
        unpack_err(&archive_of(&[("a", b"1"), ("a/b", b"2")])),
        UnpackError::Archive(_)
    ));
}

#[test]
fn names_that_leave_the_directory_are_rejected() {
    let outside = tempfile::tempdir().unwrap();
    let absolute = outside.path().join("pwned");
    for name in [
        "../pwned",
        "a/../../pwned",
        "a/..",
        absolute.to_str().unwrap(),
        "/etc/pwned",
        "",
        ".",
        "./a",
        "a//b",
        "a/",
        "a\\..\\b",
        "a\0b",
    ] {
        assert_eq!(
            unpack_err(&archive_of(&[("ok", b"1"), (name, b"x")])),
            UnpackError::Archive(ArchiveError::BadName(name.into())),
            "{name:?}"
        );
    }
    assert!(!absolute.exists());

    let mut long = archive_of(&[])[..12].to_vec();
    long.push(TAG_FILE);
    long.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        unpack_err(&with_checksum(long)),
        UnpackError::Archive(ArchiveError::BadName(_))
    ));
}

#[test]
fn unpack_refuses_an_existing_directory() {
    let parent = tempfile::tempdir().unwrap();
    std::fs::create_dir(parent.path().join("out")).unwrap();
    std::fs::write(parent.path().join("out/keep"), b"mine").unwrap();
    let err = unpack(&archive_of(&[("a", b"1")])[..], &parent.path().join("out")).unwrap_err();
    assert!(matches!(err, UnpackError::Io(_)), "{err:?}");
    assert_eq!(
        std::fs::read(parent.path().join("out/keep")).unwrap(),
        b"mine"
    );
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
}

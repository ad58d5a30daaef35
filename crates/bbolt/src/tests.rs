use super::*;
use crate::format::PAGE_HEADER;

/// A bucket's pairs.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn roundtrip(buckets: &[(&[u8], Pairs)]) -> Vec<(Vec<u8>, Pairs)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut writer = DbWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
    for (name, pairs) in buckets {
        let mut bucket = writer.bucket(name);
        for (k, v) in pairs {
            bucket.put(k, v).unwrap();
        }
        bucket.finish().unwrap();
    }
    writer.finish().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(len % PAGE_SIZE as u64, 0);
    let reader = DbReader::open(std::fs::File::open(&path).unwrap()).unwrap();
    reader
        .buckets()
        .unwrap()
        .into_iter()
        .map(|name| {
            let mut pairs = Vec::new();
            reader
                .for_each(&name, |k, v| {
                    pairs.push((k.to_vec(), v.to_vec()));
                    Ok(())
                })
                .unwrap();
            (name, pairs)
        })
        .collect()
}

#[test]
fn buckets_of_every_size_read_back_in_order() {
    let many: Vec<_> = (0..100_000u32)
        .map(|i| (i.to_be_bytes().to_vec(), vec![b'v'; (i % 97) as usize]))
        .collect();
    let huge = vec![(b"big".to_vec(), vec![7u8; 3 * PAGE_SIZE + 5])];
    let read = roundtrip(&[
        (b"zeta", many.clone()),
        (b"alpha", Vec::new()),
        (b"huge", huge.clone()),
    ]);
    assert_eq!(
        read,
        vec![
            (b"alpha".to_vec(), Vec::new()),
            (b"huge".to_vec(), huge),
            (b"zeta".to_vec(), many),
        ]
    );
}

#[test]
fn keys_out_of_order_and_damaged_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut writer = DbWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
    let mut bucket = writer.bucket(b"b");
    bucket.put(b"b", b"").unwrap();
    assert!(matches!(
        bucket.put(b"a", b""),
        Err(BboltError::Unsorted(_))
    ));
    bucket.finish().unwrap();
    writer.finish().unwrap();
    // A flipped byte in both meta pages: no valid meta.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[PAGE_HEADER + 20] ^= 1;
    bytes[PAGE_SIZE + PAGE_HEADER + 20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = DbReader::open(std::fs::File::open(&path).unwrap())
        .err()
        .unwrap();
    assert!(err.to_string().contains("checksum"), "{err}");
    // Not a bbolt file at all.
    std::fs::write(&path, vec![0u8; 3 * PAGE_SIZE]).unwrap();
    assert!(DbReader::open(std::fs::File::open(&path).unwrap()).is_err());
}

#[test]
fn damaged_pages_give_errors_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut writer = DbWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
    for name in [&b"a"[..], b"b"] {
        let mut bucket = writer.bucket(name);
        for i in 0..2000u32 {
            bucket.put(&i.to_be_bytes(), &[name[0]; 40]).unwrap();
        }
        bucket.finish().unwrap();
    }
    writer.finish().unwrap();
    let valid = std::fs::read(&path).unwrap();
    // A fixed sequence of pseudo-random byte changes past the meta pages.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let damaged = dir.path().join("damaged");
    for _ in 0..300 {
        let mut bytes = valid.clone();
        for _ in 0..1 + next() % 8 {
            let at = 2 * PAGE_SIZE + (next() as usize) % (bytes.len() - 2 * PAGE_SIZE);
            bytes[at] = next() as u8;
        }
        std::fs::write(&damaged, &bytes).unwrap();
        if let Ok(reader) = DbReader::open(std::fs::File::open(&damaged).unwrap()) {
            for name in reader.buckets().unwrap_or_default() {
                let _ = reader.for_each(&name, |_, _| Ok(()));
            }
        }
    }
}

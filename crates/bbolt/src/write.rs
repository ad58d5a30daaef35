//! Writing a bbolt file: each bucket's B+tree built bottom-up from sorted pairs, leaf
//! pages written as they fill, branch levels once the bucket ends, then the root
//! bucket, the freelist and the two meta pages.

use std::io::{Seek, SeekFrom, Write};

use crate::format::{
    fnv1a64, BboltError, BRANCH_PAGE, BUCKET_HEADER, BUCKET_LEAF, ELEMENT, FREELIST_PAGE,
    LEAF_PAGE, MAGIC, META_PAGE, PAGE_HEADER, PAGE_SIZE, VERSION,
};

/// Writes a bbolt file: buckets one after the other, each with its keys in strictly
/// increasing order, then [`finish`](DbWriter::finish).
pub struct DbWriter<W: Write + Seek> {
    out: W,
    next_page: u64,
    /// (bucket name, its root page), in the order written.
    buckets: Vec<(Vec<u8>, u64)>,
}

impl<W: Write + Seek> DbWriter<W> {
    /// A writer at the start of `out` (the meta and freelist pages are written last).
    pub fn new(mut out: W) -> Result<Self, BboltError> {
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&vec![0u8; 3 * PAGE_SIZE])?;
        Ok(DbWriter {
            out,
            next_page: 3,
            buckets: Vec::new(),
        })
    }

    /// Starts bucket `name` (names must differ).
    pub fn bucket(&mut self, name: &[u8]) -> BucketWriter<'_, W> {
        BucketWriter {
            db: self,
            name: name.to_vec(),
            leaf: Node::default(),
            children: Vec::new(),
            last_key: None,
        }
    }

    /// Writes `node` as the next page(s); its page id.
    fn write_node(&mut self, node: &Node, flags: u16) -> Result<u64, BboltError> {
        let id = self.next_page;
        let size = node.size();
        let pages = size.div_ceil(PAGE_SIZE).max(1);
        let mut page = vec![0u8; pages * PAGE_SIZE];
        header(&mut page, id, flags, node.entries.len(), pages - 1)?;
        let mut data = PAGE_HEADER + node.entries.len() * ELEMENT;
        for (i, entry) in node.entries.iter().enumerate() {
            let at = PAGE_HEADER + i * ELEMENT;
            let pos = u32::try_from(data - at).map_err(too_big)?;
            let ksize = u32::try_from(entry.key.len()).map_err(too_big)?;
            if flags == BRANCH_PAGE {
                put_u32(&mut page, at, pos);
                put_u32(&mut page, at + 4, ksize);
                put_u64(&mut page, at + 8, entry.child);
            } else {
                put_u32(&mut page, at, entry.flags);
                put_u32(&mut page, at + 4, pos);
                put_u32(&mut page, at + 8, ksize);
                put_u32(
                    &mut page,
                    at + 12,
                    u32::try_from(entry.value.len()).map_err(too_big)?,
                );
            }
            page[data..data + entry.key.len()].copy_from_slice(&entry.key);
            data += entry.key.len();
            page[data..data + entry.value.len()].copy_from_slice(&entry.value);
            data += entry.value.len();
        }
        self.out.write_all(&page)?;
        self.next_page += pages as u64;
        Ok(id)
    }

    /// Writes the root bucket, the freelist and the meta pages; the output.
    pub fn finish(mut self) -> Result<W, BboltError> {
        let mut buckets = std::mem::take(&mut self.buckets);
        buckets.sort();
        if buckets.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(BboltError::Unsorted(
                "<root>: a bucket written twice".into(),
            ));
        }
        let mut root = Node::default();
        for (name, page) in buckets {
            let mut value = vec![0u8; BUCKET_HEADER];
            put_u64(&mut value, 0, page);
            root.entries.push(Entry {
                flags: BUCKET_LEAF,
                key: name,
                value,
                child: 0,
            });
        }
        // The root bucket's names fit one leaf (a handful of buckets).
        let root_page = self.write_node(&root, LEAF_PAGE)?;
        let pages = self.next_page;
        // Freelist: nothing is free.
        let mut freelist = vec![0u8; PAGE_SIZE];
        header(&mut freelist, 2, FREELIST_PAGE, 0, 0)?;
        self.out.seek(SeekFrom::Start(2 * PAGE_SIZE as u64))?;
        self.out.write_all(&freelist)?;
        for txid in [0u64, 1] {
            let mut page = vec![0u8; PAGE_SIZE];
            header(&mut page, txid, META_PAGE, 0, 0)?;
            let m = PAGE_HEADER;
            put_u32(&mut page, m, MAGIC);
            put_u32(&mut page, m + 4, VERSION);
            put_u32(&mut page, m + 8, PAGE_SIZE as u32);
            put_u32(&mut page, m + 12, 0);
            put_u64(&mut page, m + 16, root_page);
            put_u64(&mut page, m + 24, 0);
            put_u64(&mut page, m + 32, 2);
            put_u64(&mut page, m + 40, pages);
            put_u64(&mut page, m + 48, txid);
            let checksum = fnv1a64(&page[m..m + 56]);
            put_u64(&mut page, m + 56, checksum);
            self.out.seek(SeekFrom::Start(txid * PAGE_SIZE as u64))?;
            self.out.write_all(&page)?;
        }
        self.out.seek(SeekFrom::Start(pages * PAGE_SIZE as u64))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes one bucket: [`put`](BucketWriter::put) in key order, then
/// [`finish`](BucketWriter::finish).
pub struct BucketWriter<'a, W: Write + Seek> {
    db: &'a mut DbWriter<W>,
    name: Vec<u8>,
    leaf: Node,
    /// Per level above the leaves, the (first key, page) of the pages written.
    children: Vec<(Vec<u8>, u64)>,
    last_key: Option<Vec<u8>>,
}

impl<W: Write + Seek> BucketWriter<'_, W> {
    /// Adds `key = value`; `key` must sort after the previous one.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BboltError> {
        if self.last_key.as_deref().is_some_and(|last| last >= key) {
            return Err(BboltError::Unsorted(
                String::from_utf8_lossy(&self.name).into_owned(),
            ));
        }
        self.last_key = Some(key.to_vec());
        let entry = Entry {
            flags: 0,
            key: key.to_vec(),
            value: value.to_vec(),
            child: 0,
        };
        if !self.leaf.entries.is_empty() && self.leaf.size() + entry.size() > PAGE_SIZE {
            self.flush_leaf()?;
        }
        self.leaf.entries.push(entry);
        Ok(())
    }

    fn flush_leaf(&mut self) -> Result<(), BboltError> {
        let leaf = std::mem::take(&mut self.leaf);
        let first = leaf.entries[0].key.clone();
        let page = self.db.write_node(&leaf, LEAF_PAGE)?;
        self.children.push((first, page));
        Ok(())
    }

    /// Writes what is left and the branch pages above; the bucket is then part of the
    /// file.
    pub fn finish(mut self) -> Result<(), BboltError> {
        if !self.leaf.entries.is_empty() || self.children.is_empty() {
            // An empty bucket is one empty leaf.
            let leaf = std::mem::take(&mut self.leaf);
            let first = leaf
                .entries
                .first()
                .map(|e| e.key.clone())
                .unwrap_or_default();
            let page = self.db.write_node(&leaf, LEAF_PAGE)?;
            self.children.push((first, page));
        }
        let mut level = std::mem::take(&mut self.children);
        while level.len() > 1 {
            let mut next = Vec::new();
            let mut node = Node::default();
            for (key, child) in level {
                let entry = Entry {
                    flags: 0,
                    key,
                    value: Vec::new(),
                    child,
                };
                if !node.entries.is_empty() && node.size() + entry.size() > PAGE_SIZE {
                    let first = node.entries[0].key.clone();
                    next.push((first, self.db.write_node(&node, BRANCH_PAGE)?));
                    node = Node::default();
                }
                node.entries.push(entry);
            }
            let first = node.entries[0].key.clone();
            next.push((first, self.db.write_node(&node, BRANCH_PAGE)?));
            level = next;
        }
        let root = level[0].1;
        self.db.buckets.push((self.name.clone(), root));
        Ok(())
    }
}

/// One page's elements before it is written.
#[derive(Default)]
struct Node {
    entries: Vec<Entry>,
}

impl Node {
    fn size(&self) -> usize {
        PAGE_HEADER + self.entries.iter().map(Entry::size).sum::<usize>()
    }
}

struct Entry {
    flags: u32,
    key: Vec<u8>,
    value: Vec<u8>,
    /// A branch element's child page.
    child: u64,
}

impl Entry {
    fn size(&self) -> usize {
        ELEMENT + self.key.len() + self.value.len()
    }
}

fn header(
    page: &mut [u8],
    id: u64,
    flags: u16,
    count: usize,
    overflow: usize,
) -> Result<(), BboltError> {
    put_u64(page, 0, id);
    page[8..10].copy_from_slice(&flags.to_le_bytes());
    let count = u16::try_from(count).map_err(too_big)?;
    page[10..12].copy_from_slice(&count.to_le_bytes());
    put_u32(page, 12, u32::try_from(overflow).map_err(too_big)?);
    Ok(())
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn too_big(e: impl std::fmt::Display) -> BboltError {
    BboltError::Invalid(format!("an element too large for the format: {e}"))
}

//! Reading a bbolt file page by page (a file of any size, without mapping it).

use std::fs::File;
use std::os::unix::fs::FileExt as _;

use crate::format::{
    fnv1a64, BboltError, BRANCH_PAGE, BUCKET_HEADER, BUCKET_LEAF, ELEMENT, LEAF_PAGE, MAGIC,
    META_PAGE, PAGE_HEADER, VERSION,
};

/// The deepest B+tree accepted (a damaged file could loop).
const MAX_DEPTH: usize = 64;

/// A bbolt file open for reading.
pub struct DbReader {
    file: File,
    page_size: usize,
    pages: u64,
    root: u64,
}

impl DbReader {
    /// Opens `file`: the valid meta page with the newest transaction decides.
    pub fn open(file: File) -> Result<DbReader, BboltError> {
        let mut best: Option<(u64, DbReader)> = None;
        let mut why = String::from("no meta page");
        // The page size is in the meta page, which is at the start of page 0.
        let mut first = vec![0u8; PAGE_HEADER + 64];
        file.read_exact_at(&mut first, 0)?;
        let page_size = u32::from_le_bytes(
            first[PAGE_HEADER + 8..PAGE_HEADER + 12]
                .try_into()
                .unwrap_or_default(),
        ) as usize;
        if !(512..=1 << 20).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(BboltError::Invalid(format!("page size {page_size}")));
        }
        let file_pages = file.metadata()?.len() / page_size as u64;
        for id in [0u64, 1] {
            let mut page = vec![0u8; PAGE_HEADER + 64];
            if file
                .read_exact_at(&mut page, id * page_size as u64)
                .is_err()
            {
                continue;
            }
            let m = &page[PAGE_HEADER..];
            let u32_at =
                |at: usize| u32::from_le_bytes(m[at..at + 4].try_into().unwrap_or_default());
            let u64_at =
                |at: usize| u64::from_le_bytes(m[at..at + 8].try_into().unwrap_or_default());
            let flags = u16::from_le_bytes([page[8], page[9]]);
            if flags != META_PAGE || u32_at(0) != MAGIC || u32_at(4) != VERSION {
                why = format!("page {id} is not a meta page of version {VERSION}");
                continue;
            }
            if fnv1a64(&m[..56]) != u64_at(56) {
                why = format!("meta page {id}: checksum mismatch");
                continue;
            }
            let (root, pages, txid) = (u64_at(16), u64_at(40), u64_at(48));
            if pages > file_pages || root >= pages {
                why = format!("meta page {id}: {pages} pages, the file has {file_pages}");
                continue;
            }
            if best.as_ref().is_none_or(|(t, _)| txid > *t) {
                let reader = DbReader {
                    file: file.try_clone()?,
                    page_size,
                    pages,
                    root,
                };
                best = Some((txid, reader));
            }
        }
        best.map(|(_, r)| r).ok_or(BboltError::Invalid(why))
    }

    /// The page `id` with its overflow pages.
    fn page(&self, id: u64) -> Result<Vec<u8>, BboltError> {
        if id < 2 || id >= self.pages {
            return Err(BboltError::Invalid(format!("page {id} out of range")));
        }
        let mut head = vec![0u8; self.page_size];
        self.file
            .read_exact_at(&mut head, id * self.page_size as u64)?;
        let overflow = u64::from(u32::from_le_bytes(
            head[12..16].try_into().unwrap_or_default(),
        ));
        if id + overflow >= self.pages {
            return Err(BboltError::Invalid(format!("page {id} overflows the file")));
        }
        if overflow == 0 {
            return Ok(head);
        }
        let mut page = vec![0u8; (overflow as usize + 1) * self.page_size];
        self.file
            .read_exact_at(&mut page, id * self.page_size as u64)?;
        Ok(page)
    }

    /// The names of the top-level buckets, in order.
    pub fn buckets(&self) -> Result<Vec<Vec<u8>>, BboltError> {
        let mut names = Vec::new();
        walk(self, Tree::Page(self.root), 0, &mut |flags, key, _| {
            if flags & BUCKET_LEAF != 0 {
                names.push(key.to_vec());
            }
            Ok(())
        })?;
        Ok(names)
    }

    /// Calls `f` with every key and value of bucket `name`, in key order (nested
    /// buckets are skipped); an error of `f` stops the walk. Nothing happens for a
    /// bucket the file does not have.
    pub fn for_each(
        &self,
        name: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), BboltError>,
    ) -> Result<(), BboltError> {
        let mut header = None;
        walk(self, Tree::Page(self.root), 0, &mut |flags, key, value| {
            if flags & BUCKET_LEAF != 0 && key == name {
                header = Some(value.to_vec());
            }
            Ok(())
        })?;
        let Some(header) = header else {
            return Ok(());
        };
        if header.len() < BUCKET_HEADER {
            return Err(BboltError::Invalid("short bucket header".into()));
        }
        let root = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
        let tree = if root == 0 {
            // An inline bucket: its one leaf page follows the header.
            Tree::Inline(header[BUCKET_HEADER..].to_vec())
        } else {
            Tree::Page(root)
        };
        walk(self, tree, 0, &mut |flags, key, value| {
            if flags & BUCKET_LEAF == 0 {
                f(key, value)?;
            }
            Ok(())
        })
    }
}

/// What [`walk`] calls with each leaf element: (flags, key, value).
type Visit<'a> = dyn FnMut(u32, &[u8], &[u8]) -> Result<(), BboltError> + 'a;

enum Tree {
    Page(u64),
    Inline(Vec<u8>),
}

/// Visits the leaf elements under `tree` in order: (flags, key, value).
fn walk(db: &DbReader, tree: Tree, depth: usize, visit: &mut Visit<'_>) -> Result<(), BboltError> {
    if depth > MAX_DEPTH {
        return Err(BboltError::Invalid("tree too deep".into()));
    }
    let page = match tree {
        Tree::Page(id) => db.page(id)?,
        Tree::Inline(bytes) => bytes,
    };
    if page.len() < PAGE_HEADER {
        return Err(BboltError::Invalid("short page".into()));
    }
    let flags = u16::from_le_bytes([page[8], page[9]]);
    let count = usize::from(u16::from_le_bytes([page[10], page[11]]));
    let field = |at: usize, len: usize| -> Result<&[u8], BboltError> {
        page.get(at..at + len)
            .ok_or_else(|| BboltError::Invalid("element outside its page".into()))
    };
    let u32_at = |at: usize| -> Result<usize, BboltError> {
        Ok(u32::from_le_bytes(field(at, 4)?.try_into().unwrap_or_default()) as usize)
    };
    for i in 0..count {
        let at = PAGE_HEADER + i * ELEMENT;
        match flags {
            LEAF_PAGE => {
                let element_flags = u32_at(at)? as u32;
                let pos = u32_at(at + 4)?;
                let ksize = u32_at(at + 8)?;
                let vsize = u32_at(at + 12)?;
                let key = field(at + pos, ksize)?;
                let value = field(at + pos + ksize, vsize)?;
                visit(element_flags, key, value)?;
            }
            BRANCH_PAGE => {
                let child = u64::from_le_bytes(field(at + 8, 8)?.try_into().unwrap_or_default());
                walk(db, Tree::Page(child), depth + 1, visit)?;
            }
            other => {
                return Err(BboltError::Invalid(format!(
                    "page of type {other:#x} inside a tree"
                )))
            }
        }
    }
    Ok(())
}

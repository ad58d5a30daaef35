//! The snapshot archive: a checkpoint directory as one byte stream.
//!
//! A member ships its state (raft snapshots, Maintenance.Snapshot, `cairn
//! snapshot save`) by taking a [`Backend::checkpoint`](crate::Backend::checkpoint),
//! streaming it with an [`ArchiveReader`], and on the other side rebuilding
//! the directory with [`unpack`] before
//! [`KvStore::restore_from_checkpoint`](crate::KvStore::restore_from_checkpoint).
//!
//! # Format (version 1)
//!
//! All numbers are big-endian.
//!
//! | field | bytes | |
//! |---|---|---|
//! | magic | 8 | `CAIRNSNP` |
//! | version | 4 | `1` |
//! | *per file, in name order:* | | |
//! | tag | 1 | `1` (a file follows) |
//! | name length | 4 | at most [`MAX_NAME_LEN`] |
//! | name | n | UTF-8 path relative to the directory, `/`-separated; no `.`, `..`, empty or absolute component |
//! | file length | 8 | |
//! | file bytes | length | |
//! | *end:* | | |
//! | tag | 1 | `0` (end of files) |
//! | crc32 | 4 | CRC-32 (IEEE) of every byte before it, magic included |
//!
//! Nothing may follow the checksum. The directory's subdirectories are
//! implied by the names; empty directories are not kept.
//!
//! ```
//! use cairn_mvcc_store::snapshot::{unpack, ArchiveReader};
//! use cairn_mvcc_store::Backend;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tmp = tempfile::tempdir()?;
//! let backend = Backend::open(tmp.path().join("db"))?;
//! backend.checkpoint(&tmp.path().join("checkpoint"))?;
//!
//! let reader = ArchiveReader::new(&tmp.path().join("checkpoint"))?;
//! let len = reader.len();
//! let mut archive = Vec::new();
//! std::io::copy(&mut { reader }, &mut archive)?;
//! assert_eq!(archive.len() as u64, len);
//!
//! unpack(&archive[..], &tmp.path().join("received"))?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

pub use crate::error::ArchiveError;
use crate::error::MvccError;

/// The first bytes of every archive.
pub const MAGIC: [u8; 8] = *b"CAIRNSNP";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// The longest file name (in bytes) an archive may hold.
pub const MAX_NAME_LEN: usize = 4096;

const TAG_END: u8 = 0;
const TAG_FILE: u8 = 1;
/// Bytes of an archive besides file names and contents: magic, version, end
/// tag and checksum.
const FIXED_LEN: u64 = 8 + 4 + 1 + 4;
/// Bytes of a file's header besides its name: tag, name length, file length.
const FILE_HEADER_LEN: u64 = 1 + 4 + 8;

/// One file of the directory being archived.
struct Entry {
    name: String,
    path: PathBuf,
    len: u64,
}

/// The archive of a checkpoint directory, produced as it is read.
///
/// Holds one open file at a time and a buffer of at most one file header, so
/// any directory streams in constant memory. The directory must not change
/// while it is read (a checkpoint never does); a file that shrank fails the
/// read with `UnexpectedEof`.
pub struct ArchiveReader {
    files: std::vec::IntoIter<Entry>,
    /// Bytes to hand out before anything else (already in `hasher`, except
    /// the checksum itself).
    pending: Vec<u8>,
    pending_pos: usize,
    /// The file being copied, with the bytes of it still to copy.
    body: Option<(File, u64, PathBuf)>,
    /// `None` once the checksum is in `pending`.
    hasher: Option<crc32fast::Hasher>,
    end_written: bool,
    len: u64,
}

impl std::fmt::Debug for ArchiveReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveReader")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl ArchiveReader {
    /// Lists every file under `dir` (recursively, sorted by name) and prepares
    /// to stream them. Fails on anything but regular files and directories.
    pub fn new(dir: &Path) -> io::Result<ArchiveReader> {
        let mut files = Vec::new();
        collect_files(dir, "", &mut files)?;
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let len = FIXED_LEN
            + files
                .iter()
                .map(|f| FILE_HEADER_LEN + f.name.len() as u64 + f.len)
                .sum::<u64>();
        let mut pending = Vec::with_capacity(12);
        pending.extend_from_slice(&MAGIC);
        pending.extend_from_slice(&VERSION.to_be_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&pending);
        tracing::debug!(dir = %dir.display(), files = files.len(), len, "archiving checkpoint");
        Ok(ArchiveReader {
            files: files.into_iter(),
            pending,
            pending_pos: 0,
            body: None,
            hasher: Some(hasher),
            end_written: false,
            len,
        })
    }

    /// The archive's total length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the archive is empty (never: it always has a header).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Moves to the next piece: the next file's header and body, the end
    /// marker, then the checksum. `false` once everything was handed out.
    fn advance(&mut self) -> io::Result<bool> {
        self.pending.clear();
        self.pending_pos = 0;
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(false);
        };
        if let Some(entry) = self.files.next() {
            let file = File::open(&entry.path)?;
            self.pending.push(TAG_FILE);
            self.pending
                .extend_from_slice(&(entry.name.len() as u32).to_be_bytes());
            self.pending.extend_from_slice(entry.name.as_bytes());
            self.pending.extend_from_slice(&entry.len.to_be_bytes());
            hasher.update(&self.pending);
            self.body = Some((file, entry.len, entry.path));
        } else if !self.end_written {
            self.pending.push(TAG_END);
            hasher.update(&self.pending);
            self.end_written = true;
        } else if let Some(hasher) = self.hasher.take() {
            self.pending
                .extend_from_slice(&hasher.finalize().to_be_bytes());
        }
        Ok(true)
    }
}

impl Read for ArchiveReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pending_pos < self.pending.len() {
                let n = (self.pending.len() - self.pending_pos).min(buf.len());
                buf[..n].copy_from_slice(&self.pending[self.pending_pos..self.pending_pos + n]);
                self.pending_pos += n;
                return Ok(n);
            }
            if let Some((file, remaining, path)) = self.body.as_mut() {
                if *remaining > 0 {
                    let want = buf
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    let n = file.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{} shrank while being archived", path.display()),
                        ));
                    }
                    *remaining -= n as u64;
                    if let Some(hasher) = self.hasher.as_mut() {
                        hasher.update(&buf[..n]);
                    }
                    return Ok(n);
                }
                self.body = None;
            }
            if !self.advance()? {
                return Ok(0);
            }
        }
    }
}

/// Adds every regular file under `dir` to `out`, named relative to the root
/// with `prefix` before it.
fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<Entry>) -> io::Result<()> {
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name().into_string().map_err(|name| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("file name {name:?} is not UTF-8"),
            )
        })?;
        let name = format!("{prefix}{name}");
        let kind = item.file_type()?;
        if kind.is_dir() {
            collect_files(&item.path(), &format!("{name}/"), out)?;
        } else if kind.is_file() {
            if name.len() > MAX_NAME_LEN {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("file name {name:?} is too long"),
                ));
            }
            out.push(Entry {
                name,
                len: item.metadata()?.len(),
                path: item.path(),
            });
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is neither a file nor a directory",
                    item.path().display()
                ),
            ));
        }
    }
    Ok(())
}

/// Rebuilds in `dir` (which must not exist) the directory an archive read
/// from `reader` holds, fsynced.
///
/// The files are written to a temporary directory next to `dir`, which is
/// renamed to `dir` only once the whole archive, checksum included, is
/// verified; on any failure nothing is left behind. A truncated, corrupted or
/// malicious archive fails with [`MvccError::Archive`], an I/O failure with
/// [`MvccError::Io`].
pub fn unpack(reader: impl Read, dir: &Path) -> Result<(), MvccError> {
    if dir.symlink_metadata().is_ok() {
        return Err(MvccError::Io(format!("{} already exists", dir.display())));
    }
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".cairn-unpack-")
        .tempdir_in(parent)
        .map_err(|err| MvccError::io("creating a directory in", parent, err))?;

    let mut input = HashingReader {
        inner: reader,
        hasher: crc32fast::Hasher::new(),
    };
    let files = unpack_files(&mut input, staging.path())?;
    let computed = input.hasher.clone().finalize();
    let stored = u32::from_be_bytes(read_array(&mut input.inner)?);
    if stored != computed {
        return Err(ArchiveError::ChecksumMismatch { stored, computed }.into());
    }
    let mut extra = [0u8; 1];
    loop {
        match input.inner.read(&mut extra) {
            Ok(0) => break,
            Ok(_) => return Err(ArchiveError::TrailingData.into()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(MvccError::io("reading the archive for", dir, err)),
        }
    }

    let staged = staging.keep();
    let result = std::fs::rename(&staged, dir)
        .map_err(|err| MvccError::io("moving the unpacked archive to", dir, err))
        .and_then(|()| sync_dir(parent));
    if result.is_err() {
        // Best effort: the rename failed, so the staging directory is ours.
        let _ = std::fs::remove_dir_all(&staged);
    }
    result?;
    tracing::info!(dir = %dir.display(), files, "snapshot archive unpacked");
    Ok(())
}

/// Reads the header and every file into `root`, fsyncing each; returns the
/// number of files. Leaves the reader just before the checksum.
fn unpack_files<R: Read>(input: &mut HashingReader<R>, root: &Path) -> Result<usize, MvccError> {
    let magic: [u8; 8] = read_array(input)?;
    if magic != MAGIC {
        return Err(ArchiveError::BadMagic.into());
    }
    let version = u32::from_be_bytes(read_array(input)?);
    if version != VERSION {
        return Err(ArchiveError::UnsupportedVersion(version).into());
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut dir_names: HashSet<String> = HashSet::new();
    let mut dirs = HashSet::new();
    loop {
        let [tag] = read_array(input)?;
        match tag {
            TAG_END => break,
            TAG_FILE => {}
            other => return Err(ArchiveError::BadTag(other).into()),
        }
        let name_len = u32::from_be_bytes(read_array(input)?) as usize;
        if name_len > MAX_NAME_LEN {
            return Err(ArchiveError::BadName(format!("<{name_len} bytes>")).into());
        }
        let mut raw_name = vec![0u8; name_len];
        read_exact(input, &mut raw_name)?;
        let name = String::from_utf8(raw_name)
            .map_err(|err| ArchiveError::BadName(String::from_utf8_lossy(err.as_bytes()).into()))?;
        let relative = safe_relative_path(&name)?;
        // A name used twice, or as a file and as a directory (`a`, `a/b`).
        let parents: Vec<&str> = name.match_indices('/').map(|(at, _)| &name[..at]).collect();
        if seen.contains(&name)
            || dir_names.contains(&name)
            || parents.iter().any(|p| seen.contains(*p))
        {
            return Err(ArchiveError::DuplicateName(name).into());
        }
        dir_names.extend(parents.into_iter().map(str::to_owned));
        seen.insert(name.clone());
        let len = u64::from_be_bytes(read_array(input)?);

        let path = root.join(&relative);
        if let Some(parent) = path.parent() {
            if parent != root && dirs.insert(parent.to_path_buf()) {
                std::fs::create_dir_all(parent)
                    .map_err(|err| MvccError::io("creating", parent, err))?;
            }
        }
        let mut file =
            File::create_new(&path).map_err(|err| MvccError::io("creating", &path, err))?;
        let copied = io::copy(&mut input.by_ref().take(len), &mut file)
            .map_err(|err| read_error(err, &path))?;
        if copied != len {
            return Err(ArchiveError::Truncated.into());
        }
        file.sync_all()
            .map_err(|err| MvccError::io("syncing", &path, err))?;
    }
    for dir in &dirs {
        sync_dir(dir)?;
    }
    sync_dir(root)?;
    Ok(seen.len())
}

/// `name` as a relative path that stays inside the directory, or
/// [`ArchiveError::BadName`].
fn safe_relative_path(name: &str) -> Result<PathBuf, ArchiveError> {
    let bad = || ArchiveError::BadName(name.to_owned());
    if name.is_empty() || name.contains('\0') || name.contains('\\') {
        return Err(bad());
    }
    let mut path = PathBuf::new();
    for part in name.split('/') {
        let mut components = Path::new(part).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(normal)), None) if normal == part => path.push(normal),
            _ => return Err(bad()),
        }
    }
    Ok(path)
}

/// Reads exactly `N` bytes; the stream ending first is [`ArchiveError::Truncated`].
fn read_array<const N: usize>(reader: &mut impl Read) -> Result<[u8; N], MvccError> {
    let mut bytes = [0u8; N];
    read_exact(reader, &mut bytes)?;
    Ok(bytes)
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), MvccError> {
    reader
        .read_exact(buf)
        .map_err(|err| read_error(err, Path::new("<archive>")))
}

/// A read failure: the stream ending early is a truncated archive; anything
/// else is I/O (reading the stream or writing `path`).
fn read_error(err: io::Error, path: &Path) -> MvccError {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        ArchiveError::Truncated.into()
    } else {
        MvccError::io("unpacking", path, err)
    }
}

/// Makes a directory's entries durable.
fn sync_dir(dir: &Path) -> Result<(), MvccError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|err| MvccError::io("syncing", dir, err))
}

/// Feeds every byte read through a CRC.
struct HashingReader<R> {
    inner: R,
    hasher: crc32fast::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;

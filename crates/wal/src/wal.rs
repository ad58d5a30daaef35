//! The [`Wal`] handle: the file system side of the log.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::error::io_error;
use crate::error::WalError;
use crate::record::{self, Encoder, ScanEnd};
use crate::replay::{Position, Replayer};
use crate::segment::{self, HeaderError, Segment};
use crate::types::{HardState, Replayed, SnapshotMark, WalBatch, WalOptions};

/// An open write-ahead log, ready to append. The directory is not locked: keeping a
/// second process (or a second `Wal`) off it is the caller's job.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    metadata: Vec<u8>,
    /// Segments before the active one, oldest first.
    sealed: Vec<Segment>,
    /// The segment being appended to.
    active: Segment,
    file: File,
    /// Bytes in the active segment.
    active_len: u64,
    /// Where that segment's header ends: a segment holding only its header is never cut.
    active_header_len: u64,
    /// Bytes of the active segment's file already allocated (zeros past `active_len`).
    allocated: u64,
    position: Position,
    snapshot: Option<SnapshotMark>,
    hard_state: Option<HardState>,
    poisoned: bool,
    /// Reused for encoding, so appends do not allocate in the steady state.
    buf: Vec<u8>,
}

impl Wal {
    /// Whether a WAL was created in `dir` (it holds at least one segment file).
    pub fn exists(dir: &Path) -> bool {
        segment::list(dir).is_ok_and(|segments| !segments.is_empty())
    }

    /// Creates a new, empty WAL in `dir` (creating the directory if needed) whose
    /// segments all carry `metadata`. The first segment is written under a temporary name,
    /// synced, renamed into place and the directory synced, so a crash leaves either no
    /// WAL or a whole one.
    pub fn create(dir: &Path, metadata: &[u8], opts: WalOptions) -> Result<Wal, WalError> {
        if Wal::exists(dir) {
            return Err(WalError::AlreadyExists(dir.to_path_buf()));
        }
        let dir_existed = dir.is_dir();
        fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        if !dir_existed {
            // Make the new directory's own name durable in its parent.
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            sync_dir(parent)?;
        }

        let first = Segment::new(dir, 0, 1);
        let mut buf = Vec::new();
        segment::encode_header(
            &mut Encoder::new(&mut buf, first.seq, 0),
            metadata,
            None,
            None,
        )?;
        let tmp = first.path.with_extension("wal.tmp");
        let mut file = File::create(&tmp).map_err(io_error("create", &tmp))?;
        file.write_all(&buf).map_err(io_error("write", &tmp))?;
        file.sync_data().map_err(io_error("fsync", &tmp))?;
        drop(file);
        fs::rename(&tmp, &first.path).map_err(io_error("rename", &tmp))?;
        sync_dir(dir)?;
        let file = open_for_append(&first.path)?;
        tracing::info!(dir = %dir.display(), "WAL created");
        Ok(Wal {
            dir: dir.to_path_buf(),
            opts,
            metadata: metadata.to_vec(),
            sealed: Vec::new(),
            active: first,
            file,
            active_len: buf.len() as u64,
            active_header_len: buf.len() as u64,
            allocated: buf.len() as u64,
            position: Position::default(),
            snapshot: None,
            hard_state: None,
            poisoned: false,
            buf,
        })
    }

    /// Opens the WAL in `dir`: replays every segment, repairs a torn tail of the last one
    /// (see the crate docs), and returns the log ready to append after its last record.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Replayed), WalError> {
        let mut segments = segment::list(dir)?;
        if segments.is_empty() {
            return Err(WalError::NotFound(dir.to_path_buf()));
        }
        for pair in segments.windows(2) {
            let (before, seg) = (&pair[0], &pair[1]);
            if seg.seq == before.seq {
                return Err(corrupt(
                    &seg.path,
                    0,
                    format!("two segments are numbered {:016x}", seg.seq),
                ));
            }
            if seg.seq != before.seq + 1 {
                return Err(corrupt(
                    &seg.path,
                    0,
                    format!("segment {:016x} before it is missing", before.seq + 1),
                ));
            }
        }

        let mut replayer: Option<Replayer> = None;
        // The segment appends go to: its length and where its header ends.
        let mut active = None;
        // What a crash left to clean up in the last segment, done once all is checked.
        let mut repair = None;
        let count = segments.len();
        for (i, seg) in segments.iter().enumerate() {
            let is_last = i + 1 == count;
            let bytes = fs::read(&seg.path).map_err(io_error("read", &seg.path))?;
            let scan = record::scan(&bytes, seg.seq);
            let valid_end = scan.valid_end();
            let torn = match scan.end {
                ScanEnd::Clean => None,
                // Space preallocated for appends: nothing was torn.
                ScanEnd::Torn { offset, .. }
                    if is_last && bytes[offset as usize..].iter().all(|b| *b == 0) =>
                {
                    None
                }
                ScanEnd::Torn { offset, reason } if is_last => Some((offset, reason)),
                ScanEnd::Torn { offset, reason } => {
                    return Err(corrupt(
                        &seg.path,
                        offset,
                        format!("{reason} in a segment that is not the last"),
                    ))
                }
                ScanEnd::Corrupt { offset, reason } => {
                    return Err(corrupt(&seg.path, offset, reason))
                }
            };
            let split = match segment::split_header(scan.records) {
                Ok(split) => split,
                Err(HeaderError::Invalid { offset, reason }) => {
                    return Err(corrupt(&seg.path, offset, reason))
                }
                Err(HeaderError::Incomplete) if is_last && i > 0 => {
                    // A crash while the segment was being started: the batch meant for it
                    // was never acknowledged, and the previous segment is complete.
                    repair = Some(Repair::Remove {
                        segment: seg.path.clone(),
                        file_bytes: bytes.len() as u64,
                    });
                    break;
                }
                Err(HeaderError::Incomplete) => {
                    return Err(corrupt(
                        &seg.path,
                        valid_end,
                        "the segment ends inside its header".to_string(),
                    ))
                }
            };
            let mut r = match replayer.take() {
                Some(r) => {
                    r.check_header(seg.first_index, &split.header)
                        .map_err(|reason| corrupt(&seg.path, 0, reason))?;
                    r
                }
                None => Replayer::new(seg.first_index, split.header)
                    .map_err(|reason| corrupt(&seg.path, 0, reason))?,
            };
            for located in split.body {
                r.apply(located.record)
                    .map_err(|reason| corrupt(&seg.path, located.offset, reason))?;
            }
            if let Some((offset, reason)) = torn {
                repair = Some(Repair::Truncate {
                    segment: seg.path.clone(),
                    offset,
                    file_bytes: bytes.len() as u64,
                    reason,
                });
            }
            replayer = Some(r);
            active = Some((i, valid_end, split.header_end, bytes.len() as u64));
        }

        let (Some(replayer), Some((active_i, active_len, active_header_len, file_len))) =
            (replayer, active)
        else {
            return Err(WalError::NotFound(dir.to_path_buf()));
        };
        segments.truncate(active_i + 1);
        let Some(active_segment) = segments.pop() else {
            return Err(WalError::NotFound(dir.to_path_buf()));
        };
        let first_path = segments.first().unwrap_or(&active_segment).path.clone();
        let position = replayer.position();
        let snapshot = replayer.snapshot_mark().cloned();
        let hard_state = replayer.hard_state();
        let replayed = replayer
            .finish()
            .map_err(|reason| corrupt(&first_path, 0, reason))?;
        let repaired = repair.is_some();
        if let Some(repair) = repair {
            repair.apply(dir)?;
        }
        let wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            metadata: replayed.metadata.clone(),
            file: open_for_append(&active_segment.path)?,
            active_len,
            active_header_len,
            allocated: if repaired { active_len } else { file_len },
            position,
            snapshot,
            hard_state,
            poisoned: false,
            buf: Vec::new(),
            sealed: segments,
            active: active_segment,
        };
        tracing::info!(
            dir = %dir.display(),
            segments = wal.sealed.len() + 1,
            entries = replayed.entries.len(),
            last_index = wal.position.last_index,
            "WAL opened"
        );
        Ok((wal, replayed))
    }

    /// Makes `batch` durable: its snapshot mark, then its entries, then its hard state,
    /// with one write and one `fdatasync` (when the batch starts a new segment, the
    /// directory is synced as well). An empty batch writes nothing.
    ///
    /// The batch is checked first and refused whole, with nothing written, if an entry
    /// would leave a gap ([`WalError::Gap`]), an entry is at or below the snapshot mark
    /// ([`WalError::BelowSnapshot`]) or the mark goes back
    /// ([`WalError::SnapshotRegression`]). After an I/O error the WAL is poisoned.
    pub fn append(&mut self, batch: &WalBatch) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        if batch.is_empty() {
            return Ok(());
        }
        // Fault tests make the disk fail here: `wal::append=return(ENOSPC)` (or EIO).
        #[cfg(feature = "failpoints")]
        fail::fail_point!("wal::append", |errno: Option<String>| {
            Err(WalError::Io {
                op: "write",
                path: self.active.path.clone(),
                source: crate::error::injected(errno.as_deref()),
            })
        });
        let after = self.position.after(batch)?;
        let batch_len = encoded_len(batch);
        let cut = self.active_len.saturating_add(batch_len) > self.opts.segment_bytes
            && self.active_len > self.active_header_len;

        self.buf.clear();
        if cut {
            let next = Segment::new(
                &self.dir,
                self.active.seq + 1,
                self.position.last_index.saturating_add(1),
            );
            let mut enc = Encoder::new(&mut self.buf, next.seq, 0);
            segment::encode_header(
                &mut enc,
                &self.metadata,
                self.snapshot.as_ref(),
                self.hard_state.as_ref(),
            )?;
            encode_batch(&mut enc, batch)?;
            let header_len = self.buf.len() as u64 - batch_len;
            // Until the bytes are durable, a failure leaves the tail unknown.
            self.poisoned = true;
            // A sealed segment ends at its last record (replay refuses a tail in one).
            if self.allocated > self.active_len {
                let path = &self.active.path;
                self.file
                    .set_len(self.active_len)
                    .map_err(io_error("truncate", path))?;
                self.file.sync_data().map_err(io_error("fsync", path))?;
            }
            let file = start_segment(&self.dir, &next.path, &self.buf)?;
            let written = self.buf.len() as u64;
            self.allocated = preallocate(&file, written, 0, self.opts.preallocate_bytes);
            self.poisoned = false;
            tracing::debug!(segment = %next.path.display(), "WAL: started a segment");
            self.file = file;
            self.sealed.push(std::mem::replace(&mut self.active, next));
            self.active_len = self.buf.len() as u64;
            self.active_header_len = header_len;
        } else {
            let mut enc = Encoder::new(&mut self.buf, self.active.seq, self.active_len);
            encode_batch(&mut enc, batch)?;
            let path = &self.active.path;
            let end = self.active_len + batch_len;
            if end > self.allocated {
                let window = self.opts.preallocate_bytes;
                self.allocated =
                    preallocate(&self.file, self.allocated, end - self.allocated, window)
                        .max(self.allocated);
            }
            // Until the bytes are durable, a failure leaves the tail unknown.
            self.poisoned = true;
            self.file
                .write_all_at(&self.buf, self.active_len)
                .map_err(io_error("write", path))?;
            self.file.sync_data().map_err(io_error("fsync", path))?;
            self.poisoned = false;
            self.active_len += batch_len;
        }

        self.position = after;
        if let Some(mark) = &batch.snapshot {
            self.snapshot = Some(mark.clone());
        }
        if let Some(hs) = batch.hard_state {
            self.hard_state = Some(hs);
        }
        Ok(())
    }

    /// Deletes the oldest segments that replay no longer needs once entries up to
    /// `min(index, latest snapshot mark)` are covered by that mark. Without a snapshot mark
    /// nothing is released. The segment being appended to is never deleted, so a replay
    /// still returns the metadata, the latest mark, the latest hard state and every entry
    /// after the mark.
    pub fn release_to(&mut self, index: u64) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        let Some(mark) = &self.snapshot else {
            return Ok(());
        };
        let covered = index.min(mark.index);
        // Every entry still live in the segments before a segment S has an index below
        // S's first index, and S's header repeats the metadata, mark and hard state: so
        // the segments before the newest S with first_index <= covered + 1 can go.
        let first_indexes = self
            .sealed
            .iter()
            .chain([&self.active])
            .map(|s| s.first_index);
        let Some(keep_from) = first_indexes
            .enumerate()
            .skip(1)
            .filter(|&(_, first_index)| first_index <= covered.saturating_add(1))
            .map(|(j, _)| j)
            .last()
        else {
            return Ok(());
        };
        for _ in 0..keep_from {
            let Some(oldest) = self.sealed.first() else {
                break;
            };
            fs::remove_file(&oldest.path).map_err(io_error("remove", &oldest.path))?;
            let released = self.sealed.remove(0);
            // Synced one by one, so a crash leaves the remaining segments without holes.
            sync_dir(&self.dir)?;
            tracing::debug!(segment = %released.path.display(), "WAL: released a segment");
        }
        Ok(())
    }

    /// The index of the last entry written, or of the latest snapshot mark if that is
    /// higher (0 for an empty log).
    pub fn last_index(&self) -> u64 {
        self.position.last_index
    }
}

/// How [`Wal::open`] cleans up after a crash in the last segment.
enum Repair {
    /// Cut a torn tail off at `offset`.
    Truncate {
        segment: PathBuf,
        offset: u64,
        file_bytes: u64,
        reason: String,
    },
    /// Remove a segment whose header was never completely written.
    Remove { segment: PathBuf, file_bytes: u64 },
}

impl Repair {
    fn apply(self, dir: &Path) -> Result<(), WalError> {
        match self {
            Repair::Truncate {
                segment,
                offset,
                file_bytes,
                reason,
            } => {
                tracing::warn!(
                    segment = %segment.display(),
                    offset,
                    cut_bytes = file_bytes - offset,
                    reason = %reason,
                    "WAL: cutting off a torn tail"
                );
                let file = OpenOptions::new()
                    .write(true)
                    .open(&segment)
                    .map_err(io_error("open", &segment))?;
                file.set_len(offset)
                    .map_err(io_error("truncate", &segment))?;
                file.sync_data().map_err(io_error("fsync", &segment))
            }
            Repair::Remove {
                segment,
                file_bytes,
            } => {
                tracing::warn!(
                    segment = %segment.display(),
                    file_bytes,
                    "WAL: removing a segment whose header was never completely written"
                );
                fs::remove_file(&segment).map_err(io_error("remove", &segment))?;
                sync_dir(dir)
            }
        }
    }
}

/// Bytes `batch` takes on disk.
fn encoded_len(batch: &WalBatch) -> u64 {
    let snapshot = batch.snapshot.as_ref().map_or(0, record::snapshot_len);
    let entries: u64 = batch.entries.iter().map(record::entry_len).sum();
    let hard_state = batch.hard_state.map_or(0, |_| record::hard_state_len());
    snapshot + entries + hard_state
}

fn encode_batch(enc: &mut Encoder<'_>, batch: &WalBatch) -> Result<(), WalError> {
    if let Some(mark) = &batch.snapshot {
        enc.snapshot(mark)?;
    }
    for entry in &batch.entries {
        enc.entry(entry)?;
    }
    if let Some(hs) = &batch.hard_state {
        enc.hard_state(hs)?;
    }
    Ok(())
}

/// Allocates (and zero-extends) `file` from `from` for at least `len` bytes, in steps of
/// `window` ([`WalOptions::preallocate_bytes`]); returns the allocated end (`from` when
/// turned off or where the filesystem cannot preallocate: appends then extend the file).
fn preallocate(file: &File, from: u64, len: u64, window: u64) -> u64 {
    if window == 0 {
        return from;
    }
    let len = len.max(window);
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        let (Ok(off), Ok(n)) = (libc::off_t::try_from(from), libc::off_t::try_from(len)) else {
            return from;
        };
        // SAFETY: fallocate(2) on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, off, n) };
        if rc == 0 {
            return from + len;
        }
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "WAL: cannot preallocate; appends extend the file"
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, len, window);
    from
}

/// Creates a segment holding `bytes` and makes it durable, name included.
fn start_segment(dir: &Path, path: &Path, bytes: &[u8]) -> Result<File, WalError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_error("create", path))?;
    file.write_all(bytes).map_err(io_error("write", path))?;
    file.sync_data().map_err(io_error("fsync", path))?;
    sync_dir(dir)?;
    Ok(file)
}

fn open_for_append(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error("open", path))
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync directory", dir))
}

fn corrupt(segment: &Path, offset: u64, reason: String) -> WalError {
    WalError::Corrupt {
        segment: segment.to_path_buf(),
        offset,
        reason,
    }
}

#[cfg(test)]
mod tests;

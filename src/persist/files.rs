//! The data directory: file names, the lock, and reading a file's frames with the damage
//! rules recovery applies.
//!
//! Layout of a data directory:
//! * `LOCK` — held (`flock`, exclusive) by the one server using the directory; holds its pid.
//! * `log-<first revision, 20 digits>.reg` — log segments. Each holds the records of the
//!   revisions from its first on, up to the next segment's first; the newest is appended to.
//! * `snap-<revision, 20 digits>.reg` — snapshots: the whole state, as of the log's cut at that
//!   revision (see `snapshot.rs`). Written as `.tmp`, synced, then renamed: a snapshot is there
//!   whole or not at all.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::{decode, next_frame, Bad, Record, FRAME_HEAD, MAX_PAYLOAD};
use super::PersistError;
use crate::store::Revision;

/// The lock file's name.
pub(crate) const LOCK: &str = "LOCK";

/// A log segment's file name.
pub(crate) fn segment_name(first: Revision) -> String {
    format!("log-{first:020}.reg")
}

/// A snapshot's file name.
pub(crate) fn snapshot_name(revision: Revision) -> String {
    format!("snap-{revision:020}.reg")
}

/// The files of a data directory: segments and snapshots, each sorted by revision.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) segments: Vec<(Revision, PathBuf)>,
    pub(crate) snapshots: Vec<(Revision, PathBuf)>,
}

/// Lists `dir`, removing leftover `.tmp` files (a snapshot that was being written).
pub(crate) fn list(dir: &Path) -> Result<Listing, PersistError> {
    let io = |source| PersistError::io(dir, source);
    let mut listing = Listing::default();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".tmp") {
            std::fs::remove_file(&path).map_err(|e| PersistError::io(&path, e))?;
            continue;
        }
        let numbered = |prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(".reg"))
                .and_then(|digits| digits.parse::<Revision>().ok())
        };
        if let Some(first) = numbered("log-") {
            listing.segments.push((first, path));
        } else if let Some(revision) = numbered("snap-") {
            listing.snapshots.push((revision, path));
        }
    }
    listing.segments.sort();
    listing.snapshots.sort();
    Ok(listing)
}

/// Holds a data directory for this process: an exclusive `flock` on `LOCK`, released when the
/// file is closed (also when the process dies).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, PersistError> {
        let path = dir.join(LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| PersistError::io(&path, e))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(PersistError::Locked {
                    dir: dir.to_path_buf(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(errno) => return Err(PersistError::io(&path, errno.into())),
        }
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(|e| PersistError::io(&path, e))?;
        Ok(DirLock { _file: file })
    }
}

/// Where a file's frames stopped being good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// The offset of the first bad frame.
    pub(crate) offset: u64,
    pub(crate) bad: Bad,
    /// Whether a good frame starts anywhere after it: then the damage is not a torn last write
    /// but corruption in the middle.
    pub(crate) good_after: bool,
}

/// What reading a file found.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// The offset just after the last good frame.
    pub(crate) end: u64,
    /// The file's length.
    pub(crate) len: u64,
    pub(crate) damage: Option<Damage>,
}

/// Bytes read from a file at a time.
const CHUNK: usize = 1 << 20;

/// A torn write is at most one write of the log writer; past this many bytes after a bad frame
/// it is taken for corruption without looking.
const TORN_MAX: u64 = (MAX_PAYLOAD + FRAME_HEAD) as u64 * 2;

/// Reads the frames of `path`, which must begin with `magic`, handing each decoded record to
/// `each` with its offset, until the end or the first damage.
pub(crate) fn read_frames(
    path: &Path,
    magic: &[u8; 8],
    mut each: impl FnMut(Record, u64),
) -> Result<Scanned, PersistError> {
    let io = |source| PersistError::io(path, source);
    let mut file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        let n = file.read(&mut head[got..]).map_err(io)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    if got < 8 {
        // A file created but never written: torn at its very start.
        let damage = Damage {
            offset: 0,
            bad: Bad::Truncated,
            good_after: false,
        };
        return Ok(Scanned {
            end: 0,
            len,
            damage: Some(damage),
        });
    }
    if &head != magic {
        let damage = Damage {
            offset: 0,
            bad: Bad::Undecodable("not a reg file of this format version".into()),
            good_after: true,
        };
        return Ok(Scanned {
            end: 0,
            len,
            damage: Some(damage),
        });
    }
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut pos = 0usize; // in buf
    let mut base = 8u64; // file offset of buf[0]
    let mut eof = false;
    loop {
        match next_frame(&buf[pos..]) {
            Ok((payload, frame_len)) => {
                let offset = base + pos as u64;
                match decode(payload) {
                    Ok(record) => each(record, offset),
                    Err(bad) => {
                        let damage = Damage {
                            offset,
                            bad,
                            good_after: true,
                        };
                        return Ok(Scanned {
                            end: offset,
                            len,
                            damage: Some(damage),
                        });
                    }
                }
                pos += frame_len;
            }
            Err(Bad::Truncated) if !eof => {
                // Keep the partial frame, read more after it.
                buf.drain(..pos);
                base += pos as u64;
                pos = 0;
                let old = buf.len();
                buf.resize(old + CHUNK, 0);
                let n = file.read(&mut buf[old..]).map_err(io)?;
                buf.truncate(old + n);
                eof = n == 0;
            }
            Err(_) if eof && pos == buf.len() => {
                return Ok(Scanned {
                    end: base + pos as u64,
                    len,
                    damage: None,
                });
            }
            Err(bad) => {
                let offset = base + pos as u64;
                let good_after = good_frame_after(&mut file, offset, len).map_err(io)?;
                let damage = Damage {
                    offset,
                    bad,
                    good_after,
                };
                return Ok(Scanned {
                    end: offset,
                    len,
                    damage: Some(damage),
                });
            }
        }
    }
}

/// Whether a good frame starts anywhere after `offset` (a bad frame's).
fn good_frame_after(file: &mut File, offset: u64, len: u64) -> io::Result<bool> {
    if len.saturating_sub(offset) > TORN_MAX {
        return Ok(true);
    }
    let mut rest = Vec::new();
    file.seek(SeekFrom::Start(offset + 1))?;
    file.read_to_end(&mut rest)?;
    Ok((0..rest.len()).any(|at| next_frame(&rest[at..]).is_ok()))
}

/// Opens a segment for appending, truncated to `end` (its good frames), or creates it with
/// its magic.
pub(crate) fn open_segment(path: &Path, end: Option<u64>) -> Result<(File, u64), PersistError> {
    let io = |source| PersistError::io(path, source);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    let end = match end {
        Some(end) if end >= 8 => end,
        _ => {
            file.set_len(0).map_err(io)?;
            file.write_all(super::record::LOG_MAGIC).map_err(io)?;
            8
        }
    };
    file.set_len(end).map_err(io)?;
    file.seek(SeekFrom::Start(end)).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok((file, end))
}

/// Makes a directory's entries (a created, renamed or removed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PersistError::io(dir, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::record::{put_removed, seal, LOG_MAGIC};
    use super::*;
    use crate::store::EventKind;

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn segment(dir: &Path, records: usize) -> (PathBuf, Vec<u64>) {
        let path = dir.join(segment_name(1));
        let mut bytes = LOG_MAGIC.to_vec();
        let mut starts = Vec::new();
        for i in 0..records {
            starts.push(bytes.len() as u64);
            put_removed(
                &mut bytes,
                &format!("r{i}"),
                i as u64 + 1,
                EventKind::Delete,
            );
        }
        seal(&mut bytes[8..]);
        std::fs::write(&path, bytes).unwrap();
        (path, starts)
    }

    fn read(path: &Path) -> (usize, Scanned) {
        let mut n = 0;
        let scanned = read_frames(path, LOG_MAGIC, |_, _| n += 1).unwrap();
        (n, scanned)
    }

    #[test]
    fn a_whole_file_reads_to_its_end() {
        let dir = tempdir();
        let (path, _) = segment(dir.path(), 3);
        let (n, scanned) = read(&path);
        assert_eq!(n, 3);
        assert_eq!(scanned.damage, None);
        assert_eq!(scanned.end, scanned.len);
    }

    #[test]
    fn a_torn_tail_is_told_from_corruption_in_the_middle() {
        let dir = tempdir();
        let (path, starts) = segment(dir.path(), 3);
        let whole = std::fs::read(&path).unwrap();

        // Cut inside the last record.
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        let (n, scanned) = read(&path);
        assert_eq!(n, 2);
        let damage = scanned.damage.unwrap();
        assert_eq!((damage.offset, damage.good_after), (starts[2], false));

        // Random bytes after the last good record.
        let mut appended = whole.clone();
        appended.extend_from_slice(&[0x5A, 0x13, 0xC4, 0x7F, 0x01, 0x99, 0x42, 0x08, 0x77, 0x10]);
        std::fs::write(&path, &appended).unwrap();
        let (n, scanned) = read(&path);
        assert_eq!(n, 3);
        let damage = scanned.damage.unwrap();
        assert_eq!(
            (damage.offset, damage.good_after),
            (whole.len() as u64, false)
        );

        // A flipped byte in the first record: good records follow it.
        let mut flipped = whole.clone();
        flipped[starts[0] as usize + 10] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        let (n, scanned) = read(&path);
        assert_eq!(n, 0);
        let damage = scanned.damage.unwrap();
        assert_eq!(damage.offset, starts[0]);
        assert_eq!(damage.bad, Bad::Checksum);
        assert!(damage.good_after);
    }

    #[test]
    fn the_lock_is_exclusive_and_names_its_holder() {
        let dir = tempdir();
        let held = DirLock::acquire(dir.path()).unwrap();
        match DirLock::acquire(dir.path()) {
            Err(PersistError::Locked { holder, .. }) => {
                assert_eq!(holder, std::process::id().to_string());
            }
            other => panic!("{other:?}"),
        }
        drop(held);
        DirLock::acquire(dir.path()).unwrap();
    }
}

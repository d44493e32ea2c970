//! Snapshots: the whole state at a log cut, so recovery reads one file and the log after it,
//! and older segments can go.
//!
//! # Invariants
//!
//! * A snapshot is taken at a **cut** (see `writer.rs`): under the commit lock the log is told
//!   to start a new segment after revision R, and the snapshot is named for R. Every change
//!   after R is in the new segment or later ones.
//! * The snapshot is **fuzzy**: it reads the history and then each register while writes go
//!   on, so it holds each register at R or at some later revision. Recovery replays the
//!   segments from the cut on over it, and restoring is idempotent by revision
//!   (`store/restore.rs`), so the result is the state the log ends in.
//! * A snapshot is there **whole or not at all**: written to `<name>.tmp`, synced, renamed,
//!   and the directory synced; only then are the older snapshots and the segments before the
//!   cut deleted. A crash in between leaves more files than needed, never fewer.
//! * The snapshot thread holds the registry weakly: it never keeps it alive, and never runs
//!   the last handle's drop (which joins it).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Weak;

use super::files::{list, snapshot_name, sync_dir};
use super::record::{
    put_removed, put_request, put_set, put_snapshot_begin, put_snapshot_end, seal,
};
use super::writer::{Log, ToSnapshots};
use super::PersistError;
use crate::store::{Revision, Shared};
use crate::sync::Arc;

/// Bytes encoded before they are written out.
const WRITE_CHUNK: usize = 1 << 20;

/// A registry's state read out for a snapshot: the Arcs of its registers (cheap to take),
/// encoded later, off the path that took them.
pub(crate) struct Collected {
    horizon: Revision,
    removals: Vec<(Arc<str>, Revision, crate::store::EventKind)>,
    registers: Vec<(Arc<crate::store::Register>, u64, u64)>,
    requests: Vec<crate::store::SavedRequest>,
    wall: u64,
}

impl Collected {
    /// Reads out `shared`'s state.
    pub(crate) fn from(shared: &Shared) -> Self {
        let (horizon, removals) = shared.saved_history();
        Collected {
            horizon,
            removals,
            registers: shared.saved_registers(),
            requests: shared.saved_requests(),
            wall: shared.wall_ms(),
        }
    }

    /// Registers in it.
    #[cfg(feature = "cluster")]
    pub(crate) fn registers(&self) -> usize {
        self.registers.len()
    }
}

/// Writes the registry's state, as a snapshot named for `revision`, to `out` (a file, or a
/// cluster's snapshot in memory): the magic, then sealed frames. Returns the bytes written.
pub(crate) fn write(
    shared: &Shared,
    revision: Revision,
    out: &mut impl Write,
) -> std::io::Result<u64> {
    write_collected(&Collected::from(shared), revision, out)
}

/// [`write`] of a state read out before.
pub(crate) fn write_collected(
    state: &Collected,
    revision: Revision,
    out: &mut impl Write,
) -> std::io::Result<u64> {
    let Collected {
        horizon,
        removals,
        registers,
        requests,
        wall,
    } = state;
    out.write_all(super::record::SNAPSHOT_MAGIC)?;
    let mut size = 8u64;
    let mut chunk = Vec::with_capacity(WRITE_CHUNK * 2);
    let mut flush = |chunk: &mut Vec<u8>, out: &mut dyn Write| {
        seal(chunk);
        size += chunk.len() as u64;
        let written = out.write_all(chunk);
        chunk.clear();
        written
    };
    put_snapshot_begin(&mut chunk, revision, *wall, *horizon);
    for (name, removed, kind) in removals {
        put_removed(&mut chunk, name, *removed, *kind);
        if chunk.len() >= WRITE_CHUNK {
            flush(&mut chunk, out)?;
        }
    }
    for (register, ttl_ms, deadline) in registers {
        put_set(&mut chunk, register, *ttl_ms, *deadline);
        if chunk.len() >= WRITE_CHUNK {
            flush(&mut chunk, out)?;
        }
    }
    for saved in requests {
        put_request(
            &mut chunk,
            &saved.name,
            saved.id,
            &saved.value,
            saved.at_wall_ms,
            saved.origin.as_ref(),
        );
        if chunk.len() >= WRITE_CHUNK {
            flush(&mut chunk, out)?;
        }
    }
    put_snapshot_end(
        &mut chunk,
        registers.len() as u64,
        removals.len() as u64,
        requests.len() as u64,
    );
    flush(&mut chunk, out)?;
    Ok(size)
}

/// Starts the snapshot thread: it takes a snapshot whenever the writer says one is due.
pub(crate) fn spawn(
    shared: Weak<Shared>,
    log: Arc<Log>,
    dir: PathBuf,
    from_writer: mpsc::Receiver<ToSnapshots>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("reg-snapshot".into())
        .spawn(move || {
            while let Ok(message) = from_writer.recv() {
                let ToSnapshots::Due = message else { continue };
                let Some(shared) = shared.upgrade() else {
                    break;
                };
                shared.at_commit_boundary(|revision| log.cut(revision));
                // Wait for the writer to close the segment at the cut.
                let revision = loop {
                    match from_writer.recv() {
                        Ok(ToSnapshots::Rotated(revision)) => break Some(revision),
                        Ok(ToSnapshots::Due) => {}
                        Err(_) => break None,
                    }
                };
                let Some(revision) = revision else { break };
                match take(&shared, &dir, revision) {
                    Ok(bytes) => tracing::info!(revision, bytes, "reg: snapshot written"),
                    Err(error) => tracing::error!(%error, "reg: a snapshot failed; will retry"),
                }
            }
        })
}

/// Writes the snapshot at `revision` and deletes what it makes unneeded. Returns its size.
pub(crate) fn take(shared: &Shared, dir: &Path, revision: Revision) -> Result<u64, PersistError> {
    let name = snapshot_name(revision);
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |source| PersistError::io(&tmp, source);
    let mut file = BufWriter::new(File::create(&tmp).map_err(io)?);
    let size = write(shared, revision, &mut file).map_err(io)?;
    let file = file.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    let path = dir.join(&name);
    std::fs::rename(&tmp, &path).map_err(|e| PersistError::io(&path, e))?;
    sync_dir(dir)?;
    // Everything before the cut is in the snapshot now.
    let listing = list(dir)?;
    for (at, old) in listing.snapshots.iter().chain(&listing.segments) {
        let before_cut = if old
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("snap-"))
        {
            *at < revision
        } else {
            *at <= revision
        };
        if before_cut {
            std::fs::remove_file(old).map_err(|e| PersistError::io(old, e))?;
        }
    }
    sync_dir(dir)?;
    Ok(size)
}

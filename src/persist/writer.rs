//! The log writer: the commit path's sink buffers records, one thread writes and syncs them.
//!
//! # Invariants
//!
//! * **The sink only buffers.** Under the commit lock [`LogSink::record`] encodes a record into
//!   the sink's own buffer (no checksum: the writer seals frames), and
//!   [`LogSink::committed`] hands the buffer to [`Pending`] under its mutex (lock order:
//!   commit → pending; nothing takes them the other way). So `Pending::buf` always holds whole
//!   commits, in revision order, and `Pending::through` is the revision its last byte covers.
//! * **One writer.** Only the writer thread touches the segment files. It takes everything
//!   pending at once, so the commits that arrived while it was writing or syncing share the
//!   next write and the next sync (group commit).
//! * **What "synced" means.** `Synced::revision` moves to `through` only after the bytes up to
//!   it are written — and, under `always` and `batch`, `fdatasync`ed. Under `always` a writer
//!   that commits waits for it (see `Durability::durable`) before answering.
//! * Change requests are not commits: their records are appended to `Pending::buf` directly,
//!   by the requester after its map change (lock order: a map shard → pending, never the
//!   other way), between whole commits. `Pending::appended` counts every byte handed over,
//!   so "everything so far is synced" is a position too (`Synced::bytes`).
//! * **A cut** (for a snapshot) is a position in `Pending::buf` recorded at a commit boundary
//!   with the revision published there: the bytes before it go to the current segment, which
//!   is then synced and closed; the bytes after it start `log-<revision + 1>`.
//! * **A failed write loses nothing in memory.** The unwritten bytes are kept, the segment is
//!   cut back to its last good length, writes are refused (`Synced::error`) and the writer
//!   retries every [`RETRY`] until it succeeds; then writes are accepted again.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::files::{open_segment, segment_name, sync_dir};
use super::record::{put_removed, put_request, put_set, put_taken, seal};
use super::SyncPolicy;
use crate::store::commit::{Committed, Durability, Now, Sink};
use crate::store::Revision;
use crate::sync::Arc;

/// How often a failed write is retried.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// A sink buffer larger than this is given back after its commit is handed on (a mass expiry
/// of a million registers writes 30 MB of records in one pass).
const KEEP_BUFFER: usize = 1 << 20;

/// What the commit path has handed the writer and it has not written yet.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    buf: Vec<u8>,
    through: Revision,
    /// Bytes ever handed over (commits and request records): a position in the log.
    appended: u64,
    cut: Option<(usize, Revision)>,
    stop: bool,
}

/// How far the log is on disk.
#[derive(Debug, Clone, Default)]
pub(crate) struct Synced {
    pub(crate) revision: Revision,
    /// How much of what was ever handed over ([`Pending::appended`]) is written (and synced).
    pub(crate) bytes: u64,
    /// Why writes are refused now, if they are.
    pub(crate) error: Option<Arc<str>>,
}

/// What the sink, the writer thread and the waiters share.
#[derive(Debug)]
pub(crate) struct Log {
    pending: Mutex<Pending>,
    wake: Condvar,
    synced: tokio::sync::watch::Sender<Synced>,
    policy: SyncPolicy,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The commit path's sink into the log.
#[derive(Debug)]
pub(crate) struct LogSink {
    local: Vec<u8>,
    log: Arc<Log>,
}

impl Sink for LogSink {
    fn record(&mut self, change: Committed<'_>, now: Now) {
        match change {
            Committed::Set {
                register,
                ttl_ms,
                deadline_ms,
                ..
            } => {
                let wall = now
                    .wall_ms
                    .saturating_add(deadline_ms.saturating_sub(now.mono_ms));
                put_set(&mut self.local, register, ttl_ms, wall);
            }
            Committed::Removed {
                name,
                revision,
                kind,
                ..
            } => put_removed(&mut self.local, name, revision, kind),
        }
    }

    fn committed(&mut self, through: Revision) {
        let mut pending = self.log.pending.lock();
        pending.appended += self.local.len() as u64;
        if pending.buf.is_empty() {
            std::mem::swap(&mut pending.buf, &mut self.local);
        } else {
            pending.buf.extend_from_slice(&self.local);
        }
        pending.through = through;
        drop(pending);
        self.local.clear();
        if self.local.capacity() > KEEP_BUFFER {
            self.local = Vec::new();
        }
        if self.log.policy == SyncPolicy::Always {
            self.log.wake.notify_one();
        }
    }
}

impl Durability for Log {
    fn writable(&self) -> Result<(), Arc<str>> {
        match &self.synced.borrow().error {
            Some(error) => Err(Arc::clone(error)),
            None => Ok(()),
        }
    }

    fn durable(
        &self,
        revision: Revision,
    ) -> Pin<Box<dyn Future<Output = Result<(), Arc<str>>> + Send + 'static>> {
        if self.policy != SyncPolicy::Always {
            return Box::pin(std::future::ready(Ok(())));
        }
        let mut synced = self.synced.subscribe();
        Box::pin(async move {
            let seen = synced
                .wait_for(|s| s.revision >= revision || s.error.is_some())
                .await
                .map(|s| s.clone());
            match seen {
                Ok(s) if s.revision >= revision => Ok(()),
                Ok(s) => Err(s.error.unwrap_or_else(|| Arc::from("the log failed"))),
                Err(_) => Err(Arc::from("the log writer has stopped")),
            }
        })
    }

    fn durable_all(&self) -> Pin<Box<dyn Future<Output = Result<(), Arc<str>>> + Send + 'static>> {
        if self.policy != SyncPolicy::Always {
            return Box::pin(std::future::ready(Ok(())));
        }
        let position = self.pending.lock().appended;
        let mut synced = self.synced.subscribe();
        Box::pin(async move {
            let seen = synced
                .wait_for(|s| s.bytes >= position || s.error.is_some())
                .await
                .map(|s| s.clone());
            match seen {
                Ok(s) if s.bytes >= position => Ok(()),
                Ok(s) => Err(s.error.unwrap_or_else(|| Arc::from("the log failed"))),
                Err(_) => Err(Arc::from("the log writer has stopped")),
            }
        })
    }

    fn close(&self) {
        self.pending.lock().stop = true;
        self.wake.notify_one();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

/// The writer's view of the segment it appends to.
#[derive(Debug)]
struct Segment {
    file: File,
    /// Bytes known good on disk (written, and synced if the policy syncs).
    len: u64,
}

/// Where the writer tells the snapshot thread a cut has been made (the new segment's first
/// revision minus one), and where it asks for a snapshot.
#[derive(Debug)]
pub(crate) enum ToSnapshots {
    /// The log since the last snapshot has grown past the threshold.
    Due,
    /// The segment ending at this revision is closed and synced.
    Rotated(Revision),
}

/// What the writer starts from.
#[derive(Debug)]
pub(crate) struct Start {
    pub(crate) dir: PathBuf,
    /// The first revision of the segment to append to (created if missing).
    pub(crate) first: Revision,
    /// That segment's good length (it is cut back to it), or `None` to create it afresh.
    pub(crate) end: Option<u64>,
    /// The revision restored: the log holds everything up to it.
    pub(crate) through: Revision,
    pub(crate) policy: SyncPolicy,
    /// Ask for a snapshot once this many bytes are logged after the last one.
    pub(crate) snapshot_after: u64,
    /// Bytes of log replayed at start (they count towards the next snapshot).
    pub(crate) replayed: u64,
    pub(crate) to_snapshots: mpsc::Sender<ToSnapshots>,
}

/// Starts the writer. Returns the log and the sink to add to the commit path.
pub(crate) fn start(start: Start) -> Result<(Arc<Log>, LogSink), super::PersistError> {
    let Start {
        dir,
        first,
        end,
        through,
        policy,
        snapshot_after,
        replayed,
        to_snapshots,
    } = start;
    let path = dir.join(segment_name(first));
    let (file, len) = open_segment(&path, end)?;
    sync_dir(&dir)?;
    let (synced, _) = tokio::sync::watch::channel(Synced {
        revision: through,
        bytes: 0,
        error: None,
    });
    let log = Arc::new(Log {
        pending: Mutex::new(Pending {
            through,
            ..Pending::default()
        }),
        wake: Condvar::new(),
        synced,
        policy,
        thread: Mutex::new(None),
    });
    let writer = Writer {
        log: Arc::clone(&log),
        dir,
        segment: Segment { file, len },
        unwritten: Vec::new(),
        cut: None,
        through,
        appended: 0,
        since_snapshot: replayed,
        snapshot_after,
        asked: false,
        to_snapshots,
    };
    let thread = std::thread::Builder::new()
        .name("reg-log".into())
        .spawn(move || writer.run())
        .map_err(|e| super::PersistError::io(&path, e))?;
    *log.thread.lock() = Some(thread);
    let sink = LogSink {
        local: Vec::new(),
        log: Arc::clone(&log),
    };
    Ok((log, sink))
}

struct Writer {
    log: Arc<Log>,
    dir: PathBuf,
    segment: Segment,
    /// Sealed bytes taken from `Pending` that are not on disk yet: the last chunk, or what
    /// failed writes left.
    unwritten: Vec<u8>,
    /// A cut inside `unwritten`: (position, the revision published there).
    cut: Option<(usize, Revision)>,
    /// The revision the last byte of `unwritten` covers.
    through: Revision,
    /// [`Pending::appended`] as of the last byte of `unwritten`.
    appended: u64,
    /// Log bytes written since the last snapshot's cut.
    since_snapshot: u64,
    snapshot_after: u64,
    /// A snapshot has been asked for and its cut not yet made.
    asked: bool,
    to_snapshots: mpsc::Sender<ToSnapshots>,
}

impl Writer {
    fn run(mut self) {
        let interval = match self.log.policy {
            SyncPolicy::Always => None,
            SyncPolicy::Batch(every) | SyncPolicy::None(every) => Some(every),
        };
        let mut next = Instant::now() + interval.unwrap_or_default();
        loop {
            let failing = self.log.synced.borrow().error.is_some();
            let stop = {
                let mut pending = self.log.pending.lock();
                loop {
                    if pending.stop {
                        break;
                    }
                    if failing {
                        // Retry after a pause, or at once when told to stop.
                        let _ = self
                            .log
                            .wake
                            .wait_until(&mut pending, Instant::now() + RETRY);
                        break;
                    }
                    match interval {
                        None if !pending.buf.is_empty() || pending.cut.is_some() => break,
                        None => self.log.wake.wait(&mut pending),
                        Some(_) if Instant::now() >= next => break,
                        Some(_) => {
                            let _ = self.log.wake.wait_until(&mut pending, next);
                        }
                    }
                }
                let mut chunk = std::mem::take(&mut pending.buf);
                let offset = self.unwritten.len();
                if let Some((at, revision)) = pending.cut.take() {
                    self.cut = Some((offset + at, revision));
                }
                self.through = pending.through;
                self.appended = pending.appended;
                let stop = pending.stop;
                drop(pending);
                seal(&mut chunk);
                if self.unwritten.is_empty() {
                    self.unwritten = chunk;
                } else {
                    self.unwritten.extend_from_slice(&chunk);
                }
                stop
            };
            if let Some(every) = interval {
                next = (next + every).max(Instant::now());
            }
            match self.flush() {
                Ok(()) => self.flushed(),
                Err(error) => self.failed(&error),
            }
            if stop {
                if !self.unwritten.is_empty() {
                    tracing::error!(
                        bytes = self.unwritten.len(),
                        "reg: stopping with the log unwritten; the last changes are lost"
                    );
                }
                break;
            }
        }
    }

    /// Writes what is unwritten, making the cut on the way.
    fn flush(&mut self) -> std::io::Result<()> {
        if let Some((at, revision)) = self.cut {
            if at > 0 {
                self.append(at)?;
                self.cut = Some((0, revision));
            }
            // A segment that is not the newest must be whole on disk, whatever the policy.
            self.segment.file.sync_data()?;
            self.rotate(revision)?;
            self.cut = None;
        }
        self.append(self.unwritten.len())?;
        Ok(())
    }

    /// Appends the first `n` unwritten bytes to the segment (and syncs them unless the policy
    /// is `none`); on failure, cuts the segment back to its good length and keeps them.
    fn append(&mut self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        let bytes = &self.unwritten[..n];
        let result = self.segment.file.write_all(bytes).and_then(|()| {
            if matches!(self.log.policy, SyncPolicy::None(_)) {
                Ok(())
            } else {
                self.segment.file.sync_data()
            }
        });
        if let Err(error) = result {
            let good = self.segment.len;
            let _ = self.segment.file.set_len(good);
            let _ = std::io::Seek::seek(&mut self.segment.file, std::io::SeekFrom::Start(good));
            return Err(error);
        }
        self.segment.len += n as u64;
        self.since_snapshot += n as u64;
        self.unwritten.drain(..n);
        Ok(())
    }

    /// Closes the current segment at `revision` and starts `log-<revision + 1>`.
    fn rotate(&mut self, revision: Revision) -> std::io::Result<()> {
        let path = self.dir.join(segment_name(revision + 1));
        let (file, len) = open_segment(&path, None).map_err(std::io::Error::other)?;
        sync_dir(&self.dir).map_err(std::io::Error::other)?;
        self.segment = Segment { file, len };
        self.since_snapshot = 0;
        self.asked = false;
        let _ = self.to_snapshots.send(ToSnapshots::Rotated(revision));
        Ok(())
    }

    fn flushed(&mut self) {
        if self.log.synced.borrow().error.is_some() {
            tracing::warn!("reg: the data directory is writable again; writes are accepted");
        }
        self.log.synced.send_replace(Synced {
            revision: self.through,
            bytes: self.appended,
            error: None,
        });
        if !self.asked && self.since_snapshot >= self.snapshot_after {
            self.asked = self.to_snapshots.send(ToSnapshots::Due).is_ok();
        }
    }

    fn failed(&mut self, error: &std::io::Error) {
        let message = format!("the data directory cannot be written: {error}");
        if self.log.synced.borrow().error.is_none() {
            tracing::error!("reg: {message}; writes are refused (503) until it can, reads go on");
        }
        self.log
            .synced
            .send_modify(|s| s.error = Some(Arc::from(message.as_str())));
    }
}

impl crate::store::RequestLog for Log {
    fn requested(
        &self,
        name: &str,
        id: u64,
        value: &crate::json::Json,
        at_wall_ms: u64,
        origin: Option<&crate::store::Origin>,
    ) {
        self.append(|buf| put_request(buf, name, id, value, at_wall_ms, origin));
    }

    fn taken(&self, name: &str, id: u64) {
        self.append(|buf| put_taken(buf, name, id));
    }
}

impl Log {
    /// Appends a record that is not a commit (a change request's) to what is pending.
    fn append(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = self.pending.lock();
        let before = pending.buf.len();
        encode(&mut pending.buf);
        pending.appended += (pending.buf.len() - before) as u64;
        drop(pending);
        if self.policy == SyncPolicy::Always {
            self.wake.notify_one();
        }
    }

    /// Asks for a cut at the current commit boundary (`revision`, the one published there):
    /// called under the commit lock, so `Pending::buf` holds exactly the commits up to it.
    pub(crate) fn cut(&self, revision: Revision) {
        let mut pending = self.pending.lock();
        let at = pending.buf.len();
        pending.cut = Some((at, revision));
        drop(pending);
        self.wake.notify_one();
    }
}

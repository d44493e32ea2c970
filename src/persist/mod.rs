//! Durability: registers and revisions survive a restart and a crash.
//!
//! A persistent registry logs every committed change — the commit path's feed, in revision
//! order (`store/commit.rs`) — to append-only segment files in a data directory, and bounds
//! the log with snapshots (`snapshot.rs`). Recovery reads the newest snapshot and replays the
//! log after it (`files.rs` for the damage rules, `store/restore.rs` for how state is put
//! back). Record format: `record.rs`. The same log is what a replica would tail.
//!
//! ```no_run
//! use std::time::Duration;
//! use reg::persist::SyncPolicy;
//! use reg::{Json, Registry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::builder().persist("/var/lib/reg", SyncPolicy::default())?;
//! registry.set("config.mode", Json::parse(b"\"eco\"")?, None, Some(Duration::from_secs(86_400)))?;
//! // Restarted, the register is back, at the same revision, with a day to live.
//! # Ok(())
//! # }
//! ```
//!
//! # What a crash can lose
//!
//! | `--sync` | a write answered 204 is on disk | a crash loses |
//! | --- | --- | --- |
//! | `always` | before the answer (`fdatasync`; concurrent writes share one) | nothing answered |
//! | `batch` (default, every `--sync-interval`, 100 ms) | within the interval | up to the last interval |
//! | `none` | when the OS writes it back | what the OS had not written (a process crash loses nothing; a power cut, up to ~30 s) |
//!
//! What persists: every register (value, metadata, revision, created revision, TTL, deadline
//! as wall time), the revision counter, and the removal history (so a wait with the
//! `X-Reg-Index` a client had before the restart misses nothing). A refresh that changes
//! nothing is not written (a fleet refreshing 20,000 registers a second writes nothing for it);
//! snapshots record current deadlines. Pending change requests persist too, with their age (a
//! command sent to a device is still there for it after a restart, and still expires after
//! `--request-max-age`), each delivered at most once across the restart.
//!
//! # TTL across a restart
//!
//! A restored register expires at `max(time it had left, grace)` from the restart, where the
//! grace is its own TTL unless `restore_grace` says otherwise: a provider that is alive gets a
//! whole TTL to refresh in before its registers expire, as etcd extends leases after a leader
//! change. A provider that died while the server was down is expired one TTL later.

pub(crate) mod crc;
mod files;
pub(crate) mod record;
pub(crate) mod snapshot;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::store::commit::Durability;
use crate::store::restore::{restored_deadline, Restore};
use crate::store::{Registry, RegistryBuilder, Revision, SavedRequest};
use crate::sync::Arc;
use files::{list, read_frames, Damage, DirLock};
use record::{Record, LOG_MAGIC, SNAPSHOT_MAGIC};

/// When a logged change reaches the disk (see the module docs for what a crash loses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every change is synced before its write is answered; concurrent writes share a sync.
    Always,
    /// Written and synced every interval.
    Batch(Duration),
    /// Written every interval; the OS decides when it reaches the disk.
    None(Duration),
}

/// The default batch interval: 100 ms.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// The default log size after which a snapshot is taken: 64 MiB.
pub const DEFAULT_SNAPSHOT_BYTES: u64 = 64 << 20;

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy::Batch(DEFAULT_SYNC_INTERVAL)
    }
}

/// Where and how a registry persists.
#[derive(Debug, Clone)]
pub struct Persist {
    dir: PathBuf,
    sync: SyncPolicy,
    restore_grace: Option<Duration>,
    repair: bool,
    snapshot_bytes: u64,
}

impl Persist {
    /// Persist in `dir` (created if missing), with the default policy.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Persist {
            dir: dir.into(),
            sync: SyncPolicy::default(),
            restore_grace: None,
            repair: false,
            snapshot_bytes: DEFAULT_SNAPSHOT_BYTES,
        }
    }

    /// When changes reach the disk (default: [`SyncPolicy::Batch`] every 100 ms).
    pub fn sync(mut self, policy: SyncPolicy) -> Self {
        self.sync = policy;
        self
    }

    /// The least time a restored register has left after a restart (default: its own TTL).
    /// Zero restores each with exactly the time it had left when last saved.
    pub fn restore_grace(mut self, grace: Duration) -> Self {
        self.restore_grace = Some(grace);
        self
    }

    /// Start even when a file is corrupt in the middle: keep everything before the damage,
    /// drop it and what follows (with a warning naming the file and offset).
    pub fn repair(mut self, repair: bool) -> Self {
        self.repair = repair;
        self
    }

    /// Take a snapshot once the log since the last one has grown past `bytes` (default 64 MiB).
    pub fn snapshot_after_bytes(mut self, bytes: u64) -> Self {
        self.snapshot_bytes = bytes.max(1);
        self
    }
}

/// Why a persistent registry cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// Reading or writing the data directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("data directory {} is in use by another reg process (pid {holder}); one server per data directory", dir.display())]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// What the lock file says about its holder (its pid).
        holder: String,
    },
    /// A file is damaged in a way a crash cannot explain.
    #[error("{} is damaged at byte {offset}: {what}. Start with --repair to keep everything before it and drop the rest", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong there.
        what: String,
    },
}

impl PersistError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        PersistError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl RegistryBuilder {
    /// Builds a registry that persists in `dir` with `policy`: what was saved there is
    /// restored first. See [`persist`](crate::persist) for what persists and what a crash can
    /// lose, and [`open`](Self::open) for the other options.
    pub fn persist(
        self,
        dir: impl Into<PathBuf>,
        policy: SyncPolicy,
    ) -> Result<Registry, PersistError> {
        self.open(Persist::new(dir).sync(policy))
    }

    /// Builds a registry that persists as `persist` says, restoring what was saved first.
    pub fn open(self, persist: Persist) -> Result<Registry, PersistError> {
        open(self, persist)
    }
}

/// The persistence of one registry: the log, the snapshot thread, the directory lock.
#[derive(Debug)]
struct Durable {
    log: Arc<writer::Log>,
    snapshots: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held until [`close`](Durability::close), which lets go of it once the writer and
    /// snapshot threads are done: not when the last `Arc` of the registry's state drops, which
    /// a thread still finishing a tick can delay (a reopen right after the last handle dropped
    /// then found the directory locked by its own process).
    lock: parking_lot::Mutex<Option<DirLock>>,
}

impl Durability for Durable {
    fn writable(&self) -> Result<(), Arc<str>> {
        self.log.writable()
    }

    fn durable(
        &self,
        revision: Revision,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Arc<str>>> + Send + 'static>>
    {
        self.log.durable(revision)
    }

    fn durable_all(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Arc<str>>> + Send + 'static>>
    {
        self.log.durable_all()
    }

    fn close(&self) {
        self.log.close();
        // The writer is gone, and with it the snapshot thread's channel: it ends.
        if let Some(thread) = self.snapshots.lock().take() {
            let _ = thread.join();
        }
        drop(self.lock.lock().take());
    }
}

fn open(builder: RegistryBuilder, persist: Persist) -> Result<Registry, PersistError> {
    let dir = persist.dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| PersistError::io(&dir, e))?;
    let lock = DirLock::acquire(&dir)?;
    let listing = list(&dir)?;
    let registry = builder.build();
    let mut replay = Replay::new(registry.restore(), persist.restore_grace);

    // The newest snapshot, then the segments from its cut on.
    let mut base = 0;
    if let Some((revision, path)) = listing.snapshots.last() {
        base = *revision;
        load_snapshot(&mut replay, path, persist.repair)?;
    }
    let segments: Vec<&(Revision, PathBuf)> = listing
        .segments
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            // Skip a segment wholly before the cut: the next one starts at or before it.
            listing
                .segments
                .get(i + 1)
                .is_none_or(|(next, _)| *next > base + 1)
        })
        .map(|(_, segment)| segment)
        .collect();
    let mut replayed = 0u64;
    let mut last_end = None;
    for (i, (_, path)) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        let scanned = read_frames(path, LOG_MAGIC, |record, _| replay.apply(record))?;
        replayed += scanned.end;
        let mut end = scanned.end;
        if let Some(damage) = scanned.damage {
            let torn = is_last && !damage.good_after;
            if torn {
                tracing::warn!(
                    file = %path.display(),
                    offset = damage.offset,
                    dropped = scanned.len - damage.offset,
                    "reg: the log ends in a torn record ({}): dropped it",
                    damage.bad
                );
            } else if persist.repair {
                tracing::warn!(
                    file = %path.display(),
                    offset = damage.offset,
                    "reg: repair: the log is damaged ({}); kept everything before it, dropped it and the {} segment(s) after",
                    damage.bad,
                    segments.len() - i - 1
                );
                for (_, later) in &segments[i + 1..] {
                    std::fs::remove_file(later).map_err(|e| PersistError::io(later, e))?;
                }
                end = damage.offset;
                truncate(path, end)?;
                last_end = Some(((*path).clone(), end));
                break;
            } else {
                return Err(corrupt(path, &damage));
            }
            end = damage.offset;
        }
        if is_last {
            last_end = Some(((*path).clone(), end));
        }
    }
    let revision = replay.finish();

    // Append to the newest segment, or start one after what was restored.
    let (first, end) = match &last_end {
        Some((path, end)) => (segment_first(path).unwrap_or(revision + 1), Some(*end)),
        None => (revision + 1, None),
    };
    let (to_snapshots, from_writer) = mpsc::channel();
    let (log, sink) = writer::start(writer::Start {
        dir: dir.clone(),
        first,
        end,
        through: revision,
        policy: persist.sync,
        snapshot_after: persist.snapshot_bytes,
        replayed,
        to_snapshots,
    })?;
    let snapshots = snapshot::spawn(
        registry.shared_weak(),
        Arc::clone(&log),
        dir.clone(),
        from_writer,
    )
    .map_err(|e| PersistError::io(&dir, e))?;
    let durable = Durable {
        log,
        snapshots: parking_lot::Mutex::new(Some(snapshots)),
        lock: parking_lot::Mutex::new(Some(lock)),
    };
    let requests = Arc::clone(&durable.log);
    registry.attach(Box::new(sink), Arc::new(durable), requests);
    tracing::info!(
        dir = %dir.display(),
        revision,
        registers = registry.len(),
        "reg: restored"
    );
    Ok(registry)
}

/// The first revision in a segment's file name.
fn segment_first(path: &Path) -> Option<Revision> {
    path.file_name()?
        .to_str()?
        .strip_prefix("log-")?
        .strip_suffix(".reg")?
        .parse()
        .ok()
}

fn corrupt(path: &Path, damage: &Damage) -> PersistError {
    PersistError::Corrupt {
        path: path.to_path_buf(),
        offset: damage.offset,
        what: damage.bad.to_string(),
    }
}

fn truncate(path: &Path, end: u64) -> Result<(), PersistError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(end).and_then(|()| f.sync_all()))
        .map_err(|e| PersistError::io(path, e))
}

/// Puts saved records back: registers at once, change requests at the end (a request
/// applies unless a newer one for its name, or a take of it or of a newer one, is on record:
/// their records are in id order, not in the order they were written).
struct Replay<'a> {
    restore: Restore<'a>,
    grace: Option<Duration>,
    requests: HashMap<Arc<str>, SavedRequest>,
    taken: HashMap<Arc<str>, u64>,
    /// The newest request id on record (requested or taken).
    last_id: u64,
}

impl<'a> Replay<'a> {
    fn new(restore: Restore<'a>, grace: Option<Duration>) -> Self {
        Replay {
            restore,
            grace,
            requests: HashMap::new(),
            taken: HashMap::new(),
            last_id: 0,
        }
    }

    fn apply(&mut self, record: Record) {
        match record {
            Record::Request {
                name,
                id,
                value,
                at_wall_ms,
                origin,
            } => {
                self.last_id = self.last_id.max(id);
                let newer = self.requests.get(&name).is_some_and(|had| had.id >= id);
                if !newer {
                    let saved = SavedRequest {
                        name: Arc::clone(&name),
                        value,
                        id,
                        at_wall_ms,
                        origin,
                    };
                    self.requests.insert(name, saved);
                }
            }
            Record::Taken { name, id } => {
                self.last_id = self.last_id.max(id);
                let taken = self.taken.entry(name).or_insert(0);
                *taken = (*taken).max(id);
            }
            other => apply(&mut self.restore, other, self.grace),
        }
    }

    fn finish(mut self) -> Revision {
        self.restore.request_ids_through(self.last_id);
        for (name, saved) in self.requests {
            if self.taken.get(&name).is_none_or(|taken| *taken < saved.id) {
                self.restore.request(saved);
            }
        }
        self.restore.finish()
    }
}

/// Puts one saved register record back.
fn apply(restore: &mut Restore<'_>, record: Record, grace: Option<Duration>) {
    match record {
        Record::Set {
            saved,
            deadline_wall_ms,
        } => {
            let (mono, wall) = restore.clock_now();
            let deadline = restored_deadline(mono, wall, deadline_wall_ms, saved.ttl_ms, grace);
            restore.set(saved, deadline);
        }
        Record::Removed {
            name,
            revision,
            kind,
        } => restore.removed(name, revision, kind),
        Record::SnapshotBegin {
            revision, horizon, ..
        } => {
            restore.forget_through(horizon);
            restore.saw(revision);
        }
        Record::SnapshotEnd { .. } | Record::Request { .. } | Record::Taken { .. } => {}
    }
}

/// Follows a snapshot's records: between its begin record and an end record whose counts
/// match what came before it.
#[derive(Debug, Default)]
struct Whole {
    began: bool,
    ended: bool,
    /// Registers, removals and requests seen.
    counts: (u64, u64, u64),
}

impl Whole {
    /// Notes `record`; whether it is part of the snapshot's state.
    fn take(&mut self, record: &Record) -> bool {
        match record {
            Record::SnapshotBegin { .. } => self.began = true,
            Record::SnapshotEnd {
                registers,
                removals,
                requests,
            } => self.ended = self.counts == (*registers, *removals, *requests),
            Record::Set { .. } => self.counts.0 += 1,
            Record::Removed { .. } => self.counts.1 += 1,
            Record::Request { .. } => self.counts.2 += 1,
            Record::Taken { .. } => {}
        }
        self.began && !self.ended
    }
}

#[cfg(feature = "cluster")]
/// Restores a snapshot held in memory (a cluster's, written by [`snapshot::write`]) into
/// `registry`, which has served no one: whole, or not at all (it is checked first). Request
/// ids go on after `request_ids_through` at least. Returns the revision restored.
pub(crate) fn restore_bytes(
    registry: &Registry,
    bytes: &[u8],
    request_ids_through: u64,
) -> Result<Revision, String> {
    let frames = |each: &mut dyn FnMut(Record)| -> Result<(), String> {
        let mut rest = bytes
            .strip_prefix(SNAPSHOT_MAGIC.as_slice())
            .ok_or("not a reg snapshot of this format version")?;
        while !rest.is_empty() {
            let (payload, len) = record::next_frame(rest).map_err(|bad| bad.to_string())?;
            each(record::decode(payload).map_err(|bad| bad.to_string())?);
            rest = &rest[len..];
        }
        Ok(())
    };
    let mut whole = Whole::default();
    frames(&mut |record| {
        whole.take(&record);
    })?;
    if !(whole.began && whole.ended) {
        return Err(
            "the snapshot is incomplete (no begin record, or its end record's counts do not match)"
                .into(),
        );
    }
    let mut replay = Replay::new(registry.restore(), None);
    let mut whole = Whole::default();
    frames(&mut |record| {
        if whole.take(&record) {
            replay.apply(record);
        }
    })?;
    replay.last_id = replay.last_id.max(request_ids_through);
    Ok(replay.finish())
}

/// Restores a snapshot: it must begin with its begin record and end with its end record,
/// undamaged (it was renamed into place whole); with `repair`, what precedes damage is kept.
fn load_snapshot(replay: &mut Replay<'_>, path: &Path, repair: bool) -> Result<(), PersistError> {
    let mut whole = Whole::default();
    let scanned = read_frames(path, SNAPSHOT_MAGIC, |record, _| {
        if whole.take(&record) {
            replay.apply(record);
        }
    })?;
    let (began, ended) = (whole.began, whole.ended);
    let damage = match scanned.damage {
        Some(damage) => Some(damage),
        None if !(began && ended) => Some(Damage {
            offset: scanned.end,
            bad: record::Bad::Undecodable(
                "the snapshot is incomplete (no begin record, or its end record's counts do not match)"
                    .into(),
            ),
            good_after: false,
        }),
        None => None,
    };
    match damage {
        Some(damage) if repair => {
            tracing::warn!(
                file = %path.display(),
                offset = damage.offset,
                "reg: repair: the snapshot is damaged ({}); kept the records before it",
                damage.bad
            );
            Ok(())
        }
        Some(damage) => Err(corrupt(path, &damage)),
        None => Ok(()),
    }
}

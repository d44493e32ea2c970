//! The audit log: `reg serve --audit-log FILE`, one JSON line per event, size-rotated.
//!
//! Every change (`create`, `change`, `delete`, `expire`) comes from the commit path, as a
//! [`Sink`], so none is missed and each carries its revision and, when a request made it, who
//! asked (identity, remote address, correlation id). Change requests (`request`), takes
//! (`take`) and refusals (`denied`, with the status) are recorded by the routes that serve
//! them. A refresh that changes nothing is not a change and is not recorded.
//!
//! ```text
//! {"time":"2026-12-07T16:27:39.123Z","event":"create","name":"lamp","revision":3,"identity":"sensor-17","remote":"127.0.0.1:51234","request_id":"4f1c-9"}
//! ```
//!
//! # Invariants
//! * **Never blocks the commit path.** A line goes into a bounded queue
//!   ([`QUEUE_LINES`]) with `try_send`; one thread writes the file. When the queue is full
//!   the line is dropped and counted: the writer then writes an `audit_overflow` line with
//!   the count, logs a warning, and `/metrics` shows `reg_audit_dropped_total`. A write that
//!   fails (a full disk) is logged as an error each time. Nothing is dropped silently.
//! * **Rotation:** when the file passes `max_bytes` it becomes `FILE.1` (`FILE.1` becomes
//!   `FILE.2`, …; the oldest beyond `keep` is deleted) and a new `FILE` is started.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use crate::server::response::write_str;
use crate::store::commit::{Committed, Now, Sink};
use crate::store::{EventKind, Origin, Revision};

/// Lines the queue holds before new ones are dropped (and counted): 65,536, a few seconds
/// of a busy fleet's changes. A change waits as two `Arc`s (its name is shared with the
/// register); a request's line is at most about 1.5 KiB (a name of up to 1 KiB, its value
/// cut to [`VALUE_BYTES`]), so a full queue holds about 100 MB at worst and a few MB in
/// practice (names of tens of bytes).
pub const QUEUE_LINES: usize = 65_536;
/// Most bytes of a requested value an audit line quotes: 256 (the line also gives the
/// value's full size). The registry keeps the value; the audit says who asked for what.
pub const VALUE_BYTES: usize = 256;
/// Default size at which the file is rotated: 100 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// Default number of rotated files kept: 5.
pub const DEFAULT_KEEP: usize = 5;

enum Message {
    Line(String),
    /// A committed change, as the sink took it under the commit lock: formatted by the
    /// writer thread, so the commit path only clones two `Arc`s.
    Change {
        event: &'static str,
        name: crate::sync::Arc<str>,
        revision: Revision,
        origin: Option<Origin>,
        wall_ms: u64,
    },
    /// Everything queued before it is written and flushed: then the sender is told.
    Flush(mpsc::Sender<()>),
}

/// The audit log's queue and counters. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct AuditLog {
    tx: SyncSender<Message>,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
    path: PathBuf,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Line(line) => f.debug_tuple("Line").field(line).finish(),
            Message::Change { event, name, .. } => {
                f.debug_tuple("Change").field(event).field(name).finish()
            }
            Message::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl AuditLog {
    /// Opens (appends to) `path` and starts the writer thread. `max_bytes`: rotate past this
    /// size; `keep`: rotated files kept (0: none, the file is truncated instead).
    ///
    /// # Errors
    /// When the file cannot be opened for appending.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Arc<AuditLog>> {
        Self::open_with_queue(path, max_bytes, keep, QUEUE_LINES)
    }

    fn open_with_queue(
        path: &Path,
        max_bytes: u64,
        keep: usize,
        queue: usize,
    ) -> io::Result<Arc<AuditLog>> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        let (tx, rx) = mpsc::sync_channel(queue);
        let log = Arc::new(AuditLog {
            tx,
            dropped: AtomicU64::new(0),
            written: Arc::new(AtomicU64::new(0)),
            path: path.to_owned(),
        });
        let writer = Writer {
            path: path.to_owned(),
            out: BufWriter::new(file),
            size,
            max_bytes: max_bytes.max(1),
            keep,
            log: Arc::downgrade(&log),
            reported: 0,
            written: Arc::clone(&log.written),
        };
        std::thread::Builder::new()
            .name("reg-audit".into())
            .spawn(move || writer.run(rx))?;
        Ok(log)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        // Ordering: Relaxed: a counter.
        self.dropped.load(Ordering::Relaxed)
    }

    /// Lines written.
    pub fn written(&self) -> u64 {
        // Ordering: Relaxed: a counter.
        self.written.load(Ordering::Relaxed)
    }

    /// Waits until every line queued so far is written and flushed (tests; shutdown).
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Message::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Queues one line; never blocks.
    fn push(&self, line: String) {
        self.send(Message::Line(line));
    }

    /// Queues a message; never blocks: a full queue drops it and counts it.
    fn send(&self, message: Message) {
        match self.tx.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                // Ordering: Relaxed: a counter, read by the writer and metrics.
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The commit-path sink that records every change.
    pub(crate) fn sink(self: &Arc<Self>) -> Box<dyn Sink> {
        Box::new(AuditSink {
            log: Arc::clone(self),
        })
    }

    /// Records an event a route served (`request`, `take`, `denied`).
    pub(crate) fn event(&self, event: &str, origin: &Origin, fields: &[(&str, Field<'_>)]) {
        let mut line = start(now_ms(), event);
        for (key, value) in fields {
            push_field(&mut line, key, *value);
        }
        push_origin(&mut line, Some(origin));
        self.push(finish(line));
    }
}

/// A value's JSON text for an audit line: whole up to [`VALUE_BYTES`], else cut there (on a
/// character boundary) and marked `…(N bytes)`.
pub(crate) fn clip(json: &[u8]) -> String {
    let text = String::from_utf8_lossy(json);
    if text.len() <= VALUE_BYTES {
        return text.into_owned();
    }
    let mut end = VALUE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &text[..end], json.len())
}

/// A field value of an audit line.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field<'a> {
    Str(&'a str),
    Num(u64),
}

#[derive(Debug)]
struct AuditSink {
    log: Arc<AuditLog>,
}

impl Sink for AuditSink {
    fn record(&mut self, change: Committed<'_>, now: Now) {
        let (event, name, revision, origin) = match change {
            Committed::Set {
                register, origin, ..
            } => {
                let event = if register.created() == register.revision() {
                    "create"
                } else {
                    "change"
                };
                (event, register.name_arc(), register.revision(), origin)
            }
            Committed::Removed {
                name,
                revision,
                kind,
                origin,
            } => {
                let event = if kind == EventKind::Expire {
                    "expire"
                } else {
                    "delete"
                };
                (event, name, revision, origin)
            }
        };
        self.log.send(Message::Change {
            event,
            name: crate::sync::Arc::clone(name),
            revision,
            origin: origin.cloned(),
            wall_ms: now.wall_ms,
        });
    }

    fn committed(&mut self, _through: Revision) {}
}

/// An audit line for a committed change.
fn change_line(
    event: &str,
    name: &str,
    revision: Revision,
    origin: Option<&Origin>,
    wall_ms: u64,
) -> String {
    let mut line = start(wall_ms, event);
    push_field(&mut line, "name", Field::Str(name));
    push_field(&mut line, "revision", Field::Num(revision));
    push_origin(&mut line, origin);
    finish(line)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn start(wall_ms: u64, event: &str) -> Vec<u8> {
    let mut line = Vec::with_capacity(192);
    line.extend_from_slice(b"{\"time\":\"");
    line.extend_from_slice(rfc3339(wall_ms).as_bytes());
    line.extend_from_slice(b"\",\"event\":");
    write_str(&mut line, event);
    line
}

fn push_field(line: &mut Vec<u8>, key: &str, value: Field<'_>) {
    line.push(b',');
    write_str(line, key);
    line.push(b':');
    match value {
        Field::Str(text) => write_str(line, text),
        Field::Num(number) => line.extend_from_slice(number.to_string().as_bytes()),
    }
}

fn push_origin(line: &mut Vec<u8>, origin: Option<&Origin>) {
    match origin {
        Some(origin) => {
            push_field(line, "identity", Field::Str(origin.identity()));
            if let Some(remote) = origin.remote() {
                push_field(line, "remote", Field::Str(&remote.to_string()));
            }
            push_field(line, "request_id", Field::Str(origin.request_id()));
        }
        None => push_field(line, "identity", Field::Str("reg")),
    }
}

fn finish(mut line: Vec<u8>) -> String {
    line.extend_from_slice(b"}\n");
    // Built from `write_str` (valid JSON strings) and ASCII: always UTF-8.
    String::from_utf8(line).unwrap_or_default()
}

/// `wall_ms` (milliseconds since the Unix epoch) as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339(wall_ms: u64) -> String {
    let secs = wall_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (unsigned: after 1970).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut out = String::with_capacity(24);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        wall_ms % 1000
    );
    out
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    max_bytes: u64,
    keep: usize,
    /// For the dropped count; weak, so the thread ends with the log.
    log: std::sync::Weak<AuditLog>,
    /// Dropped lines already reported in the file.
    reported: u64,
    written: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Message>) {
        while let Ok(message) = rx.recv() {
            self.handle(message);
            // Drain what else is queued before flushing: one write(2) per burst.
            while let Ok(message) = rx.try_recv() {
                self.handle(message);
            }
            self.report_dropped();
            if let Err(error) = self.out.flush() {
                tracing::error!(%error, path = %self.path.display(), "audit log write failed");
            }
        }
        let _ = self.out.flush();
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Line(line) => self.write(line.as_bytes()),
            Message::Change {
                event,
                name,
                revision,
                origin,
                wall_ms,
            } => {
                let line = change_line(event, &name, revision, origin.as_ref(), wall_ms);
                self.write(line.as_bytes());
            }
            Message::Flush(done) => {
                self.report_dropped();
                let _ = self.out.flush();
                let _ = done.send(());
            }
        }
    }

    fn report_dropped(&mut self) {
        let Some(log) = self.log.upgrade() else {
            return;
        };
        let dropped = log.dropped();
        if dropped > self.reported {
            let lost = dropped - self.reported;
            self.reported = dropped;
            tracing::warn!(lost, "the audit log fell behind: lines were dropped");
            let mut line = start(now_ms(), "audit_overflow");
            push_field(&mut line, "dropped", Field::Num(lost));
            self.write(finish(line).as_bytes());
        }
    }

    fn write(&mut self, line: &[u8]) {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            if let Err(error) = self.rotate() {
                // Go on in the current file and try again after another `max_bytes`, rather
                // than shift (and drop) the rotated files again at every line.
                tracing::error!(%error, path = %self.path.display(), "audit log rotation failed");
                self.size = 0;
            }
        }
        match self.out.write_all(line) {
            Ok(()) => {
                self.size += line.len() as u64;
                // Ordering: Relaxed: a counter.
                self.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::error!(%error, path = %self.path.display(), "audit log write failed");
            }
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let numbered = |n: usize| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.keep == 0 {
            self.out = BufWriter::new(File::create(&self.path)?);
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
            self.out = BufWriter::new(open_append(&self.path)?);
        }
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_clipped_on_a_character_boundary() {
        assert_eq!(clip(b"true"), "true");
        let long = format!("\"{}\"", "é".repeat(300));
        let clipped = clip(long.as_bytes());
        assert!(
            clipped.ends_with(&format!("…({} bytes)", long.len())),
            "{clipped}"
        );
        assert!(clipped.len() < VALUE_BYTES + 20);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_661_059_001), "2026-12-07T16:30:59.001Z");
    }

    #[test]
    fn a_writer_that_falls_behind_drops_counts_and_says_so() {
        // The log is a FIFO whose reader the test holds without reading: once the pipe's
        // buffer is full the writer thread blocks in write(2), the queue fills, and pushes
        // (which never block) are dropped and counted.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let opener = {
            let path = path.clone();
            std::thread::spawn(move || std::fs::File::open(path).unwrap())
        };
        let log = AuditLog::open_with_queue(&path, u64::MAX, 0, 4).unwrap();
        let mut reader = opener.join().unwrap();
        let origin = Origin::new("flood", "r", None);
        let filler = "x".repeat(1000);
        let mut pushed = 0u64;
        while log.dropped() == 0 {
            assert!(pushed < 1_000_000, "nothing was ever dropped");
            log.event("request", &origin, &[("value", Field::Str(&filler))]);
            pushed += 1;
        }
        let dropped = log.dropped();
        // Read what the writer wrote; it then catches up and reports the loss.
        let drain = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut reader, &mut text).unwrap();
            text
        });
        log.flush();
        let written = log.written();
        drop(log);
        let text = drain.join().unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let overflow: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|line| line["event"] == "audit_overflow")
            .collect();
        assert_eq!(overflow.len(), 1, "one report for one loss");
        assert_eq!(overflow[0]["dropped"].as_u64(), Some(dropped));
        assert_eq!(written, lines.len() as u64);
        assert_eq!(
            written + dropped,
            pushed + 1,
            "every line written or counted"
        );
    }

    #[test]
    fn rotates_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, 300, 2).unwrap();
        let origin = Origin::new("alice", "r-1", None);
        for i in 0..20 {
            log.event("request", &origin, &[("name", Field::Num(i))]);
        }
        log.flush();
        assert_eq!(log.written(), 20);
        assert_eq!(log.dropped(), 0);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let current = read(&path);
        let one = read(&dir.path().join("audit.jsonl.1"));
        let two = read(&dir.path().join("audit.jsonl.2"));
        assert!(!dir.path().join("audit.jsonl.3").exists());
        for text in [&current, &one, &two] {
            assert!(!text.is_empty() && text.len() <= 300, "{text}");
            for line in text.lines() {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(value["identity"], "alice");
            }
        }
        // The newest lines are in the current file, the ones before in .1.
        assert!(current.contains("\"name\":19"));
        let last_of_one: serde_json::Value =
            serde_json::from_str(one.lines().last().unwrap()).unwrap();
        let first_of_current: serde_json::Value =
            serde_json::from_str(current.lines().next().unwrap()).unwrap();
        assert_eq!(
            last_of_one["name"].as_u64().unwrap() + 1,
            first_of_current["name"].as_u64().unwrap()
        );
    }
}

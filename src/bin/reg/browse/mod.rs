//! `reg browse`: a live terminal browser of the registry (ratatui over crossterm).
//!
//! # Layout
//!
//! `app.rs` holds the state and changes it (snapshots, keys, time); `ui.rs` draws it, a pure
//! function of the state; this file is the event loop that connects them to the terminal,
//! the registry and the clock.
//!
//! # Data
//!
//! One task reads every register with `detail=true` (revision, creation, remaining TTL) as a
//! long poll with `index`: a change is on screen at once, and with no change the poll comes
//! back after [`REFRESH`] so the remaining TTLs stay fresh (a refresh that changes nothing
//! does not wake a poll).
//!
//! Another follows the watch stream (`/v1/watch`, Part B) from the revision of the first
//! read, for the one thing the reads cannot say: whether a register that went was deleted or
//! expired. A server without the stream (Part A answers 404) leaves it at the neutral `gone`.
//!
//! The services view has no feed of its own: it is those same registers, the ones under
//! `svc/` whose value parses as an instance (`reg::discovery::parse`), by service.

mod app;
mod ui;

use std::io::{self, IsTerminal};
use std::time::Duration;

use anyhow::Context;
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use reg::client::{ReadQuery, WireClient};
use reg::{EventKind, Json, Revision};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::common::{self, RegistryArg, Signals};
use app::{Action, App, Read, Removal, ViewMode, Watch};

/// Longest a detail poll waits for a change before it reads again anyway: 1 s.
const REFRESH: Duration = Duration::from_secs(1);
/// Screen refresh for countdowns and fading red rows: 250 ms.
const TICK: Duration = Duration::from_millis(250);
/// How often the input thread checks whether the browser is gone: 100 ms.
const INPUT_POLL: Duration = Duration::from_millis(100);
/// Reconnect delays after a failed read or a broken watch stream: from 200 ms, doubling up
/// to 5 s.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Reports queued between the feed tasks and the screen: a burst of removals (a mass expiry)
/// waits here, and each frame takes up to [`FEED_BATCH`] of them before drawing once.
const FEED_QUEUE: usize = 256;
/// Most reports applied between two frames, so keys still get through a burst.
const FEED_BATCH: usize = 1024;

/// The arguments of `reg browse` (its help is on `Command::Browse` in `main.rs`).
#[derive(Debug, clap::Args)]
pub(crate) struct BrowseArgs {
    #[command(flatten)]
    pub(crate) registry: RegistryArg,
    /// Start in the tree view.
    #[arg(long)]
    tree: bool,

    /// Start in the services view (each service with its instances; `s` leaves it, for the
    /// tree view with --tree, else the flat view).
    #[arg(long)]
    services: bool,

    /// Start with this filter.
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
}

pub(crate) fn run(args: BrowseArgs) -> anyhow::Result<()> {
    let registry = &args.registry;
    let wire = registry.wire()?;
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        anyhow::bail!("browse needs a terminal (stdin and stdout must be one)");
    }
    // No logging: it would write over the screen.
    common::runtime()?.block_on(browse(args, wire))
}

/// Restores the terminal when dropped, whichever way the browser ends (ratatui's panic hook
/// does it on a panic).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// What the feed tasks report.
#[derive(Debug)]
enum Feed {
    /// A read of every register, at revision `index`.
    Snapshot {
        registers: Vec<Read>,
        index: Option<Revision>,
        at: Instant,
    },
    /// A read failed: why.
    Failed(String),
    /// The watch stream says `name` was deleted or expired.
    Removed {
        name: String,
        removal: Removal,
        revision: Option<Revision>,
        at: Instant,
    },
    /// The watch stream opened, broke, or is not there.
    Watch(Watch),
}

async fn browse(args: BrowseArgs, wire: WireClient) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    let mut app = App::new(wire.url(), Instant::now());
    if args.tree {
        app.view = ViewMode::Tree;
    }
    if args.services {
        app.names_view = app.view;
        app.view = ViewMode::Services;
    }
    if let Some(filter) = args.filter {
        app.filter = filter;
    }

    let terminal = ratatui::try_init();
    let _restore = Restore;
    let mut terminal = terminal.context("cannot set up the terminal")?;

    let (key_tx, mut keys) = mpsc::channel(64);
    std::thread::spawn(move || read_input(&key_tx));
    let (feed_tx, mut feed) = mpsc::channel(FEED_QUEUE);
    let feed_task = tokio::spawn(read_registry(wire.clone(), feed_tx.clone()));
    // Opened after the first read, from its revision, so no removal after it is missed.
    let mut watch_task = None;
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    let result = loop {
        let mut offset = app.offset;
        if let Err(error) = terminal.draw(|frame| offset = ui::render(&app, frame)) {
            break Err(anyhow::Error::from(error).context("cannot draw"));
        }
        app.offset = offset;
        tokio::select! {
            event = keys.recv() => match event {
                Some(Event::Key(key)) if key.kind != KeyEventKind::Release => {
                    app.tick(Instant::now());
                    match app.on_key(key) {
                        Some(Action::Quit) => break Ok(()),
                        Some(Action::Request { name, value }) => {
                            let wire = wire.clone();
                            let done = done_tx.clone();
                            tokio::spawn(async move {
                                let result = wire
                                    .request(&[(name.as_str(), value.clone())])
                                    .await
                                    .map_err(|error| error.to_string());
                                let _ = done.send((name, value, result));
                            });
                        }
                        None => {}
                    }
                }
                // A resize or another event: draw again.
                Some(_) => {}
                None => break Err(anyhow::anyhow!("the terminal input ended")),
            },
            Some(update) = feed.recv() => {
                let mut update = Some(update);
                let mut applied = 0;
                while let Some(report) = update.take() {
                    if let Feed::Snapshot { index, .. } = &report {
                        if watch_task.is_none() {
                            let task = watch_removals(wire.clone(), *index, feed_tx.clone());
                            watch_task = Some(tokio::spawn(task));
                        }
                    }
                    apply(&mut app, report);
                    applied += 1;
                    if applied < FEED_BATCH {
                        update = feed.try_recv().ok();
                    }
                }
            }
            Some((name, value, result)) = done.recv() => {
                let value: Json = value;
                app.request_done(&name, &value, result);
            }
            _ = ticker.tick() => app.tick(Instant::now()),
            () = signals.next() => break Ok(()),
        }
    };
    feed_task.abort();
    if let Some(task) = watch_task {
        task.abort();
    }
    result
}

/// Applies one report of the feed tasks.
fn apply(app: &mut App, report: Feed) {
    match report {
        Feed::Snapshot {
            registers,
            index,
            at,
        } => app.apply_snapshot(registers, index, at),
        Feed::Failed(error) => app.connection_failed(error),
        Feed::Removed {
            name,
            removal,
            revision,
            at,
        } => app.apply_removal(&name, removal, revision, at),
        Feed::Watch(watch) => app.watch = watch,
    }
}

/// Reads terminal events on a thread of its own (crossterm's reads block) until the browser
/// is gone.
fn read_input(keys: &mpsc::Sender<Event>) {
    while !keys.is_closed() {
        match event::poll(INPUT_POLL) {
            Ok(true) => match event::read() {
                Ok(event) => {
                    if keys.blocking_send(event).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            Ok(false) => {}
            Err(_) => return,
        }
    }
}

/// Reads every register with details, long-polling, and reports each answer.
async fn read_registry(wire: WireClient, feed: mpsc::Sender<Feed>) {
    let mut index = None;
    let mut fresh = true;
    let mut delay = RETRY_MIN;
    loop {
        let mut query = ReadQuery::all().detail(true);
        if !fresh {
            query = query.wait(REFRESH);
            if let Some(index) = index {
                query = query.index(index);
            }
        }
        let started = Instant::now();
        match wire.read(&query).await {
            Ok(read) => {
                let unchanged = !fresh && read.index.is_some() && read.index == index;
                fresh = false;
                index = read.index;
                delay = RETRY_MIN;
                let registers = read.registers.into_iter().map(Read::from).collect();
                let snapshot = Feed::Snapshot {
                    registers,
                    index,
                    at: Instant::now(),
                };
                if feed.send(snapshot).await.is_err() {
                    return;
                }
                // A poll answered at once with nothing new: a server shutting down.
                if unchanged && started.elapsed() < REFRESH / 2 {
                    tokio::time::sleep(RETRY_MIN).await;
                }
            }
            Err(error) => {
                fresh = true;
                if feed.send(Feed::Failed(error.to_string())).await.is_err() {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Follows the watch stream from revision `from` and reports each delete and expire, until
/// the browser is gone; reopens a broken stream from the last revision seen. A server
/// without the stream is reported once, and the task ends.
async fn watch_removals(wire: WireClient, from: Option<Revision>, feed: mpsc::Sender<Feed>) {
    let all: &[&str] = &[];
    let mut last = from;
    let mut delay = RETRY_MIN;
    loop {
        let broken = match wire.watch(all, last).await {
            Ok(mut stream) => {
                if feed.send(Feed::Watch(Watch::Streaming)).await.is_err() {
                    return;
                }
                loop {
                    let event = match stream.next().await {
                        Ok(Some(event)) => event,
                        Ok(None) => break "the server ended the stream".to_owned(),
                        Err(error) => break error.to_string(),
                    };
                    delay = RETRY_MIN;
                    if event.revision.is_some() {
                        last = event.revision;
                    }
                    let removal = match event.kind {
                        EventKind::Set => continue,
                        EventKind::Delete => Removal::Deleted,
                        EventKind::Expire => Removal::Expired,
                    };
                    let removed = Feed::Removed {
                        name: event.name.to_string(),
                        removal,
                        revision: event.revision,
                        at: Instant::now(),
                    };
                    if feed.send(removed).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) if error.is_unsupported() => {
                let _ = feed.send(Feed::Watch(Watch::Unsupported)).await;
                return;
            }
            Err(error) => error.to_string(),
        };
        if feed.send(Feed::Watch(Watch::Broken(broken))).await.is_err() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

//! The consumer direction: one long poll per client over the union of the subscribed names,
//! fanned out to every [`Consumer`] and [`AllConsumer`] through `tokio::sync::watch` channels.
//!
//! # Invariants
//!
//! * **One poll task** (`run`) per client is the only writer of every channel. It reads the
//!   selection (the union of subscribed names, or every register when an [`AllConsumer`]
//!   exists) under `ConsumerHub::state`, polls without holding the lock, then publishes under
//!   it. The lock is never held across an `.await`.
//! * **Re-issue on a new selection.** Subscribing or unsubscribing a name bumps
//!   `selection_changed` under the lock; the task marks the counter seen *before* it reads the
//!   selection, so a change after that read always interrupts the poll in flight.
//! * **No missed change.** A poll passes the `index` of the last answer (Part B), so anything
//!   that changed since is answered at once. A selection the last answer did not cover is first
//!   read without waiting. Against a server without Part B (no `X-Reg-Index`) the poll goes
//!   without index and waits at most the shorter fallback wait: a change that lands between two
//!   polls is seen by the next answer.
//! * **Latest value, never blocking.** Each name has a `watch` channel holding its latest state;
//!   publishing overwrites it and never waits for a reader. A slow consumer skips intermediate
//!   states and always reads the latest; a channel is only written when its state differs.

use std::collections::{BTreeMap, HashMap, VecDeque};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::backend::Backend;
use crate::client::backoff::Backoff;
use crate::client::error::ClientError;
use crate::client::highlevel::{Client, Options};
use crate::client::hub::Hub;
use crate::client::wire::{ReadResponse, RegisterValue};
use crate::json::Json;
use crate::store::{Revision, Selector};
use crate::sync::Arc;

/// A change to a register, as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Update {
    /// The register was created or its value or metadata changed (or, the first time, its
    /// current value).
    Set {
        /// The register.
        name: Arc<str>,
        /// Its value, numbers exactly as stored.
        value: Json,
        /// Its metadata (none when empty).
        metadata: Option<Json>,
        /// Its last change; `None` from a server without Part B.
        revision: Option<Revision>,
    },
    /// The register is gone: expired or removed.
    Removed {
        /// The register.
        name: Arc<str>,
        /// A revision at or after the removal; `None` from a server without Part B.
        revision: Option<Revision>,
    },
}

impl Update {
    /// The register's name.
    pub fn name(&self) -> &str {
        match self {
            Update::Set { name, .. } | Update::Removed { name, .. } => name,
        }
    }

    /// The value, for [`Update::Set`].
    pub fn value(&self) -> Option<&Json> {
        match self {
            Update::Set { value, .. } => Some(value),
            Update::Removed { .. } => None,
        }
    }

    /// The revision, where the backend tells it.
    pub fn revision(&self) -> Option<Revision> {
        match self {
            Update::Set { revision, .. } | Update::Removed { revision, .. } => *revision,
        }
    }

    /// Whether this is a removal.
    pub fn is_removed(&self) -> bool {
        matches!(self, Update::Removed { .. })
    }
}

/// A register's content as last read. Equal contents are not published twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Current {
    value: Json,
    metadata: Option<Json>,
    revision: Option<Revision>,
}

impl Current {
    fn from_read(register: &RegisterValue) -> Self {
        Self {
            value: register.value.clone(),
            metadata: register.metadata.clone(),
            revision: register.revision,
        }
    }

    fn same_as(&self, register: &RegisterValue) -> bool {
        self.value == register.value
            && self.metadata == register.metadata
            && self.revision == register.revision
    }

    fn to_update(&self, name: &Arc<str>) -> Update {
        Update::Set {
            name: Arc::clone(name),
            value: self.value.clone(),
            metadata: self.metadata.clone(),
            revision: self.revision,
        }
    }
}

/// What one name's channel holds.
#[derive(Debug, Clone)]
pub(crate) enum NameState {
    /// Not read yet.
    Unknown,
    /// Does not exist, as of this revision.
    Absent(Option<Revision>),
    Present(Arc<Current>),
}

/// Every register as of one answer.
#[derive(Debug, Default)]
pub(crate) struct AllRegisters {
    /// The answer's index (for the revision of removals).
    index: Option<Revision>,
    registers: BTreeMap<Arc<str>, Arc<Current>>,
}

/// What the every-register channel holds: `None` until first read.
type AllState = Option<Arc<AllRegisters>>;

#[derive(Debug)]
struct NameSlot {
    tx: watch::Sender<NameState>,
    /// Live [`Consumer`]s of this name; the slot goes when the last one does.
    consumers: usize,
}

#[derive(Debug)]
struct AllSlot {
    tx: watch::Sender<AllState>,
    consumers: usize,
}

#[derive(Debug, Default)]
pub(crate) struct ConsumerState {
    names: HashMap<Arc<str>, NameSlot>,
    all: Option<AllSlot>,
    /// Set when the in-process registry shut down: new subscriptions end at once.
    closed: bool,
}

/// The consumers of one client and their channels; shared by the handles and the poll task.
pub(crate) type ConsumerHub = Hub<ConsumerState>;

impl ConsumerHub {
    /// A receiver for `name`'s state, creating the slot (and changing the selection) if this
    /// is the name's first consumer.
    fn subscribe(&self, name: &Arc<str>) -> watch::Receiver<NameState> {
        let mut state = self.state.lock();
        if state.closed {
            return watch::channel(NameState::Unknown).1;
        }
        if let Some(slot) = state.names.get_mut(name) {
            slot.consumers += 1;
            return slot.tx.subscribe();
        }
        let (tx, rx) = watch::channel(NameState::Unknown);
        state
            .names
            .insert(Arc::clone(name), NameSlot { tx, consumers: 1 });
        self.bump();
        rx
    }

    fn unsubscribe(&self, name: &str) {
        let mut state = self.state.lock();
        let Some(slot) = state.names.get_mut(name) else {
            return;
        };
        slot.consumers -= 1;
        if slot.consumers == 0 {
            state.names.remove(name);
            self.bump();
        }
    }

    fn subscribe_all(&self) -> watch::Receiver<AllState> {
        let mut state = self.state.lock();
        if state.closed {
            return watch::channel(None).1;
        }
        if let Some(all) = &mut state.all {
            all.consumers += 1;
            return all.tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        state.all = Some(AllSlot { tx, consumers: 1 });
        self.bump();
        rx
    }

    fn unsubscribe_all(&self) {
        let mut state = self.state.lock();
        let Some(all) = &mut state.all else {
            return;
        };
        all.consumers -= 1;
        if all.consumers == 0 {
            state.all = None;
            self.bump();
        }
    }

    /// What the poll should cover now; `None` when nobody consumes.
    fn selection(&self) -> Option<Selector> {
        let state = self.state.lock();
        if state.all.is_some() {
            Some(Selector::All)
        } else if state.names.is_empty() {
            None
        } else {
            Some(Selector::names(state.names.keys()))
        }
    }

    /// Publishes an answer for `selection` to every channel it covers. Returns whether any
    /// channel changed.
    fn publish(&self, selection: &Selector, read: &ReadResponse) -> bool {
        let by_name: HashMap<&str, &RegisterValue> = read
            .registers
            .iter()
            .map(|register| (&*register.name, register))
            .collect();
        let state = self.state.lock();
        let mut changed = false;
        for (name, slot) in &state.names {
            if !selection.contains(name) {
                // Subscribed after this poll started: the next poll reads it.
                continue;
            }
            let register = by_name.get(&**name).copied();
            changed |= slot
                .tx
                .send_if_modified(|current| match (&*current, register) {
                    (NameState::Present(now), Some(register)) if now.same_as(register) => false,
                    (NameState::Absent(_), None) => false,
                    (_, Some(register)) => {
                        *current = NameState::Present(Arc::new(Current::from_read(register)));
                        true
                    }
                    (_, None) => {
                        *current = NameState::Absent(read.index);
                        true
                    }
                });
        }
        if let (Some(all), Selector::All) = (&state.all, selection) {
            changed |= all.tx.send_if_modified(|current| {
                let unchanged = current.as_ref().is_some_and(|all| {
                    all.registers.len() == read.registers.len()
                        && read.registers.iter().all(|register| {
                            all.registers
                                .get(&register.name)
                                .is_some_and(|now| now.same_as(register))
                        })
                });
                if unchanged {
                    return false;
                }
                let registers = read
                    .registers
                    .iter()
                    .map(|register| {
                        (
                            Arc::clone(&register.name),
                            Arc::new(Current::from_read(register)),
                        )
                    })
                    .collect();
                *current = Some(Arc::new(AllRegisters {
                    index: read.index,
                    registers,
                }));
                true
            });
        }
        changed
    }

    /// Ends every subscription: the in-process registry shut down.
    fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        // Dropping the senders ends every consumer's `next` with `None`.
        state.names.clear();
        state.all = None;
    }
}

/// Whether an answer for `read` also answers `wanted` (its index is valid for it).
fn covers(read: &Selector, wanted: &Selector) -> bool {
    match (read, wanted) {
        (Selector::All, _) => true,
        (Selector::Names(_), Selector::All) => false,
        (Selector::Names(_), Selector::Names(names)) => names.iter().all(|n| read.contains(n)),
    }
}

/// The consumer poll task: runs until aborted (the client is dropped) or the in-process
/// registry shuts down.
pub(crate) async fn run(backend: Backend, hub: Arc<ConsumerHub>, options: Options) {
    let mut changes = hub.selection_changed.subscribe();
    let mut backoff = Backoff::new(options.backoff_min, options.backoff_max);
    // The selection the last answer covered, and that answer's index.
    let mut answered: Option<Selector> = None;
    let mut index: Option<Revision> = None;
    loop {
        changes.borrow_and_update();
        let Some(selection) = hub.selection() else {
            answered = None;
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        };
        let wait = match &answered {
            Some(previous) if covers(previous, &selection) => Some(match index {
                Some(_) => options.poll_wait,
                None => options.fallback_poll_wait,
            }),
            // New names: read them at once.
            _ => None,
        };
        let started = Instant::now();
        let result = tokio::select! {
            result = backend.read(&selection, wait, index) => result,
            // The selection changed: drop this poll (cancel safe) and issue a new one.
            _ = changes.changed() => continue,
        };
        match result {
            Ok(read) => {
                let changed = hub.publish(&selection, &read);
                index = read.index;
                answered = Some(selection);
                // A long poll that comes back early with nothing new: a server that is
                // shutting down answers every poll at once. Don't spin on it, and read afresh
                // next: if a new server answers, our index means nothing to it.
                let early = wait.is_some_and(|wait| started.elapsed() < wait / 2);
                if early && !changed {
                    answered = None;
                    tokio::time::sleep(backoff.next_delay()).await;
                } else {
                    backoff.reset();
                }
            }
            Err(error) if error.is_closed() => {
                hub.close();
                return;
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "reg client: consumer poll failed");
                answered = None;
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The updates of one register; made by [`Client::consume`].
///
/// Dropping it unsubscribes; the client's shared poll is re-issued without the name when this
/// was its last consumer.
#[derive(Debug)]
pub struct Consumer {
    name: Arc<str>,
    rx: watch::Receiver<NameState>,
    /// What `next` last returned: the next update is relative to it.
    delivered: Option<Arc<Current>>,
    client: Client,
}

impl Consumer {
    pub(crate) fn new(client: Client, name: &str) -> Self {
        let name: Arc<str> = Arc::from(name);
        let rx = client.consumers().subscribe(&name);
        Self {
            name,
            rx,
            delivered: None,
            client,
        }
    }

    /// The register's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next update: first the register's current value (once it exists), then every
    /// change. A consumer that falls behind skips to the latest value; it never slows the
    /// client or other consumers. A register that never existed yields nothing until it is
    /// created; a removal is [`Update::Removed`]. `None` only when the in-process registry
    /// shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an update is marked delivered only when `next` returns it, so a dropped
    /// call loses nothing and the next call returns the latest state.
    pub async fn next(&mut self) -> Option<Update> {
        loop {
            if let Some(update) = self.take_update() {
                return Some(update);
            }
            self.rx.changed().await.ok()?;
        }
    }

    /// The update since the last one returned, if any, without waiting.
    fn take_update(&mut self) -> Option<Update> {
        let state = self.rx.borrow_and_update().clone();
        match state {
            NameState::Unknown => None,
            NameState::Present(current) => {
                if self.delivered.as_deref() == Some(&*current) {
                    return None;
                }
                let update = current.to_update(&self.name);
                self.delivered = Some(current);
                Some(update)
            }
            NameState::Absent(revision) => {
                self.delivered.take()?;
                Some(Update::Removed {
                    name: Arc::clone(&self.name),
                    revision,
                })
            }
        }
    }

    /// Asks the register's provider to change it to `value` (`PUT /consumer`). The consumer
    /// sees the change when the provider applies it.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once sent, the request may be stored even if the future is dropped.
    pub async fn request(&self, value: Json) -> Result<(), ClientError> {
        self.client.request(&self.name, value).await
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.client.consumers().unsubscribe(&self.name);
    }
}

/// The updates of every register; made by [`Client::consume_all`].
#[derive(Debug)]
pub struct AllConsumer {
    rx: watch::Receiver<AllState>,
    /// What `next` has reported so far: the next updates are the difference to the latest.
    delivered: BTreeMap<Arc<str>, Arc<Current>>,
    /// Updates computed but not yet returned.
    pending: VecDeque<Update>,
    client: Client,
}

impl AllConsumer {
    pub(crate) fn new(client: Client) -> Self {
        let rx = client.consumers().subscribe_all();
        Self {
            rx,
            delivered: BTreeMap::new(),
            pending: VecDeque::new(),
            client,
        }
    }

    /// The next update of any register: first every existing register, then every change, in
    /// name order within one batch. A consumer that falls behind gets the difference between
    /// what it has seen and the latest state, never a backlog. `None` only when the in-process
    /// registry shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: computed updates are kept in the consumer until returned.
    pub async fn next(&mut self) -> Option<Update> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Some(update);
            }
            let latest = self.rx.borrow_and_update().clone();
            if let Some(latest) = latest {
                self.diff(&latest);
                if !self.pending.is_empty() {
                    continue;
                }
            }
            self.rx.changed().await.ok()?;
        }
    }

    /// Queues the difference between what was delivered and `latest`, and takes `latest`
    /// as delivered.
    fn diff(&mut self, latest: &AllRegisters) {
        for (name, current) in &latest.registers {
            if self.delivered.get(name) != Some(current) {
                self.pending.push_back(current.to_update(name));
            }
        }
        for name in self.delivered.keys() {
            if !latest.registers.contains_key(name) {
                self.pending.push_back(Update::Removed {
                    name: Arc::clone(name),
                    revision: latest.index,
                });
            }
        }
        self.delivered = latest.registers.clone();
    }

    /// Asks the provider of `name` to change it to `value`.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once sent, the request may be stored even if the future is dropped.
    pub async fn request(&self, name: &str, value: Json) -> Result<(), ClientError> {
        self.client.request(name, value).await
    }
}

impl Drop for AllConsumer {
    fn drop(&mut self) {
        self.client.consumers().unsubscribe_all();
    }
}

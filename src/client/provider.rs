//! The provider direction: each [`Provider`] keeps its register alive from its own task, and
//! one long poll per client takes the change requests for every provided name and routes them.
//!
//! # Invariants
//!
//! * **One writer per register.** Every write of a provided register (the first, updates,
//!   refreshes, the final removal) is made by that provider's task, one at a time, so a
//!   refresh can never overtake an update or land after the removal.
//! * **Refresh at TTL/2** after the last successful write; after a failed one, retry with
//!   backoff (never later than TTL/2), so a register whose server came back is re-created.
//! * **Removal on drop.** Dropping the handle closes the task's command channel; the task
//!   finishes the write in flight, removes the register (`DELETE /provider`) and ends. A
//!   server without Part B answers 405: the register then expires by its TTL.
//! * **One request poll** (`run`) per client over the provided names, re-issued when the set
//!   changes (the same protocol as the consumer poll). Requests are latest-wins per name, as on
//!   the server: each provider has a `watch` channel, so a slow provider sees the latest
//!   request. The hub's lock is never held across an `.await`.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::client::backend::Backend;
use crate::client::backoff::Backoff;
use crate::client::error::ClientError;
use crate::client::highlevel::{Client, Options};
use crate::client::hub::Hub;
use crate::client::wire::RegisterWrite;
use crate::json::Json;
use crate::store::{ChangeRequest, Selector};
use crate::sync::Arc;

/// Shortest refresh interval: 1 ms, so a tiny TTL cannot make a busy loop.
const MIN_REFRESH: Duration = Duration::from_millis(1);
/// Updates queued for a provider's task before `update` waits: writes are serial anyway.
const COMMAND_QUEUE: usize = 8;

/// The latest change request for one provider. Every new request bumps the channel's
/// version, even one equal to the last: asking twice is asking again.
#[derive(Debug, Default)]
struct RequestSlot {
    value: Option<Json>,
}

#[derive(Debug, Default)]
pub(crate) struct ProviderState {
    /// Provided name → its provider's request channel.
    routes: HashMap<Arc<str>, watch::Sender<RequestSlot>>,
    /// Names whose provider was dropped and whose task is still removing the register: a new
    /// provider of the name waits for it, so the old removal cannot delete the new register.
    /// The receiver's channel closes when the task ends; the id says which task it was.
    retiring: HashMap<Arc<str>, (u64, watch::Receiver<()>)>,
    /// The id of the next provider.
    next_id: u64,
}

/// A reserved name: its request channel and the provider's id.
#[derive(Debug)]
struct Reservation {
    requests: watch::Receiver<RequestSlot>,
    id: u64,
}

/// The providers of one client; shared by the handles and the request poll task.
pub(crate) type ProviderHub = Hub<ProviderState>;

impl ProviderHub {
    /// Reserves `name` for a new provider, first waiting for a dropped provider of the same
    /// name to finish removing its register. Cancel safe: nothing is reserved until it returns.
    async fn register(&self, name: &Arc<str>) -> Result<Reservation, ClientError> {
        loop {
            let mut retiring = {
                let mut state = self.state.lock();
                if state.routes.contains_key(name) {
                    return Err(ClientError::AlreadyProvided(name.to_string()));
                }
                match state.retiring.get(name) {
                    // Its task is gone (ended without clearing, e.g. aborted): nothing to wait for.
                    Some((_, done)) if done.has_changed().is_err() => {
                        state.retiring.remove(name);
                        continue;
                    }
                    Some((_, done)) => done.clone(),
                    None => {
                        let (tx, requests) = watch::channel(RequestSlot::default());
                        state.routes.insert(Arc::clone(name), tx);
                        let id = state.next_id;
                        state.next_id += 1;
                        self.bump();
                        return Ok(Reservation { requests, id });
                    }
                }
            };
            // Ends with an error once the retiring task dropped its sender.
            while retiring.changed().await.is_ok() {}
        }
    }

    /// Releases `name`; with `task_done`, marks it retiring until that task ends.
    fn unregister(&self, name: &Arc<str>, retiring: Option<(u64, watch::Receiver<()>)>) {
        let mut state = self.state.lock();
        if state.routes.remove(name).is_some() {
            self.bump();
        }
        if let Some(retiring) = retiring {
            state.retiring.insert(Arc::clone(name), retiring);
        }
    }

    /// The task of provider `id` has removed its register.
    fn retired(&self, name: &str, id: u64) {
        let mut state = self.state.lock();
        if state
            .retiring
            .get(name)
            .is_some_and(|(retiring, _)| *retiring == id)
        {
            state.retiring.remove(name);
        }
    }

    fn selection(&self) -> Option<Selector> {
        let state = self.state.lock();
        (!state.routes.is_empty()).then(|| Selector::names(state.routes.keys()))
    }

    fn route(&self, requests: Vec<ChangeRequest>) {
        let state = self.state.lock();
        for request in requests {
            match state.routes.get(&request.name) {
                Some(tx) => tx.send_modify(|slot| slot.value = Some(request.value)),
                // Its provider was dropped while the poll was answered.
                None => {
                    tracing::debug!(name = ?request.name, "reg client: request for a register no longer provided")
                }
            }
        }
    }

    fn close(&self) {
        // Dropping the senders ends every provider's `next_request` with `None`.
        self.state.lock().routes.clear();
    }
}

/// The request poll task: runs until aborted (the client is dropped) or the in-process
/// registry shuts down.
pub(crate) async fn run(backend: Backend, hub: Arc<ProviderHub>, options: Options) {
    let mut changes = hub.selection_changed.subscribe();
    let mut backoff = Backoff::new(options.backoff_min, options.backoff_max);
    loop {
        changes.borrow_and_update();
        let Some(selection) = hub.selection() else {
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        };
        let started = Instant::now();
        let result = tokio::select! {
            result = backend.take(&selection, options.poll_wait) => result,
            // The provided names changed: the server takes nothing for a dropped poll.
            _ = changes.changed() => continue,
        };
        match result {
            Ok(requests) => {
                let empty = requests.is_empty();
                hub.route(requests);
                // An empty answer long before `wait`: a server shutting down. Don't spin.
                if empty && started.elapsed() < options.poll_wait / 2 {
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
                tracing::warn!(%error, retry_in = ?delay, "reg client: request poll failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// A write asked of a provider's task.
#[derive(Debug)]
struct Command {
    value: Json,
    /// `Some` to replace the metadata.
    metadata: Option<Option<Json>>,
    reply: oneshot::Sender<Result<(), ClientError>>,
}

/// What a provider's task needs besides its register.
struct Task {
    backend: Backend,
    hub: Arc<ProviderHub>,
    options: Options,
    /// The provider's id, to clear its retiring mark.
    id: u64,
    /// Dropped when the task ends: wakes a new provider of the same name.
    _done: watch::Sender<()>,
}

/// A provider's task: the register's only writer.
async fn keep_alive(task: Task, mut write: RegisterWrite, mut commands: mpsc::Receiver<Command>) {
    let Task {
        backend,
        hub,
        options,
        id,
        _done,
    } = task;
    let ttl = match write.ttl {
        Some(ttl) if !ttl.is_zero() => ttl,
        _ => backend.default_ttl(),
    };
    let interval = (ttl / 2).max(MIN_REFRESH);
    let mut backoff = Backoff::new(options.backoff_min, options.backoff_max.min(interval));
    // The first write was made by `Client::provide`.
    let mut next_refresh = Instant::now() + interval;
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(update) = command else { break };
                write.value = update.value;
                if let Some(metadata) = update.metadata {
                    write.metadata = metadata;
                }
                let result = backend.set(&write).await;
                next_refresh = schedule(&result, interval, &mut backoff);
                // The caller may have stopped waiting: the write stands anyway.
                let _ = update.reply.send(result);
            }
            () = tokio::time::sleep_until(next_refresh) => {
                let result = backend.set(&write).await;
                if let Err(error) = &result {
                    tracing::warn!(%error, name = ?write.name, "reg client: refresh failed");
                }
                next_refresh = schedule(&result, interval, &mut backoff);
            }
        }
    }
    match backend.remove(&write.name).await {
        Ok(()) => {}
        Err(error) if error.is_unsupported() => tracing::debug!(
            name = ?write.name,
            "reg client: the server cannot remove registers (no Part B); it expires by its TTL"
        ),
        Err(error) => {
            tracing::warn!(%error, name = ?write.name, "reg client: removing the register failed; it expires by its TTL")
        }
    }
    hub.retired(&write.name, id);
    // `_done` drops here, after the mark is cleared.
}

/// When to write next after a write that ended with `result`.
fn schedule(
    result: &Result<(), ClientError>,
    interval: Duration,
    backoff: &mut Backoff,
) -> Instant {
    match result {
        Ok(()) => {
            backoff.reset();
            Instant::now() + interval
        }
        Err(_) => Instant::now() + backoff.next_delay().min(interval),
    }
}

/// Releases a reserved name when dropped armed.
struct Reserved<'a> {
    hub: &'a ProviderHub,
    name: &'a Arc<str>,
    armed: bool,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.hub.unregister(self.name, None);
        }
    }
}

/// A register this client provides; made by [`Client::provide`].
///
/// While the handle lives, the register is refreshed at half its TTL. Dropping the handle
/// removes the register (`DELETE /provider`, from a background task); against a server
/// without that endpoint the register expires by its TTL instead.
#[derive(Debug)]
pub struct Provider {
    name: Arc<str>,
    id: u64,
    commands: mpsc::Sender<Command>,
    requests: watch::Receiver<RequestSlot>,
    /// Closes when the task ended; handed to the hub on drop (see `ProviderState::retiring`).
    task_done: Option<watch::Receiver<()>>,
    client: Client,
}

impl Provider {
    /// Writes the first value, then starts the task that keeps it alive.
    pub(crate) async fn start(
        client: Client,
        write: RegisterWrite,
    ) -> Result<Provider, ClientError> {
        let name = Arc::clone(&write.name);
        let Reservation { requests, id } = client.providers().register(&name).await?;
        // Released if the first write fails or this future is dropped during it.
        let mut reserved = Reserved {
            hub: client.providers(),
            name: &name,
            armed: true,
        };
        client.backend().set(&write).await?;
        reserved.armed = false;
        drop(reserved);
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let (done, task_done) = watch::channel(());
        let task = Task {
            backend: client.backend().clone(),
            hub: client.providers_arc(),
            options: client.options(),
            id,
            _done: done,
        };
        tokio::spawn(keep_alive(task, write, receiver));
        Ok(Provider {
            name,
            id,
            commands,
            requests,
            task_done: Some(task_done),
            client,
        })
    }

    /// The register's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Changes the value (metadata and TTL stay).
    ///
    /// # Errors
    ///
    /// The write's error; the new value is kept and written again at the next refresh.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once queued, the write happens even if the future is dropped.
    pub async fn update(&self, value: Json) -> Result<(), ClientError> {
        self.send(value, None).await
    }

    /// Changes the value and replaces the metadata (`None` for none).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once queued, the write happens even if the future is dropped.
    pub async fn update_with_metadata(
        &self,
        value: Json,
        metadata: Option<Json>,
    ) -> Result<(), ClientError> {
        self.send(value, Some(metadata)).await
    }

    async fn send(&self, value: Json, metadata: Option<Option<Json>>) -> Result<(), ClientError> {
        let (reply, done) = oneshot::channel();
        self.commands
            .send(Command {
                value,
                metadata,
                reply,
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        done.await.map_err(|_| ClientError::Closed)?
    }

    /// The next change request addressed to this register: the value a consumer asked for.
    /// Requests are latest-wins: a provider that falls behind gets the latest one. Applying it
    /// (with [`update`](Self::update)) is up to the caller. `None` only when the in-process
    /// registry shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a request is consumed only when this returns it.
    pub async fn next_request(&mut self) -> Option<Json> {
        loop {
            self.requests.changed().await.ok()?;
            if let Some(value) = self.requests.borrow_and_update().value.clone() {
                return Some(value);
            }
        }
    }
}

impl Provider {
    /// Removes the register, as dropping the handle does, and waits until the removal is
    /// done (or failed: the register then expires by its TTL). A program about to exit calls
    /// this, so that exiting does not cut the removal short.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the removal happens anyway, as on drop; only the waiting stops.
    pub async fn remove(self) {
        let done = self.task_done.clone();
        drop(self);
        if let Some(mut done) = done {
            // Ends with an error once the task dropped its sender, after the removal.
            while done.changed().await.is_ok() {}
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        // Then `commands` drops, which tells the task to remove the register.
        let retiring = self.task_done.take().map(|done| (self.id, done));
        self.client.providers().unregister(&self.name, retiring);
    }
}

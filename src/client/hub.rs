//! What the consumer and provider hubs share: their state behind one mutex, and a counter the
//! handles bump whenever the set of names changes, which interrupts the poll in flight so it is
//! re-issued for the new set.

use tokio::sync::watch;

use crate::sync::Mutex;

/// The subscriptions of one direction of a client; shared by its handles and its poll task.
#[derive(Debug)]
pub(crate) struct Hub<S> {
    pub(crate) state: Mutex<S>,
    /// Bumped whenever the set of names changes.
    pub(crate) selection_changed: watch::Sender<u64>,
}

impl<S: Default> Hub<S> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(S::default()),
            selection_changed: watch::Sender::new(0),
        }
    }

    /// Tells the poll task that the set of names changed.
    pub(crate) fn bump(&self) {
        self.selection_changed
            .send_modify(|generation| *generation += 1);
    }
}

//! Views: state derived from the registers and kept current by a sink on the commit path —
//! discovery's catalog of services is one. The store knows a view only as `Any`: it holds
//! one of each type per registry, so every user of a registry shares it.
//!
//! # Invariants
//!
//! * A view starts from the registers as they are under the commit lock and its sink is added
//!   under the same lock, so it sees every later change exactly once and none twice.
//! * Lock order: views → commit → map shard. Nothing takes the views lock under the commit.

use std::any::Any;

use crate::store::commit::Sink;
use crate::store::register::{Register, Revision};
use crate::store::{Registry, Shared};
use crate::sync::Arc;

/// The views attached to one registry, one per type.
#[derive(Debug, Default)]
pub(crate) struct Views {
    attached: std::sync::Mutex<Vec<std::sync::Arc<dyn Any + Send + Sync>>>,
}

/// What a view is made from: the registers under a prefix and the revision they are at.
#[derive(Debug)]
pub(crate) struct Start {
    /// Every live register whose name starts with the prefix, in no particular order.
    pub(crate) registers: Vec<Arc<Register>>,
    /// The revision they are at; the sink is told of every change after it.
    pub(crate) revision: Revision,
}

impl Registry {
    /// The view of type `T` on this registry, made on first use: `make` gets the registers
    /// under `prefix` (read under the commit lock, so none changes meanwhile) and returns the
    /// view and the sink that keeps it current from the next commit on.
    pub(crate) fn view<T, F>(&self, prefix: &str, make: F) -> std::sync::Arc<T>
    where
        T: Send + Sync + 'static,
        F: FnOnce(Start) -> (std::sync::Arc<T>, Box<dyn Sink>),
    {
        let shared: &Shared = self.shared_ref();
        let mut attached = shared
            .views
            .attached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for view in attached.iter() {
            if let Ok(view) = std::sync::Arc::clone(view).downcast::<T>() {
                return view;
            }
        }
        let mut commit = shared.begin();
        let mut registers = Vec::new();
        shared.registers.for_each(|name, entry| {
            if name.starts_with(prefix) {
                registers.push(entry.snapshot.load());
            }
        });
        let revision = commit.published();
        let (view, sink) = make(Start {
            registers,
            revision,
        });
        commit.push_sink(sink);
        drop(commit);
        attached.push(std::sync::Arc::clone(&view) as std::sync::Arc<dyn Any + Send + Sync>);
        view
    }
}

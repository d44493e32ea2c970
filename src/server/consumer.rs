//! `GET /consumer` (read, long-poll) and `PUT /consumer` (change requests).

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};

use crate::server::audit::{self, Field};
use crate::server::auth::{Caller, NameFilter, Right};
use crate::server::body::parse_entries;
use crate::server::error::ServerError;
use crate::server::query::Query;
use crate::server::routes::{self, ResBody};
use crate::server::{response, Shared};
use crate::store::Selector;
use std::sync::Arc;

/// The header that carries the revision an answer is consistent with.
pub(crate) const X_REG_INDEX: &str = "x-reg-index";

/// `GET /consumer?name=…&wait=…&index=…&detail=…` → 200 with the current values.
///
/// With `wait`, first waits until a watched register changes after `index` (without `index`:
/// after the revision at the start of the request), `wait` runs out, or shutdown. An `index`
/// above the current revision is answered at once.
///
/// Takes the parsed query, not the request: the caller drops the request before parking, see
/// [`routes::handle`].
///
/// A caller without `read` on every name sees only the registers it may read: the others are
/// left out as if absent, and changes to them do not end its long poll.
pub(crate) async fn get(
    shared: &Shared,
    query: Query,
    caller: &Caller,
) -> Result<Response<ResBody>, ServerError> {
    let visible = caller.scope(Right::Read)?;
    let registry = &shared.registry;
    // A restricted caller's named poll never looks at a name it may not read: those are left
    // out of the selector, so neither the answer nor when it comes depends on them. Asked for
    // none it may read, the poll runs its course like one for a name that never appears.
    let mut selector = Some(query.selector());
    if let (Some(visible), Some(Selector::Names(names))) = (&visible, &selector) {
        let kept: Vec<&str> = names.iter().map(|n| &**n).filter(|n| visible(n)).collect();
        selector = (!kept.is_empty()).then(|| Selector::names(kept));
    }
    if let Some(wait) = query.wait {
        let current = registry.revision();
        match (&selector, query.index) {
            (Some(selector), index) => {
                let deadline = tokio::time::Instant::now() + wait;
                let after = index.unwrap_or(current);
                // An index this server has not made: a cluster's replica catches up to it; a
                // server of its own never will (the index is another server's, or its own
                // before a restart) and, unable to tell what the client saw, answers at once.
                // Timing out is a normal end of a long poll: answer with the current values.
                if registry.reached(after, wait).await {
                    let _ = tokio::time::timeout_at(
                        deadline,
                        wait_visible(registry, selector, after, visible.as_ref()),
                    )
                    .await;
                }
            }
            (None, _) => {
                let _ = tokio::time::timeout(wait, registry.closed()).await;
            }
        }
    }
    let read = match &selector {
        Some(selector) => {
            let mut read = registry.read(selector);
            if let Some(visible) = &visible {
                read.registers.retain(|register| visible(register.name()));
            }
            read
        }
        None => crate::store::Registers {
            revision: registry.revision(),
            registers: Vec::new(),
        },
    };
    let body = response::registers(&read.registers, query.detail.then_some(registry));
    let mut response = routes::json(StatusCode::OK, body);
    response
        .headers_mut()
        .insert(X_REG_INDEX, HeaderValue::from(read.revision));
    Ok(response)
}

/// Waits until a selected register the caller may see changes after `after`, or shutdown.
/// `visible` is `None` for a caller who may read every register; a named `selector` must
/// already hold only names the caller may read (then the plain wait is exact). For every
/// register (`Selector::All`) and a restricted caller, the change feed is followed and only
/// visible names end the wait: a write wakes each such poll for one name check, never a scan.
///
/// # Cancel safety
/// Cancel safe, as [`Registry::wait`](crate::Registry::wait).
pub(crate) async fn wait_visible(
    registry: &crate::Registry,
    selector: &Selector,
    after: crate::Revision,
    visible: Option<&NameFilter>,
) {
    let visible = match (visible, selector) {
        (Some(visible), Selector::All) => visible,
        _ => {
            let _ = registry.wait(selector, after).await;
            return;
        }
    };
    // Subscribed before looking back, so no change falls between the two.
    let mut feed = registry.subscribe();
    let mut after = after;
    if after < registry.revision() {
        // Behind (the client's index is older): one look at what changed since.
        let replay = registry.replay(selector, after);
        if !replay.complete
            || replay.set.iter().any(|register| visible(register.name()))
            || replay.removed.iter().any(|(name, _, _)| visible(name))
        {
            return;
        }
        after = replay.revision;
    }
    let closed = registry.closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            _ = &mut closed => return,
            event = feed.recv() => match event {
                Ok(event) if event.revision > after && visible(&event.name) => return,
                Ok(_) => {}
                // Fell behind the feed: it cannot tell what was missed, so answer.
                Err(_) => return,
            },
        }
    }
}

/// `PUT /consumer` → 202: stores one change request per register, latest wins. All entries
/// are validated before any is stored, and the caller needs `request` on every name.
pub(crate) async fn put(
    shared: &Shared,
    request: Request<Incoming>,
    caller: &Caller,
) -> Result<Response<ResBody>, ServerError> {
    // Refused before the body is read (and before `100 Continue`) when it could hold nothing
    // the caller may request.
    caller.require_somewhere(Right::Request)?;
    let body = routes::read_body(shared, request).await?;
    let entries = parse_entries(&body, &shared.config)?;
    caller.require(Right::Request, entries.iter().map(|e| e.name.as_str()))?;
    // All or nothing, the pending-requests cap included.
    shared
        .registry
        .submit_requests(
            Some(caller.origin()),
            entries
                .iter()
                .map(|entry| (Arc::from(entry.name.as_str()), entry.value.clone()))
                .collect(),
        )
        .await?;
    if let Some(audit) = &shared.audit {
        for entry in &entries {
            audit.event(
                "request",
                caller.origin(),
                &[
                    ("name", Field::Str(&entry.name)),
                    ("value", Field::Str(&audit::clip(entry.value.as_bytes()))),
                    (
                        "value_bytes",
                        Field::Num(entry.value.as_bytes().len() as u64),
                    ),
                ],
            );
        }
    }
    tracing::debug!(count = entries.len(), "change requests stored");
    Ok(routes::empty(StatusCode::ACCEPTED))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::{Json, Registry};

    /// Polls once with a no-op waker: has the wait ended?
    fn ended(wait: std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        wait.poll(&mut cx) == Poll::Ready(())
    }

    #[test]
    fn a_restricted_long_poll_ignores_changes_it_may_not_see() {
        let registry = Registry::builder().manual_expiry().build();
        let visible: NameFilter = Arc::new(|name: &str| name.starts_with("public."));
        let after = registry.revision();
        let mut wait = pin!(wait_visible(
            &registry,
            &Selector::All,
            after,
            Some(&visible)
        ));
        assert!(!ended(wait.as_mut()));
        registry
            .set("private.a", Json::from(1_i64), None, None)
            .unwrap();
        assert!(!ended(wait.as_mut()), "woken by a register it may not read");
        registry.remove("private.a");
        assert!(!ended(wait.as_mut()), "woken by a removal it may not see");
        registry
            .set("public.b", Json::from(2_i64), None, None)
            .unwrap();
        assert!(ended(wait.as_mut()), "a visible change ends it");

        // Unrestricted, any change ends it.
        let after = registry.revision();
        let mut wait = pin!(wait_visible(&registry, &Selector::All, after, None));
        assert!(!ended(wait.as_mut()));
        registry
            .set("private.c", Json::from(3_i64), None, None)
            .unwrap();
        assert!(ended(wait.as_mut()));
    }
}

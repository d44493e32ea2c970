//! What the high-level client runs on: a remote registry over HTTP, or an in-process
//! [`Registry`]. Both answer the same five operations with the same meaning, so everything
//! above this module is written once.

use std::time::Duration;

use crate::client::error::ClientError;
use crate::client::wire::{ReadQuery, ReadResponse, RegisterValue, RegisterWrite, WireClient};
use crate::json::Json;
use crate::store::{ChangeRequest, Registry, Revision, Selector, WaitOutcome, DEFAULT_TTL};

#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Remote(WireClient),
    Embedded(Registry),
}

impl Backend {
    /// The TTL a write without one gets.
    pub(crate) fn default_ttl(&self) -> Duration {
        match self {
            // The REST API's default.
            Backend::Remote(_) => DEFAULT_TTL,
            Backend::Embedded(registry) => registry.default_ttl(),
        }
    }

    /// Reads the selected registers with detail; with `wait`, first waits (up to `wait`) for a
    /// change after `index` — after the request arrives when there is no index.
    ///
    /// Cancel safe.
    pub(crate) async fn read(
        &self,
        selector: &Selector,
        wait: Option<Duration>,
        index: Option<Revision>,
    ) -> Result<ReadResponse, ClientError> {
        match self {
            Backend::Remote(wire) => {
                let mut query = ReadQuery::from_selector(selector).detail(true);
                if let Some(wait) = wait {
                    query = query.wait(wait);
                    if let Some(index) = index {
                        query = query.index(index);
                    }
                }
                wire.read(&query).await
            }
            Backend::Embedded(registry) => {
                if registry.is_shut_down() {
                    return Err(ClientError::Closed);
                }
                if let Some(wait) = wait {
                    let after = index.unwrap_or_else(|| registry.revision());
                    let outcome = tokio::time::timeout(wait, registry.wait(selector, after)).await;
                    if outcome == Ok(WaitOutcome::Shutdown) {
                        return Err(ClientError::Closed);
                    }
                }
                let read = registry.read(selector);
                let registers = read
                    .registers
                    .iter()
                    .map(|register| RegisterValue {
                        name: std::sync::Arc::clone(register.name_arc()),
                        value: register.value().clone(),
                        metadata: register.metadata().cloned(),
                        revision: Some(register.revision()),
                        created: Some(register.created()),
                        expires_in: registry.expires_in(register.name()),
                    })
                    .collect();
                Ok(ReadResponse {
                    index: Some(read.revision),
                    registers,
                })
            }
        }
    }

    /// Writes one register.
    pub(crate) async fn set(&self, write: &RegisterWrite) -> Result<(), ClientError> {
        match self {
            Backend::Remote(wire) => wire.set(std::slice::from_ref(write)).await,
            Backend::Embedded(registry) => {
                registry.set(
                    &write.name,
                    write.value.clone(),
                    write.metadata.clone(),
                    write.ttl,
                )?;
                Ok(())
            }
        }
    }

    /// Sends one change request.
    pub(crate) async fn request(&self, name: &str, value: Json) -> Result<(), ClientError> {
        match self {
            Backend::Remote(wire) => wire.request(&[(name, value)]).await,
            Backend::Embedded(registry) => Ok(registry.request(name, value)?),
        }
    }

    /// Takes the selected pending change requests, waiting up to `wait` for one.
    ///
    /// Cancel safe while waiting (see [`WireClient::take_requests`]).
    pub(crate) async fn take(
        &self,
        selector: &Selector,
        wait: Duration,
    ) -> Result<Vec<ChangeRequest>, ClientError> {
        match self {
            Backend::Remote(wire) => {
                let names: &[std::sync::Arc<str>] = match selector {
                    Selector::All => &[],
                    Selector::Names(names) => names,
                };
                wire.take_requests(names, Some(wait)).await
            }
            Backend::Embedded(registry) => {
                let taken = tokio::time::timeout(wait, registry.take_requests(selector.clone()))
                    .await
                    .unwrap_or_default();
                if taken.is_empty() && registry.is_shut_down() {
                    return Err(ClientError::Closed);
                }
                Ok(taken)
            }
        }
    }

    /// Removes one register.
    pub(crate) async fn remove(&self, name: &str) -> Result<(), ClientError> {
        match self {
            Backend::Remote(wire) => wire.remove(&[name]).await,
            Backend::Embedded(registry) => {
                registry.remove(name);
                Ok(())
            }
        }
    }
}

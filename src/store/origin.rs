//! Who made a change: the caller's identity, its address and the request's correlation id.
//!
//! The registry does not authenticate anyone; a front end that does (the server's `--auth`)
//! says who asked by making its writes with an [`Origin`] (`Registry::set_as`,
//! `try_remove_as`, `request_many_as`). The commit path hands it to every sink with the
//! change (an audit trail records it), and a change request keeps its requester's origin so
//! that the provider that takes it can see who commanded it.

use std::fmt;
use std::net::SocketAddr;

use crate::sync::Arc;

/// Who asked for a change. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    inner: Arc<Inner>,
}

#[derive(PartialEq, Eq, Hash)]
struct Inner {
    identity: Box<str>,
    request_id: Box<str>,
    remote: Option<SocketAddr>,
}

impl Origin {
    /// `identity` (a principal's name, a certificate subject, or `anonymous`) asking in the
    /// request `request_id`, from `remote` when it came over a network.
    pub fn new(identity: &str, request_id: &str, remote: Option<SocketAddr>) -> Self {
        Self {
            inner: Arc::new(Inner {
                identity: identity.into(),
                request_id: request_id.into(),
                remote,
            }),
        }
    }

    /// The caller's identity.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// The request's correlation id (`X-Request-Id`).
    pub fn request_id(&self) -> &str {
        &self.inner.request_id
    }

    /// The caller's address, if it came over a network.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.inner.remote
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("identity", &self.identity())
            .field("request_id", &self.request_id())
            .field("remote", &self.remote())
            .finish()
    }
}

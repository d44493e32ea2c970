//! The high-level client: subscriptions and providers over one shared long poll per
//! direction, on a remote registry or an in-process one.

#[cfg(feature = "tls")]
use std::path::PathBuf;
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::client::backend::Backend;
use crate::client::consumer::{self, AllConsumer, Consumer, ConsumerHub};
use crate::client::error::ClientError;
use crate::client::provider::{self, Provider, ProviderHub};
use crate::client::wire::{Access, RegisterValue, RegisterWrite, WireClient};
use crate::json::Json;
use crate::store::{Registry, Selector};
use crate::sync::{Arc, Mutex};

/// How long a long poll waits when the server supports `index` (Part B): 60 s. Longer means
/// fewer requests; shorter means a connection that died silently is noticed sooner (a poll
/// times out after its wait plus 10 s).
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(60);
/// How long a consumer poll waits against a server without Part B: 15 s. Without `index`, a
/// change that lands between two polls is only seen when the next poll ends, so this bounds
/// how late such a change can be.
pub const DEFAULT_FALLBACK_POLL_WAIT: Duration = Duration::from_secs(15);
/// First reconnect delay: 100 ms (then doubling, with jitter).
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay: 10 s.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The knobs of a client's background tasks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub(crate) poll_wait: Duration,
    pub(crate) fallback_poll_wait: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
}

/// Configures a [`Client`]; the defaults suit most applications.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    options: Options,
    /// Token and TLS files for [`remote`](Self::remote).
    access: Access,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            options: Options {
                poll_wait: DEFAULT_POLL_WAIT,
                fallback_poll_wait: DEFAULT_FALLBACK_POLL_WAIT,
                backoff_min: DEFAULT_BACKOFF_MIN,
                backoff_max: DEFAULT_BACKOFF_MAX,
            },
            access: Access::default(),
        }
    }
}

impl ClientBuilder {
    /// Long-poll wait against a server with Part B (default 60 s).
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.options.poll_wait = wait.max(Duration::from_millis(1));
        self
    }

    /// Consumer long-poll wait against a server without Part B (default 15 s).
    pub fn fallback_poll_wait(mut self, wait: Duration) -> Self {
        self.options.fallback_poll_wait = wait.max(Duration::from_millis(1));
        self
    }

    /// Reconnect delays: from `min`, doubling up to `max`, with jitter (default 100 ms to
    /// 10 s).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.options.backoff_min = min;
        self.options.backoff_max = max;
        self
    }

    /// For [`remote`](Self::remote): sends `Authorization: Bearer <token>` with every
    /// request, for a registry that authenticates callers by token. See
    /// [`WireClientBuilder::token`](crate::client::WireClientBuilder::token).
    pub fn token(mut self, token: &str) -> Self {
        self.access.token(token);
        self
    }

    /// For [`remote`](Self::remote) over `https://`: trusts the CA certificate(s) in this PEM
    /// file instead of the system bundle, for a registry with a private CA. See
    /// [`WireClientBuilder::ca_file`](crate::client::WireClientBuilder::ca_file).
    #[cfg(feature = "tls")]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.access.ca_file(path.into());
        self
    }

    /// For [`remote`](Self::remote) over `https://`: presents this client certificate and key
    /// (PEM), for a registry that requires mutual TLS. See
    /// [`WireClientBuilder::client_cert`](crate::client::WireClientBuilder::client_cert).
    #[cfg(feature = "tls")]
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.access.client_cert(cert.into(), key.into());
        self
    }

    /// A client for the registry at `url` (`http[s]://host[:port][/prefix]`), with this
    /// builder's token and TLS files.
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidUrl`] for a URL the client cannot use; the errors of
    /// [`WireClientBuilder::build`](crate::client::WireClientBuilder::build).
    pub fn remote(self, url: &str) -> Result<Client, ClientError> {
        let wire = WireClient::builder(url)
            .access(self.access.clone())
            .build()?;
        Ok(self.wire(wire))
    }

    /// A client over a configured [`WireClient`] (this builder's token and TLS files are not
    /// used: the wire client has its own).
    pub fn wire(self, wire: WireClient) -> Client {
        Client::with_backend(Backend::Remote(wire), self.options)
    }

    /// A client over an in-process registry: no HTTP, the same API.
    pub fn embedded(self, registry: Registry) -> Client {
        Client::with_backend(Backend::Embedded(registry), self.options)
    }
}

/// A registry client: consume registers, provide them, send change requests — over HTTP
/// ([`Client::remote`]) or in process ([`Client::embedded`]), with the same API, so an
/// application switches between the two where it constructs the client.
///
/// Cheap to clone; clones share the background tasks. All consumers of one client share one
/// long poll (`GET /consumer` over the union of their names), and all its providers share one
/// change-request poll (`GET /provider`); each is re-issued when the set of names changes and
/// reconnects with exponential backoff and jitter. The tasks start with the first consumer or
/// provider and stop when the client and every handle made from it are dropped.
///
/// Against a server without the REST API's Part B (no `X-Reg-Index`, no `DELETE`), the client
/// notices and falls back: it polls without `index`, and a dropped provider's register expires
/// by its TTL.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use reg::client::{Client, Update};
/// use reg::{Json, Registry};
///
/// // `Client::remote("http://localhost:8080")?` for a server: the rest is the same.
/// let client = Client::embedded(Registry::new());
/// let mut lamp = client.provide("lamp", Json::from(false), None, None).await.unwrap();
/// let mut watcher = client.consume("lamp");
/// assert_eq!(watcher.next().await.unwrap().value(), Some(&Json::from(false)));
///
/// watcher.request(Json::from(true)).await.unwrap();
/// let asked = lamp.next_request().await.unwrap();
/// lamp.update(asked).await.unwrap();
/// assert_eq!(watcher.next().await.unwrap().value(), Some(&Json::from(true)));
///
/// drop(lamp); // removes the register
/// assert!(matches!(watcher.next().await, Some(Update::Removed { .. })));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    options: Options,
    consumers: Arc<ConsumerHub>,
    providers: Arc<ProviderHub>,
    /// The two poll tasks, started on first use; aborted when the last handle goes.
    tasks: Mutex<Tasks>,
    /// Discovery's service views, one poll each (`discovery.rs`).
    views: crate::client::discovery::Views,
}

#[derive(Debug, Default)]
struct Tasks {
    consumer: Option<AbortHandle>,
    provider: Option<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut tasks = self.tasks.lock();
        for task in [tasks.consumer.take(), tasks.provider.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

impl Client {
    /// A client for the registry at `url` (`http[s]://host[:port]`), with default options (no
    /// token; for `https`, the system's CA bundle).
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidUrl`] for a URL the client cannot use.
    pub fn remote(url: &str) -> Result<Client, ClientError> {
        ClientBuilder::default().remote(url)
    }

    /// A client over an in-process registry, with default options.
    pub fn embedded(registry: Registry) -> Client {
        ClientBuilder::default().embedded(registry)
    }

    /// A builder, to change poll waits and backoff, or set a token, a CA file or a client
    /// certificate.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    fn with_backend(backend: Backend, options: Options) -> Client {
        Client {
            inner: Arc::new(Inner {
                backend,
                options,
                consumers: Arc::new(ConsumerHub::new()),
                providers: Arc::new(ProviderHub::new()),
                tasks: Mutex::new(Tasks::default()),
                views: crate::client::discovery::Views::default(),
            }),
        }
    }

    /// The wire client, when this client talks to a remote registry.
    pub fn wire(&self) -> Option<&WireClient> {
        match &self.inner.backend {
            Backend::Remote(wire) => Some(wire),
            Backend::Embedded(_) => None,
        }
    }

    /// Subscribes to one register. See [`Consumer::next`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the shared poll is a Tokio task), like `tokio::spawn`.
    pub fn consume(&self, name: &str) -> Consumer {
        let consumer = Consumer::new(self.clone(), name);
        self.start_consumer_poll();
        consumer
    }

    /// Subscribes to every register. See [`AllConsumer::next`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, like `tokio::spawn`.
    pub fn consume_all(&self) -> AllConsumer {
        let consumer = AllConsumer::new(self.clone());
        self.start_consumer_poll();
        consumer
    }

    /// Publishes a register and keeps it alive: refreshed at half its TTL (`None`: the
    /// registry's default, 10 s on a server) until the [`Provider`] is dropped, which removes
    /// it. Metadata is a JSON object, `None` for none.
    ///
    /// # Errors
    ///
    /// The first write's error (nothing is kept alive then), or
    /// [`ClientError::AlreadyProvided`] when this client already provides `name`.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if dropped before it returns, nothing is kept alive and the name is
    /// free again, but a first write already sent may have created the register, which then
    /// lives until its TTL runs out. A dropped [`Provider`]'s register is removed before a new
    /// provider of the same name writes (the call waits for that removal).
    pub async fn provide(
        &self,
        name: &str,
        value: Json,
        metadata: Option<Json>,
        ttl: Option<Duration>,
    ) -> Result<Provider, ClientError> {
        self.start_provider_poll();
        let write = RegisterWrite {
            name: Arc::from(name),
            value,
            metadata,
            ttl,
        };
        Provider::start(self.clone(), write).await
    }

    /// Asks the provider of `name` to change it to `value` (latest wins).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once sent, the request may be stored even if the future is dropped.
    pub async fn request(&self, name: &str, value: Json) -> Result<(), ClientError> {
        self.inner.backend.request(name, value).await
    }

    /// One register's current value, without subscribing.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read changes nothing.
    pub async fn get(&self, name: &str) -> Result<Option<RegisterValue>, ClientError> {
        let read = self
            .inner
            .backend
            .read(&Selector::name(name), None, None)
            .await?;
        Ok(read.registers.into_iter().find(|r| &*r.name == name))
    }

    /// Every register, sorted by name, without subscribing.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read changes nothing.
    pub async fn list(&self) -> Result<Vec<RegisterValue>, ClientError> {
        Ok(self
            .inner
            .backend
            .read(&Selector::All, None, None)
            .await?
            .registers)
    }

    pub(crate) fn consumers(&self) -> &ConsumerHub {
        &self.inner.consumers
    }

    pub(crate) fn providers(&self) -> &ProviderHub {
        &self.inner.providers
    }

    pub(crate) fn providers_arc(&self) -> Arc<ProviderHub> {
        Arc::clone(&self.inner.providers)
    }

    pub(crate) fn views(&self) -> &crate::client::discovery::Views {
        &self.inner.views
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    pub(crate) fn options(&self) -> Options {
        self.inner.options
    }

    fn start_consumer_poll(&self) {
        let mut tasks = self.inner.tasks.lock();
        if tasks.consumer.is_none() {
            let task = tokio::spawn(consumer::run(
                self.inner.backend.clone(),
                Arc::clone(&self.inner.consumers),
                self.inner.options,
            ));
            tasks.consumer = Some(task.abort_handle());
        }
    }

    fn start_provider_poll(&self) {
        let mut tasks = self.inner.tasks.lock();
        if tasks.provider.is_none() {
            let task = tokio::spawn(provider::run(
                self.inner.backend.clone(),
                Arc::clone(&self.inner.providers),
                self.inner.options,
            ));
            tasks.provider = Some(task.abort_handle());
        }
    }
}

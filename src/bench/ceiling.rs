//! The ceiling: a bare hyper HTTP/1.1 server that answers every request with a fixed body.
//!
//! Every throughput figure of the suite is reported beside the same load against this server,
//! on the same machine in the same run: it is what this machine, this kernel's loopback and
//! hyper can do at all, so `reg / ceiling` says how much reg's own work costs, independently of
//! how fast or busy the machine is.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// In parking mode, `GET` of this path answers at once with the number of parked requests.
pub(crate) const PARKED_PATH: &str = "/ceiling/parked";

/// A running ceiling server; stops when dropped.
#[derive(Debug)]
pub(crate) struct Ceiling {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// GET requests parked now (parking mode only).
    parked: Arc<AtomicU64>,
}

impl Ceiling {
    /// Starts a server on 127.0.0.1 (any port) answering `status` with `body` as JSON.
    pub(crate) async fn start(status: u16, body: Vec<u8>) -> std::io::Result<Ceiling> {
        Self::start_with(status, body, false).await
    }

    /// The fanout ceiling: like [`start`](Self::start), but every GET is parked until the next
    /// PUT, which answers them all — a long poll with no registry behind it.
    pub(crate) async fn start_parking(body: Vec<u8>) -> std::io::Result<Ceiling> {
        Self::start_with(200, body, true).await
    }

    /// GET requests parked now.
    pub(crate) fn parked(&self) -> u64 {
        self.parked.load(Ordering::Relaxed)
    }

    async fn start_with(status: u16, body: Vec<u8>, park: bool) -> std::io::Result<Ceiling> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let body = Bytes::from(body);
        let status = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
        let parked = Arc::new(AtomicU64::new(0));
        let release = Arc::new(Notify::new());
        let counter = Arc::clone(&parked);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stopped.changed() => break,
                };
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let body = body.clone();
                let (release, counter) = (Arc::clone(&release), Arc::clone(&counter));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let body = body.clone();
                        let (release, counter) = (Arc::clone(&release), Arc::clone(&counter));
                        async move {
                            if park && request.uri().path() == PARKED_PATH {
                                let count = counter.load(Ordering::Relaxed).to_string();
                                return Ok(Response::new(Full::new(Bytes::from(count))));
                            }
                            if park && request.method() == hyper::Method::GET {
                                let released = release.notified();
                                tokio::pin!(released);
                                released.as_mut().enable();
                                counter.fetch_add(1, Ordering::Relaxed);
                                drop(request);
                                released.await;
                                counter.fetch_sub(1, Ordering::Relaxed);
                                return Ok::<_, Infallible>(Response::new(Full::new(body)));
                            }
                            if park {
                                release.notify_waiters();
                            }
                            // Read the request body as reg does: fair, and keeps the
                            // connection reusable.
                            let _ = request.into_body().collect().await;
                            let mut response = Response::new(Full::new(body));
                            *response.status_mut() = status;
                            response.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Ceiling { addr, stop, parked })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How the load generator reaches it: plain HTTP, no token.
    pub(crate) fn peer(&self) -> crate::bench::http::Peer {
        crate::bench::http::Peer::plain(self.addr)
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Runs a ceiling server until standard input closes (so it dies with the process that
/// started it), printing `listening on <addr>` first. For `reg bench ceiling-server`: the fanout
/// scenario starts it as a child process when its polls would not fit in one process's
/// open-file limit beside their own sockets.
pub async fn serve_ceiling(park: bool, body: Vec<u8>) -> std::io::Result<()> {
    let ceiling = Ceiling::start_with(200, body, park).await?;
    println!("listening on {}", ceiling.addr());
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await;
    Ok(())
}

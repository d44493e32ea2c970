//! The ceiling: a bare hyper HTTP/1.1 server that answers every request with a fixed body.
//!
//! Every throughput figure of the suite is reported beside the same load against this server,
//! on the same machine in the same run: it is what this machine, this kernel's loopback and
//! hyper can do at all, so `reg / ceiling` says how much reg's own work costs, independently of
//! how fast or busy the machine is.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A running ceiling server; stops when dropped.
#[derive(Debug)]
pub(crate) struct Ceiling {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Ceiling {
    /// Starts a server on 127.0.0.1 (any port) answering `status` with `body` as JSON.
    pub(crate) async fn start(status: u16, body: Vec<u8>) -> std::io::Result<Ceiling> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let body = Bytes::from(body);
        let status = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stopped.changed() => break,
                };
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let body = body.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let body = body.clone();
                        async move {
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
        Ok(Ceiling { addr, stop })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

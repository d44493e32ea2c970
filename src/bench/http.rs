//! A minimal HTTP/1.1 client connection for the load generator.
//!
//! Why not the crate's `client`: a load generator must control each socket — its source
//! address (connections are spread over 127.0.0.x so 10,000s of them do not exhaust one
//! address's ephemeral ports), when it is opened, and exactly when a request is written — and
//! must cost as little as possible per request so the generator is not the bottleneck on a
//! 2-core machine. This is wrk's approach: pre-built request bytes, one buffer per connection.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

#[cfg(all(feature = "tls", feature = "client"))]
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Largest response header block accepted.
const MAX_HEADERS: usize = 32;
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

/// A response: status and body (headers the generator needs are pulled out).
#[derive(Debug, Clone, Default)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// `X-Reg-Index`, when the server sent it.
    pub(crate) index: Option<u64>,
    pub(crate) body: Vec<u8>,
}

/// Where the generator's connections go and how: the address, TLS for an `https` target, and
/// the bearer token each request carries. Cheap to clone (one per task).
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    /// `Authorization: Bearer <token>\r\n`, copied into every request built for this peer;
    /// empty without a token.
    authorization: Arc<str>,
    /// The TLS client and the name the server's certificate must carry; `None` for plain
    /// HTTP.
    #[cfg(all(feature = "tls", feature = "client"))]
    tls: Option<Tls>,
}

/// TLS towards one server.
#[cfg(all(feature = "tls", feature = "client"))]
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) connector: tokio_rustls::TlsConnector,
    pub(crate) name: rustls_pki_types::ServerName<'static>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Peer");
        debug.field("addr", &self.addr);
        // The token is a secret: say whether there is one, never what it is.
        debug.field("token", &!self.authorization.is_empty());
        #[cfg(all(feature = "tls", feature = "client"))]
        debug.field("tls", &self.tls.as_ref().map(|tls| &tls.name));
        debug.finish()
    }
}

impl Peer {
    /// Plain HTTP without a token: the in-process server and the ceiling servers.
    pub(crate) fn plain(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            authorization: Arc::from(""),
            #[cfg(all(feature = "tls", feature = "client"))]
            tls: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub(crate) fn with_token(mut self, token: &str) -> Peer {
        self.authorization = Arc::from(format!("Authorization: Bearer {token}\r\n"));
        self
    }

    /// Whether connections speak TLS.
    pub(crate) fn is_tls(&self) -> bool {
        #[cfg(all(feature = "tls", feature = "client"))]
        return self.tls.is_some();
        #[cfg(not(all(feature = "tls", feature = "client")))]
        return false;
    }

    /// Speaks TLS to the server.
    #[cfg(all(feature = "tls", feature = "client"))]
    pub(crate) fn with_tls(mut self, tls: Tls) -> Peer {
        self.tls = Some(tls);
        self
    }
}

/// One keep-alive connection.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: Stream,
    buf: Vec<u8>,
}

#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    /// Boxed: a TLS session is ~1 KiB beside a socket's handful of bytes.
    #[cfg(all(feature = "tls", feature = "client"))]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The source address for connection number `n`: 127.0.0.1 … 127.0.0.250, round robin, when
/// the target is on loopback; the system's choice otherwise.
pub(crate) fn source_ip(target: SocketAddr, n: usize) -> Option<IpAddr> {
    match target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let last = u8::try_from(1 + n % 250).unwrap_or(1);
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        }
        _ => None,
    }
}

impl Conn {
    /// Connects to `peer` from `source` (port chosen by the system), with the TLS handshake
    /// for an `https` peer.
    pub(crate) async fn connect(peer: &Peer, source: Option<IpAddr>) -> io::Result<Conn> {
        let target = peer.addr;
        let socket = match target {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(target).await?;
        stream.set_nodelay(true)?;
        #[cfg(all(feature = "tls", feature = "client"))]
        if let Some(tls) = &peer.tls {
            let stream = tls.connector.connect(tls.name.clone(), stream).await?;
            return Ok(Conn {
                stream: Stream::Tls(Box::new(stream)),
                buf: Vec::new(),
            });
        }
        Ok(Conn {
            stream: Stream::Plain(stream),
            buf: Vec::new(),
        })
    }

    /// Sends one request (complete bytes) and reads its response.
    pub(crate) async fn send(&mut self, request: &[u8]) -> io::Result<Response> {
        self.write(request).await?;
        self.read_response().await
    }

    /// Writes request bytes without waiting for the answer (for parked long polls).
    pub(crate) async fn write(&mut self, request: &[u8]) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(stream) => stream.write_all(request).await,
            #[cfg(all(feature = "tls", feature = "client"))]
            Stream::Tls(stream) => {
                stream.write_all(request).await?;
                // rustls holds written records until flushed.
                stream.flush().await
            }
        }
    }

    /// Reads one response.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes read stay in the buffer for the next call.
    pub(crate) async fn read_response(&mut self) -> io::Result<Response> {
        loop {
            if let Some((response, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                return Ok(response);
            }
            let n = match &mut self.stream {
                Stream::Plain(stream) => {
                    // Wait for readiness before growing the buffer: a parked long poll then
                    // holds no read buffer at all.
                    stream.readable().await?;
                    let start = self.buf.len();
                    self.buf.resize(start + READ_CHUNK, 0);
                    let read = stream.try_read(&mut self.buf[start..]);
                    match read {
                        Ok(n) => {
                            self.buf.truncate(start + n);
                            n
                        }
                        Err(error) => {
                            self.buf.truncate(start);
                            if error.kind() == io::ErrorKind::WouldBlock {
                                continue;
                            }
                            return Err(error);
                        }
                    }
                }
                // The socket's readiness says nothing of what rustls already decrypted, so
                // read through it; `read_buf` appends only what arrived (cancel safe).
                #[cfg(all(feature = "tls", feature = "client"))]
                Stream::Tls(stream) => {
                    self.buf.reserve(READ_CHUNK);
                    stream.read_buf(&mut self.buf).await?
                }
            };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by the server",
                ));
            }
        }
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// Parses one complete response from the front of `buf`; `None` if more bytes are needed.
fn parse(buf: &[u8]) -> io::Result<Option<(Response, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(invalid(&format!("bad response: {error}"))),
    };
    let status = parsed.code.unwrap_or(0);
    let mut content_length = None;
    let mut chunked = false;
    let mut index = None;
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or("");
        if header.name.eq_ignore_ascii_case("content-length") {
            content_length = value.trim().parse::<usize>().ok();
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if header.name.eq_ignore_ascii_case("x-reg-index") {
            index = value.trim().parse().ok();
        }
    }
    let rest = buf.get(head_len..).unwrap_or(&[]);
    if chunked {
        return Ok(parse_chunked(rest)?.map(|(body, used)| {
            (
                Response {
                    status,
                    index,
                    body,
                },
                head_len + used,
            )
        }));
    }
    let length = match (content_length, status) {
        (Some(length), _) => length,
        (None, 204 | 304) | (None, 100..=199) => 0,
        (None, _) => return Err(invalid("response without content-length")),
    };
    if rest.len() < length {
        return Ok(None);
    }
    let body = rest.get(..length).unwrap_or(&[]).to_vec();
    Ok(Some((
        Response {
            status,
            index,
            body,
        },
        head_len + length,
    )))
}

/// Decodes a chunked body; `None` if incomplete.
fn parse_chunked(mut rest: &[u8]) -> io::Result<Option<(Vec<u8>, usize)>> {
    let total = rest.len();
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(rest.get(..line_end).unwrap_or(&[]))
            .map_err(|_| invalid("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
        let data_start = line_end + 2;
        let needed = data_start + size + 2;
        if rest.len() < needed {
            return Ok(None);
        }
        if size == 0 {
            // Trailers are not used by reg servers; the last chunk ends with CRLF.
            return Ok(Some((body, total - rest.len() + needed)));
        }
        body.extend_from_slice(rest.get(data_start..data_start + size).unwrap_or(&[]));
        rest = rest.get(needed..).unwrap_or(&[]);
    }
}

/// Builds request bytes for `peer` (its token, if any, included).
pub(crate) fn request(method: &str, path: &str, peer: &Peer, body: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + peer.authorization.len() + body.map_or(0, <[u8]>::len));
    let host = peer.addr;
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
    out.extend_from_slice(peer.authorization.as_bytes());
    match body {
        Some(body) => {
            out.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(body);
        }
        None => out.extend_from_slice(b"\r\n"),
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_responses() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Reg-Index: 7\r\n\r\n{}HTTP/1.1 204 No Content\r\n\r\n";
        let (first, used) = parse(raw).unwrap().unwrap();
        assert_eq!(
            (first.status, first.index, first.body.as_slice()),
            (200, Some(7), &b"{}"[..])
        );
        let (second, _) = parse(&raw[used..]).unwrap().unwrap();
        assert_eq!(second.status, 204);

        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (response, used) = parse(chunked).unwrap().unwrap();
        assert_eq!(response.body, b"abcde");
        assert_eq!(used, chunked.len());
        assert!(parse(&chunked[..chunked.len() - 3]).unwrap().is_none());
    }

    #[test]
    fn requests_carry_the_token() {
        let peer = Peer::plain("127.0.0.1:80".parse().unwrap());
        let plain = request("GET", "/consumer", &peer, None);
        assert_eq!(
            plain,
            b"GET /consumer HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n"
        );
        let with_token = request("PUT", "/x", &peer.with_token("t0k"), Some(b"{}"));
        assert_eq!(
            String::from_utf8(with_token).unwrap(),
            "PUT /x HTTP/1.1\r\nHost: 127.0.0.1:80\r\nAuthorization: Bearer t0k\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn spreads_loopback_sources() {
        let target: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(source_ip(target, 0), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(source_ip(target, 251), Some("127.0.0.2".parse().unwrap()));
    }
}

//! The connections to the upstream: hyper's pooled client, with a connector that tries a failed
//! connection once more and lets a failed request look at its socket afterwards.
//!
//! The upstream may close an idle keep-alive connection at any moment, and a request sent on it at
//! that moment never reaches it. Such a request must not become a synthetic 502, nor be sent
//! twice if it did reach the upstream (a generation costs credits). So a request is sent once more
//! only when it provably never reached the upstream:
//!
//! - no connection could be made (the connector tries again; nothing was sent);
//! - the pool found the connection closed before writing a byte of it (hyper retries those);
//! - or the connection ended before a complete answer head and the upstream's TCP stack reset
//!   it. A reset is what a socket closed with bytes of our request unread answers, or what answers
//!   bytes that arrive after it closed; a server that read the request and then closed sends a
//!   plain FIN, and that request is never sent again. The body must be whole in hand to be sent
//!   again (bodies are kept up to 64 KiB).
//!
//! To see a reset that comes after hyper has let go of the connection (Linux reports it as
//! `EPIPE` once the upstream's FIN was read), each connection keeps a duplicate of its socket's
//! descriptor: one more descriptor per upstream connection.

use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{Service, ServiceExt};

use super::ProxyBody;
use super::body::BoxError;
use crate::BoxFuture;
use crate::chain::find;

/// How long a failed request waits for the reset that says its bytes went unread.
const RESET_WAIT: Duration = Duration::from_millis(5);
/// Before the second connection attempt.
const RECONNECT_AFTER: Duration = Duration::from_millis(20);

type Stream = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Where requests go.
pub(super) struct Upstream {
    client: Client<Connector, ProxyBody>,
    /// Keeps no idle connection: a request sent once more goes on a fresh one.
    fresh: Client<Connector, ProxyBody>,
}

impl Upstream {
    pub(super) fn new(https: HttpsConnector<HttpConnector>) -> Upstream {
        let connector = Connector { https };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(4096)
            .build(connector.clone());
        let fresh = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
        Upstream { client, fresh }
    }

    /// Sends `req`; once more if it never reached the upstream, rebuilt by `again` (`None` when
    /// its body is not whole in hand).
    pub(super) async fn send(
        &self,
        req: Request<ProxyBody>,
        again: impl FnOnce() -> Option<Request<ProxyBody>>,
    ) -> Result<Response<Incoming>, BoxError> {
        match self.client.request(req).await {
            Ok(response) => Ok(response),
            Err(e) if !e.is_connect() && closed_unread(&e).await => match again() {
                Some(req) => {
                    tracing::debug!("the upstream reset the connection without reading the request; sending it again");
                    self.fresh.request(req).await.map_err(Into::into)
                }
                None => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }
}

/// The HTTPS-or-HTTP connector, trying a failed connection once more.
#[derive(Clone)]
struct Connector {
    https: HttpsConnector<HttpConnector>,
}

impl Service<Uri> for Connector {
    type Response = Watched;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Watched, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.https.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = self.https.clone();
        Box::pin(async move {
            let io = match https.clone().oneshot(uri.clone()).await {
                Ok(io) => io,
                Err(first) => {
                    tracing::debug!(error = %first, "cannot connect to the upstream; trying once more");
                    tokio::time::sleep(RECONNECT_AFTER).await;
                    https.oneshot(uri).await?
                }
            };
            let socket = duplicate(&io).map(Arc::new);
            Ok(Watched { io, socket })
        })
    }
}

/// An upstream connection, with a duplicate of its socket.
struct Watched {
    io: Stream,
    socket: Option<Arc<std::net::TcpStream>>,
}

/// The duplicate socket, as the pool keeps it with the connection's info.
#[derive(Clone)]
struct SocketWatch(Arc<std::net::TcpStream>);

impl Connection for Watched {
    fn connected(&self) -> Connected {
        let connected = self.io.connected();
        match &self.socket {
            Some(s) => connected.extra(SocketWatch(s.clone())),
            None => connected,
        }
    }
}

impl Read for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// A duplicate of the connection's socket (TLS or not), to read its state without hyper.
fn duplicate(io: &Stream) -> Option<std::net::TcpStream> {
    let tcp = match io {
        MaybeHttpsStream::Http(t) => t.inner(),
        MaybeHttpsStream::Https(t) => t.inner().get_ref().0.inner().inner(),
    };
    tcp.as_fd().try_clone_to_owned().ok().map(std::net::TcpStream::from)
}

/// Whether a request failed because the upstream's stack reset the connection before a complete
/// answer head: seen by hyper itself, or arriving on the socket just after.
async fn closed_unread(error: &hyper_util::client::legacy::Error) -> bool {
    let Some(hyper) = find::<hyper::Error>(error) else { return false };
    if find::<std::io::Error>(hyper).is_some_and(|io| io.kind() == ErrorKind::ConnectionReset) {
        return true;
    }
    if !hyper.is_incomplete_message() {
        return false;
    }
    let mut extras = http::Extensions::new();
    if let Some(info) = error.connect_info() {
        info.get_extras(&mut extras);
    }
    let Some(SocketWatch(socket)) = extras.get::<SocketWatch>() else { return false };
    let deadline = Instant::now() + RESET_WAIT;
    loop {
        let reset = match socket.take_error() {
            Ok(Some(e)) => matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
            // The duplicate shares the original's non-blocking mode, so this never waits.
            _ => matches!(socket.peek(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::ConnectionReset),
        };
        if reset || Instant::now() >= deadline {
            return reset;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

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
//!
//! At most `proxy.upstream_max_connections` connections are open. A request takes a *slot* before
//! it is sent and gives it back once its answer has been read (or given up); a request that finds
//! every slot taken waits for one, first come first served, within its `upstream_timeout`, and is
//! never answered by the proxy while it waits. The connector holds the same bound on open
//! connections, so that a connection on its way back to the pool when a waiting request starts
//! is reused rather than joined by another. Idle connections are kept up to
//! `proxy.upstream_max_idle` and closed after [`IDLE_TIMEOUT`].

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
use prometheus::IntGauge;
use tower::{Service, ServiceExt};

use super::ProxyBody;
use super::body::BoxError;
use crate::BoxFuture;
use crate::chain::find;
use crate::metrics::UpstreamGauges;
use crate::server::{ConnectionLimit, Held};

/// How long a failed request waits for the reset that says its bytes went unread.
const RESET_WAIT: Duration = Duration::from_millis(5);
/// Before the second connection attempt.
const RECONNECT_AFTER: Duration = Duration::from_millis(20);
/// An idle upstream connection is closed after this long unused.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a new connection waits for one of the open ones to close when all are open. A request
/// holding a slot nearly never waits here (one of the open connections is idle or on its way back
/// to the pool, and the pool hands it over first); the connections hyper goes on making in the
/// background after the pool won give up after this long.
const OPEN_WAIT: Duration = Duration::from_millis(250);

type Stream = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Where requests go.
pub(super) struct Upstream {
    client: Client<Connector, ProxyBody>,
    /// Keeps no idle connection: a request sent once more goes on a fresh one.
    fresh: Client<Connector, ProxyBody>,
    /// Requests sent and not yet answered whole.
    busy: Arc<ConnectionLimit>,
    /// Connections open.
    open: Arc<ConnectionLimit>,
    gauges: UpstreamGauges,
}

/// A request's place among the upstream connections, held until its answer has been read.
pub(super) struct Slot {
    _held: Option<Held>,
}

/// Counts a request among those waiting for a slot while it waits.
struct Waiting<'a>(&'a IntGauge);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// No connection could be opened: all `upstream_max_connections` stayed open and busy.
#[derive(Debug, thiserror::Error)]
#[error("every upstream connection (proxy.upstream_max_connections) stayed busy")]
struct NoFreeConnection;

impl Upstream {
    pub(super) fn new(
        https: HttpsConnector<HttpConnector>,
        max_connections: usize,
        max_idle: usize,
        gauges: UpstreamGauges,
    ) -> Upstream {
        let open = ConnectionLimit::new(max_connections);
        let connector = Connector { https, open: open.clone(), gauge: gauges.open.clone() };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(max_idle)
            .build(connector.clone());
        let fresh = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
        gauges.limit.set(i64::try_from(max_connections).unwrap_or(i64::MAX));
        Upstream { client, fresh, busy: ConnectionLimit::new(max_connections), open, gauges }
    }

    /// Follows a reloaded `proxy.upstream_max_connections`: a higher bound at once, a lower one
    /// as connections are given back.
    pub(super) fn set_max_connections(&self, max: usize) {
        self.busy.set(max);
        self.open.set(max);
        self.gauges.limit.set(i64::try_from(max).unwrap_or(i64::MAX));
    }

    /// A slot to send a request in: at once, or in turn once one is given back. The caller's
    /// timeout bounds the wait.
    pub(super) async fn slot(&self) -> Slot {
        if let Some(held) = self.busy.try_acquire() {
            return Slot { _held: Some(held) };
        }
        let started = Instant::now();
        self.gauges.waiting.inc();
        let waiting = Waiting(&self.gauges.waiting);
        let held = self.busy.acquire().await;
        drop(waiting);
        self.gauges.wait.observe(started.elapsed().as_secs_f64());
        Slot { _held: held }
    }

    /// Sends `req` (its [`Slot`] taken); once more if it never reached the upstream, rebuilt by
    /// `again` (`None` when its body is not whole in hand).
    pub(super) async fn send(
        &self,
        req: Request<ProxyBody>,
        again: impl FnOnce() -> Option<Request<ProxyBody>>,
    ) -> Result<Response<Incoming>, BoxError> {
        match self.client.request(req).await {
            Ok(response) => Ok(response),
            // Never sent: no connection could be opened in time.
            Err(e) if e.is_connect() && find::<NoFreeConnection>(&e).is_some() => match again() {
                Some(req) => self.client.request(req).await.map_err(Into::into),
                None => Err(e.into()),
            },
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

/// The HTTPS-or-HTTP connector, trying a failed connection once more, within the bound of open
/// connections.
#[derive(Clone)]
struct Connector {
    https: HttpsConnector<HttpConnector>,
    open: Arc<ConnectionLimit>,
    gauge: IntGauge,
}

impl Service<Uri> for Connector {
    type Response = Watched;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Watched, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.https.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (https, open, gauge) = (self.https.clone(), self.open.clone(), self.gauge.clone());
        Box::pin(async move {
            let place = match open.try_acquire() {
                Some(place) => place,
                None => tokio::time::timeout(OPEN_WAIT, open.acquire()).await.ok().flatten().ok_or(NoFreeConnection)?,
            };
            let io = match https.clone().oneshot(uri.clone()).await {
                Ok(io) => io,
                Err(first) => {
                    tracing::debug!(error = %first, "cannot connect to the upstream; trying once more");
                    tokio::time::sleep(RECONNECT_AFTER).await;
                    https.oneshot(uri).await?
                }
            };
            let socket = duplicate(&io).map(Arc::new);
            gauge.inc();
            Ok(Watched { io, socket, _open: Open { _place: place, gauge } })
        })
    }
}

/// An open connection's place under the bound, and its count in the gauge.
struct Open {
    _place: Held,
    gauge: IntGauge,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// An upstream connection, with a duplicate of its socket.
struct Watched {
    io: Stream,
    socket: Option<Arc<std::net::TcpStream>>,
    _open: Open,
}

/// The duplicate socket, as the pool keeps it with the connection's info.
#[derive(Clone)]
struct SocketWatch(Arc<std::net::TcpStream>);

impl Connection for Watched {
    fn connected(&self) -> Connected {
        // What the pool needs of the transport's own info, without its `HttpInfo` (the addresses,
        // which nothing here reads, and which hyper would put in every answer's extensions).
        let io = self.io.connected();
        let connected = Connected::new().proxy(io.is_proxied());
        let connected = if io.is_negotiated_h2() { connected.negotiated_h2() } else { connected };
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

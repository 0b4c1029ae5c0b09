//! Serving HTTP/1.1 and HTTP/2 on a listener, hardened the same way for the proxy, the admin port
//! and the webhook receiver:
//!
//! - at most `max_connections` open connections; further clients wait in the listen backlog;
//! - request headers must arrive within `header_read_timeout` (slowloris) and fit in
//!   `max_header_bytes` (else hyper answers 431 or closes the connection);
//! - request framing is hyper's, as RFC 9112 asks: `Content-Length` with `Transfer-Encoding`,
//!   conflicting `Content-Length`s and obs-folded headers are refused with 400;
//! - on shutdown no connection is accepted and open ones finish their requests (tracked by the
//!   caller's `TaskTracker`, which the app waits for within its grace period).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long a client may take to send its request headers, on every port.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request header block accepted, on every port.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Open connections on the admin and webhook ports (the proxy's is `proxy.max_connections`).
pub const SIDE_PORT_CONNECTIONS: usize = 1024;

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: SIDE_PORT_CONNECTIONS,
            max_header_bytes: MAX_HEADER_BYTES,
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// Accepts connections on `listener` until `shutdown` and serves each with the service
/// `service(peer)` builds, on a task of `tracker`. `name` names the port in logs.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    name: &'static str,
    limits: Limits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    service: F,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(limits.max_header_bytes.max(8192))
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: wait a little rather than spin.
                    tracing::warn!(port = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service(peer);
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(port = name, %peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
}

/// [`serve`] for an axum router; handlers may extract `ConnectInfo<SocketAddr>`.
pub async fn serve_router(
    listener: TcpListener,
    name: &'static str,
    limits: Limits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    router: axum::Router,
) {
    serve(listener, name, limits, shutdown, tracker, move |peer| {
        let router = router.clone();
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            let router = router.clone();
            async move { Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {})) }
        })
    })
    .await;
}

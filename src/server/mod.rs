//! Serving HTTP/1.1 and HTTP/2 on a listener, hardened the same way for the proxy, the admin port
//! and the webhook receiver:
//!
//! - at most `max_connections` open connections; further clients wait in the listen backlog (the
//!   proxy's limit follows reloads: lowered, it takes effect as connections close);
//! - request headers must arrive within `header_read_timeout` (slowloris) and fit in
//!   `max_header_bytes` (else hyper answers 431 or closes the connection);
//! - request framing is hyper's, as RFC 9112 asks: `Content-Length` with `Transfer-Encoding`,
//!   conflicting `Content-Length`s and obs-folded headers are refused with 400;
//! - an HTTP/2 client's control frames (SETTINGS, PING, PRIORITY) are budgeted ([`frames`]): a
//!   flood of them cuts the connection; h2 bounds rapid resets and CONTINUATION floods;
//! - on shutdown no connection is accepted and open ones finish their requests (tracked by the
//!   caller's `TaskTracker`, which the app waits for within its grace period).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

mod frames;

/// How long a client may take to send its request headers, on every port.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request header block accepted, on every port.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Open connections on the admin and webhook ports (the proxy's is `proxy.max_connections`).
pub const SIDE_PORT_CONNECTIONS: usize = 1024;

/// How many connections a listener may have open (or the proxy to its upstream); it can change
/// while they are.
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    /// The limit now in force.
    current: Mutex<usize>,
    /// Permits to drop rather than give back when a connection closes (a limit lowered while
    /// they were in use).
    debt: AtomicUsize,
}

impl ConnectionLimit {
    /// A limit of `max` connections.
    pub fn new(max: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(ConnectionLimit {
            permits: Arc::new(Semaphore::new(max)),
            current: Mutex::new(max),
            debt: AtomicUsize::new(0),
        })
    }

    /// Changes the limit: a higher one at once, a lower one as connections close.
    pub fn set(&self, max: usize) {
        let max = max.max(1);
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if max > *current {
            let mut more = max - *current;
            // First cancel what was still owed from a lowering.
            while more > 0 {
                let owed = self.debt.load(Ordering::Acquire);
                if owed == 0 {
                    break;
                }
                let paid = owed.min(more);
                if self.debt.compare_exchange(owed, owed - paid, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    more -= paid;
                }
            }
            self.permits.add_permits(more);
        } else if max < *current {
            let fewer = *current - max;
            let forgotten = self.permits.forget_permits(fewer);
            self.debt.fetch_add(fewer - forgotten, Ordering::AcqRel);
        }
        *current = max;
    }

    /// The limit now in force.
    pub fn max(&self) -> usize {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place under the limit, waiting in turn (first come, first served) for one to be free.
    pub async fn acquire(self: &Arc<Self>) -> Option<Held> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        Some(Held { permit: Some(permit), limit: self.clone() })
    }

    /// A place under the limit if one is free now (and nobody waits for one).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Held> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(Held { permit: Some(permit), limit: self.clone() })
    }
}

/// One place under a [`ConnectionLimit`], given back when dropped.
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    limit: Arc<ConnectionLimit>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let owed = &self.limit.debt;
        let pays = owed.fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1)).is_ok();
        if let (true, Some(permit)) = (pays, self.permit.take()) {
            permit.forget();
        }
    }
}

/// The limits of one listener.
#[derive(Clone)]
pub struct Limits {
    /// How many connections may be open.
    pub connections: Arc<ConnectionLimit>,
    /// The largest request header block accepted.
    pub max_header_bytes: usize,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
}

impl Limits {
    /// The limits of a port with at most `max_connections` open connections.
    pub fn with_connections(connections: Arc<ConnectionLimit>) -> Self {
        Limits { connections, max_header_bytes: MAX_HEADER_BYTES, header_read_timeout: HEADER_READ_TIMEOUT }
    }
}

impl Default for Limits {
    /// The admin and webhook ports'.
    fn default() -> Self {
        Limits::with_connections(ConnectionLimit::new(SIDE_PORT_CONNECTIONS))
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
            p = limits.connections.acquire() => match p { Some(p) => p, None => break },
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
            let conn = builder.serve_connection(TokioIo::new(frames::Guarded::new(stream)), service);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_limit_rises_at_once_and_falls_as_connections_close() {
        let limit = ConnectionLimit::new(2);
        let a = limit.acquire().await.unwrap();
        let b = limit.acquire().await.unwrap();
        assert_eq!(limit.permits.available_permits(), 0);
        limit.set(1);
        drop(a);
        assert_eq!(limit.permits.available_permits(), 0, "the closed connection's place is gone");
        drop(b);
        assert_eq!(limit.permits.available_permits(), 1);
        limit.set(3);
        assert_eq!(limit.permits.available_permits(), 3);
        let held: Vec<Held> = [limit.acquire().await.unwrap(), limit.acquire().await.unwrap()].into();
        limit.set(1); // one free permit forgotten at once, one owed
        limit.set(2); // the debt is cancelled, no permit added
        drop(held);
        assert_eq!((limit.permits.available_permits(), limit.max()), (2, 2));
    }
}

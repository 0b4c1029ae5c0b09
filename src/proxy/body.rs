//! Body wrappers that let bytes stream through unchanged while keeping a bounded copy for
//! inspection: [`RequestTap`] (and the `max_request_body` limit) on the way up, [`ResponseTap`]
//! on the way down, which calls its [`Finish`] exactly once: at the end of the body, on an error,
//! or when the client goes away first.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
use crate::chain;
use crate::classify::stream::Reader as StreamReader;

/// The error of the proxy's bodies: whatever failed underneath.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A whole body held in memory.
pub(super) fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|e| match e {}).boxed()
}

/// A body that broke off: the bytes that came, then `error` — after a pause, so that the head and
/// those bytes reach the client first (as when the answer streams) rather than a dropped
/// connection with nothing.
pub(super) fn broken(came: Bytes, error: BoxError) -> ProxyBody {
    Broken { came: Some(came), error: Some(error), paused: false }.boxed()
}

struct Broken {
    came: Option<Bytes>,
    error: Option<BoxError>,
    paused: bool,
}

impl Body for Broken {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(came) = self.came.take() {
            return Poll::Ready(Some(Ok(Frame::data(came))));
        }
        if !self.paused {
            // The server writes out what it holds when the body is not ready.
            self.paused = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.error.take().map(Err))
    }
}

/// The request body was larger than `proxy.max_request_body`.
#[derive(Debug)]
pub(super) struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body larger than proxy.max_request_body")
    }
}

impl std::error::Error for TooLarge {}

impl TooLarge {
    /// Whether `error`, or any error in its source chain, is a [`TooLarge`]: the upstream call
    /// failed because the request tap stopped an oversized body.
    pub(super) fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        chain::find::<TooLarge>(error).is_some()
    }
}

/// The client's request body broke off or was malformed (a bad chunk, the client gone mid-body):
/// the request fails because of the client, not of the upstream.
#[derive(Debug)]
pub(super) struct ClientBodyFailed(BoxError);

impl std::fmt::Display for ClientBodyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body could not be read: {}", self.0)
    }
}

impl std::error::Error for ClientBodyFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl ClientBodyFailed {
    /// Whether `error`, or any error in its source chain, is a [`ClientBodyFailed`].
    pub(super) fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        chain::find::<ClientBodyFailed>(error).is_some()
    }
}

/// What the request tap saw, shared with the handler.
#[derive(Default)]
pub(super) struct RequestSeen {
    /// The first bytes of the body (for `model_id` and `request_id`).
    pub head: Mutex<Vec<u8>>,
    /// The body ended and `head` holds all of it.
    whole: std::sync::atomic::AtomicBool,
}

impl RequestSeen {
    pub(super) fn head(&self) -> Vec<u8> {
        self.with_head(<[u8]>::to_vec)
    }

    /// What `read` makes of the first bytes of the body, read in place.
    pub(super) fn with_head<T>(&self, read: impl FnOnce(&[u8]) -> T) -> T {
        read(&self.head.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The whole body, when it ended within the bytes kept (to send the request again).
    pub(super) fn whole(&self) -> Option<Bytes> {
        self.whole.load(std::sync::atomic::Ordering::Acquire).then(|| Bytes::from(self.head()))
    }
}

/// Streams a request body, failing it past `max` bytes and copying its first `keep` bytes.
pub(super) struct RequestTap<B> {
    inner: B,
    seen: u64,
    max: u64,
    keep: usize,
    shared: Arc<RequestSeen>,
}

impl<B> RequestTap<B> {
    pub(super) fn new(inner: B, max: u64, keep: usize, shared: Arc<RequestSeen>) -> Self {
        RequestTap { inner, seen: 0, max, keep, shared }
    }
}

impl<B> Body for RequestTap<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.max {
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                    let mut head = this.shared.head.lock().unwrap_or_else(PoisonError::into_inner);
                    if head.len() < this.keep {
                        let take = (this.keep - head.len()).min(data.len());
                        head.extend_from_slice(&data[..take]);
                    }
                }
                // A body of known length may not be polled to its end once its last bytes came.
                if this.inner.is_end_stream() && this.seen <= this.keep as u64 {
                    this.shared.whole.store(true, std::sync::atomic::Ordering::Release);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(ClientBodyFailed(e.into()))))),
            Poll::Ready(None) => {
                if this.seen <= this.keep as u64 {
                    this.shared.whole.store(true, std::sync::atomic::Ordering::Release);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What is kept of a response body as it passes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Inspect {
    /// A copy of up to this many bytes (a JSON answer); a longer body is not kept.
    Copy(usize),
    /// An event stream (an LLM answer), read event by event as it passes; nothing is kept.
    Events,
    /// Nothing (an answer not worth classifying).
    Nothing,
}

/// What was seen of a response body.
pub(super) enum Seen {
    /// The copy, unless the body was longer than the limit (or not to be kept).
    Copy(Option<Vec<u8>>),
    /// The stream's reader, and when its first content arrived.
    Events { reader: Box<StreamReader>, first_content: Option<Instant> },
}

/// How a response body ended.
pub(super) enum End {
    /// The whole body went through.
    Complete(Seen),
    /// The upstream failed mid-body (reset, truncated).
    UpstreamError(Seen),
    /// The client stopped reading before the end.
    ClientGone,
}

/// Called once when a response body ends.
pub(super) trait Finish: Send + Sync + 'static {
    fn finish(self: Box<Self>, end: End);
}

/// What the tap does with the bytes it passes on.
enum Keeping {
    Copy { copy: Vec<u8>, keep: usize, overflow: bool },
    Events { reader: Box<StreamReader>, first_content: Option<Instant> },
}

impl Keeping {
    fn new(inspect: Inspect) -> Keeping {
        match inspect {
            Inspect::Copy(keep) => Keeping::Copy { copy: Vec::new(), keep, overflow: false },
            Inspect::Nothing => Keeping::Copy { copy: Vec::new(), keep: 0, overflow: true },
            Inspect::Events => Keeping::Events { reader: Box::default(), first_content: None },
        }
    }

    fn data(&mut self, data: &[u8]) {
        match self {
            Keeping::Copy { copy, keep, overflow } => {
                if !*overflow {
                    if copy.len() + data.len() <= *keep {
                        copy.extend_from_slice(data);
                    } else {
                        *overflow = true;
                        *copy = Vec::new();
                    }
                }
            }
            Keeping::Events { reader, first_content } => {
                if reader.feed(data) {
                    *first_content = Some(Instant::now());
                }
            }
        }
    }

    fn seen(&mut self) -> Seen {
        match std::mem::replace(self, Keeping::Copy { copy: Vec::new(), keep: 0, overflow: true }) {
            Keeping::Copy { copy, overflow, .. } => Seen::Copy((!overflow).then_some(copy)),
            Keeping::Events { reader, first_content } => Seen::Events { reader, first_content },
        }
    }
}

/// Streams a response body to the client, keeping what [`Inspect`] says as it passes.
pub(super) struct ResponseTap<B> {
    inner: B,
    keeping: Keeping,
    finish: Option<Box<dyn Finish>>,
}

impl<B> ResponseTap<B> {
    pub(super) fn new(inner: B, inspect: Inspect, finish: Box<dyn Finish>) -> Self {
        ResponseTap { inner, keeping: Keeping::new(inspect), finish: Some(finish) }
    }

    fn end(&mut self, end: impl FnOnce(Seen) -> End) {
        if let Some(f) = self.finish.take() {
            f.finish(end(self.keeping.seen()));
        }
    }
}

impl<B> Drop for ResponseTap<B> {
    fn drop(&mut self) {
        self.end(|_| End::ClientGone);
    }
}

impl<B> Body for ResponseTap<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.keeping.data(data);
                }
                if this.inner.is_end_stream() {
                    this.end(End::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.end(End::UpstreamError);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.end(End::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{Full, StreamBody};

    use super::*;

    struct Record(Arc<Mutex<Vec<String>>>);

    impl Finish for Record {
        fn finish(self: Box<Self>, end: End) {
            let what = match end {
                End::Complete(Seen::Copy(Some(b))) => format!("complete {}", String::from_utf8_lossy(&b)),
                End::Complete(Seen::Copy(None)) => "complete uninspected".to_owned(),
                End::Complete(Seen::Events { reader, first_content }) => {
                    format!("complete events {} first content {}", reader.has_content(), first_content.is_some())
                }
                End::UpstreamError(_) => "upstream error".to_owned(),
                End::ClientGone => "client gone".to_owned(),
            };
            self.0.lock().unwrap().push(what);
        }
    }

    type Frames = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

    fn chunks(parts: Vec<Result<&'static str, &'static str>>) -> Frames {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .into_iter()
            .map(|p| p.map(|s| Frame::data(Bytes::from_static(s.as_bytes()))).map_err(|e| e.into()))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn response_tap_passes_bytes_and_finishes_once() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let tap = ResponseTap::new(
            chunks(vec![Ok("{\"status\":"), Ok("\"success\"}")]),
            Inspect::Copy(100),
            Box::new(Record(log.clone())),
        );
        let bytes = tap.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"{\"status\":\"success\"}");
        assert_eq!(*log.lock().unwrap(), ["complete {\"status\":\"success\"}"]);

        let log = Arc::new(Mutex::new(Vec::new()));
        let tap = ResponseTap::new(
            chunks(vec![Ok("0123456789"), Ok("0123456789")]),
            Inspect::Copy(15),
            Box::new(Record(log.clone())),
        );
        assert_eq!(tap.collect().await.unwrap().to_bytes().len(), 20, "all bytes pass, over the copy limit too");
        assert_eq!(*log.lock().unwrap(), ["complete uninspected"]);

        let log = Arc::new(Mutex::new(Vec::new()));
        let tap =
            ResponseTap::new(chunks(vec![Ok("part"), Err("reset")]), Inspect::Copy(100), Box::new(Record(log.clone())));
        assert!(tap.collect().await.is_err());
        assert_eq!(*log.lock().unwrap(), ["upstream error"]);

        let log = Arc::new(Mutex::new(Vec::new()));
        drop(ResponseTap::new(Full::new(Bytes::from_static(b"x")), Inspect::Copy(100), Box::new(Record(log.clone()))));
        assert_eq!(*log.lock().unwrap(), ["client gone"]);

        // An event stream is read as it passes, not copied.
        let log = Arc::new(Mutex::new(Vec::new()));
        let events = ["data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n", "data: [DONE]\n\n"];
        let tap = ResponseTap::new(chunks(events.map(Ok).to_vec()), Inspect::Events, Box::new(Record(log.clone())));
        assert_eq!(tap.collect().await.unwrap().to_bytes(), events.concat().as_bytes(), "every byte passes as it came");
        assert_eq!(*log.lock().unwrap(), ["complete events true first content true"]);
    }

    #[tokio::test]
    async fn request_tap_keeps_a_head_and_enforces_the_limit() {
        let seen = Arc::new(RequestSeen::default());
        let tap = RequestTap::new(chunks(vec![Ok("{\"model_id\":"), Ok("\"flux\"}")]), 100, 12, seen.clone());
        assert_eq!(tap.collect().await.unwrap().to_bytes().len(), 19);
        assert_eq!(seen.head(), b"{\"model_id\":");
        let seen = Arc::new(RequestSeen::default());
        let tap = RequestTap::new(chunks(vec![Ok("0123456789"), Ok("0123456789")]), 15, 4, seen.clone());
        let err = tap.collect().await.unwrap_err();
        assert!(TooLarge::caused(&*err));
        assert!(!TooLarge::caused(&std::io::Error::other("reset")));
        // Found through a chain, as the HTTP client wraps it.
        #[derive(Debug)]
        struct Wrapper(BoxError);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&*self.0)
            }
        }
        assert!(TooLarge::caused(&Wrapper(err)));

        // A body that breaks off on the client's side is the client's failure, not too large.
        let seen = Arc::new(RequestSeen::default());
        let tap = RequestTap::new(chunks(vec![Ok("{\"a\":"), Err("bad chunk size")]), 100, 4, seen.clone());
        let err = tap.collect().await.unwrap_err();
        assert!(ClientBodyFailed::caused(&Wrapper(err)));
        assert!(seen.whole().is_none(), "a broken body is never sent again");
    }
}

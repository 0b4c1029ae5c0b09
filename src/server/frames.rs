//! A guard on the frames an HTTP/2 client sends, under hyper: h2 bounds rapid resets and
//! CONTINUATION floods itself, but answers every SETTINGS and PING and takes every PRIORITY, as
//! fast as a client can send them (millions a second on one connection, a core kept busy).
//! Clients send a handful of those in a connection's life; beyond [`CONTROL_BURST`] and then
//! [`CONTROL_PER_SECOND`] the connection is cut, as Envoy and grpc-go do.
//!
//! The guard reads the byte stream as it passes (the client preface, then each frame's 9-byte
//! header; payloads are skipped, not copied) and leaves HTTP/1.1 connections alone.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Control frames (SETTINGS and PING that are not acknowledgements, PRIORITY) a connection may
/// send at once.
pub(super) const CONTROL_BURST: f64 = 1000.0;
/// … and then each second.
pub(super) const CONTROL_PER_SECOND: f64 = 100.0;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

enum State {
    /// How much of the HTTP/2 preface has been seen.
    Preface(usize),
    /// In frames: the header bytes gathered, and the payload bytes left to skip.
    Frames { header: [u8; 9], have: usize, skip: usize },
    /// HTTP/1.1: nothing to guard.
    Off,
}

/// A connection whose HTTP/2 control frames are budgeted.
pub(super) struct Guarded<S> {
    inner: S,
    state: State,
    tokens: f64,
    refilled: Instant,
}

impl<S> Guarded<S> {
    pub(super) fn new(inner: S) -> Self {
        Guarded { inner, state: State::Preface(0), tokens: CONTROL_BURST, refilled: Instant::now() }
    }

    fn spend(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * CONTROL_PER_SECOND;
        self.tokens = (self.tokens + earned).min(CONTROL_BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "HTTP/2 control frame flood: more than {CONTROL_BURST} SETTINGS, PING or PRIORITY frames, then {CONTROL_PER_SECOND} a second"
                ),
            ));
        }
        self.tokens -= 1.0;
        Ok(())
    }

    /// Follows the frames in `bytes`, just read; an error cuts the connection.
    fn inspect(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return Ok(()),
                State::Preface(seen) => {
                    let n = (PREFACE.len() - *seen).min(bytes.len());
                    if bytes[..n] != PREFACE[*seen..*seen + n] {
                        self.state = State::Off;
                        return Ok(());
                    }
                    *seen += n;
                    bytes = &bytes[n..];
                    if *seen == PREFACE.len() {
                        self.state = State::Frames { header: [0; 9], have: 0, skip: 0 };
                    }
                }
                State::Frames { skip, .. } if *skip > 0 => {
                    let n = (*skip).min(bytes.len());
                    *skip -= n;
                    bytes = &bytes[n..];
                }
                State::Frames { header, have, skip } => {
                    let n = (9 - *have).min(bytes.len());
                    header[*have..*have + n].copy_from_slice(&bytes[..n]);
                    *have += n;
                    bytes = &bytes[n..];
                    if *have < 9 {
                        continue;
                    }
                    *have = 0;
                    *skip = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
                    let (kind, ack) = (header[3], header[4] & 0x1 != 0);
                    // PRIORITY, or SETTINGS / PING that are not acknowledgements.
                    if kind == 0x2 || (matches!(kind, 0x4 | 0x6) && !ack) {
                        self.spend()?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        Poll::Ready(this.inspect(&buf.filled()[before..]))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, len: usize) -> Vec<u8> {
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags, 0, 0, 0, 0];
        f.extend(std::iter::repeat_n(0u8, len));
        f
    }

    fn h2(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        for f in frames {
            out.extend(f);
        }
        out
    }

    #[test]
    fn http1_is_left_alone() {
        let mut g = Guarded::new(());
        let pings: Vec<u8> = (0..5000).flat_map(|_| frame(0x6, 0, 8)).collect();
        g.inspect(b"POST / HTTP/1.1\r\n").unwrap();
        g.inspect(&pings).unwrap();
        assert!(matches!(g.state, State::Off));
    }

    #[test]
    fn a_ping_flood_is_cut_after_the_burst_acks_and_data_are_not_counted() {
        let mut g = Guarded::new(());
        // Acknowledgements, HEADERS and DATA (with payloads that look like frames) cost nothing.
        let mut calm = vec![frame(0x4, 0x1, 0), frame(0x6, 0x1, 8), frame(0x1, 0x4, 40)];
        calm.extend((0..3000).map(|_| frame(0x0, 0, 9)));
        g.inspect(&h2(&calm)).unwrap();
        assert_eq!(g.tokens, CONTROL_BURST);
        // Split anywhere: the preface and the headers are followed across reads.
        let flood: Vec<u8> = (0..CONTROL_BURST as usize).flat_map(|_| frame(0x6, 0, 8)).collect();
        for chunk in flood.chunks(7) {
            g.inspect(chunk).unwrap();
        }
        let err = g.inspect(&frame(0x6, 0, 8)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert!(err.to_string().contains("control frame flood"), "{err}");
    }

    #[test]
    fn settings_and_priority_count_and_the_budget_refills() {
        let mut g = Guarded::new(());
        g.inspect(PREFACE).unwrap();
        for _ in 0..CONTROL_BURST as usize / 2 {
            g.inspect(&frame(0x4, 0, 6)).unwrap();
            g.inspect(&frame(0x2, 0, 5)).unwrap();
        }
        assert!(g.tokens < 1.0);
        g.refilled -= std::time::Duration::from_secs(1);
        for _ in 0..CONTROL_PER_SECOND as usize {
            g.inspect(&frame(0x6, 0, 8)).unwrap();
        }
        assert!(g.inspect(&frame(0x6, 0, 8)).is_err(), "a second's worth, no more");
    }
}

//! One connection: TLS if configured, hyper's HTTP/1.1 and HTTP/2, and a watchdog that closes
//! the connection when its header-read or idle deadline passes or a newcomer needs its place.
//!
//! The deadlines are kept here rather than with hyper's `header_read_timeout`: hyper's timer
//! also runs while a kept-alive connection waits for its next request (so it would cut every
//! keep-alive at the header timeout), and it covers neither the TLS handshake nor the wait for
//! the first bytes of a connection whose protocol is not known yet.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::Limits;
use super::registry::{InFlight, Slot, Track};

pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    slot: Slot,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    stopping: watch::Receiver<bool>,
) {
    let track = slot.track.clone();
    match tls {
        None => serve(TrackedIo::new(stream, &track), peer, app, limits, stopping).await,
        Some(acceptor) => {
            let handshake = tokio::select! {
                accepted = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)) => accepted,
                () = track.evicted.notified() => return,
            };
            match handshake {
                Ok(Ok(stream)) => {
                    serve(TrackedIo::new(stream, &track), peer, app, limits, stopping).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
    drop(slot);
}

async fn serve<I>(
    io: TrackedIo<I>,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let track = io.track.clone();
    let service = hyper::service::service_fn({
        let track = track.clone();
        move |mut request: hyper::Request<Incoming>| {
            let in_flight = track.begin();
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let Ok(response) = app.oneshot(request).await;
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        body,
                        _in_flight: in_flight,
                    })
                }))
            }
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut closing = *stopping.borrow();
    if closing {
        connection.as_mut().graceful_shutdown();
    }
    let check = tokio::time::sleep_until(next_check(&track, &limits));
    tokio::pin!(check);
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended");
                }
                return;
            }
            () = check.as_mut() => {
                // Nothing in flight since the deadline passed: close (dropping the connection
                // closes the socket).
                if track.deadline(&limits).is_some_and(|d| d <= tokio::time::Instant::now()) {
                    tracing::debug!(%peer, "connection closed: header-read or idle timeout");
                    return;
                }
                check.as_mut().reset(next_check(&track, &limits));
            }
            () = track.evicted.notified() => {
                if track.in_flight() == 0 {
                    tracing::debug!(%peer, "idle connection closed to admit a new one");
                    return;
                }
                connection.as_mut().graceful_shutdown();
            }
            _ = stopping.changed(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When the watchdog next looks at the connection: at its deadline, and never later than the
/// shorter timeout from now. A request's first bytes or its end can only set a deadline at
/// least that far away (a head begun now must be read by now plus the header-read timeout,
/// a connection idle from now may stay so for the idle timeout), so the watchdog needs no
/// wake-up from the request path: requests cost it nothing, and a busy connection one timer
/// per timeout.
fn next_check(track: &Track, limits: &Limits) -> tokio::time::Instant {
    let latest = tokio::time::Instant::now() + limits.header_read_timeout.min(limits.idle_timeout);
    track
        .deadline(limits)
        .map_or(latest, |deadline| deadline.min(latest))
}

/// A response body that keeps its request in flight until it is sent or dropped.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's byte stream, telling its [`Track`] when the client sends.
struct TrackedIo<I> {
    inner: I,
    track: Arc<Track>,
}

impl<I> TrackedIo<I> {
    fn new(inner: I, track: &Arc<Track>) -> Self {
        Self {
            inner,
            track: track.clone(),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for TrackedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.track.received();
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TrackedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

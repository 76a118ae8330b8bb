//! The accept loop of the public and admin listeners: HTTP/1.1 and HTTP/2 (optionally over
//! TLS) with a header-read timeout, an idle (keep-alive) timeout and a cap on open connections,
//! so idle or slow clients cannot hold the host's sockets and file descriptors.
//!
//! At the cap, a new connection takes the place of the connection that has been idle longest
//! (no request in flight), as nginx reuses idle keep-alive connections; only when every
//! connection has a request in flight is the newcomer refused with a 503. Idle clients are
//! thus dropped first and never lock out a client with a request to make.

mod connection;
mod registry;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use registry::{Admission, Registry};

/// Descriptors kept free for everything else the process opens (database and Redis
/// connections, component files, the admin listener).
const RESERVED_FDS: u64 = 256;

/// How long clients have, per connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accepting a connection, or from the first byte of a later request, until its
    /// headers are complete (the TLS handshake included).
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight after a response.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// Raises the soft limit on open files to the hard limit, so the connection cap rather than
/// the operating system's default (often 1024) bounds the host. Returns the limit in force.
#[cfg(unix)]
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given. A refusal (an unlimited hard
        // limit above the kernel's nr_open) leaves the soft limit as it was.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

#[cfg(not(unix))]
pub fn raise_fd_limit() -> std::io::Result<u64> {
    Ok(u64::MAX)
}

/// The connection cap in force: the configured one, lowered if the open-file limit could not
/// hold it, so the host refuses connections itself instead of failing with "Too many open
/// files" on everything else.
pub fn connection_cap(configured: usize, fd_limit: u64) -> usize {
    let room = match fd_limit {
        0..=512 => fd_limit / 2,
        _ => fd_limit - RESERVED_FDS,
    };
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let registry = Registry::new(limits.max_connections);
    let (stop, stopping) = watch::channel(false);
    // Refusals that are still writing their 503: bounded, past it a refused socket is just closed.
    let refusing = Arc::new(Semaphore::new(64));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        match registry.admit() {
            Admission::Admitted(slot) => {
                tokio::spawn(connection::run(
                    stream,
                    peer,
                    app.clone(),
                    slot,
                    limits,
                    tls.clone(),
                    stopping.clone(),
                ));
            }
            Admission::Full => refuse(stream, peer, tls.is_some(), &refusing),
        }
    }
    let _ = stop.send(true);
    registry.drained().await;
    Ok(())
}

/// Accept errors are about one connection or a passing shortage (of descriptors, of memory):
/// the loop goes on, after a pause when the shortage would fail the next accept too.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 102\r\n\r\n\
{\"type\":\"about:blank\",\"title\":\"Too many connections\",\"status\":503,\"detail\":\"every connection is busy\"}";

/// A connection over the cap while every other has a request in flight: answered 503 (plain
/// HTTP only) and closed, without holding the accept loop.
fn refuse(stream: TcpStream, peer: SocketAddr, tls: bool, refusing: &Arc<Semaphore>) {
    tracing::debug!(%peer, "connection refused: every connection is busy");
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    if tls {
        return;
    }
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        // The answer waits for the request's head: an HTTP client may treat an answer that
        // comes before its request as a broken connection. Reading what the client sent
        // before closing keeps the kernel from answering it with a reset that would discard
        // the 503.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await? {
                    0 => break,
                    n => head.extend_from_slice(&buffer[..n]),
                }
            }
            stream.write_all(BUSY).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_rest_of_the_process() {
        assert_eq!(connection_cap(10_000, 1_048_576), 10_000);
        assert_eq!(connection_cap(10_000, 4096), 4096 - RESERVED_FDS as usize);
        assert_eq!(connection_cap(10_000, 256), 128);
        assert_eq!(connection_cap(50, 1024), 50);
    }

    #[test]
    fn the_busy_answer_declares_its_length() {
        let (head, body) = std::str::from_utf8(BUSY)
            .ok()
            .and_then(|text| text.split_once("\r\n\r\n"))
            .unwrap_or_default();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}

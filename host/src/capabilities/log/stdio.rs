//! A component's stdout and stderr, as lines of the host's log tagged with the component and
//! the request id: `print()` in a Python plugin or `console.log` in a JavaScript one ends up
//! where the `log` capability's lines do, under the same bounds (4 KiB a line, 64 KiB a request
//! for both streams together, control characters escaped). Needs no grant: it writes nowhere
//! else.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::{MAX_MESSAGE, MAX_PER_REQUEST, one_line};

/// Whose output it is: the component, and the request its instance serves now (an instance kept
/// for reuse serves several; [`Stdio::serve`] moves it on).
#[derive(Clone)]
pub struct Stdio {
    request: Arc<Mutex<Request>>,
}

struct Request {
    component: Arc<str>,
    id: Arc<str>,
    /// The partial last line of stdout and of stderr. Kept here, not in a stream: a guest may
    /// open a new stream for every write (Rust's `eprintln!` does, once per fragment).
    pending: [Vec<u8>; 2],
    /// Bytes written to the log for this request so far, both streams together.
    written: usize,
    /// Whether the drop of further output was said.
    said_dropped: bool,
}

impl Stdio {
    pub fn new(component: Arc<str>, request_id: Arc<str>) -> Self {
        Self {
            request: Arc::new(Mutex::new(Request {
                component,
                id: request_id,
                pending: Default::default(),
                written: 0,
                said_dropped: false,
            })),
        }
    }

    /// Tags what follows with `request_id`, with a fresh byte budget; what the last request
    /// left unfinished is written under its id first.
    pub fn serve(&self, request_id: Arc<str>) {
        let mut request = self.lock();
        request.drain();
        request.id = request_id;
        request.written = 0;
        request.said_dropped = false;
    }

    /// The guest's stdout (`info` lines) or stderr (`warn` lines).
    pub fn stream(&self, stderr: bool) -> Output {
        Output {
            stdio: self.clone(),
            stderr,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Request> {
        self.request.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Request {
    /// Writes every whole line of `bytes`, keeping a partial last one (or cutting one that
    /// outgrew a log line).
    fn take(&mut self, stderr: bool, bytes: &[u8]) {
        let stream = usize::from(stderr);
        self.pending[stream].extend_from_slice(bytes);
        while let Some(end) = self.pending[stream].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending[stream].drain(..=end).collect();
            self.emit(stderr, &line[..end]);
        }
        if self.pending[stream].len() > MAX_MESSAGE {
            self.flush(stderr);
        }
    }

    fn flush(&mut self, stderr: bool) {
        let line = std::mem::take(&mut self.pending[usize::from(stderr)]);
        if !line.is_empty() {
            self.emit(stderr, &line);
        }
    }

    fn drain(&mut self) {
        self.flush(false);
        self.flush(true);
    }

    fn emit(&mut self, stderr: bool, line: &[u8]) {
        let (component, request_id) = (self.component.clone(), self.id.clone());
        let (component, request_id) = (&*component, &*request_id);
        if self.written >= MAX_PER_REQUEST {
            if !self.said_dropped {
                self.said_dropped = true;
                tracing::warn!(
                    component,
                    request_id,
                    "the component wrote {MAX_PER_REQUEST} bytes of output in this request; the rest is dropped"
                );
            }
            return;
        }
        let text = String::from_utf8_lossy(line);
        let message = one_line(&text, MAX_MESSAGE.min(MAX_PER_REQUEST - self.written));
        self.written += message.len();
        if stderr {
            tracing::warn!(component, request_id, stream = "stderr", "{message}");
        } else {
            tracing::info!(component, request_id, stream = "stdout", "{message}");
        }
    }
}

/// A partial last line is written when the instance ends.
impl Drop for Request {
    fn drop(&mut self) {
        self.drain();
    }
}

/// One of the streams, as the guest opened it.
pub struct Output {
    stdio: Stdio,
    stderr: bool,
}

impl Output {
    fn take(&mut self, bytes: &[u8]) {
        self.stdio.lock().take(self.stderr, bytes);
    }
}

#[async_trait::async_trait]
impl OutputStream for Output {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    /// A partial line waits for its end (or the instance's): a flush after every fragment
    /// (Rust's `eprintln!`) must not split a line.
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_MESSAGE)
    }
}

#[async_trait::async_trait]
impl Pollable for Output {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Output {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().take(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// The stream handed to the WASI context: each `get-stdout` opens a new [`Output`].
pub struct GuestStream {
    pub stdio: Stdio,
    pub stderr: bool,
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.stdio.stream(self.stderr))
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.stdio.stream(self.stderr))
    }
}

//! The `log` capability: lines in the host's log, tagged with the component and request id.
//! What one request can write is bounded twice: each message is cut at 4 KiB, and a request's
//! messages at 64 KiB in all. Control characters are escaped, so a message is one log line and
//! cannot pass for a line of the host's own.

pub mod stdio;

use std::fmt::Write;
use std::sync::Arc;

use crate::bindings::log::{Host, Level};

/// Longest message kept; the rest is cut and the cut is said.
const MAX_MESSAGE: usize = 4096;
/// Most bytes of messages one request writes; later messages are dropped, and that is said once.
const MAX_PER_REQUEST: usize = 64 * 1024;

pub struct LogCtx {
    component: Arc<str>,
    request_id: Arc<str>,
    /// Bytes this request has logged so far.
    written: usize,
    /// Messages dropped since the request reached `MAX_PER_REQUEST`.
    dropped: u64,
}

impl LogCtx {
    pub fn new(component: Arc<str>, request_id: Arc<str>) -> Self {
        Self {
            component,
            request_id,
            written: 0,
            dropped: 0,
        }
    }
}

/// The message as one line of at most `max` bytes (control characters escaped), with a marker
/// saying how many bytes of the original were cut.
fn one_line(message: &str, max: usize) -> String {
    let mut line = String::with_capacity(message.len().min(max));
    for (at, c) in message.char_indices() {
        let before = line.len();
        if c.is_control() {
            let _ = write!(line, "{}", c.escape_default());
        } else {
            line.push(c);
        }
        if line.len() > max {
            line.truncate(before);
            let _ = write!(line, "… [cut: {} more bytes]", message.len() - at);
            break;
        }
    }
    line
}

impl Host for LogCtx {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let (component, request_id) = (&*self.component, &*self.request_id);
        if self.written >= MAX_PER_REQUEST {
            self.dropped += 1;
            if self.dropped == 1 {
                tracing::warn!(
                    component,
                    request_id,
                    "the component logged {MAX_PER_REQUEST} bytes in this request; its further messages are dropped"
                );
            }
            return Ok(());
        }
        let message = one_line(&message, MAX_MESSAGE.min(MAX_PER_REQUEST - self.written));
        self.written += message.len();
        match level {
            Level::Trace => tracing::trace!(component, request_id, "{message}"),
            Level::Debug => tracing::debug!(component, request_id, "{message}"),
            Level::Info => tracing::info!(component, request_id, "{message}"),
            Level::Warn => tracing::warn!(component, request_id, "{message}"),
            Level::Error => tracing::error!(component, request_id, "{message}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn long_messages_are_cut_with_a_marker_on_a_char_boundary() {
        let line = one_line(&"é".repeat(3000), 4096);
        assert!(line.starts_with("éé"));
        assert!(
            line.ends_with("… [cut: 1904 more bytes]"),
            "{}",
            &line[4000..]
        );
        assert_eq!(one_line("short", 4096), "short");
    }

    #[test]
    fn control_characters_cannot_start_a_new_log_line() {
        assert_eq!(
            one_line("ok\n2026-01-01 INFO forged\r\x1b[31m", 4096),
            "ok\\n2026-01-01 INFO forged\\r\\u{1b}[31m"
        );
    }
}

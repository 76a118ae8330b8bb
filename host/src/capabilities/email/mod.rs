//! The `email` capability: a component queues plain-text messages during a request, and the
//! host sends them only once the request has succeeded (answered below 500, transaction
//! committed), from the operator's address, in the background with retries.
//!
//! Everything a component hands over is checked at `send`, so a message that reaches a
//! [`Sender`] is one recipient, a one-line subject and a bounded text: no header can be
//! smuggled in through a line break. The text may carry single-use tokens (invitation links),
//! so it is never logged — not by the logging backend, not in errors.
//!
//! Backends: [`smtp`] (lettre over tokio, TLS by rustls) when `smtp_url` is set, otherwise
//! [`logged`], which logs recipient and subject and drops the message.

mod host;
pub mod logged;
pub mod smtp;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lettre::Address;
use lettre::message::Mailbox;
use secrecy::SecretString;
use tokio::sync::Semaphore;

use crate::bindings::email::Message;

/// Most messages one request may queue.
pub const MAX_PER_REQUEST: usize = 10;
/// Longest subject, in characters.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// Longest text, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Longest recipient address (RFC 5321's path limit, less the angle brackets).
const MAX_ADDRESS_BYTES: usize = 254;
/// Waits between attempts after a transient failure: a server restarting or rate-limiting
/// usually recovers within seconds, and a message later than a minute is rarely still useful
/// to someone waiting for a sign-in link.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(25),
];
/// Most batches being delivered at once, so a burst of requests cannot open a connection
/// storm against the SMTP server; the rest wait their turn.
const MAX_CONCURRENT_DELIVERIES: usize = 16;

/// A checked message, ready to send. Deliberately not `Debug`: the text must not reach a log.
pub struct Outgoing {
    pub to: Address,
    pub subject: String,
    pub text: String,
}

/// Where a message comes from, for the log lines about it.
#[derive(Clone)]
pub struct Origin {
    pub component: Arc<str>,
    pub request_id: Arc<str>,
}

/// Why a message could not be handed over.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth another try: the server is unreachable, timed out or answered 4xx.
    #[error("{0}")]
    Transient(String),
    /// Another try would fail the same way: the server refused the message (5xx), or the
    /// message or credentials are wrong.
    #[error("{0}")]
    Permanent(String),
}

/// A way to hand messages over, chosen by the config.
#[async_trait::async_trait]
pub trait Sender: Send + Sync {
    async fn send(&self, message: &Outgoing, origin: &Origin) -> Result<(), SendError>;
}

/// Sends what successful requests queued; shared by every component.
pub struct Mailer {
    sender: Arc<dyn Sender>,
    delays: Arc<[Duration]>,
    deliveries: Arc<Semaphore>,
}

impl Mailer {
    pub fn new(sender: Arc<dyn Sender>) -> Self {
        Self {
            sender,
            delays: RETRY_DELAYS.into(),
            deliveries: Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES)),
        }
    }

    /// From the host settings `smtp_url` (absent: log and drop) and `smtp_from`.
    pub fn from_settings(url: Option<&SecretString>, from: &str) -> anyhow::Result<Self> {
        let from = parse_from(from)?;
        let sender: Arc<dyn Sender> = match url {
            Some(url) => Arc::new(smtp::SmtpSender::new(url, from)?),
            None => Arc::new(logged::LoggedSender),
        };
        Ok(Self::new(sender))
    }

    /// Waits between attempts; tests shorten them.
    pub fn with_retry_delays(mut self, delays: &[Duration]) -> Self {
        self.delays = delays.into();
        self
    }

    /// Sends `queue` in the background. Returns at once: the client's response does not wait
    /// for the SMTP server, and a failure is the operator's to see in the log.
    pub fn dispatch(&self, queue: Queue) {
        if queue.messages.is_empty() {
            return;
        }
        let sender = self.sender.clone();
        let delays = self.delays.clone();
        let deliveries = self.deliveries.clone();
        tokio::spawn(async move {
            let Ok(_turn) = deliveries.acquire_owned().await else {
                return;
            };
            for message in &queue.messages {
                deliver(sender.as_ref(), message, &queue.origin, &delays).await;
            }
        });
    }
}

/// Registers a sender's email counters at zero, so a scrape shows them before its first email.
pub fn register_metrics(component: &str) {
    for outcome in ["sent", "failed"] {
        metrics::counter!("truevalue_emails_total", "component" => component.to_string(), "outcome" => outcome).increment(0);
    }
}

/// One message, tried again after each transient failure until the delays run out.
async fn deliver(sender: &dyn Sender, message: &Outgoing, origin: &Origin, delays: &[Duration]) {
    let (component, request_id) = (&*origin.component, &*origin.request_id);
    let domain = message.to.domain();
    let mut attempt = 0;
    loop {
        let error = match sender.send(message, origin).await {
            Ok(()) => {
                metrics::counter!("truevalue_emails_total", "component" => component.to_string(), "outcome" => "sent")
                    .increment(1);
                tracing::debug!(
                    component,
                    request_id,
                    to_domain = domain,
                    "email handed over"
                );
                return;
            }
            Err(error) => error,
        };
        match (&error, delays.get(attempt)) {
            (SendError::Transient(_), Some(delay)) => {
                attempt += 1;
                tracing::warn!(
                    component,
                    request_id,
                    to_domain = domain,
                    attempt,
                    "sending an email failed, trying again in {delay:?}: {error}"
                );
                tokio::time::sleep(*delay).await;
            }
            _ => {
                metrics::counter!("truevalue_emails_total", "component" => component.to_string(), "outcome" => "failed")
                    .increment(1);
                tracing::error!(
                    component,
                    request_id,
                    to_domain = domain,
                    attempts = attempt + 1,
                    "an email could not be sent and is dropped: {error}"
                );
                return;
            }
        }
    }
}

/// `smtp_from`: a mailbox like `TrueValue <no-reply@truevalue.local>`.
pub fn parse_from(from: &str) -> anyhow::Result<Mailbox> {
    from.parse::<Mailbox>().with_context(|| {
        format!(
            "smtp_from (TRUEVALUE_SMTP_FROM): {from:?} is not an address like \"TrueValue <no-reply@example.com>\""
        )
    })
}

/// The messages one request queued, to send if it succeeds.
pub struct Queue {
    pub origin: Origin,
    pub messages: Vec<Outgoing>,
}

/// The state of one request: what it queued.
pub struct EmailCtx {
    origin: Origin,
    queued: Vec<Outgoing>,
    /// The request tried to queue more than [`MAX_PER_REQUEST`]: it sends nothing at all.
    overflowed: bool,
}

impl EmailCtx {
    pub fn new(component: Arc<str>, request_id: Arc<str>) -> Self {
        Self {
            origin: Origin {
                component,
                request_id,
            },
            queued: Vec::new(),
            overflowed: false,
        }
    }

    /// Checks `message` and queues it, or says what is wrong.
    pub fn queue(&mut self, message: Message) -> Result<(), String> {
        if self.overflowed || self.queued.len() >= MAX_PER_REQUEST {
            if !self.overflowed {
                tracing::warn!(
                    component = %self.origin.component,
                    request_id = %self.origin.request_id,
                    "the component tried to send more than {MAX_PER_REQUEST} emails in one request; none of them will be sent"
                );
            }
            self.overflowed = true;
            self.queued.clear();
            return Err(format!(
                "a request sends at most {MAX_PER_REQUEST} emails; this one asked for more, so it sends none"
            ));
        }
        let message = check(message)?;
        self.queued.push(message);
        Ok(())
    }

    /// What the request queued, leaving nothing behind; the caller sends it only if the
    /// request succeeded.
    pub fn take(&mut self) -> Queue {
        Queue {
            origin: self.origin.clone(),
            messages: std::mem::take(&mut self.queued),
        }
    }
}

/// The message as it may be sent, or a sentence saying what is wrong with it.
pub fn check(message: Message) -> Result<Outgoing, String> {
    let Message { to, subject, text } = message;
    let to = recipient(&to).ok_or_else(|| {
        "`to` must be one email address like ada@example.com (no name, spaces, commas or line breaks)"
            .to_string()
    })?;
    if subject.trim().is_empty() {
        return Err("`subject` must not be empty".into());
    }
    if subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(format!(
            "`subject` is longer than {MAX_SUBJECT_CHARS} characters"
        ));
    }
    if subject.chars().any(line_break_or_control) {
        return Err("`subject` must be one line, without control characters".into());
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "`text` is longer than {} KiB",
            MAX_TEXT_BYTES / 1024
        ));
    }
    Ok(Outgoing { to, subject, text })
}

fn line_break_or_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// A bare, plausible ASCII address (`local@domain.tld`). Stricter than RFC 5322 on purpose:
/// no quoted local parts, comments, display names or address lists, so one string can only
/// ever name one recipient.
fn recipient(to: &str) -> Option<Address> {
    let plain = !to.is_empty()
        && to.len() <= MAX_ADDRESS_BYTES
        && to.is_ascii()
        && !to.chars().any(|c| {
            c.is_ascii_control() || c.is_ascii_whitespace() || "\"(),:;<>[\\]".contains(c)
        });
    let (local, domain) = to.split_once('@')?;
    let plausible = plain
        && !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && plausible_domain(domain);
    if !plausible {
        return None;
    }
    to.parse::<Address>().ok()
}

/// Dot-separated labels of letters, digits and inner hyphens, at least two of them.
fn plausible_domain(domain: &str) -> bool {
    domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests;

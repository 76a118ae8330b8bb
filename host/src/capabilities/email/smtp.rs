//! The SMTP backend: lettre's tokio transport (TLS by rustls with the webpki roots), built
//! from `smtp_url`, e.g. `smtp://127.0.0.1:2525` (plain), `smtp://host:587?tls=required`
//! (STARTTLS, refused without it) or `smtps://user:pass@host` (TLS from the first byte).

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use super::{Origin, Outgoing, SendError, Sender};

/// How long one SMTP exchange may take before it counts as a transient failure.
const TIMEOUT: Duration = Duration::from_secs(15);

pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// Checks `smtp_url` without connecting (and without a runtime), for the config check.
pub fn check_url(url: &SecretString) -> anyhow::Result<()> {
    builder(url).map(|_| ())
}

fn builder(
    url: &SecretString,
) -> anyhow::Result<lettre::transport::smtp::AsyncSmtpTransportBuilder> {
    // lettre's message names what is wrong, never the URL itself (which may hold a password).
    AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret()).map_err(|e| {
        anyhow::anyhow!(
            "smtp_url (TRUEVALUE_SMTP_URL) is not an SMTP URL like smtp://host:587?tls=required \
             or smtps://user:password@host: {e}"
        )
    })
}

impl SmtpSender {
    /// Needs a tokio runtime: the connection pool runs a task of its own.
    pub fn new(url: &SecretString, from: Mailbox) -> anyhow::Result<Self> {
        let transport = builder(url)?.timeout(Some(TIMEOUT)).build();
        Ok(Self { transport, from })
    }

    fn build(&self, message: &Outgoing) -> Result<Message, SendError> {
        // The Message-ID names the sender's domain, not this machine's name.
        let id = format!(
            "<{}@{}>",
            uuid::Uuid::now_v7().simple(),
            self.from.email.domain()
        );
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, message.to.clone()))
            .subject(message.subject.as_str())
            .message_id(Some(id))
            .header(ContentType::TEXT_PLAIN)
            .body(message.text.clone())
            .map_err(|e| SendError::Permanent(format!("building the message: {e}")))
    }
}

#[async_trait::async_trait]
impl Sender for SmtpSender {
    async fn send(&self, message: &Outgoing, _origin: &Origin) -> Result<(), SendError> {
        let email = self.build(message)?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }
}

/// 5xx answers and client-side errors will not improve; anything else (4xx, connection,
/// network, timeout, TLS handshake) may.
fn classify(error: SmtpError) -> SendError {
    let text = describe(&error);
    if error.is_permanent() || error.is_client() {
        SendError::Permanent(text)
    } else {
        SendError::Transient(text)
    }
}

/// The error with its causes, one sentence.
fn describe(error: &SmtpError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

//! The backend without an SMTP server (`smtp_url` unset): each message is logged by recipient
//! and subject — never its text, which may hold a single-use link — and dropped.

use super::{Origin, Outgoing, SendError, Sender};

pub struct LoggedSender;

#[async_trait::async_trait]
impl Sender for LoggedSender {
    async fn send(&self, message: &Outgoing, origin: &Origin) -> Result<(), SendError> {
        // The subject was checked to be one line without control characters.
        tracing::info!(
            component = %origin.component,
            request_id = %origin.request_id,
            to = %message.to,
            subject = %message.subject,
            "no SMTP server is configured (smtp_url): an email would have been sent, and is dropped"
        );
        Ok(())
    }
}

//! Plain-text email through the host (the `email` capability; grant it with
//! `capabilities = ["email"]` in the component's policy).
//!
//! [`send`] checks the message at once and queues it; the host sends it only after the request
//! succeeds — the handler answers below 500 and its database transaction commits. So send the
//! email in the same handler that makes the change it announces: if the handler fails later,
//! the change and the email are both dropped. At most 10 messages per request. The host never
//! logs the text, so it may carry a single-use link. See `wit/email.wit`.
//!
//! ```no_run
//! # use truevalue_sdk::prelude::*;
//! # fn invite(email: &str, token: &str) -> Result<(), Problem> {
//! // … the invitation row is inserted in this request's transaction …
//! let link = format!("https://app.example.com/invites/accept?token={token}");
//! truevalue_sdk::email::send(
//!     email,
//!     "You are invited to Acme Corp",
//!     &format!("Accept the invitation within 7 days:\n\n{link}\n"),
//! )?;
//! # Ok(()) }
//! ```

use crate::Problem;
use crate::bindings::truevalue::platform::email as raw;

/// Queues one email to `to` (a bare address like `ada@example.com`), sent once the request
/// succeeds. A malformed recipient, a subject that is empty, longer than 200 characters or more
/// than one line, a text over 64 KiB, or an 11th message in one request is a 422 `validation`
/// problem saying what is wrong (after an 11th, the request sends none of its messages).
pub fn send(to: &str, subject: &str, text: &str) -> Result<(), Problem> {
    raw::send(&raw::Message {
        to: to.into(),
        subject: subject.into(),
        text: text.into(),
    })
    .map_err(Problem::unprocessable)
}

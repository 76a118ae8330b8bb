//! What this component tells the rest of the platform: an event on `auth.user.events` for every
//! account change and every sign-in, succeeded or failed (the `events` capability).
//!
//! An event is queued when its change is made and published when the request's transaction
//! commits, so it exists exactly when the change does. The host adds who caused it (`actorid`,
//! `requestid`, `clientip`, `useragent`). The subject is always the account's id (none for an
//! address without an account); the data never holds a password, a code or a token.
//!
//! | type | when | data |
//! | --- | --- | --- |
//! | `user.registered` | an account is created | `user_id`, `email` |
//! | `user.logged_in` | a login succeeds (in the organization it names, if any) | `user_id`, `session_id`, `org_id`, `mfa` (`totp`, `recovery_code` or null) |
//! | `user.login_failed` | a login is refused | `reason` (`wrong_password`, `unknown_email`, `mfa_invalid`, `locked`, `account_disabled`), `email_key`, and `user_id`, `email` when an account has the address |
//! | `user.reauth_failed` | a password or code is wrong before a password change or turning MFA off | as `user.login_failed`, and `action` (`password.change`, `mfa.disable`) |
//! | `user.locked` | a failure locks the address | `email_key`, `failed_attempts`, `locked_until`, `action`, and `user_id`, `email` |
//! | `user.password_changed` | the password is changed (other sessions end) | `user_id`, `sessions_revoked` |
//! | `session.revoked` | a session ends | `user_id`, `session_id`, `reason` (`logout`, `revoked`, `refresh_token_reused`) |
//! | `session.org_switched` | a session switches organization (that organization's event) | `user_id`, `session_id`, `org_id` |
//! | `mfa.setup_started`, `mfa.enabled`, `mfa.disabled` | TOTP set up, turned on, off | `user_id`, `method`; `recovery_codes` (how many), `confirmed_with` (`totp` or `recovery_code`) |
//!
//! `email_key` is the keyed hash under which the lock counts an address's failures: it tells
//! attempts on one address apart without storing an address that has no account.

use serde_json::Value;
use truevalue_sdk::prelude::*;

/// The one topic this component publishes to (listed under `events` in its policy).
pub const TOPIC: &str = "auth.user.events";

/// Queues an event about a change this request made, for the organization `org_id` names (else
/// the request's). A refused event fails the request with a 5xx, so that its change rolls back
/// with it: nothing changes without its event.
pub fn publish(
    org_id: Option<&str>,
    kind: &str,
    subject: &str,
    data: &Value,
) -> Result<(), Problem> {
    truevalue_sdk::events::publish_for(org_id, TOPIC, kind, subject, data)
        .map(|_| ())
        .map_err(|problem| {
            log::error(&format!("could not publish {kind}: {}", problem.detail));
            Problem::internal(format!("could not publish {kind}: {}", problem.detail))
        })
}

/// Queues an event about a refused attempt. A refused event is logged and the request goes on:
/// the attempt must still count against the lock.
pub fn publish_refusal(kind: &str, subject: &str, data: &Value) {
    if let Err(problem) = truevalue_sdk::events::publish(TOPIC, kind, subject, data) {
        log::error(&format!("could not publish {kind}: {}", problem.detail));
    }
}

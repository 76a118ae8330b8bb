//! What this component tells the rest of the platform (the `events` capability): an event for
//! every change to an organization, its members, invites and teams, and for every read of its
//! member list. Organizations and teams go on `org.organization.events`; members, invites and
//! team memberships on `org.member.events`.
//!
//! An event is queued when its change is made and published when the request's transaction
//! commits, so it exists exactly when the change does. Every event names its organization
//! (`orgid`, the Kafka key) explicitly — a request creating an organization or accepting an
//! invite does not act for it yet — and the host adds who caused it (`actorid`, `requestid`,
//! `clientip`, `useragent`). The data never holds an invite's token.
//!
//! | topic | type | subject | data |
//! | --- | --- | --- | --- |
//! | organization | `org.created` | org id | `org_id`, `slug`, `name`, `created_by` |
//! | organization | `org.updated` | org id | `org_id`, `slug`, `name`, `previous_name` |
//! | organization | `org.deleted` | org id | `org_id`, `slug`, `name`, `members` (how many) |
//! | organization | `team.created`, `team.deleted` | team id | `team_id`, `name`; `members` (deleted) |
//! | member | `member.added` | user id | `user_id`, `role`, `via` (`created`, `invite`), `invite_id` |
//! | member | `member.removed` | user id | `user_id`, `reason` (`removed`, `left`) |
//! | member | `member.profile_updated` | user id | `user_id`, `fields_set` (names only) |
//! | member | `members.listed` | org id | `org_id`, `count` (members shown) |
//! | member | `invite.created` | invite id | `invite_id`, `email`, `role`, `expires_at` |
//! | member | `invite.revoked` | invite id | `invite_id`, `email`, `role` |
//! | member | `invite.accepted` | invite id | `invite_id`, `user_id`, `email`, `role` |
//! | member | `team.member_added`, `team.member_removed` | user id | `team_id`, `user_id` |
//!
//! Role changes (a member's role given or taken) are permission's events.

use serde_json::Value;
use truevalue_sdk::prelude::*;

/// Organizations and their teams.
pub const ORGANIZATIONS: &str = "org.organization.events";
/// Members, invites and team memberships.
pub const MEMBERS: &str = "org.member.events";

/// Queues an event of the organization `org_id` about a change this request made. A refused
/// event fails the request with a 5xx, so that its change rolls back with it: nothing changes
/// without its event.
pub fn publish(
    org_id: &str,
    topic: &str,
    kind: &str,
    subject: &str,
    data: &Value,
) -> Result<(), Problem> {
    truevalue_sdk::events::publish_for(Some(org_id), topic, kind, subject, data)
        .map(|_| ())
        .map_err(|problem| {
            log::error(&format!("could not publish {kind}: {}", problem.detail));
            Problem::internal(format!("could not publish {kind}: {}", problem.detail))
        })
}

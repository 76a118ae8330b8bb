//! What this component tells the rest of the platform (the `events` capability): an event on
//! `permission.role.events` for every change to roles, to who holds them and to the sign-in
//! policy.
//!
//! An event is queued when its change is made and published when the request's transaction
//! commits, so it exists exactly when the change does. Every event names its organization
//! (`orgid`, the Kafka key) explicitly: the internal routes serve requests that do not act for
//! it yet (an organization's creation, an invite's acceptance). The host adds who caused it
//! (`actorid`, `requestid`, `clientip`, `useragent`) — for an internal route, the user whose
//! request made the calling component call.
//!
//! | type | subject | data |
//! | --- | --- | --- |
//! | `role.created`, `role.deleted` | role name | `role`, `permissions` |
//! | `role.updated` | role name | `role`, `permissions`, `previous_permissions`, `users`, `teams` (holders) |
//! | `role.assigned` | user or team id | `assignment_id`, `role`, `user_id` or `team_id` (and the team's `members`) |
//! | `role.unassigned` | user or team id | `role`, `user_id` or `team_id` |
//! | `roles.forgotten` | user, team or org id | `reason` (`member_removed`, `team_deleted`, `organization_deleted`), `assignments` (how many), `roles` (of a user or team) |
//! | `policy.updated` | org id | `require_mfa`, `previous_require_mfa` |

use serde_json::Value;
use truevalue_sdk::prelude::*;

/// The one topic this component publishes to (listed under `events` in its policy).
pub const TOPIC: &str = "permission.role.events";

/// Queues an event of the organization `org_id` about a change this request made. A refused
/// event fails the request with a 5xx, so that its change rolls back with it: nothing changes
/// without its event.
pub fn publish(org_id: &str, kind: &str, subject: &str, data: &Value) -> Result<(), Problem> {
    truevalue_sdk::events::publish_for(Some(org_id), TOPIC, kind, subject, data)
        .map(|_| ())
        .map_err(|problem| {
            log::error(&format!("could not publish {kind}: {}", problem.detail));
            Problem::internal(format!("could not publish {kind}: {}", problem.detail))
        })
}

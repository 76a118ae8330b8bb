//! The verified caller: who is signed in, for which organization, with which permissions.
//!
//! The gateway verifies the access token and fills in the request's context; these helpers
//! turn a missing user or organization into the problem every component answers with.

use crate::Problem;
use crate::http::Request;

/// A signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    /// The session the access token belongs to.
    pub session_id: Option<String>,
}

/// A signed-in user acting for an organization (the tenant every query must be scoped to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgCaller {
    pub user_id: String,
    pub org_id: String,
    pub roles: Vec<String>,
    /// `resource:action` strings, as granted in that organization.
    pub permissions: Vec<String>,
}

impl OrgCaller {
    /// Whether any granted permission covers `permission`; see [`permission_matches`].
    pub fn allows(&self, permission: &str) -> bool {
        self.permissions
            .iter()
            .any(|granted| permission_matches(granted, permission))
    }
}

/// Whether the granted permission `granted` covers `wanted`: `*` covers everything,
/// `resource:*` every action on that resource, `*:action` that action on every resource
/// (the `viewer` role's `*:read`), anything else only itself. So `contacts:*` covers
/// `contacts:read` but not `contactsx:read`, and `contacts:read` does not cover
/// `contacts:readall`.
pub fn permission_matches(granted: &str, wanted: &str) -> bool {
    if granted == "*" || granted == wanted {
        return true;
    }
    let (Some((resource, action)), Some((wanted_resource, wanted_action))) =
        (granted.split_once(':'), wanted.split_once(':'))
    else {
        return false;
    };
    match (resource, action) {
        ("*", "*") => true,
        ("*", action) => !action.is_empty() && action == wanted_action,
        (resource, "*") => !resource.is_empty() && resource == wanted_resource,
        _ => false,
    }
}

impl Request {
    /// The signed-in user; 401 on an anonymous request.
    pub fn user(&self) -> Result<User, Problem> {
        let context = self.context();
        let id = context
            .user_id
            .clone()
            .ok_or_else(|| Problem::unauthorized("this request needs a signed-in user"))?;
        Ok(User {
            id,
            session_id: context.session_id.clone(),
        })
    }

    /// The signed-in user and the organization their token is scoped to; 401 on an anonymous
    /// request, 403 `no-organization` when the token is not scoped to one.
    pub fn org(&self) -> Result<OrgCaller, Problem> {
        let user = self.user()?;
        let context = self.context();
        let org_id = context.org_id.clone().ok_or_else(|| {
            Problem::new(
                403,
                "no-organization",
                "Forbidden",
                "this request acts for an organization: switch to one first",
            )
        })?;
        Ok(OrgCaller {
            user_id: user.id,
            org_id,
            roles: context.roles.clone(),
            permissions: context.permissions.clone(),
        })
    }

    /// Like [`Request::org`], and 403 `forbidden` naming `permission` unless the caller holds it.
    pub fn require(&self, permission: &str) -> Result<OrgCaller, Problem> {
        let caller = self.org()?;
        if !caller.allows(permission) {
            return Err(Problem::forbidden(format!(
                "this needs the permission `{permission}`"
            )));
        }
        Ok(caller)
    }

    /// Whether the caller's permissions cover `permission`; false on an anonymous request.
    pub fn allows(&self, permission: &str) -> bool {
        self.context()
            .permissions
            .iter()
            .any(|granted| permission_matches(granted, permission))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::http::tests::request_as;

    #[test]
    fn exact_wildcard_and_resource_wildcard_permissions_match() {
        assert!(permission_matches("contacts:read", "contacts:read"));
        assert!(permission_matches("contacts:*", "contacts:read"));
        assert!(permission_matches("contacts:*", "contacts:delete"));
        assert!(permission_matches("*", "contacts:read"));
        assert!(permission_matches("*", "billing:manage"));
        assert!(permission_matches("*:read", "contacts:read"));
        assert!(permission_matches("*:read", "members:read"));
    }

    #[test]
    fn permissions_never_match_by_prefix() {
        assert!(!permission_matches("contacts:read", "contacts:readall"));
        assert!(!permission_matches("contacts:readall", "contacts:read"));
        assert!(!permission_matches("contact:*", "contacts:read"));
        assert!(!permission_matches("contacts:*", "contactsx:read"));
        assert!(!permission_matches("contacts:read", "contacts:write"));
        assert!(!permission_matches("contacts:read", "deals:read"));
        assert!(!permission_matches(":*", "contacts:read"));
        assert!(!permission_matches("contacts:*", "contacts"));
        assert!(!permission_matches("", "contacts:read"));
        assert!(!permission_matches("*:read", "contacts:write"));
        assert!(!permission_matches("*:read", "contacts:readall"));
        assert!(!permission_matches("*:", "contacts:read"));
    }

    #[test]
    fn an_anonymous_request_is_401_and_a_user_without_organization_is_403() {
        let anonymous = request_as(None, None, &[]);
        assert_eq!(anonymous.user().unwrap_err().status, 401);
        assert_eq!(anonymous.org().unwrap_err().status, 401);
        assert_eq!(anonymous.require("contacts:read").unwrap_err().status, 401);
        assert!(!anonymous.allows("contacts:read"));

        let outside = request_as(Some("u1"), None, &["*"]);
        assert_eq!(outside.user().unwrap().id, "u1");
        let problem = outside.org().unwrap_err();
        assert_eq!(
            (problem.status, problem.kind.as_str()),
            (403, "no-organization")
        );
    }

    #[test]
    fn require_names_the_missing_permission() {
        let member = request_as(Some("u1"), Some("o1"), &["contacts:*", "deals:read"]);
        let caller = member.require("contacts:delete").unwrap();
        assert_eq!(
            (caller.user_id.as_str(), caller.org_id.as_str()),
            ("u1", "o1")
        );
        assert!(member.require("deals:read").is_ok());
        let problem = member.require("deals:write").unwrap_err();
        assert_eq!((problem.status, problem.kind.as_str()), (403, "forbidden"));
        assert!(
            problem.detail.contains("`deals:write`"),
            "{}",
            problem.detail
        );
        assert!(member.allows("contacts:read") && !member.allows("members:read"));
    }
}

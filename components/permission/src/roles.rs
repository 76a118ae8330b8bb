//! Roles: the four built-ins, custom roles' names, and what a set of roles allows.

use serde::Serialize;
use truevalue_sdk::prelude::*;

use crate::catalog;

/// How far a role's record permissions reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every record of the organization.
    Org,
    /// Records of the holder's teams, and the holder's own.
    Team,
    /// The holder's own records.
    Own,
}

/// The names of the built-in roles, which no custom role may take.
pub const BUILT_IN: &[&str] = &["admin", "manager", "member", "viewer"];

/// A role as the API shows it and as checks use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    pub name: String,
    /// Sorted; for `manager` and `member` the record permissions of the current catalog.
    pub permissions: Vec<String>,
    pub scope: Scope,
    pub built_in: bool,
}

/// The built-in role `name`, its permissions derived from `records` (the declared record
/// permissions, see [`catalog::record_permissions`]); `None` for any other name.
pub fn built_in(name: &str, records: &[String]) -> Option<Role> {
    let (fixed, with_records, scope): (&[&str], bool, Scope) = match name {
        "admin" => (&["*"], false, Scope::Org),
        "manager" => (
            &["*:read", "members:read", "roles:read", "teams:read"],
            true,
            Scope::Team,
        ),
        "member" => (&["members:read", "teams:read"], true, Scope::Own),
        "viewer" => (&["*:read"], false, Scope::Org),
        _ => return None,
    };
    let mut permissions: Vec<String> = fixed.iter().map(|p| (*p).to_string()).collect();
    if with_records {
        permissions.extend(records.iter().cloned());
    }
    permissions.sort();
    permissions.dedup();
    Some(Role {
        name: name.into(),
        permissions,
        scope,
        built_in: true,
    })
}

/// The four built-ins, in the order the API lists them.
pub fn built_ins(records: &[String]) -> Vec<Role> {
    BUILT_IN
        .iter()
        .filter_map(|name| built_in(name, records))
        .collect()
}

/// A custom role's name: 2 to 40 of `a-z`, `0-9`, `_`, `-`, starting with a letter, and not
/// a built-in's name.
pub fn validate_name(name: &str) -> Result<(), Problem> {
    let shaped = (2..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !shaped {
        return Err(Problem::field(
            "name",
            "must be 2 to 40 lowercase letters, digits, `_` or `-`, starting with a letter",
        ));
    }
    if BUILT_IN.contains(&name) {
        return Err(Problem::field(
            "name",
            format!("`{name}` is a built-in role; choose another name"),
        ));
    }
    Ok(())
}

/// Whether `held` (a caller's permissions) covers every permission of `wanted`. A wildcard in
/// `wanted` is covered only by a wildcard at least as wide: `contacts:read` and
/// `contacts:write` do not cover `contacts:*`, which also grants actions declared later.
pub fn covers(held: &[String], wanted: &[String]) -> bool {
    wanted
        .iter()
        .all(|w| held.iter().any(|h| permission_matches(h, w)))
}

/// The request of a check: the permission, and whose or which team's record it is about.
pub struct Check<'a> {
    pub permission: &'a str,
    pub owner_id: Option<&'a str>,
    pub team_id: Option<&'a str>,
}

/// Whether any of `roles` (held by `user_id`, who is in `teams`) allows `check`.
///
/// A role allows it when one of its permissions covers the permission and its scope reaches
/// the record: `org` always; `team` when the record is the caller's or `team_id` is one of
/// the caller's teams; `own` when `owner_id` is the caller. Scope limits *records*: a
/// platform permission (`members:read`, `teams:read`, ...) held by a scoped role reaches the
/// whole organization, as the token's flattened permissions do.
pub fn allows(roles: &[Role], user_id: &str, teams: &[String], check: &Check) -> bool {
    let own = check.owner_id == Some(user_id);
    let in_team = check
        .team_id
        .is_some_and(|team| teams.iter().any(|t| t == team));
    roles.iter().any(|role| {
        let covered = role
            .permissions
            .iter()
            .any(|p| permission_matches(p, check.permission));
        covered
            && (!catalog::is_record(check.permission)
                || match role.scope {
                    Scope::Org => true,
                    Scope::Team => own || in_team,
                    Scope::Own => own,
                })
    })
}

/// The union of the roles' permissions, sorted and deduplicated: what a token carries.
pub fn flatten(roles: &[Role]) -> Vec<String> {
    let mut permissions: Vec<String> = roles
        .iter()
        .flat_map(|role| role.permissions.iter().cloned())
        .collect();
    permissions.sort();
    permissions.dedup();
    permissions
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn records() -> Vec<String> {
        vec!["contacts:read".into(), "contacts:write".into()]
    }

    fn role(name: &str) -> Role {
        built_in(name, &records()).unwrap()
    }

    #[test]
    fn scoped_built_ins_never_hold_what_administers_the_organization() {
        for name in ["manager", "member", "viewer"] {
            let permissions = role(name).permissions;
            for forbidden in [
                "roles:write",
                "members:write",
                "org:write",
                "org:delete",
                "invites:write",
                "teams:write",
                "billing:manage",
            ] {
                assert!(
                    !covers(&permissions, &[forbidden.into()]),
                    "{name} {forbidden}"
                );
            }
        }
        assert_eq!(role("admin").permissions, vec!["*"]);
        assert!(covers(
            &role("manager").permissions,
            &["contacts:write".into()]
        ));
        assert!(covers(
            &role("member").permissions,
            &["members:read".into()]
        ));
        assert!(!covers(&role("member").permissions, &["roles:read".into()]));
        assert!(built_in("owner", &records()).is_none());
    }

    #[test]
    fn scopes_limit_records_to_the_team_or_the_owner() {
        let teams = vec!["t1".to_string()];
        let check = |role_name: &str, permission: &str, owner: Option<&str>, team: Option<&str>| {
            let check = Check {
                permission,
                owner_id: owner,
                team_id: team,
            };
            allows(&[role(role_name)], "u1", &teams, &check)
        };
        assert!(check("manager", "contacts:write", None, Some("t1")));
        assert!(!check("manager", "contacts:write", None, Some("t2")));
        assert!(check("manager", "contacts:write", Some("u1"), Some("t2")));
        assert!(!check("manager", "contacts:write", None, None));
        assert!(check("manager", "members:read", None, None));
        assert!(check("member", "contacts:write", Some("u1"), None));
        assert!(!check("member", "contacts:write", Some("u2"), Some("t1")));
        assert!(check("viewer", "contacts:read", Some("u2"), None));
        assert!(!check("viewer", "contacts:write", Some("u1"), None));
        assert!(check("admin", "billing:manage", None, None));
    }

    #[test]
    fn names_follow_the_rules() {
        for good in ["sales", "sales-lead", "team_2", "ab"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "a",
            "Sales",
            "2fast",
            "sales lead",
            "",
            &"x".repeat(41),
            "admin",
            "viewer",
        ] {
            let problem = validate_name(bad).unwrap_err();
            assert_eq!(
                (problem.status, problem.errors[0].field.as_str()),
                (422, "name")
            );
        }
    }

    #[test]
    fn a_wildcard_is_covered_only_by_one_as_wide() {
        let held = vec!["contacts:read".to_string(), "contacts:write".to_string()];
        assert!(!covers(&held, &["contacts:*".into()]));
        assert!(covers(
            &["*".into()],
            &["contacts:*".into(), "*:read".into()]
        ));
        assert!(covers(
            &["*:read".into()],
            &["*:read".into(), "deals:read".into()]
        ));
        assert!(!covers(&["*:read".into()], &["*".into()]));
    }
}

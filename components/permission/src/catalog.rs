//! The permission catalog and the rules for the strings in it.
//!
//! A permission is `resource:action` in lowercase letters, digits, `_` and `-`; a granted
//! permission may also be a wildcard (`*`, `resource:*`, `*:action`). The platform's own
//! permissions are listed here; every other one comes from a component's policy
//! (`permissions = [...]`), so a plugin's permissions appear without a change to this code.

use serde::Serialize;
use truevalue_sdk::prelude::*;

/// The resources the platform manages. Every other resource is a *record* resource (contacts,
/// deals, ...): declared by a component, and what the scoped built-in roles are about.
pub const PLATFORM_RESOURCES: &[&str] = &[
    "analytics",
    "audit",
    "billing",
    "invites",
    "members",
    "org",
    "permissions",
    "roles",
    "teams",
];

/// The platform's permissions, with the component that checks each.
const PLATFORM: &[(&str, &str)] = &[
    ("analytics:read", "analytics"),
    ("audit:read", "audit"),
    ("billing:manage", "billing"),
    ("billing:read", "billing"),
    ("invites:read", "org"),
    ("invites:write", "org"),
    ("members:read", "org"),
    ("members:write", "org"),
    ("org:delete", "org"),
    ("org:read", "org"),
    ("org:write", "org"),
    ("permissions:read", "permission"),
    ("roles:read", "permission"),
    ("roles:write", "permission"),
    ("teams:read", "org"),
    ("teams:write", "org"),
];

/// One entry of `GET /permission/api/permissions`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Entry {
    pub permission: String,
    pub component: String,
}

/// The platform's permissions and every loaded component's declared ones, sorted by
/// permission then component, without duplicates. A declared entry that is not a plain
/// `resource:action` (a wildcard, say) is left out: the catalog lists what can be checked.
pub fn entries() -> Vec<Entry> {
    build(&services::declared_permissions())
}

fn build(declared: &[(String, Vec<String>)]) -> Vec<Entry> {
    let platform = PLATFORM.iter().map(|(permission, component)| Entry {
        permission: (*permission).into(),
        component: (*component).into(),
    });
    let declared = declared.iter().flat_map(|(component, permissions)| {
        permissions
            .iter()
            .filter(|p| is_concrete(p))
            .map(move |permission| Entry {
                permission: permission.clone(),
                component: component.clone(),
            })
    });
    let mut entries: Vec<Entry> = platform.chain(declared).collect();
    entries.sort();
    entries.dedup();
    entries
}

/// The declared permissions on record resources, sorted and deduplicated: what `manager` and
/// `member` hold beyond their platform permissions.
pub fn record_permissions() -> Vec<String> {
    records(&services::declared_permissions())
}

fn records(declared: &[(String, Vec<String>)]) -> Vec<String> {
    let mut permissions: Vec<String> = declared
        .iter()
        .flat_map(|(_, permissions)| permissions.iter())
        .filter(|p| is_concrete(p) && is_record(p))
        .cloned()
        .collect();
    permissions.sort();
    permissions.dedup();
    permissions
}

/// Whether `permission`'s resource is a record resource rather than one the platform manages.
/// A wildcard resource (`*`, `*:read`) is not a record resource.
pub fn is_record(permission: &str) -> bool {
    let resource = permission.split_once(':').map_or(permission, |(r, _)| r);
    resource != "*" && !PLATFORM_RESOURCES.contains(&resource)
}

fn is_word(part: &str) -> bool {
    (1..=60).contains(&part.len())
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `resource:action`, both plain words.
pub fn is_concrete(permission: &str) -> bool {
    permission
        .split_once(':')
        .is_some_and(|(resource, action)| is_word(resource) && is_word(action))
}

/// What a role may grant: a concrete permission, `*`, `resource:*` or `*:action`.
pub fn is_grantable(permission: &str) -> bool {
    if permission == "*" {
        return true;
    }
    permission
        .split_once(':')
        .is_some_and(|(resource, action)| {
            match (resource, action) {
                ("*", "*") => false, // say `*`
                ("*", action) => is_word(action),
                (resource, "*") => is_word(resource),
                (resource, action) => is_word(resource) && is_word(action),
            }
        })
}

/// The permissions of a role as a client sent them: each grantable, at most 200, at least one;
/// returned sorted and deduplicated. A bad entry is a 422 naming it and its index.
pub fn validate_permissions(permissions: &[String]) -> Result<Vec<String>, Problem> {
    if permissions.is_empty() {
        return Err(Problem::field(
            "permissions",
            "must list at least one permission",
        ));
    }
    if permissions.len() > 200 {
        return Err(Problem::field(
            "permissions",
            "must list at most 200 permissions",
        ));
    }
    let mut problem: Option<Problem> = None;
    for (index, permission) in permissions.iter().enumerate() {
        if is_grantable(permission) {
            continue;
        }
        let field = format!("permissions[{index}]");
        let message = format!(
            "is {permission:?}, not a `resource:action` permission (lowercase letters, digits, \
             `_` and `-`) or a wildcard (`*`, `resource:*`, `*:action`)"
        );
        problem = Some(match problem {
            None => Problem::field(&field, message),
            Some(problem) => problem.and_field(&field, message),
        });
    }
    if let Some(problem) = problem {
        return Err(problem);
    }
    let mut permissions = permissions.to_vec();
    permissions.sort();
    permissions.dedup();
    Ok(permissions)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn declared() -> Vec<(String, Vec<String>)> {
        vec![
            (
                "crm".into(),
                vec![
                    "contacts:write".into(),
                    "contacts:read".into(),
                    "deals:read".into(),
                ],
            ),
            ("billing".into(), vec!["billing:read".into(), "bad".into()]),
            ("hello".into(), vec!["contacts:read".into(), "x:*".into()]),
        ]
    }

    #[test]
    fn the_catalog_holds_platform_and_declared_permissions_sorted_once_each() {
        let entries = build(&declared());
        assert!(entries.windows(2).all(|w| w[0] < w[1]));
        let has = |p: &str, c: &str| {
            entries
                .iter()
                .any(|e| e.permission == p && e.component == c)
        };
        assert!(has("roles:write", "permission") && has("org:delete", "org"));
        assert!(has("contacts:read", "crm") && has("contacts:read", "hello"));
        assert!(has("billing:read", "billing"));
        assert_eq!(
            entries
                .iter()
                .filter(|e| e.permission == "billing:read")
                .count(),
            1
        );
        assert!(
            !entries
                .iter()
                .any(|e| e.permission == "bad" || e.permission == "x:*")
        );
    }

    #[test]
    fn record_permissions_leave_out_platform_resources() {
        assert_eq!(
            records(&declared()),
            vec!["contacts:read", "contacts:write", "deals:read"]
        );
        assert!(is_record("contacts:read") && !is_record("members:read"));
        assert!(!is_record("*:read") && !is_record("*"));
    }

    #[test]
    fn grantable_permissions_are_plain_words_or_wildcards() {
        for good in [
            "*",
            "contacts:*",
            "*:read",
            "contacts:read",
            "deal_notes:bulk-export",
        ] {
            assert!(is_grantable(good), "{good}");
        }
        for bad in [
            "",
            ":",
            "*:*",
            "contacts",
            "contacts:",
            ":read",
            "Contacts:read",
            "contacts:read:x",
            "contacts :read",
            "con*:read",
            "contacts:re*",
        ] {
            assert!(!is_grantable(bad), "{bad}");
        }
    }

    #[test]
    fn a_bad_entry_is_named_with_its_index() {
        let problem = validate_permissions(&["contacts:read".into(), "Nope".into()]).unwrap_err();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors[0].field, "permissions[1]");
        assert!(problem.detail.contains("\"Nope\""), "{}", problem.detail);
        assert_eq!(
            validate_permissions(&[]).unwrap_err().errors[0].field,
            "permissions"
        );
        assert_eq!(
            validate_permissions(&["b:read".into(), "a:read".into(), "b:read".into()]).unwrap(),
            vec!["a:read", "b:read"]
        );
    }
}

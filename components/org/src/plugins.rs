//! Per-organization plugins: components the operator installed with `per_organization = true`
//! serve an organization only once its admin enabled them here. The host asks
//! `/org/internal/plugins` which ones an organization enabled (and remembers the answer for a
//! couple of seconds).

use serde_json::json;
use truevalue_sdk::prelude::*;

use crate::audit::{self, ORGANIZATIONS};
use crate::tenant_with;

/// The caller name the host uses for its own questions.
const HOST: &str = "@host";

/// `GET /org/api/organizations/{slug}/plugins` (`org:read`): every installed plugin, and
/// whether this organization enabled it (by whom, when).
pub fn list(request: &Request) -> Result<Response, Problem> {
    let (_, organization) = tenant_with(request, "org:read")?;
    let rows = db::query(
        "SELECT plugin, enabled_by, enabled_at FROM plugins WHERE org_id = $1",
        &[organization.org_id.as_str().into()],
    )?;
    let mut items = Vec::new();
    for plugin in truevalue_sdk::services::plugins() {
        let row = rows
            .iter()
            .find(|row| row.get::<String>("plugin").is_ok_and(|p| p == plugin));
        items.push(match row {
            Some(row) => json!({
                "name": plugin, "enabled": true,
                "enabled_by": row.get::<String>("enabled_by")?,
                "enabled_at": truevalue_sdk::time::rfc3339(row.get::<i64>("enabled_at")?),
            }),
            None => json!({ "name": plugin, "enabled": false }),
        });
    }
    Response::json(200, &json!({ "items": items }))
}

/// The installed plugin `name`, or 404.
fn installed(name: &str) -> Result<(), Problem> {
    match truevalue_sdk::services::plugins().iter().any(|p| p == name) {
        true => Ok(()),
        false => Err(Problem::not_found(format!(
            "no plugin named `{name}` is installed"
        ))),
    }
}

/// `PUT /org/api/organizations/{slug}/plugins/{name}` (`org:write`): enables it (idempotent).
pub fn enable(request: &Request) -> Result<Response, Problem> {
    let (caller, organization) = tenant_with(request, "org:write")?;
    let name = request.param("name")?.to_string();
    installed(&name)?;
    let added = db::execute(
        "INSERT INTO plugins (org_id, plugin, enabled_by, enabled_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (org_id, plugin) DO NOTHING",
        &[
            organization.org_id.as_str().into(),
            name.as_str().into(),
            caller.user_id.as_str().into(),
            truevalue_sdk::time::now().into(),
        ],
    )?;
    if added > 0 {
        audit::publish(
            &organization.org_id,
            ORGANIZATIONS,
            "plugin.enabled",
            &name,
            &json!({ "org_id": organization.org_id, "plugin": name }),
        )?;
    }
    Response::json(200, &json!({ "name": name, "enabled": true }))
}

/// `DELETE /org/api/organizations/{slug}/plugins/{name}` (`org:write`): disables it.
pub fn disable(request: &Request) -> Result<Response, Problem> {
    let (_, organization) = tenant_with(request, "org:write")?;
    let name = request.param("name")?.to_string();
    installed(&name)?;
    let removed = db::execute(
        "DELETE FROM plugins WHERE org_id = $1 AND plugin = $2",
        &[organization.org_id.as_str().into(), name.as_str().into()],
    )?;
    if removed > 0 {
        audit::publish(
            &organization.org_id,
            ORGANIZATIONS,
            "plugin.disabled",
            &name,
            &json!({ "org_id": organization.org_id, "plugin": name }),
        )?;
    }
    Ok(Response::no_content())
}

/// `GET /org/internal/plugins?org_id=O` [the host]: `{enabled: [names]}`.
pub fn enabled(request: &Request) -> Result<Response, Problem> {
    request.require_caller(&[HOST])?;
    let org_id = request
        .query("org_id")
        .filter(|o| !o.is_empty())
        .ok_or_else(|| Problem::field("org_id", "is required"))?;
    let rows = db::query(
        "SELECT plugin FROM plugins WHERE org_id = $1 ORDER BY plugin",
        &[org_id.into()],
    )?;
    let enabled = rows
        .iter()
        .map(|row| row.get::<String>("plugin"))
        .collect::<Result<Vec<_>, _>>()?;
    Response::json(200, &json!({ "enabled": enabled }))
}

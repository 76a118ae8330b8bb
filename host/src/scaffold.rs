//! `truevalue component new NAME --lang rust|python|js`: a working plugin to start from — its
//! code, its policy, a build script, and the WIT (and, for Python and JavaScript, the SDK) it
//! builds against, so the directory builds on its own.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The languages a plugin can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// The platform's WIT, as this host links it.
const WIT: [(&str, &str); 13] = [
    ("cache.wit", include_str!("../../wit/cache.wit")),
    ("config.wit", include_str!("../../wit/config.wit")),
    ("crypto.wit", include_str!("../../wit/crypto.wit")),
    ("database.wit", include_str!("../../wit/database.wit")),
    ("email.wit", include_str!("../../wit/email.wit")),
    ("events.wit", include_str!("../../wit/events.wit")),
    ("handler.wit", include_str!("../../wit/handler.wit")),
    ("log.wit", include_str!("../../wit/log.wit")),
    ("manifest.wit", include_str!("../../wit/manifest.wit")),
    ("plugin.wit", include_str!("../../wit/plugin.wit")),
    ("services.wit", include_str!("../../wit/services.wit")),
    ("tokens.wit", include_str!("../../wit/tokens.wit")),
    ("worlds.wit", include_str!("../../wit/worlds.wit")),
];

const PYTHON_SDK: &str = include_str!("../../sdk/python/truevalue/__init__.py");
const JS_SDK: &str = include_str!("../../sdk/js/truevalue.js");
const JS_BUILD: &str = include_str!("../../sdk/js/build.mjs");
const JS_PACKAGE: &str = include_str!("../../sdk/js/package.json");
const JS_LOCK: &str = include_str!("../../sdk/js/package-lock.json");

/// Whether `name` can name a component: a policy file stem the host accepts.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 64
}

/// Writes the plugin `name` in `lang` into `dir` (which must not exist yet); returns what to
/// run next.
pub fn new(name: &str, lang: Lang, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<String> {
    if !valid_name(name) {
        bail!("{name:?} cannot name a component: use [a-z][a-z0-9_]*, at most 64 characters");
    }
    if dir.exists() {
        bail!("{} exists already: choose another --dir", dir.display());
    }
    let route = format!("/{}", name.replace('_', "-"));
    let mut files: Vec<(PathBuf, String)> = WIT
        .iter()
        .map(|(file, text)| (Path::new("wit").join(file), text.to_string()))
        .collect();
    let python = matches!(lang, Lang::Python);
    files.push((
        PathBuf::from(format!("{name}.toml")),
        policy(name, &route, python),
    ));
    let next = match lang {
        Lang::Python => {
            files.push(("app.py".into(), python_app(name, &route)));
            files.push(("truevalue/__init__.py".into(), PYTHON_SDK.to_string()));
            files.push((
                "build.sh".into(),
                format!(
                    "#!/bin/sh\n# Builds {name}.wasm with componentize-py (`pip install componentize-py==0.25.1`).\nset -e\ncd \"$(dirname \"$0\")\"\ncomponentize-py -d wit -w plugin componentize app -o {name}.wasm\n"
                ),
            ));
            "./build.sh"
        }
        Lang::Js => {
            files.push(("app.js".into(), js_app(name, &route)));
            files.push(("truevalue.js".into(), JS_SDK.to_string()));
            files.push(("build.mjs".into(), JS_BUILD.to_string()));
            files.push((
                "package.json".into(),
                JS_PACKAGE.replacen(
                    "\"name\": \"truevalue\"",
                    &format!("\"name\": \"{}\"", name.replace('_', "-")),
                    1,
                ),
            ));
            files.push((
                "package-lock.json".into(),
                JS_LOCK.replacen(
                    "\"name\": \"truevalue\"",
                    &format!("\"name\": \"{}\"", name.replace('_', "-")),
                    2,
                ),
            ));
            files.push((
                "build.sh".into(),
                format!(
                    "#!/bin/sh\n# Builds {name}.wasm with componentize-js (installed from npm on the first build).\nset -e\ncd \"$(dirname \"$0\")\"\n[ -d node_modules ] || npm ci --silent --no-audit --no-fund\nnode build.mjs app.js {name}.wasm wit\n"
                ),
            ));
            "./build.sh"
        }
        Lang::Rust => {
            let sdk = sdk
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("../components/sdk"));
            files.push(("Cargo.toml".into(), rust_manifest(name, &sdk)));
            files.push(("src/lib.rs".into(), rust_app(name, &route)));
            files.push((
                "build.sh".into(),
                format!(
                    "#!/bin/sh\n# Builds {name}.wasm (`rustup target add wasm32-wasip2` once).\nset -e\ncd \"$(dirname \"$0\")\"\ncargo build --release --target wasm32-wasip2\ncp \"${{CARGO_TARGET_DIR:-target}}/wasm32-wasip2/release/{name}.wasm\" {name}.wasm\n"
                ),
            ));
            "./build.sh"
        }
    };
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    make_executable(&dir.join("build.sh"))?;
    Ok(format!(
        "wrote {} files into {dir}\nnext:\n  (cd {dir} && {next})\n  truevalue component check {dir}/{name}.wasm --policy {dir}/{name}.toml\n  truevalue component install {name} {dir}/{name}.wasm --policy {dir}/{name}.toml   (into a running host)",
        files.len(),
        dir = dir.display()
    ))
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// The plugin's policy; a Python plugin's has its next instance made ahead.
fn policy(name: &str, route: &str, python: bool) -> String {
    let prestart = match python {
        true => {
            "# CPython's instance takes a while to make: the next one is made ahead.\nprestart = true\n"
        }
        false => "",
    };
    format!(
        r#"# What the host grants the plugin `{name}`. Install both into a running host with
# `truevalue component install {name} {name}.wasm --policy {name}.toml`, or copy them into its
# policies directory. Every interface it imports but is not granted here is a stand-in that
# refuses each call.
wasm = "{name}.wasm"
routes = ["{route}"]
# Served without an access token.
public_routes = ["{route}/hello"]
# Served only for a token scoped to an organization; transactions are bound to it.
org_routes = ["{route}/items"]
capabilities = ["database"]
permissions = ["{name}:read", "{name}:write"]

[limits]
memory_mib = 64
timeout_ms = 5000
{prestart}"#
    )
}

const SQLITE_SCHEMA: &str =
    "CREATE TABLE items (id INTEGER PRIMARY KEY, org_id TEXT NOT NULL, text TEXT NOT NULL)";
const POSTGRES_SCHEMA: &str =
    "CREATE TABLE items (id BIGSERIAL PRIMARY KEY, org_id TEXT NOT NULL, text TEXT NOT NULL)";

fn python_app(name: &str, route: &str) -> String {
    format!(
        r#""""The `{name}` plugin. Build: ./build.sh; check: truevalue component check."""

from truevalue import Plugin, Problem, Response, db

app = Plugin(
    version="0.1.0",
    migrations={{
        "sqlite": ["{SQLITE_SCHEMA}"],
        "postgres": ["{POSTGRES_SCHEMA}"],
    }},
)


@app.get("{route}/hello")
def hello(request):
    return {{"message": f"Hello from {name}, {{request.query.get('name', 'world')}}!"}}


@app.get("{route}/items")
def list_items(request):
    org = request.context.require_org()
    request.context.require("{name}:read")
    return {{"items": db.query("SELECT id, text FROM items WHERE org_id = $1 ORDER BY id", [org])}}


@app.post("{route}/items")
def create_item(request):
    org = request.context.require_org()
    request.context.require("{name}:write")
    body = request.json()
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise Problem.field("text", "must not be empty")
    rows = db.query(
        "INSERT INTO items (org_id, text) VALUES ($1, $2) RETURNING id", [org, text.strip()]
    )
    return Response.created({{"id": rows[0]["id"], "text": text.strip()}})


Endpoint, Manifest = app.exports()
"#
    )
}

fn js_app(name: &str, route: &str) -> String {
    format!(
        r#"// The `{name}` plugin. Build: ./build.sh; check: truevalue component check.

import {{ Plugin, Problem, Response, db }} from "./truevalue.js";

const app = new Plugin({{
  version: "0.1.0",
  migrations: {{
    sqlite: ["{SQLITE_SCHEMA}"],
    postgres: ["{POSTGRES_SCHEMA}"],
  }},
}});

app.get("{route}/hello", (request) => ({{ message: `Hello from {name}, ${{request.query.name ?? "world"}}!` }}));

app.get("{route}/items", (request) => {{
  const org = request.context.requireOrg();
  request.context.require("{name}:read");
  return {{ items: db.query("SELECT id, text FROM items WHERE org_id = $1 ORDER BY id", [org]) }};
}});

app.post("{route}/items", (request) => {{
  const org = request.context.requireOrg();
  request.context.require("{name}:write");
  const body = request.json() ?? {{}};
  const text = typeof body.text === "string" ? body.text.trim() : "";
  if (!text) throw Problem.field("text", "must not be empty");
  const rows = db.query("INSERT INTO items (org_id, text) VALUES ($1, $2) RETURNING id", [org, text]);
  return Response.created({{ id: rows[0].id, text }});
}});

export const {{ endpoint, manifest }} = app.exports();
"#
    )
}

fn rust_manifest(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
truevalue-sdk = {{ path = {sdk:?} }}

[profile.release]
opt-level = "s"
lto = true
strip = true

# A project of its own, even when created inside another Cargo workspace.
[workspace]
"#,
        sdk = sdk.display().to_string()
    )
}

fn rust_app(name: &str, route: &str) -> String {
    format!(
        r#"//! The `{name}` plugin. Build: ./build.sh; check: truevalue component check.

use serde::{{Deserialize, Serialize}};
use serde_json::json;
use truevalue_sdk::prelude::*;

struct Plugin;

#[derive(Serialize, FromRow)]
struct Item {{
    id: i64,
    text: String,
}}

#[derive(Deserialize)]
struct NewItem {{
    text: Option<String>,
}}

impl App for Plugin {{
    fn router() -> Router {{
        Router::new()
            .get("{route}/hello", |r| {{
                let name = r.query("name").unwrap_or_else(|| "world".into());
                Response::json(200, &json!({{ "message": format!("Hello from {name}, {{name}}!") }}))
            }})
            .get("{route}/items", |r| {{
                let caller = r.require("{name}:read")?;
                let items: Vec<Item> = db::query_as(
                    "SELECT id, text FROM items WHERE org_id = $1 ORDER BY id",
                    &[caller.org_id.into()],
                )?;
                Response::json(200, &json!({{ "items": items }}))
            }})
            .post("{route}/items", |r| {{
                let caller = r.require("{name}:write")?;
                let body: NewItem = r.json()?;
                let text = body.text.unwrap_or_default().trim().to_string();
                if text.is_empty() {{
                    return Err(Problem::field("text", "must not be empty"));
                }}
                let rows = db::query(
                    "INSERT INTO items (org_id, text) VALUES ($1, $2) RETURNING id",
                    &[caller.org_id.into(), text.as_str().into()],
                )?;
                let id: i64 = match rows.first() {{
                    Some(row) => row.get("id")?,
                    None => return Err(Problem::internal("the insert returned no id")),
                }};
                Response::json(201, &Item {{ id, text }})
            }})
    }}

    fn migrations(dialect: Dialect) -> Vec<Migration> {{
        let sql = match dialect {{
            Dialect::Postgres => "{POSTGRES_SCHEMA}",
            _ => "{SQLITE_SCHEMA}",
        }};
        vec![Migration {{ id: 1, name: "items", sql }}]
    }}
}}

truevalue_sdk::component!(Plugin);
"#
    )
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_are_what_a_policy_file_stem_may_be() {
        assert!(valid_name("notes"));
        assert!(valid_name("crm_notes2"));
        for bad in ["", "Notes", "2notes", "no-tes", "../x", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}

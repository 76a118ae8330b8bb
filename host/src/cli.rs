//! The `truevalue` command line: `serve`, `component list|deploy|rollback|reset` for operators,
//! and `component new|check|keygen|sign` for publishers.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

#[derive(Parser)]
#[command(name = "truevalue", version, about = "The TrueValue platform host")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start the platform: gateway, admin API and every component under the policies directory.
    Serve(ServeArgs),
    /// Manage the components of a running host through its admin API.
    #[command(subcommand)]
    Component(ComponentCommand),
}

#[derive(Args)]
pub struct ServeArgs {
    /// What this process runs: all (default), gateway, or node.
    #[arg(long, value_enum)]
    pub role: Option<crate::config::Role>,
    /// With --role gateway: the nodes to forward to, comma-separated base URLs.
    #[arg(long, value_delimiter = ',')]
    pub nodes: Option<Vec<String>>,
    /// Address of the public gateway [default: 127.0.0.1:8000].
    #[arg(long)]
    pub listen: Option<String>,
    /// Address of the admin API [default: 127.0.0.1:8010].
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// Directory for SQLite files, deployed components and the compile cache [default: ./data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Directory of component policies [default: ./policies].
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// A TOML configuration file; environment variables and flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum ComponentCommand {
    /// List components with their versions and digests.
    List(AdminArgs),
    /// Deploy a new version of a component from a `.wasm` file.
    Deploy {
        /// The component's name (its policy's file name).
        name: String,
        /// The component file.
        file: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Install a new component with its policy into the running host: it serves at once and
    /// after restarts, until uninstalled. A signature beside the file (`<wasm>.sig`, from
    /// `component sign` with this policy) is sent along.
    Install {
        /// The component's name: its routes' owner, its database's and its policy's name.
        name: String,
        /// The component file.
        wasm: PathBuf,
        /// The component's policy file (its `wasm` line is ignored: the version is `WASM`).
        #[arg(long)]
        policy: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Uninstall a component installed with `component install`: its routes answer 404 at
    /// once; its database and kept versions stay, for a later install of the same name.
    Uninstall {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Go back to the version that ran before the last deploy, or with --to to any kept version.
    Rollback {
        name: String,
        /// The digest of a kept version (`component versions` lists them), or its first 8 or
        /// more hex digits.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List every kept version of a component, newest first.
    Versions {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Deploy the policy's `wasm` file again and unpin: restarts follow that file again.
    Reset {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Write a working plugin to start from: its code, policy, build script, and the WIT (and
    /// SDK) it builds against.
    New {
        /// The plugin's name, which is also its route (`/name`) and policy file's stem.
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum)]
        lang: crate::scaffold::Lang,
        /// Where to write it [default: ./NAME]; must not exist.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust only: the path of the SDK crate (`components/sdk` of this repository), as the
        /// new crate's Cargo.toml should name it [default: ../components/sdk].
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Report, without a host, how a component would load under a policy: each import granted,
    /// denied (a stand-in refuses every call) or refused, the exports the host needs, and the
    /// policy's problems. Exits non-zero when the component would not load.
    Check {
        /// The component file.
        wasm: PathBuf,
        /// The component's policy file.
        #[arg(long)]
        policy: PathBuf,
    },
    /// Make a publisher's ed25519 key pair: the private key goes to a file (keep it secret), the
    /// public key is printed, for the hosts' `trusted_publishers`.
    Keygen {
        /// Where to write the private key (created with mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a component for the hosts that load it with this policy: writes `<wasm>.sig`, which
    /// hosts read beside the `.wasm` at start-up and `component deploy` sends along.
    Sign {
        /// The component file.
        wasm: PathBuf,
        /// The component's policy file (its name is the component's name).
        #[arg(long)]
        policy: PathBuf,
        /// The private key file written by `component keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The publisher's name, as the hosts' `trusted_publishers` list it.
        #[arg(long)]
        publisher: String,
    },
}

#[derive(Args)]
pub struct AdminArgs {
    /// The admin API's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8010")]
    pub admin_url: String,
    /// The admin token; by default read from `<data-dir>/admin-token`.
    #[arg(long, env = "TRUEVALUE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The data directory of the host, to find its generated admin token.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
}

fn keygen(out: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (private, public) = crate::signatures::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| {
            format!(
                "creating {} (an existing key is never overwritten)",
                out.display()
            )
        })?;
    writeln!(file, "{private}")?;
    println!("{public}");
    Ok(())
}

fn sign(
    wasm: &std::path::Path,
    policy: &std::path::Path,
    key: &std::path::Path,
    publisher: &str,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let policy_text =
        std::fs::read(policy).with_context(|| format!("reading {}", policy.display()))?;
    let component = policy
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the policy file has no name")?;
    let private =
        std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let digest = |data: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data));
    let line = crate::signatures::sign(
        &private,
        publisher,
        component,
        &digest(&bytes),
        &digest(&policy_text),
    )?;
    let mut out = wasm.to_path_buf().into_os_string();
    out.push(".sig");
    std::fs::write(&out, format!("{line}\n"))
        .with_context(|| format!("writing {}", PathBuf::from(&out).display()))?;
    println!(
        "signed {component} as {publisher}: {}",
        PathBuf::from(&out).display()
    );
    Ok(())
}

fn check(wasm: &std::path::Path, policy_path: &std::path::Path) -> anyhow::Result<()> {
    use crate::runtime::loader::{ImportStatus, classify_imports, digest, missing_exports};

    let policy = crate::policy::load_file(policy_path)?;
    let policy_problems = crate::policy::check(&policy, u32::MAX);
    let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    let engine = wasmtime::Engine::new(&config)?;
    let component = wasmtime::component::Component::new(&engine, &bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid component (build it for wasm32-wasip2): {e:#}",
            wasm.display()
        )
    })?;
    let imports = classify_imports(&engine, &component, &policy, &policy.name);
    let missing = missing_exports(&engine, &component);
    let refused = imports
        .iter()
        .filter(|i| i.status == ImportStatus::Refused)
        .count();
    let loads = policy_problems.is_empty() && missing.is_empty() && refused == 0;
    let report = serde_json::json!({
        "component": policy.name,
        "digest": digest(&bytes),
        "loads": loads,
        "policy_problems": policy_problems,
        "imports": imports,
        "missing_exports": missing,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !loads {
        anyhow::bail!(
            "`{}` would not load: {} policy problem(s), {refused} refused import(s), missing exports {missing:?}",
            policy.name,
            policy_problems.len()
        );
    }
    Ok(())
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let overrides = Overrides {
                role: args.role,
                nodes: args.nodes,
                listen: args.listen,
                admin_listen: args.admin_listen,
                data_dir: args.data_dir,
                policies_dir: args.policies,
            };
            let config = crate::config::Config::load(args.config.as_deref(), overrides)?;
            crate::serve::serve(config).await
        }
        Command::Component(command) => component(command).await,
    }
}

async fn component(command: ComponentCommand) -> anyhow::Result<()> {
    let (admin, request) = match command {
        ComponentCommand::Keygen { out } => return keygen(&out),
        ComponentCommand::Check { wasm, policy } => return check(&wasm, &policy),
        ComponentCommand::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            println!(
                "{}",
                crate::scaffold::new(&name, lang, &dir, sdk.as_deref())?
            );
            return Ok(());
        }
        ComponentCommand::Sign {
            wasm,
            policy,
            key,
            publisher,
        } => return sign(&wasm, &policy, &key, &publisher),
        ComponentCommand::List(admin) => {
            let url = format!("{}/admin/components", admin.admin_url);
            (admin, reqwest::Client::new().get(url))
        }
        ComponentCommand::Deploy { name, file, admin } => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let url = format!("{}/admin/components/{name}", admin.admin_url);
            let mut request = reqwest::Client::new().put(url).body(wasm);
            if let Some(signature) = signature_beside(&file) {
                request = request.header(crate::admin::SIGNATURE_HEADER, signature);
            }
            (admin, request)
        }
        ComponentCommand::Install {
            name,
            wasm: file,
            policy,
            admin,
        } => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let policy = std::fs::read_to_string(&policy)
                .with_context(|| format!("reading {}", policy.display()))?;
            let mut form = reqwest::multipart::Form::new()
                .text("name", name)
                .text("policy", policy)
                .part(
                    "wasm",
                    reqwest::multipart::Part::bytes(wasm).mime_str("application/wasm")?,
                );
            if let Some(signature) = signature_beside(&file) {
                form = form.text("signature", signature);
            }
            let url = format!("{}/admin/components", admin.admin_url);
            (admin, reqwest::Client::new().post(url).multipart(form))
        }
        ComponentCommand::Uninstall { name, admin } => {
            let url = format!("{}/admin/components/{name}", admin.admin_url);
            (admin, reqwest::Client::new().delete(url))
        }
        ComponentCommand::Rollback { name, to, admin } => {
            let url = format!("{}/admin/components/{name}/rollback", admin.admin_url);
            let request = reqwest::Client::new().post(url);
            let request = match to {
                Some(digest) => request.json(&serde_json::json!({ "digest": digest })),
                None => request,
            };
            (admin, request)
        }
        ComponentCommand::Versions { name, admin } => {
            let url = format!("{}/admin/components/{name}/versions", admin.admin_url);
            (admin, reqwest::Client::new().get(url))
        }
        ComponentCommand::Reset { name, admin } => {
            let url = format!("{}/admin/components/{name}/reset", admin.admin_url);
            (admin, reqwest::Client::new().post(url))
        }
    };
    let token = match admin.token {
        Some(token) => token,
        None => {
            let path = admin.data_dir.join(crate::admin::TOKEN_FILE);
            std::fs::read_to_string(&path)
                .with_context(|| format!("no --token given and {} cannot be read", path.display()))?
                .trim()
                .to_string()
        }
    };
    let response = request
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("the admin API at {} did not answer", admin.admin_url))?;
    let status = response.status();
    if status == reqwest::StatusCode::NO_CONTENT {
        println!("done");
        return Ok(());
    }
    let body: serde_json::Value = response
        .json()
        .await
        .context("the admin API's answer is not JSON")?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    if status.is_success() {
        Ok(())
    } else {
        let detail = body
            .get("detail")
            .and_then(|d| d.as_str())
            .unwrap_or("no detail");
        anyhow::bail!("{status}: {detail}")
    }
}

/// The signature line `component sign` wrote beside `wasm` (`<wasm>.sig`), if there is one.
fn signature_beside(wasm: &Path) -> Option<String> {
    let mut path = wasm.as_os_str().to_owned();
    path.push(".sig");
    std::fs::read_to_string(path)
        .ok()
        .map(|signature| signature.trim().to_string())
}

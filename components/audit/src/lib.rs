//! The audit log. It consumes every topic of the platform (its policy's `[subscriptions]`) and
//! stores each event once, by id, as an entry: who (actor, organization), what (action =
//! the event's type, resource = its subject, data), when (the event's time) and where (IP, user
//! agent, request id). The `entries` table is append-only (the policy's `append_only`: the
//! engine refuses updates and deletes).
//!
//! The entries of each organization form a hash chain: entry `n` stores
//! `hash = sha256(prev_hash "\n" canonical(entry))`, where `prev_hash` is entry `n-1`'s hash
//! (64 zeros for the first) and `canonical` the entry's fields as compact JSON with sorted
//! keys. Changing, removing or reordering any entry breaks every hash from there on, which
//! `GET /audit/api/verify` reports. Events outside any organization (a sign-up, a failed login
//! for an unknown address) form the platform's own chain, under the organization id "".
//!
//! Reading the log is audited too: listing, exporting and verifying publish
//! `audit.logs.read` / `audit.logs.exported` / `audit.chain.verified` on `audit.access.events`,
//! which the component consumes like any other topic.

mod chain;

use serde::Serialize;
use serde_json::{Value, json};
use truevalue_sdk::prelude::*;

pub use chain::{GENESIS, canonical, link};

/// The topic on which reads of the log are published.
const ACCESS_TOPIC: &str = "audit.access.events";
/// Rows read at a time when verifying or exporting a chain.
const CHUNK: i64 = 1000;

struct Audit;

impl App for Audit {
    fn router() -> Router {
        Router::new()
            .post("/audit/internal/events", record)
            .get("/audit/api/logs", logs)
            .get("/audit/api/verify", verify)
            .get("/audit/api/export", export)
    }

    fn migrations(_dialect: Dialect) -> Vec<Migration> {
        vec![Migration {
            id: 1,
            name: "entries",
            sql: "CREATE TABLE entries (
                org_id TEXT NOT NULL,
                seq BIGINT NOT NULL,
                id TEXT NOT NULL UNIQUE,
                time TEXT NOT NULL,
                actor_id TEXT,
                action TEXT NOT NULL,
                resource TEXT NOT NULL,
                source TEXT NOT NULL,
                ip TEXT,
                user_agent TEXT,
                request_id TEXT,
                data TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                PRIMARY KEY (org_id, seq)
            )",
        }]
    }
}

/// One entry, as stored and as the API shows it (without the chain's fields).
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Entry {
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    pub org_id: String,
    pub time: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub resource: String,
    pub source: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    #[serde(serialize_with = "as_json")]
    pub data: String,
    #[serde(skip)]
    pub prev_hash: String,
    #[serde(skip)]
    pub hash: String,
}

/// The stored data text as the JSON it is.
fn as_json<S: serde::Serializer>(data: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serde_json::from_str::<Value>(data)
        .unwrap_or(Value::Null)
        .serialize(serializer)
}

const COLUMNS: &str = "seq, id, org_id, time, actor_id, action, resource, source, ip, \
                       user_agent, request_id, data, prev_hash, hash";

/// An event delivered by the host (CloudEvents HTTP binary binding): appended to its
/// organization's chain unless it is there already. 503 when another delivery appended to the
/// same chain at the same moment: the host tries again without counting it as a failure.
fn record(req: &Request) -> Result<Response, Problem> {
    let header = |name: &str| req.header(name).map(str::to_string);
    let id = header("ce-id").ok_or_else(|| Problem::field("ce-id", "is required"))?;
    let known = db::query(
        "SELECT 1 AS known FROM entries WHERE id = $1",
        &[id.as_str().into()],
    )?;
    if !known.is_empty() {
        return Ok(Response::no_content());
    }
    let data = String::from_utf8_lossy(req.body()).into_owned();
    let org_id = header("ce-orgid").unwrap_or_default();
    let last: Option<Entry> = db::query_one(
        &format!("SELECT {COLUMNS} FROM entries WHERE org_id = $1 ORDER BY seq DESC LIMIT 1"),
        &[org_id.as_str().into()],
    )?;
    let (seq, prev_hash) = match last {
        Some(last) => (last.seq + 1, last.hash),
        None => (1, GENESIS.to_string()),
    };
    let mut entry = Entry {
        seq,
        id,
        org_id,
        time: header("ce-time").unwrap_or_default(),
        actor_id: header("ce-actorid"),
        action: header("ce-type").unwrap_or_default(),
        resource: header("ce-subject").unwrap_or_default(),
        source: header("ce-source").unwrap_or_default(),
        ip: header("ce-clientip"),
        user_agent: header("ce-useragent"),
        request_id: header("ce-requestid"),
        data,
        prev_hash,
        hash: String::new(),
    };
    entry.hash = link(&entry.prev_hash, &canonical(&entry));
    let inserted = db::execute(
        &format!(
            "INSERT INTO entries ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ),
        &[
            entry.seq.into(),
            entry.id.as_str().into(),
            entry.org_id.as_str().into(),
            entry.time.as_str().into(),
            entry.actor_id.clone().into(),
            entry.action.as_str().into(),
            entry.resource.as_str().into(),
            entry.source.as_str().into(),
            entry.ip.clone().into(),
            entry.user_agent.clone().into(),
            entry.request_id.clone().into(),
            entry.data.as_str().into(),
            entry.prev_hash.as_str().into(),
            entry.hash.as_str().into(),
        ],
    );
    match inserted {
        Ok(_) => Ok(Response::no_content()),
        Err(e) if e.is_unique_violation() => Err(Problem::new(
            503,
            "chain-busy",
            "Try again",
            "another entry was appended to this chain at the same moment",
        )),
        Err(e) => Err(e.into()),
    }
}

/// `GET /audit/api/logs?actor=&action=&from=&to=&limit=&cursor=`: the caller's organization's
/// entries, oldest first.
fn logs(req: &Request) -> Result<Response, Problem> {
    let caller = req.require("audit:read")?;
    let page = Page::from_request(req)?;
    let after: i64 = match &page.after {
        Some(after) => after
            .parse()
            .map_err(|_| Problem::field("cursor", "is not one this API returned"))?,
        None => 0,
    };
    let filter = |name: &str| req.query(name).filter(|value| !value.is_empty());
    let rows: Vec<Entry> = db::query_as(
        &format!(
            "SELECT {COLUMNS} FROM entries WHERE org_id = $1 AND seq > $2 \
             AND ($3 IS NULL OR actor_id = $3) AND ($4 IS NULL OR action = $4) \
             AND ($5 IS NULL OR time >= $5) AND ($6 IS NULL OR time <= $6) \
             ORDER BY seq LIMIT $7"
        ),
        &[
            caller.org_id.as_str().into(),
            after.into(),
            filter("actor").into(),
            filter("action").into(),
            filter("from").into(),
            filter("to").into(),
            page.fetch().into(),
        ],
    )?;
    accessed(
        "audit.logs.read",
        &caller,
        json!({ "entries": rows.len().min(page.limit as usize) }),
    )?;
    page.respond(rows, |entry| entry.seq.to_string())
}

/// `GET /audit/api/verify`: recomputes the caller's organization's chain from its first entry;
/// `{valid, entries, first_broken}` where `first_broken` is the first entry whose hash, link or
/// position does not hold.
fn verify(req: &Request) -> Result<Response, Problem> {
    let caller = req.require("audit:read")?;
    let mut checked = 0i64;
    let mut prev_hash = GENESIS.to_string();
    let mut broken: Option<Value> = None;
    'chain: loop {
        let rows: Vec<Entry> = chunk(&caller.org_id, checked)?;
        let full = rows.len() as i64 == CHUNK;
        for entry in rows {
            checked += 1;
            let why = if entry.seq != checked {
                Some("an entry before it is missing")
            } else if entry.prev_hash != prev_hash {
                Some("it does not link to the entry before it")
            } else if entry.hash != link(&entry.prev_hash, &canonical(&entry)) {
                Some("its content does not match its hash")
            } else {
                None
            };
            if let Some(why) = why {
                broken = Some(json!({ "seq": checked, "id": entry.id, "reason": why }));
                break 'chain;
            }
            prev_hash = entry.hash;
        }
        if !full {
            break;
        }
    }
    let valid = broken.is_none();
    accessed(
        "audit.chain.verified",
        &caller,
        json!({ "valid": valid, "entries": checked }),
    )?;
    Response::json(
        200,
        &json!({ "valid": valid, "entries": checked, "first_broken": broken }),
    )
}

/// `GET /audit/api/export`: every entry of the caller's organization as JSON Lines, oldest
/// first, each with its `seq`, `prev_hash` and `hash` so the chain can be checked elsewhere.
fn export(req: &Request) -> Result<Response, Problem> {
    let caller = req.require("audit:read")?;
    let mut body = Vec::new();
    let mut after = 0i64;
    loop {
        let rows = chunk(&caller.org_id, after)?;
        let full = rows.len() as i64 == CHUNK;
        for entry in &rows {
            let mut line = serde_json::to_value(entry)
                .map_err(|e| Problem::internal(format!("encoding an entry: {e}")))?;
            line["seq"] = json!(entry.seq);
            line["prev_hash"] = json!(entry.prev_hash);
            line["hash"] = json!(entry.hash);
            body.extend_from_slice(line.to_string().as_bytes());
            body.push(b'\n');
            after = entry.seq;
        }
        if !full {
            break;
        }
    }
    accessed("audit.logs.exported", &caller, json!({ "entries": after }))?;
    Ok(Response::new(200)
        .header("content-type", "application/x-ndjson")
        .header(
            "content-disposition",
            "attachment; filename=\"audit.jsonl\"",
        )
        .body(body))
}

/// The organization's entries after position `after`, at most [`CHUNK`].
fn chunk(org_id: &str, after: i64) -> Result<Vec<Entry>, Problem> {
    Ok(db::query_as(
        &format!(
            "SELECT {COLUMNS} FROM entries WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ),
        &[org_id.into(), after.into(), CHUNK.into()],
    )?)
}

/// Publishes that `caller` read the log.
fn accessed(action: &str, caller: &OrgCaller, data: Value) -> Result<(), Problem> {
    truevalue_sdk::events::publish(ACCESS_TOPIC, action, &caller.user_id, &data)?;
    Ok(())
}

truevalue_sdk::component!(Audit);

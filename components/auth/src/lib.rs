//! The auth component: accounts, sessions, refresh-token rotation, TOTP and lockout.
//!
//! Every `/auth` route of the REST contract. Passwords are hashed by the host (Argon2id) and
//! access tokens are minted by the host, which keeps the keys; this component keeps accounts,
//! sessions and refresh tokens in its own database.
//!
//! - A login opens a **session** (device = user agent, IP, created, last seen). Its refresh token
//!   is stored only as an HMAC. Refreshing spends the token and issues the next one; presenting
//!   a spent token again means it was copied, so the whole session (the token family) is revoked.
//! - Logging out, revoking a session and changing the password revoke sessions in the host too,
//!   so the gateway refuses their access tokens from the next request on.
//! - Five consecutive failed attempts lock an email address for 15 minutes, whether or not an
//!   account has it (so an unknown address answers exactly like an account). Each attempt is
//!   settled in one conditional update against the lock, so parallel attempts are decided one
//!   at a time and no more than five wrong guesses ever get an answer other than 423.
//! - With TOTP enabled, a login needs a code (or a recovery code); a step's code is accepted
//!   once: the last step used is kept and only later steps pass.
//! - Every account change and every sign-in, succeeded or failed, is published on
//!   `auth.user.events` (see [`audit`]).

mod audit;
mod password;
mod totp;

use serde::{Deserialize, Serialize};
use serde_json::json;
use truevalue_sdk::bindings::truevalue::platform::{crypto, tokens};
use truevalue_sdk::http::percent_encode;
use truevalue_sdk::prelude::*;
use truevalue_sdk::time::{now, rfc3339};
use truevalue_sdk::{hex, id};

/// How long a refresh token (and an idle session) lives.
const REFRESH_TTL: i64 = 7 * 24 * 3600;
/// Failed attempts in a row that lock an account.
const MAX_FAILURES: i64 = 5;
/// How long a lock lasts unless the policy's `lockout_seconds` says otherwise.
const LOCKOUT: i64 = 15 * 60;
/// Recovery codes handed out when TOTP is enabled.
const RECOVERY_CODES: usize = 10;
/// Issuer shown by authenticator apps.
const ISSUER: &str = "TrueValue";
/// An Argon2id hash (same parameters as the host's) checked when the email is unknown, so
/// that an unknown email costs the same time as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$zBadTIMSdQEOrV+fQoQjbQ$A8kissREUg8953WcAKzipZwfbI27AKdjfnhNcEAbbS8";

struct Auth;

impl App for Auth {
    fn router() -> Router {
        Router::new()
            .post("/auth/register", register)
            .post("/auth/login", login)
            .post("/auth/refresh", refresh)
            .post("/auth/logout", logout)
            .post("/auth/switch-org", switch_org)
            .get("/auth/me", me)
            .get("/auth/sessions", list_sessions)
            .delete("/auth/sessions/{id}", revoke_session)
            .post("/auth/mfa/totp/setup", totp_setup)
            .post("/auth/mfa/totp/enable", totp_enable)
            .post("/auth/mfa/disable", mfa_disable)
            .post("/auth/password/change", change_password)
            .post("/auth/internal/users", users_by_id)
    }

    fn migrations(_dialect: Dialect) -> Vec<Migration> {
        vec![
            Migration {
                id: 1,
                name: "accounts, sessions, refresh tokens, recovery codes, memberships",
                sql: SCHEMA,
            },
            Migration {
                id: 2,
                name: "memberships are the org component's alone",
                sql: "DROP TABLE memberships",
            },
        ]
    }
}

truevalue_sdk::component!(Auth);

/// Times are Unix seconds; flags are integers. Both engines accept this SQL as it is.
const SCHEMA: &str = "
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    totp_secret TEXT,
    totp_pending TEXT,
    totp_last_step BIGINT
);
-- Failed attempts in a row per email address (a keyed hash of it), whether or not an account
-- has that address, so that an unknown address locks exactly like an account.
CREATE TABLE login_attempts (
    email_key TEXT PRIMARY KEY,
    failed BIGINT NOT NULL,
    locked_until BIGINT
);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    org_id TEXT,
    user_agent TEXT NOT NULL,
    ip TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    spent_at BIGINT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);
CREATE TABLE recovery_codes (
    user_id TEXT NOT NULL REFERENCES users (id),
    code_hash TEXT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);
-- The organizations each user belongs to, with the roles and permissions held there; written
-- from the organization service's membership events.
CREATE TABLE memberships (
    user_id TEXT NOT NULL,
    org_id TEXT NOT NULL,
    org_slug TEXT NOT NULL,
    org_name TEXT NOT NULL,
    roles TEXT NOT NULL,
    permissions TEXT NOT NULL,
    plan TEXT,
    PRIMARY KEY (user_id, org_id)
);
CREATE INDEX memberships_by_slug ON memberships (user_id, org_slug);
";

// ---------------------------------------------------------------------------------------------
// Accounts

/// Most accounts one `POST /auth/internal/users` looks up.
const MAX_LOOKUP: usize = 1000;

#[derive(Deserialize)]
struct UserIds {
    ids: Vec<String>,
}

#[derive(FromRow, Serialize)]
struct PublicUser {
    id: String,
    email: String,
    name: String,
    status: String,
}

/// `POST /auth/internal/users {ids}`: the accounts with those ids (unknown ids are left out),
/// for the org component's member lists — one call for a whole page of members.
fn users_by_id(request: &Request) -> Result<Response, Problem> {
    request.require_caller(&["org"])?;
    let body: UserIds = request.json()?;
    if body.ids.len() > MAX_LOOKUP {
        return Err(Problem::field(
            "ids",
            format!("at most {MAX_LOOKUP} ids at a time"),
        ));
    }
    let mut items: Vec<PublicUser> = Vec::with_capacity(body.ids.len());
    for chunk in body.ids.chunks(100) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let params: Vec<Value> = chunk.iter().map(|id| id.as_str().into()).collect();
        items.extend(db::query_as::<PublicUser>(
            &format!(
                "SELECT id, email, name, status FROM users WHERE id IN ({})",
                placeholders.join(", ")
            ),
            &params,
        )?);
    }
    Response::json(200, &json!({ "items": items }))
}

#[derive(Deserialize)]
struct Registration {
    email: String,
    password: String,
    name: String,
}

fn register(request: &Request) -> Result<Response, Problem> {
    let body: Registration = request.json()?;
    let email = normalize_email(&body.email)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Problem::field(
            "name",
            "must be between 1 and 200 characters",
        ));
    }
    if !is_plain_text(name) {
        return Err(Problem::field(
            "name",
            "must not contain control or text-direction characters",
        ));
    }
    password::check(&body.password, &email)?;
    // Hashed before the address is looked up, so that a taken address costs the same time as
    // a new one and the answer's timing does not tell which addresses have accounts.
    let hash = crypto::hash_password(&body.password);
    let taken = || Problem::conflict("an account with this email already exists");
    let exists = db::query(
        "SELECT id FROM users WHERE email = $1",
        &[email.as_str().into()],
    )?;
    if !exists.is_empty() {
        return Err(taken());
    }
    let (id, now) = (id::new(), now());
    db::execute(
        "INSERT INTO users (id, email, name, password_hash, status, created_at)
         VALUES ($1, $2, $3, $4, 'active', $5)",
        &[
            id.as_str().into(),
            email.as_str().into(),
            name.into(),
            hash.into(),
            now.into(),
        ],
    )
    // Registered in parallel, between the check and the insert.
    .on_conflict(taken)?;
    // Sent by the host once the account is committed.
    truevalue_sdk::email::send(
        &email,
        "Welcome to TrueValue",
        &format!(
            "Hello {name},\n\nyour TrueValue account {email} is ready. Sign in to create an \
             organization or to accept an invitation.\n"
        ),
    )?;
    audit::publish(
        None,
        "user.registered",
        &id,
        &json!({ "user_id": id, "email": email }),
    )?;
    Response::json(
        201,
        &json!({ "id": id, "email": email, "name": name, "status": "active",
                 "created_at": rfc3339(now) }),
    )
}

/// Trimmed and lower-cased; refused unless it looks like an address.
fn normalize_email(raw: &str) -> Result<String, Problem> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        })
        && !email.chars().any(char::is_whitespace)
        && is_plain_text(&email);
    if !valid {
        return Err(Problem::field("email", "must be an email address"));
    }
    Ok(email)
}

/// Text without control characters (NUL, escapes, line breaks) and without the invisible
/// formatting characters that reorder or hide what a reader sees (U+202E and its kin), which
/// have no place in a name or an address and which some engines refuse to store.
fn is_plain_text(text: &str) -> bool {
    !text.chars().any(|c| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
    })
}

#[derive(FromRow)]
struct User {
    id: String,
    email: String,
    name: String,
    password_hash: String,
    status: String,
    created_at: i64,
    totp_secret: Option<String>,
    totp_pending: Option<String>,
}

const USER_COLUMNS: &str =
    "id, email, name, password_hash, status, created_at, totp_secret, totp_pending";

fn user_by(column: &str, value: &str) -> Result<Option<User>, Problem> {
    Ok(db::query_one(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = $1"),
        &[value.into()],
    )?)
}

/// The caller's account; the gateway has verified the token, so only a deleted account is
/// missing.
fn current_user(request: &Request) -> Result<User, Problem> {
    let (user_id, _) = caller(request)?;
    user_by("id", &user_id)?.ok_or_else(invalid_session)
}

/// The caller's user and session ids, as the gateway verified them. Every route here works on
/// a session, so a caller without one is told to log in again.
fn caller(request: &Request) -> Result<(String, String), Problem> {
    let user = request.user().map_err(|_| invalid_session())?;
    let session = user.session_id.ok_or_else(invalid_session)?;
    Ok((user.id, session))
}

fn invalid_session() -> Problem {
    Problem::new(
        401,
        "invalid-session",
        "Unauthorized",
        "the session has ended; log in again",
    )
}

fn me(request: &Request) -> Result<Response, Problem> {
    let user = current_user(request)?;
    Response::json(
        200,
        &json!({ "id": user.id, "email": user.email, "name": user.name, "status": user.status,
                 "created_at": rfc3339(user.created_at),
                 "mfa_enabled": user.totp_secret.is_some() }),
    )
}

// ---------------------------------------------------------------------------------------------
// Password attempts and lockout

fn invalid_credentials() -> Problem {
    Problem::new(
        401,
        "invalid-credentials",
        "Unauthorized",
        "the email or password is wrong",
    )
}

/// How long a lock lasts: the policy's `lockout_seconds`, 15 minutes by default.
fn lockout() -> i64 {
    config::get("lockout_seconds")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|&seconds| seconds > 0)
        .unwrap_or(LOCKOUT)
}

fn locked() -> Problem {
    let seconds = lockout();
    let length = match seconds % 60 {
        0 => format!("{} minutes", seconds / 60),
        _ => format!("{seconds} seconds"),
    };
    Problem::new(
        423,
        "account-locked",
        "Locked",
        format!("too many failed attempts: the account is locked for {length}"),
    )
}

/// Attempts are counted per email address under a keyed hash of it: the address itself is not
/// stored for an unknown account.
fn attempts_key(email: &str) -> String {
    hex::encode(&crypto::hmac_sha256(format!("login:{email}").as_bytes()))
}

/// Whether a lock is in force on the address `key`.
fn is_locked(key: &str) -> Result<bool, Problem> {
    let locked_until: Option<Option<i64>> = db::query(
        "SELECT locked_until FROM login_attempts WHERE email_key = $1",
        &[key.into()],
    )?
    .first()
    .map(|row| row.get("locked_until"))
    .transpose()?;
    Ok(locked_until.flatten().is_some_and(|until| until > now()))
}

/// How a checked attempt ended.
#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Failed,
    Passed,
    /// The password was right; a second factor is still to come.
    Pending,
}

/// What settling an attempt did to the address's lock.
#[derive(Clone, Copy, PartialEq)]
enum Settled {
    /// Counted (a failure), cleared (a success) or left (pending).
    Counted,
    /// This failure was the last one allowed: the address is locked from now on.
    LockedNow,
    /// The address was locked already: the attempt is answered 423.
    Locked,
}

/// Settles a checked attempt on the address `key` in one conditional update, so parallel
/// attempts are decided one at a time against the lock: a failure counts (the fifth in a row
/// locks the address), a success clears the count, a pending attempt leaves it. Once locked,
/// every attempt is answered 423, whatever its outcome, so parallel guesses learn nothing past
/// the fifth. The update comes after the password hash, never before: on SQLite a request holds
/// the write lock from its first write on.
fn settle(key: &str, outcome: Outcome) -> Result<Settled, Problem> {
    db::execute(
        "INSERT INTO login_attempts (email_key, failed) VALUES ($1, 0)
         ON CONFLICT (email_key) DO NOTHING",
        &[key.into()],
    )?;
    let now = now();
    let mut params: Vec<Value> = vec![key.into(), now.into(), MAX_FAILURES.into()];
    let (failed, locked_until) = match outcome {
        Outcome::Failed => {
            params.push((now + lockout()).into());
            (
                "CASE WHEN locked_until <= $2 THEN 1 ELSE failed + 1 END",
                "CASE WHEN locked_until <= $2 THEN NULL \
                      WHEN failed + 1 >= $3 THEN $4 ELSE locked_until END",
            )
        }
        Outcome::Passed => ("0", "NULL"),
        Outcome::Pending => ("failed", "locked_until"),
    };
    let settled = db::query(
        &format!(
            "UPDATE login_attempts SET failed = {failed}, locked_until = {locked_until}
             WHERE email_key = $1 AND (failed < $3 OR locked_until <= $2)
             RETURNING failed"
        ),
        &params,
    )?;
    let Some(row) = settled.first() else {
        return Ok(Settled::Locked);
    };
    let failed: i64 = row.get("failed")?;
    Ok(match outcome == Outcome::Failed && failed >= MAX_FAILURES {
        true => Settled::LockedNow,
        false => Settled::Counted,
    })
}

/// One attempt to prove who one is, counted against the lock of the address `key`: a login,
/// or a signed-in user's password (and code) before a sensitive change (`action`). Its
/// failures are published — `user.login_failed` for a login, `user.reauth_failed` for the
/// others — and so is the lock the last allowed failure sets (`user.locked`).
struct Attempted<'a> {
    key: &'a str,
    /// None for an address no account has.
    user: Option<&'a User>,
    /// `login`, `password.change` or `mfa.disable`.
    action: &'static str,
}

impl Attempted<'_> {
    /// Checks `password` against `hash`: refused at once while the address is locked (423),
    /// settled as a failure when wrong (401).
    fn check_password(&self, password: &str, hash: &str) -> Result<(), Problem> {
        if is_locked(self.key)? {
            self.published_failure("locked");
            return Err(locked());
        }
        if !crypto::verify_password(password, hash) {
            let reason = match self.user {
                Some(_) => "wrong_password",
                None => "unknown_email",
            };
            return Err(self.fail(reason, invalid_credentials())?);
        }
        Ok(())
    }

    /// Counts a failure against the lock and publishes it; answers `problem`, or 423 when the
    /// address was locked meanwhile.
    fn fail(&self, reason: &str, problem: Problem) -> Result<Problem, Problem> {
        Ok(match settle(self.key, Outcome::Failed)? {
            Settled::Locked => {
                self.published_failure("locked");
                locked()
            }
            Settled::LockedNow => {
                self.published_failure(reason);
                self.published_lock();
                problem
            }
            Settled::Counted => {
                self.published_failure(reason);
                problem
            }
        })
    }

    /// Settles a passed or pending attempt; 423 when the address was locked meanwhile.
    fn settle(&self, outcome: Outcome) -> Result<(), Problem> {
        match settle(self.key, outcome)? {
            Settled::Locked => {
                self.published_failure("locked");
                Err(locked())
            }
            Settled::Counted | Settled::LockedNow => Ok(()),
        }
    }

    /// A login refused after its credentials passed (a disabled account).
    fn refused(&self, reason: &str) {
        self.published_failure(reason);
    }

    fn subject(&self) -> &str {
        self.user.map_or("", |user| user.id.as_str())
    }

    /// `user.login_failed` or `user.reauth_failed`: never the password or the code, and not
    /// the address unless an account has it (only its keyed hash, which the lock uses too).
    fn published_failure(&self, reason: &str) {
        let mut data = json!({ "reason": reason, "email_key": self.key });
        if let Some(user) = self.user {
            data["user_id"] = json!(user.id);
            data["email"] = json!(user.email);
        }
        let kind = match self.action {
            "login" => "user.login_failed",
            action => {
                data["action"] = json!(action);
                "user.reauth_failed"
            }
        };
        audit::publish_refusal(kind, self.subject(), &data);
    }

    fn published_lock(&self) {
        let mut data = json!({
            "email_key": self.key,
            "failed_attempts": MAX_FAILURES,
            "locked_until": rfc3339(now() + lockout()),
            "action": self.action,
        });
        if let Some(user) = self.user {
            data["user_id"] = json!(user.id);
            data["email"] = json!(user.email);
        }
        audit::publish_refusal("user.locked", self.subject(), &data);
    }
}

// ---------------------------------------------------------------------------------------------
// Second factor

fn mfa_required() -> Problem {
    Problem::new(
        401,
        "mfa-required",
        "Unauthorized",
        "this account uses two-factor authentication: send `mfa_code`",
    )
}

fn mfa_invalid(status: u16) -> Problem {
    Problem::new(
        status,
        "mfa-invalid",
        "Invalid code",
        "the code is wrong, expired or already used",
    )
}

/// A second factor that was accepted, as the events name it.
#[derive(Clone, Copy)]
enum Factor {
    Totp,
    RecoveryCode,
}

impl Factor {
    fn name(self) -> &'static str {
        match self {
            Factor::Totp => "totp",
            Factor::RecoveryCode => "recovery_code",
        }
    }
}

/// Accepts a TOTP code of a step later than the last one used, or an unused recovery code,
/// and marks it used; which one it was, or None when the code is neither. `sealed` is the
/// user's stored secret.
fn accept_second_factor(user: &User, sealed: &str, code: &str) -> Result<Option<Factor>, Problem> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if let Some(step) = totp::matching_step(&unseal(sealed)?, &code, now_u64()) {
        let step = i64::try_from(step).map_err(|_| Problem::internal("step out of range"))?;
        let taken = db::execute(
            "UPDATE users SET totp_last_step = $2
             WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
            &[user.id.as_str().into(), step.into()],
        )?;
        return Ok((taken == 1).then_some(Factor::Totp));
    }
    let used = db::execute(
        "UPDATE recovery_codes SET used_at = $3
         WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
        &[
            user.id.as_str().into(),
            recovery_hash(&code).into(),
            now().into(),
        ],
    )?;
    Ok((used == 1).then_some(Factor::RecoveryCode))
}

#[derive(Deserialize)]
struct Code {
    code: String,
}

fn totp_setup(request: &Request) -> Result<Response, Problem> {
    let user = current_user(request)?;
    if user.totp_secret.is_some() {
        return Err(Problem::conflict(
            "two-factor authentication is already enabled; disable it first",
        ));
    }
    let secret = crypto::random_bytes(20);
    db::execute(
        "UPDATE users SET totp_pending = $2 WHERE id = $1",
        &[user.id.as_str().into(), seal(&secret).into()],
    )?;
    audit::publish(
        None,
        "mfa.setup_started",
        &user.id,
        &json!({ "user_id": user.id, "method": "totp" }),
    )?;
    let encoded = totp::base32(&secret);
    let uri = format!(
        "otpauth://totp/{ISSUER}:{account}?secret={encoded}&issuer={ISSUER}&algorithm=SHA1&digits={}&period={}",
        totp::DIGITS,
        totp::STEP,
        account = percent_encode(&user.email),
    );
    Response::json(200, &json!({ "secret": encoded, "otpauth_uri": uri }))
}

fn totp_enable(request: &Request) -> Result<Response, Problem> {
    let body: Code = request.json()?;
    let user = current_user(request)?;
    let pending = user.totp_pending.as_deref().ok_or_else(|| {
        Problem::conflict("no TOTP secret is waiting: call /auth/mfa/totp/setup first")
    })?;
    let step = totp::matching_step(&unseal(pending)?, body.code.trim(), now_u64())
        .and_then(|step| i64::try_from(step).ok())
        .ok_or_else(|| mfa_invalid(422))?;
    // Enables the secret just checked, not one a setup racing this request put in its place.
    let enabled = db::execute(
        "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = $2
         WHERE id = $1 AND totp_pending = $3 AND totp_secret IS NULL",
        &[user.id.as_str().into(), step.into(), pending.into()],
    )?;
    if enabled == 0 {
        return Err(Problem::conflict(
            "the TOTP setup changed meanwhile: use the newest secret",
        ));
    }
    db::execute(
        "DELETE FROM recovery_codes WHERE user_id = $1",
        &[user.id.as_str().into()],
    )?;
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let code = recovery_code();
        db::execute(
            "INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)",
            &[user.id.as_str().into(), recovery_hash(&code).into()],
        )?;
        codes.push(code);
    }
    audit::publish(
        None,
        "mfa.enabled",
        &user.id,
        &json!({ "user_id": user.id, "method": "totp", "recovery_codes": codes.len() }),
    )?;
    Response::json(200, &json!({ "recovery_codes": codes }))
}

#[derive(Deserialize)]
struct Disable {
    password: String,
    code: String,
}

fn mfa_disable(request: &Request) -> Result<Response, Problem> {
    let body: Disable = request.json()?;
    let user = current_user(request)?;
    let Some(secret) = user.totp_secret.clone() else {
        return Err(Problem::conflict(
            "two-factor authentication is not enabled",
        ));
    };
    let key = attempts_key(&user.email);
    let attempt = Attempted {
        key: &key,
        user: Some(&user),
        action: "mfa.disable",
    };
    attempt
        .check_password(&body.password, &user.password_hash)
        .map_err(forbidden_if_unauthorized)?;
    let Some(factor) = accept_second_factor(&user, &secret, &body.code)? else {
        return Err(attempt.fail("mfa_invalid", mfa_invalid(403))?);
    };
    attempt.settle(Outcome::Passed)?;
    db::execute(
        "UPDATE users SET totp_secret = NULL, totp_pending = NULL, totp_last_step = NULL
         WHERE id = $1",
        &[user.id.as_str().into()],
    )?;
    db::execute(
        "DELETE FROM recovery_codes WHERE user_id = $1",
        &[user.id.as_str().into()],
    )?;
    audit::publish(
        None,
        "mfa.disabled",
        &user.id,
        &json!({ "user_id": user.id, "method": "totp", "confirmed_with": factor.name() }),
    )?;
    Ok(Response::no_content())
}

/// A wrong password from a signed-in caller is 403: their access token is fine, so a 401 would
/// send clients to refresh it.
fn forbidden_if_unauthorized(mut problem: Problem) -> Problem {
    if problem.status == 401 {
        problem.status = 403;
        problem.title = "Forbidden".into();
    }
    problem
}

/// TOTP secrets are stored sealed: XORed with HMAC-SHA256 under the component's host-held key
/// of a random nonce kept beside them. A copy of the database alone does not reveal them.
fn seal(secret: &[u8]) -> String {
    let nonce = crypto::random_bytes(16);
    let pad = totp_pad(&nonce);
    let sealed: Vec<u8> = secret.iter().zip(pad).map(|(s, p)| s ^ p).collect();
    hex::encode(&[nonce, sealed].concat())
}

fn unseal(stored: &str) -> Result<Vec<u8>, Problem> {
    let bytes =
        hex::decode(stored).ok_or_else(|| Problem::internal("a stored TOTP secret is not hex"))?;
    if !(17..=48).contains(&bytes.len()) {
        return Err(Problem::internal(
            "a stored TOTP secret has the wrong length",
        ));
    }
    let (nonce, sealed) = bytes.split_at(16);
    Ok(sealed
        .iter()
        .zip(totp_pad(nonce))
        .map(|(s, p)| s ^ p)
        .collect())
}

fn totp_pad(nonce: &[u8]) -> Vec<u8> {
    crypto::hmac_sha256(&[b"totp secret:".as_slice(), nonce].concat())
}

/// Ten random base32 characters as `xxxxx-xxxxx`, lower case.
fn recovery_code() -> String {
    let raw = totp::base32(&crypto::random_bytes(10)).to_lowercase();
    format!("{}-{}", &raw[..5], &raw[5..10])
}

/// Recovery codes are compared by their keyed hash, ignoring case and dashes.
fn recovery_hash(code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hex::encode(&crypto::hmac_sha256(
        format!("recovery:{normalized}").as_bytes(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Login, sessions and tokens

#[derive(Deserialize)]
struct Login {
    email: String,
    password: String,
    mfa_code: Option<String>,
    org_slug: Option<String>,
}

fn login(request: &Request) -> Result<Response, Problem> {
    let body: Login = request.json()?;
    let email = body.email.trim().to_lowercase();
    let key = attempts_key(&email);
    let user = match normalize_email(&email) {
        Ok(email) => user_by("email", &email)?,
        Err(_) => None,
    };
    // An unknown address costs the same hash, is counted the same and gets the same answers.
    let hash = user
        .as_ref()
        .map_or(DUMMY_HASH, |u| u.password_hash.as_str());
    let attempt = Attempted {
        key: &key,
        user: user.as_ref(),
        action: "login",
    };
    attempt.check_password(&body.password, hash)?;
    let Some(user) = user.as_ref() else {
        return Err(attempt.fail("unknown_email", invalid_credentials())?);
    };
    let mut factor = None;
    if let Some(secret) = &user.totp_secret {
        let Some(code) = body.mfa_code.as_deref().filter(|c| !c.trim().is_empty()) else {
            attempt.settle(Outcome::Pending)?;
            return Err(mfa_required());
        };
        factor = accept_second_factor(user, secret, code)?;
        if factor.is_none() {
            return Err(attempt.fail("mfa_invalid", mfa_invalid(401))?);
        }
    }
    attempt.settle(Outcome::Passed)?;
    if user.status != "active" {
        attempt.refused("account_disabled");
        return Err(Problem::forbidden("this account is disabled"));
    }
    let membership = match &body.org_slug {
        Some(slug) => Some(membership_by_slug(user, slug)?),
        None => None,
    };
    let session = open_session(request, user, membership.as_ref())?;
    let org_id = membership.as_ref().map(|m| m.org_id.as_str());
    audit::publish(
        org_id,
        "user.logged_in",
        &user.id,
        &json!({ "user_id": user.id, "session_id": session, "org_id": org_id,
                 "mfa": factor.map(Factor::name) }),
    )?;
    token_pair(user, &session, membership.as_ref(), 200)
}

/// An organization the user belongs to and their rights there, read when a token is minted:
/// membership from the org component (the one source of truth for it), roles and permissions
/// from the permission component. Auth keeps no copy, so nothing here can go stale; a change
/// reaches outstanding access tokens through the host's rights-change check.
struct Membership {
    org_id: String,
    org_slug: String,
    org_name: String,
    plan: String,
    roles: Vec<String>,
    permissions: Vec<String>,
}

#[derive(Deserialize)]
struct OrgMembership {
    org_id: String,
    org_slug: String,
    org_name: String,
    plan: Option<String>,
}

#[derive(Deserialize)]
struct Grants {
    roles: Vec<String>,
    permissions: Vec<String>,
    #[serde(default)]
    require_mfa: bool,
}

/// The user's membership of the organization `org` names (`org_slug=…` or `org_id=…`), or
/// `None` when they are not a member (or no org component is installed).
fn membership(user: &User, org: (&str, &str)) -> Result<Option<Membership>, Problem> {
    let path = format!(
        "/org/internal/membership?user_id={}&{}={}",
        percent_encode(&user.id),
        org.0,
        percent_encode(org.1)
    );
    let reply = match services::call("org", "GET", &path, &[]) {
        Ok(reply) => reply,
        // Without an org component there are no organizations to belong to.
        Err(services::CallError::NotFound) => return Ok(None),
        Err(error) => {
            log::error(&format!("asking org for a membership: {error:?}"));
            return Err(unavailable("organizations"));
        }
    };
    let found: OrgMembership = match reply.status {
        200 => serde_json::from_slice(&reply.body)
            .map_err(|e| Problem::internal(format!("org answered a membership with {e}")))?,
        404 => return Ok(None),
        status => {
            log::error(&format!("org answered a membership lookup with {status}"));
            return Err(unavailable("organizations"));
        }
    };
    let grants: Grants = services::get_json(
        "permission",
        &format!(
            "/permission/internal/grants?user_id={}&org_id={}",
            percent_encode(&user.id),
            percent_encode(&found.org_id)
        ),
    )?;
    if grants.require_mfa && user.totp_secret.is_none() {
        return Err(Problem::new(
            403,
            "mfa-required-by-organization",
            "Forbidden",
            format!(
                "{} requires two-factor sign-in: enable TOTP (POST /auth/mfa/totp/setup), then sign in again",
                found.org_name
            ),
        ));
    }
    Ok(Some(Membership {
        org_id: found.org_id,
        org_slug: found.org_slug,
        org_name: found.org_name,
        plan: found.plan.unwrap_or_else(|| "free".into()),
        roles: grants.roles,
        permissions: grants.permissions,
    }))
}

fn unavailable(what: &str) -> Problem {
    Problem::new(
        503,
        "unavailable",
        "Service unavailable",
        format!("{what} cannot be reached right now; try again shortly"),
    )
}

/// The caller's membership of the organization `slug`; 404 when there is none, whether or not
/// the organization exists.
fn membership_by_slug(user: &User, slug: &str) -> Result<Membership, Problem> {
    // No organization has such a slug: answered without asking (and without echoing it).
    if slug.is_empty() || slug.len() > 200 || !is_plain_text(slug) {
        return Err(Problem::not_found(
            "you are not a member of an organization with that slug",
        ));
    }
    membership(user, ("org_slug", slug))?.ok_or_else(|| {
        Problem::not_found(format!("you are not a member of an organization `{slug}`"))
    })
}

fn open_session(
    request: &Request,
    user: &User,
    membership: Option<&Membership>,
) -> Result<String, Problem> {
    let (id, now) = (id::new(), now());
    // Only while the password just verified is still the account's: a login racing a password
    // change must not leave a session the change did not see.
    let opened = db::execute(
        "INSERT INTO sessions (id, user_id, org_id, user_agent, ip, created_at, last_seen_at)
         SELECT $1, $2, $3, $4, $5, $6, $6
         WHERE EXISTS (SELECT 1 FROM users WHERE id = $2 AND password_hash = $7)",
        &[
            id.as_str().into(),
            user.id.as_str().into(),
            membership.map(|m| m.org_id.clone()).into(),
            device(request).into(),
            request
                .context()
                .client_ip
                .clone()
                .unwrap_or_default()
                .into(),
            now.into(),
            user.password_hash.as_str().into(),
        ],
    )?;
    if opened == 0 {
        return Err(invalid_credentials());
    }
    Ok(id)
}

/// The user agent, as the session's device.
fn device(request: &Request) -> String {
    request
        .header("user-agent")
        .unwrap_or("unknown")
        .chars()
        .take(300)
        .collect()
}

/// A new refresh token for `session` and an access token for the user in the membership's
/// organization.
fn token_pair(
    user: &User,
    session: &str,
    membership: Option<&Membership>,
    status: u16,
) -> Result<Response, Problem> {
    let refresh = hex::encode(&crypto::random_bytes(32));
    let now = now();
    db::execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4)",
        &[
            refresh_hash(&refresh).into(),
            session.into(),
            now.into(),
            (now + REFRESH_TTL).into(),
        ],
    )?;
    let access = tokens::mint_access(&tokens::Claims {
        user_id: user.id.clone(),
        email: user.email.clone(),
        org_id: membership.map(|m| m.org_id.clone()),
        org_slug: membership.map(|m| m.org_slug.clone()),
        org_name: membership.map(|m| m.org_name.clone()),
        roles: membership.map(|m| m.roles.clone()).unwrap_or_default(),
        permissions: membership
            .map(|m| m.permissions.clone())
            .unwrap_or_default(),
        plan: membership.map(|m| m.plan.clone()),
        session_id: session.to_string(),
    });
    Response::json(
        status,
        &json!({
            "access_token": access.token,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": access.expires_in,
            "refresh_expires_in": REFRESH_TTL,
            "user_info": { "id": user.id, "email": user.email, "name": user.name },
        }),
    )
}

fn refresh_hash(token: &str) -> String {
    hex::encode(&crypto::hmac_sha256(format!("refresh:{token}").as_bytes()))
}

fn invalid_refresh(detail: &str) -> Problem {
    Problem::new(401, "invalid-refresh-token", "Unauthorized", detail)
}

#[derive(Deserialize)]
struct Refresh {
    refresh_token: String,
}

fn refresh(request: &Request) -> Result<Response, Problem> {
    let body: Refresh = request.json()?;
    let hash = refresh_hash(body.refresh_token.trim());
    let now = now();
    // Spending is one conditional update: of two requests racing with the same token, one wins.
    let spent = db::query(
        "UPDATE refresh_tokens SET spent_at = $2
         WHERE token_hash = $1 AND spent_at IS NULL AND expires_at > $2
         RETURNING session_id",
        &[hash.as_str().into(), now.into()],
    )?;
    let Some(row) = spent.first() else {
        return Err(refused_refresh(&hash, now)?);
    };
    let session_id: String = row.get("session_id")?;
    let session = db::query(
        "SELECT user_id, org_id FROM sessions WHERE id = $1 AND revoked_at IS NULL",
        &[session_id.as_str().into()],
    )?;
    let Some(session) = session.first() else {
        return Err(invalid_refresh("the session has ended; log in again"));
    };
    let user_id: String = session.get("user_id")?;
    let org_id: Option<String> = session.get("org_id")?;
    let user = user_by("id", &user_id)?
        .filter(|u| u.status == "active")
        .ok_or_else(|| invalid_refresh("the account is disabled"))?;
    db::execute(
        "UPDATE sessions SET last_seen_at = $2, ip = $3 WHERE id = $1",
        &[
            session_id.as_str().into(),
            now.into(),
            request
                .context()
                .client_ip
                .clone()
                .unwrap_or_default()
                .into(),
        ],
    )?;
    let membership = match &org_id {
        Some(org_id) => match membership(&user, ("org_id", org_id)) {
            // The organization now requires two-factor sign-in: the session goes on outside it
            // (the refresh token is spent already), and switching back says why.
            Err(problem) if problem.kind == "mfa-required-by-organization" => None,
            other => other?,
        },
        None => None,
    };
    if org_id.is_some() && membership.is_none() {
        // No longer a member: the session goes on outside any organization.
        db::execute(
            "UPDATE sessions SET org_id = NULL WHERE id = $1",
            &[session_id.as_str().into()],
        )?;
    }
    token_pair(&user, &session_id, membership.as_ref(), 200)
}

/// Why a refresh token could not be spent. A token that was spent before is being replayed:
/// someone holds a copy, so its whole session is revoked.
fn refused_refresh(hash: &str, now: i64) -> Result<Problem, Problem> {
    let known = db::query(
        "SELECT session_id, spent_at FROM refresh_tokens WHERE token_hash = $1",
        &[hash.into()],
    )?;
    let Some(row) = known.first() else {
        return Ok(invalid_refresh("the refresh token is not valid"));
    };
    let spent_at: Option<i64> = row.get("spent_at")?;
    if spent_at.is_none() {
        return Ok(invalid_refresh(
            "the refresh token has expired; log in again",
        ));
    }
    let session_id: String = row.get("session_id")?;
    if let Some(user_id) = end_session(&session_id, now)? {
        session_revoked(&user_id, &session_id, "refresh_token_reused")?;
    }
    log::warn(&format!(
        "a spent refresh token was presented again: session {session_id} revoked"
    ));
    Ok(invalid_refresh(
        "the refresh token was already used; the session has been revoked, log in again",
    ))
}

/// Revokes a session here and in the host, so its access tokens stop working at once; the
/// session's user when this call ended it, None when it had ended already.
fn end_session(session_id: &str, now: i64) -> Result<Option<String>, Problem> {
    let ended = db::query(
        "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL
         RETURNING user_id",
        &[session_id.into(), now.into()],
    )?;
    tokens::revoke_session(session_id)
        .map_err(|e| Problem::internal(format!("revoking session {session_id}: {e}")))?;
    Ok(ended
        .first()
        .map(|row| row.get::<String>("user_id"))
        .transpose()?)
}

/// `session.revoked`: `reason` is `logout`, `revoked` (by its owner, from the list) or
/// `refresh_token_reused` (a spent refresh token came back).
fn session_revoked(user_id: &str, session_id: &str, reason: &str) -> Result<(), Problem> {
    audit::publish(
        None,
        "session.revoked",
        user_id,
        &json!({ "user_id": user_id, "session_id": session_id, "reason": reason }),
    )
}

fn logout(request: &Request) -> Result<Response, Problem> {
    let (_, session) = caller(request)?;
    if let Some(user_id) = end_session(&session, now())? {
        session_revoked(&user_id, &session, "logout")?;
    }
    Ok(Response::no_content())
}

#[derive(Deserialize)]
struct SwitchOrg {
    org_slug: String,
}

fn switch_org(request: &Request) -> Result<Response, Problem> {
    let body: SwitchOrg = request.json()?;
    let user = current_user(request)?;
    let (_, session) = caller(request)?;
    let membership = membership_by_slug(&user, body.org_slug.trim())?;
    db::execute(
        "UPDATE sessions SET org_id = $2, last_seen_at = $3 WHERE id = $1",
        &[
            session.as_str().into(),
            membership.org_id.as_str().into(),
            now().into(),
        ],
    )?;
    // The session's earlier refresh token would still mint tokens for the old organization.
    db::execute(
        "DELETE FROM refresh_tokens WHERE session_id = $1 AND spent_at IS NULL",
        &[session.as_str().into()],
    )?;
    audit::publish(
        Some(&membership.org_id),
        "session.org_switched",
        &user.id,
        &json!({ "user_id": user.id, "session_id": session, "org_id": membership.org_id }),
    )?;
    token_pair(&user, &session, Some(&membership), 200)
}

/// A session as its owner sees it; `key` orders the list and is not shown.
#[derive(Serialize)]
struct SessionView {
    #[serde(skip)]
    key: String,
    id: String,
    device: String,
    ip: String,
    created_at: String,
    last_seen_at: String,
    current: bool,
}

#[derive(FromRow)]
struct SessionRow {
    id: String,
    user_agent: String,
    ip: String,
    created_at: i64,
    last_seen_at: i64,
}

fn list_sessions(request: &Request) -> Result<Response, Problem> {
    let (user_id, current) = caller(request)?;
    // This list has answered a bad `limit` or `cursor` with 400 since it was published; its
    // clients keep getting that, with the same detail.
    let page = Page::from_request(request).map_err(|p| Problem::bad_request(p.detail))?;
    // The cursor's key is the last session's `created_at.id`; newest sessions come first.
    let (before_time, before_id) = match &page.after {
        None => (i64::MAX, String::new()),
        Some(key) => key
            .split_once('.')
            .and_then(|(time, id)| Some((time.parse::<i64>().ok()?, id.to_string())))
            .ok_or_else(|| Problem::bad_request("`cursor` is not one this API returned"))?,
    };
    let rows: Vec<SessionRow> = db::query_as(
        "SELECT id, user_agent, ip, created_at, last_seen_at FROM sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND last_seen_at > $5
           AND (created_at < $2 OR (created_at = $2 AND id < $3))
         ORDER BY created_at DESC, id DESC
         LIMIT $4",
        &[
            user_id.as_str().into(),
            before_time.into(),
            before_id.into(),
            page.fetch().into(),
            // Idle past the refresh token's lifetime: it can no longer be used.
            (now() - REFRESH_TTL).into(),
        ],
    )?;
    let items = rows
        .into_iter()
        .map(|row| SessionView {
            key: format!("{}.{}", row.created_at, row.id),
            current: row.id == current,
            id: row.id,
            device: row.user_agent,
            ip: row.ip,
            created_at: rfc3339(row.created_at),
            last_seen_at: rfc3339(row.last_seen_at),
        })
        .collect();
    page.respond(items, |session| session.key.clone())
}

fn revoke_session(request: &Request) -> Result<Response, Problem> {
    let (user_id, _) = caller(request)?;
    let id = request.param("id")?;
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Problem::not_found("no such session"));
    }
    let owned = db::query(
        "SELECT id FROM sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
        &[id.into(), user_id.as_str().into()],
    )?;
    if owned.is_empty() {
        return Err(Problem::not_found("no such session"));
    }
    if end_session(id, now())?.is_some() {
        session_revoked(&user_id, id, "revoked")?;
    }
    Ok(Response::no_content())
}

#[derive(Deserialize)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

fn change_password(request: &Request) -> Result<Response, Problem> {
    let body: PasswordChange = request.json()?;
    let user = current_user(request)?;
    let (_, current) = caller(request)?;
    let key = attempts_key(&user.email);
    let attempt = Attempted {
        key: &key,
        user: Some(&user),
        action: "password.change",
    };
    attempt
        .check_password(&body.current_password, &user.password_hash)
        .map_err(forbidden_if_unauthorized)?;
    password::check(&body.new_password, &user.email)?;
    let hash = crypto::hash_password(&body.new_password);
    attempt.settle(Outcome::Passed)?;
    db::execute(
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        &[user.id.as_str().into(), hash.into()],
    )?;
    let others = db::query(
        "SELECT id FROM sessions WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL",
        &[user.id.as_str().into(), current.as_str().into()],
    )?;
    let now = now();
    let mut ended = 0;
    for row in &others {
        if end_session(&row.get::<String>("id")?, now)?.is_some() {
            ended += 1;
        }
    }
    // One event for the change, however many sessions it ended (a request publishes at most
    // 100 events).
    audit::publish(
        None,
        "user.password_changed",
        &user.id,
        &json!({ "user_id": user.id, "sessions_revoked": ended }),
    )?;
    Ok(Response::no_content())
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn now_u64() -> u64 {
    u64::try_from(now()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_control_or_direction_characters_are_refused() {
        assert_eq!(
            normalize_email(" Ada@Example.com ").ok().as_deref(),
            Some("ada@example.com")
        );
        for raw in [
            "ada\u{0}@example.com",
            "ada@example.com\u{202E}moc",
            "ada\u{7f}@example.com",
            "ada\u{200B}@example.com",
            "ada@exa\u{FEFF}mple.com",
        ] {
            assert!(normalize_email(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn plain_text_allows_any_script_but_no_hidden_characters() {
        assert!(is_plain_text("Ada Lovelace"));
        assert!(is_plain_text("Zoë Ødegård 李雷 علي"));
        assert!(!is_plain_text("Ada\u{0}"));
        assert!(!is_plain_text("Ada\nLovelace"));
        assert!(!is_plain_text("\u{202E}ecalevoL"));
        assert!(!is_plain_text("Ada\u{2066}"));
    }
}

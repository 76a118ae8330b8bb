//! The `email` capability against a real SMTP server (Python's aiosmtpd, started per test):
//! a successful request's messages arrive as queued, a failed request sends nothing, bad input
//! is refused before anything is queued, and without an SMTP server the host logs recipient
//! and subject but never the text.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Engine, Policy, Spawn, TestApp, problem};

/// An SMTP server that keeps each message it receives as a JSON file (envelope and raw data),
/// and prints the port it bound.
const SMTP_SERVER: &str = r#"
import asyncio, json, os, sys
from aiosmtpd.smtp import SMTP

class Keep:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = os.path.join(self.directory, "%04d.json" % self.count)
        with open(path + ".tmp", "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "data": envelope.content.decode("utf-8", "replace")}, f)
        os.rename(path + ".tmp", path)
        return "250 OK"

async def main():
    keep = Keep(sys.argv[1])
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(keep, hostname="localhost"), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"#;

struct SmtpServer {
    url: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SMTP_SERVER)
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "the test SMTP server did not start (printed {line:?}); install aiosmtpd: \
                 `pip install aiosmtpd` (add --break-system-packages on Debian's Python)"
            )
        });
        Self {
            url: format!("smtp://127.0.0.1:{port}"),
            child,
            dir,
        }
    }

    /// Every message received so far, oldest first.
    fn received(&self) -> Vec<Value> {
        let mut paths: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|entry| Some(entry.ok()?.path()))
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|path| serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
            .collect()
    }

    /// Waits until `n` messages arrived, and returns them.
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{n} messages expected, {} arrived",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A header of a raw message, by name (the first one; no folded headers in these tests).
fn header<'a>(data: &'a str, name: &str) -> Option<&'a str> {
    let head = data.split("\r\n\r\n").next().unwrap_or(data);
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn body(data: &str) -> &str {
    data.split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or("")
}

fn mailer() -> Policy {
    Policy::new("mailer", "mailer", "mailer", "capabilities = [\"email\"]")
}

async fn app(smtp: &SmtpServer) -> TestApp {
    Spawn::new(Engine::Sqlite, vec![mailer()])
        .env("TRUEVALUE_SMTP_URL", &smtp.url)
        .env("TRUEVALUE_SMTP_FROM", "CRM Tests <crm@tests.example>")
        .start()
        .await
}

async fn send(app: &TestApp, message: Value) -> reqwest::Response {
    app.post_json("/mailer/send", &message).await
}

/// A message that must arrive, sent last to show the ones before it had their chance.
async fn send_marker(app: &TestApp) {
    let marker = json!({ "to": "marker@example.com", "subject": "Marker", "text": "marker" });
    assert_eq!(send(app, marker).await.status(), 200);
}

/// Waits for the marker and a little more, then checks that it is the only message.
async fn assert_only_the_marker_arrived(smtp: &SmtpServer) {
    smtp.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = smtp.received();
    assert_eq!(received.len(), 1, "only the marker arrived: {received:#?}");
    assert_eq!(received[0]["rcpt_tos"], json!(["marker@example.com"]));
}

#[tokio::test]
async fn a_successful_request_sends_its_message_with_recipient_subject_and_text() {
    let smtp = SmtpServer::start();
    let app = app(&smtp).await;

    let text = "Hello Ada,\n\nopen https://app.example.com/invites/accept?token=abc123 to join.\n";
    let response = send(
        &app,
        json!({ "to": "ada@example.com", "subject": "Join Acme Corp", "text": text }),
    )
    .await;
    assert_eq!(response.status(), 200);

    let received = smtp.wait_for(1).await;
    let message = &received[0];
    assert_eq!(message["mail_from"], "crm@tests.example");
    assert_eq!(message["rcpt_tos"], json!(["ada@example.com"]));
    let data = message["data"].as_str().unwrap();
    assert_eq!(header(data, "To"), Some("ada@example.com"), "{data}");
    let from = header(data, "From").unwrap_or_default();
    assert!(
        from.contains("CRM Tests") && from.ends_with("<crm@tests.example>"),
        "{data}"
    );
    assert_eq!(header(data, "Subject"), Some("Join Acme Corp"), "{data}");
    assert!(
        header(data, "Content-Type").is_some_and(|t| t.starts_with("text/plain")),
        "{data}"
    );
    assert!(
        header(data, "Message-ID").is_some_and(|id| id.ends_with("@tests.example>")),
        "{data}"
    );
    // SMTP ends the data with a line break of its own.
    assert_eq!(
        body(data).replace("\r\n", "\n").trim_end(),
        text.trim_end(),
        "{data}"
    );
    assert!(
        !app.logs().contains("token=abc123"),
        "the host never logs the text"
    );
}

#[tokio::test]
async fn a_request_that_answers_500_sends_nothing() {
    let smtp = SmtpServer::start();
    let app = app(&smtp).await;

    let failing = json!({
        "to": "ada@example.com", "subject": "You are in", "text": "rolled back", "fail": true,
    });
    problem(send(&app, failing).await, 500).await;
    send_marker(&app).await;

    assert_only_the_marker_arrived(&smtp).await;
}

#[tokio::test]
async fn bad_input_is_refused_with_422_and_sends_nothing() {
    let smtp = SmtpServer::start();
    let app = app(&smtp).await;

    let ok = json!({ "to": "ada@example.com", "subject": "Hello", "text": "text" });
    let with = |key: &str, value: Value| {
        let mut message = ok.clone();
        message[key] = value;
        message
    };
    let bad = [
        with("subject", json!("Hello\r\nBcc: eve@example.com")),
        with("subject", json!("x".repeat(201))),
        with("to", json!("ada@example.com\r\nBcc: eve@example.com")),
        with("to", json!("ada@example.com, eve@example.com")),
        with("to", json!("Ada <ada@example.com>")),
        with("to", json!("not-an-address")),
        with("text", json!("x".repeat(64 * 1024 + 1))),
        // Ten are queued before the eleventh is refused; the request then sends none.
        with("count", json!(11)),
    ];
    for message in bad {
        let answer = problem(send(&app, message.clone()).await, 422).await;
        let detail = answer["detail"].as_str().unwrap_or_default();
        assert!(!detail.is_empty(), "{answer}");
        assert!(
            !detail.contains("eve@"),
            "the detail does not echo input: {detail}"
        );
    }
    send_marker(&app).await;

    assert_only_the_marker_arrived(&smtp).await;
}

#[tokio::test]
async fn without_smtp_url_the_host_logs_recipient_and_subject_but_never_the_text() {
    let app = Spawn::new(Engine::Sqlite, vec![mailer()]).start().await;

    let message = json!({
        "to": "grace@example.com", "subject": "Your sign-in link",
        "text": "https://app.example.com/magic?token=single-use-d3adb33f",
    });
    assert_eq!(send(&app, message).await.status(), 200);

    let started = Instant::now();
    while !app.logs().contains("grace@example.com") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the host logs the recipient: {}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = app.logs();
    assert!(logs.contains("Your sign-in link"), "{logs}");
    assert!(
        !logs.contains("d3adb33f"),
        "the text stays out of the log: {logs}"
    );
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_retried_and_logged_by_domain_without_the_text() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = Spawn::new(Engine::Sqlite, vec![mailer()])
        .env("TRUEVALUE_SMTP_URL", &format!("smtp://127.0.0.1:{port}"))
        .start()
        .await;

    let message = json!({
        "to": "private.person@example.org", "subject": "Hi", "text": "secret-d3adb33f",
    });
    let started = Instant::now();
    assert_eq!(send(&app, message).await.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the response does not wait for the SMTP server"
    );

    while !app.logs().contains("trying again") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the failure is logged: {}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = app.logs();
    assert!(logs.contains("example.org"), "{logs}");
    assert!(!logs.contains("private.person"), "{logs}");
    assert!(!logs.contains("d3adb33f"), "{logs}");
}

#[tokio::test]
async fn invalid_smtp_settings_stop_start_up_naming_the_setting() {
    let stderr = Spawn::new(Engine::Sqlite, vec![mailer()])
        .env("TRUEVALUE_SMTP_URL", "http://user:hunter2@mail.example.com")
        .start_refused()
        .await;
    assert!(stderr.contains("smtp_url"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password stays secret: {stderr}"
    );

    let stderr = Spawn::new(Engine::Sqlite, vec![mailer()])
        .env("TRUEVALUE_SMTP_FROM", "nobody at all")
        .start_refused()
        .await;
    assert!(stderr.contains("smtp_from"), "{stderr}");
}

/// The text of a message, decoded when it went out quoted-printable (long lines do).
fn text(data: &str) -> String {
    let raw = body(data);
    if !header(data, "content-transfer-encoding")
        .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"))
    {
        return raw.to_string();
    }
    let joined = raw.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'=')
            .then(|| std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The message sent to `to`, waiting for it.
async fn message_to(smtp: &SmtpServer, to: &str) -> String {
    let started = Instant::now();
    loop {
        let found = smtp
            .received()
            .into_iter()
            .find(|m| m["rcpt_tos"] == json!([to]));
        if let Some(message) = found {
            return message["data"].as_str().unwrap().to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no message to {to}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_sends_a_welcome_and_an_invite_sends_the_link_that_accepts_it() {
    let smtp = SmtpServer::start();
    let app = Spawn::new(Engine::Sqlite, crate::org::tenancy_policies())
        .env("TRUEVALUE_SMTP_URL", &smtp.url)
        .start()
        .await;
    let password = "correct horse battery staple";
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (ada, grace) = (
        format!("ada-{suffix}@example.com"),
        format!("grace-{suffix}@example.com"),
    );
    let register = |email: String, name: &'static str| {
        let app = &app;
        async move {
            let body = json!({ "email": email, "password": password, "name": name });
            assert_eq!(app.post_json("/auth/register", &body).await.status(), 201);
            let login = json!({ "email": email, "password": password });
            let pair: Value = app
                .post_json("/auth/login", &login)
                .await
                .json()
                .await
                .unwrap();
            pair["access_token"].as_str().unwrap().to_string()
        }
    };
    let bearer = |path: &str, token: &str, body: Value| {
        app.client
            .post(app.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
    };

    let token = register(ada.clone(), "Ada").await;
    let welcome = message_to(&smtp, &ada).await;
    assert_eq!(header(&welcome, "subject"), Some("Welcome to TrueValue"));
    assert!(text(&welcome).contains("Hello Ada"), "{welcome}");

    let slug = format!("acme-{suffix}");
    let created = bearer(
        "/org/api/organizations",
        &token,
        json!({ "name": "Acme Corp", "slug": slug }),
    );
    assert_eq!(created.await.unwrap().status(), 201);
    let pair: Value = bearer("/auth/switch-org", &token, json!({ "org_slug": slug }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin = pair["access_token"].as_str().unwrap();
    let invite: Value = bearer(
        &format!("/org/api/organizations/{slug}/invites"),
        admin,
        json!({ "email": grace, "role": "member" }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();

    // The invitation names the organization and carries the link with the invite's token.
    let invitation = message_to(&smtp, &grace).await;
    assert_eq!(
        header(&invitation, "subject"),
        Some("You are invited to join Acme Corp")
    );
    let text = text(&invitation);
    let link = text
        .split_whitespace()
        .find(|word| word.contains("/org/api/invites/"))
        .unwrap_or_else(|| panic!("no accept link in {text}"));
    let path = link.trim_start_matches("http://127.0.0.1:8000");
    assert_eq!(
        path,
        format!(
            "/org/api/invites/{}/accept",
            invite["token"].as_str().unwrap()
        )
    );

    // Grace signs up with that address and accepts with the emailed link.
    let grace_token = register(grace.clone(), "Grace").await;
    let accepted = bearer(path, &grace_token, json!({})).await.unwrap();
    assert_eq!(accepted.status(), 200);
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(accepted["org_slug"], slug.as_str());
}

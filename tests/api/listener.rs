//! The listener under idle and slow clients: header-read and idle timeouts, and a connection
//! cap that idle clients cannot use to lock others out.

use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Engine, Policy, Spawn, TestApp};

async fn app(config: &str) -> TestApp {
    let policies = vec![
        Policy::new("greeter", "greeter", "greeter", ""),
        Policy::new(
            "hello",
            "hello",
            "hello",
            "capabilities = [\"database\", \"config\"]\n[config]\ngreeting = \"Welcome\"",
        ),
    ];
    Spawn::new(Engine::Sqlite, policies)
        .config(config)
        .start()
        .await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Resolves when the host closes the connection (end of stream or reset), returning what it
/// sent before. A bound far above every timeout under test keeps a broken host from hanging
/// the test.
async fn closed_by_host(mut stream: TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the host kept the connection open");
    received
}

/// A client with no pooled connections: every request opens its own.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_client_that_sends_no_headers_in_time_is_disconnected() {
    let app = app("header_read_timeout_ms = 300\nidle_timeout_ms = 600000").await;
    let silent = connect(&app).await;
    let mut half = connect(&app).await;
    half.write_all(b"GET /greeter HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(closed_by_host(silent).await.is_empty());
    assert!(
        closed_by_host(half).await.is_empty(),
        "no answer to half a head"
    );
    assert_eq!(app.get("/greeter").await.status(), 200);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let app = app("header_read_timeout_ms = 600000\nidle_timeout_ms = 300").await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /greeter HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let received = String::from_utf8(closed_by_host(stream).await).unwrap();
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(
        received.contains("\"version\""),
        "the whole answer came first"
    );
}

#[tokio::test]
async fn a_kept_alive_connection_that_sends_half_a_head_is_disconnected() {
    let app = app("header_read_timeout_ms = 300\nidle_timeout_ms = 600000").await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /greeter HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = answer_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Idle now, which may last ten minutes; but a head once begun has its own deadline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stream
        .write_all(b"GET /greeter HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let rest = closed_by_host(stream).await;
    assert!(
        !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
        "no answer to half a head"
    );
}

#[tokio::test]
async fn idle_connections_at_the_cap_make_room_for_requests() {
    let app =
        app("max_connections = 50\nheader_read_timeout_ms = 600000\nidle_timeout_ms = 600000")
            .await;
    // 100 idle clients, half silent and half stuck in a head, more than the cap holds.
    let mut idle = Vec::new();
    for i in 0..100 {
        let mut stream = connect(&app).await;
        if i % 2 == 1 {
            stream
                .write_all(b"GET /greeter HTTP/1.1\r\n")
                .await
                .unwrap();
        }
        idle.push(stream);
    }
    let client = fresh_client();
    for _ in 0..20 {
        let response = client.get(app.url("/greeter")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    // At most 50 stay open: at least 50 of the idle ones were closed to make room.
    let mut closing: futures::stream::FuturesUnordered<_> =
        idle.into_iter().map(closed_by_host).collect();
    for _ in 0..50 {
        closing.next().await.unwrap();
    }
}

#[tokio::test]
async fn a_connection_over_the_cap_while_every_one_is_busy_gets_a_503() {
    let app = app("max_connections = 2").await;
    // Two requests in flight: the host asked for their bodies (100 Continue), which never come.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&app).await;
        stream
            .write_all(
                b"POST /hello/guestbook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Content-Length: 2\r\nExpect: 100-continue\r\n\r\n",
            )
            .await
            .unwrap();
        let mut continued = [0u8; 25];
        stream.read_exact(&mut continued).await.unwrap();
        assert!(continued.starts_with(b"HTTP/1.1 100 Continue"));
        busy.push(stream);
    }
    let refused = fresh_client()
        .get(app.url("/greeter"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");

    for mut stream in busy {
        stream.write_all(b"{}").await.unwrap();
        let answer = answer_head(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    }
    assert_eq!(
        fresh_client()
            .get(app.url("/greeter"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// The answer to a request already sent, read up to the end of its head; the connection
/// stays open.
async fn answer_head(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("\r\n\r\n") {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "closed before answering");
        received.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_closes() {
    let app = app("body_read_timeout_ms = 300\nidle_timeout_ms = 600000").await;
    let mut stream = connect(&app).await;
    // The headers promise 100 bytes; 10 come, then nothing.
    stream
        .write_all(
            b"POST /hello/guestbook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"name\":\"",
        )
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&closed_by_host(stream).await).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let guestbook: serde_json::Value = app.get("/hello/guestbook").await.json().await.unwrap();
    assert_eq!(
        guestbook["items"],
        serde_json::json!([]),
        "nothing was written"
    );
}

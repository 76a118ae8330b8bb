use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

fn message(to: &str, subject: &str, text: &str) -> Message {
    Message {
        to: to.into(),
        subject: subject.into(),
        text: text.into(),
    }
}

#[test]
fn plain_addresses_pass_and_anything_that_could_name_a_second_recipient_does_not() {
    for good in [
        "ada@example.com",
        "a.b+tag@mail.example.co.uk",
        "x_y-z@ex-ample.org",
    ] {
        assert!(recipient(good).is_some(), "{good}");
    }
    for bad in [
        "",
        "ada",
        "ada@",
        "@example.com",
        "ada@localhost",
        "ada@example..com",
        "ada@-example.com",
        "ada@example.com\r\nBcc: eve@example.com",
        "ada@example.com\nBcc: eve@example.com",
        "ada@example.com, eve@example.com",
        "ada@example.com;eve@example.com",
        "Ada <ada@example.com>",
        "ada @example.com",
        "\"ada\"@example.com",
        "ada@exämple.com",
        "ada@ex@ample.com",
        ".ada@example.com",
    ] {
        assert!(recipient(bad).is_none(), "{bad:?}");
    }
    assert!(recipient(&format!("{}@example.com", "a".repeat(65))).is_none());
}

#[test]
fn subjects_are_one_bounded_line() {
    assert!(
        check(message(
            "ada@example.com",
            "Welcome, Ada — ünïcode ok",
            "hi"
        ))
        .is_ok()
    );
    for bad in [
        "",
        "   ",
        "Hi\r\nBcc: eve@example.com",
        "Hi\nthere",
        "tab\there",
        "a\u{2028}b",
    ] {
        assert!(
            check(message("ada@example.com", bad, "hi")).is_err(),
            "{bad:?}"
        );
    }
    assert!(check(message("ada@example.com", &"é".repeat(200), "")).is_ok());
    assert!(check(message("ada@example.com", &"é".repeat(201), "")).is_err());
}

#[test]
fn the_text_is_bounded_and_errors_never_repeat_it() {
    let secret = "token-d3adb33f ".repeat(5000);
    let error = check(message("ada@example.com", "Hi", &secret))
        .err()
        .unwrap_or_default();
    assert!(error.contains("64 KiB"), "{error}");
    assert!(!error.contains("d3adb33f"));
    assert!(
        check(message(
            "ada@example.com",
            "Hi",
            &"x".repeat(MAX_TEXT_BYTES)
        ))
        .is_ok()
    );
}

#[test]
fn going_past_the_per_request_limit_drops_everything_queued() {
    let mut ctx = EmailCtx::new("c".into(), "r".into());
    for _ in 0..MAX_PER_REQUEST {
        assert!(ctx.queue(message("ada@example.com", "Hi", "text")).is_ok());
    }
    assert!(ctx.queue(message("ada@example.com", "Hi", "text")).is_err());
    assert!(ctx.queue(message("ada@example.com", "Hi", "text")).is_err());
    assert!(ctx.take().messages.is_empty());
}

#[test]
fn smtp_from_must_be_a_mailbox() {
    assert!(parse_from("TrueValue <no-reply@truevalue.local>").is_ok());
    assert!(parse_from("no-reply@truevalue.local").is_ok());
    let error = parse_from("not an address").err().map(|e| e.to_string());
    assert!(error.is_some_and(|e| e.contains("smtp_from")));
}

#[test]
fn smtp_url_must_be_an_smtp_url() {
    for good in [
        "smtp://127.0.0.1:2525",
        "smtp://mail:587?tls=required",
        "smtps://u:p@mail.example.com",
    ] {
        assert!(smtp::check_url(&good.to_string().into()).is_ok(), "{good}");
    }
    for bad in [
        "http://mail.example.com",
        "smtp://mail?tls=sometimes",
        "mail.example.com:25",
    ] {
        let error = smtp::check_url(&bad.to_string().into())
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("smtp_url")), "{bad}");
    }
}

/// Fails transiently `failures` times, then accepts.
struct Flaky {
    failures: usize,
    permanent: bool,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Sender for Flaky {
    async fn send(&self, _message: &Outgoing, _origin: &Origin) -> Result<(), SendError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        match (call < self.failures, self.permanent) {
            (false, _) => Ok(()),
            (true, false) => Err(SendError::Transient("421 try later".into())),
            (true, true) => Err(SendError::Permanent("550 no such user".into())),
        }
    }
}

async fn attempts(failures: usize, permanent: bool) -> usize {
    let flaky = Arc::new(Flaky {
        failures,
        permanent,
        calls: AtomicUsize::new(0),
    });
    let mailer = Mailer::new(flaky.clone()).with_retry_delays(&[Duration::from_millis(1); 3]);
    let mut ctx = EmailCtx::new("c".into(), "r".into());
    assert!(ctx.queue(message("ada@example.com", "Hi", "text")).is_ok());
    mailer.dispatch(ctx.take());
    tokio::time::sleep(Duration::from_millis(200)).await;
    flaky.calls.load(Ordering::SeqCst)
}

#[tokio::test]
async fn transient_failures_are_retried_and_permanent_ones_are_not() {
    assert_eq!(attempts(2, false).await, 3, "two failures, then sent");
    assert_eq!(attempts(10, false).await, 4, "one try and three retries");
    assert_eq!(attempts(10, true).await, 1, "a 5xx is not retried");
}

//! Input rules: slugs, names, email addresses, phone numbers, time zones, role names.
//!
//! Each check returns every rule the input breaks, as messages for one field, so that a 422
//! can name them all at once.

use truevalue_sdk::prelude::*;

/// Words a slug may not be: they name routes, components or pages of the platform, or would
/// read as something other than an organization in a URL.
const RESERVED_SLUGS: &[&str] = &[
    "admin",
    "analytics",
    "api",
    "app",
    "assets",
    "audit",
    "auth",
    "billing",
    "help",
    "internal",
    "invites",
    "login",
    "logout",
    "me",
    "metrics",
    "new",
    "null",
    "org",
    "organizations",
    "orgs",
    "permission",
    "register",
    "root",
    "settings",
    "signup",
    "static",
    "status",
    "support",
    "system",
    "undefined",
    "www",
];

/// The rules an organization's slug breaks: 3 to 40 characters, lowercase `a`–`z`, `0`–`9` and
/// `-`, starting with a letter, no `--`, not ending in `-`, not a reserved word.
pub fn slug(slug: &str) -> Vec<String> {
    let mut broken = Vec::new();
    let length = slug.chars().count();
    if !(3..=40).contains(&length) {
        broken.push(format!("must be 3 to 40 characters long (it has {length})"));
    }
    if !slug
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        broken.push("may contain only lowercase letters a-z, digits 0-9 and `-`".into());
    }
    if !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        broken.push("must start with a lowercase letter".into());
    }
    if slug.contains("--") {
        broken.push("must not contain `--`".into());
    }
    if slug.ends_with('-') {
        broken.push("must not end with `-`".into());
    }
    if RESERVED_SLUGS.contains(&slug) {
        broken.push(format!("`{slug}` is reserved; choose another"));
    }
    broken
}

/// A display name (of an organization or a team), trimmed: 1 to 100 characters of plain text.
pub fn name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err("must be between 1 and 100 characters".into());
    }
    if !is_plain_text(name) {
        return Err("must not contain control or text-direction characters".into());
    }
    Ok(name.to_string())
}

/// An email address, trimmed and lower-cased, if it looks like one.
pub fn email(raw: &str) -> Result<String, String> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
                && !domain.contains('@')
        })
        && !email.chars().any(char::is_whitespace)
        && is_plain_text(&email);
    match valid {
        true => Ok(email),
        false => Err("must be an email address".into()),
    }
}

/// A role name as the permission component spells them: 1 to 64 characters of letters,
/// digits, `-`, `_` and `.` (so it is a path segment as it is).
pub fn role(raw: &str) -> Result<String, String> {
    let role = raw.trim();
    let valid = (1..=64).contains(&role.len())
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    match valid {
        true => Ok(role.to_string()),
        false => Err("must be the name of a role of this organization, e.g. `member`".into()),
    }
}

/// A job title, trimmed: at most 100 characters of plain text; empty means none.
pub fn title(raw: &str) -> Result<Option<String>, String> {
    let title = raw.trim();
    if title.chars().count() > 100 {
        return Err("must be at most 100 characters".into());
    }
    if !is_plain_text(title) {
        return Err("must not contain control or text-direction characters".into());
    }
    Ok((!title.is_empty()).then(|| title.to_string()))
}

/// A phone number, trimmed: an optional leading `+`, then 7 to 15 digits, which may be grouped
/// with spaces, `-`, `.` or parentheses; at most 32 characters. Empty means none.
pub fn phone(raw: &str) -> Result<Option<String>, String> {
    let phone = raw.trim();
    if phone.is_empty() {
        return Ok(None);
    }
    let rest = phone.strip_prefix('+').unwrap_or(phone);
    let digits = rest.chars().filter(char::is_ascii_digit).count();
    let valid = phone.len() <= 32
        && (7..=15).contains(&digits)
        && rest.starts_with(|c: char| c.is_ascii_digit() || c == '(')
        && rest
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'));
    match valid {
        true => Ok(Some(phone.to_string())),
        false => Err(
            "must be a phone number: 7 to 15 digits, optionally after a `+`, \
                      grouped with spaces, `-`, `.` or parentheses"
                .into(),
        ),
    }
}

/// The first segments of IANA time zone names (`Europe/Berlin`, `Etc/GMT+2`).
const TIME_ZONE_AREAS: &[&str] = &[
    "Africa",
    "America",
    "Antarctica",
    "Arctic",
    "Asia",
    "Atlantic",
    "Australia",
    "Etc",
    "Europe",
    "Indian",
    "Pacific",
];

/// A time zone shaped like an IANA name: `UTC`, or an area (`Europe`, `America`, …) followed
/// by one or two segments of letters, digits, `_`, `-` and `+` that start with a letter
/// (`America/Argentina/Buenos_Aires`). Whether the zone exists is not checked: the database of
/// zones changes, and the shape is what keeps junk out. Empty means none.
pub fn time_zone(raw: &str) -> Result<Option<String>, String> {
    let zone = raw.trim();
    if zone.is_empty() {
        return Ok(None);
    }
    let segments: Vec<&str> = zone.split('/').collect();
    let valid = zone == "UTC"
        || (zone.len() <= 64
            && (2..=3).contains(&segments.len())
            && TIME_ZONE_AREAS.contains(&segments[0])
            && segments[1..].iter().all(|segment| {
                (1..=32).contains(&segment.len())
                    && segment.starts_with(|c: char| c.is_ascii_alphabetic())
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
            }));
    match valid {
        true => Ok(Some(zone.to_string())),
        false => Err("must be an IANA time zone such as `Europe/Berlin` or `UTC`".into()),
    }
}

/// Text without control characters and without the invisible formatting characters that
/// reorder or hide what a reader sees (U+202E and its kin).
fn is_plain_text(text: &str) -> bool {
    !text.chars().any(|c| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
    })
}

/// Field errors gathered while checking a body, answered together as one 422.
#[derive(Default)]
pub struct Errors(Option<Problem>);

impl Errors {
    /// Records `message` for `field`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0 = Some(match self.0.take() {
            None => Problem::field(field, message),
            Some(problem) => problem.and_field(field, message),
        });
    }

    /// The value of a check, or `fallback` after recording its error for `field`.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>, fallback: T) -> T {
        result.unwrap_or_else(|message| {
            self.add(field, message);
            fallback
        })
    }

    /// A 422 naming every recorded field, or `Ok` when there was none.
    pub fn finish(self) -> Result<(), Problem> {
        self.0.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn good_slugs_pass() {
        for good in ["acme", "acme-corp", "a1b", "x-2-y", &"a".repeat(40)] {
            assert!(slug(good).is_empty(), "{good}: {:?}", slug(good));
        }
    }

    #[test]
    fn each_broken_slug_rule_is_named() {
        let cases = [
            ("ab", "3 to 40"),
            (&*"a".repeat(41), "3 to 40"),
            ("Acme", "lowercase letters"),
            ("acme_corp", "lowercase letters"),
            ("acmé", "lowercase letters"),
            ("1acme", "start with"),
            ("-acme", "start with"),
            ("ac--me", "`--`"),
            ("acme-", "end with"),
            ("api", "reserved"),
            ("admin", "reserved"),
            ("internal", "reserved"),
            ("new", "reserved"),
        ];
        for (bad, rule) in cases {
            let broken = slug(bad);
            assert!(broken.iter().any(|m| m.contains(rule)), "{bad}: {broken:?}");
        }
        assert_eq!(slug("A-").len(), 4, "{:?}", slug("A-"));
    }

    #[test]
    fn phones_are_digits_with_light_grouping() {
        for good in [
            "+49 30 1234567",
            "(030) 123-4567",
            "+1.415.555.0100",
            "0301234567",
        ] {
            assert_eq!(phone(good).unwrap().as_deref(), Some(good));
        }
        assert_eq!(phone("  ").unwrap(), None);
        for bad in [
            "12345",
            "call me",
            "+49 30 12ab567",
            "++4930123456",
            "1234567890123456",
            "-1234567",
        ] {
            assert!(phone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_zones_have_the_iana_shape() {
        for good in [
            "UTC",
            "Europe/Berlin",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
            "America/Port-au-Prince",
        ] {
            assert_eq!(time_zone(good).unwrap().as_deref(), Some(good));
        }
        for bad in [
            "Berlin",
            "Mars/Olympus",
            "Europe/",
            "Europe/Berlin/X/Y",
            "europe/berlin",
            "UTC+2",
            "Europe/Ber lin",
            "Europe/_x",
        ] {
            assert!(time_zone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(email(" Bob@Example.COM ").unwrap(), "bob@example.com");
        for bad in [
            "bob",
            "bob@",
            "@example.com",
            "bob@example",
            "bob@.com",
            "b ob@example.com",
            "bob@example..com",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_gather_every_field() {
        let mut errors = Errors::default();
        let phone = errors.check("phone", phone("x"), None);
        let zone = errors.check("time_zone", time_zone("Mars/X"), None);
        assert_eq!((phone, zone), (None, None));
        let problem = errors.finish().unwrap_err();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors.len(), 2);
        assert!(Errors::default().finish().is_ok());
    }
}

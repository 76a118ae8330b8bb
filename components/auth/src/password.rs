//! Password rules after OWASP ASVS 5.0 V6.2: a minimum length and no composition rules, long
//! passphrases allowed, and no password from the list of the most common ones.

use truevalue_sdk::Problem;

/// Shortest password accepted.
pub const MIN_CHARS: usize = 8;
/// Longest password accepted: long passphrases are welcome, unbounded input is not.
pub const MAX_CHARS: usize = 128;

/// The most common leaked passwords of 8 characters or more, lower case, sorted (see
/// `data/README.md`).
const COMMON: &str = include_str!("../data/common-passwords.txt");

/// Whether `password` is among the common passwords, in any letter case.
pub fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    COMMON.lines().any(|common| common == lower)
}

/// Checks a new password; the problem's type names the rule it breaks.
pub fn check(password: &str, email: &str) -> Result<(), Problem> {
    let chars = password.chars().count();
    let broken = |rule: &str, detail: &str| Problem::new(422, rule, "Weak password", detail);
    if chars < MIN_CHARS {
        return Err(broken(
            "password-too-short",
            "the password must be at least 8 characters long; 12 or more is recommended",
        ));
    }
    if chars > MAX_CHARS {
        return Err(broken(
            "password-too-long",
            "the password must be at most 128 characters long",
        ));
    }
    if password.trim().eq_ignore_ascii_case(email.trim()) {
        return Err(broken(
            "password-is-email",
            "the password must not be the account's email address",
        ));
    }
    if is_common(password) {
        return Err(broken(
            "password-too-common",
            "this password is among the most commonly used passwords; choose another, \
             a passphrase of several words works well",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_list_is_sorted_lower_case_and_holds_only_long_enough_passwords() {
        let list: Vec<&str> = COMMON.lines().collect();
        assert!(list.len() > 10_000, "{} entries", list.len());
        assert!(list.windows(2).all(|w| w[0] < w[1]));
        assert!(list.iter().all(|p| p.chars().count() >= MIN_CHARS));
        assert!(list.iter().all(|p| p.to_lowercase() == *p));
    }

    #[test]
    fn each_rule_is_named_when_broken() {
        let rule = |password: &str| check(password, "ada@example.com").err().map(|p| p.kind);
        assert_eq!(rule("short").as_deref(), Some("password-too-short"));
        assert_eq!(rule(&"x".repeat(129)).as_deref(), Some("password-too-long"));
        assert_eq!(
            rule("Ada@Example.com").as_deref(),
            Some("password-is-email")
        );
        assert_eq!(rule("Password1").as_deref(), Some("password-too-common"));
        assert_eq!(rule("iloveyou").as_deref(), Some("password-too-common"));
        assert_eq!(rule("correct horse battery staple"), None);
        assert_eq!(rule(&"long passphrase ".repeat(4)), None);
        // Length counts characters, not bytes, and there are no composition rules.
        assert_eq!(rule("ééééééé").as_deref(), Some("password-too-short"));
        assert_eq!(rule("aaaabbbbcccc"), None);
    }
}

//! Statement checks the engines cannot make for us: one statement per call, and no
//! statement that would escape the host's transaction or the component's sandbox.
//!
//! Isolation itself is the engines' job (a role per component on PostgreSQL, a file per
//! component with attaching disabled on SQLite); this guard turns the attempts into clear
//! `access-denied` errors and keeps transaction control with the host.

use crate::bindings::database::{Dialect, Error};

/// First keywords a component may not use. Transaction control stays with the host; the rest
/// reach outside the component's own data or the connection's settings.
const DENIED: [&str; 20] = [
    "ABORT",
    "ATTACH",
    "BEGIN",
    "CHECKPOINT",
    "COMMIT",
    "COPY",
    "DETACH",
    "DISCARD",
    "END",
    "GRANT",
    "LOAD",
    "PRAGMA",
    "PREPARE",
    "RELEASE",
    "RESET",
    "REVOKE",
    "ROLLBACK",
    "SAVEPOINT",
    "SET",
    "VACUUM",
];

/// Splits `sql` into its statements, refusing any whose first keyword is denied.
pub fn statements(sql: &str, dialect: Dialect) -> Result<Vec<&str>, Error> {
    let statements = split(sql, dialect);
    for statement in &statements {
        let keyword: String = strip_comments_start(statement)
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect::<String>()
            .to_ascii_uppercase();
        if DENIED.contains(&keyword.as_str())
            || keyword == "START"
            || keyword == "ALTER" && denies_alter(statement)
        {
            return Err(Error::AccessDenied(format!(
                "`{keyword}` statements are not allowed: the host manages transactions, roles and attached databases"
            )));
        }
    }
    Ok(statements)
}

/// Exactly one statement, as `query` and `execute` take.
pub fn single(sql: &str, dialect: Dialect) -> Result<&str, Error> {
    match statements(sql, dialect)?.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::Invalid("the SQL is empty".into())),
        _ => Err(Error::Invalid(
            "one statement per call; send each statement separately".into(),
        )),
    }
}

/// `ALTER SYSTEM`, `ALTER ROLE`/`USER`, `ALTER DEFAULT PRIVILEGES` change more than the
/// component's own tables.
fn denies_alter(statement: &str) -> bool {
    let words: Vec<String> = strip_comments_start(statement)
        .split_whitespace()
        .take(2)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    matches!(
        words.get(1).map(String::as_str),
        Some("SYSTEM" | "ROLE" | "USER" | "DEFAULT" | "DATABASE" | "GROUP")
    )
}

fn strip_comments_start(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return s;
        }
    }
}

/// Splits on `;` outside quotes and comments, with each engine's quoting rules.
fn split(sql: &str, dialect: Dialect) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        i = match bytes[i] {
            b'\'' => skip_quoted(bytes, i, b'\'', escapes_backslash(bytes, i, dialect)),
            b'"' => skip_quoted(bytes, i, b'"', false),
            b'`' if dialect == Dialect::Sqlite => skip_quoted(bytes, i, b'`', false),
            b'[' if dialect == Dialect::Sqlite => skip_quoted(bytes, i, b']', false),
            b'$' if dialect == Dialect::Postgres => skip_dollar_quoted(bytes, i),
            b'-' if bytes.get(i + 1) == Some(&b'-') => bytes[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |p| i + p + 1),
            b'/' if bytes.get(i + 1) == Some(&b'*') => skip_block_comment(bytes, i, dialect),
            b';' => {
                statements.push(&sql[start..i]);
                start = i + 1;
                i + 1
            }
            _ => i + 1,
        };
    }
    statements.push(&sql[start..]);
    statements
        .into_iter()
        .filter(|s| !strip_comments_start(s).is_empty())
        .map(str::trim)
        .collect()
}

/// PostgreSQL's `E'…'` strings take backslash escapes.
fn escapes_backslash(bytes: &[u8], quote: usize, dialect: Dialect) -> bool {
    dialect == Dialect::Postgres
        && quote > 0
        && matches!(bytes[quote - 1], b'e' | b'E')
        && (quote == 1 || !(bytes[quote - 2].is_ascii_alphanumeric() || bytes[quote - 2] == b'_'))
}

/// Returns the index after the closing quote; a doubled quote is an escaped one.
fn skip_quoted(bytes: &[u8], open: usize, close: u8, backslash: bool) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        if backslash && bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == close {
            if close != b']' && bytes.get(i + 1) == Some(&close) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// `$tag$ … $tag$`; a `$1` placeholder is not a quote.
fn skip_dollar_quoted(bytes: &[u8], open: usize) -> usize {
    let tag_end = bytes[open + 1..]
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
        .map(|p| open + 1 + p);
    let Some(tag_end) = tag_end.filter(|&e| bytes[e] == b'$') else {
        return open + 1;
    };
    if bytes.get(open + 1).is_some_and(u8::is_ascii_digit) {
        return open + 1;
    }
    let tag = &bytes[open..=tag_end];
    bytes[tag_end + 1..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(bytes.len(), |p| tag_end + 1 + p + tag.len())
}

/// PostgreSQL block comments nest; SQLite's do not.
fn skip_block_comment(bytes: &[u8], open: usize, dialect: Dialect) -> usize {
    let mut depth = 0;
    let mut i = open;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') if depth == 0 || dialect == Dialect::Postgres => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(sql: &str, dialect: Dialect) -> bool {
        matches!(statements(sql, dialect), Err(Error::AccessDenied(_)))
    }

    #[test]
    fn transaction_control_and_attach_are_refused_on_both_engines() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            for sql in [
                "COMMIT",
                "  rollback",
                "/* x */ BEGIN",
                "-- c\nATTACH 'x' AS y",
                "set role postgres",
                "RESET ROLE",
                "pragma writable_schema=1",
                "VACUUM INTO '/tmp/x'",
                "alter system set x = 1",
                "START TRANSACTION",
                "savepoint a",
                "GRANT SELECT ON t TO PUBLIC",
            ] {
                assert!(denied(sql, dialect), "{sql} must be refused on {dialect:?}");
            }
        }
    }

    #[test]
    fn ordinary_statements_pass() {
        for sql in [
            "SELECT 1",
            "insert into settings (key) values ('commit; begin')",
            "ALTER TABLE t ADD c INT",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "UPDATE t SET a = $1 WHERE b = $2",
        ] {
            assert_eq!(single(sql, Dialect::Postgres).ok(), Some(sql));
            assert_eq!(single(sql, Dialect::Sqlite).ok(), Some(sql));
        }
    }

    #[test]
    fn a_second_statement_hidden_behind_quoting_is_found() {
        assert!(denied("SELECT [a'b]; COMMIT", Dialect::Sqlite));
        assert!(denied("SELECT `a'b`; COMMIT", Dialect::Sqlite));
        assert!(denied("SELECT E'\\''; COMMIT", Dialect::Postgres));
        assert!(denied("SELECT 'a''b'; COMMIT", Dialect::Sqlite));
        assert!(denied(
            "SELECT /* a */ 1; /* b */ RESET ROLE",
            Dialect::Postgres
        ));
        assert!(denied("SELECT $1; COMMIT", Dialect::Postgres));
    }

    #[test]
    fn quoted_semicolons_do_not_split() {
        let sql = "SELECT $body$ a; b $body$, 'c;d', \"e;f\" -- g;h\n";
        assert_eq!(
            statements(sql, Dialect::Postgres).ok().map(|s| s.len()),
            Some(1)
        );
        assert!(matches!(
            single("SELECT 1; SELECT 2", Dialect::Postgres),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn migration_scripts_split_into_statements() {
        let script = "CREATE TABLE a (x INT);\n-- comment;\nCREATE TABLE b (y TEXT DEFAULT ';');\n";
        assert_eq!(
            statements(script, Dialect::Sqlite).ok().map(|s| s.len()),
            Some(2)
        );
    }
}

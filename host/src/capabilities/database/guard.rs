//! The host's reading of component SQL: where each statement ends, and which statements would
//! take over what the host manages (the request's transaction, the session's settings).
//!
//! This is not the security boundary; the engines are. SQLite checks every statement with the
//! authorizer (`sqlite.rs`), PostgreSQL with the component's role and grants (`postgres.rs`), so
//! SQL this tokenizer misreads, or a `DO` block that runs statements of its own, meets the same
//! refusals. The guard exists so that the common cases fail early with a message saying what
//! was refused, and so that `query`/`execute` take exactly one statement.

use crate::bindings::database::{Dialect, Error};

/// Splits `sql` into its statements, refusing any the host keeps for itself.
pub fn statements(sql: &str, dialect: Dialect) -> Result<Vec<&str>, Error> {
    let statements = split(sql, dialect);
    for statement in &statements {
        refuse_host_statement(statement, dialect)?;
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

/// Statements whose first word says they manage the transaction or the session.
fn refuse_host_statement(statement: &str, dialect: Dialect) -> Result<(), Error> {
    let words = leading_words(statement, 2);
    let first = words.first().map(String::as_str).unwrap_or_default();
    let second = words.get(1).map(String::as_str).unwrap_or_default();
    let why = match (dialect, first) {
        (
            _,
            "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE",
        ) => "the host begins and ends each request's transaction",
        (Dialect::Sqlite, "ATTACH" | "DETACH" | "VACUUM") => {
            "a component reaches only its own database file"
        }
        (Dialect::Sqlite, "PRAGMA") => "pragmas change or reveal the host's connection settings",
        // Session settings would outlive the request on a pooled connection; `SET LOCAL` and
        // `SET CONSTRAINTS` end with the transaction.
        (Dialect::Postgres, "SET") if !matches!(second, "LOCAL" | "CONSTRAINTS") => {
            "session settings belong to the host; use SET LOCAL"
        }
        (Dialect::Postgres, "RESET" | "DISCARD" | "PREPARE" | "DEALLOCATE" | "LOAD") => {
            "session state belongs to the host"
        }
        (Dialect::Postgres, "COPY") => "COPY moves data outside the statement's result",
        _ => return Ok(()),
    };
    Err(Error::AccessDenied(format!(
        "`{first}` statements are not allowed: {why}"
    )))
}

/// The first `n` words of a statement, upper-cased, skipping comments.
fn leading_words(statement: &str, n: usize) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = statement;
    while words.len() < n {
        rest = strip_comments_start(rest);
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
            .collect();
        if word.is_empty() {
            break;
        }
        rest = &rest[word.len()..];
        words.push(word.to_ascii_uppercase());
    }
    words
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

/// Whether a statement's leading words open a body of several statements that ends with `END`:
/// SQLite's `CREATE TRIGGER … BEGIN …; END`, PostgreSQL's `CREATE FUNCTION … BEGIN ATOMIC …; END`.
fn opens_body(head: &[String], dialect: Dialect) -> bool {
    let mut words = head.iter().map(String::as_str);
    if words.next() != Some("CREATE") {
        return false;
    }
    let kind = words.find(|w| !matches!(*w, "OR" | "REPLACE" | "TEMP" | "TEMPORARY"));
    match dialect {
        Dialect::Sqlite => kind == Some("TRIGGER"),
        Dialect::Postgres => matches!(kind, Some("FUNCTION" | "PROCEDURE")),
    }
}

/// Splits on `;` outside quotes, comments and statement bodies, with each engine's rules.
fn split(sql: &str, dialect: Dialect) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut i = 0;
    // The statement's first words, and how deep inside `BEGIN`/`CASE` … `END` it is once they
    // say it has a body. `CASE … END` nests inside a body and never directly follows a `;`.
    let mut head: Vec<String> = Vec::new();
    let mut depth = 0usize;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_alphabetic() || b == b'_' {
            let end = bytes[i..]
                .iter()
                .position(|&c| {
                    !(c.is_ascii_alphanumeric()
                        || c == b'_'
                        || c == b'$' && dialect == Dialect::Postgres)
                })
                .map_or(bytes.len(), |p| i + p);
            let word = sql[i..end].to_ascii_uppercase();
            if head.len() < 5 {
                head.push(word);
            } else if opens_body(&head, dialect) {
                match word.as_str() {
                    "BEGIN" | "CASE" => depth += 1,
                    "END" => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
            i = end;
            continue;
        }
        i = match b {
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
            b';' if depth == 0 => {
                statements.push(&sql[start..i]);
                start = i + 1;
                head.clear();
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

    fn count(sql: &str, dialect: Dialect) -> Option<usize> {
        statements(sql, dialect).ok().map(|s| s.len())
    }

    #[test]
    fn transaction_control_is_refused_on_both_engines() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            for sql in [
                "COMMIT",
                "  rollback",
                "/* x */ BEGIN",
                "-- c\nEND",
                "START TRANSACTION",
                "savepoint a",
                "RELEASE a",
            ] {
                assert!(denied(sql, dialect), "{sql} must be refused on {dialect:?}");
            }
        }
        for sql in [
            "ATTACH 'x' AS y",
            "pragma writable_schema=1",
            "VACUUM INTO '/tmp/x'",
        ] {
            assert!(denied(sql, Dialect::Sqlite), "{sql}");
        }
        for sql in [
            "set role postgres",
            "RESET ROLE",
            "DISCARD ALL",
            "COPY t TO STDOUT",
        ] {
            assert!(denied(sql, Dialect::Postgres), "{sql}");
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
            "INSERT INTO t (k, v) VALUES (1, 2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            "GRANT SELECT ON t TO PUBLIC",
        ] {
            assert_eq!(single(sql, Dialect::Postgres).ok(), Some(sql));
            assert_eq!(single(sql, Dialect::Sqlite).ok(), Some(sql));
        }
        for sql in [
            "SET LOCAL statement_timeout = 100",
            "SET CONSTRAINTS ALL DEFERRED",
        ] {
            assert_eq!(single(sql, Dialect::Postgres).ok(), Some(sql));
        }
    }

    #[test]
    fn a_trigger_body_is_one_statement_with_its_semicolons() {
        let trigger = "CREATE TRIGGER audit AFTER INSERT ON notes\nBEGIN\n  INSERT INTO log (text) VALUES (CASE WHEN new.text = '' THEN 'empty' ELSE new.text END);\n  UPDATE counts SET n = n + 1;\nEND";
        assert_eq!(single(trigger, Dialect::Sqlite).ok(), Some(trigger));
        let script = format!(
            "CREATE TABLE log (text TEXT);\n{trigger};\nCREATE TEMP TRIGGER t2 BEFORE DELETE ON notes BEGIN SELECT 1; END;\nSELECT 2"
        );
        assert_eq!(count(&script, Dialect::Sqlite), Some(4));
    }

    #[test]
    fn an_atomic_function_body_is_one_statement_with_its_semicolons() {
        let function = "CREATE OR REPLACE FUNCTION bump() RETURNS int LANGUAGE sql BEGIN ATOMIC UPDATE counts SET n = n + 1; SELECT CASE WHEN 1 = 1 THEN 1 END; END";
        assert_eq!(single(function, Dialect::Postgres).ok(), Some(function));
        let script = "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;\nCREATE TRIGGER t BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION f();\nSELECT 1";
        assert_eq!(count(script, Dialect::Postgres), Some(3));
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
        assert!(denied("SELECT a$b$c; COMMIT", Dialect::Postgres));
    }

    #[test]
    fn quoted_semicolons_do_not_split() {
        let sql = "SELECT $body$ a; b $body$, 'c;d', \"e;f\" -- g;h\n";
        assert_eq!(count(sql, Dialect::Postgres), Some(1));
        assert!(matches!(
            single("SELECT 1; SELECT 2", Dialect::Postgres),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn migration_scripts_split_into_statements() {
        let script = "CREATE TABLE a (x INT);\n-- comment;\nCREATE TABLE b (y TEXT DEFAULT ';');\n";
        assert_eq!(count(script, Dialect::Sqlite), Some(2));
    }
}

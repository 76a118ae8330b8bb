//! SQLite's authorizer, the engine-side check of every statement a component sends.
//!
//! SQLite calls the authorizer while it compiles a statement, once per action the statement
//! would take (each table read or written, each function, each trigger body it fires), so what
//! a statement may do is decided on what SQLite understood, not on how the host read the text.
//! A connection is in one of two modes: [`Mode::Host`] for the host's own statements (beginning
//! and ending transactions, the migration records) and [`Mode::Guest`] while a component's
//! statement runs. Switching re-installs the authorizer, which also expires every prepared
//! statement of the connection, so a cached statement is always recompiled under the mode in
//! force when it runs: a component that sends the text of one of the host's statements meets
//! the guest rules.

use std::ffi::{CStr, c_char, c_int, c_void};

use libsqlite3_sys as ffi;
use sqlx::SqliteConnection;
use sqlx::sqlite::LockedSqliteHandle;

/// The prefix of the host's own tables in a component's file; components may not touch them.
pub const HOST_TABLES: &str = "truevalue_";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Host,
    Guest,
}

// The authorizer's user data points at one of these; only the address matters.
static HOST: u8 = 0;
static GUEST: u8 = 1;

/// Installs the authorizer for `mode` on the connection.
pub async fn set_mode(conn: &mut SqliteConnection, mode: Mode) -> Result<(), sqlx::Error> {
    set_mode_locked(&mut conn.lock_handle().await?, mode);
    Ok(())
}

/// [`set_mode`] on a connection whose handle the caller holds: each lock of a handle is a
/// round trip to the connection's worker thread.
pub fn set_mode_locked(handle: &mut LockedSqliteHandle<'_>, mode: Mode) {
    let db = handle.as_raw_handle().as_ptr();
    let user_data = match mode {
        Mode::Host => &HOST,
        Mode::Guest => &GUEST,
    } as *const u8 as *mut c_void;
    // SAFETY: `db` is a live connection, locked for the duration of the call; the user data is
    // a static that outlives it, and `authorize` never unwinds.
    unsafe {
        ffi::sqlite3_set_authorizer(db, Some(authorize), user_data);
    }
}

/// Sets the engine's own limits once per connection: no attached databases at all, defensive
/// mode on, and the authorizer in host mode.
pub async fn harden(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: the handle is a live connection, locked for the duration of the calls.
    unsafe {
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_ATTACHED, 0);
        ffi::sqlite3_db_config(
            db,
            ffi::SQLITE_DBCONFIG_DEFENSIVE,
            1 as c_int,
            std::ptr::null_mut::<c_int>(),
        );
    }
    set_mode_locked(&mut handle, Mode::Host);
    Ok(())
}

/// SQLite's own default for the longest string or blob (`SQLITE_MAX_LENGTH`).
const DEFAULT_MAX_LENGTH: c_int = 1_000_000_000;

/// Whether a connection coming back to the pool can serve again: one whose component statement
/// was cancelled is still in guest mode, and if it was inside a transaction, the rollback was
/// refused; closing it rolls back, so it is dropped. Otherwise it goes back in host mode.
pub async fn reusable(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: the handle is a live connection, locked for the duration of the calls.
    if unsafe { ffi::sqlite3_get_autocommit(db) == 0 } {
        return Ok(false);
    }
    // A request's stop (deadline, request gone) and result bound must not outlive it: the
    // host's own statements on this connection (migrations of a later deploy) have neither.
    handle.remove_progress_handler();
    // SAFETY: as above.
    unsafe {
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_LENGTH, DEFAULT_MAX_LENGTH);
    }
    set_mode_locked(&mut handle, Mode::Host);
    Ok(true)
}

/// The authorizer: `SQLITE_OK` to allow, `SQLITE_DENY` to fail the statement.
unsafe extern "C" fn authorize(
    user_data: *mut c_void,
    action: c_int,
    arg1: *const c_char,
    arg2: *const c_char,
    _database: *const c_char,
    _trigger_or_view: *const c_char,
) -> c_int {
    let guest = std::ptr::eq(user_data as *const u8, &GUEST);
    // SAFETY: SQLite passes NUL-terminated strings or null, valid for the call.
    let (arg1, arg2) = unsafe { (text(arg1), text(arg2)) };
    if allowed(guest, action, arg1, arg2) {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_DENY
    }
}

/// # Safety
/// `ptr` is null or a NUL-terminated string valid for the returned lifetime.
unsafe fn text<'a>(ptr: *const c_char) -> &'a [u8] {
    if ptr.is_null() {
        b""
    } else {
        // SAFETY: per the function's contract.
        unsafe { CStr::from_ptr(ptr) }.to_bytes()
    }
}

/// The rules, apart from the FFI. `arg1`/`arg2` are the action's names (table, index, trigger,
/// function, pragma, …; see `sqlite3_set_authorizer`).
fn allowed(guest: bool, action: c_int, arg1: &[u8], arg2: &[u8]) -> bool {
    match action {
        // Never after connecting, not even for the host: other files, and settings that
        // change or reveal the connection (`pragma_database_list` shows the file's path).
        ffi::SQLITE_ATTACH | ffi::SQLITE_DETACH | ffi::SQLITE_PRAGMA => false,
        ffi::SQLITE_FUNCTION => {
            !(arg2.eq_ignore_ascii_case(b"load_extension")
                || arg2.eq_ignore_ascii_case(b"fts3_tokenizer"))
        }
        _ if !guest => true,
        // The host begins and ends the request's transaction.
        ffi::SQLITE_TRANSACTION | ffi::SQLITE_SAVEPOINT => false,
        // Temporary objects would outlive the request on a pooled connection.
        ffi::SQLITE_CREATE_TEMP_INDEX
        | ffi::SQLITE_CREATE_TEMP_TABLE
        | ffi::SQLITE_CREATE_TEMP_TRIGGER
        | ffi::SQLITE_CREATE_TEMP_VIEW => false,
        _ => !(host_table(arg1) || host_table(arg2)),
    }
}

fn host_table(name: &[u8]) -> bool {
    name.len() >= HOST_TABLES.len()
        && name[..HOST_TABLES.len()].eq_ignore_ascii_case(HOST_TABLES.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_keep_to_their_own_tables_and_the_host_to_its_own_statements() {
        let read = |table: &[u8]| allowed(true, ffi::SQLITE_READ, table, b"text");
        assert!(read(b"notes"));
        assert!(!read(b"truevalue_migrations"));
        assert!(!read(b"TrueValue_Migrations"));
        assert!(!allowed(
            true,
            ffi::SQLITE_CREATE_TRIGGER,
            b"t",
            b"truevalue_migrations"
        ));
        assert!(allowed(
            false,
            ffi::SQLITE_INSERT,
            b"truevalue_migrations",
            b""
        ));
        assert!(!allowed(true, ffi::SQLITE_TRANSACTION, b"COMMIT", b""));
        assert!(allowed(false, ffi::SQLITE_TRANSACTION, b"COMMIT", b""));
        for guest in [true, false] {
            assert!(!allowed(guest, ffi::SQLITE_PRAGMA, b"database_list", b""));
            assert!(!allowed(guest, ffi::SQLITE_ATTACH, b"/tmp/x", b""));
            assert!(!allowed(
                guest,
                ffi::SQLITE_FUNCTION,
                b"",
                b"LOAD_EXTENSION"
            ));
            assert!(allowed(guest, ffi::SQLITE_FUNCTION, b"", b"upper"));
        }
    }

    /// A component statement cancelled inside a transaction leaves its connection in guest
    /// mode, where the rollback is refused: the pool must not hand that connection out again.
    #[tokio::test]
    async fn a_connection_left_in_guest_mode_never_serves_again() -> anyhow::Result<()> {
        use sqlx::sqlite::SqlitePoolOptions;
        let dir = tempfile::tempdir()?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| Box::pin(harden(conn)))
            .after_release(|conn, _| Box::pin(reusable(conn)))
            .connect(&format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("t.sqlite").display()
            ))
            .await?;
        sqlx::query("CREATE TABLE t (x INT)").execute(&pool).await?;

        let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *transaction)
            .await?;
        set_mode(&mut transaction, Mode::Guest).await?;
        drop(transaction);

        // The next transaction gets a connection in host mode, the write lock is free, and
        // the abandoned write is gone.
        let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut *transaction)
            .await?;
        assert_eq!(count, 0);
        transaction.commit().await?;
        Ok(())
    }
}

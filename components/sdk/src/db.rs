//! The component's own database: statements with `$1` placeholders, typed rows.
//!
//! All statements of a request share one transaction that the host commits when the handler
//! answers below 500 and rolls back otherwise.

use crate::Problem;
use crate::bindings::truevalue::platform::database as raw;

pub use raw::Dialect;
pub use raw::Error;
pub use raw::Value;

/// A schema change shipped with the component; see [`crate::App::migrations`].
pub struct Migration {
    pub id: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The engine the host runs on.
pub fn dialect() -> Dialect {
    raw::current_dialect()
}

/// Runs a statement that returns rows.
pub fn query(sql: &str, params: &[Value]) -> Result<Vec<Row>, Error> {
    let result = raw::query(sql, params)?;
    let columns = std::rc::Rc::new(result.columns);
    Ok(result
        .rows
        .into_iter()
        .map(|values| Row {
            columns: columns.clone(),
            values,
        })
        .collect())
}

/// Runs a statement that returns rows and converts each with [`FromRow`].
pub fn query_as<T: FromRow>(sql: &str, params: &[Value]) -> Result<Vec<T>, Error> {
    query(sql, params)?.iter().map(T::from_row).collect()
}

/// Runs a statement that returns at most one row.
pub fn query_one<T: FromRow>(sql: &str, params: &[Value]) -> Result<Option<T>, Error> {
    Ok(query_as(sql, params)?.into_iter().next())
}

/// Runs a statement and returns how many rows it changed.
pub fn execute(sql: &str, params: &[Value]) -> Result<u64, Error> {
    raw::execute(sql, params)
}

/// One row of a query result.
pub struct Row {
    columns: std::rc::Rc<Vec<String>>,
    values: Vec<Value>,
}

impl Row {
    /// A row from its parts, for tests of `FromRow` implementations; the host builds the
    /// rows a query returns.
    #[doc(hidden)]
    pub fn from_parts(columns: Vec<String>, values: Vec<Value>) -> Self {
        Self {
            columns: std::rc::Rc::new(columns),
            values,
        }
    }

    /// The value of `column`, converted.
    pub fn get<T: FromValue>(&self, column: &str) -> Result<T, Error> {
        let index = self
            .columns
            .iter()
            .position(|c| c == column)
            .ok_or_else(|| Error::Invalid(format!("the result has no column `{column}`")))?;
        let value = self
            .values
            .get(index)
            .ok_or_else(|| Error::Invalid(format!("the result has no value for `{column}`")))?;
        T::from_value(value)
            .map_err(|expected| Error::Invalid(format!("column `{column}` is not {expected}")))
    }
}

/// Builds a value from a row: `#[derive(FromRow)]` on a struct with named fields reads each
/// field from the column of that name (or the one `#[row(rename = "column")]` names).
///
/// ```
/// use truevalue_sdk::prelude::*;
///
/// #[derive(FromRow)]
/// struct Member {
///     user_id: String,
///     joined_at: i64,
///     #[row(rename = "job_title")]
///     title: Option<String>,
/// }
/// ```
///
/// Only structs with named fields can be derived: columns are matched by name.
///
/// ```compile_fail
/// use truevalue_sdk::prelude::*;
///
/// #[derive(FromRow)]
/// struct Pair(String, i64);
/// ```
///
/// ```compile_fail
/// use truevalue_sdk::prelude::*;
///
/// #[derive(FromRow)]
/// enum Status { Active, Disabled }
/// ```
pub trait FromRow: Sized {
    fn from_row(row: &Row) -> Result<Self, Error>;
}

/// Converts one column value; the error names the expected type.
pub trait FromValue: Sized {
    fn from_value(value: &Value) -> Result<Self, &'static str>;
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Integer(i) => Ok(*i),
            _ => Err("an integer"),
        }
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Real(f) => Ok(*f),
            Value::Integer(i) => Ok(*i as f64),
            _ => Err("a number"),
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            _ => Err("text"),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Boolean(b) => Ok(*b),
            Value::Integer(i) => Ok(*i != 0),
            _ => Err("a boolean"),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Blob(b) => Ok(b.clone()),
            _ => Err("bytes"),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Boolean(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl Error {
    /// Whether a unique (or primary-key) constraint refused the statement: the row exists
    /// already. Lets a handler answer its own 409 ("an account with this email already
    /// exists") instead of the generic one.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            // SQLite: "UNIQUE constraint failed: users.email"; PostgreSQL: "duplicate key value
            // violates unique constraint \"users_email_key\"".
            Error::Constraint(text) => text.to_ascii_lowercase().contains("unique constraint"),
            _ => false,
        }
    }
}

/// A database error in a handler: a violated constraint is the client's conflict (409);
/// anything else is the component's failure (500, transaction rolled back).
///
/// The engine's text never reaches the client: it names tables, columns and constraints, and
/// differs between engines. A 409 says only that the request conflicts with existing data; a
/// 500 keeps the text as its detail, which the host logs and does not send.
impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        match error {
            Error::Constraint(_) => Problem::conflict("the request conflicts with existing data"),
            other => Problem::internal(format!("database: {other:?}")),
        }
    }
}

/// Maps a unique violation to the handler's own problem: `db::execute(...).on_conflict(||
/// Problem::conflict("an organization with this slug exists"))?`. Other errors convert as
/// [`From<Error> for Problem`](Problem#impl-From<Error>-for-Problem) does.
pub trait OnConflict<T> {
    fn on_conflict(self, problem: impl FnOnce() -> Problem) -> Result<T, Problem>;
}

impl<T> OnConflict<T> for Result<T, Error> {
    fn on_conflict(self, problem: impl FnOnce() -> Problem) -> Result<T, Problem> {
        self.map_err(|error| match error.is_unique_violation() {
            true => problem(),
            false => error.into(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::prelude::*;

    #[derive(FromRow, Debug, PartialEq)]
    struct Member {
        user_id: String,
        joined_at: i64,
        title: Option<String>,
        #[row(rename = "is_owner")]
        owner: bool,
        r#type: String,
    }

    fn row(columns: &[&str], values: Vec<Value>) -> Row {
        Row::from_parts(columns.iter().map(|c| c.to_string()).collect(), values)
    }

    #[test]
    fn the_derive_reads_each_field_from_its_column() {
        let member = Member::from_row(&row(
            &["type", "is_owner", "title", "joined_at", "user_id"],
            vec![
                "admin".into(),
                Value::Integer(1),
                Value::Null,
                1_700_000_000.into(),
                "u1".into(),
            ],
        ))
        .unwrap();
        assert_eq!(
            member,
            Member {
                user_id: "u1".into(),
                joined_at: 1_700_000_000,
                title: None,
                owner: true,
                r#type: "admin".into(),
            }
        );
    }

    #[test]
    fn the_derive_names_a_missing_or_mistyped_column() {
        let columns = ["user_id", "joined_at", "title", "is_owner", "type"];
        let missing = Member::from_row(&row(
            &columns[..4],
            vec!["u1".into(), 1.into(), Value::Null, true.into()],
        ));
        assert!(matches!(missing, Err(Error::Invalid(m)) if m.contains("`type`")));
        let mistyped = Member::from_row(&row(
            &columns,
            vec![
                "u1".into(),
                "yesterday".into(),
                Value::Null,
                true.into(),
                "x".into(),
            ],
        ));
        assert!(matches!(mistyped, Err(Error::Invalid(m)) if m.contains("`joined_at`")));
    }

    #[test]
    fn engine_text_never_reaches_the_client() {
        let sqlite = Error::Constraint("UNIQUE constraint failed: users.email".into());
        let postgres = Error::Constraint(
            "duplicate key value violates unique constraint \"users_email_key\"".into(),
        );
        let foreign = Error::Constraint("FOREIGN KEY constraint failed".into());
        assert!(sqlite.is_unique_violation() && postgres.is_unique_violation());
        assert!(!foreign.is_unique_violation());
        assert!(!Error::Invalid("unique constraint".into()).is_unique_violation());
        for error in [sqlite.clone(), postgres.clone(), foreign.clone()] {
            let problem = Problem::from(error);
            assert_eq!(problem.status, 409);
            assert!(!problem.detail.contains("users") && !problem.detail.contains("FOREIGN"));
        }
        let taken = || Problem::conflict("an account with this email already exists");
        assert_eq!(
            Err::<(), _>(postgres).on_conflict(taken).unwrap_err(),
            taken()
        );
        assert_eq!(
            Err::<(), _>(foreign).on_conflict(taken).unwrap_err().detail,
            "the request conflicts with existing data"
        );
        let failed = Err::<(), _>(Error::Unavailable("connection reset".into()));
        assert_eq!(failed.on_conflict(taken).unwrap_err().status, 500);
    }
}

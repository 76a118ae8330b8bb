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
    /// The value of `column`, converted.
    pub fn get<T: FromValue>(&self, column: &str) -> Result<T, Error> {
        let index = self
            .columns
            .iter()
            .position(|c| c == column)
            .ok_or_else(|| Error::Invalid(format!("the result has no column `{column}`")))?;
        T::from_value(&self.values[index])
            .map_err(|expected| Error::Invalid(format!("column `{column}` is not {expected}")))
    }
}

/// Builds a value from a row; implement it for the structs a component reads.
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

/// A database error in a handler: a violated constraint is the client's conflict (409);
/// anything else is the component's failure (500, transaction rolled back).
impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        match error {
            Error::Constraint(detail) => Problem::conflict(detail),
            other => Problem::internal(format!("database: {other:?}")),
        }
    }
}

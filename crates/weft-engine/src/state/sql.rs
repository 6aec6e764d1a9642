//! The small SQL layer both state backends implement: values, rows, and a transaction that runs
//! statements. Every query of [`super::State`] is written once, with SQLite's numbered
//! placeholders (`?1`, `?2`…), in the SQL both SQLite and PostgreSQL accept (`IS DISTINCT
//! FROM`, `TRUE`, `RETURNING`, `ON CONFLICT … DO UPDATE`); the PostgreSQL backend turns the
//! placeholders into `$1`, `$2`….

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};

use super::StateError;

/// One value of a parameter or a column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// SQL NULL.
    Null,
    /// An integer (SQLite INTEGER, PostgreSQL BIGINT or INT).
    Int(i64),
    /// A boolean (SQLite stores it as 0 or 1).
    Bool(bool),
    /// Text.
    Text(String),
    /// Anything else a damaged row may hold (a float, a blob), named for the error.
    Other(&'static str),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// The parameters of a statement: `vals![a, b, c]`.
macro_rules! vals {
    ($($v:expr),* $(,)?) => {
        &[$($crate::state::sql::Value::from($v)),*][..]
    };
}
pub(crate) use vals;

/// Failures inside a transaction: the backend's, a row that does not read, or the state's own.
#[derive(Debug)]
pub(crate) enum Fail {
    /// SQLite's.
    Sqlite(rusqlite::Error),
    /// PostgreSQL's.
    Pg(super::pg::PgFail),
    /// A column that does not hold what the state wrote there.
    Decode(String),
    /// The state's own (no such run, …).
    State(StateError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<StateError> for Fail {
    fn from(e: StateError) -> Self {
        Self::State(e)
    }
}

/// A row: its columns in the order the query names them.
pub(crate) struct Row(pub(crate) Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, Fail> {
        self.0
            .get(i)
            .ok_or_else(|| Fail::Decode(format!("column {i} is missing")))
    }

    fn wrong(i: usize, want: &str, got: &Value) -> Fail {
        let got = match got {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Bool(_) => "a boolean",
            Value::Text(_) => "text",
            Value::Other(what) => what,
        };
        Fail::Decode(format!("column {i} holds {got} where {want} belongs"))
    }

    /// An optional integer.
    pub(crate) fn opt_int(&self, i: usize) -> Result<Option<i64>, Fail> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            other => Err(Self::wrong(i, "an integer", other)),
        }
    }

    /// An integer.
    pub(crate) fn int(&self, i: usize) -> Result<i64, Fail> {
        self.opt_int(i)?
            .ok_or_else(|| Self::wrong(i, "an integer", &Value::Null))
    }

    /// A count or a millisecond time: an integer that is not negative.
    pub(crate) fn opt_u64(&self, i: usize) -> Result<Option<u64>, Fail> {
        self.opt_int(i)?
            .map(|v| {
                u64::try_from(v)
                    .map_err(|_| Fail::Decode(format!("column {i} holds {v}, below zero")))
            })
            .transpose()
    }

    /// A count or a millisecond time.
    pub(crate) fn u64(&self, i: usize) -> Result<u64, Fail> {
        self.opt_u64(i)?
            .ok_or_else(|| Self::wrong(i, "an integer", &Value::Null))
    }

    /// A small count.
    pub(crate) fn u32(&self, i: usize) -> Result<u32, Fail> {
        let v = self.int(i)?;
        u32::try_from(v).map_err(|_| Fail::Decode(format!("column {i} holds {v}, out of range")))
    }

    /// A boolean (an integer 0 or 1 from SQLite).
    pub(crate) fn bool(&self, i: usize) -> Result<bool, Fail> {
        match self.at(i)? {
            Value::Bool(v) => Ok(*v),
            Value::Int(v) => Ok(*v != 0),
            other => Err(Self::wrong(i, "a boolean", other)),
        }
    }

    /// Optional text.
    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<String>, Fail> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            other => Err(Self::wrong(i, "text", other)),
        }
    }

    /// Text.
    pub(crate) fn text(&self, i: usize) -> Result<String, Fail> {
        self.opt_text(i)?
            .ok_or_else(|| Self::wrong(i, "text", &Value::Null))
    }
}

/// Statements run inside one transaction (a write) or one connection (a read).
pub(crate) trait Tx {
    /// Runs a statement; returns how many rows it changed.
    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, Fail>;
    /// Runs a query; returns its rows.
    fn rows(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, Fail>;
    /// Runs a script of statements without parameters (a migration), as one batch.
    fn script(&mut self, sql: &'static str) -> Result<(), Fail>;
}

impl dyn Tx + '_ {
    /// The first row of a query, if any.
    pub(crate) fn row(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, Fail> {
        Ok(self.rows(sql, params)?.into_iter().next())
    }

    /// The first row of a query that always answers one (a count, `EXISTS`, `RETURNING`).
    pub(crate) fn one(&mut self, sql: &str, params: &[Value]) -> Result<Row, Fail> {
        self.row(sql, params)?
            .ok_or_else(|| Fail::Decode("a query that always answers a row answered none".into()))
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Self::Null | Self::Other(_) => ToSqlOutput::Borrowed(ValueRef::Null),
            Self::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Self::Bool(v) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*v))),
            Self::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
        })
    }
}

/// SQLite's side: statements on one connection.
pub(crate) struct SqliteTx<'a>(pub(crate) &'a Connection);

impl Tx for SqliteTx<'_> {
    fn script(&mut self, sql: &'static str) -> Result<(), Fail> {
        Ok(self.0.execute_batch(sql)?)
    }

    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, Fail> {
        let mut stmt = self.0.prepare(sql)?;
        let n = stmt.execute(rusqlite::params_from_iter(params.iter()))?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    fn rows(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, Fail> {
        let mut stmt = self.0.prepare(sql)?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut cols = Vec::with_capacity(width);
            for i in 0..width {
                cols.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Text(t) => Value::Text(
                        std::str::from_utf8(t)
                            .map_err(|_| Fail::Decode(format!("column {i} is not UTF-8 text")))?
                            .to_owned(),
                    ),
                    ValueRef::Real(_) => Value::Other("a real number"),
                    ValueRef::Blob(_) => Value::Other("a blob"),
                });
            }
            out.push(Row(cols));
        }
        Ok(out)
    }
}

/// A query with SQLite's `?N` placeholders written with PostgreSQL's `$N`. The state's queries
/// hold no `?` anywhere else (no string literal contains one).
pub(crate) fn dollar_placeholders(sql: &str) -> String {
    sql.replace('?', "$")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_for_postgres() {
        assert_eq!(
            dollar_placeholders("SELECT a FROM t WHERE b = ?1 AND c > ?12"),
            "SELECT a FROM t WHERE b = $1 AND c > $12"
        );
    }

    #[test]
    fn a_wrong_column_is_a_decode_error_not_a_panic() {
        let row = Row(vec![Value::Text("x".into()), Value::Int(-1)]);
        assert!(matches!(row.int(0), Err(Fail::Decode(_))));
        assert!(matches!(row.u64(1), Err(Fail::Decode(_))));
        assert!(matches!(row.text(5), Err(Fail::Decode(_))));
        assert!(row.bool(1).unwrap());
    }
}

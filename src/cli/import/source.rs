//! The old bus's table, read-only: its columns found by name, its rows read
//! in pages in id order, and the fingerprint that names the import.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use super::Args;

/// Why the old database cannot be imported from: nothing was tried.
#[derive(Debug, thiserror::Error)]
pub(super) enum SourceError {
    #[error("{}: no such file (--sqlite)", .0.display())]
    NoFile(PathBuf),
    #[error("cannot open {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot read {} as an SQLite database", .path.display())]
    NotSqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{} has no table {table:?} (--table); its tables: {tables}", .path.display())]
    NoTable { path: PathBuf, table: String, tables: String },
    #[error("table {table:?} has no column {column:?} (--{flag}{}); its columns: {columns}",
        if *.optional { ", or '' if it has none" } else { "" })]
    NoColumn { table: String, column: String, flag: &'static str, optional: bool, columns: String },
}

/// Where each field of a message is, in the old table.
struct Columns {
    id: String,
    sender: String,
    recipient: String,
    content: String,
    priority: Option<String>,
    reply_to: Option<String>,
    created_at: Option<String>,
    read: Option<String>,
}

/// The old bus's table, open read-only.
pub(super) struct Source {
    conn: Connection,
    pub(super) path: PathBuf,
    pub(super) table: String,
    /// The select list and table, for the page queries.
    select: String,
    id: String,
    /// Rows in the table, and those among them whose id is not an integer.
    pub(super) total: u64,
    pub(super) odd_ids: u64,
    /// The source's name: a hash of the table's name and its first row
    /// (`None` for an empty table).
    pub(super) fingerprint: Option<String>,
}

/// One row, as stored in the old table.
pub(super) struct Row {
    pub(super) id: i64,
    pub(super) sender: Value,
    pub(super) recipient: Value,
    pub(super) content: Value,
    pub(super) priority: Value,
    pub(super) reply_to: Value,
    pub(super) created_at: Value,
    pub(super) read: Value,
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl Source {
    /// Opens the database and checks that the table and columns exist.
    pub(super) fn open(args: &Args) -> Result<Source, SourceError> {
        let path = &args.sqlite;
        if !path.is_file() {
            return Err(SourceError::NoFile(path.clone()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|source| SourceError::Open { path: path.clone(), source })?;
        // The old bus may be writing: wait for its locks rather than fail.
        let _ = conn.busy_timeout(Duration::from_secs(10));
        let unreadable = |source| SourceError::NotSqlite { path: path.clone(), source };
        let present: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .and_then(|mut stmt| stmt.query_map([&args.table], |row| row.get(0))?.collect())
            .map_err(unreadable)?;
        if present.is_empty() {
            let tables: Vec<String> = conn
                .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name")
                .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
                .map_err(unreadable)?;
            let tables = if tables.is_empty() { "none".into() } else { tables.join(", ") };
            return Err(SourceError::NoTable { path: path.clone(), table: args.table.clone(), tables });
        }
        let columns = Columns::find(args, &present)?;
        let optional = |column: &Option<String>| column.as_deref().map_or("NULL".into(), quote);
        let id = quote(&columns.id);
        let select = format!(
            "SELECT {id}, {}, {}, {}, {}, {}, {}, {} FROM {}",
            quote(&columns.sender),
            quote(&columns.recipient),
            quote(&columns.content),
            optional(&columns.priority),
            optional(&columns.reply_to),
            optional(&columns.created_at),
            optional(&columns.read),
            quote(&args.table),
        );
        let table = quote(&args.table);
        let count = |filter: &str| -> Result<u64, SourceError> {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}{filter}"), [], |row| row.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(unreadable)
        };
        let total = count("")?;
        let odd_ids = count(&format!(" WHERE typeof({id}) != 'integer'"))?;
        let mut source = Source {
            conn,
            path: path.clone(),
            table: args.table.clone(),
            select,
            id,
            total,
            odd_ids,
            fingerprint: None,
        };
        // Every column can be read (a view over a missing table fails here).
        let first = source.page(None, 1).map_err(unreadable)?.into_iter().next();
        source.fingerprint = first.map(|first| fingerprint(&source.table, &first));
        Ok(source)
    }

    /// Up to `limit` rows with integer ids after `after`, in id order.
    pub(super) fn page(&self, after: Option<i64>, limit: usize) -> rusqlite::Result<Vec<Row>> {
        let (select, id) = (&self.select, &self.id);
        let sql = match after {
            None => format!("{select} WHERE typeof({id}) = 'integer' ORDER BY {id} LIMIT ?1"),
            Some(_) => format!("{select} WHERE typeof({id}) = 'integer' AND {id} > ?2 ORDER BY {id} LIMIT ?1"),
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let read = |row: &rusqlite::Row<'_>| {
            Ok(Row {
                id: row.get(0)?,
                sender: row.get(1)?,
                recipient: row.get(2)?,
                content: row.get(3)?,
                priority: row.get(4)?,
                reply_to: row.get(5)?,
                created_at: row.get(6)?,
                read: row.get(7)?,
            })
        };
        let limit = limit as i64;
        match after {
            None => stmt.query_map([limit], read)?.collect(),
            Some(after) => stmt.query_map([limit, after], read)?.collect(),
        }
    }
}

impl Columns {
    /// The table's columns (`present`) that the arguments name, matched
    /// without regard to case.
    fn find(args: &Args, present: &[String]) -> Result<Columns, SourceError> {
        let find = |name: &str, flag: &'static str, optional: bool| -> Result<Option<String>, SourceError> {
            if optional && name.is_empty() {
                return Ok(None);
            }
            match present.iter().find(|column| column.eq_ignore_ascii_case(name)) {
                Some(column) => Ok(Some(column.clone())),
                None => Err(SourceError::NoColumn {
                    table: args.table.clone(),
                    column: name.to_owned(),
                    flag,
                    optional,
                    columns: present.join(", "),
                }),
            }
        };
        let required = |name: &str, flag| find(name, flag, false).map(|c| c.expect("a required column"));
        Ok(Columns {
            id: required(&args.id_column, "id-column")?,
            sender: required(&args.sender_column, "sender-column")?,
            recipient: required(&args.recipient_column, "recipient-column")?,
            content: required(&args.content_column, "content-column")?,
            priority: find(&args.priority_column, "priority-column", true)?,
            reply_to: find(&args.reply_to_column, "reply-to-column", true)?,
            created_at: find(&args.created_at_column, "created-at-column", true)?,
            read: find(&args.read_column, "read-column", true)?,
        })
    }
}

/// A hash of the table's name and its first row: what stays while the old
/// bus keeps adding rows.
fn fingerprint(table: &str, first: &Row) -> String {
    let mut hash = Fnv::default();
    hash.text(table);
    hash.value(&Value::Integer(first.id));
    for value in [&first.sender, &first.recipient, &first.content, &first.created_at] {
        hash.value(value);
    }
    format!("{:016x}", hash.0)
}

/// FNV-1a, 64 bits: stable across versions and platforms (std's hasher is
/// not), which the source's name must be.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Length-prefixed, so that no two sequences of fields hash alike.
    fn text(&mut self, text: &str) {
        self.tagged(b't', text.as_bytes());
    }

    fn tagged(&mut self, tag: u8, bytes: &[u8]) {
        self.bytes(&[tag]);
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.bytes(b"n"),
            Value::Integer(n) => self.tagged(b'i', &n.to_le_bytes()),
            Value::Real(f) => self.tagged(b'r', &f.to_bits().to_le_bytes()),
            Value::Text(text) => self.text(text),
            Value::Blob(blob) => self.tagged(b'b', blob),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_stable() {
        let mut hash = Fnv::default();
        hash.text("messages");
        hash.value(&Value::Integer(1));
        // Pinned: a change would make every earlier import run again.
        assert_eq!(format!("{:016x}", hash.0), "054513d950989067");
    }
}

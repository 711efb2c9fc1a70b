//! A logical copy of a store (#27): every table that holds state no other table can rebuild,
//! read on one snapshot, written as a self-delimiting stream of typed rows that loads into an
//! empty store of either dialect (an embedded store's backup restores onto PostgreSQL and back).
//!
//! Left out on purpose: the search and relationship indexes (rebuilt from the versions when the
//! restored store is opened), and every bearer credential — access and refresh tokens,
//! authorization codes, client assertions, sessions: a restored system starts with no live
//! token, so one revoked after the backup cannot come back with it.
//!
//! Stream: `MAMORI-DUMP/1\n`, then per table `T name ncols`, its rows `R value…`, and
//! `E rows sha256` (the SHA-256 of the table's bytes from `T` through `E`), then `Z`.
//! Values: `0` NULL, `1` i64, `2` f64, `3` text, `4` bytes (u32 length, little-endian).

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use crate::{Conn, Db, Dialect, Error, Row, SqlStore, Value, vals};

const MAGIC: &[u8] = b"MAMORI-DUMP/1\n";
const PAGE: i64 = 5_000;
/// The largest value a dump may hold (a version's body is far below).
const MAX_VALUE: u32 = 256 * 1024 * 1024;

/// The tables a dump holds, in load order, each with the columns it is paged by (its key).
pub const DUMPED: [(&str, &[&str]); 15] = [
    ("store_flags", &["name"]),
    ("versions", &["seq"]),
    ("resources", &["type", "id"]),
    ("break_glass", &["id"]),
    ("config_versions", &["kind", "key", "version"]),
    ("config_seals", &["kind", "key", "version"]),
    ("workflow_versions", &["kind", "key", "version"]),
    ("audit_entries", &["idx"]),
    ("audit_tiles", &["level", "idx"]),
    ("audit_checkpoints", &["size"]),
    ("audit_state", &["name"]),
    ("audit_alerts", &["idx"]),
    ("credentials", &["username"]),
    ("auth_state", &["username"]),
    ("mamori_schema", &["version"]),
];

/// The tables a dump leaves out, with why (a unit test checks every table is in one list).
pub const NOT_DUMPED: [(&str, &str); 15] = [
    ("audit_pending", "a copy of entries in audit_entries"),
    ("identifier_index", "rebuilt"),
    ("sp_text", "rebuilt"),
    ("care_index", "rebuilt"),
    ("sp_string", "rebuilt"),
    ("sp_token", "rebuilt"),
    ("sp_date", "rebuilt"),
    ("sp_number", "rebuilt"),
    ("sp_ref", "rebuilt"),
    ("sp_composite", "rebuilt"),
    ("access_tokens", "credential"),
    ("refresh_tokens", "credential"),
    ("auth_codes", "credential"),
    ("client_assertions", "credential"),
    ("sessions", "credential"),
];

/// Flags that describe this database rather than its data: the index format (so that the
/// restored store rebuilds its index) and a purge in progress.
const LOCAL_FLAGS: [&str; 2] = ["index_version", "purge"];

/// One table of a dump.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableSum {
    /// The table.
    pub name: String,
    /// Rows.
    pub rows: u64,
    /// SHA-256 (hex) of the table's part of the stream.
    pub sha256: String,
}

/// What a dump holds, read on the same snapshot as its rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DumpSummary {
    /// Every table, in stream order.
    pub tables: Vec<TableSum>,
    /// The schema version.
    pub schema: i64,
    /// Audit entries.
    pub audit_size: u64,
    /// The newest signed checkpoint: `(size, note)`.
    pub checkpoint: Option<(u64, String)>,
    /// Resource versions.
    pub versions: u64,
    /// Resources (current, deleted ones included).
    pub resources: u64,
    /// Bytes written.
    pub bytes: u64,
}

struct Counting<'a> {
    out: &'a mut dyn Write,
    bytes: u64,
    hash: Sha256,
}

impl Counting<'_> {
    fn put(&mut self, b: &[u8]) -> Result<(), Error> {
        self.out.write_all(b).map_err(|e| Error::unavailable(format!("cannot write the backup: {e}")))?;
        self.hash.update(b);
        self.bytes += b.len() as u64;
        Ok(())
    }

    fn take_hash(&mut self) -> String {
        hex::encode(std::mem::take(&mut self.hash).finalize())
    }
}

fn len32(n: usize) -> Result<[u8; 4], Error> {
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= MAX_VALUE)
        .map(u32::to_le_bytes)
        .ok_or_else(|| Error::corrupt("value too large"))
}

fn encode_value(buf: &mut Vec<u8>, v: &Value<'_>) -> Result<(), Error> {
    match v {
        Value::Null => buf.push(0),
        Value::Int(i) => {
            buf.push(1);
            buf.extend_from_slice(&i.to_le_bytes());
        }
        Value::Real(r) => {
            buf.push(2);
            buf.extend_from_slice(&r.to_bits().to_le_bytes());
        }
        Value::Text(t) => {
            buf.push(3);
            buf.extend_from_slice(&len32(t.len())?);
            buf.extend_from_slice(t.as_bytes());
        }
        Value::Blob(b) => {
            buf.push(4);
            buf.extend_from_slice(&len32(b.len())?);
            buf.extend_from_slice(b);
        }
    }
    Ok(())
}

fn short(buf: &mut Vec<u8>, s: &str) -> Result<(), Error> {
    let n = u16::try_from(s.len()).map_err(|_| Error::corrupt("name too long"))?;
    buf.extend_from_slice(&n.to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
    Ok(())
}

impl<D: Db> SqlStore<D> {
    /// Writes a logical copy of the store to `out`, every table read on one snapshot (writers go
    /// on meanwhile); `progress` is told the rows written so far.
    pub fn dump(&self, out: &mut dyn Write, progress: &mut dyn FnMut(u64)) -> Result<DumpSummary, Error> {
        self.db().read_scan(|c| {
            let mut w = Counting { out, bytes: 0, hash: Sha256::new() };
            w.put(MAGIC)?;
            let mut summary = DumpSummary::default();
            let mut total = 0u64;
            for (table, key) in DUMPED {
                w.take_hash();
                let rows = dump_table(c, &mut w, table, key, &mut |n| progress(total + n))?;
                total += rows;
                w.put(b"E")?;
                let sha = w.take_hash();
                let mut end = rows.to_le_bytes().to_vec();
                end.extend_from_slice(&hex::decode(&sha).map_err(Error::corrupt)?);
                w.put(&end)?;
                summary.tables.push(TableSum { name: table.to_string(), rows, sha256: sha });
            }
            w.put(b"Z")?;
            let count = |c: &mut dyn Conn, sql: &str| -> Result<u64, Error> {
                Ok(c.one(sql, &[])?.map(|r| r.uint(0)).transpose()?.unwrap_or(0))
            };
            summary.schema = c
                .one("SELECT COALESCE(MAX(version), 0) FROM mamori_schema", &[])?
                .map(|r| r.int(0))
                .transpose()?
                .unwrap_or(0);
            summary.audit_size = count(c, "SELECT COALESCE(MAX(idx), 0) FROM audit_entries")?;
            summary.versions = count(c, "SELECT COUNT(*) FROM versions")?;
            summary.resources = count(c, "SELECT COUNT(*) FROM resources")?;
            summary.checkpoint = c
                .one("SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1", &[])?
                .map(|r| Ok::<_, Error>((r.uint(0)?, r.text(1)?)))
                .transpose()?;
            summary.bytes = w.bytes;
            Ok(summary)
        })
    }

    /// Whether the store holds no data yet (no version, no audit entry, no configuration): the
    /// only kind of store a dump is loaded into.
    pub fn is_empty(&self) -> Result<bool, Error> {
        self.db().read(|c| {
            for t in ["versions", "audit_entries", "config_versions", "workflow_versions", "credentials"] {
                if c.one(&format!("SELECT 1 FROM {t} LIMIT 1"), &[])?.is_some() {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// Loads a dump written by [`SqlStore::dump`] into this store, which must be empty and
    /// migrated to the dump's schema. Each table's rows are checked against the hash the stream
    /// carries; the sums are returned for the caller to compare with a signed manifest. A load
    /// that fails leaves the store marked `restore-incomplete` (store flag) — it is not a copy.
    pub fn load(&self, input: &mut dyn Read, progress: &mut dyn FnMut(u64)) -> Result<Vec<TableSum>, Error> {
        if !self.is_empty()? {
            return Err(Error::corrupt("the target store is not empty: a backup is restored only into a new store"));
        }
        self.db().exec(
            "INSERT INTO store_flags (name, value) VALUES ('restore-incomplete', 'yes') ON CONFLICT (name) DO NOTHING",
            &[],
        )?;
        let mut insert = String::new();
        let mut table = "";
        let mut batch: Vec<Vec<Value<'static>>> = Vec::new();
        let mut total = 0u64;
        let sums = read(input, &mut |event| {
            match event {
                Event::Table(name, ncols) => {
                    table = name;
                    insert = insert_sql(name, ncols);
                }
                Event::Row(row) => {
                    if table == "store_flags" && is_local_flag(&row) {
                        return Ok(());
                    }
                    batch.push(row);
                    total += 1;
                    if batch.len() >= 2_000 {
                        self.insert_batch(&insert, &mut batch)?;
                        progress(total);
                    }
                }
                Event::End => {
                    self.insert_batch(&insert, &mut batch)?;
                    progress(total);
                }
            }
            Ok(())
        })?;
        self.db().write(|c| {
            if c.dialect() == Dialect::Postgres {
                c.batch(
                    "SELECT setval(pg_get_serial_sequence('versions', 'seq'), GREATEST((SELECT MAX(seq) FROM versions), 1))",
                )?;
            }
            c.execute("DELETE FROM store_flags WHERE name = 'restore-incomplete'", &[])?;
            Ok::<_, Error>(())
        })?;
        Ok(sums)
    }

    /// Removes every version written after `micros` (Unix µs) and points each resource at its
    /// newest remaining version — the records as they stood then (a restore `--as-of`). Runs
    /// as a purge (the only way versions are ever deleted); the search index is rebuilt by the
    /// caller. Returns the versions removed.
    pub fn rewind(&self, micros: i64) -> Result<u64, Error> {
        self.db().write(|c| {
            let d = c.dialect();
            c.batch(d.purge_guard(true))?;
            let removed = c.execute("DELETE FROM versions WHERE last_updated > ?1", &vals![micros])?;
            c.execute("DELETE FROM resources", &[])?;
            c.execute(
                "INSERT INTO resources (type, id, seq) SELECT type, id, MAX(seq) FROM versions GROUP BY type, id",
                &[],
            )?;
            c.execute("DELETE FROM store_flags WHERE name = 'index_version'", &[])?;
            c.batch(d.purge_guard(false))?;
            Ok(removed)
        })
    }

    /// Revokes every access and refresh token and ends every browser session, of every person
    /// and application (isolating a system in an incident); returns `(tokens, sessions)`.
    pub fn revoke_everything(&self) -> Result<(u64, u64), Error> {
        self.db().write(|c| {
            let t = c.execute("UPDATE access_tokens SET revoked = ?1 WHERE revoked = ?2", &vals![true, false])?
                + c.execute("UPDATE refresh_tokens SET revoked = ?1 WHERE revoked = ?2", &vals![true, false])?;
            let s = c.execute("DELETE FROM sessions", &[])?;
            Ok((t, s))
        })
    }

    /// Whether a load into this store began and did not finish.
    pub fn restore_incomplete(&self) -> Result<bool, Error> {
        Ok(self.flag_get("restore-incomplete")?.is_some())
    }

    fn insert_batch(&self, insert: &str, batch: &mut Vec<Vec<Value<'static>>>) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(batch);
        self.db().write(|c| {
            let stmts: Vec<(&str, Vec<Value<'_>>)> = rows.into_iter().map(|r| (insert, r)).collect();
            c.execute_many(&stmts)
        })
    }
}

/// What the parser meets, in order.
enum Event<'a> {
    /// A table begins, with its width.
    Table(&'a str, usize),
    /// One of its rows.
    Row(Vec<Value<'static>>),
    /// It ends (its hash checked).
    End,
}

/// Reads a dump from `input` and checks it — every table known and in order, every table's
/// hash — without a database: what `mamori backup verify` runs on a decrypted generation.
pub fn check(input: &mut dyn Read, progress: &mut dyn FnMut(u64)) -> Result<Vec<TableSum>, Error> {
    let mut rows = 0u64;
    read(input, &mut |e| {
        if let Event::Row(_) = e {
            rows += 1;
            if rows.is_multiple_of(100_000) {
                progress(rows);
            }
        }
        Ok(())
    })
}

/// The one parser of the dump format: `sink` sees the tables and rows; their hashes are checked
/// here. Nothing follows the end.
fn read(
    input: &mut dyn Read,
    sink: &mut dyn FnMut(Event<'static>) -> Result<(), Error>,
) -> Result<Vec<TableSum>, Error> {
    let mut r = Reader { input, hash: Sha256::new() };
    let mut magic = [0u8; MAGIC.len()];
    r.exact(&mut magic)?;
    if magic != MAGIC {
        return Err(Error::corrupt("not a Mamori store dump"));
    }
    let mut sums = Vec::new();
    let mut expect = DUMPED.iter();
    loop {
        r.hash = Sha256::new();
        match r.byte()? {
            b'Z' => break,
            b'T' => {}
            other => return Err(Error::corrupt(format!("unexpected record {other:#x} in the dump"))),
        }
        let name = r.short()?;
        // Only the tables a dump holds, in their order: a crafted stream names no other.
        let Some((table, _)) = expect.next().filter(|(t, _)| *t == name) else {
            return Err(Error::corrupt(format!("unexpected table `{name}` in the dump")));
        };
        let ncols = usize::from(r.u16()?);
        if ncols == 0 || ncols > 64 {
            return Err(Error::corrupt(format!("table `{name}`: {ncols} columns")));
        }
        sink(Event::Table(table, ncols))?;
        let mut rows = 0u64;
        loop {
            match r.byte()? {
                b'R' => {
                    let mut row = Vec::with_capacity(ncols);
                    for _ in 0..ncols {
                        row.push(r.value()?);
                    }
                    rows += 1;
                    sink(Event::Row(row))?;
                }
                b'E' => break,
                other => return Err(Error::corrupt(format!("table `{name}`: unexpected record {other:#x}"))),
            }
        }
        let computed = hex::encode(std::mem::take(&mut r.hash).finalize());
        let mut n = [0u8; 8];
        r.exact(&mut n)?;
        let mut sha = [0u8; 32];
        r.exact(&mut sha)?;
        if hex::encode(sha) != computed {
            return Err(Error::corrupt(format!("table `{name}`: its rows do not match the hash the dump carries")));
        }
        if u64::from_le_bytes(n) != rows {
            return Err(Error::corrupt(format!("table `{name}`: {rows} rows read, {} stated", u64::from_le_bytes(n))));
        }
        sink(Event::End)?;
        sums.push(TableSum { name: name.clone(), rows, sha256: computed });
    }
    if expect.next().is_some() {
        return Err(Error::corrupt("the dump ends before every table"));
    }
    let mut trailing = [0u8; 1];
    if r.input.read(&mut trailing).map_err(|e| Error::corrupt(format!("cannot read the dump: {e}")))? != 0 {
        return Err(Error::corrupt("data after the end of the dump"));
    }
    Ok(sums)
}

fn is_local_flag(row: &[Value<'_>]) -> bool {
    matches!(row.first(), Some(Value::Text(n)) if LOCAL_FLAGS.contains(&n.as_ref()))
}

fn insert_sql(table: &str, ncols: usize) -> String {
    let params: Vec<String> = (1..=ncols).map(|i| format!("?{i}")).collect();
    // `mamori_schema` is filled by the migration already: the dump's rows say the same.
    let conflict = if table == "mamori_schema" { " ON CONFLICT DO NOTHING" } else { "" };
    format!("INSERT INTO {table} VALUES ({}){conflict}", params.join(", "))
}

fn dump_table(
    c: &mut dyn Conn,
    w: &mut Counting<'_>,
    table: &str,
    key: &[&str],
    progress: &mut dyn FnMut(u64),
) -> Result<u64, Error> {
    let keys = key.join(", ");
    let first = format!("SELECT {keys}, {table}.* FROM {table} ORDER BY {keys} LIMIT {PAGE}");
    let marks: Vec<String> = (1..=key.len()).map(|i| format!("?{i}")).collect();
    let next = format!(
        "SELECT {keys}, {table}.* FROM {table} WHERE ({keys}) > ({}) ORDER BY {keys} LIMIT {PAGE}",
        marks.join(", ")
    );
    let mut cursor: Option<Vec<Value<'static>>> = None;
    let mut rows = 0u64;
    let mut ncols = None;
    loop {
        let page: Vec<Row> = match &cursor {
            None => c.query(&first, &[])?,
            Some(k) => c.query(&next, k)?,
        };
        if page.is_empty() && ncols.is_none() {
            // An empty table: its width does not matter to the loader.
            let mut head = vec![b'T'];
            short(&mut head, table)?;
            head.extend_from_slice(&1u16.to_le_bytes());
            w.put(&head)?;
            return Ok(0);
        }
        let full = page.len() as i64 == PAGE;
        let mut buf = Vec::with_capacity(64 * 1024);
        for row in &page {
            let width = row.0.len().saturating_sub(key.len());
            if ncols.is_none() {
                let mut head = vec![b'T'];
                short(&mut head, table)?;
                head.extend_from_slice(&u16::try_from(width).map_err(Error::corrupt)?.to_le_bytes());
                w.put(&head)?;
                ncols = Some(width);
            }
            buf.push(b'R');
            for v in row.0.iter().skip(key.len()) {
                encode_value(&mut buf, v)?;
            }
            rows += 1;
            if buf.len() > 1 << 20 {
                w.put(&buf)?;
                buf.clear();
            }
        }
        w.put(&buf)?;
        progress(rows);
        if !full {
            return Ok(rows);
        }
        cursor = page.last().map(|r| r.0.iter().take(key.len()).cloned().collect());
    }
}

struct Reader<'a> {
    input: &'a mut dyn Read,
    hash: Sha256,
}

impl Reader<'_> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        self.input.read_exact(buf).map_err(|e| Error::corrupt(format!("the dump is cut short: {e}")))?;
        self.hash.update(&*buf);
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, Error> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let mut b = [0u8; 2];
        self.exact(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, Error> {
        let mut v = Vec::new();
        // Read what is there, never allocate what a length only claims.
        self.input
            .take(n as u64)
            .read_to_end(&mut v)
            .map_err(|e| Error::corrupt(format!("cannot read the dump: {e}")))?;
        if v.len() != n {
            return Err(Error::corrupt("the dump is cut short"));
        }
        self.hash.update(&v);
        Ok(v)
    }

    fn short(&mut self) -> Result<String, Error> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.bytes(n)?).map_err(|_| Error::corrupt("a name in the dump is not UTF-8"))
    }

    fn value(&mut self) -> Result<Value<'static>, Error> {
        let mut eight = [0u8; 8];
        Ok(match self.byte()? {
            0 => Value::Null,
            1 => {
                self.exact(&mut eight)?;
                Value::Int(i64::from_le_bytes(eight))
            }
            2 => {
                self.exact(&mut eight)?;
                Value::Real(f64::from_bits(u64::from_le_bytes(eight)))
            }
            t @ (3 | 4) => {
                let mut four = [0u8; 4];
                self.exact(&mut four)?;
                let n = u32::from_le_bytes(four);
                if n > MAX_VALUE {
                    return Err(Error::corrupt("a value in the dump is too large"));
                }
                let b = self.bytes(n as usize)?;
                if t == 3 {
                    Value::Text(
                        String::from_utf8(b).map_err(|_| Error::corrupt("text in the dump is not UTF-8"))?.into(),
                    )
                } else {
                    Value::Blob(b.into())
                }
            }
            other => return Err(Error::corrupt(format!("unknown value type {other} in the dump"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_dumped_or_left_out_for_a_reason() {
        let all: Vec<String> = crate::schema::steps(Dialect::Sqlite)
            .join("\n")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("CREATE TABLE IF NOT EXISTS "))
            .map(|l| l.split([' ', '(']).next().unwrap_or_default().to_string())
            .collect();
        for t in &all {
            let dumped = DUMPED.iter().any(|(d, _)| d == t);
            let left = NOT_DUMPED.iter().any(|(d, _)| d == t);
            assert!(dumped != left, "`{t}` must be in exactly one of DUMPED and NOT_DUMPED");
        }
        for (t, _) in DUMPED {
            assert!(t == "mamori_schema" || all.iter().any(|a| a == t), "{t} is not a table");
        }
    }

    #[test]
    fn values_round_trip() {
        let vals = [
            Value::Null,
            Value::Int(-5),
            Value::Real(1.5),
            Value::Text("山田".into()),
            Value::Blob(vec![0, 1, 255].into()),
        ];
        let mut buf = Vec::new();
        for v in &vals {
            encode_value(&mut buf, v).unwrap();
        }
        let mut input: &[u8] = &buf;
        let mut r = Reader { input: &mut input, hash: Sha256::new() };
        for v in &vals {
            assert_eq!(&r.value().unwrap(), v);
        }
    }

    #[test]
    fn a_length_that_lies_is_refused_without_allocating_it() {
        let buf = [3u8, 0xff, 0xff, 0xff, 0x0f, b'a'];
        let mut input: &[u8] = &buf;
        let mut r = Reader { input: &mut input, hash: Sha256::new() };
        assert!(r.value().is_err());
    }
}
